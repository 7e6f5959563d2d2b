//! The scheduler's indexes recomputed by a full scan, for the tests: every
//! ordered set and counter of `machine::Index` must equal what a scan of the
//! chunks, attempts, slots and hosts gives, and the chunks must tile the
//! rows. `sim::run_checked` calls it after every event, and checks there
//! that the updates for the UI add up to the full snapshot.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use super::machine::{ChunkState, SILENCE_UNMEASURED};
use super::order::{IdleSlots, Key};
use super::view::MAX_STRAGGLERS_PUBLISHED;
use super::{AttemptId, AttemptState, Scheduler, Snapshot};

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($arg)+));
        }
    };
}

impl Scheduler {
    /// Recomputes every index by a full scan and says where it differs from
    /// the one kept. Costs time in proportion to everything: for tests.
    pub fn check_index(&self) -> Result<(), String> {
        self.check_slots()?;
        self.check_chunks()?;
        self.check_attempts()
    }

    /// Applies [`Scheduler::changes`] to `shown` (what a UI holds) and says
    /// where it differs from a full snapshot at the same `now`: the figures,
    /// every attempt (its slowness aside: it moves with the clock, and is
    /// fresh only for attempts that changed and for stragglers) and host
    /// (its rate aside, which moves with the clock too), and the stragglers
    /// (the worst of the full list). For tests.
    pub fn check_changes(&mut self, now: Duration, shown: &mut Snapshot) -> Result<(), String> {
        let update = self.changes(now);
        shown.update(&update);
        let full = self.snapshot(now);
        let strip = |s: &Snapshot| {
            let mut s = s.clone();
            s.attempts.iter_mut().for_each(|a| a.slowness = 1.0);
            s.hosts.iter_mut().for_each(|h| h.rows_per_s = 0.0);
            s.stragglers.clear();
            s
        };
        if strip(shown) != strip(&full) {
            return Err(format!(
                "the updates add up to {:?}, the snapshot says {:?}",
                strip(shown),
                strip(&full)
            ));
        }
        for a in &update.attempts {
            let fresh = &full.attempts[a.attempt as usize];
            if a.slowness != fresh.slowness {
                return Err(format!(
                    "attempt {} updated with a stale slowness",
                    a.attempt
                ));
            }
        }
        let mut worst = full.stragglers.clone();
        worst.sort_by(|a, b| b.eta.cmp(&a.eta).then(a.attempt.cmp(&b.attempt)));
        let cut = worst.get(MAX_STRAGGLERS_PUBLISHED).map(|s| s.eta);
        let published: BTreeSet<AttemptId> = update.stragglers.iter().map(|s| s.attempt).collect();
        let must: BTreeSet<AttemptId> = worst
            .iter()
            .filter(|s| cut.is_none_or(|c| s.eta > c))
            .map(|s| s.attempt)
            .collect();
        let may: BTreeSet<AttemptId> = worst
            .iter()
            .filter(|s| cut.is_none_or(|c| s.eta >= c))
            .map(|s| s.attempt)
            .collect();
        let count = worst.len().min(MAX_STRAGGLERS_PUBLISHED);
        if !must.is_subset(&published) || !published.is_subset(&may) || published.len() != count {
            return Err(format!(
                "published stragglers {published:?}, the worst {count} of {:?} expected",
                full.stragglers
            ));
        }
        Ok(())
    }

    fn check_slots(&self) -> Result<(), String> {
        let mut idle = IdleSlots::default();
        let (mut speeds, mut up, mut busy) = (BTreeSet::new(), 0, 0);
        for (&id, s) in &self.slots {
            let lost = self.hosts.get(&s.host).is_some_and(|h| h.lost);
            if s.up && s.attempt.is_none() && !s.set_aside && !lost {
                idle.insert(id, s.speed);
            }
            if s.up {
                up += 1;
                if let Some(v) = s.speed {
                    speeds.insert((Key(v), id));
                }
            }
            busy += usize::from(s.attempt.is_some());
            if let Some(a) = s.attempt {
                let a = &self.attempts[a as usize];
                ensure!(
                    a.state == AttemptState::Running && a.slot == id,
                    "slot {} holds attempt {:?}, which is not running there",
                    id.0,
                    s.attempt
                );
            }
        }
        ensure!(idle == self.index.idle, "idle slots differ");
        ensure!(
            (up, busy) == (self.index.slots_up, self.index.busy_slots),
            "slots up/busy {up}/{busy}, indexed {}/{}",
            self.index.slots_up,
            self.index.busy_slots
        );
        let sum: f64 = speeds.iter().map(|(k, _)| k.0).sum();
        ensure!(
            (sum - self.index.speed_sum).abs() <= 1e-6 * sum.max(1.0),
            "speed sum {sum}, indexed {}",
            self.index.speed_sum
        );
        for ranked in [&self.index.speed_median, &self.index.speed_quartile] {
            ensure!(ranked.is_consistent(), "a speed split is off its rank");
            ensure!(ranked.iter().eq(speeds.iter()), "slot speeds differ");
        }
        let (mut live, mut lost) = (0, 0);
        for (&host, h) in &self.hosts {
            let on = |f: fn(&super::machine::Slot) -> bool| {
                self.slots
                    .values()
                    .filter(|s| s.host == host && f(s))
                    .count() as u32
            };
            ensure!(
                h.usable == on(|s| s.up && !s.set_aside) && h.busy == on(|s| s.attempt.is_some()),
                "host {host}: slot counters differ"
            );
            let computed: u64 = self
                .attempts
                .iter()
                .filter(|a| a.host == host)
                .map(|a| a.rows_done)
                .sum();
            ensure!(
                h.rows_computed == computed,
                "host {host}: rows computed {}, by its attempts {computed}",
                h.rows_computed
            );
            live += usize::from(!h.lost && h.usable > 0);
            lost += usize::from(h.lost);
        }
        ensure!(
            (live, lost) == (self.index.live_hosts, self.index.lost_hosts),
            "live/lost hosts differ"
        );
        Ok(())
    }

    fn check_chunks(&self) -> Result<(), String> {
        let (mut fresh, mut retry, mut stalled) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut ranges: Vec<Range<u64>> = self.resumed.clone();
        let mut committed = (0u64, 0u64);
        let mut pending_cost = 0u128;
        for (id, c) in self.chunks.iter().enumerate() {
            let id = id as u64;
            match c.state {
                ChunkState::Pending => {
                    ensure!(
                        c.running.is_empty(),
                        "pending chunk {id} has attempts running"
                    );
                    pending_cost += u128::from(self.costs.cost(c.rows.clone()));
                    if c.failed_hosts.is_empty() {
                        fresh.insert(id);
                    } else {
                        retry.insert(id);
                    }
                }
                ChunkState::Running => {
                    ensure!(
                        !c.running.is_empty() || self.finished,
                        "running chunk {id} has no attempt"
                    );
                    if !c.running.is_empty()
                        && c.running.iter().all(|&a| self.attempts[a as usize].silent)
                    {
                        stalled.insert(id);
                    }
                }
                ChunkState::Committed => {
                    committed.0 += 1;
                    committed.1 += c.rows.end - c.rows.start;
                }
                ChunkState::Failed => {}
            }
            for &a in &c.running {
                let a = &self.attempts[a as usize];
                ensure!(
                    a.chunk == id && a.state == AttemptState::Running,
                    "chunk {id} lists an attempt that does not run it"
                );
                ensure!(
                    a.rows.start == c.rows.start && a.rows.end >= c.rows.end,
                    "chunk {id} rows {:?}, its attempt's {:?}",
                    c.rows,
                    a.rows
                );
            }
            ranges.push(c.rows.clone());
        }
        ensure!(fresh == self.index.pending_fresh, "pending chunks differ");
        ensure!(retry == self.index.pending_retry, "chunks to retry differ");
        ensure!(
            pending_cost == self.index.pending_cost,
            "pending cost differs"
        );
        ensure!(stalled == self.index.stalled, "stalled chunks differ");
        let resumed: u64 = self.resumed.iter().map(|r| r.end - r.start).sum();
        ensure!(
            committed == (self.chunks_done, self.rows_done - resumed),
            "committed chunks/rows {committed:?}, counted {}/{}",
            self.chunks_done,
            self.rows_done - resumed
        );
        if self.planned {
            ranges.sort_by_key(|r| r.start);
            let mut at = 0;
            for r in &ranges {
                ensure!(
                    r.start == at && r.end > r.start,
                    "chunks do not tile the rows at row {at}"
                );
                at = r.end;
            }
            ensure!(at == self.costs.rows(), "chunks end at row {at}");
        }
        Ok(())
    }

    fn check_attempts(&self) -> Result<(), String> {
        let mut etas = BTreeSet::new();
        let (mut splittable, mut speculable) = (BTreeSet::new(), BTreeSet::new());
        let (mut silence, mut unestimated) = (BTreeSet::new(), BTreeSet::new());
        let mut future = BTreeSet::new();
        let (mut future_work, mut future_speed) = (0.0, 0.0);
        let mut backups = 0;
        for (id, a) in self.attempts.iter().enumerate() {
            let id = id as u64;
            let running = a.state == AttemptState::Running;
            ensure!(
                a.indexed == running,
                "attempt {id}: indexed {} while {:?}",
                a.indexed,
                a.state
            );
            if !running {
                continue;
            }
            let chunk = &self.chunks[a.chunk as usize];
            ensure!(
                chunk.running.contains(&id),
                "attempt {id} runs outside its chunk"
            );
            if a.silent {
                if let Some(e) = a.estimate {
                    etas.insert((Key(e.eta), id));
                }
                continue;
            }
            backups += usize::from(a.backup);
            let Some(e) = a.estimate else {
                ensure!(
                    self.finished || a.last_report + SILENCE_UNMEASURED > self.now,
                    "attempt {id} should be silent since {:?}",
                    a.last_report + SILENCE_UNMEASURED
                );
                unestimated.insert((a.last_report, id));
                continue;
            };
            ensure!(
                self.finished || e.silent_at > self.now,
                "attempt {id} should be silent since {:?}",
                e.silent_at
            );
            let key = (Key(e.eta), id);
            etas.insert(key);
            silence.insert((e.silent_at, id));
            if e.eta > super::machine::secs(self.now) {
                future.insert(key);
                future_work += e.eta * e.speed;
                future_speed += e.speed;
            }
            let live = chunk
                .running
                .iter()
                .filter(|&&r| !self.attempts[r as usize].silent)
                .count();
            if chunk.state == ChunkState::Running && live == 1 {
                splittable.insert(key);
            }
            if chunk.running.len() == 1 && !chunk.had_backup {
                speculable.insert(key);
            }
        }
        ensure!(
            self.index.etas.is_consistent(),
            "finish times are off their median"
        );
        ensure!(
            self.index.etas.iter().eq(etas.iter()),
            "finish times differ"
        );
        ensure!(
            splittable == self.index.splittable,
            "split candidates differ"
        );
        ensure!(
            speculable == self.index.speculable,
            "backup candidates differ"
        );
        ensure!(silence == self.index.silence, "silence times differ");
        ensure!(
            unestimated == self.index.unestimated,
            "unestimated attempts differ"
        );
        ensure!(
            backups == self.index.running_backups,
            "running backups differ"
        );
        ensure!(
            self.finished || future == self.index.future,
            "attempts predicted to finish later differ"
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0);
        ensure!(
            self.finished
                || (close(future_work, self.index.future_work)
                    && close(future_speed, self.index.future_speed)),
            "work left {future_work}/{future_speed}, indexed {}/{}",
            self.index.future_work,
            self.index.future_speed
        );
        Ok(())
    }
}
