//! `two_tower` (candidate generation): the user vector is the mean of the
//! last `max_history` history items' embeddings followed by the dense
//! features, through the user tower; it is scored by dot product against
//! every item embedding and the top K (item, score) pairs are kept,
//! excluding every item of the history when `exclude_seen`.
//!
//! The fine print every backend agrees on: a history is oldest first and the
//! cap keeps its last entries; a repeated item counts once per occurrence;
//! ids missing from the catalogue are skipped; an empty history pools to
//! zeros; fewer than K eligible items give fewer than K results; ties in
//! score go to the smaller item id.

mod catalogue;
mod fast;
mod reference;
mod spec;

use std::cmp::Ordering;

use super::family::{Family, Scorer};
use super::layers::{layers_cost, layers_shape};
use super::{Dense, ModelSpec, Predictions, Result, Rows};

pub use catalogue::ItemIndex;
#[cfg(test)]
pub(crate) use fast::{ITEM_TILE, USER_BLOCK};
pub use spec::{DEFAULT_MAX_HISTORY, DEFAULT_TOP_K, MAX_MAX_HISTORY, MAX_TOP_K, TwoTowerSpec};

/// The prefix of the user tower's layers in two_tower weights.
pub const TOWER_PREFIX: &str = "user_tower.";

/// The registry entry of `kind = "two_tower"`.
pub static FAMILY: Family = Family {
    kind: "two_tower",
    keys: &["top_k", "max_history", "exclude_seen"],
    reads_history: true,
    needs_features: false,
    resolve: |raw, src| TwoTowerSpec::resolve(raw, src).map(ModelSpec::TwoTower),
};

/// Mean-pooled history (+ features) through the user tower, scored by dot
/// product against every item embedding, top K kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TwoTower {
    pub dim: usize,
    /// `[items, dim]`, row-major.
    pub item_embeddings: Vec<f32>,
    /// The id of each embedding row (the row index when the file has none).
    pub item_ids: Vec<u32>,
    /// The user tower; empty: the pooled history is the user vector.
    pub tower: Vec<Dense>,
    pub num_features: usize,
    pub top_k: usize,
    pub max_history: usize,
    pub exclude_seen: bool,
}

/// The order of top-K results: higher score first, then the smaller item id.
/// `-0.0` and `0.0` are the same score.
pub(crate) fn topk_order(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    (b.0 + 0.0)
        .total_cmp(&(a.0 + 0.0))
        .then_with(|| a.1.cmp(&b.1))
}

impl Scorer for TwoTower {
    fn predict_reference(&self, rows: &Rows) -> Result<Predictions> {
        Ok(reference::predict(self, rows))
    }

    fn predict(&self, rows: &Rows) -> Result<Predictions> {
        Ok(fast::predict(self, rows))
    }

    /// The catalogue is streamed once per block of [`USER_BLOCK`] users.
    fn block_rows(&self) -> usize {
        fast::USER_BLOCK
    }

    /// min(history, max_history) x dim + the tower's in x out + items x dim.
    fn entity_cost(&self, history_len: usize) -> u64 {
        let pooled = history_len.min(self.max_history) as u64 * self.dim as u64;
        pooled + layers_cost(&self.tower) + self.items() as u64 * self.dim as u64
    }

    fn describe(&self) -> String {
        let tower = if self.tower.is_empty() {
            "no tower".to_string()
        } else {
            format!("tower {}", layers_shape(&self.tower))
        };
        format!(
            "two_tower: {} items x {}, {tower}, top {}, max history {}{}",
            self.items(),
            self.dim,
            self.top_k,
            self.max_history,
            if self.exclude_seen {
                ", exclude seen"
            } else {
                ""
            }
        )
    }
}
