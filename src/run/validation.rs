//! Builds the validation gate's inputs: every input id, and a spot-check
//! sample re-scored here on the CPU reference (which catches a wrong GPU
//! kernel or a corrupt worker before readers see it).
//!
//! The sample never depends on what the workers return, and no worker can
//! know it: [`SpotCheck::start`] draws it when the version begins, from a
//! seed taken from the operating system's randomness that stays in the
//! coordinator (were it drawn from what a worker can know, such as the
//! version number and the input, a worker built to lie could answer the
//! sampled rows truthfully and only those). Threads of their own read the
//! sampled rows and re-score them while the run goes on, so the gate at the
//! end waits only for what is left of it ([`SpotCheck::wait`]). The check
//! stays independent of the workers: its rows are read by the coordinator
//! and scored by the reference loops, and compared with what the store
//! holds.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::data::Dataset;
use crate::model::{EntityIds, Model, PredictionRow, Predictions};
use crate::splitmix::SplitMix64;
use crate::store::Value;
use crate::store::validate::{ChunkScan, SampleRow, ValidationPlan};

use super::{Error, Prepared};

/// Scores may differ from the reference by this much (relative where large):
/// backends sum in different orders.
pub const SPOT_TOLERANCE: f32 = 1e-4;

/// The sample is re-scored this many rows at a time; a run that ends early
/// stops each thread between two such pieces.
const SPOT_PIECE_ROWS: usize = 64;

/// At most this many threads read and re-score the sample. At nice 19 they
/// take what the run leaves idle; what is left when the run ends, the gate
/// waits for, and it is shared by as many cores.
const SPOT_MAX_THREADS: usize = 8;

/// The spot check's sample and its expected values, computed on threads of
/// their own from the start of the run. Dropping it (a run that failed or
/// was cancelled) tells the threads to stop at their next piece.
pub struct SpotCheck {
    /// The threads, each with a run of the sample (in order); taken by
    /// [`SpotCheck::wait`].
    threads: Vec<JoinHandle<Result<Spot, String>>>,
    /// Set when nobody waits for the sample any more.
    cancel: Arc<AtomicBool>,
}

/// The spot check's sample with its expected values.
pub struct Spot {
    pub sample: Vec<SampleRow>,
    /// How long its threads took to read and re-score it (the slowest).
    pub took: Duration,
    /// How long the gate waited for it.
    pub waited: Duration,
}

impl SpotCheck {
    /// Draws the sample of `version`: `[validate] spot_check` rows drawn
    /// uniformly (without repeats) from the whole input, but for those left
    /// out by `on_invalid = "skip"`, with a seed from the operating
    /// system's randomness; reads them where they lie and re-scores them on
    /// the CPU reference on threads of their own, one per core up to
    /// [`SPOT_MAX_THREADS`], each with a run of the sample. Without a seed
    /// (the system gave no randomness) the check fails at the gate, and the
    /// version does not go live.
    pub fn start(p: &Prepared, version: u64) -> SpotCheck {
        let cancel = Arc::new(AtomicBool::new(false));
        let seed = match sample_seed(version) {
            Ok(seed) => seed,
            Err(why) => {
                let threads = vec![std::thread::spawn(move || Err(why))];
                return SpotCheck { threads, cancel };
            }
        };
        let rows = p.index.ids.len() as u64;
        let at = sample_rows(seed, rows, &p.skipped_rows(), p.job.validate.spot_check);
        let excludes_seen = p.job.model.spec.excludes_seen();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = shares(at.len(), cores)
            .into_iter()
            .map(|rows| {
                let at = at[rows].to_vec();
                // The rows' ids as the run committed them (from the index):
                // their column is not read again.
                let ids = p.index.ids.rows_at(&at);
                let (dataset, model) = (p.dataset.clone(), p.model.clone());
                let stop = cancel.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("herd-spot".into())
                        .spawn(move || {
                            yield_to_the_run();
                            let started = Instant::now();
                            let sample = rescore(&dataset, &model, &at, ids, excludes_seen, &stop)?;
                            Ok(Spot {
                                sample,
                                took: started.elapsed(),
                                waited: Duration::ZERO,
                            })
                        });
                match spawned {
                    Ok(t) => t,
                    // Told at the gate, where a failed spot check is reported.
                    Err(e) => {
                        let why = format!("cannot start its thread: {e}");
                        std::thread::spawn(move || Err(why))
                    }
                }
            })
            .collect();
        SpotCheck { threads, cancel }
    }

    /// The sample with its expected values, once the threads are done.
    pub fn wait(&mut self) -> Result<Spot, Error> {
        let started = Instant::now();
        assert!(
            !self.threads.is_empty(),
            "the spot check is waited for once"
        );
        let mut spot = Spot {
            sample: Vec::new(),
            took: Duration::ZERO,
            waited: Duration::ZERO,
        };
        // Every thread is joined, also after one failed.
        let mut failed = None;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(part)) => {
                    spot.sample.extend(part.sample);
                    spot.took = spot.took.max(part.took);
                }
                Ok(Err(e)) => failed = failed.or(Some(format!("spot check: {e}"))),
                Err(_) => failed = failed.or(Some("spot check: a thread of it panicked".into())),
            }
        }
        if let Some(why) = failed {
            return Err(Error::Failed(why));
        }
        spot.waited = started.elapsed();
        Ok(spot)
    }
}

/// The sample's runs of rows, one a thread: at most one thread a core and
/// [`SPOT_MAX_THREADS`] in all, each with at least [`SPOT_PIECE_ROWS`]
/// rows (one thread for an empty sample).
fn shares(rows: usize, cores: usize) -> Vec<std::ops::Range<usize>> {
    let k = (rows / SPOT_PIECE_ROWS)
        .min(cores)
        .clamp(1, SPOT_MAX_THREADS);
    (0..k).map(|i| rows * i / k..rows * (i + 1) / k).collect()
}

impl Drop for SpotCheck {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Lowers the calling thread's scheduling priority to the lowest (nice 19,
/// Linux schedules threads one by one): the spot check then takes the CPU
/// time the run leaves idle (between chunks, while a worker waits for its
/// next rows) before it takes any from the scoring threads on the same
/// cores. When the run is done it runs alone, on every core, so the gate's
/// wait for it is not made longer. A failure leaves the priority as it was.
fn yield_to_the_run() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS
    // and a thread id of this process changes only that thread's nice
    // value.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// Reads input rows `at` (ascending) and scores them on the reference.
fn rescore(
    dataset: &Dataset,
    model: &Model,
    at: &[u64],
    ids: EntityIds,
    excludes_seen: bool,
    stop: &AtomicBool,
) -> Result<Vec<SampleRow>, String> {
    if at.is_empty() {
        return Ok(Vec::new());
    }
    let rows = dataset
        .read_rows_at_with_ids(at, ids)
        .map_err(|e| format!("cannot read the sampled rows: {e}"))?;
    let mut sample = Vec::with_capacity(rows.len());
    for start in (0..rows.len()).step_by(SPOT_PIECE_ROWS) {
        if stop.load(Ordering::Relaxed) {
            return Err("stopped: the run ended before its gate".into());
        }
        let piece = rows.slice(start..(start + SPOT_PIECE_ROWS).min(rows.len()));
        let preds = model.predict_reference(&piece).map_err(|e| e.to_string())?;
        for i in 0..piece.len() {
            sample.push(SampleRow {
                key: piece.ids.key(i),
                history: match excludes_seen {
                    true => piece.history_of(i).to_vec(),
                    false => Vec::new(),
                },
                expected: value_of(&preds, i),
            });
        }
    }
    Ok(sample)
}

/// The gate's plan: every input entity but those left out by
/// `on_invalid = "skip"`, and the spot check's `sample`.
pub fn plan(p: &Prepared, sample: Vec<SampleRow>, scanned: Vec<ChunkScan>) -> ValidationPlan<'_> {
    let skipped = p.skipped_rows();
    let ids = match skipped.is_empty() {
        true => Cow::Borrowed(&p.index.ids),
        false => Cow::Owned(keep_rows(&p.index.ids, &skipped)),
    };
    ValidationPlan {
        ids,
        top_k: p.job.model.spec.top_k(),
        sample,
        tolerance: SPOT_TOLERANCE,
        cfg: p.job.validate.clone(),
        excluded: skipped.len() as u64,
        scanned,
    }
}

/// A seed for the sample of `version` that no worker can know: the
/// operating system's randomness, mixed with the version number.
fn sample_seed(version: u64) -> Result<u64, String> {
    getrandom::u64()
        .map(|secret| secret ^ version)
        .map_err(|e| format!("no random seed for its sample from the operating system: {e}"))
}

/// The input rows (ascending) of a sample of `want` rows drawn with `seed`
/// from `0..rows` but for those `skipped` (ascending): all of them when
/// fewer are left.
fn sample_rows(seed: u64, rows: u64, skipped: &[u64], want: u64) -> Vec<u64> {
    let eligible = rows - skipped.len() as u64;
    let mut rng = SplitMix64(seed);
    input_rows(
        &uniform_sample(&mut rng, eligible, want.min(eligible)),
        skipped,
    )
}

/// `want` distinct numbers of `0..n`, each set of them equally likely
/// (Floyd's algorithm), ascending.
fn uniform_sample(rng: &mut SplitMix64, n: u64, want: u64) -> Vec<u64> {
    let mut chosen = std::collections::BTreeSet::new();
    for j in n - want..n {
        let t = rng.in_range(0..j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// The input rows of the `picks`-th rows (ascending) that are not in
/// `skipped` (ascending).
fn input_rows(picks: &[u64], skipped: &[u64]) -> Vec<u64> {
    let mut s = 0usize;
    picks
        .iter()
        .map(|&j| {
            let mut row = j + s as u64;
            while s < skipped.len() && skipped[s] <= row {
                s += 1;
                row = j + s as u64;
            }
            row
        })
        .collect()
}

/// `ids` without the rows `skipped` (ascending).
fn keep_rows(ids: &EntityIds, skipped: &[u64]) -> EntityIds {
    let keep = |i: &usize| skipped.binary_search(&(*i as u64)).is_err();
    match ids {
        EntityIds::Int(v) => EntityIds::Int((0..v.len()).filter(keep).map(|i| v[i]).collect()),
        EntityIds::Str(v) => {
            EntityIds::Str((0..v.len()).filter(keep).map(|i| v[i].clone()).collect())
        }
    }
}

/// Row `i` of `preds` as a stored value.
pub fn value_of(preds: &Predictions, i: usize) -> Value {
    match preds.row(i) {
        PredictionRow::Scores(scores) => Value::Scores(scores.to_vec()),
        PredictionRow::TopK { items, scores } => {
            Value::TopK(items.iter().copied().zip(scores.iter().copied()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_distinct_sorted_and_spread_over_the_whole_range() {
        let mut rng = SplitMix64(7);
        let picks = uniform_sample(&mut rng, 100_000, 500);
        assert_eq!(picks.len(), 500);
        assert!(picks.windows(2).all(|w| w[0] < w[1]));
        // Every tenth of the range gets about a tenth of the sample (a
        // handful of windows could not do this).
        for tenth in 0..10u64 {
            let inside = picks.iter().filter(|&&p| p / 10_000 == tenth).count();
            assert!((20..=80).contains(&inside), "tenth {tenth}: {inside}");
        }
        assert_eq!(uniform_sample(&mut rng, 5, 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn the_sample_cannot_be_told_from_the_version_number() {
        // Two draws for the same version (and input) pick other rows: the
        // seeds differ (equal with odds of one in 2^64).
        let (a, b) = (sample_seed(3).unwrap(), sample_seed(3).unwrap());
        assert_ne!(a, b);
        assert_ne!(
            sample_rows(a, 1_000_000, &[], 200),
            sample_rows(b, 1_000_000, &[], 200)
        );
        // One seed always draws the same rows, skipped ones left out.
        let skipped = [0, 5, 6];
        let rows = sample_rows(a, 10, &skipped, 7);
        assert_eq!(rows, vec![1, 2, 3, 4, 7, 8, 9]);
        assert_eq!(
            sample_rows(a, 1_000, &skipped, 50),
            sample_rows(a, 1_000, &skipped, 50)
        );
    }

    #[test]
    fn sampled_positions_step_over_skipped_rows() {
        assert_eq!(input_rows(&[0, 1, 2, 3], &[1, 2]), vec![0, 3, 4, 5]);
        assert_eq!(input_rows(&[0, 2], &[0]), vec![1, 3]);
        assert_eq!(input_rows(&[5], &[]), vec![5]);
    }

    #[test]
    fn the_sample_is_shared_by_the_cores_in_runs_that_cover_it_once() {
        let bounds = |rows, cores| -> Vec<(usize, usize)> {
            shares(rows, cores)
                .iter()
                .map(|r| (r.start, r.end))
                .collect()
        };
        assert_eq!(bounds(200, 2), [(0, 100), (100, 200)]);
        assert_eq!(bounds(200, 16), [(0, 66), (66, 133), (133, 200)]);
        assert_eq!(bounds(127, 4), [(0, 127)]);
        assert_eq!(bounds(128, 4), [(0, 64), (64, 128)]);
        assert_eq!(bounds(10, 4), [(0, 10)]);
        assert_eq!(bounds(200, 1), [(0, 200)]);
        assert_eq!(bounds(0, 8), [(0, 0)]);
        let many = bounds(100_000, 64);
        assert_eq!(many.len(), SPOT_MAX_THREADS);
        assert!(many.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!((many[0].0, many[7].1), (0, 100_000));
    }
}
