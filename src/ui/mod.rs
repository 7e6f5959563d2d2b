//! Terminal UI and headless output. (Placeholder.)
