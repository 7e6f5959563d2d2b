//! Builds the validation gate's inputs: every input id, and a spot-check
//! sample re-scored here on the CPU reference (which catches a wrong GPU
//! kernel or a corrupt worker before readers see it).

use crate::model::{PredictionRow, Predictions};
use crate::splitmix::SplitMix64;
use crate::store::Value;
use crate::store::validate::{SampleRow, ValidationPlan};

use super::{Error, Prepared};

/// The sample is read as this many windows of consecutive rows (one row
/// group read each), spread over the input.
const SPOT_WINDOWS: u64 = 8;
/// Scores may differ from the reference by this much (relative where large):
/// backends sum in different orders.
pub const SPOT_TOLERANCE: f32 = 1e-4;

pub fn plan(p: &Prepared, version: u64) -> Result<ValidationPlan, Error> {
    let n = p.index.ids.len() as u64;
    let want = p.job.validate.spot_check.min(n);
    let mut sample = Vec::new();
    if want > 0 {
        let windows = SPOT_WINDOWS.min(want);
        let per = want.div_ceil(windows);
        let mut rng = SplitMix64(version ^ 0xD1B5_4A32_D192_ED03);
        let mut taken = std::collections::BTreeSet::new();
        for _ in 0..windows {
            let len = per.min(n);
            let start = rng.in_range(0..n - len + 1);
            let rows = p.dataset.read_rows(start..start + len).map_err(|e| {
                Error::Failed(format!(
                    "spot check: cannot read rows {start}..{}: {e}",
                    start + len
                ))
            })?;
            let preds = p.model.predict_reference(&rows).map_err(|e| {
                Error::Failed(format!("spot check: rows {start}..{}: {e}", start + len))
            })?;
            for i in 0..rows.len() {
                if !taken.insert(start + i as u64) {
                    continue;
                }
                sample.push(SampleRow {
                    key: rows.ids.key(i),
                    history: rows.history_of(i).to_vec(),
                    expected: value_of(&preds, i),
                });
            }
        }
    }
    let top_k = p.job.model.spec.top_k();
    Ok(ValidationPlan {
        ids: p.index.ids.clone(),
        top_k,
        sample,
        tolerance: SPOT_TOLERANCE,
        cfg: p.job.validate.clone(),
    })
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
