//! Builds the validation gate's inputs: every input id, and a spot-check
//! sample re-scored here on the CPU reference (which catches a wrong GPU
//! kernel or a corrupt worker before readers see it).

use crate::model::{EntityIds, PredictionRow, Predictions};
use crate::splitmix::SplitMix64;
use crate::store::Value;
use crate::store::validate::{SampleRow, ValidationPlan};

use super::{Error, Prepared};

/// Scores may differ from the reference by this much (relative where large):
/// backends sum in different orders.
pub const SPOT_TOLERANCE: f32 = 1e-4;

/// The gate's plan for `version`: every input entity but those left out by
/// `on_invalid = "skip"`, and the spot check: `[validate] spot_check` rows
/// drawn uniformly (without repeats) from the whole input, read where they
/// lie and re-scored on the CPU reference.
pub fn plan(p: &Prepared, version: u64) -> Result<ValidationPlan, Error> {
    let n = p.index.ids.len() as u64;
    let skipped: Vec<u64> = p.skipped.iter().map(|v| v.row).collect();
    let eligible = n - skipped.len() as u64;
    let want = p.job.validate.spot_check.min(eligible);
    let mut rng = SplitMix64(version ^ 0xD1B5_4A32_D192_ED03);
    let at = input_rows(&uniform_sample(&mut rng, eligible, want), &skipped);
    let mut sample = Vec::with_capacity(at.len());
    if !at.is_empty() {
        let rows = p
            .dataset
            .read_rows_at(&at)
            .map_err(|e| Error::Failed(format!("spot check: cannot read the sampled rows: {e}")))?;
        let preds = p
            .model
            .predict_reference(&rows)
            .map_err(|e| Error::Failed(format!("spot check: {e}")))?;
        let excludes_seen = p.job.model.spec.excludes_seen();
        for i in 0..rows.len() {
            sample.push(SampleRow {
                key: rows.ids.key(i),
                history: match excludes_seen {
                    true => rows.history_of(i).to_vec(),
                    false => Vec::new(),
                },
                expected: value_of(&preds, i),
            });
        }
    }
    let ids = match skipped.is_empty() {
        true => p.index.ids.clone(),
        false => keep_rows(&p.index.ids, &skipped),
    };
    Ok(ValidationPlan {
        ids,
        top_k: p.job.model.spec.top_k(),
        sample,
        tolerance: SPOT_TOLERANCE,
        cfg: p.job.validate.clone(),
        excluded: skipped.len() as u64,
    })
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
    fn sampled_positions_step_over_skipped_rows() {
        assert_eq!(input_rows(&[0, 1, 2, 3], &[1, 2]), vec![0, 3, 4, 5]);
        assert_eq!(input_rows(&[0, 2], &[0]), vec![1, 3]);
        assert_eq!(input_rows(&[5], &[]), vec![5]);
    }
}
