//! Hooks herd's own tests use to make a run misbehave on purpose: a slow
//! worker slot, a worker that plants faults in its results. They are never
//! settings.
//!
//! Fenced here, and compiled only with the `test-hooks` feature: `cargo test`
//! turns it on (the package's dev-dependency on itself), so the binaries the
//! tests start obey these variables; `cargo build` and `cargo run` leave it
//! off, and then nothing here reads the environment or changes a result.
//! Each side applies them in one place: the coordinator when it starts a
//! worker ([`worker_env`]), the worker in its attempt loop ([`WorkerHooks`]).

use std::time::Duration;

use crate::model::Predictions;
use crate::proto::FromWorker;
use crate::sched::AttemptId;

/// `SLOT:FACTOR`: the worker of global slot SLOT pretends to be FACTOR times
/// slower (read by the coordinator, passed on as [`SLOWDOWN_ENV`]).
pub const SLOW_SLOT_ENV: &str = "HERD_TEST_SLOW_SLOT";

/// A factor by which a worker pretends to be slower: it sleeps
/// `(factor - 1) x` the compute time after each batch.
pub const SLOWDOWN_ENV: &str = "HERD_TEST_WORKER_SLOWDOWN";

/// Plants a fault in every result a worker sends, so tests can drive the
/// validation gate and the coordinator's checks through the real binary:
/// `nan` (each row's first score becomes NaN), `perturb` (0.5 added to every
/// score), `unsort` (each row's first two top-K pairs swap places), `drop`
/// (the result lacks its last row), `extra` (one row more than it was sent),
/// `overlong` (a top-K row one pair longer than it was), `offsets` (top-K
/// offsets pointing past the items); and lies about attempts: `misroute`
/// (the result is sent under the next attempt's id instead of its own),
/// `forge` (a copy of the result is also sent for the next attempt's id),
/// `progress` (progress is also reported for an attempt never sent),
/// `invalid` (the attempt's first row is said to hold an invalid feature).
/// Workers inherit it from the coordinator.
pub const FAULT_ENV: &str = "HERD_TEST_WORKER_FAULT";

/// `SLOT:FAULT`: only the worker of global slot SLOT (and its replacements)
/// plants FAULT (passed on as [`FAULT_ENV`]).
pub const BAD_SLOT_ENV: &str = "HERD_TEST_BAD_SLOT";

/// `DIR:N`: every worker, before it says hello, leaves a file in DIR and
/// waits until N workers have (at most [`BARRIER_WAIT`]), so a test can have
/// every host's workers start scoring together. Passed on to every worker.
pub const BARRIER_ENV: &str = "HERD_TEST_WORKER_BARRIER";

/// How long a worker waits at the [`BARRIER_ENV`] barrier.
pub const BARRIER_WAIT: Duration = Duration::from_secs(120);

/// Environment to add to the worker of global slot `slot`.
pub fn worker_env(slot: u32) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(barrier) = barrier() {
        env.push((BARRIER_ENV.to_string(), barrier));
    }
    if let Some((s, factor)) = slow_slot()
        && s == slot
    {
        env.push((SLOWDOWN_ENV.to_string(), factor.to_string()));
    }
    if let Some((s, fault)) = bad_slot()
        && s == slot
    {
        env.push((FAULT_ENV.to_string(), fault));
    }
    env
}

#[cfg(feature = "test-hooks")]
fn barrier() -> Option<String> {
    std::env::var(BARRIER_ENV).ok()
}

#[cfg(not(feature = "test-hooks"))]
fn barrier() -> Option<String> {
    None
}

#[cfg(feature = "test-hooks")]
fn bad_slot() -> Option<(u32, String)> {
    let v = std::env::var(BAD_SLOT_ENV).ok()?;
    let (s, f) = v.split_once(':')?;
    Some((s.parse().ok()?, f.to_string()))
}

#[cfg(not(feature = "test-hooks"))]
fn bad_slot() -> Option<(u32, String)> {
    None
}

#[cfg(feature = "test-hooks")]
fn slow_slot() -> Option<(u32, f64)> {
    let v = std::env::var(SLOW_SLOT_ENV).ok()?;
    let (s, f) = v.split_once(':')?;
    Some((s.parse().ok()?, f.parse().ok()?))
}

#[cfg(not(feature = "test-hooks"))]
fn slow_slot() -> Option<(u32, f64)> {
    None
}

/// A worker's hooks, read from its environment once at start.
#[derive(Clone, Debug, Default)]
pub struct WorkerHooks {
    slowdown: f64,
    fault: Option<String>,
}

impl WorkerHooks {
    #[cfg(feature = "test-hooks")]
    pub fn from_env() -> WorkerHooks {
        WorkerHooks {
            slowdown: std::env::var(SLOWDOWN_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1.0),
            fault: std::env::var(FAULT_ENV).ok(),
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    pub fn from_env() -> WorkerHooks {
        WorkerHooks::default()
    }

    /// Waits at the [`BARRIER_ENV`] barrier, when one is set.
    pub fn wait_at_barrier(&self) {
        let Some((dir, n)) = barrier().and_then(|b| {
            let (dir, n) = b.rsplit_once(':')?;
            Some((std::path::PathBuf::from(dir), n.parse::<usize>().ok()?))
        }) else {
            return;
        };
        let _ = std::fs::write(dir.join(std::process::id().to_string()), b"");
        let started = std::time::Instant::now();
        while started.elapsed() < BARRIER_WAIT {
            let arrived = std::fs::read_dir(&dir).map_or(0, |d| d.count());
            if arrived >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Called after each batch, which took `took` to compute.
    pub fn after_batch(&self, took: Duration) {
        if self.slowdown > 1.0 {
            std::thread::sleep(took.mul_f64(self.slowdown - 1.0));
        }
    }

    /// Called on a finished result before it is sent.
    pub fn before_result(&self, preds: &mut Predictions) -> Result<(), String> {
        match self.fault.as_deref() {
            Some(fault) => plant_fault(fault, preds),
            None => Ok(()),
        }
    }

    /// The attempt id a finished result of `attempt` is sent under.
    pub fn result_attempt(&self, attempt: AttemptId) -> AttemptId {
        match self.fault.as_deref() {
            Some("misroute") => attempt + 1,
            _ => attempt,
        }
    }

    /// Messages sent just before the result of `attempt`.
    pub fn forged_results(&self, attempt: AttemptId, preds: &Predictions) -> Vec<FromWorker> {
        match self.fault.as_deref() {
            Some("forge") => vec![FromWorker::Result {
                attempt: attempt + 1,
                predictions: preds.clone(),
                input_bytes: 0,
                read_ahead: false,
                peak_rss_bytes: 0,
            }],
            Some("progress") => vec![FromWorker::Progress {
                attempt: attempt + 1000,
                rows_done: 1,
            }],
            Some("invalid") => vec![FromWorker::InvalidInput { attempt, row: 0 }],
            _ => Vec::new(),
        }
    }
}

/// Applies the fault named by [`FAULT_ENV`] to a finished result.
fn plant_fault(fault: &str, preds: &mut Predictions) -> Result<(), String> {
    let rows = preds.len();
    match (fault, preds) {
        ("nan", Predictions::Scores { width, values }) => {
            values
                .iter_mut()
                .step_by((*width).max(1))
                .for_each(|s| *s = f32::NAN);
        }
        (
            "nan",
            Predictions::TopK {
                offsets, scores, ..
            },
        ) => {
            for w in offsets.windows(2).filter(|w| w[0] < w[1]) {
                scores[w[0] as usize] = f32::NAN;
            }
        }
        ("perturb", Predictions::Scores { values: scores, .. })
        | ("perturb", Predictions::TopK { scores, .. }) => {
            scores.iter_mut().for_each(|s| *s += 0.5);
        }
        (
            "unsort",
            Predictions::TopK {
                offsets,
                items,
                scores,
            },
        ) => {
            for w in offsets.windows(2).filter(|w| w[1] - w[0] >= 2) {
                let a = w[0] as usize;
                items.swap(a, a + 1);
                scores.swap(a, a + 1);
            }
        }
        ("drop", preds) => preds.truncate(rows.saturating_sub(1)),
        ("extra", Predictions::Scores { width, values }) => {
            let row = values[..*width].to_vec();
            values.extend(row);
        }
        (
            "extra",
            Predictions::TopK {
                offsets,
                items,
                scores,
            },
        ) => {
            let end = offsets[1] as usize;
            items.extend_from_within(..end);
            scores.extend_from_within(..end);
            offsets.push(items.len() as u32);
        }
        (
            "overlong",
            Predictions::TopK {
                offsets,
                items,
                scores,
            },
        ) => {
            let extra = (items[0].wrapping_add(1), scores[0] - 1.0);
            let end = offsets[1] as usize;
            items.insert(end, extra.0);
            scores.insert(end, extra.1 - 1.0e6);
            offsets[1..].iter_mut().for_each(|o| *o += 1);
        }
        ("offsets", Predictions::TopK { offsets, .. }) => {
            if let Some(last) = offsets.last_mut() {
                *last += 1000;
            }
        }
        ("misroute" | "forge" | "progress" | "invalid", _) => {}
        (other, _) => {
            return Err(format!(
                "{FAULT_ENV}='{other}' is not a fault this worker can plant \
                 (nan, perturb, unsort, drop, extra, overlong, offsets, misroute, forge, progress, invalid)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_leaves_out_the_last_row_of_either_kind() {
        let mut scores = Predictions::Scores {
            width: 2,
            values: vec![1.0, 2.0, 3.0, 4.0],
        };
        plant_fault("drop", &mut scores).unwrap();
        assert_eq!(scores.len(), 1);
        let mut top = Predictions::TopK {
            offsets: vec![0, 2, 3],
            items: vec![1, 2, 3],
            scores: vec![0.5, 0.4, 0.3],
        };
        plant_fault("drop", &mut top).unwrap();
        assert_eq!(
            top,
            Predictions::TopK {
                offsets: vec![0, 2],
                items: vec![1, 2],
                scores: vec![0.5, 0.4],
            }
        );
    }

    #[test]
    fn an_unknown_fault_is_refused_by_name() {
        let mut p = Predictions::Scores {
            width: 1,
            values: vec![1.0],
        };
        let e = plant_fault("melt", &mut p).unwrap_err();
        assert!(e.contains("'melt'"), "{e}");
    }

    #[test]
    fn hooks_do_nothing_when_no_variable_is_set() {
        let hooks = WorkerHooks::default();
        let mut p = Predictions::Scores {
            width: 1,
            values: vec![1.0],
        };
        hooks.before_result(&mut p).unwrap();
        assert_eq!(p.len(), 1);
    }
}
