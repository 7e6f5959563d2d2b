//! The two_tower reference: plain loops, one user at a time, written to be
//! obviously right; every other backend is checked against it.

use std::collections::HashMap;

use super::{TwoTower, topk_order};
use crate::model::layers::layers_one;
use crate::model::{Predictions, Rows, check_features};

/// `a . b`, summed in eight interleaved partial sums (then added in order),
/// which the compiler can keep in one vector register: a serial sum spends
/// the spot check's time waiting on each addition.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, p), q) in lanes.iter_mut().zip(x).zip(y) {
            *l += p * q;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

pub(super) fn predict(tt: &TwoTower, rows: &Rows) -> Predictions {
    check_features(tt.num_features, rows);
    let row_of: HashMap<u32, usize> = tt
        .item_ids
        .iter()
        .enumerate()
        .map(|(row, &id)| (id, row))
        .collect();
    let mut offsets = vec![0u32];
    let mut items = Vec::new();
    let mut scores = Vec::new();
    // Catalogue rows of the user's history (item ids are unique, checked at
    // load), marked for one user at a time: a flag read per item instead of
    // a hash lookup per item.
    let mut seen = vec![false; tt.item_ids.len()];
    let mut ranked: Vec<(f32, u32)> = Vec::with_capacity(tt.item_ids.len());
    for r in 0..rows.len() {
        let history = rows.history_of(r);
        let capped = &history[history.len().saturating_sub(tt.max_history)..];

        let mut pooled = vec![0.0f32; tt.dim];
        let mut count = 0usize;
        for id in capped {
            if let Some(&row) = row_of.get(id) {
                for (p, e) in pooled.iter_mut().zip(tt.embedding(row)) {
                    *p += e;
                }
                count += 1;
            }
        }
        if count > 0 {
            for p in pooled.iter_mut() {
                *p /= count as f32;
            }
        }

        let user = if tt.tower.is_empty() {
            pooled
        } else {
            let mut input = pooled;
            input.extend_from_slice(rows.features_of(r));
            layers_one(&tt.tower, input)
        };

        let seen_rows: Vec<usize> = match tt.exclude_seen {
            true => history
                .iter()
                .filter_map(|id| row_of.get(id).copied())
                .collect(),
            false => Vec::new(),
        };
        for &row in &seen_rows {
            seen[row] = true;
        }
        ranked.clear();
        for (row, &id) in tt.item_ids.iter().enumerate() {
            if seen[row] {
                continue;
            }
            ranked.push((dot(&user, tt.embedding(row)), id));
        }
        for &row in &seen_rows {
            seen[row] = false;
        }
        // The best K by the order, then those K sorted: the same as sorting
        // everything and keeping the first K.
        if tt.top_k > 0 && ranked.len() > tt.top_k {
            ranked.select_nth_unstable_by(tt.top_k - 1, topk_order);
        }
        ranked.truncate(tt.top_k);
        ranked.sort_by(topk_order);
        for &(score, id) in &ranked {
            items.push(id);
            scores.push(score);
        }
        offsets.push(items.len() as u32);
    }
    Predictions::TopK {
        offsets,
        items,
        scores,
    }
}
