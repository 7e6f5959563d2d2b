//! An attempt's rows scored on the native CPU path by a crew of threads
//! that claim blocks of rows across batch boundaries.
//!
//! Batches still come from the reader one by one, and progress is still
//! reported batch by batch, but no thread waits at a batch's end for the
//! others: a thread that finds nothing left to claim in the batches read so
//! far pulls the next batch from the reader itself, and the others go on
//! with the blocks they hold. Blocks are claimed as
//! [`super::predict_cpu`] claims them (guided: the rows left divided by
//! the threads, within the model's bounds), over the whole attempt, so the
//! last blocks of the attempt are small and the threads finish together.

use std::io::Write;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Attempt, BlockSizes, Control, scoring_panicked, send, take_messages};
use crate::data::Dataset;
use crate::model::{Model, Predictions, Rows};
use crate::proto::FromWorker;
use crate::sched::AttemptId;
use crate::test_hooks::WorkerHooks;

/// How long the attempt's own thread waits for the others before it looks
/// at the coordinator's messages again.
const MESSAGE_POLL: Duration = Duration::from_millis(20);

/// A batch read for the attempt: its first row (counted from the attempt's
/// first), its length and how many of its rows are scored. Its rows are
/// let go once every row is claimed (the blocks hold their own reference),
/// so the crew holds about the batches being scored, not the whole chunk.
struct Batch {
    start: usize,
    len: usize,
    rows: Option<Arc<Rows>>,
    scored: usize,
}

/// What the crew shares, under one lock.
struct State {
    batches: Vec<Batch>,
    /// Rows read (the end of the last batch).
    read: usize,
    /// Rows claimed: every row below is in a block some thread holds or
    /// has scored.
    claimed: usize,
    /// Rows scored, in blocks anywhere below `claimed`.
    scored: usize,
    /// Rows the attempt scores: its own, or fewer after a `StopAt`, never
    /// fewer than are claimed.
    limit: usize,
    /// The scored blocks, by first row.
    parts: Vec<(usize, Predictions)>,
    /// How the attempt ended early (a read or a block failed, a cancel).
    ended: Option<Attempt>,
    /// The reader has no more batches.
    exhausted: bool,
    /// A thread is waiting for the reader's next batch.
    reading: bool,
    /// No more blocks are handed out (the attempt's own thread is done).
    stopping: bool,
}

/// A block a thread holds: rows `range` of `rows`, which start at the
/// attempt's row `first`.
struct Block {
    rows: Arc<Rows>,
    range: Range<usize>,
    first: usize,
}

struct Crew<'a, I> {
    model: &'a Model,
    num_features: usize,
    threads: usize,
    state: Mutex<State>,
    changed: Condvar,
    reader: Mutex<I>,
    attempt: AttemptId,
    /// Told each block's time (a test hook slows the worker by it).
    hooks: &'a WorkerHooks,
    /// Where the rows were read from, which takes their buffers back.
    dataset: Option<&'a Dataset>,
}

impl<I: Iterator<Item = Result<Rows, Attempt>>> Crew<'_, I> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next block to score, reading a batch first when every row read
    /// is claimed; `None` when nothing is left to claim (or the attempt
    /// ended).
    fn claim(&self) -> Option<Block> {
        let mut st = self.lock();
        loop {
            if st.ended.is_some() || st.stopping || st.claimed >= st.limit {
                return None;
            }
            if st.claimed < st.read {
                let (at, left) = (st.claimed, st.limit - st.claimed);
                let b = st.batches.partition_point(|b| b.start + b.len <= at);
                let batch = &mut st.batches[b];
                let within = at - batch.start;
                let size = BlockSizes::of(self.model, batch.len, self.threads)
                    .next(left)
                    .min(batch.len - within);
                let rows = match within + size == batch.len {
                    true => batch.rows.take(),
                    false => batch.rows.clone(),
                };
                let block = Block {
                    rows: rows.expect("a batch keeps its rows until they are all claimed"),
                    range: within..within + size,
                    first: at,
                };
                st.claimed += size;
                return Some(block);
            }
            if st.exhausted {
                return None;
            }
            if st.reading {
                st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.reading = true;
            drop(st);
            let next = self.reader.lock().unwrap_or_else(|p| p.into_inner()).next();
            st = self.lock();
            st.reading = false;
            self.take_batch(&mut st, next);
            self.changed.notify_all();
        }
    }

    /// Adds what the reader gave to the batches (or ends the attempt).
    fn take_batch(&self, st: &mut State, next: Option<Result<Rows, Attempt>>) {
        let rows = match next {
            None => {
                st.exhausted = true;
                return;
            }
            Some(Err(ended)) => {
                st.ended.get_or_insert(ended);
                return;
            }
            Some(Ok(rows)) => rows,
        };
        if let Err(problem) = rows.check_shape(self.num_features) {
            let attempt = self.attempt;
            let message = format!("malformed rows for attempt {attempt}: {problem}");
            st.ended.get_or_insert(Attempt::Failed(message));
            return;
        }
        // Rows past the limit (after a `StopAt`) are never scored.
        let wanted = st.limit.saturating_sub(st.read);
        let rows = match wanted < rows.len() {
            true => rows.slice(0..wanted),
            false => rows,
        };
        if rows.is_empty() {
            return;
        }
        let start = st.read;
        st.read += rows.len();
        st.batches.push(Batch {
            start,
            len: rows.len(),
            rows: Some(Arc::new(rows)),
            scored: 0,
        });
    }

    /// Scores `block` and records it; a panic in a scoring path (rows were
    /// checked first, so this is a bug) ends the attempt, not the worker.
    fn score(&self, block: Block) {
        let Block { rows, range, first } = block;
        let started = Instant::now();
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.model.predict_range(&rows, range.clone())
        }));
        self.hooks.after_batch(started.elapsed());
        // The batch's last block: its buffer goes to the next read.
        if let (Some(dataset), Ok(rows)) = (self.dataset, Arc::try_unwrap(rows)) {
            dataset.recycle(rows);
        }
        let mut st = self.lock();
        match scored {
            Ok(Ok(preds)) => {
                let n = range.len();
                let b = st.batches.partition_point(|b| b.start + b.len <= first);
                st.batches[b].scored += n;
                st.scored += n;
                st.parts.push((first, preds));
            }
            Ok(Err(e)) => {
                st.ended.get_or_insert(Attempt::Failed(e.to_string()));
            }
            Err(panic) => {
                st.ended
                    .get_or_insert(Attempt::Failed(scoring_panicked(panic.as_ref())));
            }
        }
        self.changed.notify_all();
    }

    /// A helper thread: claims and scores blocks until none is left.
    fn help(&self) {
        while let Some(block) = self.claim() {
            self.score(block);
        }
    }
}

impl State {
    /// Whether nothing is left to do: the attempt ended, or every row it
    /// can have is claimed and scored.
    fn over(&self) -> bool {
        let all_claimed =
            self.claimed >= self.limit || (self.exhausted && self.claimed >= self.read);
        self.ended.is_some() || (all_claimed && self.scored >= self.claimed)
    }

    /// Rows from the attempt's first that are scored with no gap: whole
    /// batches, in order.
    fn scored_prefix(&self) -> usize {
        self.batches
            .iter()
            .take_while(|b| b.scored == b.len)
            .map(|b| b.start + b.len)
            .last()
            .unwrap_or(0)
    }
}

/// Scores `batches` (the attempt's `n` rows in order, or how reading them
/// ended it) with `threads` threads (this one and scoped helpers),
/// reporting progress after each whole batch and taking `StopAt`, `Cancel`
/// and `Shutdown` between blocks.
pub(super) fn score<W: Write, I>(
    model: &Model,
    num_features: usize,
    threads: usize,
    n: usize,
    batches: I,
    ctl: &mut Control<'_, W>,
) -> Result<Attempt, String>
where
    I: Iterator<Item = Result<Rows, Attempt>> + Send,
{
    // A stop or an end already waiting is taken before any block is
    // claimed: the helpers could otherwise claim past it before the lead
    // first looks.
    let told = take_messages(ctl)?;
    if let Some(end) = told.end {
        return Ok(end);
    }
    let limit = told.stop_at.map_or(n, |rows| rows.min(n));
    let dataset = ctl.dataset.clone();
    let crew = Crew {
        model,
        num_features,
        threads,
        state: Mutex::new(State {
            batches: Vec::new(),
            read: 0,
            claimed: 0,
            scored: 0,
            limit,
            parts: Vec::new(),
            ended: None,
            exhausted: false,
            reading: false,
            stopping: false,
        }),
        changed: Condvar::new(),
        reader: Mutex::new(batches),
        attempt: ctl.attempt,
        hooks: ctl.hooks,
        dataset: dataset.as_deref(),
    };
    let outcome = std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| crew.help());
        }
        let outcome = lead(&crew, ctl);
        // Helpers stop at their next claim.
        crew.lock().stopping = true;
        crew.changed.notify_all();
        outcome
    })?;
    if let Some(ended) = outcome {
        return Ok(ended);
    }
    let st = crew.state.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(ended) = st.ended {
        return Ok(ended);
    }
    if st.scored < st.limit {
        return Ok(Attempt::Failed(format!(
            "read {} rows of the {} the attempt covers",
            st.read, st.limit
        )));
    }
    let mut parts = st.parts;
    parts.sort_unstable_by_key(|(first, _)| *first);
    let mut predictions = Predictions::concat(parts.into_iter().map(|(_, p)| p).collect());
    ctl.hooks.before_result(&mut predictions)?;
    Ok(Attempt::Finished(predictions))
}

/// The attempt's own thread: scores blocks like the helpers, and between
/// them reports each batch finished and takes the coordinator's messages.
/// `Some` when a message ended the attempt.
fn lead<W: Write, I>(
    crew: &Crew<'_, I>,
    ctl: &mut Control<'_, W>,
) -> Result<Option<Attempt>, String>
where
    I: Iterator<Item = Result<Rows, Attempt>>,
{
    let mut reported = 0;
    loop {
        match crew.claim() {
            Some(block) => crew.score(block),
            None => {
                // The others hold the last blocks: wait for one of them
                // (or for a message's time).
                let st = crew.lock();
                if !st.over() {
                    drop(crew.changed.wait_timeout(st, MESSAGE_POLL));
                }
            }
        }
        let (prefix, over) = {
            let st = crew.lock();
            (st.scored_prefix(), st.over())
        };
        // Rows scored on a hint are told of once their `Run` came.
        if prefix > reported && ctl.hinted.is_none() {
            reported = prefix;
            let progress = FromWorker::Progress {
                attempt: ctl.attempt,
                rows_done: prefix as u64,
            };
            send(ctl.out, &progress)?;
        }
        if over {
            return Ok(None);
        }
        let told = take_messages(ctl)?;
        let mut st = crew.lock();
        if let Some(rows) = told.stop_at {
            st.limit = st.limit.min(rows.max(st.claimed));
        }
        if let Some(end) = told.end {
            return Ok(Some(end));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::mpsc;

    use super::super::Batching;
    use super::*;
    use crate::config::{Input, Location, OnInvalid, ReadMode};
    use crate::data::Dataset;
    use crate::data::r#gen::{GenKind, GenOptions, generate};
    use crate::model::{MlpSpec, ModelSpec, OutputActivation};
    use crate::proto::{self, ToWorker};
    use crate::test_hooks::WorkerHooks;

    /// A generated mlp (16 features) and 3,000 of its rows.
    fn mlp_and_rows() -> (Model, Rows) {
        let dir = tempfile::tempdir().unwrap();
        let (data, weights) = (
            dir.path().join("rows.parquet"),
            dir.path().join("mlp.safetensors"),
        );
        let opts = GenOptions {
            users: 3_000,
            features: 16,
            hidden: 32,
            row_group_rows: 1_000,
            ..GenOptions::defaults(GenKind::Mlp)
        };
        generate(&opts, &data, &weights).unwrap();
        let input = Input {
            path: Location::Local(data),
            read: ReadMode::Auto,
            storage: Default::default(),
            id_column: "entity_id".into(),
            history_column: None,
            feature_columns: None,
            on_invalid: OnInvalid::Error,
        };
        let rows = Dataset::open(&input, false)
            .unwrap()
            .read_rows(0..3_000)
            .unwrap();
        let spec = ModelSpec::Mlp(MlpSpec {
            layers: None,
            output: OutputActivation::Sigmoid,
        });
        let bytes = std::fs::read(&weights).unwrap();
        let model = Model::from_safetensors(&spec, &bytes, rows.num_features).unwrap();
        (model, rows)
    }

    /// Cuts `rows` into batches of the given sizes.
    fn batches(rows: &Rows, sizes: &[usize]) -> Vec<Result<Rows, Attempt>> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&n| {
                let b = rows.slice(at..at + n);
                at += n;
                Ok(b)
            })
            .collect()
    }

    /// Runs the crew on `batches` with `messages` waiting for it; its
    /// outcome and the progress it reported.
    fn run(
        model: &Model,
        threads: usize,
        n: usize,
        batches: Vec<Result<Rows, Attempt>>,
        messages: Vec<ToWorker>,
    ) -> (Attempt, Vec<u64>) {
        let (tx, rx) = mpsc::channel();
        for m in messages {
            tx.send(m).unwrap();
        }
        let mut queue = VecDeque::new();
        let mut out = Vec::new();
        let hooks = WorkerHooks::from_env();
        let mut ahead = None;
        let mut ctl = Control {
            attempt: 7,
            hinted: None,
            rx: &rx,
            queue: &mut queue,
            out: &mut out,
            hooks: &hooks,
            ahead: &mut ahead,
            dataset: None,
            batching: Batching {
                block_rows: model.block_rows(),
                threads,
            },
        };
        let outcome = score(model, 16, threads, n, batches.into_iter(), &mut ctl).unwrap();
        let mut progress = Vec::new();
        let mut frames = out.as_slice();
        while !frames.is_empty() {
            let len = proto::body_len(frames[..proto::HEADER_BYTES].try_into().unwrap()).unwrap();
            let body = &frames[proto::HEADER_BYTES..proto::HEADER_BYTES + len];
            match proto::decode::<FromWorker>(body).unwrap() {
                FromWorker::Progress {
                    attempt: 7,
                    rows_done,
                } => progress.push(rows_done),
                other => panic!("the crew sent {other:?}"),
            }
            frames = &frames[proto::HEADER_BYTES + len..];
        }
        (outcome, progress)
    }

    fn finished(outcome: Attempt) -> Predictions {
        match outcome {
            Attempt::Finished(p) => p,
            Attempt::Failed(e) => panic!("failed: {e}"),
            _ => panic!("the attempt did not finish"),
        }
    }

    #[test]
    fn batches_of_any_size_score_as_one_call_and_report_each_batch() {
        let (model, rows) = mlp_and_rows();
        let whole = model.predict(&rows).unwrap();
        for threads in [2, 3, 5] {
            let sizes = [700, 1, 1_299, 999, 1];
            let (outcome, progress) = run(&model, threads, 3_000, batches(&rows, &sizes), vec![]);
            assert_eq!(finished(outcome), whole, "{threads} threads");
            // Whole batches, in order, ending with every row.
            assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
            assert_eq!(progress.last(), Some(&3_000));
            let ends = [700, 701, 2_000, 2_999, 3_000];
            assert!(
                progress.iter().all(|p| ends.contains(&(*p as usize))),
                "{progress:?}"
            );
        }
    }

    #[test]
    fn a_stop_keeps_at_least_the_rows_asked_for_and_scores_no_more_than_are_claimed() {
        let (model, rows) = mlp_and_rows();
        let whole = model.predict(&rows).unwrap();
        let stop = vec![ToWorker::StopAt {
            attempt: 7,
            rows: 1_000,
        }];
        let (outcome, _) = run(&model, 2, 3_000, batches(&rows, &[500; 6]), stop);
        let got = finished(outcome);
        // The stop waits before the first block is claimed: no block
        // past it is claimed, so exactly the rows asked for are scored.
        assert_eq!(got.len(), 1_000, "rows after a stop at 1,000");
        assert_eq!(got, model.predict(&rows.slice(0..1_000)).unwrap());
        // A stop for another attempt changes nothing.
        let other = vec![ToWorker::StopAt {
            attempt: 8,
            rows: 10,
        }];
        let (outcome, _) = run(&model, 2, 3_000, batches(&rows, &[500; 6]), other);
        assert_eq!(finished(outcome), whole);
    }

    #[test]
    fn a_failed_read_a_short_read_and_a_cancel_end_the_attempt() {
        let (model, rows) = mlp_and_rows();
        let mut failing = batches(&rows, &[1_000]);
        failing.push(Err(Attempt::Failed("input: the part went away".into())));
        failing.extend(batches(&rows, &[1_000, 1_000]).into_iter().skip(1));
        match run(&model, 2, 3_000, failing, vec![]).0 {
            Attempt::Failed(e) => assert_eq!(e, "input: the part went away"),
            _ => panic!("a failed read must end the attempt"),
        }
        match run(&model, 3, 3_000, batches(&rows, &[1_000, 1_000]), vec![]).0 {
            Attempt::Failed(e) => assert_eq!(e, "read 2000 rows of the 3000 the attempt covers"),
            _ => panic!("a short read must fail the attempt"),
        }
        let cancel = vec![ToWorker::Cancel { attempt: 7 }];
        assert!(matches!(
            run(&model, 2, 3_000, batches(&rows, &[100; 30]), cancel).0,
            Attempt::Cancelled
        ));
        let wrong_width = vec![Ok(Rows {
            num_features: 3,
            features: vec![0.0; 6],
            ..rows.slice(0..2)
        })];
        match run(&model, 2, 2, wrong_width, vec![]).0 {
            Attempt::Failed(e) => assert!(e.starts_with("malformed rows for attempt 7"), "{e}"),
            _ => panic!("malformed rows must fail the attempt"),
        }
    }
}
