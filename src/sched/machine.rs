//! The scheduler's state machine: chunks, attempts, slots and hosts, and the
//! bookkeeping that keeps every decision cheap at 10,000 slots.
//!
//! It exists so that every scheduling decision can be replayed: it takes time
//! as an argument, keeps ordered maps only, and never touches a clock, a
//! socket or a thread. It must not do IO; the driver (`run`) and the simulated
//! cluster (`sim`) carry its commands out. The policy (what runs where) is in
//! `straggler.rs`, the snapshot in `view.rs`.
//!
//! Planning. With `policy.pull` the chunks are planned in [`Scheduler::new`]:
//! `cost_aware` gives [`CostIndex::chunks_by_cost`], otherwise equal-row
//! chunks with the same chunk count. Without `pull` (static partition) the
//! plan needs the slot count, so it is made at the first
//! [`Scheduler::handle_timeout`] or non-`SlotUp` input after a slot came up,
//! with one equal-row chunk per slot known then; [`Scheduler::poll_timeout`]
//! asks for that call at once.
//!
//! Indexes. Beside the chunks, attempts, slots and hosts the scheduler keeps
//! ordered sets (`index.rs`): pending chunks, idle slots fastest first,
//! slot speeds split at the median and the slowest quartile, running attempts
//! by predicted finish (all of them, the split candidates, the backup
//! candidates), by when they fall silent, and counters. A chunk, an attempt
//! or a slot changes only between `unindex_*` and `index_*` calls that take
//! its entries out and put them back, so no event scans every slot, chunk or
//! attempt; `check.rs` recomputes every index by a full scan for the tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::time::Duration;

use super::index::Index;
use super::order::median;
use super::{AttemptId, AttemptState, ChunkId, Command, HostId, Input, Policy, SlotId};
use crate::plan::{CostIndex, chunks_by_rows, normalize};

/// Virtual time between straggler checks while attempts run.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Weight of a new sample in the speed and latency averages.
pub const EWMA_WEIGHT: f64 = 0.3;
/// An attempt's rate is measured from its newest report at least this old.
pub const RATE_WINDOW: Duration = Duration::from_millis(200);
/// No rate is measured over less than this (reports closer together are
/// merged with the next ones).
pub const MIN_RATE_SPAN: Duration = Duration::from_millis(5);
/// An attempt is silent when no news came for this many times the time its
/// next report should take (the longer of its mean time between reports and
/// its next batch's cost at its speed); one without reports, for twice its
/// expected duration.
pub const SILENCE_FACTOR: f64 = 4.0;
/// No attempt is silent sooner than this after its last news.
pub const SILENCE_MIN: Duration = Duration::from_secs(5);
/// While no speed is known anywhere (so nothing is expected of it), an
/// attempt is silent after this long without news.
pub const SILENCE_UNMEASURED: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkState {
    Pending,
    Running,
    Committed,
    Failed,
}

#[derive(Clone, Debug)]
pub(super) struct Chunk {
    /// Current rows: a split shortens the end, never moves the start.
    pub rows: Range<u64>,
    pub state: ChunkState,
    /// Attempts launched, backups included.
    pub attempts: u32,
    pub running: BTreeSet<AttemptId>,
    pub failed_hosts: BTreeSet<HostId>,
    pub had_backup: bool,
}

/// A running attempt's estimate, made at its last news (launch, report, a
/// change of its chunk) with the speeds and latency known then, and kept so
/// that its index entries can be found again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Estimate {
    /// Predicted finish, in seconds since the run started.
    pub eta: f64,
    /// Cost units per second it was made with.
    pub speed: f64,
    /// From then on it is silent unless news comes.
    pub silent_at: Duration,
}

#[derive(Clone, Debug)]
pub(super) struct Attempt {
    pub chunk: ChunkId,
    pub slot: SlotId,
    pub host: HostId,
    pub start: Duration,
    pub end: Option<Duration>,
    pub rows: Range<u64>,
    /// Rows it was launched with (before any split).
    pub launched_rows: u64,
    pub rows_done: u64,
    /// Cost of the rows before its first, of its rows, and of its first
    /// `rows_done` rows: kept so that an event costs at most one look-up in
    /// the cost index.
    pub start_prefix: u64,
    pub cost: u64,
    pub cost_done: u64,
    pub state: AttemptState,
    pub backup: bool,
    pub split: bool,
    pub reports: u32,
    pub first_report: Option<(Duration, u64)>,
    pub last_report: Duration,
    /// (arrival, cost done) of its recent reports, oldest first: the window
    /// its rate is measured over.
    pub marks: VecDeque<(Duration, u64)>,
    pub latency_sampled: bool,
    /// Cost units per second over its recent reports.
    pub speed: Option<f64>,
    /// No news for longer than its reports promise (see [`SILENCE_FACTOR`]).
    pub silent: bool,
    pub estimate: Option<Estimate>,
    /// Its entries are in the indexes.
    pub indexed: bool,
    /// Changed since the last [`Scheduler::changes`] (listed in `changed`).
    pub changed: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub host: HostId,
    pub up: bool,
    pub attempt: Option<AttemptId>,
    pub speed: Option<f64>,
    /// Its attempt fell silent and lost the race to a backup: it gets no
    /// work until it comes up again or news of it arrives.
    pub set_aside: bool,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Host {
    pub slots: BTreeSet<SlotId>,
    pub lost: bool,
    pub failures: u64,
    pub rows_done: u64,
    pub chunks_done: u64,
    pub first_launch: Option<Duration>,
    /// Its slots that are up and not set aside, and those running an
    /// attempt.
    pub usable: u32,
    pub busy: u32,
    /// Rows computed by all its attempts (committed or not).
    pub rows_computed: u64,
    /// Changed since the last [`Scheduler::changes`] (listed in `changed`).
    pub changed: bool,
}

/// The scheduler state machine; see the module docs for its policy.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pub(super) policy: Policy,
    pub(super) costs: CostIndex,
    pub(super) resumed: Vec<Range<u64>>,
    pub(super) planned: bool,
    /// Indexed by chunk id (ids are handed out in order).
    pub(super) chunks: Vec<Chunk>,
    /// Indexed by attempt id.
    pub(super) attempts: Vec<Attempt>,
    pub(super) slots: BTreeMap<SlotId, Slot>,
    pub(super) hosts: BTreeMap<HostId, Host>,
    pub(super) index: Index,
    pub(super) commands: VecDeque<Command>,
    pub(super) backup_requests: BTreeSet<ChunkId>,
    pub(super) paused: bool,
    pub(super) finished: bool,
    pub(super) rows_done: u64,
    pub(super) cost_done: u64,
    pub(super) chunks_done: u64,
    pub(super) backups: u64,
    pub(super) splits: u64,
    /// Cost of the rows handed to backup attempts.
    pub(super) backup_cost: u64,
    /// Launch latency in seconds.
    pub(super) latency: Option<f64>,
    /// Share of its rows an attempt has done at its first report (workers
    /// report at the end of every batch): an average over attempts.
    pub(super) report_share: Option<f64>,
    pub(super) now: Duration,
    pub(super) last_check: Duration,
    /// What changed since the last [`Scheduler::changes`].
    pub(super) changed: Changed,
}

/// The attempts and hosts changed since the UI last heard of them, each
/// listed once (its `changed` flag says it is listed).
#[derive(Clone, Debug, Default)]
pub(super) struct Changed {
    pub attempts: Vec<AttemptId>,
    pub hosts: Vec<HostId>,
    /// Where the next round of unchanged hosts refreshed for the UI starts.
    pub host_cursor: HostId,
}

pub(super) fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(old) => old + EWMA_WEIGHT * (sample - old),
        None => sample,
    }
}

pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Seconds as a duration, saturating at about 30 years.
pub(super) fn duration(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.clamp(0.0, 1e9))
}

/// The rate from the oldest useful mark to (`now`, `cost`): marks are dropped
/// while the next one is still at least [`RATE_WINDOW`] old. `None` over less
/// than [`MIN_RATE_SPAN`] or without progress.
fn window_rate(marks: &mut VecDeque<(Duration, u64)>, now: Duration, cost: u64) -> Option<f64> {
    while marks.len() >= 2 && now.saturating_sub(marks[1].0) >= RATE_WINDOW {
        marks.pop_front();
    }
    let &(at, done) = marks.front()?;
    let span = now.saturating_sub(at);
    (span >= MIN_RATE_SPAN && cost > done).then(|| (cost - done) as f64 / secs(span))
}

impl Scheduler {
    /// `costs`: the cost (multiply-adds) of every input row, as a
    /// [`CostIndex`] or a `Vec<u64>`; `done`: row ranges already committed
    /// (resume). A run with nothing left to do emits `Done` at once.
    pub fn new(policy: Policy, costs: impl Into<CostIndex>, done: &[Range<u64>]) -> Scheduler {
        let costs: CostIndex = costs.into();
        let resumed = normalize(done, costs.rows());
        let rows_done = resumed.iter().map(|r| r.end - r.start).sum();
        let cost_done = resumed.iter().map(|r| costs.cost(r.clone())).sum();
        let mut scheduler = Scheduler {
            policy,
            costs,
            resumed,
            planned: false,
            chunks: Vec::new(),
            attempts: Vec::new(),
            slots: BTreeMap::new(),
            hosts: BTreeMap::new(),
            index: Index::new(),
            commands: VecDeque::new(),
            backup_requests: BTreeSet::new(),
            paused: false,
            finished: false,
            rows_done,
            cost_done,
            chunks_done: 0,
            backups: 0,
            splits: 0,
            backup_cost: 0,
            latency: None,
            report_share: None,
            now: Duration::ZERO,
            last_check: Duration::ZERO,
            changed: Changed::default(),
        };
        if scheduler.rows_done == scheduler.costs.rows() {
            scheduler.planned = true;
            scheduler.finished = true;
            scheduler.commands.push_back(Command::Done);
        } else if scheduler.policy.pull {
            let done = scheduler.resumed.clone();
            let by_cost = scheduler
                .costs
                .chunks_by_cost(scheduler.policy.target_chunk_cost, &done);
            let ranges = if scheduler.policy.cost_aware {
                by_cost
            } else {
                chunks_by_rows(scheduler.costs.rows(), by_cost.len() as u64, &done)
            };
            scheduler.add_chunks(ranges);
            scheduler.planned = true;
        }
        scheduler
    }

    pub(super) fn add_chunks(&mut self, ranges: Vec<Range<u64>>) -> Vec<ChunkId> {
        let mut ids = Vec::with_capacity(ranges.len());
        for rows in ranges {
            let id = self.chunks.len() as ChunkId;
            self.chunks.push(Chunk {
                rows,
                state: ChunkState::Pending,
                attempts: 0,
                running: BTreeSet::new(),
                failed_hosts: BTreeSet::new(),
                had_backup: false,
            });
            self.index_chunk(id);
            ids.push(id);
        }
        ids
    }

    /// Feed one input observed at `now` (time since the run started).
    pub fn handle(&mut self, now: Duration, input: Input) {
        self.now = self.now.max(now);
        let now = self.now;
        let slot_up = matches!(input, Input::SlotUp { .. });
        match input {
            Input::SlotUp { slot, host } => self.slot_up(slot, host),
            Input::SlotDown { slot, reason } => {
                if self.slots.contains_key(&slot) {
                    self.update_slot(slot, |s| s.up = false);
                    if let Some(attempt) = self.slots[&slot].attempt {
                        self.fail_attempt(now, attempt, format!("slot {} down: {reason}", slot.0));
                    }
                }
            }
            Input::HostLost { host, reason } => self.host_lost(now, host, &reason),
            Input::Progress { attempt, rows_done } => self.progress(now, attempt, rows_done),
            Input::Finished { attempt } => self.finish(now, attempt),
            Input::Failed { attempt, error } => self.fail_attempt(now, attempt, error),
            Input::Pause(paused) => self.paused = paused,
            Input::RequestBackup { chunk } => {
                self.backup_requests.insert(chunk);
            }
        }
        self.step(now, slot_up);
    }

    /// The time returned by [`Scheduler::poll_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        self.last_check = self.now;
        self.step(self.now, false);
    }

    /// The next command for the driver, in the order they were decided.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When the driver must call [`Scheduler::handle_timeout`] at the latest:
    /// at once when a static plan waits to be made, every [`CHECK_INTERVAL`]
    /// while attempts run, never once finished or idle.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.finished {
            return None;
        }
        if !self.planned {
            return (self.index.slots_up > 0).then_some(self.now);
        }
        (self.index.busy_slots > 0).then_some(self.last_check + CHECK_INTERVAL)
    }

    /// The chunks not yet handed out, first to last in the order a slot
    /// that comes free takes them (each with its rows): what a driver may
    /// tell its workers to read ahead. Chunks waiting for a retry are not
    /// among them (a retry goes to a slot chosen for it).
    pub fn upcoming(&self) -> impl Iterator<Item = (ChunkId, Range<u64>)> + '_ {
        self.index
            .pending_fresh
            .iter()
            .map(|&c| (c, self.chunks[c as usize].rows.clone()))
    }

    /// `Done` or `Fail` has been emitted.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn slot_up(&mut self, slot: SlotId, host: HostId) {
        self.add_host(host);
        if self.hosts[&host].lost {
            return;
        }
        self.hosts
            .get_mut(&host)
            .expect("inserted")
            .slots
            .insert(slot);
        match self.slots.get(&slot) {
            Some(known) if known.attempt.is_some() => {}
            Some(_) => {
                self.unindex_slot(slot);
                let s = self.slots.get_mut(&slot).expect("known slot");
                (s.host, s.up, s.set_aside) = (host, true, false);
                self.index_slot(slot);
            }
            None => {
                self.slots.insert(
                    slot,
                    Slot {
                        host,
                        up: true,
                        attempt: None,
                        speed: None,
                        set_aside: false,
                    },
                );
                self.index_slot(slot);
            }
        }
    }

    /// A host not seen before joins the indexes.
    fn add_host(&mut self, host: HostId) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.hosts.entry(host) {
            e.insert(Host::default());
            self.index_host(host);
        }
    }

    fn host_lost(&mut self, now: Duration, host: HostId, reason: &str) {
        self.add_host(host);
        self.unindex_host(host);
        self.hosts.get_mut(&host).expect("inserted").lost = true;
        self.index_host(host);
        let slots: Vec<SlotId> = self.hosts[&host].slots.iter().copied().collect();
        for slot in slots {
            if !self.slots.contains_key(&slot) {
                continue;
            }
            self.update_slot(slot, |s| s.up = false);
            if let Some(attempt) = self.slots[&slot].attempt {
                self.fail_attempt(now, attempt, format!("host {host} lost: {reason}"));
            }
        }
    }

    fn progress(&mut self, now: Duration, id: AttemptId, rows_done: u64) {
        let Some(attempt) = self.attempts.get(id as usize) else {
            return;
        };
        if attempt.state != AttemptState::Running {
            // News from a slot set aside: it is alive after all.
            let slot = attempt.slot;
            if self.slots.get(&slot).is_some_and(|s| s.set_aside) {
                self.update_slot(slot, |s| s.set_aside = false);
            }
            return;
        }
        let chunk = attempt.chunk;
        self.unindex_chunk(chunk);
        let a = &mut self.attempts[id as usize];
        let len = a.rows.end - a.rows.start;
        let before = a.rows_done;
        a.rows_done = a.rows_done.max(rows_done.min(len));
        let cost = if a.rows_done == before {
            a.cost_done
        } else {
            self.costs.prefix(a.rows.start + a.rows_done) - a.start_prefix
        };
        a.cost_done = cost;
        let first_share = (a.reports == 0 && a.launched_rows > 0)
            .then(|| a.rows_done as f64 / a.launched_rows as f64);
        if a.reports == 0 {
            a.first_report = Some((now, cost));
        }
        let slot_sample = window_rate(&mut a.marks, now, cost);
        if slot_sample.is_some() {
            a.speed = slot_sample;
        }
        a.marks.push_back((now, cost));
        a.reports += 1;
        a.last_report = now;
        a.silent = false;
        let (slot, host, start, first, speed) = (a.slot, a.host, a.start, a.first_report, a.speed);
        let latency_due = !a.latency_sampled && speed.is_some();
        a.latency_sampled |= latency_due;
        let grown = a.rows_done - before;
        if let Some(h) = self.hosts.get_mut(&host) {
            h.rows_computed += grown;
        }
        if let Some(sample) = slot_sample
            && self.slots.contains_key(&slot)
        {
            self.update_slot(slot, |s| s.speed = Some(ewma(s.speed, sample)));
        }
        if latency_due && let (Some((t, c)), Some(speed)) = (first, speed) {
            self.sample_latency(start, t, c, speed);
        }
        if let Some(share) = first_share {
            self.report_share = Some(ewma(self.report_share, share));
        }
        self.index_chunk(chunk);
    }

    /// Rows of the batch the attempt works in: its rows per report, or
    /// before its first report the fleet's share of rows at a first report
    /// (`None` while unknown).
    pub(super) fn batch_rows(&self, a: &Attempt) -> Option<u64> {
        if a.reports > 0 {
            return Some((a.rows_done / u64::from(a.reports)).max(1));
        }
        let share = self.report_share?;
        Some(((a.launched_rows as f64 * share).ceil() as u64).max(1))
    }

    fn sample_latency(&mut self, start: Duration, first: Duration, cost: u64, speed: f64) {
        if speed > 0.0 {
            let sample = (secs(first.saturating_sub(start)) - cost as f64 / speed).max(0.0);
            self.latency = Some(ewma(self.latency, sample));
        }
    }

    fn finish(&mut self, now: Duration, id: AttemptId) {
        let Some(attempt) = self.attempts.get(id as usize) else {
            return;
        };
        if attempt.state != AttemptState::Running {
            return;
        }
        let chunk_id = attempt.chunk;
        self.unindex_chunk(chunk_id);
        let a = &mut self.attempts[id as usize];
        a.state = AttemptState::Done;
        a.end = Some(now);
        let grown = (a.rows.end - a.rows.start) - a.rows_done;
        a.rows_done += grown;
        let total = a.cost;
        a.cost_done = total;
        let (slot, host, start, first) = (a.slot, a.host, a.start, a.first_report);
        // Speed over its recent reports up to the finish; when they span too
        // little time (or there were none), over the whole attempt from its
        // launch, which counts the start-up too and is used only while the
        // slot has no better estimate.
        let windowed = if a.reports > 0 {
            window_rate(&mut a.marks, now, total)
        } else {
            None
        };
        let whole = {
            let dt = secs(now.saturating_sub(start));
            (dt > 0.0 && total > 0).then(|| total as f64 / dt)
        };
        let latency_due = !a.latency_sampled && windowed.is_some();
        let chunk = &mut self.chunks[chunk_id as usize];
        chunk.running.remove(&id);
        let commit = chunk.state == ChunkState::Running;
        let mut losers = Vec::new();
        if commit {
            chunk.state = ChunkState::Committed;
            losers = std::mem::take(&mut chunk.running).into_iter().collect();
        }
        let rows = chunk.rows.clone();
        for &loser in &losers {
            let l = &mut self.attempts[loser as usize];
            l.state = AttemptState::Cancelled;
            l.end = Some(now);
        }
        self.index_chunk(chunk_id);
        if let Some(h) = self.hosts.get_mut(&host) {
            h.rows_computed += grown;
        }
        if self.slots.contains_key(&slot) {
            self.update_slot(slot, |s| {
                if s.attempt == Some(id) {
                    s.attempt = None;
                }
                let sample = windowed.or(whole.filter(|_| s.speed.is_none()));
                if let Some(sample) = sample {
                    s.speed = Some(ewma(s.speed, sample));
                }
            });
        }
        if latency_due && let (Some((t, c)), Some(speed)) = (first, windowed) {
            self.sample_latency(start, t, c, speed);
        }
        if !commit {
            return;
        }
        self.commands.push_back(Command::Commit {
            chunk: chunk_id,
            attempt: id,
            rows: rows.clone(),
        });
        for loser in losers {
            self.commands.push_back(Command::Cancel { attempt: loser });
            let (loser_slot, silent) = {
                let l = &self.attempts[loser as usize];
                (l.slot, l.silent)
            };
            if self.slots.contains_key(&loser_slot) {
                self.update_slot(loser_slot, |s| {
                    if s.attempt == Some(loser) {
                        s.attempt = None;
                        s.set_aside |= silent;
                    }
                });
            }
        }
        self.backup_requests.remove(&chunk_id);
        self.rows_done += rows.end - rows.start;
        self.cost_done += self.costs.cost(rows.clone());
        self.chunks_done += 1;
        if let Some(h) = self.hosts.get_mut(&host) {
            h.rows_done += rows.end - rows.start;
            h.chunks_done += 1;
        }
        if self.rows_done >= self.costs.rows() {
            self.finished = true;
            self.commands.push_back(Command::Done);
        }
    }

    pub(super) fn fail_attempt(&mut self, now: Duration, id: AttemptId, error: String) {
        let Some(attempt) = self.attempts.get(id as usize) else {
            return;
        };
        if attempt.state != AttemptState::Running {
            return;
        }
        let (slot, host, chunk_id) = (attempt.slot, attempt.host, attempt.chunk);
        self.unindex_chunk(chunk_id);
        let a = &mut self.attempts[id as usize];
        a.state = AttemptState::Failed;
        a.end = Some(now);
        let chunk = &mut self.chunks[chunk_id as usize];
        chunk.running.remove(&id);
        chunk.failed_hosts.insert(host);
        let mut failed = None;
        if chunk.state == ChunkState::Running && chunk.running.is_empty() {
            if chunk.attempts >= self.policy.max_attempts {
                chunk.state = ChunkState::Failed;
                failed = Some(format!(
                    "chunk {chunk_id} (rows {}..{}) failed {} attempts (max_attempts = {}); last error: {error}",
                    chunk.rows.start, chunk.rows.end, chunk.attempts, self.policy.max_attempts
                ));
            } else {
                chunk.state = ChunkState::Pending;
            }
        }
        self.index_chunk(chunk_id);
        if self.slots.contains_key(&slot) {
            self.update_slot(slot, |s| {
                if s.attempt == Some(id) {
                    s.attempt = None;
                }
            });
        }
        if let Some(h) = self.hosts.get_mut(&host) {
            h.failures += 1;
        }
        if let Some(message) = failed {
            self.fail_run(Some(chunk_id), message);
        }
    }

    pub(super) fn fail_run(&mut self, chunk: Option<ChunkId>, error: String) {
        if self.finished {
            return;
        }
        self.finished = true;
        let running: Vec<ChunkId> = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.running.is_empty())
            .map(|(id, _)| id as ChunkId)
            .collect();
        for chunk_id in running {
            self.unindex_chunk(chunk_id);
            let attempts = std::mem::take(&mut self.chunks[chunk_id as usize].running);
            self.index_chunk(chunk_id);
            for id in attempts {
                self.commands.push_back(Command::Cancel { attempt: id });
                let a = &mut self.attempts[id as usize];
                a.state = AttemptState::Cancelled;
                a.end = Some(self.now);
                let slot = a.slot;
                if self.slots.contains_key(&slot) {
                    self.update_slot(slot, |s| {
                        if s.attempt == Some(id) {
                            s.attempt = None;
                        }
                    });
                }
            }
        }
        self.commands.push_back(Command::Fail { chunk, error });
    }

    fn step(&mut self, now: Duration, after_slot_up: bool) {
        if self.finished {
            return;
        }
        if !self.planned {
            if after_slot_up || self.index.slots_up == 0 {
                return;
            }
            let ranges =
                chunks_by_rows(self.costs.rows(), self.index.slots_up as u64, &self.resumed);
            self.add_chunks(ranges);
            self.planned = true;
        }
        self.estimate_the_unestimated();
        self.mark_silent(now);
        self.expire_future(now);
        if !self.paused {
            self.launch_pending(now);
            if self.policy.speculation {
                self.back_up_stalled(now);
            }
            self.launch_requested_backups(now);
            let waiting = !self.index.pending_fresh.is_empty()
                || !self.index.pending_retry.is_empty()
                || (self.policy.speculation && !self.index.stalled.is_empty());
            if !waiting {
                if self.policy.split_running {
                    self.split_stragglers(now);
                }
                if self.policy.speculation {
                    self.speculate(now);
                }
            }
        }
        let all_lost = !self.hosts.is_empty() && self.index.lost_hosts == self.hosts.len();
        if self.index.slots_up == 0 && all_lost {
            let left = self.costs.rows() - self.rows_done;
            self.fail_run(
                None,
                format!(
                    "no hosts left: all {} hosts were lost with {left} of {} rows uncommitted",
                    self.hosts.len(),
                    self.costs.rows()
                ),
            );
        }
    }

    /// Attempts launched before any speed was known get an estimate once one
    /// is (each at most once this way).
    fn estimate_the_unestimated(&mut self) {
        if self.index.unestimated.is_empty() || self.fleet_speed().is_none() {
            return;
        }
        let ids: Vec<AttemptId> = self.index.unestimated.iter().map(|&(_, id)| id).collect();
        for id in ids {
            let chunk = self.attempts[id as usize].chunk;
            self.unindex_chunk(chunk);
            self.index_chunk(chunk);
        }
    }

    /// Attempts whose predicted finish has passed leave `future`.
    fn expire_future(&mut self, now: Duration) {
        while let Some(&(eta, id)) = self.index.future.first() {
            if eta.0 > secs(now) {
                break;
            }
            self.index.future.pop_first();
            let speed = self.attempts[id as usize]
                .estimate
                .expect("an attempt in future has an estimate")
                .speed;
            self.index.future_work -= eta.0 * speed;
            self.index.future_speed -= speed;
        }
        if self.index.future.is_empty() {
            // Cancel the rounding left by the additions and subtractions.
            (self.index.future_work, self.index.future_speed) = (0.0, 0.0);
        }
    }

    /// Attempts whose time to fall silent has come are silent.
    fn mark_silent(&mut self, now: Duration) {
        let unmeasured = self
            .index
            .unestimated
            .iter()
            .take_while(|&&(news, _)| news + SILENCE_UNMEASURED <= now)
            .map(|&(_, id)| id);
        let due = self.index.silence.iter().take_while(|&&(at, _)| at <= now);
        let silent: Vec<AttemptId> = unmeasured.chain(due.map(|&(_, id)| id)).collect();
        for id in silent {
            let chunk = self.attempts[id as usize].chunk;
            self.unindex_chunk(chunk);
            self.attempts[id as usize].silent = true;
            self.index_chunk(chunk);
        }
    }

    /// The fleet's median measured speed (slots up).
    pub(super) fn fleet_speed(&self) -> Option<f64> {
        median(&self.index.speed_median)
    }

    pub(super) fn slot_speed(&self, slot: SlotId) -> Option<f64> {
        self.slots
            .get(&slot)
            .and_then(|s| s.speed)
            .or_else(|| self.fleet_speed())
    }

    pub(super) fn launch(&mut self, now: Duration, chunk_id: ChunkId, slot: SlotId, backup: bool) {
        let Some(host) = self.slots.get(&slot).map(|s| s.host) else {
            return;
        };
        if chunk_id as usize >= self.chunks.len() {
            return;
        }
        let id = self.attempts.len() as AttemptId;
        self.unindex_chunk(chunk_id);
        let chunk = &mut self.chunks[chunk_id as usize];
        chunk.attempts += 1;
        chunk.state = ChunkState::Running;
        chunk.running.insert(id);
        chunk.had_backup |= backup;
        let rows = chunk.rows.clone();
        let start_prefix = self.costs.prefix(rows.start);
        let cost = self.costs.prefix(rows.end) - start_prefix;
        self.attempts.push(Attempt {
            chunk: chunk_id,
            slot,
            host,
            start: now,
            end: None,
            rows: rows.clone(),
            launched_rows: rows.end - rows.start,
            rows_done: 0,
            start_prefix,
            cost,
            cost_done: 0,
            state: AttemptState::Running,
            backup,
            split: false,
            reports: 0,
            first_report: None,
            last_report: now,
            marks: VecDeque::new(),
            latency_sampled: false,
            speed: None,
            silent: false,
            estimate: None,
            indexed: false,
            changed: false,
        });
        self.update_slot(slot, |s| s.attempt = Some(id));
        self.index_chunk(chunk_id);
        if let Some(h) = self.hosts.get_mut(&host) {
            h.first_launch.get_or_insert(now);
        }
        if backup {
            self.backups += 1;
            self.backup_cost += cost;
        }
        self.commands.push_back(Command::Launch {
            attempt: id,
            chunk: chunk_id,
            slot,
            rows,
            backup,
        });
    }

    /// Cuts the chunk (and every attempt running it) at `row`, telling the
    /// attempts to stop there.
    pub(super) fn cut_chunk(&mut self, chunk_id: ChunkId, row: u64) {
        self.unindex_chunk(chunk_id);
        let chunk = &mut self.chunks[chunk_id as usize];
        chunk.rows.end = row;
        let running: Vec<AttemptId> = chunk.running.iter().copied().collect();
        let end_prefix = self.costs.prefix(row);
        for id in running {
            let a = &mut self.attempts[id as usize];
            a.rows.end = a.rows.end.min(row);
            a.split = true;
            a.cost = end_prefix - a.start_prefix;
            let len = a.rows.end - a.rows.start;
            if a.rows_done > len {
                let extra = a.rows_done - len;
                a.rows_done = len;
                a.cost_done = a.cost;
                let host = a.host;
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.rows_computed -= extra;
                }
            }
            self.commands
                .push_back(Command::StopAt { attempt: id, row });
        }
        self.index_chunk(chunk_id);
    }
}
