//! The worker loop. (Placeholder.)
