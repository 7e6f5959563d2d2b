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
    let whole = a.len() / 8 * 8;
    let mut lanes = [0.0f32; 8];
    for k in (0..whole).step_by(8) {
        for j in 0..8 {
            lanes[j] += a[k + j] * b[k + j];
        }
    }
    finish(&lanes, &a[whole..], &b[whole..])
}

/// A dot product's end: its eight partial sums added in order, then the
/// products of the last `a.len() % 8` elements.
#[inline(always)]
fn finish(lanes: &[f32; 8], a: &[f32], b: &[f32]) -> f32 {
    let tail: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Users scored against the catalogue together: each pass over the items
/// (25 MB for 100k items of 64) serves this many users, not one.
const USERS_PER_PASS: usize = 8;

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
    let mut ranked: Vec<Vec<(f32, u32)>> = vec![Vec::new(); USERS_PER_PASS.min(rows.len())];
    for first in (0..rows.len()).step_by(USERS_PER_PASS) {
        let users: Vec<Vec<f32>> = (first..rows.len().min(first + USERS_PER_PASS))
            .map(|r| user_vector(tt, &row_of, rows, r))
            .collect();
        rank(tt, &users, &mut ranked[..users.len()]);
        for (r, ranked) in (first..).zip(&mut ranked[..users.len()]) {
            let seen_rows: Vec<usize> = match tt.exclude_seen {
                true => rows
                    .history_of(r)
                    .iter()
                    .filter_map(|id| row_of.get(id).copied())
                    .collect(),
                false => Vec::new(),
            };
            for &row in &seen_rows {
                seen[row] = true;
            }
            // `ranked` holds every item, in catalogue row order.
            let mut row = 0;
            ranked.retain(|_| {
                row += 1;
                !seen[row - 1]
            });
            for &row in &seen_rows {
                seen[row] = false;
            }
            // The best K by the order, then those K sorted: the same as
            // sorting everything and keeping the first K.
            if tt.top_k > 0 && ranked.len() > tt.top_k {
                ranked.select_nth_unstable_by(tt.top_k - 1, topk_order);
            }
            ranked.truncate(tt.top_k);
            ranked.sort_by(topk_order);
            for &(score, id) in ranked.iter() {
                items.push(id);
                scores.push(score);
            }
            offsets.push(items.len() as u32);
        }
    }
    Predictions::TopK {
        offsets,
        items,
        scores,
    }
}

/// Row `r`'s user vector: the mean of the embeddings of its last
/// `max_history` known items (zeros when none is known), through the
/// tower with the row's features when there is a tower.
fn user_vector(tt: &TwoTower, row_of: &HashMap<u32, usize>, rows: &Rows, r: usize) -> Vec<f32> {
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
    if tt.tower.is_empty() {
        pooled
    } else {
        let mut input = pooled;
        input.extend_from_slice(rows.features_of(r));
        layers_one(&tt.tower, input)
    }
}

/// Every catalogue item with its score for each of `users`, in catalogue
/// row order, into the matching `ranked` (cleared first).
///
/// Two loops: [`rank_plain`] for any CPU, and [`rank_avx2`] for CPUs with
/// AVX2, where the eight partial sums of [`dot`] fill one register. Each
/// product and sum is the same IEEE operation in the same order either way
/// (no fused multiply-add), so both give the same bits (tested).
fn rank(tt: &TwoTower, users: &[Vec<f32>], ranked: &mut [Vec<(f32, u32)>]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { rank_avx2(tt, users, ranked) };
        return;
    }
    rank_plain(tt, users, ranked)
}

fn rank_plain(tt: &TwoTower, users: &[Vec<f32>], ranked: &mut [Vec<(f32, u32)>]) {
    for (user, ranked) in users.iter().zip(ranked) {
        ranked.clear();
        for (row, &id) in tt.item_ids.iter().enumerate() {
            ranked.push((dot(user, tt.embedding(row)), id));
        }
    }
}

/// [`rank_plain`] with AVX2, four items at a time for every user before
/// the next four (read from memory once for all the users): each item's
/// eight partial sums in one register, a multiply then an add (the plain
/// loop's operations, in its order), and four independent chains of
/// additions keeping the adders busy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rank_avx2(tt: &TwoTower, users: &[Vec<f32>], ranked: &mut [Vec<(f32, u32)>]) {
    use std::arch::x86_64::*;
    let dim = tt.dim;
    let whole = dim / 8 * 8;
    let items = tt.item_ids.len();
    let groups = items / 4 * 4;
    let e = tt.item_embeddings.as_ptr();
    for ranked in ranked.iter_mut() {
        ranked.clear();
    }
    for first in (0..groups).step_by(4) {
        for (user, ranked) in users.iter().zip(ranked.iter_mut()) {
            let u = user.as_ptr();
            let mut sums = [_mm256_setzero_ps(); 4];
            for k in (0..whole).step_by(8) {
                // SAFETY: k + 8 <= whole <= dim, the length of `user`;
                // item first + j < items starts at (first + j) * dim of the
                // catalogue's items * dim floats.
                unsafe {
                    let x = _mm256_loadu_ps(u.add(k));
                    for (j, sum) in sums.iter_mut().enumerate() {
                        let y = _mm256_loadu_ps(e.add((first + j) * dim + k));
                        *sum = _mm256_add_ps(*sum, _mm256_mul_ps(x, y));
                    }
                }
            }
            for (j, sum) in sums.iter().enumerate() {
                let row = first + j;
                let mut lanes = [0.0f32; 8];
                // SAFETY: `lanes` holds the eight floats stored.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *sum) };
                let score = finish(&lanes, &user[whole..], &tt.embedding(row)[whole..]);
                ranked.push((score, tt.item_ids[row]));
            }
        }
    }
    for row in groups..items {
        for (user, ranked) in users.iter().zip(ranked.iter_mut()) {
            ranked.push((dot(user, tt.embedding(row)), tt.item_ids[row]));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_avx2_reference_loop_gives_the_plain_loops_bits() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: only the baseline build of the loop runs here");
            return;
        }
        let mut rng = crate::splitmix::SplitMix64(5);
        // Widths around the eight lanes, with a remainder or without; a
        // catalogue that is not a whole number of groups of four items, with
        // a NaN and an infinity in it.
        for dim in [1, 7, 8, 9, 64, 67] {
            let items = 303;
            let mut item_embeddings: Vec<f32> =
                (0..items * dim).map(|_| 3.0 * rng.signed_unit()).collect();
            item_embeddings[5 * dim] = f32::NAN;
            item_embeddings[301 * dim] = f32::INFINITY;
            let tt = TwoTower {
                dim,
                item_embeddings,
                item_ids: (0..items as u32).collect(),
                tower: Vec::new(),
                num_features: 0,
                top_k: 10,
                max_history: 10,
                exclude_seen: true,
            };
            // Three users: a pass over the catalogue serves several.
            let users: Vec<Vec<f32>> = (0..3)
                .map(|_| (0..dim).map(|_| 3.0 * rng.signed_unit()).collect())
                .collect();
            let (mut plain, mut avx2) = (vec![Vec::new(); 3], vec![Vec::new(); 3]);
            rank_plain(&tt, &users, &mut plain);
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { rank_avx2(&tt, &users, &mut avx2) };
            let bits = |v: &[Vec<(f32, u32)>]| {
                v.iter()
                    .flatten()
                    .map(|(s, id)| (s.to_bits(), *id))
                    .collect::<Vec<_>>()
            };
            assert_eq!(plain[2].len(), items);
            assert_eq!(bits(&plain), bits(&avx2), "dim {dim}");
        }
    }
}
