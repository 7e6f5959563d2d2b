//! The coordinator: drives the scheduler with events from the fleet, writes
//! the store, publishes [`Event`]s for the UI.
//!
//! A thin async driver around the pure rooms: `sched` decides, this loop
//! carries out its commands (read rows, send them to a worker, commit a
//! result) and feeds back what the workers did. At the end it validates the
//! version, flips readers to it and keeps `keep_versions`.

pub mod event;
mod prepare;
mod validation;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::config::{self, Transport};
use crate::fleet::{self, FleetEvent, WorkerLink};
use crate::model::Predictions;
use crate::proto::{FromWorker, ToWorker};
use crate::sched::{
    AttemptId, ChunkId, Command, HostId, Input, Policy, Scheduler, SlotId, Snapshot,
};
use crate::store::{self, NewVersion, Status, Store};

pub use event::{AttemptReport, Event, HostInfo, HostReport, HostState, Report, SlotReport};
pub use prepare::{Prepared, load_fleet, load_job, prepare};

/// How often the UI gets a fresh snapshot.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Default chunk size: about this many seconds of one slot's work...
const DEFAULT_CHUNK_SECONDS: f64 = 1.5;
/// ...at this many multiply-adds per second (the native CPU path, one slot).
const ASSUMED_SLOT_MACS_PER_S: f64 = 1.0e10;
/// ...but at least this many chunks per slot, so pulling can balance.
const MIN_CHUNKS_PER_SLOT: u64 = 6;
/// A worker that dies after loading the model is replaced (on a new slot of
/// the same host) at most this many times per original slot; one that never
/// came up is not, since it would fail the same way again.
pub const MAX_WORKER_RESTARTS: u32 = 3;
/// Test-only: `SLOT:FACTOR` makes the worker of global slot SLOT pretend to
/// be FACTOR times slower. Not a user setting.
pub const TEST_SLOW_SLOT_ENV: &str = "HERD_TEST_SLOW_SLOT";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line or configuration (exit 2).
    #[error("{0}")]
    Config(String),
    /// The run failed (exit 1); the live version is untouched.
    #[error("{0}")]
    Failed(String),
    /// Validation failed (exit 3); nothing was flipped.
    #[error("{}", validation_message(.0))]
    Validation(Box<Report>),
}

fn validation_message(r: &Report) -> String {
    match r.validation.first_failure() {
        Some(c) => format!(
            "validation of version {} failed: {}: {}; nothing was flipped (live stays {})",
            r.version,
            c.name,
            c.detail,
            r.live_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into())
        ),
        None => format!("validation of version {} failed", r.version),
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Failed(_) => 1,
            Error::Validation(_) => 3,
        }
    }
}

/// What the user asks of a running job (TUI keys).
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    Pause(bool),
    /// Stop now; the version stays resumable.
    Cancel,
    Backup(ChunkId),
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub job: PathBuf,
    pub hosts: Option<PathBuf>,
    pub resume: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct SlotRt {
    host: HostId,
    link: Option<WorkerLink>,
    /// Came up (model loaded) and told to the scheduler.
    up: bool,
    /// Gone for good.
    down: bool,
    /// Workers this slot's line has lost and replaced so far.
    restarts: u32,
    /// What the worker was started with (test-only settings).
    env: Vec<(String, String)>,
}

struct HostRt {
    cfg: config::Host,
    backend: String,
    adapter: String,
    rows: u64,
    chunks: u64,
    attempts: u64,
    failures: u64,
    busy: Duration,
    last_error: Option<String>,
    /// The host's SSH connection (ssh hosts only).
    ssh: Option<std::sync::Arc<fleet::ssh::HostSession>>,
}

struct AttemptRt {
    slot: SlotId,
    rows: Range<u64>,
    started: Duration,
}

/// Runs a job to the end: returns its report, or why it failed.
pub async fn run(
    opts: Options,
    events: mpsc::UnboundedSender<Event>,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> Result<Report, Error> {
    let started_at = Instant::now();
    let p = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || prepare(&opts.job, opts.hosts.as_deref()))
            .await
            .map_err(|e| Error::Failed(format!("preparation panicked: {e}")))??
    };
    let store_dir = p.job.output.store.clone();
    let store = Store::open(&store_dir)
        .map_err(|e| Error::Failed(format!("store '{}': {e}", store_dir.display())))?;
    let live_before = store.live().map_err(store_err)?;
    let host_names: Vec<String> = p.fleet.hosts.iter().map(|h| h.name.clone()).collect();

    let mut resumed = false;
    let mut done: Vec<Range<u64>> = Vec::new();
    let mut version = None;
    if opts.resume {
        if let Some(rec) = store
            .find_resumable(&p.job.name, &p.fingerprint)
            .map_err(store_err)?
        {
            done = store.committed_ranges(rec.version).map_err(store_err)?;
            version = Some(rec.version);
            resumed = true;
        }
    }
    let version = match version {
        Some(v) => v,
        None => store
            .begin_version(NewVersion {
                job: p.job.name.clone(),
                model_version: p.job.model_version.clone(),
                model_kind: p.job.model.spec.kind_name().to_string(),
                rows: p.index.ids.len() as u64,
                ttl_secs: p.job.output.ttl_secs,
                fingerprint: p.fingerprint.clone(),
                created: unix_now(),
                hosts: host_names.clone(),
            })
            .map_err(store_err)?,
    };

    let total_slots: u64 = p.fleet.hosts.iter().map(|h| h.slots as u64).sum();
    let total_cost: u64 = p.costs.iter().sum();
    let target_chunk_cost = p.job.partition.target_chunk_cost.unwrap_or_else(|| {
        let by_time = (DEFAULT_CHUNK_SECONDS * ASSUMED_SLOT_MACS_PER_S) as u64;
        let by_count = total_cost / (total_slots.max(1) * MIN_CHUNKS_PER_SLOT);
        by_time.min(by_count).max(1)
    });
    let policy = Policy {
        pull: true,
        cost_aware: true,
        split_running: p.job.stragglers.split_running,
        speculation: p.job.stragglers.speculation,
        max_attempts: p.job.stragglers.max_attempts,
        target_chunk_cost,
    };
    let mut sched = Scheduler::new(policy, p.costs.clone(), &done);
    let first = sched.snapshot(Duration::ZERO);

    let hosts_info: Vec<HostInfo> = p
        .fleet
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| HostInfo {
            host: i as HostId,
            name: h.name.clone(),
            slots: h.slots,
            cost_per_hour: h.cost_per_hour,
        })
        .collect();
    let started_event = Event::Started {
        job: p.job.name.clone(),
        model: p.model.describe(),
        version,
        rows_total: p.index.ids.len() as u64,
        chunks_total: first.chunks_total,
        hosts: hosts_info.clone(),
        live_version: live_before,
        resumed,
    };
    let _ = events.send(started_event);
    let log = |events: &mpsc::UnboundedSender<Event>, at: Duration, source: &str, text: String| {
        let _ = events.send(Event::Log {
            at,
            source: source.to_string(),
            text,
        });
    };
    for note in &p.notes {
        log(&events, started_at.elapsed(), "run", note.clone());
    }
    if resumed {
        log(
            &events,
            started_at.elapsed(),
            "run",
            format!(
                "resuming version {version}: {} of {} rows already committed",
                done.iter().map(|r| r.end - r.start).sum::<u64>(),
                p.index.ids.len()
            ),
        );
    }

    // Start every worker.
    let (fleet_tx, mut fleet_rx) = mpsc::unbounded_channel::<FleetEvent>();
    let slow_slot = parse_slow_slot();
    let mut slots: BTreeMap<SlotId, SlotRt> = BTreeMap::new();
    let mut hosts: Vec<HostRt> = Vec::new();
    let mut next_slot = 0u32;
    for (hi, h) in p.fleet.hosts.iter().enumerate() {
        // SSH hosts connect and ship in the background, all at once; their
        // slots' workers start when the host is ready.
        let ssh = match &h.transport {
            Transport::Local => None,
            Transport::Ssh(s) => {
                let binary = match &s.worker_binary {
                    Some(b) => Ok(b.clone()),
                    None => fleet::local::worker_exe(),
                };
                match binary {
                    Ok(binary) => {
                        let payload = fleet::ssh::Payload {
                            binary,
                            model: Some((p.job.model.weights.clone(), p.weights_sha256.clone())),
                        };
                        let session = std::sync::Arc::new(fleet::ssh::HostSession::start(
                            &h.name, s, payload,
                        ));
                        let (session2, events2, name) =
                            (session.clone(), events.clone(), h.name.clone());
                        tokio::spawn(async move {
                            if session2.ready().await.is_ok() {
                                let _ = events2.send(Event::Log {
                                    at: started_at.elapsed(),
                                    source: name,
                                    text: fleet::ssh::describe_setup(&session2.status()),
                                });
                            }
                        });
                        Some(session)
                    }
                    Err(e) => {
                        log(
                            &events,
                            started_at.elapsed(),
                            &h.name,
                            format!("cannot find the worker binary to ship: {e}"),
                        );
                        None
                    }
                }
            }
        };
        hosts.push(HostRt {
            cfg: h.clone(),
            backend: String::new(),
            adapter: String::new(),
            rows: 0,
            chunks: 0,
            attempts: 0,
            failures: 0,
            busy: Duration::ZERO,
            last_error: None,
            ssh: ssh.clone(),
        });
        let _ = events.send(Event::Host {
            host: hi as HostId,
            state: HostState::Connecting,
            backend: None,
            adapter: None,
        });
        for _ in 0..h.slots {
            let slot = SlotId(next_slot);
            next_slot += 1;
            let mut env = Vec::new();
            if let Some((s, factor)) = slow_slot {
                if s == slot.0 {
                    env.push((crate::worker::SLOWDOWN_ENV.to_string(), factor.to_string()));
                }
            }
            let spawned = start_worker(h, ssh.as_ref(), &env);
            let mut rt = SlotRt {
                host: hi as HostId,
                link: None,
                up: false,
                down: false,
                restarts: 0,
                env,
            };
            match spawned {
                Ok(s) => rt.link = Some(fleet::attach(slot, s, fleet_tx.clone())),
                Err(e) => {
                    rt.down = true;
                    hosts[hi].last_error = Some(e.clone());
                    log(&events, started_at.elapsed(), &h.name, e);
                }
            }
            slots.insert(slot, rt);
        }
    }
    // `fleet_tx` stays alive: replacement workers are attached to it.

    let mut attempts: BTreeMap<AttemptId, AttemptRt> = BTreeMap::new();
    let mut results: BTreeMap<AttemptId, Predictions> = BTreeMap::new();
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut controls_open = true;
    let mut retries = 0u64;
    let mut first_launch: Option<Duration> = None;
    let mut all_committed: Option<Duration> = None;

    let outcome: Result<(), Error> = 'run: loop {
        let now = started_at.elapsed();
        while let Some(cmd) = sched.poll_command() {
            match cmd {
                Command::Launch {
                    attempt,
                    chunk,
                    slot,
                    rows,
                    backup: _,
                } => {
                    let read = tokio::task::block_in_place(|| p.dataset.read_rows(rows.clone()));
                    let batch = match read {
                        Ok(b) => b,
                        Err(e) => {
                            break 'run Err(Error::Failed(format!(
                                "chunk {chunk} (rows {}..{}): cannot read input: {e}",
                                rows.start, rows.end
                            )));
                        }
                    };
                    first_launch.get_or_insert(now);
                    let rt = &slots[&slot];
                    hosts[rt.host as usize].attempts += 1;
                    attempts.insert(
                        attempt,
                        AttemptRt {
                            slot,
                            rows: rows.clone(),
                            started: now,
                        },
                    );
                    let sent = rt
                        .link
                        .as_ref()
                        .ok_or_else(|| "worker gone".to_string())
                        .and_then(|l| {
                            l.send(&ToWorker::Run {
                                chunk,
                                attempt,
                                rows: batch,
                            })
                        });
                    if let Err(e) = sent {
                        sched.handle(now, Input::Failed { attempt, error: e });
                    }
                }
                Command::Cancel { attempt } => {
                    results.remove(&attempt);
                    if let Some(a) = attempts.get(&attempt) {
                        if let Some(l) = slots.get(&a.slot).and_then(|s| s.link.as_ref()) {
                            let _ = l.send(&ToWorker::Cancel { attempt });
                        }
                    }
                }
                Command::StopAt { attempt, row } => {
                    if let Some(a) = attempts.get(&attempt) {
                        if let Some(l) = slots.get(&a.slot).and_then(|s| s.link.as_ref()) {
                            let _ = l.send(&ToWorker::StopAt {
                                attempt,
                                rows: row.saturating_sub(a.rows.start),
                            });
                        }
                    }
                }
                Command::Commit {
                    chunk,
                    attempt,
                    rows,
                } => {
                    let Some(mut preds) = results.remove(&attempt) else {
                        break 'run Err(Error::Failed(format!(
                            "chunk {chunk}: attempt {attempt} committed without results (scheduler and coordinator disagree)"
                        )));
                    };
                    let need = (rows.end - rows.start) as usize;
                    if preds.len() < need {
                        break 'run Err(Error::Failed(format!(
                            "chunk {chunk} (rows {}..{}): worker returned {} predictions, {need} needed",
                            rows.start,
                            rows.end,
                            preds.len()
                        )));
                    }
                    preds.truncate(need);
                    let ids = p.index.ids.slice(rows.start as usize..rows.end as usize);
                    let wrote = tokio::task::block_in_place(|| {
                        store.commit_chunk(version, rows.clone(), &ids, &preds, unix_now())
                    });
                    match wrote {
                        Ok(true) => {
                            if let Some(a) = attempts.get(&attempt) {
                                let h = &mut hosts[slots[&a.slot].host as usize];
                                h.rows += rows.end - rows.start;
                                h.chunks += 1;
                            }
                        }
                        Ok(false) => {}
                        Err(e) => break 'run Err(store_err(e)),
                    }
                }
                Command::Done => {
                    all_committed = Some(started_at.elapsed());
                    break 'run Ok(());
                }
                Command::Fail { chunk, error } => {
                    let reasons: Vec<String> = hosts
                        .iter()
                        .filter_map(|h| {
                            h.last_error
                                .as_ref()
                                .map(|e| format!("{}: {e}", h.cfg.name))
                        })
                        .collect();
                    let mut msg = match chunk {
                        Some(c) => format!("chunk {c} failed: {error}"),
                        None => error,
                    };
                    if !reasons.is_empty() {
                        msg.push_str(&format!(" (host errors: {})", reasons.join("; ")));
                    }
                    break 'run Err(Error::Failed(msg));
                }
            }
        }
        // Every worker gone before any came up: nothing will ever run.
        if slots.values().all(|s| s.down) {
            let reasons: Vec<String> = hosts
                .iter()
                .map(|h| {
                    format!(
                        "{}: {}",
                        h.cfg.name,
                        h.last_error.clone().unwrap_or_else(|| "no worker".into())
                    )
                })
                .collect();
            break 'run Err(Error::Failed(format!(
                "no worker is left to run chunks: {}",
                reasons.join("; ")
            )));
        }
        let wake = sched.poll_timeout();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep(t.saturating_sub(started_at.elapsed())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = fleet_rx.recv() => {
                let now = started_at.elapsed();
                let Some(ev) = ev else { continue };
                match ev {
                    FleetEvent::Message { slot, msg } => match msg {
                        FromWorker::Hello { .. } => {
                            if let Err(e) = crate::proto::check_hello(&msg) {
                                let rt = slots.get_mut(&slot).expect("known slot");
                                hosts[rt.host as usize].last_error = Some(e.clone());
                                if let Some(l) = rt.link.as_mut() { l.kill(); }
                                continue;
                            }
                            let rt = &slots[&slot];
                            let h = &hosts[rt.host as usize].cfg;
                            let threads = h.threads.unwrap_or_else(|| local_threads(h.slots));
                            // An ssh host reads the weights from its cache.
                            let path = hosts[rt.host as usize]
                                .ssh
                                .as_ref()
                                .and_then(|s| s.model_path())
                                .unwrap_or_else(|| p.job.model.weights.display().to_string());
                            let load = ToWorker::Load {
                                spec: p.job.model.spec.clone(),
                                sha256: p.weights_sha256.clone(),
                                path,
                                num_features: p.dataset.num_features(),
                                device: h.device,
                                threads,
                            };
                            if let Some(l) = rt.link.as_ref() { let _ = l.send(&load); }
                        }
                        FromWorker::Loaded { backend, adapter, model: _ } => {
                            let rt = slots.get_mut(&slot).expect("known slot");
                            rt.up = true;
                            let hi = rt.host;
                            let h = &mut hosts[hi as usize];
                            if h.backend.is_empty() {
                                h.backend = backend.clone();
                                h.adapter = adapter.clone();
                                let _ = events.send(Event::Host {
                                    host: hi,
                                    state: HostState::Running,
                                    backend: Some(backend),
                                    adapter: Some(adapter),
                                });
                            }
                            sched.handle(now, Input::SlotUp { slot, host: hi });
                        }
                        FromWorker::Progress { attempt, rows_done } => {
                            sched.handle(now, Input::Progress { attempt, rows_done });
                        }
                        FromWorker::Result { attempt, predictions } => {
                            if let Some(a) = attempts.get(&attempt) {
                                let hi = slots[&a.slot].host as usize;
                                hosts[hi].busy += now.saturating_sub(a.started);
                            }
                            results.insert(attempt, predictions);
                            sched.handle(now, Input::Finished { attempt });
                        }
                        FromWorker::Error { attempt: Some(attempt), message } => {
                            let source = slot_name(&hosts, &slots, slot);
                            log(&events, now, &source, format!("attempt {attempt} failed: {message}"));
                            let hi = slots[&slot].host as usize;
                            hosts[hi].failures += 1;
                            hosts[hi].last_error = Some(message.clone());
                            retries += 1;
                            sched.handle(now, Input::Failed { attempt, error: message });
                        }
                        FromWorker::Error { attempt: None, message } => {
                            let source = slot_name(&hosts, &slots, slot);
                            log(&events, now, &source, format!("worker cannot run: {message}"));
                            let rt = slots.get_mut(&slot).expect("known slot");
                            hosts[rt.host as usize].last_error = Some(message);
                            if let Some(l) = rt.link.as_mut() { l.kill(); }
                        }
                    },
                    FleetEvent::Stderr { slot, line } => {
                        let source = slot_name(&hosts, &slots, slot);
                        log(&events, now, &source, line);
                    }
                    FleetEvent::Exited { slot, reason } => {
                        let source = slot_name(&hosts, &slots, slot);
                        let rt = slots.get_mut(&slot).expect("known slot");
                        if rt.down { continue; }
                        rt.down = true;
                        rt.link = None;
                        let hi = rt.host;
                        let was_up = rt.up;
                        let h = &mut hosts[hi as usize];
                        h.failures += 1;
                        if h.last_error.is_none() {
                            h.last_error = Some(format!("worker {reason}"));
                        }
                        log(&events, now, &source, format!("worker {reason}"));
                        if was_up {
                            sched.handle(now, Input::SlotDown { slot, reason: format!("worker {reason}") });
                        }
                        // Replace a worker that had been working, on a slot
                        // of its own (late events of the dead one then find
                        // their old slot down and are ignored).
                        let (restarts, env) = (rt.restarts, rt.env.clone());
                        if was_up && restarts < MAX_WORKER_RESTARTS {
                            let ssh = hosts[hi as usize].ssh.clone();
                            match start_worker(&hosts[hi as usize].cfg, ssh.as_ref(), &env) {
                                Ok(spawned) => {
                                    let new = SlotId(next_slot);
                                    next_slot += 1;
                                    slots.insert(new, SlotRt {
                                        host: hi,
                                        link: Some(fleet::attach(new, spawned, fleet_tx.clone())),
                                        up: false,
                                        down: false,
                                        restarts: restarts + 1,
                                        env,
                                    });
                                    let replacement = slot_name(&hosts, &slots, new);
                                    log(&events, now, &source, format!(
                                        "restarting the worker as {replacement} (restart {} of {MAX_WORKER_RESTARTS})",
                                        restarts + 1
                                    ));
                                }
                                Err(e) => log(&events, now, &source, format!("cannot restart the worker: {e}")),
                            }
                        }
                        let host_slots: Vec<&SlotRt> = slots.values().filter(|s| s.host == hi).collect();
                        if host_slots.iter().all(|s| s.down) {
                            let _ = events.send(Event::Host {
                                host: hi,
                                state: HostState::Lost(reason),
                                backend: None,
                                adapter: None,
                            });
                        }
                    }
                }
            }
            _ = sleep => {
                sched.handle_timeout(started_at.elapsed());
            }
            ctl = controls.recv(), if controls_open => {
                let now = started_at.elapsed();
                match ctl {
                    None => controls_open = false,
                    Some(Control::Pause(on)) => sched.handle(now, Input::Pause(on)),
                    Some(Control::Backup(chunk)) => sched.handle(now, Input::RequestBackup { chunk }),
                    Some(Control::Cancel) => break 'run Err(Error::Failed(format!(
                        "cancelled; version {version} is kept unfinished: `herd run {} --resume` finishes it",
                        opts.job.display()
                    ))),
                }
            }
            _ = &mut ctrl_c => {
                break 'run Err(Error::Failed(format!(
                    "interrupted; version {version} is kept unfinished: `herd run {} --resume` finishes it",
                    opts.job.display()
                )));
            }
            _ = publish.tick() => {
                let _ = events.send(Event::Progress(sched.snapshot(started_at.elapsed())));
            }
        }
    };

    // Stop every worker: a clean shutdown, then the links drop (killing any
    // that did not listen).
    for rt in slots.values() {
        if let Some(l) = rt.link.as_ref() {
            let _ = l.send(&ToWorker::Shutdown);
        }
    }
    let duration = started_at.elapsed();
    let snapshot = sched.snapshot(duration);
    let _ = events.send(Event::Progress(snapshot.clone()));
    for (hi, _) in hosts.iter().enumerate() {
        let _ = events.send(Event::Host {
            host: hi as HostId,
            state: HostState::Done,
            backend: None,
            adapter: None,
        });
    }
    let mut report = build_report(
        &p,
        version,
        &hosts,
        &slots,
        &snapshot,
        duration,
        retries,
        live_before,
    );
    if let (Some(a), Some(b)) = (first_launch, all_committed) {
        report.scoring_s = b.saturating_sub(a).as_secs_f64();
    }
    drop(slots);

    if let Err(e) = outcome {
        report.error = Some(e.to_string());
        let _ = store.update_record(version, |r| r.duration_s = Some(duration.as_secs_f64()));
        let _ = events.send(Event::Finished(Box::new(report)));
        return Err(e);
    }

    // Validate, then flip.
    let plan = tokio::task::block_in_place(|| validation::plan(&p, version))?;
    let vreport = tokio::task::block_in_place(|| {
        store::validate::validate(&store, version, live_before, &plan)
    })
    .map_err(store_err)?;
    let _ = events.send(Event::Validated(vreport.clone()));
    log(
        &events,
        started_at.elapsed(),
        "run",
        match vreport.first_failure() {
            None => format!(
                "version {version} passed validation ({} checks)",
                vreport.checks.len()
            ),
            Some(c) => format!(
                "version {version} failed validation: {}: {}",
                c.name, c.detail
            ),
        },
    );
    report.validation = vreport.clone();
    let committed = store.len(version).map_err(store_err)?;
    store
        .update_record(version, |r| {
            r.validation = Some(vreport.clone());
            r.duration_s = Some(duration.as_secs_f64());
            r.committed_rows = committed;
            r.status = if vreport.passed {
                Status::Validated
            } else {
                Status::Failed
            };
        })
        .map_err(store_err)?;
    if !vreport.passed {
        let e = Error::Validation(Box::new(report.clone()));
        report.error = Some(e.to_string());
        let _ = events.send(Event::Finished(Box::new(report)));
        return Err(e);
    }
    store.flip(version).map_err(store_err)?;
    let dropped = store
        .gc(p.job.output.keep_versions as usize)
        .map_err(store_err)?;
    if !dropped.is_empty() {
        log(
            &events,
            started_at.elapsed(),
            "run",
            format!("retention: dropped versions {dropped:?}"),
        );
    }
    log(
        &events,
        started_at.elapsed(),
        "run",
        format!(
            "flipped readers of {} from {} to version {version}",
            store_dir.display(),
            live_before
                .map(|v| format!("version {v}"))
                .unwrap_or_else(|| "nothing".into())
        ),
    );
    report.flipped = true;
    report.live_version = Some(version);
    let _ = events.send(Event::Finished(Box::new(report.clone())));
    Ok(report)
}

/// Starts one worker on host `h` through its transport.
fn start_worker(
    h: &config::Host,
    ssh: Option<&std::sync::Arc<fleet::ssh::HostSession>>,
    env: &[(String, String)],
) -> Result<fleet::Spawned, String> {
    match &h.transport {
        Transport::Local => fleet::local::spawn(env).map_err(|e| e.to_string()),
        Transport::Ssh(_) => match ssh {
            Some(session) => Ok(session.spawn(env)),
            None => Err(format!("host '{}': no worker binary to ship", h.name)),
        },
    }
}

fn store_err(e: store::Error) -> Error {
    Error::Failed(format!("store: {e}"))
}

fn slot_name(hosts: &[HostRt], slots: &BTreeMap<SlotId, SlotRt>, slot: SlotId) -> String {
    let hi = slots[&slot].host as usize;
    let first = slots
        .iter()
        .find(|(_, s)| s.host as usize == hi)
        .map(|(id, _)| id.0)
        .unwrap_or(slot.0);
    format!("{}#{}", hosts[hi].cfg.name, slot.0 - first)
}

/// Threads per local worker when the host does not say: cores / slots.
fn local_threads(slots: u32) -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    (cores / slots.max(1)).max(1)
}

fn parse_slow_slot() -> Option<(u32, f64)> {
    let v = std::env::var(TEST_SLOW_SLOT_ENV).ok()?;
    let (s, f) = v.split_once(':')?;
    Some((s.parse().ok()?, f.parse().ok()?))
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    p: &Prepared,
    version: u64,
    hosts: &[HostRt],
    slots: &BTreeMap<SlotId, SlotRt>,
    snap: &Snapshot,
    duration: Duration,
    retries: u64,
    live_before: Option<u64>,
) -> Report {
    let hours = duration.as_secs_f64() / 3600.0;
    let host_reports: Vec<HostReport> = hosts
        .iter()
        .map(|h| HostReport {
            name: h.cfg.name.clone(),
            backend: h.backend.clone(),
            adapter: h.adapter.clone(),
            slots: h.cfg.slots,
            rows: h.rows,
            chunks: h.chunks,
            attempts: h.attempts,
            failures: h.failures,
            shipped_bytes: h.ssh.as_ref().map(|s| s.shipped_bytes()).unwrap_or(0),
            busy_s: h.busy.as_secs_f64(),
            cost: h.cfg.cost_per_hour * hours,
        })
        .collect();
    let costs = crate::plan::CostIndex::new(&p.costs);
    let host_name = |h: HostId| hosts[h as usize].cfg.name.clone();
    let mut slot_reports: BTreeMap<SlotId, SlotReport> = slots
        .iter()
        .map(|(id, s)| {
            (
                *id,
                SlotReport {
                    slot: id.0,
                    host: host_name(s.host),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut timeline = Vec::with_capacity(snap.attempts.len());
    for a in &snap.attempts {
        let end = a.end.unwrap_or(snap.now);
        let computed = a.rows.start..(a.rows.start + a.rows_done).min(a.rows.end);
        if let Some(s) = slot_reports.get_mut(&a.slot) {
            s.attempts += 1;
            s.rows += computed.end - computed.start;
            s.cost += costs.cost(computed.clone());
            s.busy_s += end.saturating_sub(a.start).as_secs_f64();
        }
        timeline.push(AttemptReport {
            attempt: a.attempt,
            chunk: a.chunk,
            slot: a.slot.0,
            host: host_name(a.host),
            start_s: a.start.as_secs_f64(),
            end_s: a.end.map(|e| e.as_secs_f64()),
            rows: [a.rows.start, a.rows.end],
            rows_done: a.rows_done,
            state: format!("{:?}", a.state).to_lowercase(),
            backup: a.backup,
            split: a.split,
        });
    }
    let slot_reports: Vec<SlotReport> = slot_reports
        .into_values()
        .map(|mut s| {
            if s.busy_s > 0.0 {
                s.cost_per_s = s.cost as f64 / s.busy_s;
            }
            s
        })
        .collect();
    Report {
        job: p.job.name.clone(),
        version,
        flipped: false,
        rows: snap.rows_done,
        chunks: snap.chunks_done,
        attempts: snap.attempts.len() as u64,
        backups: snap.backups,
        splits: snap.splits,
        retries,
        duration_s: duration.as_secs_f64(),
        cost: host_reports.iter().map(|h| h.cost).sum(),
        hosts: host_reports,
        validation: Default::default(),
        scoring_s: 0.0,
        slots: slot_reports,
        timeline,
        error: None,
        live_version: live_before,
    }
}
