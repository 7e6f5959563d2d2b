//! The coordinator: drives the scheduler with events from the fleet, writes the
//! store, publishes events for the UI. (Being written.)

pub mod event;

pub use event::{Event, HostInfo, HostReport, HostState, Report};
