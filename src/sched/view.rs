//! What the UI and the report see: one [`Snapshot`] of the scheduler. It
//! lists every attempt, so it costs time in proportion to them; the driver
//! takes one when it publishes progress, not at every event.

use std::time::Duration;

use super::machine::{CHECK_INTERVAL, duration, secs};
use super::{
    AttemptState, AttemptView, HostView, SPECULATION_SLOWNESS, Scheduler, Snapshot, Straggler,
};

impl Scheduler {
    /// Everything the UI and the report need at `now`.
    pub fn snapshot(&self, now: Duration) -> Snapshot {
        let t = secs(now);
        let median_left = self.median_left(now);
        let mut attempts = Vec::with_capacity(self.attempts.len());
        let mut stragglers = Vec::new();
        let mut tail: f64 = 0.0;
        for (id, a) in self.attempts.iter().enumerate() {
            let running = a.state == AttemptState::Running;
            let left = a.estimate.filter(|_| running).map(|e| (e.eta - t).abs());
            let slowness = match (left, median_left) {
                (Some(left), Some(m)) => left / m.max(secs(CHECK_INTERVAL)),
                _ => 1.0,
            };
            if let Some(left) = left {
                tail = tail.max(left);
                if slowness >= SPECULATION_SLOWNESS {
                    stragglers.push(Straggler {
                        chunk: a.chunk,
                        attempt: id as u64,
                        eta: duration(left),
                    });
                }
            }
            attempts.push(AttemptView {
                attempt: id as u64,
                chunk: a.chunk,
                slot: a.slot,
                host: a.host,
                start: a.start,
                end: a.end,
                rows: a.rows.clone(),
                rows_done: a.rows_done,
                state: a.state,
                backup: a.backup,
                split: a.split,
                slowness,
            });
        }
        let hosts = self
            .hosts
            .iter()
            .map(|(&host, h)| {
                let elapsed = h
                    .first_launch
                    .map(|t| secs(now.saturating_sub(t)))
                    .unwrap_or(0.0);
                HostView {
                    host,
                    slots: h.slots.len() as u32,
                    busy: h.busy,
                    rows_done: h.rows_done,
                    chunks_done: h.chunks_done,
                    failures: h.failures,
                    rows_per_s: if elapsed > 0.0 {
                        h.rows_computed as f64 / elapsed
                    } else {
                        0.0
                    },
                    lost: h.lost,
                }
            })
            .collect();
        let throughput: f64 = self.index.speed_median.iter().map(|(k, _)| k.0).sum();
        let eta = if self.finished {
            None
        } else if throughput > 0.0 {
            let bulk = (self.costs.total() - self.cost_done) as f64 / throughput;
            Some(duration(bulk.max(tail)))
        } else {
            None
        };
        Snapshot {
            now,
            rows_total: self.costs.rows(),
            rows_done: self.rows_done,
            cost_total: self.costs.total(),
            cost_done: self.cost_done,
            chunks_total: self.chunks.len() as u64,
            chunks_done: self.chunks_done,
            attempts,
            hosts,
            stragglers,
            eta,
            paused: self.paused,
            backups: self.backups,
            splits: self.splits,
        }
    }
}
