//! `herd bench coordinator`: the run's own cost per worker message. The real
//! [`Coordinator`] (scheduler, store, input, publisher) runs a generated job
//! on a fleet of in-memory worker links, and this module plays the workers:
//! it answers each frame the coordinator sends as a worker would (hello,
//! loaded, a progress report per batch, the result; a stop or a cancel taken
//! into account) and hands every message to the coordinator's handlers the
//! way [`super::drive`] does (decode the frame, `on_fleet_event`, a timeout
//! when due, `run_commands`). Only those calls are timed, on the thread's
//! CPU clock and on the wall clock; what the workers do is not.
//!
//! The same job runs on a small fleet first, in the same process: the
//! baseline that shows whether a message costs more with more slots.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::bench::{load_average, thread_cpu};
use crate::fleet::{FleetEvent, ModelFile};
use crate::model::Predictions;
use crate::proto::{self, FromWorker, PROTOCOL_VERSION, ToWorker};
use crate::sched::{AttemptId, SlotId};

use super::coordinator::Coordinator;
use super::event::Event;
use super::publish::Publisher;
use super::read::ReadDone;
use super::workers::Workers;
use super::{Error, Prepared, prepare};

/// Slots per host, as in the seed job (1,250 hosts x 8).
pub const SLOTS_PER_HOST: u32 = 8;
/// The seed job's slots.
pub const SEED_SLOTS: u32 = 10_000;
/// The small fleet measured first, as the baseline.
pub const BASELINE_SLOTS: u32 = 80;
/// Planned chunks per slot (the seed job plans 20,000 for 10,000 slots).
const CHUNKS_PER_SLOT: u64 = 2;
/// Rows per planned chunk: enough for a report per batch.
const ROWS_PER_CHUNK: u64 = 32;
/// Progress reports per attempt, as a worker sends them (one per batch).
const REPORTS_PER_ATTEMPT: u64 = 16;
/// The coordinator publishes an update for the UI this many times a second.
const PUBLISHES_PER_S: f64 = 5.0;
/// Worker messages a second in the seed job: its ~31,700 attempts (`herd
/// bench stragglers --scale seed`) each send 16 progress reports and a
/// result over its ~6,100 s (about 90 a second), and its 10,000 workers a
/// hello and a loaded; rounded up.
pub const SEED_MESSAGES_PER_S: f64 = 100.0;
/// The bench publishes an update for the UI once per this many messages:
/// as often as the coordinator does at the seed's message rate.
const PUBLISH_EVERY_MESSAGES: u64 = (SEED_MESSAGES_PER_S / PUBLISHES_PER_S) as u64;
/// Rounds of the simulated workers with nothing to answer before the run is
/// declared stuck (each waits for the coordinator's next timeout).
const MAX_IDLE_ROUNDS: u32 = 1_000;

#[derive(Clone, Debug, Serialize)]
pub struct CoordinatorRow {
    pub slots: u32,
    pub hosts: u32,
    pub rows: u64,
    pub chunks: u64,
    pub attempts: u64,
    /// Worker messages handed to the coordinator.
    pub messages: u64,
    /// Messages per second of the coordinator thread's CPU time, and of wall
    /// time, in its handlers.
    pub messages_per_cpu_s: f64,
    pub messages_per_wall_s: f64,
    /// Mean CPU microseconds per message of each kind, commands included: a
    /// progress report, a result (handing the chunk to the commit thread,
    /// launching the next), a loaded (the first launch on the slot), and
    /// per chunk read handed back by the read thread (sending its rows).
    pub progress_us: f64,
    pub result_us: f64,
    pub loaded_us: f64,
    pub read_us: f64,
    /// CPU microseconds of an update for the UI (what changed since the
    /// previous one), on average and at most, published as often as at the
    /// seed's message rate.
    pub publish_us: f64,
    pub publish_max_us: f64,
    /// CPU milliseconds of one full snapshot (every attempt and host): what
    /// each update cost before updates, and what the report takes once.
    pub snapshot_ms: f64,
    /// Share of one core the coordinator needs at the seed's message rate,
    /// with its snapshots.
    pub busy_at_seed: f64,
    /// The machine's load average when the row ended.
    pub load_average: Option<f64>,
}

/// CPU and wall time spent in the coordinator's handlers.
#[derive(Default, Clone, Copy)]
struct Spent {
    cpu: Duration,
    wall: Duration,
}

impl Spent {
    fn add(&mut self, other: Spent) {
        self.cpu += other.cpu;
        self.wall += other.wall;
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Spent) {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let out = f();
    let spent = Spent {
        cpu: thread_cpu().saturating_sub(cpu),
        wall: wall.elapsed(),
    };
    (out, spent)
}

/// One attempt a simulated worker runs.
struct Play {
    slot: SlotId,
    /// Rows it will do (less once stopped) and has done.
    limit: u64,
    done: u64,
    batch: u64,
    cancelled: bool,
}

/// The benchmark at each fleet size in `slots` (multiples of
/// [`SLOTS_PER_HOST`]), in a scratch folder under `dir` that is removed.
pub fn coordinator(slots: &[u32], dir: &Path) -> Result<Vec<CoordinatorRow>, Error> {
    let scratch = dir.join(format!("herd-bench-coordinator-{}", std::process::id()));
    slots
        .iter()
        .map(|&n| {
            let _ = std::fs::remove_dir_all(&scratch);
            let row = one(n, &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            row
        })
        .collect()
}

fn one(slots: u32, dir: &Path) -> Result<CoordinatorRow, Error> {
    let hosts = slots.div_ceil(SLOTS_PER_HOST).max(1);
    let rows = u64::from(hosts * SLOTS_PER_HOST) * CHUNKS_PER_SLOT * ROWS_PER_CHUNK;
    let (job, fleet) = write_job(dir, hosts, rows)?;
    let mut p = prepare(&job, Some(&fleet))?;
    let total = p.costs.total();
    let chunks = u64::from(hosts * SLOTS_PER_HOST) * CHUNKS_PER_SLOT;
    p.job.partition.target_chunk_cost = Some((total / chunks).max(1));
    let (events_tx, events) = mpsc::unbounded_channel();
    let (frames_tx, frames) = mpsc::unbounded_channel();
    let (reads_tx, reads) = mpsc::unbounded_channel();
    let in_memory =
        |p: &Prepared, _: &ModelFile, _: &Publisher| Workers::in_memory(&p.fleet, frames_tx);
    let out = Publisher::new(events_tx);
    let mut c = Coordinator::open(p, job, false, out, in_memory, reads_tx)?;
    let mut bench = Bench::new(frames, events, reads);
    bench.play(&mut c)?;
    let snapshot = c.sched.snapshot(Duration::ZERO);
    let (_, full) = timed(|| c.sched.snapshot(c.out.now()));
    let mut all = bench.other;
    for s in [bench.start, bench.progress, bench.result, bench.reads_done] {
        all.add(s.1);
    }
    let per = |(n, s): (u64, Spent)| 1e6 * s.cpu.as_secs_f64() / n.max(1) as f64;
    let mean_s = all.cpu.as_secs_f64() / bench.messages.max(1) as f64;
    let publish_s = bench.publish.1.cpu.as_secs_f64() / bench.publish.0.max(1) as f64;
    Ok(CoordinatorRow {
        slots: hosts * SLOTS_PER_HOST,
        hosts,
        rows,
        chunks: snapshot.chunks_total,
        attempts: snapshot.attempts.len() as u64,
        messages: bench.messages,
        messages_per_cpu_s: bench.messages as f64 / all.cpu.as_secs_f64().max(1e-9),
        messages_per_wall_s: bench.messages as f64 / all.wall.as_secs_f64().max(1e-9),
        progress_us: per(bench.progress),
        result_us: per(bench.result),
        loaded_us: per(bench.start),
        read_us: per(bench.reads_done),
        publish_us: 1e6 * publish_s,
        publish_max_us: 1e6 * bench.publish_max.as_secs_f64(),
        snapshot_ms: 1e3 * full.cpu.as_secs_f64(),
        busy_at_seed: SEED_MESSAGES_PER_S * mean_s + PUBLISHES_PER_S * publish_s,
        load_average: load_average(),
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Start,
    Progress,
    Result,
}

struct Bench {
    frames: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedReceiver<Event>,
    reads: mpsc::UnboundedReceiver<ReadDone>,
    plays: BTreeMap<AttemptId, Play>,
    /// Attempts in the order their next message comes.
    queue: VecDeque<AttemptId>,
    messages: u64,
    /// (messages, time) by kind; hello and loaded together.
    start: (u64, Spent),
    progress: (u64, Spent),
    result: (u64, Spent),
    /// Chunk reads handed back to the loop.
    reads_done: (u64, Spent),
    /// Timeouts with no message.
    other: Spent,
    /// Updates for the UI, and the costliest.
    publish: (u64, Spent),
    publish_max: Duration,
}

impl Bench {
    fn new(
        frames: mpsc::UnboundedReceiver<Vec<u8>>,
        events: mpsc::UnboundedReceiver<Event>,
        reads: mpsc::UnboundedReceiver<ReadDone>,
    ) -> Bench {
        Bench {
            frames,
            events,
            reads,
            plays: BTreeMap::new(),
            queue: VecDeque::new(),
            messages: 0,
            start: Default::default(),
            progress: Default::default(),
            result: Default::default(),
            reads_done: Default::default(),
            other: Spent::default(),
            publish: Default::default(),
            publish_max: Duration::ZERO,
        }
    }

    /// Every worker says hello and loads; then each running attempt in turn
    /// sends its next message, until every row is committed.
    fn play(&mut self, c: &mut Coordinator) -> Result<(), Error> {
        let slot_ids: Vec<SlotId> = c.workers.slots.keys().copied().collect();
        for &slot in &slot_ids {
            let hello = FromWorker::Hello {
                version: PROTOCOL_VERSION,
                host: format!("bench-{}", slot.0),
                pid: slot.0,
            };
            self.feed(c, slot, hello, Kind::Start)?;
            self.answer(c, Some(slot))?;
        }
        let mut idle_rounds = 0;
        while !c.done() {
            while let Ok(done) = self.reads.try_recv() {
                self.take_read(c, done)?;
            }
            let Some(attempt) = self.queue.pop_front() else {
                if c.reads_pending() > 0 {
                    // Rows on their way: wait for the read thread.
                    let done = self
                        .reads
                        .blocking_recv()
                        .ok_or_else(|| Error::Failed("bench: the read thread is gone".into()))?;
                    self.take_read(c, done)?;
                    continue;
                }
                idle_rounds += 1;
                self.idle(c, idle_rounds)?;
                continue;
            };
            self.next_message(c, attempt)?;
        }
        Ok(())
    }

    /// The next message of `attempt`'s worker: a progress report, or its
    /// result once its rows are done.
    fn next_message(&mut self, c: &mut Coordinator, attempt: AttemptId) -> Result<(), Error> {
        let Some(play) = self.plays.get_mut(&attempt) else {
            return Ok(());
        };
        if play.cancelled {
            self.plays.remove(&attempt);
            return Ok(());
        }
        let slot = play.slot;
        let (msg, kind) = if play.done < play.limit {
            play.done = (play.done + play.batch).min(play.limit);
            let msg = FromWorker::Progress {
                attempt,
                rows_done: play.done,
            };
            self.queue.push_back(attempt);
            (msg, Kind::Progress)
        } else {
            let n = play.limit as usize;
            self.plays.remove(&attempt);
            let predictions = Predictions::Scores {
                width: 1,
                values: vec![0.5; n],
            };
            let msg = FromWorker::Result {
                attempt,
                predictions,
                input_bytes: 0,
                read_ahead: false,
                peak_rss_bytes: 0,
            };
            (msg, Kind::Result)
        };
        self.feed(c, slot, msg, kind)?;
        self.answer(c, None)?;
        if self.messages % PUBLISH_EVERY_MESSAGES == 0 {
            let ((), spent) = timed(|| c.publish());
            self.publish.0 += 1;
            self.publish.1.add(spent);
            self.publish_max = self.publish_max.max(spent.cpu);
            while self.events.try_recv().is_ok() {}
        }
        Ok(())
    }

    /// Nothing runs and nothing is being read: what is left waits for the
    /// coordinator's next timeout.
    fn idle(&mut self, c: &mut Coordinator, rounds: u32) -> Result<(), Error> {
        if rounds > MAX_IDLE_ROUNDS {
            let left = c.sched.snapshot(Duration::ZERO);
            return Err(Error::Failed(format!(
                "bench: {} of {} rows are not committed and nothing runs after {MAX_IDLE_ROUNDS} timeouts",
                left.rows_total - left.rows_done,
                left.rows_total
            )));
        }
        if let Some(wait) = c.wake_in() {
            std::thread::sleep(wait);
        }
        let (out, spent) = timed(|| {
            c.on_timeout();
            c.run_commands()
        });
        out?;
        self.other.add(spent);
        self.answer(c, None)
    }

    /// Hands a finished chunk read to the coordinator, as the driver does.
    fn take_read(&mut self, c: &mut Coordinator, done: ReadDone) -> Result<(), Error> {
        let (out, spent) = timed(|| {
            c.on_read(done)?;
            c.run_commands()
        });
        out?;
        self.reads_done.0 += 1;
        self.reads_done.1.add(spent);
        self.answer(c, None)
    }

    /// Hands one message of the worker of `slot` to the coordinator as the
    /// driver does: the frame decoded, its handler, a timeout when due, the
    /// scheduler's commands.
    fn feed(
        &mut self,
        c: &mut Coordinator,
        slot: SlotId,
        msg: FromWorker,
        kind: Kind,
    ) -> Result<(), Error> {
        let frame = proto::encode(&msg).map_err(|e| Error::Failed(format!("bench: {e}")))?;
        let (out, spent) = timed(|| {
            let mut header = [0u8; proto::HEADER_BYTES];
            header.copy_from_slice(&frame[..proto::HEADER_BYTES]);
            let len = proto::body_len(header).map_err(|e| Error::Failed(e.to_string()))?;
            let body = &frame[proto::HEADER_BYTES..proto::HEADER_BYTES + len];
            let msg: FromWorker = proto::decode(body).map_err(|e| Error::Failed(e.to_string()))?;
            c.on_fleet_event(FleetEvent::Message { slot, msg });
            if c.wake_in().is_some_and(|d| d.is_zero()) {
                c.on_timeout();
            }
            c.run_commands()
        });
        out?;
        self.messages += 1;
        let bucket = match kind {
            Kind::Start => &mut self.start,
            Kind::Progress => &mut self.progress,
            Kind::Result => &mut self.result,
        };
        bucket.0 += 1;
        bucket.1.add(spent);
        Ok(())
    }

    /// Answers every frame the coordinator has sent, as workers would:
    /// `hello_from` is the slot whose hello a `Load` answers.
    fn answer(&mut self, c: &mut Coordinator, hello_from: Option<SlotId>) -> Result<(), Error> {
        while let Ok(frame) = self.frames.try_recv() {
            let msg: ToWorker = proto::decode(&frame[proto::HEADER_BYTES..])
                .map_err(|e| Error::Failed(format!("bench: a frame to a worker: {e}")))?;
            match msg {
                ToWorker::Load { .. } => {
                    let slot = hello_from.ok_or_else(|| {
                        Error::Failed("bench: a model to load with no hello before".into())
                    })?;
                    let loaded = FromWorker::Loaded {
                        backend: "bench".into(),
                        adapter: "in memory".into(),
                        model: "bench".into(),
                    };
                    self.feed(c, slot, loaded, Kind::Start)?;
                }
                ToWorker::Run { attempt, rows, .. } => {
                    let slot = c.attempt_slot(attempt).ok_or_else(|| {
                        Error::Failed(format!("bench: attempt {attempt} sent to no slot"))
                    })?;
                    let n = rows.len() as u64;
                    self.plays.insert(
                        attempt,
                        Play {
                            slot,
                            limit: n,
                            done: 0,
                            batch: n.div_ceil(REPORTS_PER_ATTEMPT).max(1),
                            cancelled: false,
                        },
                    );
                    self.queue.push_back(attempt);
                }
                ToWorker::StopAt { attempt, rows } => {
                    if let Some(p) = self.plays.get_mut(&attempt) {
                        p.limit = p.limit.min(rows.max(p.done));
                    }
                }
                ToWorker::Cancel { attempt } => {
                    if let Some(p) = self.plays.get_mut(&attempt) {
                        p.cancelled = true;
                    }
                }
                ToWorker::Prefetch { .. } | ToWorker::Probe { .. } | ToWorker::Shutdown => {}
            }
        }
        Ok(())
    }
}

/// A generated job (an MLP over 4 features, `rows` rows) and a fleet of
/// `hosts` ssh hosts of [`SLOTS_PER_HOST`] slots, written under `dir` (the
/// hosts are never contacted: their links are in memory).
fn write_job(dir: &Path, hosts: u32, rows: u64) -> Result<(PathBuf, PathBuf), Error> {
    let io = |e: std::io::Error| Error::Failed(format!("bench: {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let job = format!(
        r#"[job]
name = "bench-coordinator"
model_version = "bench-1"

[input]
path = "input.parquet"
id_column = "entity_id"

[model]
kind = "mlp"
weights = "model.safetensors"

[stragglers]
speculation = true
split_running = true
max_attempts = 4

[output]
store = "store"

[generate]
kind = "mlp"
users = {rows}
features = 4
seed = 7
"#
    );
    let mut fleet = String::new();
    for h in 0..hosts {
        fleet.push_str(&format!(
            "[[host]]\nname = \"h{h}\"\nkind = \"ssh\"\naddress = \"h{h}.invalid\"\nslots = {SLOTS_PER_HOST}\ndevice = \"cpu\"\n\n"
        ));
    }
    let (job_path, fleet_path) = (dir.join("job.toml"), dir.join("hosts.toml"));
    std::fs::write(&job_path, job).map_err(io)?;
    std::fs::write(&fleet_path, fleet).map_err(io)?;
    Ok((job_path, fleet_path))
}

/// The rows as an aligned text table, the first as the baseline.
pub fn table(rows: &[CoordinatorRow]) -> String {
    let header = [
        "slots",
        "chunks",
        "attempts",
        "messages",
        "msgs_per_cpu_s",
        "msgs_per_wall_s",
        "progress_us",
        "result_us",
        "loaded_us",
        "read_us",
        "publish_us",
        "publish_max_us",
        "snapshot_ms",
        "busy_at_seed",
        "load",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.slots.to_string(),
                r.chunks.to_string(),
                r.attempts.to_string(),
                r.messages.to_string(),
                format!("{:.0}", r.messages_per_cpu_s),
                format!("{:.0}", r.messages_per_wall_s),
                format!("{:.1}", r.progress_us),
                format!("{:.1}", r.result_us),
                format!("{:.1}", r.loaded_us),
                format!("{:.1}", r.read_us),
                format!("{:.1}", r.publish_us),
                format!("{:.1}", r.publish_max_us),
                format!("{:.2}", r.snapshot_ms),
                format!("{:.3}%", 100.0 * r.busy_at_seed),
                r.load_average.map_or("-".into(), |l| format!("{l:.1}")),
            ]
        })
        .collect();
    let mut out = crate::table::render(&header, &cells, 0);
    if let (Some(base), Some(last)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        let ratio = |a: f64, b: f64| a / b.max(1e-9);
        out.push_str(&format!(
            "at {} slots against {} (baseline), CPU per message: progress {:.2}x, result {:.2}x, loaded {:.2}x; progress reports per CPU second: {:.0}\n",
            last.slots,
            base.slots,
            ratio(last.progress_us, base.progress_us),
            ratio(last.result_us, base.result_us),
            ratio(last.loaded_us, base.loaded_us),
            1e6 / last.progress_us.max(1e-9)
        ));
    }
    out.push_str(&format!(
        "busy_at_seed: CPU share of one core at the seed's {SEED_MESSAGES_PER_S:.0} messages/s plus {PUBLISHES_PER_S:.0} updates/s for the UI\n"
    ));
    out
}
