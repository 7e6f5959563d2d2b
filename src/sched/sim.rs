//! A simulated cluster for the scheduler. (Placeholder.)
