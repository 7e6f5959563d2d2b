//! What the UI and the report see: one [`Snapshot`] of the scheduler.
//! [`Scheduler::snapshot`] lists every attempt and host, so it costs time in
//! proportion to them: the report takes it once, at the end. While a run
//! goes on, [`Scheduler::changes`] gives the same figures but only the
//! attempts and hosts that changed since the previous one, the worst
//! stragglers (at most [`MAX_STRAGGLERS_PUBLISHED`]) and a bounded round of
//! other hosts, so that publishing costs time in proportion to the events
//! since, not to the slots or the chunks.

use std::time::Duration;

use super::machine::{Attempt, CHECK_INTERVAL, Host, duration, secs};
use super::order::Key;
use super::{
    AttemptId, AttemptState, AttemptView, HostId, HostView, SPECULATION_SLOWNESS, Scheduler,
    Snapshot, Straggler,
};

/// A progress update names at most this many stragglers, those with the
/// most time left.
pub const MAX_STRAGGLERS_PUBLISHED: usize = 64;
/// Hosts that did not change are re-sent this many at a time, in turn, so
/// that their rates (which move with the clock) stay fresh in the UI.
pub const HOSTS_REFRESHED_PER_PUBLISH: usize = 128;

impl Scheduler {
    /// Everything the UI and the report need at `now`: every attempt and
    /// host, and every straggler.
    pub fn snapshot(&self, now: Duration) -> Snapshot {
        let t = secs(now);
        let median_left = self.median_left(now);
        let mut stragglers = Vec::new();
        let mut tail: f64 = 0.0;
        let mut attempts = Vec::with_capacity(self.attempts.len());
        for (id, a) in self.attempts.iter().enumerate() {
            let view = attempt_view(id as AttemptId, a, t, median_left);
            if let Some(e) = a.estimate.filter(|_| a.state == AttemptState::Running) {
                let left = (e.eta - t).abs();
                tail = tail.max(left);
                if view.slowness >= SPECULATION_SLOWNESS {
                    stragglers.push(Straggler {
                        chunk: a.chunk,
                        attempt: id as AttemptId,
                        eta: duration(left),
                    });
                }
            }
            attempts.push(view);
        }
        let hosts = self
            .hosts
            .iter()
            .map(|(&id, h)| host_view(id, h, now))
            .collect();
        self.figures(now, attempts, hosts, stragglers, tail)
    }

    /// What changed since the previous call, for the UI: the figures of a
    /// snapshot, with only the attempts and hosts that changed since (and
    /// the stragglers' attempts, whose slowness moves with the clock), the
    /// worst [`MAX_STRAGGLERS_PUBLISHED`] stragglers, and
    /// [`HOSTS_REFRESHED_PER_PUBLISH`] other hosts in turn. Applied in order
    /// over the first full snapshot (or none), updates give the attempts
    /// and hosts of [`Scheduler::snapshot`].
    pub fn changes(&mut self, now: Duration) -> Snapshot {
        let t = secs(now);
        let median_left = self.median_left(now);
        let (stragglers, tail) = self.worst_stragglers(now, median_left);
        for s in &stragglers {
            self.attempt_changed(s.attempt);
        }
        let mut ids = std::mem::take(&mut self.changed.attempts);
        ids.sort_unstable();
        let attempts = ids
            .iter()
            .map(|&id| {
                let a = &mut self.attempts[id as usize];
                a.changed = false;
                attempt_view(id, a, t, median_left)
            })
            .collect();
        let mut hosts = std::mem::take(&mut self.changed.hosts);
        let from = self.changed.host_cursor;
        let others: Vec<HostId> = self
            .hosts
            .range(from..)
            .chain(self.hosts.range(..from))
            .filter(|(_, h)| !h.changed)
            .map(|(&id, _)| id)
            .take(HOSTS_REFRESHED_PER_PUBLISH.min(self.hosts.len()))
            .collect();
        self.changed.host_cursor = others.last().map_or(0, |&h| h.wrapping_add(1));
        hosts.extend(others);
        hosts.sort_unstable();
        hosts.dedup();
        let hosts = hosts
            .iter()
            .map(|&id| {
                let h = self.hosts.get_mut(&id).expect("a listed host exists");
                h.changed = false;
                host_view(id, h, now)
            })
            .collect();
        self.figures(now, attempts, hosts, stragglers, tail)
    }

    /// The running attempts with an estimate whose time left, over the
    /// median's, is at least [`SPECULATION_SLOWNESS`] (their finish that far
    /// ahead or, overdue, that far behind): at most
    /// [`MAX_STRAGGLERS_PUBLISHED`], the most time left first, in attempt
    /// order; and the most time left of any running attempt. Walks the
    /// predicted finishes from both ends only as far as it takes.
    fn worst_stragglers(&self, now: Duration, median_left: Option<f64>) -> (Vec<Straggler>, f64) {
        let t = secs(now);
        let etas = &self.index.etas;
        let (first, last) = (etas.iter().next(), etas.iter().next_back());
        let tail = [first, last]
            .into_iter()
            .flatten()
            .map(|(Key(eta), _)| (eta - t).abs())
            .fold(0.0, f64::max);
        let Some(m) = median_left else {
            return (Vec::new(), tail);
        };
        // As in `attempt_view`, so that both lists agree to the last bit.
        let straggles = |eta: f64| slowness((eta - t).abs(), m) >= SPECULATION_SLOWNESS;
        let late = etas
            .iter()
            .rev()
            .take_while(|(Key(eta), _)| *eta >= t && straggles(*eta))
            .take(MAX_STRAGGLERS_PUBLISHED);
        let overdue = etas
            .iter()
            .take_while(|(Key(eta), _)| *eta < t && straggles(*eta))
            .take(MAX_STRAGGLERS_PUBLISHED);
        let mut worst: Vec<(f64, AttemptId)> = late
            .chain(overdue)
            .map(|&(Key(eta), id)| ((eta - t).abs(), id))
            .collect();
        worst.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        worst.dedup_by_key(|w| w.1);
        worst.truncate(MAX_STRAGGLERS_PUBLISHED);
        worst.sort_by_key(|w| w.1);
        let stragglers = worst
            .into_iter()
            .map(|(left, id)| Straggler {
                chunk: self.attempts[id as usize].chunk,
                attempt: id,
                eta: duration(left),
            })
            .collect();
        (stragglers, tail)
    }

    /// A snapshot of the run's figures around `attempts` and `hosts`.
    fn figures(
        &self,
        now: Duration,
        attempts: Vec<AttemptView>,
        hosts: Vec<HostView>,
        stragglers: Vec<Straggler>,
        tail: f64,
    ) -> Snapshot {
        let throughput = self.index.speed_sum;
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

/// How the UI sees attempt `id` at `t` seconds.
fn attempt_view(id: AttemptId, a: &Attempt, t: f64, median_left: Option<f64>) -> AttemptView {
    let running = a.state == AttemptState::Running;
    let left = a.estimate.filter(|_| running).map(|e| (e.eta - t).abs());
    let slowness = match (left, median_left) {
        (Some(left), Some(m)) => slowness(left, m),
        _ => 1.0,
    };
    AttemptView {
        attempt: id,
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
    }
}

/// Time left over the median's, the median taken as at least one check
/// interval.
fn slowness(left: f64, median_left: f64) -> f64 {
    left / median_left.max(secs(CHECK_INTERVAL))
}

/// How the UI sees `host` at `now`.
fn host_view(host: HostId, h: &Host, now: Duration) -> HostView {
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
}

impl Snapshot {
    /// Takes in a later snapshot or update ([`Scheduler::changes`]): its
    /// figures and stragglers replace these, its attempts and hosts replace
    /// those of the same id or join them. Costs time in proportion to the
    /// update, not to what is held, when the attempts are held in id order
    /// from 0 as a scheduler hands them out.
    pub fn update(&mut self, next: &Snapshot) {
        let Snapshot {
            now,
            rows_total,
            rows_done,
            cost_total,
            cost_done,
            chunks_total,
            chunks_done,
            attempts,
            hosts,
            stragglers,
            eta,
            paused,
            backups,
            splits,
        } = next;
        for view in attempts {
            // A scheduler hands out attempt ids in order from 0, so the place
            // is the id; a list in another order (a test's) is searched.
            let at = view.attempt as usize;
            let len = self.attempts.len();
            match self.attempts.get_mut(at) {
                Some(held) if held.attempt == view.attempt => *held = view.clone(),
                None if at == len => self.attempts.push(view.clone()),
                _ => match self.attempts.iter().position(|a| a.attempt == view.attempt) {
                    Some(i) => self.attempts[i] = view.clone(),
                    None => self.attempts.push(view.clone()),
                },
            }
        }
        for view in hosts {
            match self.hosts.binary_search_by_key(&view.host, |h| h.host) {
                Ok(i) => self.hosts[i] = view.clone(),
                Err(i) => self.hosts.insert(i, view.clone()),
            }
        }
        self.stragglers.clone_from(stragglers);
        (self.now, self.rows_total, self.rows_done) = (*now, *rows_total, *rows_done);
        (self.cost_total, self.cost_done) = (*cost_total, *cost_done);
        (self.chunks_total, self.chunks_done) = (*chunks_total, *chunks_done);
        (self.eta, self.paused) = (*eta, *paused);
        (self.backups, self.splits) = (*backups, *splits);
    }
}
