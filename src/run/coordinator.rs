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
use crate::model::{EntityIds, Predictions};
use crate::proto::{self, ChunkRows, ToWorker};
use crate::sched::{AttemptId, ChunkId, Command, HostId, Input, Policy, Scheduler, SlotId};
use crate::store::{self, NewVersion, RunLock, Store};

use super::commit::{Committer, ScanAfter};
use super::event::{Event, HostInfo};
use super::messages::Expect;
use super::publish::Publisher;
use super::read::{ReadDone, ReadError, ReadJob, Reader};
use super::validation::SpotCheck;
use super::workers::{Prestarted, Workers};
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
    pub chunk: ChunkId,
    pub rows: Range<u64>,
    /// Rows (from `rows.start`) the worker was told to stop at, if it was.
    pub stop_at: Option<u64>,
    pub state: AttemptState,
    /// Its `Run` went to the worker (false while its rows are being read).
    pub sent: bool,
}

/// Where an attempt stands, as far as its worker's messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AttemptState {
    /// Sent; progress and one result or error are expected.
    Running,
    /// Told to cancel: late messages of it are expected and ignored.
    Cancelled,
    /// Its result or error arrived; any further message of it is a violation.
    Over,
}

pub(super) struct Coordinator {
    pub p: Prepared,
    /// The job file, for the `--resume` hint.
    job_file: PathBuf,
    pub store: Store,
    /// Writes committed chunks on a thread of its own.
    pub(super) committer: Committer,
    /// Reads the rows of chunks for workers that do not read their own.
    reader: Reader,
    /// The gate's spot check, computed while the run goes on.
    pub spot: SpotCheck,
    /// The store's run lock, released when the coordinator is dropped.
    _run_lock: RunLock,
    pub version: u64,
    pub live_before: Option<u64>,
    pub sched: Scheduler,
    pub workers: Workers,
    pub(super) attempts: BTreeMap<AttemptId, AttemptRt>,
    /// Results that arrived and wait for their commit.
    pub(super) results: BTreeMap<AttemptId, Predictions>,
    pub out: Publisher,
    /// Attempts that failed with an error from their worker.
    pub retries: u64,
    /// When the first chunk was handed out and when the last was committed.
    pub first_launch: Option<Duration>,
    pub all_committed: Option<Duration>,
    /// Input bytes read and sent by the coordinator (rows or descriptors).
    pub input_bytes_coordinator: u64,
    /// The chunk each worker reading its own rows was last told to read
    /// ahead (`Prefetch`), by slot.
    pub(super) hints: BTreeMap<SlotId, ChunkId>,
    /// What every result must look like.
    pub(super) expect: Expect,
    /// Why the run must stop, found by a handler that cannot return it (an
    /// invalid feature in the input); [`Coordinator::run_commands`] returns it.
    fatal: Option<Error>,
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
    /// starts every worker; worker events go to `fleet_tx`, finished chunk
    /// reads to `reads_tx` (for [`Coordinator::on_read`]).
    pub fn start(
        p: Prepared,
        job_file: PathBuf,
        resume: bool,
        out: Publisher,
        fleet_tx: mpsc::UnboundedSender<FleetEvent>,
        reads_tx: mpsc::UnboundedSender<ReadDone>,
        prestarted: Prestarted,
    ) -> Result<Coordinator, Error> {
        let workers = |p: &Prepared, model: &ModelFile, out: &Publisher| {
            Workers::start(&p.fleet, model, fleet_tx, out, prestarted)
        };
        Coordinator::open(p, job_file, resume, out, workers, reads_tx)
    }

    /// [`Coordinator::start`] with the workers made by `workers` (real
    /// processes, or in-memory links for a benchmark).
    pub fn open(
        p: Prepared,
        job_file: PathBuf,
        resume: bool,
        out: Publisher,
        workers: impl FnOnce(&Prepared, &ModelFile, &Publisher) -> Workers,
        reads_tx: mpsc::UnboundedSender<ReadDone>,
    ) -> Result<Coordinator, Error> {
        let store_dir = p.job.output.store.clone();
        let store = Store::open(&store_dir).map_err(|e| match e {
            // The job names something that is not a store: a bad config.
            store::Error::NotADirectory { .. }
            | store::Error::NotAStore { .. }
            | store::Error::NewerFormat { .. } => Error::Config(format!(
                "{}: [output] store = '{}': {e}",
                job_file.display(),
                store_dir.display()
            )),
            e => Error::Failed(format!("store '{}': {e}", store_dir.display())),
        })?;
        // Held until the coordinator is dropped: one coordinator per store.
        let run_lock = store.lock_run().map_err(store_err)?;
        let live_before = store.live().map_err(store_err)?;
        let resumed = match resume {
            true => Some(find_resumable(&store, &p, &store_dir)?),
            false => None,
        };
        let (version, done) = match &resumed {
            Some(rec) => (
                rec.version,
                store.committed_ranges(rec.version).map_err(store_err)?,
            ),
            None => (begin_version(&store, &p)?, Vec::new()),
        };
        warm_retention(&store, p.job.output.keep_versions as usize, version);
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
        if let Some(first) = p.skipped.first() {
            out.log(
                "run",
                format!(
                    "[input] on_invalid = \"skip\": leaving {} entities with invalid features out \
                     of version {version} (the first: row {}, column '{}' is {}); the report lists them",
                    p.skipped.len(),
                    first.row,
                    first.column,
                    first.what
                ),
            );
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
            companions: p.companions.clone(),
        };
        let expect = Expect::of(&p);
        let mut workers = workers(&p, &model, &out);
        for h in &mut workers.hosts {
            h.reads_input =
                super::workers::worker_reads(p.job.input.read, &p.job.input.path, &h.cfg);
        }
        let committer = Committer::start(store.clone(), scan_after(&p));
        Ok(Coordinator {
            reader: Reader::start(p.dataset.clone(), reads_tx),
            spot: SpotCheck::start(&p, version),
            p,
            job_file,
            committer,
            store,
            _run_lock: run_lock,
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
            input_bytes_coordinator: 0,
            hints: BTreeMap::new(),
            expect,
            fatal: None,
        })
    }

    /// The slot an attempt in flight was handed to.
    pub fn attempt_slot(&self, attempt: AttemptId) -> Option<SlotId> {
        self.attempts.get(&attempt).map(|a| a.slot)
    }

    /// Every row is committed.
    pub fn done(&self) -> bool {
        self.all_committed.is_some()
    }

    /// Carries out every command the scheduler has queued.
    pub fn run_commands(&mut self) -> Result<(), Error> {
        self.committer.check().map_err(Error::Failed)?;
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
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

    /// Publishes what changed in the scheduler's view for the UI.
    pub fn publish(&mut self) {
        let now = self.out.now();
        self.out.send(Event::Changes(self.sched.changes(now)));
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
                if let Some(a) = self.attempts.get_mut(&attempt) {
                    if a.state == AttemptState::Running {
                        a.state = AttemptState::Cancelled;
                    }
                    if a.sent {
                        let _ = self.workers.send(a.slot, &ToWorker::Cancel { attempt });
                    }
                }
            }
            Command::StopAt { attempt, row } => {
                if let Some(a) = self.attempts.get_mut(&attempt) {
                    let rows = row.saturating_sub(a.rows.start);
                    a.stop_at = Some(a.stop_at.map_or(rows, |s| s.min(rows)));
                    // An attempt still being read is told when its rows go.
                    if a.sent {
                        let _ = self
                            .workers
                            .send(a.slot, &ToWorker::StopAt { attempt, rows });
                    }
                }
            }
            Command::Commit {
                chunk,
                attempt,
                rows,
            } => self.commit(chunk, attempt, rows)?,
            Command::Done => {
                tokio::task::block_in_place(|| self.committer.flush()).map_err(Error::Failed)?;
                self.all_committed = Some(self.out.now());
            }
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

    /// Sends the chunk's rows to the slot's worker: described for a worker
    /// that reads its own, else read (on the read thread) and sent when
    /// [`Coordinator::on_read`] gets them.
    fn launch(
        &mut self,
        attempt: AttemptId,
        chunk: ChunkId,
        slot: SlotId,
        rows: Range<u64>,
    ) -> Result<(), Error> {
        let now = self.out.now();
        let host = self.workers.host_of(slot);
        // A chunk holding rows left out by on_invalid = "skip" is read here,
        // where those rows are zeroed before the worker sees them.
        let worker_reads = self.workers.hosts[host as usize].reads_input
            && self.p.skipped_in(&rows).next().is_none();
        self.first_launch.get_or_insert(now);
        // A worker told to read this chunk ahead reads it for nothing now.
        self.hints.retain(|_, hinted| *hinted != chunk);
        self.attempts.insert(
            attempt,
            AttemptRt {
                slot,
                chunk,
                rows: rows.clone(),
                stop_at: None,
                state: AttemptState::Running,
                sent: false,
            },
        );
        if !worker_reads {
            let zeroed = self.p.skipped_in(&rows).collect();
            let job = ReadJob {
                attempt,
                chunk,
                rows,
                zeroed,
            };
            return self.reader.read(job).map_err(Error::Failed);
        }
        let segments = self.p.dataset.segments(rows, &self.p.index.ids);
        let run = ToWorker::Run {
            chunk,
            attempt,
            rows: ChunkRows::Read(segments),
        };
        let frame =
            proto::encode(&run).map_err(|e| Error::Failed(format!("chunk {chunk}: {e}")))?;
        self.input_bytes_coordinator += frame.len() as u64;
        self.send_run(attempt, frame);
        self.hint(slot);
        Ok(())
    }

    /// Tells the worker on `slot`, which reads its own rows and was just
    /// handed an attempt, the rows it will likely be handed next, to read
    /// while it scores: the first chunk not yet handed out that no other
    /// worker was told of (slots of equal speed finish in the order they
    /// were launched, and take chunks in that order). Only a hint: a `Run`
    /// for other rows makes the worker drop what it read ahead (at most
    /// [`crate::worker::READ_AHEAD_BATCHES`] batches and the one it is
    /// decoding).
    fn hint(&mut self, slot: SlotId) {
        self.hints.remove(&slot);
        let told: std::collections::BTreeSet<ChunkId> = self.hints.values().copied().collect();
        let p = &self.p;
        let next = self
            .sched
            .upcoming()
            .find(|(chunk, rows)| !told.contains(chunk) && p.skipped_in(rows).next().is_none());
        let Some((chunk, rows)) = next else {
            return;
        };
        let segments = p.dataset.segments(rows, &p.index.ids);
        let Ok(frame) = proto::encode(&ToWorker::Prefetch { segments }) else {
            return;
        };
        self.input_bytes_coordinator += frame.len() as u64;
        if self.workers.send_frame(slot, frame).is_ok() {
            self.hints.insert(slot, chunk);
        }
    }

    /// The rows of an attempt were read: its `Run` goes to the worker, with
    /// the stop it was told meanwhile. An attempt cancelled (or whose worker
    /// went) while its rows were read is not sent.
    pub fn on_read(&mut self, done: ReadDone) -> Result<(), Error> {
        self.reader.taken();
        let ReadDone { attempt, frame } = done;
        let (frame, bytes) = match frame {
            Ok(read) => read,
            Err(ReadError::Failed(e)) => return Err(Error::Failed(e)),
            Err(ReadError::Invalid(e)) => {
                self.refuse_input(&e);
                return Err(self.fatal.take().expect("refused"));
            }
        };
        let Some(a) = self.attempts.get(&attempt) else {
            return Ok(());
        };
        if a.state != AttemptState::Running {
            return Ok(());
        }
        self.input_bytes_coordinator += bytes;
        self.send_run(attempt, frame);
        Ok(())
    }

    /// Reads asked for and not yet handled by [`Coordinator::on_read`].
    pub fn reads_pending(&self) -> usize {
        self.reader.pending()
    }

    /// Hands the encoded `Run` of `attempt` to its worker, then the stop it
    /// was told before; a worker gone fails the attempt.
    fn send_run(&mut self, attempt: AttemptId, frame: Vec<u8>) {
        let a = self.attempts.get_mut(&attempt).expect("a launched attempt");
        a.sent = true;
        let (slot, stop_at) = (a.slot, a.stop_at);
        let mut sent = self.workers.send_frame(slot, frame);
        if let (Ok(()), Some(rows)) = (&sent, stop_at) {
            sent = self.workers.send(slot, &ToWorker::StopAt { attempt, rows });
        }
        if let Err(error) = sent {
            let now = self.out.now();
            self.sched.handle(now, Input::Failed { attempt, error });
        }
    }

    /// Queues the attempt's predictions of `rows` and the chunk's marker for
    /// one store transaction (a range already committed writes nothing); the
    /// commit thread writes it while the loop goes on.
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
        let mut ids = self
            .p
            .index
            .ids
            .slice(rows.start as usize..rows.end as usize);
        let skipped: Vec<usize> = self
            .p
            .skipped_in(&rows)
            .map(|r| (r - rows.start) as usize)
            .collect();
        if !skipped.is_empty() {
            (ids, preds) = leave_out(&ids, &preds, &skipped);
        }
        let left_out = skipped.len() as u64;
        let version = self.version;
        tokio::task::block_in_place(|| {
            self.committer
                .commit(version, rows, left_out, ids, preds, unix_now())
        })
        .map_err(Error::Failed)
    }

    /// The input holds a null, NaN or infinite feature (`e`, a read of it
    /// here) under `on_invalid = "error"`: the run stops (exit 2, naming the
    /// file, column and row), and the version begun for it is dropped, as
    /// if the value had been found before it was begun.
    pub(super) fn refuse_input(&mut self, e: &crate::data::Error) {
        let (path, column, row, what) = e.invalid_feature().expect("an invalid feature");
        let message = super::prepare::invalid_message(&self.p.job, path, column, row, &what);
        let flushed = tokio::task::block_in_place(|| self.committer.flush());
        let dropped =
            flushed.and_then(|()| self.store.drop_one(self.version).map_err(|e| e.to_string()));
        if let Err(why) = dropped {
            self.out.log(
                "run",
                format!("version {} is left unfinished: {why}", self.version),
            );
        }
        self.fatal.get_or_insert(Error::Config(message));
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

/// The unfinished version `--resume` continues: the newest `building`
/// version of the job whose fingerprint matches. None at all, or none that
/// matches (naming the settings that changed since the newest was begun),
/// is the user's mistake (exit 2): `--resume` never silently starts afresh.
fn find_resumable(
    store: &Store,
    p: &Prepared,
    store_dir: &std::path::Path,
) -> Result<crate::store::VersionRecord, Error> {
    let mut building: Vec<_> = store
        .versions()
        .map_err(store_err)?
        .into_iter()
        .filter(|r| r.status == crate::store::Status::Building && r.job == p.job.name)
        .collect();
    building.sort_by_key(|r| std::cmp::Reverse(r.version));
    if let Some(i) = building.iter().position(|r| r.fingerprint == p.fingerprint) {
        let found = building.swap_remove(i);
        // Versions only grow: one begun before the live version would, once
        // flipped, put older predictions in front of newer ones.
        if let Some(live) = store.live().map_err(store_err)?
            && live > found.version
        {
            return Err(Error::Config(format!(
                "--resume: version {} of job '{}' was begun before version {live}, which is \
                 live now; finishing it would replace newer predictions with older ones, so \
                 it is not resumed (run without --resume to build a new version; `herd store \
                 gc` drops the unfinished one)",
                found.version, p.job.name
            )));
        }
        return Ok(found);
    }
    let Some(newest) = building.first() else {
        return Err(Error::Config(format!(
            "--resume: job '{}' has no unfinished version in store '{}'; nothing to resume \
             (run without --resume to build a new version)",
            p.job.name,
            store_dir.display()
        )));
    };
    let changed = match super::prepare::changed_settings(&newest.fingerprint, &p.fingerprint) {
        Some(list) => super::prepare::describe_changed(&list, &p.dataset),
        None => "its fingerprint is in an older format that does not name settings".into(),
    };
    Err(Error::Config(format!(
        "--resume: version {} of job '{}' was begun with different settings ({changed} changed \
         since); its rows would mix two configurations, so it is not resumed (restore those \
         settings to resume it, or run without --resume to build a new version)",
        newest.version, p.job.name
    )))
}

/// `ids` and `preds` without the rows at `drop` (ascending offsets).
fn leave_out(ids: &EntityIds, preds: &Predictions, drop: &[usize]) -> (EntityIds, Predictions) {
    let keep: Vec<usize> = (0..ids.len())
        .filter(|i| drop.binary_search(i).is_err())
        .collect();
    let ids = match ids {
        EntityIds::Int(v) => EntityIds::Int(keep.iter().map(|&i| v[i]).collect()),
        EntityIds::Str(v) => EntityIds::Str(keep.iter().map(|&i| v[i].clone()).collect()),
    };
    let preds = match preds {
        Predictions::Scores { width, values } => Predictions::Scores {
            width: *width,
            values: keep
                .iter()
                .flat_map(|&i| values[i * width..(i + 1) * width].iter().copied())
                .collect(),
        },
        Predictions::TopK {
            offsets,
            items,
            scores,
        } => {
            let mut out = (vec![0u32], Vec::new(), Vec::new());
            for &i in &keep {
                let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
                out.1.extend_from_slice(&items[a..b]);
                out.2.extend_from_slice(&scores[a..b]);
                out.0.push(out.1.len() as u32);
            }
            Predictions::TopK {
                offsets: out.0,
                items: out.1,
                scores: out.2,
            }
        }
    };
    (ids, preds)
}

/// Whether the commit thread reads each chunk again for the gate: where
/// every input id strictly ascends in input order ([`ScanAfter`]).
fn scan_after(p: &Prepared) -> Option<ScanAfter> {
    p.ids_ascend.then(|| ScanAfter {
        top_k: p.job.model.spec.top_k(),
    })
}

/// Reads into the page cache, on a thread of its own while the run goes
/// on, the pages retention reads at the end of the run to drop the
/// versions it lets go once `version` is live ([`Store::warm_retention`]).
/// A read that fails is left unsaid: it only means the drop reads them.
fn warm_retention(store: &Store, keep: usize, version: u64) {
    let store = store.clone();
    let spawned = std::thread::Builder::new()
        .name("herd-warm".into())
        .spawn(move || store.warm_retention(keep, version));
    drop(spawned);
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
    let total_cost = p.costs.total();
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
