//! The two_tower reference: plain loops, one user at a time, written to be
//! obviously right; every other backend is checked against it.

use std::collections::HashMap;

use super::{TwoTower, topk_order};
use crate::model::layers::layers_one;
use crate::model::{Predictions, Rows, check_features};

/// `a . b`, summed in eight interleaved partial sums (then added in order),
/// which the compiler can keep in one vector register: a serial sum spends
/// the spot check's time waiting on each addition.
#[inline(always)]
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
        rank(tt, &user, &seen, &mut ranked);
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

/// Every catalogue item not `seen` with its score for `user`, into `ranked`
/// (cleared first).
///
/// The same loop ([`rank_plain`]) is compiled twice: for the baseline CPU,
/// and for CPUs with AVX2 ([`rank_avx2`]), where the eight partial sums of
/// [`dot`] fill one register instead of two. Each product and sum is the
/// same IEEE operation in the same order either way (no fused
/// multiply-add), so both give the same bits; the AVX2 one is about twice
/// as fast.
fn rank(tt: &TwoTower, user: &[f32], seen: &[bool], ranked: &mut Vec<(f32, u32)>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { rank_avx2(tt, user, seen, ranked) };
        return;
    }
    rank_plain(tt, user, seen, ranked)
}

#[inline(always)]
fn rank_plain(tt: &TwoTower, user: &[f32], seen: &[bool], ranked: &mut Vec<(f32, u32)>) {
    ranked.clear();
    for (row, &id) in tt.item_ids.iter().enumerate() {
        if seen[row] {
            continue;
        }
        ranked.push((dot(user, tt.embedding(row)), id));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rank_avx2(tt: &TwoTower, user: &[f32], seen: &[bool], ranked: &mut Vec<(f32, u32)>) {
    rank_plain(tt, user, seen, ranked)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_avx2_build_of_the_reference_loop_gives_the_same_bits() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: only the baseline build of the loop runs here");
            return;
        }
        let mut rng = crate::splitmix::SplitMix64(5);
        // Widths around the eight lanes, with a remainder or without.
        for dim in [1, 7, 8, 9, 64, 67] {
            let items = 300;
            let tt = TwoTower {
                dim,
                item_embeddings: (0..items * dim).map(|_| 3.0 * rng.signed_unit()).collect(),
                item_ids: (0..items as u32).collect(),
                tower: Vec::new(),
                num_features: 0,
                top_k: 10,
                max_history: 10,
                exclude_seen: true,
            };
            let user: Vec<f32> = (0..dim).map(|_| 3.0 * rng.signed_unit()).collect();
            let seen: Vec<bool> = (0..items).map(|i| i % 7 == 3).collect();
            let (mut plain, mut avx2) = (Vec::new(), Vec::new());
            rank_plain(&tt, &user, &seen, &mut plain);
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { rank_avx2(&tt, &user, &seen, &mut avx2) };
            let bits = |v: &[(f32, u32)]| {
                v.iter()
                    .map(|(s, id)| (s.to_bits(), *id))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&plain), bits(&avx2), "dim {dim}");
        }
    }
}
