//! wgpu backend. (Placeholder.)
