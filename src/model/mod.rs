//! Model families, safetensors loading, the CPU reference and the fast CPU
//! path.
//!
//! Each family lives in a folder of its own (`mlp/`, `two_tower/`) and is
//! listed once below (the registry; its seam is in [`family`]); the rest of
//! herd asks a
//! [`ModelSpec`] or a [`Model`] through methods and never matches on the
//! kinds. Shared pieces: [`layers`] (stacks of dense layers), [`weights`]
//! (reading safetensors), `simd` (AVX2 and AVX-512 kernels for dot products
//! and catalogue scoring), `gemm` (the AVX-512 dense layer kernel).
//!
//! Pure: weights arrive as bytes, rows arrive as [`Rows`]; nothing here reads a
//! file or a clock or spawns a thread (the worker splits rows over threads and
//! joins the parts with [`Predictions::concat`]). The reference path
//! (`predict_reference`) is written to be obviously right and is what every
//! other backend is checked against.

use serde::{Deserialize, Serialize};

mod error;
pub mod family;
pub(crate) mod gemm;
pub mod layers;
pub mod onnx;
mod predictions;
// AVX-512 intrinsics are stable from Rust 1.89. Cargo.toml's rust-version
// (1.85) already predates the let-chains the crate uses (1.88); it is to be
// raised to 1.89 crate-wide, with the clippy fixes that brings.
#[clippy::msrv = "1.89"]
mod simd;
mod sparse;
#[cfg(test)]
mod tests;
pub mod trees;
pub(crate) mod weights;

// The model families: a folder each, and a line each in the list below.
pub mod mlp;
pub mod two_tower;

family::families! {
    /// Dense features through dense layers (churn-style scoring).
    Mlp: mlp::{Mlp, MlpSpec},
    /// Pooled history through a user tower, top-K by dot product.
    TwoTower: two_tower::{TwoTower, TwoTowerSpec},
    /// A user's own model from an ONNX file (networks, tree ensembles).
    Onnx: onnx::{Onnx, OnnxSpec},
}

pub use error::{Error, Result};
pub use family::{Family, FamilySpec, Scorer, family};
pub use layers::{Dense, OutputActivation};
pub use mlp::{Mlp, MlpSpec};
pub use simd::{Level as SimdLevel, level as simd_level};
pub use sparse::{SparseTrial, set_sparse_limit, sparse_limit, sparse_limit_from};
pub use two_tower::{ItemIndex, TOWER_PREFIX, TwoTower, TwoTowerSpec};

/// Entity ids of a run of rows: integers or strings, as the input file has them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EntityIds {
    Int(Vec<u64>),
    Str(Vec<String>),
}

impl EntityIds {
    pub fn len(&self) -> usize {
        match self {
            EntityIds::Int(v) => v.len(),
            EntityIds::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store key of entity `i`: u64 big-endian for integers, UTF-8 for strings.
    pub fn key(&self, i: usize) -> EntityKey {
        match self {
            EntityIds::Int(v) => EntityKey::Int(v[i]),
            EntityIds::Str(v) => EntityKey::Str(v[i].clone()),
        }
    }

    /// The ids of rows `at`, in that order.
    pub fn rows_at(&self, at: &[u64]) -> EntityIds {
        match self {
            EntityIds::Int(v) => EntityIds::Int(at.iter().map(|&r| v[r as usize]).collect()),
            EntityIds::Str(v) => {
                EntityIds::Str(at.iter().map(|&r| v[r as usize].clone()).collect())
            }
        }
    }

    /// Rows `range` of these ids.
    pub fn slice(&self, range: std::ops::Range<usize>) -> EntityIds {
        match self {
            EntityIds::Int(v) => EntityIds::Int(v[range].to_vec()),
            EntityIds::Str(v) => EntityIds::Str(v[range].to_vec()),
        }
    }
}

/// One entity id, as a store key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntityKey {
    Int(u64),
    Str(String),
}

impl EntityKey {
    /// The LMDB key bytes: u64 big-endian for integer ids, UTF-8 for string ids.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            EntityKey::Int(v) => v.to_be_bytes().to_vec(),
            EntityKey::Str(s) => s.as_bytes().to_vec(),
        }
    }

    /// The id as the input holds it (a string id as is; see the `Display`
    /// form for messages).
    pub fn into_text(self) -> String {
        match self {
            EntityKey::Int(v) => v.to_string(),
            EntityKey::Str(s) => s,
        }
    }
}

/// The most scores one entity's prediction may have: a stored value's
/// count is 16 bits (`store::value::MAX_COUNT`).
pub const MAX_SCORES: usize = u16::MAX as usize;

/// The most characters of a string id a message shows.
pub const SHOWN_ID_CHARS: usize = 64;

/// An id as messages show it: a string id's control characters escaped
/// (`\u{1b}`; an id from the input must not drive the terminal) and one
/// longer than [`SHOWN_ID_CHARS`] cut there, its length said.
impl std::fmt::Display for EntityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntityKey::Int(v) => write!(f, "{v}"),
            EntityKey::Str(s) => write!(f, "{}", shown_id(s)),
        }
    }
}

/// `id` as a message shows it: see [`EntityKey`]'s `Display`.
pub fn shown_id(id: &str) -> String {
    let mut out = String::new();
    for (n, c) in id.chars().enumerate() {
        if n == SHOWN_ID_CHARS {
            out.push_str(&format!("... ({} bytes in all)", id.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The rows of one chunk, columnar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub ids: EntityIds,
    /// Dense features per row.
    pub num_features: usize,
    /// `len() * num_features` values, row-major.
    pub features: Vec<f32>,
    /// `len() + 1` offsets into `history_items` when the input has a history
    /// column, else empty.
    pub history_offsets: Vec<u32>,
    /// Item ids of every row's history, oldest first.
    pub history_items: Vec<u32>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of input these rows hold: ids (8 per integer id, the
    /// length of a string id), features and history items (4 each). What
    /// the run report counts as input carried or read.
    pub fn byte_size(&self) -> u64 {
        let ids = match &self.ids {
            EntityIds::Int(v) => 8 * v.len() as u64,
            EntityIds::Str(v) => v.iter().map(|s| s.len() as u64).sum(),
        };
        ids + 4
            * (self.features.len() + self.history_offsets.len() + self.history_items.len()) as u64
    }

    /// Row `i`'s dense features.
    pub fn features_of(&self, i: usize) -> &[f32] {
        &self.features[i * self.num_features..(i + 1) * self.num_features]
    }

    /// Row `i`'s history (empty when the input has no history column).
    pub fn history_of(&self, i: usize) -> &[u32] {
        if self.history_offsets.is_empty() {
            return &[];
        }
        let (a, b) = (self.history_offsets[i], self.history_offsets[i + 1]);
        &self.history_items[a as usize..b as usize]
    }

    /// Whether these rows are well formed for a model loaded for
    /// `num_features` feature columns: the feature matrix holds
    /// `len() x num_features` values, and the history offsets (when present)
    /// number `len() + 1`, start at 0, never decrease and end at the number of
    /// history items. A worker checks every `Run` with this before scoring,
    /// since the scoring loops index by these offsets.
    pub fn check_shape(&self, num_features: usize) -> std::result::Result<(), String> {
        let n = self.len();
        if self.num_features != num_features {
            return Err(format!(
                "rows carry {} feature columns but the model was loaded for {num_features}",
                self.num_features
            ));
        }
        match n.checked_mul(num_features) {
            Some(want) if want == self.features.len() => {}
            _ => {
                return Err(format!(
                    "{} feature values for {n} rows of {num_features} features",
                    self.features.len()
                ));
            }
        }
        if self.history_offsets.is_empty() {
            return match self.history_items.is_empty() {
                true => Ok(()),
                false => Err("history items without history offsets".into()),
            };
        }
        if self.history_offsets.len() != n + 1 {
            return Err(format!(
                "{} history offsets for {n} rows (want {})",
                self.history_offsets.len(),
                n + 1
            ));
        }
        if self.history_offsets[0] != 0 {
            return Err(format!(
                "the first history offset is {}, not 0",
                self.history_offsets[0]
            ));
        }
        if let Some(i) = self.history_offsets.windows(2).position(|w| w[0] > w[1]) {
            return Err(format!(
                "history offsets decrease at row {i} ({} > {})",
                self.history_offsets[i],
                self.history_offsets[i + 1]
            ));
        }
        let last = self.history_offsets[n] as usize;
        if last != self.history_items.len() {
            return Err(format!(
                "the history offsets end at {last}, but there are {} history items",
                self.history_items.len()
            ));
        }
        Ok(())
    }

    /// Rows `range` of these rows, as a new `Rows`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Rows {
        let f = self.num_features;
        let (history_offsets, history_items) = if self.history_offsets.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let base = self.history_offsets[range.start];
            let end = self.history_offsets[range.end];
            (
                self.history_offsets[range.start..=range.end]
                    .iter()
                    .map(|o| o - base)
                    .collect(),
                self.history_items[base as usize..end as usize].to_vec(),
            )
        };
        Rows {
            ids: self.ids.slice(range.clone()),
            num_features: f,
            features: self.features[range.start * f..range.end * f].to_vec(),
            history_offsets,
            history_items,
        }
    }
}

/// What a model produced for a run of rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Predictions {
    /// `width` scores per row (mlp), row-major.
    Scores { width: usize, values: Vec<f32> },
    /// Top-K (item id, score) pairs per row (two_tower), best first; row `i`
    /// owns `offsets[i]..offsets[i + 1]` of `items` and `scores`.
    TopK {
        offsets: Vec<u32>,
        items: Vec<u32>,
        scores: Vec<f32>,
    },
}

impl Predictions {
    pub fn len(&self) -> usize {
        match self {
            Predictions::Scores { width, values } => values.len().checked_div(*width).unwrap_or(0),
            Predictions::TopK { offsets, .. } => offsets.len().saturating_sub(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` rows of these predictions.
    pub fn truncate(&mut self, n: usize) {
        match self {
            Predictions::Scores { width, values } => values.truncate(n * *width),
            Predictions::TopK {
                offsets,
                items,
                scores,
            } => {
                offsets.truncate(n + 1);
                let end = *offsets.last().unwrap_or(&0) as usize;
                items.truncate(end);
                scores.truncate(end);
            }
        }
    }
}

/// One row of [`Predictions`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PredictionRow<'a> {
    Scores(&'a [f32]),
    /// Best first.
    TopK {
        items: &'a [u32],
        scores: &'a [f32],
    },
}

impl PredictionRow<'_> {
    /// Scores in the row (the value's `count`).
    pub fn len(&self) -> usize {
        match self {
            PredictionRow::Scores(s) => s.len(),
            PredictionRow::TopK { items, .. } => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Predictions {
    /// Row `i`; panics when `i` is out of range, as slice indexing does.
    pub fn row(&self, i: usize) -> PredictionRow<'_> {
        match self {
            Predictions::Scores { width, values } => {
                PredictionRow::Scores(&values[i * width..(i + 1) * width])
            }
            Predictions::TopK {
                offsets,
                items,
                scores,
            } => {
                let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
                PredictionRow::TopK {
                    items: &items[a..b],
                    scores: &scores[a..b],
                }
            }
        }
    }
}

/// Panics unless `rows` carries the `expected` number of feature columns (a
/// model is loaded for one input's columns).
pub(crate) fn check_features(expected: usize, rows: &Rows) {
    assert_eq!(
        rows.num_features, expected,
        "rows carry {} feature columns but the model was loaded for {}",
        rows.num_features, expected
    );
}
