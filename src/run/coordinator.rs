//! The coordinator: one value owning a run's state (the scheduler, the
//! workers, the attempts in flight and their results, the version being
//! built), changed only through one handler per kind of event. The async
//! loop around it ([`super::drive`]) waits for the next event and calls the
//! handler; everything the scheduler decides comes out of
//! [`Coordinator::run_commands`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::fleet::{FleetEvent, ModelFile};
use crate::model::Predictions;
use crate::proto::{self, FromWorker, ToWorker};
use crate::sched::{AttemptId, ChunkId, Command, HostId, Input, Policy, Scheduler, SlotId};
use crate::store::{NewVersion, Store};

use super::event::{Event, HostInfo, HostState};
use super::publish::Publisher;
use super::workers::Workers;
use super::{Control, Error, Prepared};

/// How often the UI gets a fresh snapshot.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Default chunk size: about this many seconds of one slot's work...
const DEFAULT_CHUNK_SECONDS: f64 = 1.5;
/// ...at this many multiply-adds per second (the native CPU path, one slot).
const ASSUMED_SLOT_MACS_PER_S: f64 = 1.0e10;
/// ...but at least this many chunks per slot, so pulling can balance.
const MIN_CHUNKS_PER_SLOT: u64 = 6;

/// An attempt handed to a worker.
pub(super) struct AttemptRt {
    pub slot: SlotId,
    pub rows: Range<u64>,
}

pub(super) struct Coordinator {
    pub p: Prepared,
    /// The job file, for the `--resume` hint.
    job_file: PathBuf,
    pub store: Store,
    pub version: u64,
    pub live_before: Option<u64>,
    pub sched: Scheduler,
    pub workers: Workers,
    attempts: BTreeMap<AttemptId, AttemptRt>,
    /// Results that arrived and wait for their commit.
    results: BTreeMap<AttemptId, Predictions>,
    pub out: Publisher,
    /// Attempts that failed with an error from their worker.
    pub retries: u64,
    /// When the first chunk was handed out and when the last was committed.
    pub first_launch: Option<Duration>,
    pub all_committed: Option<Duration>,
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn store_err(e: crate::store::Error) -> Error {
    Error::Failed(format!("store: {e}"))
}

impl Coordinator {
    /// Opens the store, begins (or resumes) the version, plans the chunks and
    /// starts every worker; worker events go to `fleet_tx`.
    pub fn start(
        p: Prepared,
        job_file: PathBuf,
        resume: bool,
        out: Publisher,
        fleet_tx: mpsc::UnboundedSender<FleetEvent>,
    ) -> Result<Coordinator, Error> {
        let store_dir = p.job.output.store.clone();
        let store = Store::open(&store_dir)
            .map_err(|e| Error::Failed(format!("store '{}': {e}", store_dir.display())))?;
        let live_before = store.live().map_err(store_err)?;
        let resumed = match resume {
            true => store
                .find_resumable(&p.job.name, &p.fingerprint)
                .map_err(store_err)?,
            false => None,
        };
        let (version, done) = match &resumed {
            Some(rec) => (
                rec.version,
                store.committed_ranges(rec.version).map_err(store_err)?,
            ),
            None => (begin_version(&store, &p)?, Vec::new()),
        };
        let sched = Scheduler::new(policy(&p), p.costs.clone(), &done);
        out.send(started_event(
            &p,
            version,
            &sched,
            live_before,
            resumed.is_some(),
        ));
        for note in &p.notes {
            out.log("run", note.clone());
        }
        if resumed.is_some() {
            out.log(
                "run",
                format!(
                    "resuming version {version}: {} of {} rows already committed",
                    done.iter().map(|r| r.end - r.start).sum::<u64>(),
                    p.index.ids.len()
                ),
            );
        }
        let model = ModelFile {
            path: p.job.model.weights.clone(),
            sha256: p.weights_sha256.clone(),
        };
        let workers = Workers::start(&p.fleet, &model, fleet_tx, &out);
        Ok(Coordinator {
            p,
            job_file,
            store,
            version,
            live_before,
            sched,
            workers,
            attempts: BTreeMap::new(),
            results: BTreeMap::new(),
            out,
            retries: 0,
            first_launch: None,
            all_committed: None,
        })
    }

    /// Every row is committed.
    pub fn done(&self) -> bool {
        self.all_committed.is_some()
    }

    /// Carries out every command the scheduler has queued.
    pub fn run_commands(&mut self) -> Result<(), Error> {
        while let Some(cmd) = self.sched.poll_command() {
            self.on_command(cmd)?;
        }
        if !self.done() && self.workers.all_down() {
            // Every worker gone: nothing will ever run.
            let reasons: Vec<String> = self
                .workers
                .hosts
                .iter()
                .map(|h| {
                    let why = h.last_error.as_deref().unwrap_or("no worker");
                    format!("{}: {why}", h.cfg.name)
                })
                .collect();
            return Err(Error::Failed(format!(
                "no worker is left to run chunks: {}",
                reasons.join("; ")
            )));
        }
        Ok(())
    }

    /// How long until the scheduler wants [`Coordinator::on_timeout`].
    pub fn wake_in(&self) -> Option<Duration> {
        self.sched
            .poll_timeout()
            .map(|t| t.saturating_sub(self.out.now()))
    }

    pub fn on_timeout(&mut self) {
        self.sched.handle_timeout(self.out.now());
    }

    /// Publishes the scheduler's view for the UI.
    pub fn publish(&self) {
        self.out
            .send(Event::Progress(self.sched.snapshot(self.out.now())));
    }

    /// One command of the scheduler.
    fn on_command(&mut self, cmd: Command) -> Result<(), Error> {
        match cmd {
            Command::Launch {
                attempt,
                chunk,
                slot,
                rows,
                backup: _,
            } => self.launch(attempt, chunk, slot, rows)?,
            Command::Cancel { attempt } => {
                self.results.remove(&attempt);
                if let Some(a) = self.attempts.get(&attempt) {
                    let _ = self.workers.send(a.slot, &ToWorker::Cancel { attempt });
                }
            }
            Command::StopAt { attempt, row } => {
                if let Some(a) = self.attempts.get(&attempt) {
                    let rows = row.saturating_sub(a.rows.start);
                    let _ = self
                        .workers
                        .send(a.slot, &ToWorker::StopAt { attempt, rows });
                }
            }
            Command::Commit {
                chunk,
                attempt,
                rows,
            } => self.commit(chunk, attempt, rows)?,
            Command::Done => self.all_committed = Some(self.out.now()),
            Command::Fail { chunk, error } => {
                let mut msg = match chunk {
                    Some(c) => format!("chunk {c} failed: {error}"),
                    None => error,
                };
                let reasons = self.workers.host_errors();
                if !reasons.is_empty() {
                    msg.push_str(&format!(" (host errors: {})", reasons.join("; ")));
                }
                return Err(Error::Failed(msg));
            }
        }
        Ok(())
    }

    /// Reads the chunk's rows and sends them to the slot's worker.
    fn launch(
        &mut self,
        attempt: AttemptId,
        chunk: ChunkId,
        slot: SlotId,
        rows: Range<u64>,
    ) -> Result<(), Error> {
        let now = self.out.now();
        let batch = tokio::task::block_in_place(|| self.p.dataset.read_rows(rows.clone()))
            .map_err(|e| {
                Error::Failed(format!(
                    "chunk {chunk} (rows {}..{}): cannot read input: {e}",
                    rows.start, rows.end
                ))
            })?;
        self.first_launch.get_or_insert(now);
        self.attempts.insert(attempt, AttemptRt { slot, rows });
        let run = ToWorker::Run {
            chunk,
            attempt,
            rows: batch,
        };
        if let Err(error) = self.workers.send(slot, &run) {
            self.sched.handle(now, Input::Failed { attempt, error });
        }
        Ok(())
    }

    /// Writes the attempt's predictions of `rows` and the chunk's marker in
    /// one store transaction (a range already committed writes nothing).
    fn commit(
        &mut self,
        chunk: ChunkId,
        attempt: AttemptId,
        rows: Range<u64>,
    ) -> Result<(), Error> {
        let Some(mut preds) = self.results.remove(&attempt) else {
            return Err(Error::Failed(format!(
                "chunk {chunk}: attempt {attempt} committed without results (scheduler and coordinator disagree)"
            )));
        };
        let need = (rows.end - rows.start) as usize;
        if preds.len() < need {
            return Err(Error::Failed(format!(
                "chunk {chunk} (rows {}..{}): worker returned {} predictions, {need} needed",
                rows.start,
                rows.end,
                preds.len()
            )));
        }
        preds.truncate(need);
        let ids = self
            .p
            .index
            .ids
            .slice(rows.start as usize..rows.end as usize);
        tokio::task::block_in_place(|| {
            self.store
                .commit_chunk(self.version, rows, &ids, &preds, unix_now())
        })
        .map_err(store_err)?;
        Ok(())
    }

    /// One event of a worker.
    pub fn on_fleet_event(&mut self, ev: FleetEvent) {
        match ev {
            FleetEvent::Message { slot, msg } => self.on_worker_message(slot, msg),
            FleetEvent::Stderr { slot, line } => {
                self.out.log(&self.workers.slot_name(slot), line);
            }
            FleetEvent::Exited { slot, reason } => self.on_worker_exit(slot, reason),
        }
    }

    /// A message from the worker of `slot`.
    fn on_worker_message(&mut self, slot: SlotId, msg: FromWorker) {
        let now = self.out.now();
        match msg {
            FromWorker::Hello { .. } => self.on_hello(slot, &msg),
            FromWorker::Loaded {
                backend, adapter, ..
            } => {
                let host = self.workers.host_of(slot);
                self.workers.slots.get_mut(&slot).expect("known slot").up = true;
                let h = &mut self.workers.hosts[host as usize];
                if h.backend.is_empty() {
                    h.backend = backend.clone();
                    h.adapter = adapter.clone();
                    self.out.send(Event::Host {
                        host,
                        state: HostState::Running,
                        backend: Some(backend),
                        adapter: Some(adapter),
                    });
                }
                self.sched.handle(now, Input::SlotUp { slot, host });
            }
            FromWorker::Progress { attempt, rows_done } => {
                self.sched
                    .handle(now, Input::Progress { attempt, rows_done });
            }
            FromWorker::Result {
                attempt,
                predictions,
            } => {
                self.results.insert(attempt, predictions);
                self.sched.handle(now, Input::Finished { attempt });
            }
            FromWorker::Error {
                attempt: Some(attempt),
                message,
            } => {
                let source = self.workers.slot_name(slot);
                self.out
                    .log(&source, format!("attempt {attempt} failed: {message}"));
                self.host_error(slot, message.clone());
                self.retries += 1;
                self.sched.handle(
                    now,
                    Input::Failed {
                        attempt,
                        error: message,
                    },
                );
            }
            FromWorker::Error {
                attempt: None,
                message,
            } => {
                let source = self.workers.slot_name(slot);
                self.out
                    .log(&source, format!("worker cannot run: {message}"));
                self.host_error(slot, message);
                self.workers.kill(slot);
            }
        }
    }

    /// A worker said hello: checks its protocol version and sends it the
    /// model to load.
    fn on_hello(&mut self, slot: SlotId, hello: &FromWorker) {
        if let Err(e) = proto::check_hello(hello) {
            self.host_error(slot, e);
            self.workers.kill(slot);
            return;
        }
        let host = &self.workers.hosts[self.workers.host_of(slot) as usize];
        let cfg = &host.cfg;
        let threads = cfg.threads.unwrap_or_else(|| local_threads(cfg.slots));
        let path = host
            .link
            .as_ref()
            .ok()
            .and_then(|l| l.model_path())
            .unwrap_or_else(|| self.p.job.model.weights.display().to_string());
        let load = ToWorker::Load {
            spec: self.p.job.model.spec.clone(),
            sha256: self.p.weights_sha256.clone(),
            path,
            num_features: self.p.dataset.num_features(),
            device: cfg.device,
            threads,
        };
        let _ = self.workers.send(slot, &load);
    }

    fn host_error(&mut self, slot: SlotId, message: String) {
        let host = self.workers.host_of(slot);
        self.workers.hosts[host as usize].last_error = Some(message);
    }

    /// The worker of `slot` is gone: its running attempt fails over, and a
    /// worker that had come up is replaced.
    fn on_worker_exit(&mut self, slot: SlotId, reason: String) {
        if !self.workers.mark_down(slot) {
            return;
        }
        let source = self.workers.slot_name(slot);
        let host = self.workers.host_of(slot);
        let why = format!("worker {reason}");
        let h = &mut self.workers.hosts[host as usize];
        h.last_error.get_or_insert_with(|| why.clone());
        self.out.log(&source, why.clone());
        if self.workers.slots[&slot].up {
            let now = self.out.now();
            self.sched
                .handle(now, Input::SlotDown { slot, reason: why });
        }
        // The replacement gets a slot of its own: late events of the dead
        // worker then find their old slot down and are ignored.
        if let Some(note) = self.workers.replace(slot, &self.out) {
            self.out.log(&source, note);
        }
        if self.workers.host_down(host) {
            self.out.send(Event::Host {
                host,
                state: HostState::Lost(reason),
                backend: None,
                adapter: None,
            });
        }
    }

    /// A wish of the user (TUI keys).
    pub fn on_control(&mut self, ctl: Control) -> Result<(), Error> {
        let now = self.out.now();
        match ctl {
            Control::Pause(on) => self.sched.handle(now, Input::Pause(on)),
            Control::Backup(chunk) => self.sched.handle(now, Input::RequestBackup { chunk }),
            Control::Cancel => return Err(self.stopped("cancelled")),
        }
        Ok(())
    }

    /// The run stops early (`why`: cancelled, interrupted); the version stays
    /// resumable.
    pub fn stopped(&self, why: &str) -> Error {
        Error::Failed(format!(
            "{why}; version {} is kept unfinished: `herd run {} --resume` finishes it",
            self.version,
            self.job_file.display()
        ))
    }
}

/// Starts a new version of the job in the store.
fn begin_version(store: &Store, p: &Prepared) -> Result<u64, Error> {
    store
        .begin_version(NewVersion {
            job: p.job.name.clone(),
            model_version: p.job.model_version.clone(),
            model_kind: p.job.model.spec.kind_name().to_string(),
            rows: p.index.ids.len() as u64,
            ttl_secs: p.job.output.ttl_secs,
            fingerprint: p.fingerprint.clone(),
            created: unix_now(),
            hosts: p.fleet.hosts.iter().map(|h| h.name.clone()).collect(),
        })
        .map_err(store_err)
}

/// The job's straggler settings as a scheduling policy; chunks of about
/// [`DEFAULT_CHUNK_SECONDS`] of one slot's work unless the job says.
fn policy(p: &Prepared) -> Policy {
    let total_slots: u64 = p.fleet.hosts.iter().map(|h| h.slots as u64).sum();
    let total_cost: u64 = p.costs.iter().sum();
    let target_chunk_cost = p.job.partition.target_chunk_cost.unwrap_or_else(|| {
        let by_time = (DEFAULT_CHUNK_SECONDS * ASSUMED_SLOT_MACS_PER_S) as u64;
        let by_count = total_cost / (total_slots.max(1) * MIN_CHUNKS_PER_SLOT);
        by_time.min(by_count).max(1)
    });
    Policy {
        pull: true,
        cost_aware: true,
        split_running: p.job.stragglers.split_running,
        speculation: p.job.stragglers.speculation,
        max_attempts: p.job.stragglers.max_attempts,
        target_chunk_cost,
    }
}

fn started_event(
    p: &Prepared,
    version: u64,
    sched: &Scheduler,
    live_version: Option<u64>,
    resumed: bool,
) -> Event {
    let hosts = p
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
    Event::Started {
        job: p.job.name.clone(),
        model: p.model.describe(),
        version,
        rows_total: p.index.ids.len() as u64,
        chunks_total: sched.snapshot(Duration::ZERO).chunks_total,
        hosts,
        live_version,
        resumed,
    }
}

/// Threads per local worker when the host does not say: cores / slots.
fn local_threads(slots: u32) -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    (cores / slots.max(1)).max(1)
}
