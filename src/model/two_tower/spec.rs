//! A two_tower model's settings (K, the history cap, whether seen items are
//! excluded), resolved from the job's `[model]` table, and reading its
//! weights: the item catalogue, its ids and the optional user tower.

use safetensors::{Dtype, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::{TOWER_PREFIX, TwoTower};
use crate::config::{self, raw, source::Source};
use crate::model::family::FamilySpec;
use crate::model::weights::{Weights, check_chain, read_f32};
use crate::model::{Dense, Error, Model, Result};

pub const DEFAULT_TOP_K: i64 = 100;
/// Largest `top_k`: every prediction holds K (item, score) pairs.
pub const MAX_TOP_K: i64 = 10_000;
pub const DEFAULT_MAX_HISTORY: i64 = 500;
/// Largest `max_history` (the per-entity work cap itself needs a bound).
pub const MAX_MAX_HISTORY: i64 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoTowerSpec {
    pub top_k: usize,
    /// The per-entity work cap: only the last `max_history` items pool.
    pub max_history: usize,
    pub exclude_seen: bool,
}

impl TwoTowerSpec {
    /// `top_k` (1 to 10,000, default 100), `max_history` (default 500) and
    /// `exclude_seen` (default true).
    pub(crate) fn resolve(raw: &raw::ModelTable, src: &Source<'_>) -> config::Result<TwoTowerSpec> {
        let top_k = src.int_or(
            &raw.top_k,
            DEFAULT_TOP_K,
            "[model] top_k",
            1,
            Some(MAX_TOP_K),
        )?;
        let max_history = src.int_or(
            &raw.max_history,
            DEFAULT_MAX_HISTORY,
            "[model] max_history",
            1,
            Some(MAX_MAX_HISTORY),
        )?;
        Ok(TwoTowerSpec {
            top_k: top_k as usize,
            max_history: max_history as usize,
            exclude_seen: raw.exclude_seen.as_ref().is_none_or(|v| *v.get_ref()),
        })
    }
}

impl FamilySpec for TwoTowerSpec {
    fn top_k(&self) -> Option<usize> {
        Some(self.top_k)
    }

    fn excludes_seen(&self) -> bool {
        self.exclude_seen
    }

    /// `item_embeddings` [items, dim], optional `item_ids` [items], and the
    /// user tower under `user_tower.`, which takes the pooled history plus
    /// `num_features` and gives `dim`; without a tower there must be no
    /// feature columns.
    fn load(&self, bytes: &[u8], num_features: usize) -> Result<Model> {
        let weights = Weights::parse(bytes)?;
        let (dim, item_embeddings, item_ids) = catalogue(&weights)?;
        let tower = tower(&weights, dim, num_features)?;
        Ok(Model::TwoTower(TwoTower {
            dim,
            item_embeddings,
            item_ids,
            tower,
            num_features,
            top_k: self.top_k,
            max_history: self.max_history,
            exclude_seen: self.exclude_seen,
        }))
    }
}

/// The item catalogue: (dim, embeddings, ids).
fn catalogue(weights: &Weights<'_>) -> Result<(usize, Vec<f32>, Vec<u32>)> {
    let emb_view = weights.get("two_tower", "item_embeddings")?;
    let (items, dim) = match emb_view.shape() {
        &[items, dim] => (items, dim),
        other => {
            return Err(Error::Shape {
                tensor: "item_embeddings".into(),
                expected: "[items, dim] (2-D)".into(),
                found: other.to_vec(),
            });
        }
    };
    if dim == 0 {
        return Err(Error::ZeroDim);
    }
    if items > u32::MAX as usize {
        return Err(Error::Shape {
            tensor: "item_embeddings".into(),
            expected: format!("at most {} items", u32::MAX),
            found: emb_view.shape().to_vec(),
        });
    }
    let item_embeddings = read_f32("item_embeddings", &emb_view)?;
    let item_ids = match weights.st.tensor("item_ids") {
        Ok(view) => {
            if view.shape() != [items] {
                return Err(Error::Shape {
                    tensor: "item_ids".into(),
                    expected: format!("[{items}] (one id per row of 'item_embeddings')"),
                    found: view.shape().to_vec(),
                });
            }
            read_ids(&view)?
        }
        Err(_) => (0..items as u32).collect(),
    };
    Ok((dim, item_embeddings, item_ids))
}

/// The user tower: takes `dim + num_features`, gives `dim`.
fn tower(weights: &Weights<'_>, dim: usize, num_features: usize) -> Result<Vec<Dense>> {
    let tower_names = weights.default_layer_names(TOWER_PREFIX)?;
    let tower = tower_names
        .iter()
        .map(|n| weights.dense("two_tower", n))
        .collect::<Result<Vec<_>>>()?;
    match tower.last() {
        None if num_features > 0 => {
            return Err(Error::FeaturesWithoutTower { num_features });
        }
        None => {}
        Some(last) => {
            check_chain(
                &tower,
                dim + num_features,
                format!("the pooled history ({dim}) plus {num_features} feature column(s)"),
            )?;
            if last.out_dim != dim {
                return Err(Error::TowerOutput {
                    layer: last.name.clone(),
                    found: last.out_dim,
                    dim,
                });
            }
        }
    }
    Ok(tower)
}

/// The `item_ids` tensor as u32 ids: any integer dtype, every value within
/// u32, no id twice.
fn read_ids(view: &TensorView<'_>) -> Result<Vec<u32>> {
    let data = view.data();
    let wide: Vec<i128> = match view.dtype() {
        Dtype::U8 => data.iter().map(|&b| b as i128).collect(),
        Dtype::I8 => data.iter().map(|&b| b as i8 as i128).collect(),
        Dtype::U16 => data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as i128)
            .collect(),
        Dtype::I16 => data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as i128)
            .collect(),
        Dtype::U32 => data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128)
            .collect(),
        Dtype::U64 => data
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as i128)
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as i128)
            .collect(),
        other => {
            return Err(Error::Dtype {
                tensor: "item_ids".into(),
                expected: "an integer dtype (I64, I32, U32, ...)",
                found: format!("{other:?}"),
            });
        }
    };
    // The first value that is out of range or repeats an earlier one is
    // the error, as a scan in order would find it.
    let mut ids = Vec::with_capacity(wide.len());
    let mut out_of_range = None;
    for (index, &value) in wide.iter().enumerate() {
        match u32::try_from(value) {
            Ok(id) => ids.push(id),
            Err(_) => {
                out_of_range = Some((index, value));
                break;
            }
        }
    }
    // Sorted by (id, position): each id's first two positions are adjacent.
    let mut by_id: Vec<(u32, u32)> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();
    by_id.sort_unstable();
    let repeat = by_id
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .min_by_key(|w| w[1].1)
        .map(|w| (w[0].0, w[0].1 as usize, w[1].1 as usize));
    if let Some((id, first, second)) = repeat {
        return Err(Error::DuplicateItemId { id, first, second });
    }
    if let Some((index, value)) = out_of_range {
        return Err(Error::ItemIdRange {
            index,
            value: value.to_string(),
        });
    }
    Ok(ids)
}
