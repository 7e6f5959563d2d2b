//! The indexes the scheduler keeps beside its chunks, attempts, slots and
//! hosts (see [`Index`]), and the only functions that change them. A chunk,
//! an attempt or a slot changes between an `unindex_*` call, which takes its
//! entries out using the keys they went in with, and an `index_*` call, which
//! puts them back as the state now says; `check.rs` recomputes every index by
//! a full scan for the tests.

use std::collections::BTreeSet;
use std::time::Duration;

use super::machine::{
    Attempt, ChunkState, Estimate, SILENCE_FACTOR, SILENCE_MIN, Slot, duration, secs,
};
use super::order::{IdleSlots, Key, Ranked};
use super::{AttemptId, AttemptState, ChunkId, HostId, Scheduler, SlotId};

/// Ordered sets and counters kept beside the state (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Index {
    /// Slots up, without an attempt, not set aside, on a host not lost.
    pub idle: IdleSlots,
    /// Measured speeds of the slots that are up, split at the median.
    pub speed_median: Ranked<(Key, SlotId)>,
    /// The same, split at the slowest quartile.
    pub speed_quartile: Ranked<(Key, SlotId)>,
    /// Pending chunks never failed, and those to retry, and their cost.
    pub pending_fresh: BTreeSet<ChunkId>,
    pub pending_retry: BTreeSet<ChunkId>,
    pub pending_cost: u128,
    /// Predicted finishes of the running attempts with an estimate (silent
    /// ones too), split at the median.
    pub etas: Ranked<(Key, AttemptId)>,
    /// Among those, the one attempt of its chunk that is not silent: the
    /// candidates for a split.
    pub splittable: BTreeSet<(Key, AttemptId)>,
    /// Among those, the only attempt of a chunk never backed up: the
    /// candidates for a speculative backup.
    pub speculable: BTreeSet<(Key, AttemptId)>,
    /// When each of those falls silent without news.
    pub silence: BTreeSet<(Duration, AttemptId)>,
    /// Running attempts without an estimate (no speed known yet), by their
    /// last news.
    pub unestimated: BTreeSet<(Duration, AttemptId)>,
    /// Running chunks whose every attempt is silent.
    pub stalled: BTreeSet<ChunkId>,
    pub slots_up: usize,
    pub busy_slots: usize,
    /// Hosts not lost with a slot up; hosts lost.
    pub live_hosts: usize,
    pub lost_hosts: usize,
    /// Running backups that are not silent.
    pub running_backups: usize,
    /// Sum of the speeds in `speed_median`.
    pub speed_sum: f64,
    /// Of the attempts in `silence` (estimated, not silent), those predicted
    /// to finish after now, with the sums of speed x predicted finish and of
    /// speed: the work they have left at `t` is
    /// `future_work - t x future_speed`. Entries leave as time passes them.
    pub future: BTreeSet<(Key, AttemptId)>,
    pub future_work: f64,
    pub future_speed: f64,
}

impl Index {
    pub(super) fn new() -> Index {
        Index {
            idle: IdleSlots::default(),
            speed_median: Ranked::new(1, 2),
            speed_quartile: Ranked::new(1, 4),
            pending_fresh: BTreeSet::new(),
            pending_retry: BTreeSet::new(),
            pending_cost: 0,
            etas: Ranked::new(1, 2),
            splittable: BTreeSet::new(),
            speculable: BTreeSet::new(),
            silence: BTreeSet::new(),
            unestimated: BTreeSet::new(),
            stalled: BTreeSet::new(),
            slots_up: 0,
            busy_slots: 0,
            live_hosts: 0,
            lost_hosts: 0,
            running_backups: 0,
            speed_sum: 0.0,
            future: BTreeSet::new(),
            future_work: 0.0,
            future_speed: 0.0,
        }
    }
}

/// Where a running attempt that reports goes besides the sets of all of them,
/// from its chunk: the split candidates (the one attempt of its chunk that is
/// not silent) and the backup candidates (the only attempt of a chunk never
/// backed up).
#[derive(Clone, Copy)]
struct Place {
    splittable: bool,
    speculable: bool,
}

impl Scheduler {
    /// A slot changes only here (or between `unindex_slot` and `index_slot`).
    pub(super) fn update_slot(&mut self, id: SlotId, change: impl FnOnce(&mut Slot)) {
        self.unindex_slot(id);
        change(self.slots.get_mut(&id).expect("slot to update exists"));
        self.index_slot(id);
    }

    pub(super) fn slot_is_idle(&self, s: &Slot) -> bool {
        s.up && s.attempt.is_none()
            && !s.set_aside
            && !self.hosts.get(&s.host).is_some_and(|h| h.lost)
    }

    pub(super) fn index_slot(&mut self, id: SlotId) {
        let s = self.slots[&id].clone();
        let idle = self.slot_is_idle(&s);
        self.unindex_host(s.host);
        let h = self.hosts.get_mut(&s.host).expect("a slot's host exists");
        if s.up {
            h.usable += u32::from(!s.set_aside);
            self.index.slots_up += 1;
            if let Some(v) = s.speed {
                self.index.speed_median.insert((Key(v), id));
                self.index.speed_quartile.insert((Key(v), id));
                self.index.speed_sum += v;
            }
        }
        if s.attempt.is_some() {
            h.busy += 1;
            self.index.busy_slots += 1;
        }
        if idle {
            self.index.idle.insert(id, s.speed);
        }
        self.index_host(s.host);
    }

    pub(super) fn unindex_slot(&mut self, id: SlotId) {
        let s = self.slots[&id].clone();
        self.unindex_host(s.host);
        let h = self.hosts.get_mut(&s.host).expect("a slot's host exists");
        if s.up {
            h.usable -= u32::from(!s.set_aside);
            self.index.slots_up -= 1;
            if let Some(v) = s.speed {
                self.index.speed_median.remove(&(Key(v), id));
                self.index.speed_quartile.remove(&(Key(v), id));
                self.index.speed_sum -= v;
            }
        }
        if s.attempt.is_some() {
            h.busy -= 1;
            self.index.busy_slots -= 1;
        }
        self.index.idle.remove(id, s.speed);
        self.index_host(s.host);
    }

    /// Lists the attempt (and its host) for the UI's next progress: every
    /// change of an attempt passes through its (un)indexing.
    pub(super) fn attempt_changed(&mut self, id: AttemptId) {
        let a = &mut self.attempts[id as usize];
        if !a.changed {
            a.changed = true;
            self.changed.attempts.push(id);
        }
        let host = a.host;
        self.host_changed(host);
    }

    pub(super) fn host_changed(&mut self, host: HostId) {
        if let Some(h) = self.hosts.get_mut(&host)
            && !h.changed
        {
            h.changed = true;
            self.changed.hosts.push(host);
        }
    }

    pub(super) fn host_is_live(&self, host: HostId) -> bool {
        self.hosts
            .get(&host)
            .is_some_and(|h| !h.lost && h.usable > 0)
    }

    pub(super) fn index_host(&mut self, host: HostId) {
        self.host_changed(host);
        if self.host_is_live(host) {
            self.index.live_hosts += 1;
        }
        if self.hosts[&host].lost {
            self.index.lost_hosts += 1;
        }
    }

    pub(super) fn unindex_host(&mut self, host: HostId) {
        if self.host_is_live(host) {
            self.index.live_hosts -= 1;
        }
        if self.hosts[&host].lost {
            self.index.lost_hosts -= 1;
        }
    }

    /// Puts the chunk and its running attempts into the indexes, as they are.
    pub(super) fn index_chunk(&mut self, id: ChunkId) {
        let chunk = &self.chunks[id as usize];
        if chunk.state == ChunkState::Pending {
            self.index.pending_cost += u128::from(self.costs.cost(chunk.rows.clone()));
        }
        let live = chunk
            .running
            .iter()
            .filter(|&&a| !self.attempts[a as usize].silent)
            .count();
        let place = Place {
            splittable: chunk.state == ChunkState::Running && live == 1,
            speculable: chunk.running.len() == 1 && !chunk.had_backup,
        };
        match chunk.state {
            ChunkState::Pending if chunk.failed_hosts.is_empty() => {
                self.index.pending_fresh.insert(id);
            }
            ChunkState::Pending => {
                self.index.pending_retry.insert(id);
            }
            ChunkState::Running if !chunk.running.is_empty() && live == 0 => {
                self.index.stalled.insert(id);
            }
            _ => {}
        }
        // Taken out while its attempts go in (it is not read meanwhile).
        let running = std::mem::take(&mut self.chunks[id as usize].running);
        for &a in &running {
            self.index_attempt(a, place);
        }
        self.chunks[id as usize].running = running;
    }

    /// Takes the chunk and its running attempts out of the indexes.
    pub(super) fn unindex_chunk(&mut self, id: ChunkId) {
        if self.index.pending_fresh.remove(&id) | self.index.pending_retry.remove(&id) {
            let rows = self.chunks[id as usize].rows.clone();
            self.index.pending_cost -= u128::from(self.costs.cost(rows));
        }
        self.index.stalled.remove(&id);
        let running = std::mem::take(&mut self.chunks[id as usize].running);
        for &a in &running {
            self.unindex_attempt(a);
        }
        self.chunks[id as usize].running = running;
    }

    fn index_attempt(&mut self, id: AttemptId, place: Place) {
        self.attempt_changed(id);
        let a = &self.attempts[id as usize];
        if a.state != AttemptState::Running || a.indexed {
            return;
        }
        let Place {
            splittable,
            speculable,
        } = place;
        let (backup, silent) = (a.backup, a.silent);
        let estimate = if silent { a.estimate } else { self.estimate(a) };
        let a = &mut self.attempts[id as usize];
        a.estimate = estimate;
        a.indexed = true;
        if silent {
            if let Some(e) = estimate {
                self.index.etas.insert((Key(e.eta), id));
            }
            return;
        }
        if backup {
            self.index.running_backups += 1;
        }
        let Some(e) = estimate else {
            self.index.unestimated.insert((a.last_report, id));
            return;
        };
        let key = (Key(e.eta), id);
        self.index.etas.insert(key);
        self.index.silence.insert((e.silent_at, id));
        if e.eta > secs(self.now) {
            self.index.future.insert(key);
            self.index.future_work += e.eta * e.speed;
            self.index.future_speed += e.speed;
        }
        if splittable {
            self.index.splittable.insert(key);
        }
        if speculable {
            self.index.speculable.insert(key);
        }
    }

    fn unindex_attempt(&mut self, id: AttemptId) {
        self.attempt_changed(id);
        let a = &mut self.attempts[id as usize];
        if !a.indexed {
            return;
        }
        a.indexed = false;
        if a.backup && !a.silent {
            self.index.running_backups -= 1;
        }
        self.index.unestimated.remove(&(a.last_report, id));
        if let Some(e) = a.estimate {
            let key = (Key(e.eta), id);
            self.index.etas.remove(&key);
            self.index.splittable.remove(&key);
            self.index.speculable.remove(&key);
            self.index.silence.remove(&(e.silent_at, id));
            if self.index.future.remove(&key) {
                self.index.future_work -= e.eta * e.speed;
                self.index.future_speed -= e.speed;
            }
        }
    }

    /// The attempt's predicted finish from its last news, and when it falls
    /// silent: from its launch (with the launch latency) until it reports,
    /// then from its last report. `None` without any speed to go by.
    pub(super) fn estimate(&self, a: &Attempt) -> Option<Estimate> {
        let speed = a
            .speed
            .or_else(|| self.slot_speed(a.slot))
            .filter(|s| *s > 0.0)?;
        let at = a.rows.start + a.rows_done;
        let remaining = (a.cost - a.cost_done) as f64 / speed;
        let latency = self.latency.unwrap_or(0.0);
        // The time its next report should take: its next batch at its speed
        // (and its mean time between reports once it has some).
        let next = self.batch_rows(a).map(|batch| {
            let end = self.costs.prefix((at + batch).min(a.rows.end));
            (end - a.start_prefix - a.cost_done) as f64 / speed
        });
        let (eta, news, silent_after) = if a.reports == 0 {
            let expected = latency + remaining;
            let silent_after = next.map_or(2.0 * expected, |n| SILENCE_FACTOR * (latency + n));
            (secs(a.start) + expected, a.start, silent_after)
        } else {
            let interval = secs(a.last_report.saturating_sub(a.start)) / f64::from(a.reports);
            let next = next.unwrap_or(0.0);
            (
                secs(a.last_report) + remaining,
                a.last_report,
                SILENCE_FACTOR * interval.max(next),
            )
        };
        Some(Estimate {
            eta,
            speed,
            silent_at: news + duration(silent_after).max(SILENCE_MIN),
        })
    }
}
