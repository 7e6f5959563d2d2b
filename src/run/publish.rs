//! Where a run's [`Event`]s go, stamped with the time since the run began.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::event::Event;

/// The sending end of a run's events. Sending never fails: a closed
/// receiver (no UI) just drops them.
#[derive(Clone)]
pub(super) struct Publisher {
    tx: mpsc::UnboundedSender<Event>,
    started: Instant,
}

impl Publisher {
    pub fn new(tx: mpsc::UnboundedSender<Event>) -> Publisher {
        Publisher {
            tx,
            started: Instant::now(),
        }
    }

    /// Time since the run began: the clock the scheduler runs on.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// A log line from `source` (a host, `host#slot`, or `run`).
    pub fn log(&self, source: &str, text: String) {
        self.send(Event::Log {
            at: self.now(),
            source: source.to_string(),
            text,
        });
    }
}
