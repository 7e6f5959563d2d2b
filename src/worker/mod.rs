//! The worker loop (`herd worker`): speaks the protocol on stdin/stdout.
//!
//! Hello first, then load the model once, then run chunks in small batches so
//! that progress flows back and a `StopAt`, `Cancel` or `Shutdown` takes effect
//! between batches. A reader thread turns stdin frames into a channel; stdin
//! closing (the coordinator went away) ends the worker, so no orphan is left.
//! Logs go to stderr, which the coordinator prefixes with the host and slot.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::config::{Device, Input};
use crate::data::{Dataset, Segment};
use crate::model::{Model, ModelSpec, Predictions, Rows};
use crate::proto::{self, ChunkRows, FromWorker, ToWorker};
use crate::sched::AttemptId;
use crate::test_hooks::WorkerHooks;

mod crew;

/// Progress is reported about this many times per chunk.
const PROGRESS_STEPS: usize = 16;
/// A batch never holds fewer rows than this (unless the chunk is smaller).
const MIN_BATCH_ROWS: usize = 256;
/// Batches a worker reading its own rows decodes ahead of the one it is
/// scoring, at most: reading and scoring overlap, and the rows held are this
/// many batches plus the one being decoded and the one being scored (a
/// batch is 1/[`PROGRESS_STEPS`] of the chunk, at most
/// [`crate::data::MAX_BATCH_ROWS`] rows).
pub const READ_AHEAD_BATCHES: usize = 2;

pub use crate::test_hooks::{FAULT_ENV, SLOWDOWN_ENV};

enum Backend {
    Cpu {
        threads: usize,
    },
    Gpu {
        gpu: Box<crate::gpu::Gpu>,
        model: Box<crate::gpu::GpuModel>,
    },
}

struct Loaded {
    model: Model,
    /// Feature columns the model was loaded for; every `Run` must carry them.
    num_features: usize,
    backend: Backend,
    /// The input, for chunks sent as descriptors: the job's settings and
    /// whether the model reads history; opened while the model loads (or,
    /// when that failed, at the first such chunk, which reports why).
    input: Option<(Input, bool)>,
    dataset: Option<Arc<Dataset>>,
}

impl Loaded {
    /// The input opened for chunks sent as descriptors.
    fn dataset(&mut self) -> Result<Arc<Dataset>, String> {
        let Some((input, needs_history)) = &self.input else {
            return Err("chunk described by part files, but no input was given at load".into());
        };
        if self.dataset.is_none() {
            let ds = Dataset::open(input, *needs_history).map_err(|e| format!("input: {e}"))?;
            self.dataset = Some(Arc::new(ds));
        }
        Ok(self.dataset.clone().expect("opened above"))
    }

    /// How this worker cuts an attempt into batches.
    fn batching(&self) -> Batching {
        Batching {
            block_rows: self.model.block_rows(),
            threads: match self.backend {
                Backend::Cpu { threads } => threads,
                Backend::Gpu { .. } => 1,
            },
        }
    }

    /// Starts reading `segments` for a `Run` that may follow (a `Prefetch`
    /// hint); nothing when this worker is not reading its own rows.
    fn read_ahead(&mut self, segments: Vec<Segment>) -> Option<Reading> {
        let ds = self.dataset().ok()?;
        Some(Reading::start(ds, segments, self.batching(), true))
    }
}

/// Runs the worker on this process's stdin and stdout until shutdown or EOF.
pub fn main() -> Result<(), String> {
    crate::memory::keep_freed_memory(KEEP_TRIM_BYTES);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let rx = read_stdin();
    let hooks = WorkerHooks::from_env();
    hooks.wait_at_barrier();
    let hello = FromWorker::Hello {
        version: proto::PROTOCOL_VERSION,
        host: hostname(),
        pid: std::process::id(),
    };
    send(&mut out, &hello)?;
    let mut loaded: Option<Loaded> = None;
    let mut queue: std::collections::VecDeque<ToWorker> = Default::default();
    // The rows of the latest `Prefetch`, being read for the `Run` that
    // likely follows.
    let mut ahead: Option<Reading> = None;
    // Hinted rows scored before their `Run` came, kept for it.
    let mut scored_ahead: Option<ScoredAhead> = None;
    loop {
        let msg = match queue.pop_front() {
            Some(m) => m,
            None => match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => return Ok(()), // coordinator gone
                // Idle, with rows read on a hint: they are scored while
                // their `Run` is on its way (the coordinator sends it once
                // the last result is in).
                Err(TryRecvError::Empty) if loaded.is_some() && ahead.is_some() => {
                    let l = loaded.as_mut().expect("loaded");
                    let reading = ahead.take().expect("a hinted read");
                    let mut ctl = Control::new(l, 0, &rx, &mut queue, &mut out, &hooks, &mut ahead);
                    ctl.hinted = Some(reading.segments.clone());
                    let (outcome, input_bytes, _) = score_reading(l, reading, &mut ctl)?;
                    // Still set when no `Run` came for them meanwhile.
                    let (hinted, attempt) = (ctl.hinted.take(), ctl.attempt);
                    match (outcome, hinted) {
                        (Attempt::Shutdown, _) => return Ok(()),
                        // The `Run` came meanwhile: the attempt is done.
                        (outcome, None) => {
                            report_attempt(outcome, attempt, input_bytes, true, &hooks, &mut out)?
                        }
                        (Attempt::Finished(predictions), Some(segments)) => {
                            scored_ahead = Some(ScoredAhead {
                                segments,
                                predictions,
                                input_bytes,
                            });
                        }
                        // Failed, invalid or let go: a `Run` for these rows
                        // reads them again and says what it finds.
                        _ => {}
                    }
                    continue;
                }
                Err(TryRecvError::Empty) => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()), // coordinator gone
                },
            },
        };
        let reply = match msg {
            ToWorker::Load {
                spec,
                sha256,
                path,
                num_features,
                device,
                threads,
                input,
                needs_history,
            } => {
                // The input's part files are listed and their footers read
                // while the model loads.
                let opening = input
                    .as_deref()
                    .cloned()
                    .map(|input| std::thread::spawn(move || Dataset::open(&input, needs_history)));
                let loading = load(&spec, &sha256, &path, num_features, device, threads);
                let opened = opening.and_then(|h| h.join().ok()?.ok());
                match loading {
                    Ok(mut l) => {
                        l.input = input.map(|i| (*i, needs_history));
                        l.dataset = opened.map(Arc::new);
                        let reply = loaded_reply(&l.backend, l.model.describe());
                        loaded = Some(l);
                        Some(reply)
                    }
                    Err(message) => Some(FromWorker::Error {
                        attempt: None,
                        message,
                    }),
                }
            }
            ToWorker::Run {
                chunk: _,
                attempt,
                rows,
            } => {
                let Some(l) = loaded.as_mut() else {
                    let message = "chunk sent before the model was loaded".into();
                    send(
                        &mut out,
                        &FromWorker::Error {
                            attempt: Some(attempt),
                            message,
                        },
                    )?;
                    continue;
                };
                // Rows scored ahead on a hint for exactly these segments.
                let done = scored_ahead.take();
                if let (ChunkRows::Read(segments), Some(done)) = (&rows, done)
                    && done.segments == *segments
                {
                    let rows_done = done.predictions.len() as u64;
                    send(&mut out, &FromWorker::Progress { attempt, rows_done })?;
                    let finished = Attempt::Finished(done.predictions);
                    report_attempt(finished, attempt, done.input_bytes, true, &hooks, &mut out)?;
                    continue;
                }
                // A described chunk's rows: those read ahead on a hint
                // for exactly these segments, else read from now on.
                let given = match rows {
                    ChunkRows::Rows(rows) => Given::Rows(rows),
                    ChunkRows::Read(segments) => Given::Read(match ahead.take() {
                        Some(r) if r.segments == segments => Ok(r),
                        _ => l
                            .dataset()
                            .map(|ds| Reading::start(ds, segments, l.batching(), false)),
                    }),
                };
                let mut ctl =
                    Control::new(l, attempt, &rx, &mut queue, &mut out, &hooks, &mut ahead);
                let (outcome, input_bytes, read_ahead) = match given {
                    Given::Rows(rows) => (score_rows(l, &rows, &mut ctl)?, 0, false),
                    Given::Read(Ok(reading)) => score_reading(l, reading, &mut ctl)?,
                    Given::Read(Err(e)) => (Attempt::Failed(e), 0, false),
                };
                if let Attempt::Shutdown = outcome {
                    return Ok(());
                }
                report_attempt(outcome, attempt, input_bytes, read_ahead, &hooks, &mut out)?;
                None
            }
            ToWorker::Prefetch { segments } => {
                // Replacing an earlier hint stops its reader.
                ahead = loaded.as_mut().and_then(|l| l.read_ahead(segments));
                None
            }
            ToWorker::Probe { device, threads } => Some(probe(device, threads)),
            ToWorker::StopAt { .. } | ToWorker::Cancel { .. } => None, // for an attempt already done
            ToWorker::Shutdown => return Ok(()),
        };
        if let Some(reply) = reply {
            send(&mut out, &reply)?;
        }
    }
}

/// Rows read and scored on a hint before their `Run` came.
struct ScoredAhead {
    segments: Vec<Segment>,
    predictions: Predictions,
    /// Bytes of rows read for them.
    input_bytes: u64,
}

/// Says what became of `attempt`, which ended with `outcome` (not a
/// shutdown); nothing for a cancelled one.
fn report_attempt(
    outcome: Attempt,
    attempt: AttemptId,
    input_bytes: u64,
    read_ahead: bool,
    hooks: &WorkerHooks,
    out: &mut impl Write,
) -> Result<(), String> {
    let reply = match outcome {
        Attempt::Finished(predictions) => {
            for forged in hooks.forged_results(attempt, &predictions) {
                send(out, &forged)?;
            }
            Some(FromWorker::Result {
                attempt: hooks.result_attempt(attempt),
                predictions,
                input_bytes,
                read_ahead,
                peak_rss_bytes: peak_rss_bytes(),
            })
        }
        Attempt::Invalid(row) => Some(FromWorker::InvalidInput { attempt, row }),
        Attempt::Failed(message) => Some(FromWorker::Error {
            attempt: Some(attempt),
            message,
        }),
        Attempt::Cancelled | Attempt::Shutdown => None,
    };
    match reply {
        Some(reply) => send(out, &reply),
        None => Ok(()),
    }
}

/// The worker's heap is trimmed only above this ([`memory::keep_freed_memory`]):
/// every batch allocates a few MiB of rows and scores, which would otherwise
/// come back as fresh pages each time (54,000 page faults in a 1M-row mlp
/// run).
///
/// [`memory::keep_freed_memory`]: crate::memory::keep_freed_memory
pub const KEEP_TRIM_BYTES: i32 = 256 << 20;

/// A thread turning stdin's frames into a channel; the channel closes when
/// stdin does (the coordinator went away) or a frame is bad.
fn read_stdin() -> Receiver<ToWorker> {
    let (tx, rx) = mpsc::channel::<ToWorker>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            match read_frame(&mut stdin) {
                Ok(Some(msg)) => {
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("worker: bad frame from coordinator: {e}");
                    break;
                }
            }
        }
    });
    rx
}

/// `Loaded` for a model loaded on `backend`.
fn loaded_reply(backend: &Backend, model: String) -> FromWorker {
    let (backend, adapter) = match backend {
        Backend::Cpu { threads } => describe_backend(None, *threads),
        Backend::Gpu { gpu, .. } => describe_backend(Some(gpu), 0),
    };
    FromWorker::Loaded {
        backend,
        adapter,
        model,
    }
}

/// Which backend `device` gives here, without a model (`herd hosts check`).
fn probe(device: Device, threads: u32) -> FromWorker {
    match choose_backend(device, threads.max(1) as usize) {
        Ok(b) => {
            let (backend, adapter) = match &b {
                Chosen::Cpu { threads } => describe_backend(None, *threads),
                Chosen::Gpu(gpu) => describe_backend(Some(gpu), 0),
            };
            FromWorker::Loaded {
                backend,
                adapter,
                model: String::new(),
            }
        }
        Err(message) => FromWorker::Error {
            attempt: None,
            message,
        },
    }
}

enum Attempt {
    Finished(Predictions),
    Cancelled,
    /// The attempt's row (from its first) with a null, NaN or infinite
    /// feature (`on_invalid = "error"`).
    Invalid(u64),
    Failed(String),
    Shutdown,
}

/// What an attempt's scoring loop talks to between batches: the messages
/// that arrive meanwhile, the coordinator, and the test hooks.
struct Control<'a, W: Write> {
    attempt: AttemptId,
    /// Scoring rows read on a hint before their `Run` came: the hinted
    /// segments. `None` once the `Run` for them came (its attempt is
    /// `attempt` from then on), and for every attempt begun by its `Run`.
    /// Nothing is reported while it is set.
    hinted: Option<Vec<Segment>>,
    rx: &'a Receiver<ToWorker>,
    queue: &'a mut std::collections::VecDeque<ToWorker>,
    out: &'a mut W,
    hooks: &'a WorkerHooks,
    /// Rows a `Prefetch` that came meanwhile named, being read for the
    /// next attempt, and what reading them takes.
    ahead: &'a mut Option<Reading>,
    dataset: Option<Arc<Dataset>>,
    batching: Batching,
}

impl<'a, W: Write> Control<'a, W> {
    /// The control of `attempt`, begun by its `Run`, on the worker `l`.
    fn new(
        l: &Loaded,
        attempt: AttemptId,
        rx: &'a Receiver<ToWorker>,
        queue: &'a mut std::collections::VecDeque<ToWorker>,
        out: &'a mut W,
        hooks: &'a WorkerHooks,
        ahead: &'a mut Option<Reading>,
    ) -> Control<'a, W> {
        Control {
            attempt,
            hinted: None,
            rx,
            queue,
            out,
            hooks,
            ahead,
            dataset: l.dataset.clone(),
            batching: l.batching(),
        }
    }
}

/// How a worker cuts an attempt into batches: its model's block of rows
/// and its scoring threads.
#[derive(Clone, Copy)]
struct Batching {
    block_rows: usize,
    threads: usize,
}

impl Batching {
    /// Rows per batch for a chunk of `n` rows: about 1/[`PROGRESS_STEPS`] of
    /// it, but at least [`MIN_BATCH_ROWS`] and a block of the model's for
    /// each thread; the chunk is cut into batches of equal size, so that no
    /// batch is a small remainder that leaves threads idle.
    fn rows(self, n: usize) -> usize {
        let least = (n / PROGRESS_STEPS)
            .max(MIN_BATCH_ROWS)
            .max(self.block_rows * self.threads)
            .max(1);
        let batches = (n / least).max(1);
        n.div_ceil(batches).max(1)
    }
}

/// A chunk's rows as its `Run` gives them.
enum Given {
    Rows(Rows),
    /// Rows the worker reads itself (or why it cannot).
    Read(Result<Reading, String>),
}

/// Rows being read from the input on a reader thread ([`on_a_reader`]),
/// batch by batch, at most [`READ_AHEAD_BATCHES`] ahead of their scoring.
/// Dropping it ends the read at its next batch, and the thread waits for
/// another.
struct Reading {
    segments: Vec<Segment>,
    /// How many rows they hold.
    rows: usize,
    /// The attempt's rows in order, or how reading them ended it.
    batches: Receiver<Result<Rows, Attempt>>,
    /// Bytes of rows read so far ([`Rows::byte_size`]).
    bytes: Arc<AtomicU64>,
    /// Begun on a `Prefetch` hint, before the attempt's `Run` came.
    ahead: bool,
}

impl Reading {
    fn start(ds: Arc<Dataset>, segments: Vec<Segment>, batching: Batching, ahead: bool) -> Reading {
        let n: usize = segments
            .iter()
            .map(|s| s.rows.end.saturating_sub(s.rows.start) as usize)
            .sum();
        let batch = batching.rows(n);
        let (tx, batches) = mpsc::sync_channel::<Result<Rows, Attempt>>(READ_AHEAD_BATCHES);
        let bytes = Arc::new(AtomicU64::new(0));
        let (counted, read) = (bytes.clone(), segments.clone());
        on_a_reader(move || {
            let streamed = ds.stream_segments(&read, batch, |rows| {
                counted.fetch_add(rows.byte_size(), Ordering::Relaxed);
                tx.send(Ok(rows)).is_ok()
            });
            if let Err(e) = streamed {
                let ended = e
                    .invalid_feature()
                    .and_then(|(part, _, row, _)| attempt_row(&read, part, row))
                    .map_or_else(|| Attempt::Failed(format!("input: {e}")), Attempt::Invalid);
                let _ = tx.send(Err(ended));
            }
        });
        Reading {
            segments,
            rows: n,
            batches,
            bytes,
            ahead,
        }
    }
}

/// A read of rows, run on a reader thread.
type ReadJob = Box<dyn FnOnce() + Send>;

/// The worker's reader threads waiting for a read, by the senders of their
/// reads.
static IDLE_READERS: std::sync::Mutex<Vec<mpsc::Sender<ReadJob>>> =
    std::sync::Mutex::new(Vec::new());

/// Runs `read` on a reader thread of the worker that is waiting for one, or
/// on a new one when every reader is busy (an attempt's read and the read
/// ahead of the next run at once). A reader waits for the next read when
/// its read ends (it has handed over its last batch, or its [`Reading`]
/// was dropped), so the same few threads serve every chunk: glibc gives
/// each thread that allocates an arena of its own and keeps what is freed
/// there, and a new thread for each chunk's read left the worker's peak
/// memory anywhere in 56-121 MiB from run to run on the mlp benchmark.
fn on_a_reader(read: impl FnOnce() + Send + 'static) {
    let mut job: ReadJob = Box::new(read);
    loop {
        let idle = IDLE_READERS.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(reader) = idle else { break };
        match reader.send(job) {
            Ok(()) => return,
            Err(mpsc::SendError(back)) => job = back, // that reader is gone
        }
    }
    let (tx, rx) = mpsc::channel::<ReadJob>();
    // As `std::thread::spawn`, a worker that cannot start a thread panics
    // (and its attempt is retried elsewhere).
    std::thread::Builder::new()
        .name("herd-reader".into())
        .spawn(move || {
            let mut next = Some(job);
            while let Some(job) = next.take().or_else(|| rx.recv().ok()) {
                // A read's panic is its own (the decoder's become its
                // error); the thread waits for the next.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                IDLE_READERS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(tx.clone());
            }
        })
        .expect("cannot start a reader thread");
}

/// Scores rows sent in the message, batch by batch.
fn score_rows<W: Write>(
    l: &Loaded,
    rows: &Rows,
    ctl: &mut Control<'_, W>,
) -> Result<Attempt, String> {
    if let Err(problem) = rows.check_shape(l.num_features) {
        let attempt = ctl.attempt;
        return Ok(Attempt::Failed(format!(
            "malformed rows for attempt {attempt}: {problem}"
        )));
    }
    let n = rows.len();
    let batch = l.batching().rows(n);
    let batches = (0..n)
        .step_by(batch)
        .map(|start| Ok(rows.slice(start..(start + batch).min(n))));
    score_batches(l, n, batches, ctl)
}

/// Scores the rows `reading` decodes as they come. Also the bytes read,
/// and whether they were read ahead.
fn score_reading<W: Write>(
    l: &Loaded,
    reading: Reading,
    ctl: &mut Control<'_, W>,
) -> Result<(Attempt, u64, bool), String> {
    let Reading {
        rows: n,
        batches,
        bytes,
        ahead,
        ..
    } = reading;
    // Every batch scored was counted before it was sent; an attempt that
    // ends early drops `batches`, which stops the reader.
    let outcome = score_batches(l, n, batches.into_iter(), ctl)?;
    Ok((outcome, bytes.load(Ordering::Relaxed), ahead))
}

/// The row of an attempt reading `segments` (counted from its first) that
/// is row `row` of part `part`.
fn attempt_row(segments: &[crate::data::Segment], part: &Path, row: u64) -> Option<u64> {
    let mut before = 0;
    for s in segments {
        if s.part == part && s.rows.contains(&row) {
            return Some(before + row - s.rows.start);
        }
        before += s.rows.end - s.rows.start;
    }
    None
}

/// What the coordinator said while an attempt ran.
#[derive(Default)]
struct Told {
    /// Stop after this many rows (or as soon after as rows are scored).
    stop_at: Option<usize>,
    /// The attempt ends now (`Cancelled`, `Shutdown`).
    end: Option<Attempt>,
}

/// Takes the messages that arrived for the running attempt; others wait in
/// the queue for after it.
fn take_messages<W: Write>(ctl: &mut Control<'_, W>) -> Result<Told, String> {
    let mut told = Told::default();
    loop {
        // Messages name the attempt once its `Run` came (a hinted read's
        // may come in this very loop).
        let attempt = ctl.hinted.is_none().then_some(ctl.attempt);
        match ctl.rx.try_recv() {
            // The `Run` for the hinted rows being scored: they become its
            // attempt, and what is scored so far counts.
            Ok(ToWorker::Run {
                attempt: a,
                rows: ChunkRows::Read(segments),
                ..
            }) if ctl.hinted.as_ref() == Some(&segments) => {
                ctl.attempt = a;
                ctl.hinted = None;
            }
            // A `Run` for other rows: the hinted rows are let go, and it
            // runs next.
            Ok(run @ ToWorker::Run { .. }) if ctl.hinted.is_some() => {
                ctl.queue.push_back(run);
                told.end = Some(Attempt::Cancelled);
                return Ok(told);
            }
            Ok(ToWorker::StopAt { attempt: a, rows }) if Some(a) == attempt => {
                let rows = rows as usize;
                told.stop_at = Some(told.stop_at.map_or(rows, |r| r.min(rows)));
            }
            Ok(ToWorker::Cancel { attempt: a }) if Some(a) == attempt => {
                told.end = Some(Attempt::Cancelled);
                return Ok(told);
            }
            Ok(ToWorker::Shutdown) | Err(TryRecvError::Disconnected) => {
                told.end = Some(Attempt::Shutdown);
                return Ok(told);
            }
            // The next attempt's rows are read while this one scores.
            Ok(ToWorker::Prefetch { segments }) => {
                *ctl.ahead = ctl
                    .dataset
                    .clone()
                    .map(|ds| Reading::start(ds, segments, ctl.batching, true));
            }
            Ok(other) => ctl.queue.push_back(other),
            Err(TryRecvError::Empty) => return Ok(told),
        }
    }
}

/// Scores `batches` (the attempt's `n` rows in order, or how reading them
/// ended it), reporting progress and taking `StopAt`, `Cancel` and
/// `Shutdown` between batches: on the native path with several threads, a
/// crew that claims blocks across batches ([`crew`]); else batch by batch.
fn score_batches<W: Write>(
    l: &Loaded,
    n: usize,
    batches: impl Iterator<Item = Result<Rows, Attempt>> + Send,
    ctl: &mut Control<'_, W>,
) -> Result<Attempt, String> {
    if let Backend::Cpu { threads } = l.backend
        && threads > 1
    {
        return crew::score(&l.model, l.num_features, threads, n, batches, ctl);
    }
    let mut limit = n;
    let mut parts = Vec::new();
    let mut done = 0;
    for rows in batches {
        let rows = match rows {
            Ok(rows) => rows,
            Err(ended) => return Ok(ended),
        };
        if let Err(problem) = rows.check_shape(l.num_features) {
            let attempt = ctl.attempt;
            let message = format!("malformed rows for attempt {attempt}: {problem}");
            return Ok(Attempt::Failed(message));
        }
        let rows = match limit - done < rows.len() {
            true => rows.slice(0..limit - done),
            false => rows,
        };
        let started = Instant::now();
        let part = match predict(l, &rows) {
            Ok(p) => p,
            Err(e) => return Ok(Attempt::Failed(e)),
        };
        ctl.hooks.after_batch(started.elapsed());
        done += part.len();
        parts.push(part);
        // Messages that arrived while computing (a hinted read's `Run`
        // among them, before its progress is told).
        let told = take_messages(ctl)?;
        if let Some(end) = told.end {
            return Ok(end);
        }
        // Rows scored on a hint are told of once their `Run` came.
        if ctl.hinted.is_none() {
            let progress = FromWorker::Progress {
                attempt: ctl.attempt,
                rows_done: done as u64,
            };
            send(ctl.out, &progress)?;
        }
        if let Some(rows) = told.stop_at {
            limit = limit.min(rows.max(done));
        }
        if done >= limit {
            break;
        }
    }
    if done < limit {
        return Ok(Attempt::Failed(format!(
            "read {done} rows of the {limit} the attempt covers"
        )));
    }
    let mut predictions = Predictions::concat(parts);
    ctl.hooks.before_result(&mut predictions)?;
    Ok(Attempt::Finished(predictions))
}

/// Scores `rows`; a panic in a scoring path (rows were checked first, so
/// this is a bug) becomes an error for the attempt instead of ending the
/// worker.
fn predict(l: &Loaded, rows: &Rows) -> Result<Predictions, String> {
    let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &l.backend {
        Backend::Cpu { threads } => {
            predict_cpu(&l.model, rows, *threads).map_err(|e| e.to_string())
        }
        Backend::Gpu { gpu, model } => model.predict(gpu, rows).map_err(|e| e.to_string()),
    }));
    scored.unwrap_or_else(|panic| Err(scoring_panicked(panic.as_ref())))
}

/// The attempt's error for a panic in a scoring path (rows are checked
/// first, so it is a bug): it ends the attempt, not the worker.
fn scoring_panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let why = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown cause");
    format!("scoring failed: {why}")
}

/// Blocks each scoring thread's share of a batch is cut into, at most (see
/// [`predict_cpu`]).
pub const BLOCKS_PER_THREAD: usize = 8;

/// The blocks scoring threads claim of `n` rows: guided, each the rows
/// left divided by the threads, no smaller than 1/8 of
/// [`Model::block_rows`] and no larger than about 1/[`BLOCKS_PER_THREAD`]
/// of a thread's share (but a whole [`Model::block_rows`]).
struct BlockSizes {
    threads: usize,
    smallest: usize,
    largest: usize,
}

impl BlockSizes {
    fn of(model: &Model, n: usize, threads: usize) -> BlockSizes {
        let threads = threads.max(1);
        let unit = model.block_rows().max(1);
        BlockSizes {
            threads,
            smallest: (unit / 8).max(1),
            largest: n.div_ceil(threads * BLOCKS_PER_THREAD).max(unit),
        }
    }

    /// The next block's rows when `left` rows are left (never more).
    fn next(&self, left: usize) -> usize {
        left.div_ceil(self.threads)
            .clamp(self.smallest, self.largest)
            .min(left)
    }
}

/// The native CPU path: `threads` threads (this one and scoped helpers)
/// take blocks of rows in turn, each block the rows left divided by the
/// threads (guided scheduling), between an eighth of [`Model::block_rows`]
/// and about 1/[`BLOCKS_PER_THREAD`] of a thread's share (never under a whole
/// [`Model::block_rows`] while that many rows are left). A thread the system
/// runs less (the reader's decode, the coordinator's commit share two cores
/// with it) takes fewer blocks instead of holding the others at the end of
/// the batch, and the last blocks are small, so the threads finish together.
pub fn predict_cpu(
    model: &Model,
    rows: &Rows,
    threads: usize,
) -> Result<Predictions, crate::model::Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    tune_kernels();
    let n = rows.len();
    let threads = threads.max(1);
    let sizes = BlockSizes::of(model, n, threads);
    if threads == 1 || n <= sizes.smallest {
        return model.predict(rows);
    }
    let next = AtomicUsize::new(0);
    // The next block's rows, claimed by this thread.
    let claim = || {
        let mut start = next.load(Ordering::Relaxed);
        loop {
            if start >= n {
                return None;
            }
            let size = sizes.next(n - start);
            match next.compare_exchange_weak(
                start,
                start + size,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(start..start + size),
                Err(now) => start = now,
            }
        }
    };
    // Each thread's blocks, by first row.
    let take = || {
        let mut mine = Vec::new();
        while let Some(range) = claim() {
            mine.push((range.start, model.predict_range(rows, range)));
        }
        mine
    };
    let mut parts: Vec<(usize, Result<Predictions, _>)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(take)).collect();
        let mut all = take();
        for h in helpers {
            all.extend(h.join().expect("a scoring thread panicked"));
        }
        all
    });
    parts.sort_unstable_by_key(|(start, _)| *start);
    let parts = parts.into_iter().map(|(_, p)| p);
    Ok(Predictions::concat(parts.collect::<Result<Vec<_>, _>>()?))
}

/// Times the sparse kernel against the dense one on this CPU, once a
/// process, and sets the density under which the sparse one runs
/// ([`crate::model::sparse_limit`]): the fastest of three runs of a
/// [`crate::model::SparseTrial`] each way, taken in turns, after one of
/// each to warm up; about 2 ms in a release build. Whichever kernel runs a sub-block, its outputs
/// are the same bit for bit.
pub fn tune_kernels() {
    static TUNED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    TUNED.get_or_init(|| {
        let Some(mut trial) = crate::model::SparseTrial::new() else {
            return;
        };
        trial.run(true);
        trial.run(false);
        let (mut sparse, mut dense) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..3 {
            let t = Instant::now();
            trial.run(true);
            sparse = sparse.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            trial.run(false);
            dense = dense.min(t.elapsed().as_secs_f64());
        }
        crate::model::set_sparse_limit(crate::model::sparse_limit_from(sparse, dense));
    });
}

fn load(
    spec: &ModelSpec,
    sha256: &str,
    path: &str,
    num_features: usize,
    device: Device,
    threads: u32,
) -> Result<Loaded, String> {
    tune_kernels();
    let bytes = crate::memory::read_whole(Path::new(path))
        .map_err(|e| format!("cannot read model '{path}': {e}"))?;
    // A model whose bytes are not the ones the coordinator hashed is
    // dropped unused.
    let (found, model) = hashed_while(&bytes, || {
        read_companions(spec, &bytes, Path::new(path)).and_then(|companions| {
            Model::load(spec, &bytes, &companions, num_features)
                .map_err(|e| format!("model '{path}': {e}"))
        })
    });
    if found != sha256 {
        return Err(format!(
            "model '{path}' has sha256 {found}, expected {sha256} (changed during the run?)"
        ));
    }
    let model = model?;
    let threads = threads.max(1) as usize;
    // A family the GPU has no kernels for: `auto` need not open a device.
    let device = if device == Device::Auto && !crate::gpu::supports(&model) {
        eprintln!(
            "the GPU path has no kernels for kind = '{}'; scoring on the native CPU path",
            model.kind_name()
        );
        Device::Cpu
    } else {
        device
    };
    let backend = match choose_backend(device, threads)? {
        Chosen::Cpu { threads } => Backend::Cpu { threads },
        Chosen::Gpu(gpu) => match crate::gpu::GpuModel::new(&gpu, &model) {
            Ok(gm) => Backend::Gpu {
                gpu,
                model: Box::new(gm),
            },
            // `auto` means "the GPU when it can run the model".
            Err(e) if device == Device::Auto => {
                eprintln!(
                    "GPU '{}' cannot run this model ({e}); scoring on the native CPU path",
                    gpu.info.name
                );
                Backend::Cpu { threads }
            }
            Err(e) => return Err(e.to_string()),
        },
    };
    Ok(Loaded {
        model,
        num_features,
        backend,
        input: None,
        dataset: None,
    })
}

/// The files beside the model file at `path` that loading its `bytes` reads
/// too (an ONNX model's external data), by the names the model gives them.
pub fn read_companions(
    spec: &ModelSpec,
    bytes: &[u8],
    path: &Path,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
    let mut out = std::collections::BTreeMap::new();
    let names = spec.companions(bytes).map_err(|e| e.to_string())?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for name in names {
        let file = dir.join(&name);
        let data = crate::memory::read_whole(&file).map_err(|e| {
            format!(
                "cannot read '{}', the external data the model names '{name}': {e}",
                file.display()
            )
        })?;
        out.insert(name, data);
    }
    Ok(out)
}

enum Chosen {
    Cpu { threads: usize },
    Gpu(Box<crate::gpu::Gpu>),
}

/// The device setting to a backend: `cpu` is the native path; the others ask
/// the gpu room, which answers `None` when `auto` finds no real GPU. `auto`
/// also takes the native path (saying why on stderr, which the coordinator
/// logs) when a real GPU cannot be opened.
fn choose_backend(device: Device, threads: usize) -> Result<Chosen, String> {
    if device == Device::Cpu {
        return Ok(Chosen::Cpu { threads });
    }
    match crate::gpu::choose(device) {
        Ok(Some(gpu)) => Ok(Chosen::Gpu(Box::new(gpu))),
        Ok(None) => Ok(Chosen::Cpu { threads }),
        // A GPU that is there but cannot be opened: `auto` carries on.
        Err(e) if device == Device::Auto => {
            eprintln!("{e}; scoring on the native CPU path");
            Ok(Chosen::Cpu { threads })
        }
        Err(e) => Err(e.to_string()),
    }
}

fn describe_backend(gpu: Option<&crate::gpu::Gpu>, threads: usize) -> (String, String) {
    match gpu {
        None => {
            tune_kernels();
            let level = crate::model::simd_level();
            // Where the sparse kernel runs, the density this CPU's timing chose.
            let sparse = match level {
                crate::model::SimdLevel::Avx512 => format!(
                    ", sparse relu layers at <= {}/16 non-zero",
                    crate::model::sparse_limit()
                ),
                _ => String::new(),
            };
            (
                "cpu".into(),
                format!(
                    "native CPU {}, {threads} thread{}{sparse}",
                    level.name(),
                    if threads == 1 { "" } else { "s" }
                ),
            )
        }
        Some(gpu) => (
            format!("wgpu-{:?}", gpu.info.backend).to_lowercase(),
            gpu.info.name.clone(),
        ),
    }
}

/// This process's peak resident memory (`VmHWM` in /proc/self/status); 0
/// where the system does not say.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// Lower-case hex of `bytes`.
/// The sha256 of `bytes` (hex), computed on a thread of its own while
/// `parse` runs (a model's weights are hashed while they are parsed).
pub fn hashed_while<T>(bytes: &[u8], parse: impl FnOnce() -> T) -> (String, T) {
    std::thread::scope(|s| {
        let hashed = s.spawn(|| hex(&Sha256::digest(bytes)));
        let parsed = parse();
        (hashed.join().expect("hashing does not panic"), parsed)
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn send(out: &mut impl Write, msg: &FromWorker) -> Result<(), String> {
    let frame = proto::encode(msg).map_err(|e| e.to_string())?;
    out.write_all(&frame)
        .and_then(|_| out.flush())
        .map_err(|e| format!("coordinator went away: {e}"))
}

fn read_frame(input: &mut impl Read) -> Result<Option<ToWorker>, String> {
    let mut header = [0u8; proto::HEADER_BYTES];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = proto::body_len(header).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).map_err(|e| e.to_string())?;
    proto::decode(&body).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::attempt_row;
    use crate::data::Segment;
    use crate::model::EntityKey;

    #[test]
    fn a_part_row_maps_to_its_row_in_the_attempt_across_segments() {
        let segment = |part: &str, rows: std::ops::Range<u64>| Segment {
            part: part.into(),
            part_rows: 100,
            identity: String::new(),
            rows,
            first_id: EntityKey::Int(0),
            last_id: EntityKey::Int(0),
        };
        let segments = [segment("a.parquet", 90..100), segment("b.parquet", 0..30)];
        let row = |part: &str, row| attempt_row(&segments, std::path::Path::new(part), row);
        assert_eq!(row("a.parquet", 90), Some(0));
        assert_eq!(row("a.parquet", 99), Some(9));
        assert_eq!(row("b.parquet", 0), Some(10));
        assert_eq!(row("b.parquet", 29), Some(39));
        // Outside what the attempt reads: none (the attempt then fails with
        // the reader's message instead).
        assert_eq!(row("b.parquet", 30), None);
        assert_eq!(row("a.parquet", 5), None);
        assert_eq!(row("c.parquet", 0), None);
    }
}
