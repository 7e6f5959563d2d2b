//! The scheduler's state machine: chunks, attempts, slots and hosts, and the
//! straggler policy that decides what runs where.
//!
//! It exists so that every scheduling decision can be replayed: it takes time
//! as an argument, keeps ordered maps only, and never touches a clock, a
//! socket or a thread. It must not do IO; the driver (`run`) and the simulated
//! cluster (`sim`) carry its commands out.
//!
//! Planning. With `policy.pull` the chunks are planned in [`Scheduler::new`]:
//! `cost_aware` gives [`chunks_by_cost`], otherwise equal-row chunks with the
//! same chunk count. Without `pull` (static partition) the plan needs the slot
//! count, so it is made at the first [`Scheduler::handle_timeout`] or
//! non-`SlotUp` input after a slot came up, with one equal-row chunk per slot
//! known then; [`Scheduler::poll_timeout`] asks for that call at once.
//!
//! Estimates. An attempt's speed (cost units per second) is the rate over its
//! recent reports: from the newest report at least [`RATE_WINDOW`] old (or its
//! first report) to the latest one, measured only over at least
//! [`MIN_RATE_SPAN`]. Reports are timed when they reach the scheduler, so a
//! coordinator that was busy hands over several at once; a rate over a long
//! window is barely moved by such a burst, while one between two reports of a
//! burst would be near infinite. A slot's speed is an average (EWMA, weight
//! [`EWMA_WEIGHT`]) of its attempts' rates at each report and at the finish.
//! The launch latency (start-up time before the first row) is the same kind of
//! average, derived from each attempt's first report and its first rate. An
//! attempt's time left is its remaining cost over its speed, less the time
//! since its last report; once that runs out with no news, the time it is
//! overdue (a hung worker looks slower the longer it is silent).
//!
//! Thresholds: see [`SPLIT_GAIN`], [`MIN_SPLIT_ROWS`], [`SPECULATION_SLOWNESS`],
//! [`SPECULATION_GAIN`], [`SPECULATION_PEERS`], [`BACKUP_SLOT_SHARE`] and
//! [`CHECK_INTERVAL`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::time::Duration;

use super::{
    AttemptId, AttemptState, AttemptView, ChunkId, Command, HostId, HostView, Input, Policy,
    SlotId, Snapshot, Straggler,
};
use crate::plan::{CostIndex, chunks_by_cost, chunks_by_rows, normalize};

/// Virtual time between straggler checks while attempts run.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Weight of a new sample in the speed and latency averages.
pub const EWMA_WEIGHT: f64 = 0.3;
/// An attempt's rate is measured from its newest report at least this old.
pub const RATE_WINDOW: Duration = Duration::from_millis(200);
/// No rate is measured over less than this (reports closer together are
/// merged with the next ones).
pub const MIN_RATE_SPAN: Duration = Duration::from_millis(5);
/// A split is made only if the chunk's estimated finish after it is below
/// this fraction of the running attempt's time left.
pub const SPLIT_GAIN: f64 = 0.8;
/// Fewest rows the rest of a split chunk must hold.
pub const MIN_SPLIT_ROWS: u64 = 1;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Pending,
    Running,
    Committed,
    Failed,
}

#[derive(Clone, Debug)]
struct Chunk {
    /// Current rows: a split shortens the end, never moves the start.
    rows: Range<u64>,
    state: ChunkState,
    /// Attempts launched, backups included.
    attempts: u32,
    running: BTreeSet<AttemptId>,
    failed_hosts: BTreeSet<HostId>,
    last_error: Option<String>,
    had_backup: bool,
}

#[derive(Clone, Debug)]
struct Attempt {
    chunk: ChunkId,
    slot: SlotId,
    host: HostId,
    start: Duration,
    end: Option<Duration>,
    rows: Range<u64>,
    rows_done: u64,
    state: AttemptState,
    backup: bool,
    split: bool,
    reports: u32,
    first_report: Option<(Duration, u64)>,
    last_report: Duration,
    /// (arrival, cost done) of its recent reports, oldest first: the window
    /// its rate is measured over.
    marks: VecDeque<(Duration, u64)>,
    latency_sampled: bool,
    /// Cost units per second over its recent reports.
    speed: Option<f64>,
}

#[derive(Clone, Debug)]
struct Slot {
    host: HostId,
    up: bool,
    attempt: Option<AttemptId>,
    speed: Option<f64>,
}

#[derive(Clone, Debug, Default)]
struct Host {
    slots: BTreeSet<SlotId>,
    lost: bool,
    failures: u64,
    rows_done: u64,
    chunks_done: u64,
    first_launch: Option<Duration>,
}

/// The scheduler state machine; see the module docs for its policy.
#[derive(Clone, Debug)]
pub struct Scheduler {
    policy: Policy,
    costs: CostIndex,
    resumed: Vec<Range<u64>>,
    planned: bool,
    chunks: BTreeMap<ChunkId, Chunk>,
    pending: BTreeSet<ChunkId>,
    attempts: BTreeMap<AttemptId, Attempt>,
    slots: BTreeMap<SlotId, Slot>,
    hosts: BTreeMap<HostId, Host>,
    commands: VecDeque<Command>,
    backup_requests: BTreeSet<ChunkId>,
    next_chunk: ChunkId,
    next_attempt: AttemptId,
    paused: bool,
    finished: bool,
    rows_done: u64,
    cost_done: u64,
    backups: u64,
    splits: u64,
    /// Launch latency in seconds.
    latency: Option<f64>,
    now: Duration,
    last_check: Duration,
}

fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(old) => old + EWMA_WEIGHT * (sample - old),
        None => sample,
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
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
    /// `costs`: the cost (multiply-adds) of every input row; `done`: row
    /// ranges already committed (resume). A run with nothing left to do emits
    /// `Done` at once.
    pub fn new(policy: Policy, costs: Vec<u64>, done: &[Range<u64>]) -> Scheduler {
        let index = CostIndex::new(&costs);
        let resumed = normalize(done, index.rows());
        let rows_done = resumed.iter().map(|r| r.end - r.start).sum();
        let cost_done = resumed.iter().map(|r| index.cost(r.clone())).sum();
        let mut scheduler = Scheduler {
            policy,
            costs: index,
            resumed,
            planned: false,
            chunks: BTreeMap::new(),
            pending: BTreeSet::new(),
            attempts: BTreeMap::new(),
            slots: BTreeMap::new(),
            hosts: BTreeMap::new(),
            commands: VecDeque::new(),
            backup_requests: BTreeSet::new(),
            next_chunk: 0,
            next_attempt: 0,
            paused: false,
            finished: false,
            rows_done,
            cost_done,
            backups: 0,
            splits: 0,
            latency: None,
            now: Duration::ZERO,
            last_check: Duration::ZERO,
        };
        if scheduler.rows_done == scheduler.costs.rows() {
            scheduler.planned = true;
            scheduler.finished = true;
            scheduler.commands.push_back(Command::Done);
        } else if scheduler.policy.pull {
            let by_cost = chunks_by_cost(&costs, scheduler.policy.target_chunk_cost, done);
            let ranges = if scheduler.policy.cost_aware {
                by_cost
            } else {
                chunks_by_rows(scheduler.costs.rows(), by_cost.len() as u64, done)
            };
            scheduler.add_chunks(ranges);
            scheduler.planned = true;
        }
        scheduler
    }

    fn add_chunks(&mut self, ranges: Vec<Range<u64>>) -> Vec<ChunkId> {
        let mut ids = Vec::with_capacity(ranges.len());
        for rows in ranges {
            let id = self.next_chunk;
            self.next_chunk += 1;
            self.chunks.insert(
                id,
                Chunk {
                    rows,
                    state: ChunkState::Pending,
                    attempts: 0,
                    running: BTreeSet::new(),
                    failed_hosts: BTreeSet::new(),
                    last_error: None,
                    had_backup: false,
                },
            );
            self.pending.insert(id);
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
            Input::SlotUp { slot, host } => {
                let entry = self.hosts.entry(host).or_default();
                if !entry.lost {
                    entry.slots.insert(slot);
                    let known = self.slots.get(&slot);
                    let speed = known.and_then(|s| s.speed);
                    if known.and_then(|s| s.attempt).is_none() {
                        self.slots.insert(
                            slot,
                            Slot {
                                host,
                                up: true,
                                attempt: None,
                                speed,
                            },
                        );
                    }
                }
            }
            Input::SlotDown { slot, reason } => {
                if let Some(s) = self.slots.get_mut(&slot) {
                    s.up = false;
                    if let Some(attempt) = s.attempt {
                        self.fail_attempt(now, attempt, format!("slot {} down: {reason}", slot.0));
                    }
                }
            }
            Input::HostLost { host, reason } => {
                let entry = self.hosts.entry(host).or_default();
                entry.lost = true;
                let slots: Vec<SlotId> = entry.slots.iter().copied().collect();
                for slot in slots {
                    if let Some(s) = self.slots.get_mut(&slot) {
                        s.up = false;
                        if let Some(attempt) = s.attempt {
                            self.fail_attempt(now, attempt, format!("host {host} lost: {reason}"));
                        }
                    }
                }
            }
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
            return self.slots.values().any(|s| s.up).then_some(self.now);
        }
        let running = self.slots.values().any(|s| s.attempt.is_some());
        running.then_some(self.last_check + CHECK_INTERVAL)
    }

    /// `Done` or `Fail` has been emitted.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn progress(&mut self, now: Duration, id: AttemptId, rows_done: u64) {
        let Some(attempt) = self.attempts.get_mut(&id) else {
            return;
        };
        if attempt.state != AttemptState::Running {
            return;
        }
        let len = attempt.rows.end - attempt.rows.start;
        attempt.rows_done = attempt.rows_done.max(rows_done.min(len));
        let cost = self
            .costs
            .cost(attempt.rows.start..attempt.rows.start + attempt.rows_done);
        if attempt.reports == 0 {
            attempt.first_report = Some((now, cost));
        }
        let slot_sample = window_rate(&mut attempt.marks, now, cost);
        if slot_sample.is_some() {
            attempt.speed = slot_sample;
        }
        attempt.marks.push_back((now, cost));
        attempt.reports += 1;
        attempt.last_report = now;
        let (slot, start, first, speed) = (
            attempt.slot,
            attempt.start,
            attempt.first_report,
            attempt.speed,
        );
        let latency_due = !attempt.latency_sampled && speed.is_some();
        attempt.latency_sampled |= latency_due;
        if let Some(sample) = slot_sample
            && let Some(s) = self.slots.get_mut(&slot)
        {
            s.speed = Some(ewma(s.speed, sample));
        }
        if latency_due && let (Some((t, c)), Some(speed)) = (first, speed) {
            self.sample_latency(start, t, c, speed);
        }
    }

    fn sample_latency(&mut self, start: Duration, first: Duration, cost: u64, speed: f64) {
        if speed > 0.0 {
            let sample = (secs(first.saturating_sub(start)) - cost as f64 / speed).max(0.0);
            self.latency = Some(ewma(self.latency, sample));
        }
    }

    fn finish(&mut self, now: Duration, id: AttemptId) {
        let Some(attempt) = self.attempts.get_mut(&id) else {
            return;
        };
        if attempt.state != AttemptState::Running {
            return;
        }
        attempt.state = AttemptState::Done;
        attempt.end = Some(now);
        attempt.rows_done = attempt.rows.end - attempt.rows.start;
        let total = self.costs.cost(attempt.rows.clone());
        let (slot, host, chunk_id, start) =
            (attempt.slot, attempt.host, attempt.chunk, attempt.start);
        // Speed over its recent reports up to the finish; when they span too
        // little time (or there were none), over the whole attempt from its
        // launch, which counts the start-up too and is used only while the
        // slot has no better estimate.
        let windowed = if attempt.reports > 0 {
            window_rate(&mut attempt.marks, now, total)
        } else {
            None
        };
        let whole = {
            let dt = secs(now.saturating_sub(start));
            (dt > 0.0 && total > 0).then(|| total as f64 / dt)
        };
        let first = attempt.first_report;
        let latency_due = !attempt.latency_sampled && windowed.is_some();
        if let Some(s) = self.slots.get_mut(&slot) {
            if s.attempt == Some(id) {
                s.attempt = None;
            }
            let sample = windowed.or(whole.filter(|_| s.speed.is_none()));
            if let Some(sample) = sample {
                s.speed = Some(ewma(s.speed, sample));
            }
        }
        if latency_due && let (Some((t, c)), Some(speed)) = (first, windowed) {
            self.sample_latency(start, t, c, speed);
        }
        let Some(chunk) = self.chunks.get_mut(&chunk_id) else {
            return;
        };
        chunk.running.remove(&id);
        if chunk.state != ChunkState::Running {
            return;
        }
        chunk.state = ChunkState::Committed;
        let rows = chunk.rows.clone();
        let losers: Vec<AttemptId> = std::mem::take(&mut chunk.running).into_iter().collect();
        self.commands.push_back(Command::Commit {
            chunk: chunk_id,
            attempt: id,
            rows: rows.clone(),
        });
        for loser in losers {
            self.commands.push_back(Command::Cancel { attempt: loser });
            if let Some(a) = self.attempts.get_mut(&loser) {
                a.state = AttemptState::Cancelled;
                a.end = Some(now);
                if let Some(s) = self.slots.get_mut(&a.slot)
                    && s.attempt == Some(loser)
                {
                    s.attempt = None;
                }
            }
        }
        self.backup_requests.remove(&chunk_id);
        self.rows_done += rows.end - rows.start;
        self.cost_done += self.costs.cost(rows.clone());
        if let Some(h) = self.hosts.get_mut(&host) {
            h.rows_done += rows.end - rows.start;
            h.chunks_done += 1;
        }
        if self.rows_done >= self.costs.rows() {
            self.finished = true;
            self.commands.push_back(Command::Done);
        }
    }

    fn fail_attempt(&mut self, now: Duration, id: AttemptId, error: String) {
        let Some(attempt) = self.attempts.get_mut(&id) else {
            return;
        };
        if attempt.state != AttemptState::Running {
            return;
        }
        attempt.state = AttemptState::Failed;
        attempt.end = Some(now);
        let (slot, host, chunk_id) = (attempt.slot, attempt.host, attempt.chunk);
        if let Some(s) = self.slots.get_mut(&slot)
            && s.attempt == Some(id)
        {
            s.attempt = None;
        }
        if let Some(h) = self.hosts.get_mut(&host) {
            h.failures += 1;
        }
        let Some(chunk) = self.chunks.get_mut(&chunk_id) else {
            return;
        };
        chunk.running.remove(&id);
        chunk.failed_hosts.insert(host);
        chunk.last_error = Some(error.clone());
        if chunk.state != ChunkState::Running || !chunk.running.is_empty() {
            return;
        }
        if chunk.attempts >= self.policy.max_attempts {
            chunk.state = ChunkState::Failed;
            let message = format!(
                "chunk {chunk_id} (rows {}..{}) failed {} attempts (max_attempts = {}); last error: {error}",
                chunk.rows.start, chunk.rows.end, chunk.attempts, self.policy.max_attempts
            );
            self.fail_run(Some(chunk_id), message);
        } else {
            chunk.state = ChunkState::Pending;
            self.pending.insert(chunk_id);
        }
    }

    fn fail_run(&mut self, chunk: Option<ChunkId>, error: String) {
        if self.finished {
            return;
        }
        self.finished = true;
        let running: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.state == AttemptState::Running)
            .map(|(&id, _)| id)
            .collect();
        for id in running {
            self.commands.push_back(Command::Cancel { attempt: id });
            if let Some(a) = self.attempts.get_mut(&id) {
                a.state = AttemptState::Cancelled;
                a.end = Some(self.now);
            }
        }
        self.commands.push_back(Command::Fail { chunk, error });
    }

    fn step(&mut self, now: Duration, after_slot_up: bool) {
        if self.finished {
            return;
        }
        if !self.planned {
            let slots_up = self.slots.values().filter(|s| s.up).count() as u64;
            if after_slot_up || slots_up == 0 {
                return;
            }
            let ranges = chunks_by_rows(self.costs.rows(), slots_up, &self.resumed);
            self.add_chunks(ranges);
            self.planned = true;
        }
        if !self.paused {
            self.launch_pending(now);
            self.launch_requested_backups(now);
            if self.pending.is_empty() {
                if self.policy.split_running {
                    self.split_stragglers(now);
                }
                if self.policy.speculation {
                    self.speculate(now);
                }
            }
        }
        let any_up = self.slots.values().any(|s| s.up);
        let all_lost = !self.hosts.is_empty() && self.hosts.values().all(|h| h.lost);
        if !any_up && all_lost {
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

    /// Idle slots, fastest first (unknown speeds count as the fleet median).
    fn idle_slots(&self) -> Vec<SlotId> {
        let median = self.fleet_speed();
        let mut idle: Vec<(f64, SlotId)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.up && s.attempt.is_none())
            .filter(|(_, s)| !self.hosts.get(&s.host).is_some_and(|h| h.lost))
            .map(|(&id, s)| (s.speed.or(median).unwrap_or(0.0), id))
            .collect();
        idle.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        idle.into_iter().map(|(_, id)| id).collect()
    }

    fn fleet_speed(&self) -> Option<f64> {
        let mut speeds: Vec<f64> = self
            .slots
            .values()
            .filter(|s| s.up)
            .filter_map(|s| s.speed)
            .collect();
        median(&mut speeds)
    }

    fn slot_speed(&self, slot: SlotId) -> Option<f64> {
        self.slots
            .get(&slot)
            .and_then(|s| s.speed)
            .or_else(|| self.fleet_speed())
    }

    fn launch(&mut self, now: Duration, chunk_id: ChunkId, slot: SlotId, backup: bool) {
        let Some(host) = self.slots.get(&slot).map(|s| s.host) else {
            return;
        };
        let Some(chunk) = self.chunks.get_mut(&chunk_id) else {
            return;
        };
        let id = self.next_attempt;
        self.next_attempt += 1;
        chunk.attempts += 1;
        chunk.state = ChunkState::Running;
        chunk.running.insert(id);
        chunk.had_backup |= backup;
        let rows = chunk.rows.clone();
        self.pending.remove(&chunk_id);
        if let Some(s) = self.slots.get_mut(&slot) {
            s.attempt = Some(id);
        }
        if let Some(h) = self.hosts.get_mut(&host) {
            h.first_launch.get_or_insert(now);
        }
        if backup {
            self.backups += 1;
        }
        self.attempts.insert(
            id,
            Attempt {
                chunk: chunk_id,
                slot,
                host,
                start: now,
                end: None,
                rows: rows.clone(),
                rows_done: 0,
                state: AttemptState::Running,
                backup,
                split: false,
                reports: 0,
                first_report: None,
                last_report: now,
                marks: VecDeque::new(),
                latency_sampled: false,
                speed: None,
            },
        );
        self.commands.push_back(Command::Launch {
            attempt: id,
            chunk: chunk_id,
            slot,
            rows,
            backup,
        });
    }

    /// Hosts that hold at least one slot that is up.
    fn live_hosts(&self) -> BTreeSet<HostId> {
        self.slots
            .values()
            .filter(|s| s.up)
            .map(|s| s.host)
            .filter(|h| !self.hosts.get(h).is_some_and(|h| h.lost))
            .collect()
    }

    /// Every idle slot takes the next pending chunk. A retried chunk waits for
    /// a slot on a host it has not failed on, unless it failed on every live
    /// host.
    fn launch_pending(&mut self, now: Duration) {
        let live = self.live_hosts();
        let pending: Vec<ChunkId> = self.pending.iter().copied().collect();
        for chunk_id in pending {
            let idle = self.idle_slots();
            if idle.is_empty() {
                break;
            }
            let Some(chunk) = self.chunks.get(&chunk_id) else {
                continue;
            };
            let untried = idle
                .iter()
                .copied()
                .find(|s| !chunk.failed_hosts.contains(&self.slots[s].host));
            let tried_everywhere = live.iter().all(|h| chunk.failed_hosts.contains(h));
            let slot = match untried {
                Some(slot) => slot,
                None if tried_everywhere => idle[0],
                None => continue,
            };
            self.launch(now, chunk_id, slot, false);
        }
    }

    fn launch_requested_backups(&mut self, now: Duration) {
        let requests: Vec<ChunkId> = self.backup_requests.iter().copied().collect();
        for chunk_id in requests {
            let running = self
                .chunks
                .get(&chunk_id)
                .is_some_and(|c| c.state == ChunkState::Running);
            if !running {
                self.backup_requests.remove(&chunk_id);
                continue;
            }
            let busy_hosts: BTreeSet<HostId> = self.chunks[&chunk_id]
                .running
                .iter()
                .filter_map(|a| self.attempts.get(a).map(|a| a.host))
                .collect();
            let idle = self.idle_slots();
            let slot = idle
                .iter()
                .copied()
                .find(|s| !busy_hosts.contains(&self.slots[s].host))
                .or_else(|| idle.first().copied());
            if let Some(slot) = slot {
                self.backup_requests.remove(&chunk_id);
                self.launch(now, chunk_id, slot, true);
            }
        }
    }

    /// Estimated seconds left for a running attempt, and the speed used.
    fn time_left(&self, now: Duration, attempt: &Attempt) -> Option<(f64, f64)> {
        let speed = attempt
            .speed
            .or_else(|| self.slot_speed(attempt.slot))
            .filter(|s| *s > 0.0)?;
        let remaining = self
            .costs
            .cost(attempt.rows.start + attempt.rows_done..attempt.rows.end);
        let elapsed = secs(now.saturating_sub(attempt.start));
        // Expected seconds of work from the last news (the launch or the last
        // report) and the seconds since. A silent attempt past its expected
        // end counts as having as long left as it is overdue, so a hung
        // worker looks slower the longer it stays silent.
        let (expected, since) = if attempt.reports == 0 {
            (
                self.latency.unwrap_or(0.0) + remaining as f64 / speed,
                elapsed,
            )
        } else {
            (
                remaining as f64 / speed,
                secs(now.saturating_sub(attempt.last_report)),
            )
        };
        let left = (expected - since).abs();
        Some((left, speed))
    }

    /// Estimated row the attempt has reached, given the time since its last
    /// report, plus one row for the one under way.
    fn row_reached(&self, now: Duration, attempt: &Attempt, speed: f64) -> u64 {
        let since = if attempt.reports == 0 {
            (secs(now.saturating_sub(attempt.start)) - self.latency.unwrap_or(0.0)).max(0.0)
        } else {
            secs(now.saturating_sub(attempt.last_report))
        };
        let at = attempt.rows.start + attempt.rows_done;
        let in_flight = (since * speed) as u64;
        (self.costs.row_reaching(at..attempt.rows.end, in_flight) + 1).min(attempt.rows.end)
    }

    /// Running chunks with one attempt, and that attempt's estimate.
    fn split_candidates(&self, now: Duration) -> Vec<(f64, ChunkId, AttemptId, f64)> {
        let mut out = Vec::new();
        for (&chunk_id, chunk) in &self.chunks {
            if chunk.state != ChunkState::Running || chunk.running.len() != 1 {
                continue;
            }
            let Some(&id) = chunk.running.iter().next() else {
                continue;
            };
            let attempt = &self.attempts[&id];
            if let Some((left, speed)) = self.time_left(now, attempt) {
                out.push((left, chunk_id, id, speed));
            }
        }
        out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        out
    }

    /// Split the running chunk with the most time left among idle slots, while
    /// that is worth it. The running attempt keeps the share of the rest that
    /// lets it finish with the new attempts (never less than the rows it has
    /// reached plus one in flight); the rest becomes new chunks of equal cost,
    /// launched at once, the costliest on the fastest idle slot.
    fn split_stragglers(&mut self, now: Duration) {
        loop {
            let idle = self.idle_slots();
            if idle.is_empty() {
                return;
            }
            let candidates = self.split_candidates(now);
            let Some(&(left, chunk_id, attempt_id, speed)) = candidates.first() else {
                return;
            };
            let share = idle.len().div_ceil(candidates.len());
            let Some((split_row, pieces, slots)) =
                self.best_split(now, attempt_id, left, speed, &idle[..share])
            else {
                return;
            };
            let chunk = self
                .chunks
                .get_mut(&chunk_id)
                .expect("candidate chunk exists");
            chunk.rows.end = split_row;
            if let Some(a) = self.attempts.get_mut(&attempt_id) {
                a.rows.end = split_row;
                a.split = true;
            }
            self.splits += 1;
            self.commands.push_back(Command::StopAt {
                attempt: attempt_id,
                row: split_row,
            });
            let ids = self.add_chunks(pieces);
            for (id, slot) in ids.into_iter().zip(slots) {
                self.launch(now, id, slot, false);
            }
        }
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
        let attempt = &self.attempts[&attempt_id];
        let end = attempt.rows.end;
        let reached = self.row_reached(now, attempt, speed);
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
        let mut best: Option<(f64, u64, Vec<Range<u64>>)> = None;
        for k in 1..=idle.len() {
            let others: f64 = speeds[..k].iter().sum();
            let finish = (remaining_work + latency * others) / (speed + others);
            let keep = (speed * finish).max(0.0);
            let goal = (position + keep).max(0.0) as u64;
            let row = self.costs.row_reaching(0..end, goal).max(reached).min(end);
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
        if estimate >= SPLIT_GAIN * left {
            return None;
        }
        let slots = idle[..pieces.len()].to_vec();
        Some((row, pieces, slots))
    }

    /// Hosts in the slowest quartile by measured speed (mean of their slots).
    fn slow_hosts(&self) -> BTreeSet<HostId> {
        let mut speeds: Vec<(f64, HostId)> = Vec::new();
        for (&host, h) in &self.hosts {
            if h.lost {
                continue;
            }
            let known: Vec<f64> = h
                .slots
                .iter()
                .filter_map(|s| self.slots.get(s).and_then(|s| s.speed))
                .collect();
            if !known.is_empty() {
                speeds.push((known.iter().sum::<f64>() / known.len() as f64, host));
            }
        }
        speeds.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        speeds
            .iter()
            .take(speeds.len() / 4)
            .map(|&(_, h)| h)
            .collect()
    }

    /// Seconds left of every running attempt that has an estimate.
    fn running_time_left(&self, now: Duration) -> BTreeMap<AttemptId, f64> {
        self.attempts
            .iter()
            .filter(|(_, a)| a.state == AttemptState::Running)
            .filter_map(|(&id, a)| self.time_left(now, a).map(|(left, _)| (id, left)))
            .collect()
    }

    /// LATE: one backup for the running attempt with the longest time left,
    /// when it is a straggler ([`SPECULATION_SLOWNESS`], waived below
    /// [`SPECULATION_PEERS`] running attempts), has no backup yet, and a fast
    /// idle slot (not in the slowest quartile of hosts) would finish it within
    /// [`SPECULATION_GAIN`] of its time left. At most [`BACKUP_SLOT_SHARE`] of
    /// the slots (at least one) run backups.
    fn speculate(&mut self, now: Duration) {
        loop {
            let slots_up = self.slots.values().filter(|s| s.up).count();
            let cap = ((slots_up as f64 * BACKUP_SLOT_SHARE) as usize).max(1);
            let running_backups = self
                .attempts
                .values()
                .filter(|a| a.state == AttemptState::Running && a.backup)
                .count();
            if running_backups >= cap {
                return;
            }
            let slow = self.slow_hosts();
            let idle: Vec<SlotId> = self
                .idle_slots()
                .into_iter()
                .filter(|s| !slow.contains(&self.slots[s].host))
                .collect();
            let Some(&slot) = idle.first() else {
                return;
            };
            let lefts = self.running_time_left(now);
            let mut values: Vec<f64> = lefts.values().copied().collect();
            let Some(median) = median(&mut values) else {
                return;
            };
            let few = lefts.len() < SPECULATION_PEERS;
            let mut best: Option<(f64, AttemptId)> = None;
            for (&id, &left) in &lefts {
                let chunk = &self.chunks[&self.attempts[&id].chunk];
                if chunk.had_backup || chunk.running.len() != 1 {
                    continue;
                }
                if best.is_none_or(|b| left > b.0) {
                    best = Some((left, id));
                }
            }
            let Some((left, id)) = best else {
                return;
            };
            let straggling = few || left >= SPECULATION_SLOWNESS * median.max(secs(CHECK_INTERVAL));
            let chunk_id = self.attempts[&id].chunk;
            let Some(backup_speed) = self.slot_speed(slot).filter(|s| *s > 0.0) else {
                return;
            };
            let backup_time = self.latency.unwrap_or(0.0)
                + self.costs.cost(self.chunks[&chunk_id].rows.clone()) as f64 / backup_speed;
            if !straggling || backup_time >= SPECULATION_GAIN * left {
                return;
            }
            self.launch(now, chunk_id, slot, true);
        }
    }

    /// Everything the UI and the report need at `now`.
    pub fn snapshot(&self, now: Duration) -> Snapshot {
        let lefts = self.running_time_left(now);
        let mut values: Vec<f64> = lefts.values().copied().collect();
        let median_left = median(&mut values);
        let slowness = |id: &AttemptId| match (lefts.get(id), median_left) {
            (Some(&left), Some(m)) => left / m.max(secs(CHECK_INTERVAL)),
            _ => 1.0,
        };
        let attempts: Vec<AttemptView> = self
            .attempts
            .iter()
            .map(|(&id, a)| AttemptView {
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
                slowness: if a.state == AttemptState::Running {
                    slowness(&id)
                } else {
                    1.0
                },
            })
            .collect();
        let stragglers: Vec<Straggler> = lefts
            .iter()
            .filter(|(id, _)| slowness(id) >= SPECULATION_SLOWNESS)
            .map(|(&id, &left)| Straggler {
                chunk: self.attempts[&id].chunk,
                attempt: id,
                eta: Duration::from_secs_f64(left),
            })
            .collect();
        let hosts = self
            .hosts
            .iter()
            .map(|(&host, h)| {
                let busy = h
                    .slots
                    .iter()
                    .filter(|s| self.slots.get(s).is_some_and(|s| s.attempt.is_some()))
                    .count() as u32;
                let rows: u64 = self
                    .attempts
                    .values()
                    .filter(|a| a.host == host)
                    .map(|a| a.rows_done)
                    .sum();
                let elapsed = h
                    .first_launch
                    .map(|t| secs(now.saturating_sub(t)))
                    .unwrap_or(0.0);
                HostView {
                    host,
                    slots: h.slots.len() as u32,
                    busy,
                    rows_done: h.rows_done,
                    chunks_done: h.chunks_done,
                    failures: h.failures,
                    rows_per_s: if elapsed > 0.0 {
                        rows as f64 / elapsed
                    } else {
                        0.0
                    },
                    lost: h.lost,
                }
            })
            .collect();
        let throughput: f64 = self
            .slots
            .values()
            .filter(|s| s.up)
            .filter_map(|s| s.speed)
            .sum();
        let eta = if self.finished {
            None
        } else if throughput > 0.0 {
            let bulk = (self.costs.total() - self.cost_done) as f64 / throughput;
            let tail = lefts.values().copied().fold(0.0, f64::max);
            Some(Duration::from_secs_f64(bulk.max(tail)))
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
            chunks_done: self
                .chunks
                .values()
                .filter(|c| c.state == ChunkState::Committed)
                .count() as u64,
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
