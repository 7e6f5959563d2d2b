//! The run as the UI knows it: a pure reducer over [`Event`]s.
//!
//! [`RunState::apply`] folds one event in; every figure the TUI and the
//! headless lines print (rows/s, ETA, cost, lanes, stragglers, the final
//! verdict) is derived here, so both show the same numbers. No IO and no
//! clock: elapsed time is the latest snapshot's `now`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::run::{Event, HostInfo, HostState, Report};
use crate::sched::{
    AttemptState, AttemptView, ChunkId, HostId, HostView, SlotId, Snapshot, Straggler,
};
use crate::store::ValidationReport;

/// How many log lines the state keeps; older lines are dropped first.
pub const LOG_LINES: usize = 1000;

/// The span of recent snapshots that "rows/s (recent)" is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// At most this many progress samples are kept for the recent rate.
pub const RATE_SAMPLES: usize = 256;

/// What the `Started` event said about the run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunHeader {
    pub job: String,
    pub model: String,
    pub version: u64,
    pub rows_total: u64,
    pub chunks_total: u64,
    pub live_version: Option<u64>,
    pub resumed: bool,
}

/// One host as the hosts table shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRow {
    pub host: HostId,
    pub name: String,
    pub slots: u32,
    pub cost_per_hour: f64,
    pub state: HostState,
    pub backend: Option<String>,
    pub adapter: Option<String>,
    /// The scheduler's latest view of it, once a snapshot named it.
    pub view: Option<HostView>,
    /// Run time at which it stopped costing money (lost or done).
    pub stopped_at: Option<Duration>,
}

impl HostRow {
    /// `backend adapter`, or `-` before the worker said hello.
    pub fn device(&self) -> String {
        match (&self.backend, &self.adapter) {
            (Some(b), Some(a)) => format!("{b} {a}"),
            (Some(b), None) => b.clone(),
            (None, Some(a)) => a.clone(),
            (None, None) => "-".to_string(),
        }
    }

    /// The state as one word or a short phrase.
    pub fn state_text(&self) -> String {
        match &self.state {
            HostState::Connecting => "connecting".into(),
            HostState::Running => "running".into(),
            HostState::Lost(why) => format!("lost: {why}"),
            HostState::Done => "done".into(),
        }
    }
}

/// One line of the log pane.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub at: Duration,
    pub source: String,
    pub text: String,
}

/// One worker slot's row of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Lane<'a> {
    pub slot: SlotId,
    pub host: HostId,
    /// `host#n`, n counting the host's slots from 0 in slot order.
    pub label: String,
    pub attempts: Vec<&'a AttemptView>,
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `version` is live now.
    Flipped { version: u64, previous: Option<u64> },
    /// Nothing flipped, and why.
    NotFlipped { version: u64, why: String },
}

/// The prediction store's versions (the caller reads the store).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreSummary {
    pub live: Option<u64>,
    pub versions: Vec<VersionRow>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VersionRow {
    pub version: u64,
    pub status: String,
    pub rows: u64,
    pub model_version: String,
    /// Unix seconds.
    pub created: u64,
}

impl VersionRow {
    /// Whether the store would make this version live: only a validated or
    /// retired version can go live (see `Store::flip`).
    pub fn can_go_live(&self) -> bool {
        matches!(self.status.as_str(), "validated" | "retired")
    }
}

/// The reducer's state. `Default` is "no run yet".
///
/// The live version is one field, [`RunState::live`], moved by whichever
/// fact came last: the run's start (the store as the run found it), its
/// flip, or a fresh store summary (a rollback). The header, the result box
/// and the store view all read it, so they cannot disagree.
#[derive(Clone, Debug, Default)]
pub struct RunState {
    pub header: Option<RunHeader>,
    pub hosts: Vec<HostRow>,
    pub snapshot: Snapshot,
    pub log: VecDeque<LogLine>,
    pub validation: Option<ValidationReport>,
    pub report: Option<Report>,
    /// The store's versions, as last read, with the run's flip folded in.
    pub store: Option<StoreSummary>,
    /// The live version: see the type's doc.
    live: Option<u64>,
    /// Log lines dropped from the front since the run started.
    pub log_dropped: u64,
    /// (now, rows_done) of recent snapshots, oldest first. Paused time is
    /// cut out (see `paused_since`), so a pause neither decays the rate
    /// while it lasts nor drags it down after.
    samples: VecDeque<(Duration, u64)>,
    /// Run time of the first paused snapshot of the pause going on.
    paused_since: Option<Duration>,
}

impl RunState {
    pub fn new() -> RunState {
        RunState::default()
    }

    /// Folds one event into the state. A `Started` event begins a new run.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Started {
                job,
                model,
                version,
                rows_total,
                chunks_total,
                hosts,
                live_version,
                resumed,
            } => {
                let store = self.store.take();
                *self = RunState {
                    store,
                    live: *live_version,
                    ..RunState::default()
                };
                self.header = Some(RunHeader {
                    job: job.clone(),
                    model: model.clone(),
                    version: *version,
                    rows_total: *rows_total,
                    chunks_total: *chunks_total,
                    live_version: *live_version,
                    resumed: *resumed,
                });
                self.hosts = hosts.iter().map(host_row).collect();
                self.add_version_row(*version);
                let live = live_version.map_or("none".to_string(), |v| format!("v{v}"));
                self.note(
                    "run",
                    format!(
                        "started {job}: {} v{version}, {} rows in {} chunks on {}; live {live}",
                        if *resumed { "resuming" } else { "building" },
                        crate::ui::fmt_count(*rows_total),
                        crate::ui::fmt_count(*chunks_total),
                        crate::ui::counted(hosts.len() as u64, "host", "hosts"),
                    ),
                );
            }
            Event::Host {
                host,
                state,
                backend,
                adapter,
            } => {
                let now = self.snapshot.now;
                let row = self.host_mut(*host);
                row.state = state.clone();
                if backend.is_some() {
                    row.backend = backend.clone();
                }
                if adapter.is_some() {
                    row.adapter = adapter.clone();
                }
                row.stopped_at = match state {
                    HostState::Lost(_) | HostState::Done => Some(row.stopped_at.unwrap_or(now)),
                    _ => None,
                };
                let text = match state {
                    HostState::Running => format!("{}: running on {}", row.name, row.device()),
                    _ => format!("{}: {}", row.name, row.state_text()),
                };
                self.note("host", text);
            }
            Event::Log { at, source, text } => self.push_log(*at, source, text.clone()),
            Event::Progress(snapshot) | Event::Changes(snapshot) => {
                for view in &snapshot.hosts {
                    let row = self.host_mut(view.host);
                    row.view = Some(view.clone());
                    if view.lost && row.stopped_at.is_none() {
                        row.stopped_at = Some(snapshot.now);
                    }
                }
                if snapshot.paused != self.snapshot.paused && self.started() {
                    self.note(
                        "run",
                        if snapshot.paused {
                            "paused: no new attempts start".into()
                        } else {
                            "resumed".into()
                        },
                    );
                }
                match (snapshot.paused, self.paused_since) {
                    (true, None) => self.paused_since = Some(snapshot.now),
                    (false, Some(since)) => {
                        // Move the samples past the pause, as if it had
                        // not been.
                        let gap = snapshot.now.saturating_sub(since);
                        for (t, _) in &mut self.samples {
                            *t += gap;
                        }
                        self.paused_since = None;
                    }
                    _ => {}
                }
                while self.samples.back().is_some_and(|(t, _)| *t > snapshot.now) {
                    self.samples.pop_back();
                }
                if !snapshot.paused {
                    self.samples.push_back((snapshot.now, snapshot.rows_done));
                }
                while self.samples.len() > RATE_SAMPLES
                    || self.samples.len() > 2
                        && snapshot.now.saturating_sub(self.samples[1].0) >= RATE_WINDOW
                {
                    self.samples.pop_front();
                }
                match event {
                    Event::Changes(_) => self.snapshot.update(snapshot),
                    _ => self.snapshot = snapshot.clone(),
                }
            }
            Event::Validated(report) => {
                self.validation = Some(report.clone());
                let failed = report.checks.iter().filter(|c| !c.passed).count();
                self.note(
                    "run",
                    if report.passed {
                        format!("validation passed ({} checks)", report.checks.len())
                    } else {
                        format!(
                            "validation FAILED ({failed} of {} checks)",
                            report.checks.len()
                        )
                    },
                );
            }
            Event::Finished(report) => {
                if self.validation.is_none() && !report.validation.checks.is_empty() {
                    self.validation = Some(report.validation.clone());
                }
                self.add_version_row(report.version);
                if let Some(row) = self.version_row_mut(report.version)
                    && report.error.is_none()
                {
                    row.rows = report.rows;
                    row.status = "validated".into();
                }
                if report.flipped {
                    self.set_live(Some(report.version));
                }
                self.report = Some((**report).clone());
                let verdict = match self.outcome() {
                    Some(Outcome::Flipped { version, .. }) => format!("v{version} is live"),
                    Some(Outcome::NotFlipped { version, why }) => {
                        format!("v{version} NOT flipped: {why}")
                    }
                    None => String::new(),
                };
                self.note("run", format!("finished: {verdict}"));
            }
        }
    }

    fn push_log(&mut self, at: Duration, source: &str, text: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
            self.log_dropped += 1;
        }
        self.log.push_back(LogLine {
            at,
            source: source.to_string(),
            text,
        });
    }

    /// A log line of the UI's own about an event, at the run's time.
    fn note(&mut self, source: &str, text: String) {
        let at = self.elapsed();
        self.push_log(at, source, text);
    }

    /// Folds in a fresh read of the store: its live version wins.
    pub fn apply_store(&mut self, store: StoreSummary) {
        self.live = store.live;
        self.store = Some(store);
    }

    /// The live version, as every view shows it.
    pub fn live(&self) -> Option<u64> {
        self.live
    }

    /// Moves `live` to `version`, and the store rows' statuses with it
    /// (the old live row retires), as the store's flip does.
    fn set_live(&mut self, version: Option<u64>) {
        let old = self.live;
        self.live = version;
        if let Some(store) = &mut self.store {
            store.live = version;
            for row in &mut store.versions {
                if Some(row.version) == version {
                    row.status = "live".into();
                } else if Some(row.version) == old && row.status == "live" {
                    row.status = "retired".into();
                }
            }
        }
    }

    /// The run's version in the store's rows before the store is read
    /// again (it began with the run), so the store view lists what the
    /// header names.
    fn add_version_row(&mut self, version: u64) {
        if let Some(store) = &mut self.store
            && !store.versions.iter().any(|v| v.version == version)
        {
            store.versions.push(VersionRow {
                version,
                status: "building".into(),
                rows: 0,
                model_version: String::new(),
                created: 0,
            });
            store.versions.sort_by_key(|v| std::cmp::Reverse(v.version));
        }
    }

    fn version_row_mut(&mut self, version: u64) -> Option<&mut VersionRow> {
        self.store
            .as_mut()?
            .versions
            .iter_mut()
            .find(|v| v.version == version)
    }

    /// The store's row for `version`, if the last read had it.
    pub fn version_row(&self, version: u64) -> Option<&VersionRow> {
        self.store
            .as_ref()?
            .versions
            .iter()
            .find(|v| v.version == version)
    }

    fn host_mut(&mut self, host: HostId) -> &mut HostRow {
        let at = match self.hosts.iter().position(|h| h.host == host) {
            Some(at) => at,
            None => {
                self.hosts.push(host_row(&HostInfo {
                    host,
                    name: format!("host{host}"),
                    slots: 0,
                    cost_per_hour: 0.0,
                }));
                self.hosts.len() - 1
            }
        };
        &mut self.hosts[at]
    }

    pub fn started(&self) -> bool {
        self.header.is_some()
    }

    /// Started and not finished.
    pub fn running(&self) -> bool {
        self.header.is_some() && self.report.is_none()
    }

    pub fn finished(&self) -> bool {
        self.report.is_some()
    }

    /// Run time: the latest snapshot's `now`, or the report's duration once
    /// finished.
    pub fn elapsed(&self) -> Duration {
        match &self.report {
            Some(r) if r.duration_s.is_finite() && r.duration_s >= 0.0 => {
                Duration::from_secs_f64(r.duration_s).max(self.snapshot.now)
            }
            _ => self.snapshot.now,
        }
    }

    pub fn rows_total(&self) -> u64 {
        if self.snapshot.rows_total > 0 {
            self.snapshot.rows_total
        } else {
            self.header.as_ref().map_or(0, |h| h.rows_total)
        }
    }

    pub fn rows_done(&self) -> u64 {
        match &self.report {
            Some(r) if r.error.is_none() && r.rows > self.snapshot.rows_done => r.rows,
            _ => self.snapshot.rows_done,
        }
    }

    /// Done fraction in [0, 1].
    pub fn fraction(&self) -> f64 {
        let total = self.rows_total();
        if total == 0 {
            return if self.finished() { 1.0 } else { 0.0 };
        }
        (self.rows_done() as f64 / total as f64).clamp(0.0, 1.0)
    }

    /// Rows per second over the last [`RATE_WINDOW`] of snapshots; over the
    /// whole run when there is only one snapshot; `None` before rows move.
    /// While paused it holds the rate from before the pause.
    pub fn rows_per_s(&self) -> Option<f64> {
        let (t1, r1) = *self.samples.back()?;
        let (t0, r0) = match self.samples.front() {
            Some(&(t0, r0)) if t0 < t1 => (t0, r0),
            _ => (Duration::ZERO, 0),
        };
        let span = t1.saturating_sub(t0).as_secs_f64();
        if span <= 0.0 {
            return None;
        }
        Some(r1.saturating_sub(r0) as f64 / span)
    }

    /// Time left: the scheduler's estimate when it has one, else the rows
    /// left at the recent rate; zero once finished.
    /// `None` while paused: no time left can be told then.
    pub fn eta(&self) -> Option<Duration> {
        if self.finished() {
            return Some(Duration::ZERO);
        }
        if self.snapshot.paused {
            return None;
        }
        if let Some(eta) = self.snapshot.eta {
            return Some(eta);
        }
        let rate = self.rows_per_s().filter(|r| *r > 0.0)?;
        let left = self.rows_total().saturating_sub(self.rows_done());
        let secs = left as f64 / rate;
        secs.is_finite().then(|| Duration::from_secs_f64(secs))
    }

    /// Sum over hosts of cost_per_hour x the hours it has been held (until it
    /// was lost or done).
    /// Once finished, the report's cost.
    pub fn cost_so_far(&self) -> f64 {
        if let Some(cost) = self
            .report
            .as_ref()
            .map(|r| r.cost)
            .filter(|c| c.is_finite())
        {
            return cost;
        }
        let now = self.elapsed();
        self.hosts
            .iter()
            .map(|h| {
                let held = h.stopped_at.map_or(now, |s| s.min(now));
                h.cost_per_hour * held.as_secs_f64() / 3600.0
            })
            .sum()
    }

    /// Cost so far plus every host still held for the ETA; `None` without an
    /// ETA.
    pub fn cost_projected(&self) -> Option<f64> {
        let eta = self.eta()?;
        let more: f64 = self
            .hosts
            .iter()
            .filter(|h| h.stopped_at.is_none())
            .map(|h| h.cost_per_hour * eta.as_secs_f64() / 3600.0)
            .sum();
        Some(self.cost_so_far() + more)
    }

    pub fn host_name(&self, host: HostId) -> String {
        self.hosts
            .iter()
            .find(|h| h.host == host)
            .map_or_else(|| format!("host{host}"), |h| h.name.clone())
    }

    /// `host#n` for every slot seen in the attempts, n counting each host's
    /// slots from 0 in slot order.
    pub fn slot_labels(&self) -> BTreeMap<SlotId, (HostId, String)> {
        slot_labels(&self.snapshot.attempts, |h| self.host_name(h))
    }

    /// One lane per slot that ran an attempt, in slot order; attempts by start.
    pub fn lanes(&self) -> Vec<Lane<'_>> {
        let mut lanes: Vec<Lane<'_>> = self
            .slot_labels()
            .into_iter()
            .map(|(slot, (host, label))| Lane {
                slot,
                host,
                label,
                attempts: Vec::new(),
            })
            .collect();
        for a in &self.snapshot.attempts {
            if let Some(lane) = lanes.iter_mut().find(|l| l.slot == a.slot) {
                lane.attempts.push(a);
            }
        }
        for lane in &mut lanes {
            lane.attempts.sort_by_key(|a| (a.start, a.attempt));
        }
        lanes
    }

    pub fn attempt(&self, attempt: u64) -> Option<&AttemptView> {
        self.snapshot.attempts.iter().find(|a| a.attempt == attempt)
    }

    pub fn is_straggler(&self, attempt: u64) -> bool {
        self.snapshot
            .stragglers
            .iter()
            .any(|s| s.attempt == attempt)
    }

    /// "x peers": the attempt's rows/s over the median rows/s of the
    /// running attempts (one a slot, each since its own start). 0.5 reads
    /// "half as fast as the median slot". `None` before it or the median
    /// has run for a moment.
    pub fn rate_vs_peers(&self, attempt: u64) -> Option<f64> {
        let now = self.snapshot.now;
        let rate = |a: &AttemptView| {
            let t = now.saturating_sub(a.start).as_secs_f64();
            (t > 0.0).then(|| a.rows_done as f64 / t)
        };
        let mut rates: Vec<f64> = self
            .snapshot
            .attempts
            .iter()
            .filter(|a| a.state == AttemptState::Running)
            .filter_map(rate)
            .collect();
        if rates.is_empty() {
            return None;
        }
        rates.sort_by(f64::total_cmp);
        let n = rates.len();
        let median = if n % 2 == 1 {
            rates[n / 2]
        } else {
            (rates[n / 2 - 1] + rates[n / 2]) / 2.0
        };
        let own = rate(self.attempt(attempt)?)?;
        (median > 0.0).then(|| own / median)
    }

    pub fn stragglers(&self) -> &[Straggler] {
        &self.snapshot.stragglers
    }

    /// Running attempts a backup can be asked for: stragglers first (slowest
    /// first), then the rest in slot order. One entry per chunk.
    pub fn selectable(&self) -> Vec<&AttemptView> {
        let mut running: Vec<&AttemptView> = self
            .snapshot
            .attempts
            .iter()
            .filter(|a| a.state == AttemptState::Running)
            .collect();
        running.sort_by(|a, b| {
            let sa = self.is_straggler(a.attempt);
            let sb = self.is_straggler(b.attempt);
            sb.cmp(&sa)
                .then_with(|| {
                    if sa && sb {
                        b.slowness.total_cmp(&a.slowness)
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .then(a.slot.cmp(&b.slot))
                .then(a.attempt.cmp(&b.attempt))
        });
        let mut seen: Vec<ChunkId> = Vec::new();
        running.retain(|a| {
            let fresh = !seen.contains(&a.chunk);
            seen.push(a.chunk);
            fresh
        });
        running
    }

    /// How the run ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        let r = self.report.as_ref()?;
        if r.flipped {
            return Some(Outcome::Flipped {
                version: r.version,
                previous: self
                    .header
                    .as_ref()
                    .and_then(|h| h.live_version)
                    .or(r.live_version)
                    .filter(|v| *v != r.version),
            });
        }
        let validation = self.validation.as_ref().unwrap_or(&r.validation);
        let why = if let Some(e) = &r.error {
            e.clone()
        } else if let Some(c) = validation.first_failure() {
            format!("validation check '{}' failed: {}", c.name, c.detail)
        } else {
            "the run did not flip (no reason given)".to_string()
        };
        Some(Outcome::NotFlipped {
            version: r.version,
            why,
        })
    }
}

fn host_row(info: &HostInfo) -> HostRow {
    HostRow {
        host: info.host,
        name: info.name.clone(),
        slots: info.slots,
        cost_per_hour: info.cost_per_hour,
        state: HostState::Connecting,
        backend: None,
        adapter: None,
        view: None,
        stopped_at: None,
    }
}

/// `host#n` labels for the slots of `attempts` (shared with the trace).
pub fn slot_labels(
    attempts: &[AttemptView],
    host_name: impl Fn(HostId) -> String,
) -> BTreeMap<SlotId, (HostId, String)> {
    let mut slots: BTreeMap<SlotId, HostId> = BTreeMap::new();
    for a in attempts {
        slots.entry(a.slot).or_insert(a.host);
    }
    let mut per_host: BTreeMap<HostId, u32> = BTreeMap::new();
    slots
        .into_iter()
        .map(|(slot, host)| {
            let n = per_host.entry(host).or_insert(0);
            let label = format!("{}#{}", host_name(host), *n);
            *n += 1;
            (slot, (host, label))
        })
        .collect()
}

/// The attempt's state as one word.
pub fn attempt_state_word(state: AttemptState) -> &'static str {
    match state {
        AttemptState::Running => "running",
        AttemptState::Done => "done",
        AttemptState::Cancelled => "cancelled",
        AttemptState::Failed => "failed",
    }
}
