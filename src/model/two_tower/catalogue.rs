//! Item id -> embedding row lookup for two_tower, built once per model use.

use std::collections::HashMap;

use super::TwoTower;

/// Ids up to `DENSE_INDEX_SLACK` x items (plus `DENSE_INDEX_MIN`) use a flat
/// table; sparser id spaces use a hash map.
const DENSE_INDEX_SLACK: usize = 4;
const DENSE_INDEX_MIN: usize = 1 << 16;
const ABSENT: u32 = u32::MAX;

/// Where each catalogue item id sits in `item_embeddings`.
#[derive(Clone, Debug)]
pub enum ItemIndex {
    /// `rows[id]` is the row, or `u32::MAX` when the id is not in the catalogue.
    Dense {
        rows: Vec<u32>,
    },
    Sparse {
        rows: HashMap<u32, u32>,
    },
}

impl ItemIndex {
    /// The embedding row of item `id`, or `None` when the catalogue lacks it.
    #[inline]
    pub fn row_of(&self, id: u32) -> Option<usize> {
        match self {
            ItemIndex::Dense { rows } => match rows.get(id as usize) {
                Some(&r) if r != ABSENT => Some(r as usize),
                _ => None,
            },
            ItemIndex::Sparse { rows } => rows.get(&id).map(|&r| r as usize),
        }
    }
}

impl TwoTower {
    /// Number of items in the catalogue.
    pub fn items(&self) -> usize {
        self.item_ids.len()
    }

    /// Item `row`'s embedding.
    pub fn embedding(&self, row: usize) -> &[f32] {
        &self.item_embeddings[row * self.dim..(row + 1) * self.dim]
    }

    /// The id -> row lookup for this catalogue.
    pub fn item_index(&self) -> ItemIndex {
        let max_id = self.item_ids.iter().copied().max().unwrap_or(0) as usize;
        let dense_limit = self
            .items()
            .saturating_mul(DENSE_INDEX_SLACK)
            .max(DENSE_INDEX_MIN);
        if max_id < dense_limit {
            let mut rows = vec![ABSENT; max_id + 1];
            for (row, &id) in self.item_ids.iter().enumerate() {
                rows[id as usize] = row as u32;
            }
            ItemIndex::Dense { rows }
        } else {
            let rows = self
                .item_ids
                .iter()
                .enumerate()
                .map(|(row, &id)| (id, row as u32))
                .collect();
            ItemIndex::Sparse { rows }
        }
    }
}
