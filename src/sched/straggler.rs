//! The straggler policy: what runs where, decided at every step from the
//! indexes (`machine.rs`), never by scanning every slot or attempt.
//!
//! Estimates. An attempt's speed (cost units per second) is the rate over its
//! recent reports: from the newest report at least [`RATE_WINDOW`](super::RATE_WINDOW) old (or its
//! first report) to the latest one, measured only over at least
//! [`MIN_RATE_SPAN`](super::MIN_RATE_SPAN). Reports are timed when they reach the scheduler, so a
//! coordinator that was busy hands over several at once; a rate over a long
//! window is barely moved by such a burst, while one between two reports of a
//! burst would be near infinite. A slot's speed is an average (EWMA, weight
//! [`EWMA_WEIGHT`](super::EWMA_WEIGHT)) of its attempts' rates at each report and at the finish.
//! The launch latency (start-up time before the first row) is the same kind of
//! average, derived from each attempt's first report and its first rate. An
//! attempt's predicted finish is made at its last news: its remaining cost
//! over its speed after its last report (or after its launch and the
//! latency). The candidate with the most time left is the last of a set
//! ordered by predicted finish. One past its predicted finish is no
//! candidate: it is nearly done, or it falls silent ([`SILENCE_FACTOR`](super::SILENCE_FACTOR)) and gets a backup.
//!
//! Weapons, in the order of a step: pending chunks to idle slots (fastest
//! first; a retry to a host it has not failed on); backups the user asked
//! for; when nothing is pending, splits of the attempts that report
//! ([`SPLIT_GAIN`], at most [`MAX_SPLIT_PARTS`] new chunks each), then
//! backups: first for chunks whose every attempt is silent (a split cannot
//! help an attempt that stopped reporting: the rows it keeps would never
//! come), on the fastest idle slot, then LATE-style speculation
//! ([`SPECULATION_SLOWNESS`], [`SPECULATION_GAIN`], [`SPECULATION_PEERS`])
//! within Dolly's budget ([`BACKUP_BUDGET`]), never on a slot of the slowest
//! quartile. At most [`BACKUP_SLOT_SHARE`] of the slots run backups that
//! report. A backup of a silent attempt is itself split like any other
//! attempt once it is the one that reports.

use std::ops::Range;
use std::time::Duration;

use std::collections::BTreeSet;

use super::machine::{CHECK_INTERVAL, ChunkState, secs};
use super::order::{Key, median};
use super::{AttemptId, ChunkId, HostId, Scheduler, SlotId};

/// A split is made only if the chunk's estimated finish after it is below
/// this fraction of the running attempt's time left, or if the attempt's time
/// left is over the horizon (see `split_stragglers`) by more than its inverse.
pub const SPLIT_GAIN: f64 = 0.8;
/// Fewest rows the rest of a split chunk must hold.
pub const MIN_SPLIT_ROWS: u64 = 1;
/// Most new chunks one split makes. A chunk that should spread wider is split
/// again at the next step, its pieces being attempts of their own.
pub const MAX_SPLIT_PARTS: usize = 32;
/// An attempt is a straggler when its time left is at least this many times
/// the median time left of the running attempts (a median below one
/// [`CHECK_INTERVAL`] counts as one interval).
pub const SPECULATION_SLOWNESS: f64 = 1.5;
/// A backup is launched only if it is expected to finish within this
/// fraction of the straggler's time left.
pub const SPECULATION_GAIN: f64 = 0.5;
/// With fewer running attempts than this (the tail of a run) the slowness
/// test is waived: idle slots have nothing better to do than a backup that
/// passes the [`SPECULATION_GAIN`] test.
pub const SPECULATION_PEERS: usize = 3;
/// Share of the slots that may run backups at once (at least one).
pub const BACKUP_SLOT_SHARE: f64 = 0.1;
/// Speculative backups stop once the rows given to backups cost this share of
/// the run's total (Dolly's budget), or one planned chunk's cost if that is
/// more (so a run of fewer than 20 chunks can still back up its straggler).
/// Backups of silent attempts are not speculation (that work is presumed
/// lost) and are made past it.
pub const BACKUP_BUDGET: f64 = 0.05;

impl Scheduler {
    /// The speed an idle slot without a measured speed counts at.
    fn unknown_speed(&self) -> f64 {
        self.fleet_speed().unwrap_or(0.0)
    }

    /// Retried chunks first, each on the fastest idle slot of a host it has
    /// not failed on (any, once it failed on every live host); then chunks
    /// never tried, in order, each on the fastest idle slot.
    pub(super) fn launch_pending(&mut self, now: Duration) {
        let mut after = 0;
        while !self.index.idle.is_empty() {
            let Some(&chunk) = self.index.pending_retry.range(after..).next() else {
                break;
            };
            after = chunk + 1;
            if let Some(slot) = self.retry_slot(chunk) {
                self.launch(now, chunk, slot, false);
            }
        }
        while !self.index.idle.is_empty() {
            let Some(&chunk) = self.index.pending_fresh.first() else {
                break;
            };
            let slot = self.index.idle.fastest(1, self.unknown_speed())[0];
            self.launch(now, chunk, slot, false);
        }
    }

    fn retry_slot(&self, chunk: ChunkId) -> Option<SlotId> {
        let failed = &self.chunks[chunk as usize].failed_hosts;
        let failed_live = failed.iter().filter(|&&h| self.host_is_live(h)).count();
        let tried_everywhere = failed_live == self.index.live_hosts;
        let mut idle = self.index.idle.iter(self.unknown_speed());
        let (first, _) = idle.next()?;
        if tried_everywhere || !failed.contains(&self.slots[&first].host) {
            return Some(first);
        }
        idle.map(|(s, _)| s)
            .find(|s| !failed.contains(&self.slots[s].host))
    }

    pub(super) fn launch_requested_backups(&mut self, now: Duration) {
        let requests: Vec<ChunkId> = self.backup_requests.iter().copied().collect();
        for chunk_id in requests {
            let running = self
                .chunks
                .get(chunk_id as usize)
                .is_some_and(|c| c.state == ChunkState::Running);
            if !running {
                self.backup_requests.remove(&chunk_id);
                continue;
            }
            let busy_hosts: Vec<HostId> = self.chunks[chunk_id as usize]
                .running
                .iter()
                .map(|&a| self.attempts[a as usize].host)
                .collect();
            let on_other_host = |s: &SlotId| !busy_hosts.contains(&self.slots[s].host);
            let mut idle = self.index.idle.iter(self.unknown_speed()).map(|(s, _)| s);
            let Some(first) = idle.next() else {
                return;
            };
            let slot = if on_other_host(&first) {
                first
            } else {
                idle.find(on_other_host).unwrap_or(first)
            };
            drop(idle);
            self.backup_requests.remove(&chunk_id);
            self.launch(now, chunk_id, slot, true);
        }
    }

    /// Of a set ordered by predicted finish, the entry that finishes last,
    /// with its time left, if that is still ahead. (One past its predicted
    /// finish is nearly done, or falls silent soon and gets a backup.)
    fn latest(set: &BTreeSet<(Key, AttemptId)>, now: Duration) -> Option<(f64, AttemptId)> {
        let &(eta, id) = set.last()?;
        (eta.0 > secs(now)).then(|| (eta.0 - secs(now), id))
    }

    /// The median time left of the running attempts (0 once past).
    pub(super) fn median_left(&self, now: Duration) -> Option<f64> {
        median(&self.index.etas).map(|eta| (eta - secs(now)).max(0.0))
    }

    /// Split the running chunk with the most time left among idle slots, while
    /// that is worth it. The running attempt keeps the share of the rest that
    /// lets it finish with the new attempts (never less than the rows it has
    /// reached plus one in flight); the rest becomes new chunks of equal cost,
    /// launched at once, the costliest on the fastest idle slot. When even
    /// that would end after the horizon (all running work shared by the
    /// whole fleet), each new chunk is only what its slot does by the horizon
    /// and the attempt keeps the rest, for slots that free up later: slots
    /// that free up one at a time then each take a horizon's worth, instead
    /// of halving the biggest chunk again and again.
    pub(super) fn split_stragglers(&mut self, now: Duration) {
        while !self.index.idle.is_empty() {
            let Some((left, attempt_id)) = Self::latest(&self.index.splittable, now) else {
                return;
            };
            let share = self
                .index
                .idle
                .len()
                .div_ceil(self.index.splittable.len())
                .min(MAX_SPLIT_PARTS);
            let idle = self.index.idle.fastest(share, self.unknown_speed());
            let attempt = &self.attempts[attempt_id as usize];
            let speed = attempt
                .estimate
                .expect("a split candidate has an estimate")
                .speed;
            let chunk_id = attempt.chunk;
            let Some((split_row, pieces, slots)) =
                self.best_split(now, attempt_id, left, speed, &idle)
            else {
                return;
            };
            self.splits += 1;
            self.cut_chunk(chunk_id, split_row);
            let ids = self.add_chunks(pieces);
            for (id, slot) in ids.into_iter().zip(slots) {
                self.launch(now, id, slot, false);
            }
        }
    }

    /// The row the attempt will have reached when it reads a stop: its
    /// estimated position given the time since its last report, plus one row
    /// for the one under way; once it has reported, up to the end of the
    /// batch it is on (a worker finishes its batch before it reads a message,
    /// and reports at every batch's end, so its batch is its rows per report).
    fn row_reached(&self, now: Duration, attempt: AttemptId, speed: f64) -> u64 {
        let a = &self.attempts[attempt as usize];
        let since = if a.reports == 0 {
            (secs(now.saturating_sub(a.start)) - self.latency.unwrap_or(0.0)).max(0.0)
        } else {
            secs(now.saturating_sub(a.last_report))
        };
        let at = a.rows.start + a.rows_done;
        let in_flight = (since * speed) as u64;
        let row = self.costs.row_reaching(at..a.rows.end, in_flight) + 1;
        let row = if a.reports == 0 {
            row
        } else {
            let batch = (a.rows_done / u64::from(a.reports)).max(1);
            at + (row - at).div_ceil(batch) * batch
        };
        row.min(a.rows.end)
    }

    /// The split of the attempt's chunk over up to `idle.len()` new attempts
    /// that finishes first, if it beats [`SPLIT_GAIN`] x `left`.
    #[allow(clippy::type_complexity)]
    fn best_split(
        &self,
        now: Duration,
        attempt_id: AttemptId,
        left: f64,
        speed: f64,
        idle: &[SlotId],
    ) -> Option<(u64, Vec<Range<u64>>, Vec<SlotId>)> {
        let attempt = &self.attempts[attempt_id as usize];
        let end = attempt.rows.end;
        let at = attempt.rows.start + attempt.rows_done;
        let batch =
            (attempt.reports > 0).then(|| (attempt.rows_done / u64::from(attempt.reports)).max(1));
        let reached = self.row_reached(now, attempt_id, speed);
        if end.saturating_sub(reached) < MIN_SPLIT_ROWS {
            return None;
        }
        let latency = self.latency.unwrap_or(0.0);
        let unreported = self.costs.cost(attempt.rows.start + attempt.rows_done..end) as f64;
        let remaining_work = (left * speed).min(unreported);
        let position = self.costs.cost(0..end) as f64 - remaining_work;
        let speeds: Vec<f64> = idle
            .iter()
            .map(|&s| self.slot_speed(s).unwrap_or(speed).max(f64::MIN_POSITIVE))
            .collect();
        let horizon = self.horizon(now);
        let mut best: Option<(f64, u64, Vec<Range<u64>>)> = None;
        for k in 1..=idle.len() {
            let others: f64 = speeds[..k].iter().sum();
            let balanced = (remaining_work + latency * others) / (speed + others);
            let keep = match horizon {
                // More slots will be free before these could finish: each
                // new piece is what its slot does by the horizon, and the
                // attempt keeps no more than it does by then (its batches
                // cannot be split later once begun).
                Some(h) if balanced > h => {
                    (remaining_work - (h - latency).max(0.0) * others).min(speed * h)
                }
                _ => speed * balanced,
            }
            .max(0.0);
            let goal = (position + keep).max(0.0) as u64;
            let row = self.costs.row_reaching(0..end, goal);
            // At a batch's end: a stop inside a batch costs the whole batch.
            let row = match batch {
                Some(batch) if row > at => at + (row - at) / batch * batch,
                _ => row,
            };
            let row = row.max(reached).min(end);
            if end - row < MIN_SPLIT_ROWS {
                continue;
            }
            let pieces = self.costs.split(row..end, k as u64);
            let mut by_cost: Vec<(u64, usize)> = pieces
                .iter()
                .enumerate()
                .map(|(i, r)| (self.costs.cost(r.clone()), i))
                .collect();
            by_cost.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut slowest_piece: f64 = 0.0;
            for (rank, (cost, _)) in by_cost.iter().enumerate() {
                slowest_piece = slowest_piece.max(latency + *cost as f64 / speeds[rank]);
            }
            let kept_cost = self.costs.cost(0..row) as f64 - position;
            let estimate = slowest_piece.max(kept_cost.max(0.0) / speed);
            if best.as_ref().is_none_or(|b| estimate < b.0) {
                let order: Vec<Range<u64>> =
                    by_cost.iter().map(|&(_, i)| pieces[i].clone()).collect();
                best = Some((estimate, row, order));
            }
        }
        let (estimate, row, pieces) = best?;
        // Past the horizon a piece is worth making when the attempt would
        // end well after it and the piece's slot does more than start up.
        let fills = horizon.is_some_and(|h| left * SPLIT_GAIN > h && h > 2.0 * latency);
        if estimate >= SPLIT_GAIN * left && !fills {
            return None;
        }
        let slots = idle[..pieces.len()].to_vec();
        Some((row, pieces, slots))
    }

    /// Seconds from now until the work that runs would be done if every slot
    /// up shared it: the cost the attempts that report have left by their
    /// predictions, over the fleet's speed. `None` while no speed is known.
    fn horizon(&self, now: Duration) -> Option<f64> {
        let work = self.index.future_work - secs(now) * self.index.future_speed;
        (self.index.speed_sum > 0.0).then(|| work.max(0.0) / self.index.speed_sum)
    }

    /// The fastest idle slot, unless it is in the slowest quartile of
    /// measured speeds (then every idle slot is).
    fn backup_slot(&self) -> Option<(SlotId, f64)> {
        let (slot, speed) = self.index.idle.iter(self.unknown_speed()).next()?;
        let boundary = self.index.speed_quartile.at_rank().map_or(0.0, |k| k.0.0);
        (speed >= boundary).then_some((slot, speed))
    }

    /// Backups that report (a silent one holds no working slot) are fewer
    /// than [`BACKUP_SLOT_SHARE`] of the slots up (at least one).
    fn backup_slots_left(&self) -> bool {
        let cap = ((self.index.slots_up as f64 * BACKUP_SLOT_SHARE) as usize).max(1);
        self.index.running_backups < cap
    }

    /// A backup for every chunk whose attempts are all silent, on the
    /// fastest idle slot (a slow one beats none), before any split: such a
    /// chunk has all its work ahead of it, as a pending one does.
    pub(super) fn back_up_stalled(&mut self, now: Duration) {
        while self.backup_slots_left() {
            let Some(&chunk) = self.index.stalled.first() else {
                return;
            };
            let Some((slot, _)) = self.index.idle.iter(self.unknown_speed()).next() else {
                return;
            };
            self.launch(now, chunk, slot, true);
        }
    }

    /// LATE: a backup for the running attempt with the longest time left,
    /// when it is a straggler ([`SPECULATION_SLOWNESS`], waived below
    /// [`SPECULATION_PEERS`] running attempts), has no backup yet, and a fast
    /// idle slot would finish it within [`SPECULATION_GAIN`] of its time
    /// left, within [`BACKUP_BUDGET`].
    pub(super) fn speculate(&mut self, now: Duration) {
        let budget =
            ((self.costs.total() as f64 * BACKUP_BUDGET) as u64).max(self.policy.target_chunk_cost);
        while self.backup_slots_left() {
            let Some((slot, backup_speed)) = self.backup_slot() else {
                return;
            };
            let Some((left, id)) = Self::latest(&self.index.speculable, now) else {
                return;
            };
            let Some(median_left) = self.median_left(now) else {
                return;
            };
            let few = self.index.etas.len() < SPECULATION_PEERS;
            let straggling =
                few || left >= SPECULATION_SLOWNESS * median_left.max(secs(CHECK_INTERVAL));
            let chunk_id = self.attempts[id as usize].chunk;
            let cost = self.costs.cost(self.chunks[chunk_id as usize].rows.clone());
            let backup_time = self.latency.unwrap_or(0.0) + cost as f64 / backup_speed;
            if !straggling
                || backup_speed <= 0.0
                || backup_time >= SPECULATION_GAIN * left
                || self.backup_cost + cost > budget
            {
                return;
            }
            self.launch(now, chunk_id, slot, true);
        }
    }
}
