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
//! ordered by predicted finish. One past its predicted finish is nearly
//! done, or it falls silent ([`SILENCE_FACTOR`](super::SILENCE_FACTOR)) and
//! gets a backup; meanwhile it is a split candidate no more, and a
//! speculation candidate only once every attempt that may be backed up is
//! past its finish, with its overrun as its time left.
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

    /// The speculation candidate of a set ordered by predicted finish: the
    /// one that finishes last, with its time left; once every one is past
    /// its predicted finish, the one furthest past it, its time left counted
    /// as long as it has overrun. An attempt past its finish is taken to be
    /// nearly done, but one that stays past it longer than a backup would
    /// take is not, and it would otherwise wait to fall silent
    /// ([`SILENCE_MIN`](super::SILENCE_MIN) at least) with fast slots idle.
    fn speculation_candidate(
        set: &BTreeSet<(Key, AttemptId)>,
        now: Duration,
    ) -> Option<(f64, AttemptId)> {
        if let Some(latest) = Self::latest(set, now) {
            return Some(latest);
        }
        let &(eta, id) = set.first()?;
        let overrun = secs(now) - eta.0;
        (overrun > 0.0).then_some((overrun, id))
    }

    /// The median time left of the running attempts (0 once past).
    pub(super) fn median_left(&self, now: Duration) -> Option<f64> {
        median(&self.index.etas).map(|eta| (eta - secs(now)).max(0.0))
    }

    /// Split the running chunk with the most time left among idle slots, while
    /// that is worth it (see `best_split`). The running attempt keeps the
    /// rows before the split (never fewer than it will have reached when it
    /// reads the stop); the rest becomes new chunks of equal cost, launched
    /// at once, the costliest on the fastest idle slot.
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
            let Some((split_row, pieces)) = self.best_split(now, attempt_id, left, speed, &idle)
            else {
                return;
            };
            self.splits += 1;
            self.cut_chunk(chunk_id, split_row);
            let ids = self.add_chunks(pieces);
            for (id, slot) in ids.into_iter().zip(idle) {
                self.launch(now, id, slot, false);
            }
        }
    }

    /// The row the attempt will have reached when it reads a stop: its
    /// estimated position given the time since its last report, plus one row
    /// for the one under way, up to the end of the batch it is on (a worker
    /// finishes its batch before it reads a message, and reports at every
    /// batch's end; see [`Scheduler::batch_rows`]).
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
        let row = match self.batch_rows(a) {
            Some(batch) => at + (row - at).div_ceil(batch) * batch,
            None => row,
        };
        row.min(a.rows.end)
    }

    /// How to split the attempt's chunk: the row it stops at and the new
    /// chunks, costliest first (the first ones go to `idle` in order, any
    /// others wait as pending chunks), if that is worth it.
    ///
    /// Balanced: the attempt and `k` of the idle slots end together, for the
    /// `k` (1 to 8, or all of them, half, a quarter...) that ends first;
    /// made if that ends by the horizon and beats [`SPLIT_GAIN`] x `left`. Past the horizon (the attempt would end well
    /// after it): the attempt keeps what it does by the horizon, and the rest
    /// is cut into chunks that a slot of the fleet's median speed does by
    /// then, so that slots freeing up one at a time each take a horizon's
    /// worth instead of halving the biggest chunk again and again.
    fn best_split(
        &self,
        now: Duration,
        attempt_id: AttemptId,
        left: f64,
        speed: f64,
        idle: &[SlotId],
    ) -> Option<(u64, Vec<Range<u64>>)> {
        let attempt = &self.attempts[attempt_id as usize];
        let end = attempt.rows.end;
        let at = attempt.rows.start + attempt.rows_done;
        let batch = self.batch_rows(attempt);
        let reached = self.row_reached(now, attempt_id, speed);
        if end.saturating_sub(reached) < MIN_SPLIT_ROWS {
            return None;
        }
        let latency = self.latency.unwrap_or(0.0);
        let unreported = (attempt.cost - attempt.cost_done) as f64;
        let remaining_work = (left * speed).min(unreported);
        let position = (attempt.start_prefix + attempt.cost) as f64 - remaining_work;
        // The row where the attempt has done `keep` more, at a batch's end (a
        // stop inside a batch costs the whole batch).
        let stop_row = |keep: f64| {
            let goal = (position + keep.max(0.0)).max(0.0) as u64;
            let row = self.costs.row_reaching(0..end, goal);
            let row = match batch {
                Some(batch) if row > at => at + (row - at) / batch * batch,
                _ => row,
            };
            row.max(reached).min(end)
        };
        let by_cost = |pieces: Vec<Range<u64>>| {
            let mut pieces: Vec<(u64, Range<u64>)> = pieces
                .into_iter()
                .map(|r| (self.costs.cost(r.clone()), r))
                .collect();
            pieces.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.start.cmp(&b.1.start)));
            pieces
        };
        let speeds: Vec<f64> = idle
            .iter()
            .map(|&s| self.slot_speed(s).unwrap_or(speed).max(f64::MIN_POSITIVE))
            .collect();
        let mut best: Option<(f64, u64, Vec<Range<u64>>)> = None;
        // Piece counts tried: every count up to 8, then all the idle slots,
        // half of them, a quarter... down to 8.
        let halves = std::iter::successors(Some(idle.len()), |&k| (k > 16).then_some(k / 2));
        let counts = (1..=idle.len().min(8)).chain(halves.filter(|&k| k > 8));
        for k in counts {
            let others: f64 = speeds[..k].iter().sum();
            let balanced = (remaining_work + latency * others) / (speed + others);
            let row = stop_row(speed * balanced);
            if end - row < MIN_SPLIT_ROWS {
                continue;
            }
            let pieces = by_cost(self.costs.split(row..end, k as u64));
            let slowest_piece = pieces
                .iter()
                .zip(&speeds)
                .map(|((cost, _), s)| latency + *cost as f64 / s)
                .fold(0.0, f64::max);
            let kept_cost = self.costs.prefix(row) as f64 - position;
            let estimate = slowest_piece.max(kept_cost.max(0.0) / speed);
            if best.as_ref().is_none_or(|b| estimate < b.0) {
                best = Some((estimate, row, pieces.into_iter().map(|(_, r)| r).collect()));
            }
        }
        let horizon = self.horizon(now);
        if let Some((estimate, row, pieces)) = best
            && horizon.is_none_or(|h| estimate <= h)
        {
            return (estimate < SPLIT_GAIN * left).then_some((row, pieces));
        }
        let h = horizon?;
        if left * SPLIT_GAIN <= h || h <= 2.0 * latency {
            return None;
        }
        let row = stop_row(speed * h);
        if end - row < MIN_SPLIT_ROWS {
            return None;
        }
        let piece_cost = (h - latency) * self.fleet_speed().unwrap_or(speed);
        let rest = self.costs.cost(row..end) as f64;
        let n = ((rest / piece_cost.max(1.0)).ceil() as usize).clamp(1, MAX_SPLIT_PARTS);
        let pieces = by_cost(self.costs.split(row..end, n as u64));
        Some((row, pieces.into_iter().map(|(_, r)| r).collect()))
    }

    /// The horizon: seconds from now until the work left would be done if
    /// every slot up shared it (the cost the attempts that report have left
    /// by their predictions, and the pending chunks, over the fleet's speed).
    /// `None` while no speed is known.
    fn horizon(&self, now: Duration) -> Option<f64> {
        let running = self.index.future_work - secs(now) * self.index.future_speed;
        let work = running.max(0.0) + self.index.pending_cost as f64;
        (self.index.speed_sum > 0.0).then(|| work / self.index.speed_sum)
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

    /// LATE: a backup for the running attempt with the longest time left
    /// (or, once all that may be backed up are past their predicted finish,
    /// the one furthest past it: [`Scheduler::speculation_candidate`]),
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
            let Some((left, id)) = Self::speculation_candidate(&self.index.speculable, now) else {
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
