//! The reference path: plain loops, one row at a time, written to be
//! obviously right. Every other backend is checked against it.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use super::{Dense, Mlp, Model, OutputActivation, Predictions, Rows, TwoTower};

impl Model {
    /// Scores `rows` with plain loops: the result every backend must match.
    ///
    /// # Panics
    /// When `rows` carries a different number of feature columns than the
    /// model was loaded for.
    pub fn predict_reference(&self, rows: &Rows) -> Predictions {
        match self {
            Model::Mlp(mlp) => mlp_reference(mlp, rows),
            Model::TwoTower(tt) => two_tower_reference(tt, rows),
        }
    }
}

/// The order of top-K results: higher score first, then the smaller item id.
/// `-0.0` and `0.0` are the same score.
pub(crate) fn topk_order(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    (b.0 + 0.0)
        .total_cmp(&(a.0 + 0.0))
        .then_with(|| a.1.cmp(&b.1))
}

/// Applies `activation` to one row of outputs, in place.
pub(crate) fn apply_output(activation: OutputActivation, out: &mut [f32]) {
    match activation {
        OutputActivation::None => {}
        OutputActivation::Sigmoid => {
            for v in out.iter_mut() {
                *v = 1.0 / (1.0 + (-*v).exp());
            }
        }
        OutputActivation::Softmax => {
            let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for v in out.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in out.iter_mut() {
                *v /= sum;
            }
        }
    }
}

pub(crate) fn check_features(expected: usize, rows: &Rows) {
    assert_eq!(
        rows.num_features, expected,
        "rows carry {} feature columns but the model was loaded for {}",
        rows.num_features, expected
    );
}

fn dense_one(layer: &Dense, input: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(layer.out_dim);
    for o in 0..layer.out_dim {
        let w = &layer.weight[o * layer.in_dim..(o + 1) * layer.in_dim];
        let mut acc = layer.bias[o];
        for i in 0..layer.in_dim {
            acc += w[i] * input[i];
        }
        out.push(acc);
    }
    out
}

/// Dense layers with relu between them (not after the last).
fn layers_one(layers: &[Dense], input: Vec<f32>) -> Vec<f32> {
    let mut x = input;
    for (n, layer) in layers.iter().enumerate() {
        x = dense_one(layer, &x);
        if n + 1 < layers.len() {
            for v in x.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }
    x
}

fn mlp_reference(mlp: &Mlp, rows: &Rows) -> Predictions {
    check_features(
        mlp.layers.first().map_or(rows.num_features, |l| l.in_dim),
        rows,
    );
    let width = mlp.layers.last().map_or(0, |l| l.out_dim);
    let mut values = Vec::with_capacity(rows.len() * width);
    for r in 0..rows.len() {
        let mut out = layers_one(&mlp.layers, rows.features_of(r).to_vec());
        apply_output(mlp.output, &mut out);
        values.extend_from_slice(&out);
    }
    Predictions::Scores { width, values }
}

fn two_tower_reference(tt: &TwoTower, rows: &Rows) -> Predictions {
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

        let seen: HashSet<u32> = if tt.exclude_seen {
            history.iter().copied().collect()
        } else {
            HashSet::new()
        };
        let mut ranked: Vec<(f32, u32)> = Vec::new();
        for (row, &id) in tt.item_ids.iter().enumerate() {
            if seen.contains(&id) {
                continue;
            }
            let emb = tt.embedding(row);
            let mut score = 0.0f32;
            for d in 0..tt.dim {
                score += user[d] * emb[d];
            }
            ranked.push((score, id));
        }
        // The best K by the order, then those K sorted: the same as sorting
        // everything and keeping the first K.
        if tt.top_k > 0 && ranked.len() > tt.top_k {
            ranked.select_nth_unstable_by(tt.top_k - 1, topk_order);
        }
        ranked.truncate(tt.top_k);
        ranked.sort_by(topk_order);
        for (score, id) in ranked {
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
