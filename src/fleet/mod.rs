//! Transports to workers. (Placeholder.)
