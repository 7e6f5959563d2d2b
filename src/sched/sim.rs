//! A simulated cluster for the scheduler, in the manner of quinn's test
//! `Pair`: hosts with speeds and slots, rows with costs, and a virtual clock
//! that jumps to the next event. It drives the real [`Scheduler`] with the
//! inputs a driver would give it, so policies can be compared (`herd bench
//! stragglers`) and properties checked (every row committed exactly once)
//! without a network or a clock. Everything here is deterministic: the costs
//! come from a small seeded generator, maps are ordered, and a run that does
//! not end within its step bound panics instead of hanging.
//!
//! The worker model: an attempt starts computing [`Timing::start_latency`]
//! after the driver sent it, computes its rows in order at its host's speed,
//! reports progress every 1/[`Timing::reports_per_chunk`] of its rows (one
//! batch), and finishes at its last row. `StopAt` moves its last row, but
//! never before the end of the batch under way, which a real worker finishes
//! before it reads the message; `Cancel` drops it, and a lost host fails every
//! attempt it runs. A host that falls silent ([`SimHost::silent_at`]) stops
//! computing and sending without the driver hearing of it, as a hung machine
//! behind an open connection does.
//!
//! Work is accounted for: every attempt's computed cost until it finished,
//! was cancelled, failed or fell silent. [`Outcome::extra_cost`] is the work
//! that backups and splits cost on top of the total (losers of a race that
//! were still computing, rows computed past a split point), and
//! [`Outcome::lost_cost`] the work lost with failed, lost and silent hosts.
//! The seed-sized scenario is in [`seed`].
//!
//! The driver model ([`Timing`]): carrying out a `Launch` (reading the rows,
//! sending them) or a `Commit` (writing the store) keeps the driver busy; news
//! that arrives meanwhile waits and reaches the scheduler in one burst when
//! the driver is free, as in the real coordinator's single loop. [`run`] uses
//! [`Timing::ideal`] (a driver that is never busy); [`run_timed`] takes any.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use super::{AttemptId, Command, HostId, Input, Policy, Scheduler, SlotId, Snapshot};
use crate::plan::CostIndex;

pub mod seed;

/// Time from a launch to the first row being computed ([`Timing::ideal`]).
pub const START_LATENCY: Duration = Duration::from_millis(20);
/// Progress reports per attempt, as the real worker sends them.
pub const REPORTS_PER_CHUNK: u64 = 16;

/// How long the simulated driver and workers take to pass news along.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// From the driver sending an attempt to its first row being computed.
    pub start_latency: Duration,
    /// Progress reports per attempt.
    pub reports_per_chunk: u64,
    /// Driver time to carry out one `Launch` (read the rows, send them).
    pub launch_busy: Duration,
    /// Driver time to carry out one `Commit` (write the store).
    pub commit_busy: Duration,
}

impl Timing {
    /// A driver that is never busy; workers start [`START_LATENCY`] after a
    /// launch.
    pub fn ideal() -> Timing {
        Timing {
            start_latency: START_LATENCY,
            reports_per_chunk: REPORTS_PER_CHUNK,
            launch_busy: Duration::ZERO,
            commit_busy: Duration::ZERO,
        }
    }

    /// What a local run shows: a few milliseconds to read and send a chunk's
    /// rows and to commit one, a worker that starts at once, so progress that
    /// arrives while the driver reads or writes comes in bursts.
    pub fn real() -> Timing {
        Timing {
            start_latency: Duration::from_millis(2),
            reports_per_chunk: REPORTS_PER_CHUNK,
            launch_busy: Duration::from_millis(4),
            commit_busy: Duration::from_millis(6),
        }
    }
}
/// Rows in every stock scenario.
pub const SCENARIO_ROWS: u64 = 8000;
/// Speed of a stock host's slot, in cost units per second.
pub const SCENARIO_SPEED: f64 = 1_000_000.0;
/// Target chunk cost of the benchmark's policies: one second of a slot's work.
pub const BENCH_TARGET_CHUNK_COST: u64 = 1_000_000;
/// Step bound of the benchmark runs.
pub const BENCH_MAX_STEPS: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq)]
pub struct SimHost {
    /// Cost units per second per slot.
    pub speed: f64,
    pub slots: u32,
    /// When the host is lost (every attempt on it fails).
    pub lost_at: Option<Duration>,
    /// How many of the attempts launched on it fail (the first ones);
    /// `u32::MAX`: it fails everything.
    pub fail_attempts: u32,
    /// When the host falls silent: from then on its workers compute and
    /// send nothing, and nobody tells the driver.
    pub silent_at: Option<Duration>,
}

impl SimHost {
    /// A healthy host.
    pub fn new(speed: f64, slots: u32) -> SimHost {
        SimHost {
            speed,
            slots,
            lost_at: None,
            fail_attempts: 0,
            silent_at: None,
        }
    }

    /// When it stops working for the run: lost or silent, whichever first.
    fn gone_at(&self) -> Option<Duration> {
        match (self.lost_at, self.silent_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub costs: CostIndex,
    pub hosts: Vec<SimHost>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Virtual time of `Done` (or of `Fail`).
    pub makespan: Duration,
    /// See [`lower_bound`].
    pub lower_bound: Duration,
    /// Committed row ranges, in commit order.
    pub commits: Vec<Range<u64>>,
    pub attempts: u64,
    pub backups: u64,
    pub splits: u64,
    /// Chunks at the end: planned and made by splits.
    pub chunks: u64,
    /// The error of `Fail`, if the run failed.
    pub failed: Option<String>,
    /// Cost of every row.
    pub total_cost: u64,
    /// Work done on top of the total because of backups and splits: losers
    /// of a race that were still computing when cancelled, and rows computed
    /// past a split point.
    pub extra_cost: f64,
    /// Work lost with failed attempts and with lost or silent hosts.
    pub lost_cost: f64,
    /// Events and timeouts the driver handled.
    pub steps: u64,
}

impl Outcome {
    /// Makespan over the lower bound (1.0 for an empty run).
    pub fn over_bound(&self) -> f64 {
        let bound = self.lower_bound.as_secs_f64();
        if bound > 0.0 {
            self.makespan.as_secs_f64() / bound
        } else {
            1.0
        }
    }

    /// [`Outcome::extra_cost`] over the total cost.
    pub fn extra_work_fraction(&self) -> f64 {
        self.extra_cost / (self.total_cost.max(1) as f64)
    }

    /// [`Outcome::lost_cost`] over the total cost.
    pub fn lost_work_fraction(&self) -> f64 {
        self.lost_cost / (self.total_cost.max(1) as f64)
    }
}

/// No schedule can finish sooner: the smallest `T` such that the hosts'
/// capacity up to `T` covers the total cost, where a host lost or silent at
/// `t` gives `slots x speed x min(T, t)` and the others `slots x speed x T`;
/// and at least the costliest row's time on the fastest slot.
pub fn lower_bound(costs: &CostIndex, hosts: &[SimHost]) -> Duration {
    let total = costs.total() as f64;
    let capacity = |t: f64| -> f64 {
        hosts
            .iter()
            .map(|h| {
                let until = h.gone_at().map_or(t, |l| t.min(l.as_secs_f64()));
                f64::from(h.slots) * h.speed * until
            })
            .sum()
    };
    let mut hi = 1.0;
    while capacity(hi) < total && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if capacity(mid) >= total {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let fastest = hosts.iter().map(|h| h.speed).fold(0.0, f64::max);
    let costliest = costs.max_row_cost() as f64;
    let single = if fastest > 0.0 {
        costliest / fastest
    } else {
        0.0
    };
    Duration::from_secs_f64(hi.max(single))
}

#[derive(Clone, Debug)]
struct SimAttempt {
    host: usize,
    speed: f64,
    /// When its first row starts, in seconds.
    begin: f64,
    rows: Range<u64>,
    /// Report every this many rows.
    step: u64,
    fails: bool,
    /// Bumped whenever its scheduled events become stale.
    generation: u64,
    alive: bool,
}

impl SimAttempt {
    /// Cost it computed by `at` (seconds), not counting past its rows.
    fn computed(&self, costs: &CostIndex, at: f64) -> f64 {
        let done = (at - self.begin).max(0.0) * self.speed;
        done.min(costs.cost(self.rows.clone()) as f64)
    }
}

#[derive(Clone, Debug)]
enum Event {
    Report {
        attempt: AttemptId,
        generation: u64,
        rows_done: u64,
    },
    Finish {
        attempt: AttemptId,
        generation: u64,
    },
    Fail {
        attempt: AttemptId,
        generation: u64,
    },
    HostLost {
        host: usize,
    },
}

struct Cluster<'a> {
    scenario: &'a Scenario,
    costs: CostIndex,
    events: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    attempts: BTreeMap<AttemptId, SimAttempt>,
    slot_host: BTreeMap<SlotId, usize>,
    failures_left: Vec<u32>,
    lost: Vec<bool>,
    timing: Timing,
    /// The driver is carrying out commands until then.
    busy_until: Duration,
    /// Work done past the total, and work lost (see [`Outcome`]).
    extra: f64,
    lost_work: f64,
}

impl Cluster<'_> {
    fn push(&mut self, at: Duration, event: Event) {
        self.events.insert((at, self.seq), event);
        self.seq += 1;
    }

    /// When `row` (exclusive) is computed by the attempt.
    fn time_of(&self, attempt: &SimAttempt, row: u64) -> Duration {
        let cost = self.costs.cost(attempt.rows.start..row) as f64;
        Duration::from_secs_f64(attempt.begin + cost / attempt.speed)
    }

    /// Schedule the attempt's reports after `now` and its end.
    fn schedule(&mut self, id: AttemptId, now: Duration) {
        let attempt = self.attempts[&id].clone();
        let mut row = attempt.rows.start + attempt.step;
        while row < attempt.rows.end {
            let at = self.time_of(&attempt, row);
            if at > now {
                self.push(
                    at,
                    Event::Report {
                        attempt: id,
                        generation: attempt.generation,
                        rows_done: row - attempt.rows.start,
                    },
                );
                if attempt.fails {
                    self.push(
                        at,
                        Event::Fail {
                            attempt: id,
                            generation: attempt.generation,
                        },
                    );
                    return;
                }
            }
            row += attempt.step;
        }
        let at = self.time_of(&attempt, attempt.rows.end).max(now);
        let event = if attempt.fails {
            Event::Fail {
                attempt: id,
                generation: attempt.generation,
            }
        } else {
            Event::Finish {
                attempt: id,
                generation: attempt.generation,
            }
        };
        self.push(at, event);
    }

    /// The end of the batch the attempt is computing at `now` (its first
    /// batch before it starts; its last row once done).
    fn batch_end(&self, id: AttemptId, now: Duration) -> u64 {
        let a = &self.attempts[&id];
        let computed = ((now.as_secs_f64() - a.begin).max(0.0) * a.speed) as u64;
        let at = self.costs.row_reaching(a.rows.clone(), computed);
        let batches = (at - a.rows.start) / a.step + 1;
        (a.rows.start + batches * a.step).min(a.rows.end)
    }

    /// The event is news the driver hears: its attempt is alive, the event
    /// not stale, and its host not silent by `now`.
    fn current(&self, attempt: AttemptId, generation: u64, now: Duration) -> bool {
        self.attempts
            .get(&attempt)
            .is_some_and(|a| a.alive && a.generation == generation && !self.silent(a.host, now))
    }

    fn silent(&self, host: usize, now: Duration) -> bool {
        self.scenario.hosts[host]
            .silent_at
            .is_some_and(|t| now >= t)
    }

    /// Seconds until which the attempt's host computed, up to `now`.
    fn working_until(&self, host: usize, now: Duration) -> f64 {
        let until = self.scenario.hosts[host]
            .silent_at
            .map_or(now, |t| now.min(t));
        until.as_secs_f64()
    }

    /// The attempt stopped at `now` without committing: its work is extra
    /// (cancelled while computing) or lost (failed, or on a silent host).
    fn account_stop(&mut self, id: AttemptId, now: Duration, failed: bool) {
        let a = &self.attempts[&id];
        let until = self.working_until(a.host, now);
        let work = a.computed(&self.costs, until);
        if failed || self.silent(a.host, now) {
            self.lost_work += work;
        } else {
            self.extra += work;
        }
    }
}

/// Run `scenario` under `policy` until `Done` or `Fail`.
///
/// # Panics
///
/// If the run takes more than `max_steps` events (a livelock), if the
/// scheduler stops with work left and nothing to wait for, or if it commits
/// rows the attempt never computed.
pub fn run(scenario: &Scenario, policy: &Policy, max_steps: usize) -> Outcome {
    run_timed(scenario, policy, max_steps, &Timing::ideal())
}

/// [`run`] with the driver and worker delays of `timing`.
///
/// # Panics
///
/// As [`run`].
pub fn run_timed(
    scenario: &Scenario,
    policy: &Policy,
    max_steps: usize,
    timing: &Timing,
) -> Outcome {
    drive(scenario, policy, max_steps, timing, false)
}

/// [`run_timed`], checking the scheduler's indexes against a full scan
/// ([`Scheduler::check_index`]) after every event.
///
/// # Panics
///
/// As [`run`], and at the first index that differs from the scan.
pub fn run_checked(
    scenario: &Scenario,
    policy: &Policy,
    max_steps: usize,
    timing: &Timing,
) -> Outcome {
    drive(scenario, policy, max_steps, timing, true)
}

fn drive(
    scenario: &Scenario,
    policy: &Policy,
    max_steps: usize,
    timing: &Timing,
    check: bool,
) -> Outcome {
    let mut scheduler = Scheduler::new(policy.clone(), scenario.costs.clone(), &[]);
    let mut cluster = Cluster {
        scenario,
        costs: scenario.costs.clone(),
        events: BTreeMap::new(),
        seq: 0,
        attempts: BTreeMap::new(),
        slot_host: BTreeMap::new(),
        failures_left: scenario.hosts.iter().map(|h| h.fail_attempts).collect(),
        lost: vec![false; scenario.hosts.len()],
        timing: timing.clone(),
        busy_until: Duration::ZERO,
        extra: 0.0,
        lost_work: 0.0,
    };
    let mut now = Duration::ZERO;
    let mut next_slot = 0u32;
    for (index, host) in scenario.hosts.iter().enumerate() {
        for _ in 0..host.slots {
            let slot = SlotId(next_slot);
            next_slot += 1;
            cluster.slot_host.insert(slot, index);
            scheduler.handle(
                now,
                Input::SlotUp {
                    slot,
                    host: index as HostId,
                },
            );
        }
        if let Some(at) = host.lost_at {
            cluster.push(at, Event::HostLost { host: index });
        }
    }
    scheduler.handle_timeout(now);
    let mut outcome = Outcome {
        makespan: Duration::ZERO,
        lower_bound: lower_bound(&scenario.costs, &scenario.hosts),
        commits: Vec::new(),
        attempts: 0,
        backups: 0,
        splits: 0,
        chunks: 0,
        failed: None,
        total_cost: scenario.costs.total(),
        extra_cost: 0.0,
        lost_cost: 0.0,
        steps: 0,
    };
    let mut steps = 0usize;
    // What a UI would hold, from the scheduler's updates (checked runs).
    let mut shown = Snapshot::default();
    loop {
        while let Some(command) = scheduler.poll_command() {
            apply(&mut cluster, &mut outcome, now, command);
        }
        if check
            && let Err(e) = scheduler
                .check_index()
                .and_then(|()| scheduler.check_changes(now, &mut shown))
        {
            panic!("scenario '{}' at {now:?}: {e}", scenario.name);
        }
        if scheduler.is_finished() {
            break;
        }
        steps += 1;
        assert!(
            steps <= max_steps,
            "scenario '{}': no end after {max_steps} steps at {now:?} (livelock)",
            scenario.name
        );
        let next_event = cluster.events.keys().next().map(|k| k.0);
        let next_timeout = scheduler.poll_timeout();
        let event_first = match (next_event, next_timeout) {
            (Some(at), Some(t)) => at <= t,
            (Some(_), None) => true,
            _ => false,
        };
        // News that came while the driver was busy waits until it is free.
        match (next_event, next_timeout) {
            (Some(at), _) if event_first => {
                let (_, event) = cluster.events.pop_first().expect("an event is due");
                now = now.max(at).max(cluster.busy_until);
                deliver(&mut cluster, &mut scheduler, now, event);
            }
            (_, Some(at)) => {
                now = now.max(at).max(cluster.busy_until);
                scheduler.handle_timeout(now);
            }
            _ => panic!(
                "scenario '{}': the scheduler stalled at {now:?} with work left and nothing to wait for",
                scenario.name
            ),
        }
    }
    let snapshot = scheduler.snapshot(now);
    outcome.backups = snapshot.backups;
    outcome.splits = snapshot.splits;
    outcome.chunks = snapshot.chunks_total;
    outcome.steps = steps as u64;
    outcome.extra_cost = cluster.extra;
    outcome.lost_cost = cluster.lost_work;
    outcome
}

fn apply(cluster: &mut Cluster<'_>, outcome: &mut Outcome, now: Duration, command: Command) {
    match command {
        Command::Launch {
            attempt,
            slot,
            rows,
            ..
        } => {
            outcome.attempts += 1;
            let host = cluster.slot_host[&slot];
            assert!(
                !cluster.lost[host],
                "attempt {attempt} launched on lost host {host}"
            );
            let fails = cluster.failures_left[host] > 0;
            if fails && cluster.failures_left[host] != u32::MAX {
                cluster.failures_left[host] -= 1;
            }
            let step = (rows.end - rows.start)
                .div_ceil(cluster.timing.reports_per_chunk.max(1))
                .max(1);
            let sent = cluster.busy_until.max(now) + cluster.timing.launch_busy;
            cluster.busy_until = sent;
            cluster.attempts.insert(
                attempt,
                SimAttempt {
                    host,
                    speed: cluster.scenario.hosts[host].speed,
                    begin: (sent + cluster.timing.start_latency).as_secs_f64(),
                    rows,
                    step,
                    fails,
                    generation: 0,
                    alive: true,
                },
            );
            cluster.schedule(attempt, now);
        }
        Command::Cancel { attempt } => {
            if cluster.attempts.get(&attempt).is_some_and(|a| a.alive) {
                let sent = cluster.busy_until.max(now);
                cluster.account_stop(attempt, sent, false);
                cluster.attempts.get_mut(&attempt).expect("alive").alive = false;
            }
        }
        Command::StopAt { attempt, row } => {
            let Some(a) = cluster.attempts.get_mut(&attempt) else {
                return;
            };
            if !a.alive || row >= a.rows.end {
                return;
            }
            let sent = cluster.busy_until.max(now);
            let batch_end = cluster.batch_end(attempt, sent);
            let a = cluster.attempts.get_mut(&attempt).expect("alive attempt");
            a.rows.end = row.max(a.rows.start).max(batch_end).min(a.rows.end);
            a.generation += 1;
            cluster.schedule(attempt, sent);
        }
        Command::Commit {
            chunk,
            attempt,
            rows,
        } => {
            let a = &cluster.attempts[&attempt];
            assert!(
                a.rows.start == rows.start && a.rows.end >= rows.end,
                "chunk {chunk}: commit of rows {rows:?} by attempt {attempt}, which computed {:?}",
                a.rows
            );
            cluster.extra += cluster.costs.cost(rows.end..a.rows.end) as f64;
            outcome.commits.push(rows);
            cluster.busy_until = cluster.busy_until.max(now) + cluster.timing.commit_busy;
            outcome.makespan = cluster.busy_until;
        }
        Command::Done => outcome.makespan = cluster.busy_until.max(now),
        Command::Fail { error, .. } => {
            outcome.makespan = now;
            outcome.failed = Some(error);
        }
    }
}

fn deliver(cluster: &mut Cluster<'_>, scheduler: &mut Scheduler, now: Duration, event: Event) {
    match event {
        Event::Report {
            attempt,
            generation,
            rows_done,
        } => {
            if cluster.current(attempt, generation, now) {
                scheduler.handle(now, Input::Progress { attempt, rows_done });
            }
        }
        Event::Finish {
            attempt,
            generation,
        } => {
            if cluster.current(attempt, generation, now) {
                cluster.attempts.get_mut(&attempt).expect("current").alive = false;
                scheduler.handle(now, Input::Finished { attempt });
            }
        }
        Event::Fail {
            attempt,
            generation,
        } => {
            if cluster.current(attempt, generation, now) {
                cluster.account_stop(attempt, now, true);
                cluster.attempts.get_mut(&attempt).expect("current").alive = false;
                let host = cluster.attempts[&attempt].host;
                scheduler.handle(
                    now,
                    Input::Failed {
                        attempt,
                        error: format!("simulated failure on host {host}"),
                    },
                );
            }
        }
        Event::HostLost { host } => {
            cluster.lost[host] = true;
            let on_host: Vec<AttemptId> = cluster
                .attempts
                .iter()
                .filter(|(_, a)| a.host == host && a.alive)
                .map(|(&id, _)| id)
                .collect();
            for id in on_host {
                cluster.account_stop(id, now, true);
                cluster.attempts.get_mut(&id).expect("on host").alive = false;
            }
            scheduler.handle(
                now,
                Input::HostLost {
                    host: host as HostId,
                    reason: "simulated loss".to_string(),
                },
            );
        }
    }
}

/// The seeded generator of scenario costs.
pub use crate::splitmix::SplitMix64;

fn uniform_costs(rng: &mut SplitMix64) -> Vec<u64> {
    (0..SCENARIO_ROWS)
        .map(|_| rng.in_range(5_000..15_000))
        .collect()
}

fn stock_hosts() -> Vec<SimHost> {
    (0..4).map(|_| SimHost::new(SCENARIO_SPEED, 2)).collect()
}

/// The four stock scenarios, each on 4 hosts of 2 slots:
/// - `uniform`: row costs uniform in 5 000..15 000;
/// - `heavy-tail`: the same, with 5% of the rows, contiguous in input order,
///   costing 50x;
/// - `slow-host`: uniform costs, one host 5x slower;
/// - `host-lost`: uniform costs, one host lost halfway through the run's
///   lower bound without the loss.
pub fn scenarios(seed: u64) -> Vec<Scenario> {
    let mut rng = SplitMix64(seed);
    let uniform = uniform_costs(&mut rng);

    let mut heavy = uniform_costs(&mut rng);
    let cluster = SCENARIO_ROWS / 20;
    let at = rng.in_range(0..SCENARIO_ROWS - cluster);
    for cost in &mut heavy[at as usize..(at + cluster) as usize] {
        *cost *= 50;
    }

    let slow_costs = uniform_costs(&mut rng);
    let mut slow_hosts = stock_hosts();
    slow_hosts[3].speed = SCENARIO_SPEED / 5.0;

    let lost_costs = CostIndex::from(uniform_costs(&mut rng));
    let mut lost_hosts = stock_hosts();
    let halfway = lower_bound(&lost_costs, &lost_hosts) / 2;
    lost_hosts[3].lost_at = Some(halfway);

    vec![
        Scenario {
            name: "uniform",
            costs: uniform.into(),
            hosts: stock_hosts(),
        },
        Scenario {
            name: "heavy-tail",
            costs: heavy.into(),
            hosts: stock_hosts(),
        },
        Scenario {
            name: "slow-host",
            costs: slow_costs.into(),
            hosts: slow_hosts,
        },
        Scenario {
            name: "host-lost",
            costs: lost_costs,
            hosts: lost_hosts,
        },
    ]
}

/// The policies compared, each adding one weapon to the one before:
/// `static`, `pull-rows`, `pull-cost`, `split`, `full` (with speculation).
/// `max_attempts` and `target_chunk_cost` come from `base`.
pub fn policies(base: &Policy) -> Vec<(&'static str, Policy)> {
    let with = |pull, cost_aware, split_running, speculation| Policy {
        pull,
        cost_aware,
        split_running,
        speculation,
        ..base.clone()
    };
    vec![
        ("static", with(false, false, false, false)),
        ("pull-rows", with(true, false, false, false)),
        ("pull-cost", with(true, true, false, false)),
        ("split", with(true, true, true, false)),
        ("full", with(true, true, true, true)),
    ]
}

#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    pub scenario: String,
    pub policy: String,
    pub makespan_over_bound: f64,
    pub makespan_s: f64,
    pub bound_s: f64,
    pub attempts: u64,
    pub backups: u64,
    pub splits: u64,
}

/// The base policy of the benchmark.
pub fn bench_policy() -> Policy {
    Policy {
        pull: true,
        cost_aware: true,
        split_running: true,
        speculation: true,
        max_attempts: 4,
        target_chunk_cost: BENCH_TARGET_CHUNK_COST,
    }
}

/// Every stock scenario (seed 1) under every policy, with an ideal driver.
pub fn bench() -> Vec<BenchRow> {
    bench_timed(&Timing::ideal())
}

/// [`bench`] with the driver and worker delays of `timing`.
pub fn bench_timed(timing: &Timing) -> Vec<BenchRow> {
    let mut rows = Vec::new();
    for scenario in scenarios(1) {
        for (name, policy) in policies(&bench_policy()) {
            let outcome = run_timed(&scenario, &policy, BENCH_MAX_STEPS, timing);
            let makespan_s = outcome.makespan.as_secs_f64();
            let bound_s = outcome.lower_bound.as_secs_f64();
            rows.push(BenchRow {
                scenario: scenario.name.to_string(),
                policy: name.to_string(),
                makespan_over_bound: if bound_s > 0.0 {
                    makespan_s / bound_s
                } else {
                    1.0
                },
                makespan_s,
                bound_s,
                attempts: outcome.attempts,
                backups: outcome.backups,
                splits: outcome.splits,
            });
        }
    }
    rows
}

/// The rows as an aligned text table.
pub fn bench_table(rows: &[BenchRow]) -> String {
    let header = [
        "scenario",
        "policy",
        "makespan/bound",
        "makespan_s",
        "bound_s",
        "attempts",
        "backups",
        "splits",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.policy.clone(),
                format!("{:.3}", r.makespan_over_bound),
                format!("{:.2}", r.makespan_s),
                format!("{:.2}", r.bound_s),
                r.attempts.to_string(),
                r.backups.to_string(),
                r.splits.to_string(),
            ]
        })
        .collect();
    crate::table::render(&header, &cells, 2)
}
