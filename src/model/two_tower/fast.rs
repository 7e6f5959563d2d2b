//! The fast two_tower path, single-threaded: (user block x item tile)
//! products folded straight into a running top-K per user, so users x all
//! items is never held in memory. Callers split rows over threads themselves.
//!
//! Where the CPU has AVX2 and FMA or AVX-512 ([`simd`]), small blocks of
//! users are scored with item embeddings read in place rather than through sgemm,
//! which copies (packs) the whole catalogue on every call: workers score a
//! chunk in small batches, and for a batch of a few dozen users that copy
//! costs more than the products.

use matrixmultiply::sgemm;

use super::TwoTower;
use super::catalogue::ItemIndex;
use crate::model::layers::{Scratch, layers_block};
use crate::model::simd;
use crate::model::{Predictions, Rows, check_features};

/// Users whose vectors are scored together against one item tile. Each
/// block re-packs the whole catalogue inside sgemm, so larger blocks spread
/// that cost over more users.
pub(crate) const USER_BLOCK: usize = 512;
/// Items per score tile: at most `USER_BLOCK * ITEM_TILE` scores (4 MiB) are
/// live at once, never users x all items.
pub(crate) const ITEM_TILE: usize = 2048;
/// Scores checked together before any is looked at one by one.
const REJECT_CHUNK: usize = 16;
/// Blocks of at most this many users are scored in place (when [`simd`]
/// runs here); larger ones through sgemm, whose copy of the catalogue is
/// then spread over enough users to be cheaper than the in-place kernel's
/// slower inner loop.
pub(crate) const IN_PLACE_MAX_USERS: usize = 128;
/// Items per in-place scoring tile: their scores for one user group
/// (`IN_PLACE_TILE x simd::GROUP` floats, 32 KiB) stay in the L1 cache
/// until they are folded.
pub(crate) const IN_PLACE_TILE: usize = 512;

/// One user's best `k` (score, item id) so far, over the items folded in,
/// which are offered in ascending catalogue row order.
struct RunningTopK {
    k: usize,
    /// Candidates as ([`order_key`], score), at most `capacity`; the best
    /// `k` of everything folded in are among them.
    candidates: Vec<(u64, f32)>,
    capacity: usize,
    /// Any score below this cannot enter the top `k`.
    threshold: f32,
    /// Embedding rows this user must not be offered, sorted.
    excluded: Vec<u32>,
    /// `excluded[..next_excluded]` are below every row offered from now on.
    next_excluded: usize,
}

/// A key whose ascending order is [`super::topk_order`]: the score's total order
/// (with `-0.0` read as `0.0`), reversed, above the item id.
#[inline]
fn order_key(score: f32, id: u32) -> u64 {
    let bits = (score + 0.0).to_bits();
    // Ascending unsigned order of `total` is `f32::total_cmp`'s order.
    let total = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    u64::from(!total) << 32 | u64::from(id)
}

impl RunningTopK {
    fn new(k: usize, excluded: Vec<u32>) -> Self {
        let capacity = 2 * k + 64;
        RunningTopK {
            k,
            candidates: Vec::with_capacity(capacity),
            capacity,
            threshold: f32::NEG_INFINITY,
            excluded,
            next_excluded: 0,
        }
    }

    /// Folds in the scores of items `first_row..first_row + scores.len()`.
    fn fold(&mut self, scores: &[f32], first_row: usize, item_ids: &[u32]) {
        for (c, chunk) in scores.chunks(REJECT_CHUNK).enumerate() {
            let threshold = self.threshold;
            let mut any = false;
            for &s in chunk {
                // `!(s < t)` rather than `s >= t`: a NaN score or threshold
                // must not reject, since the reference ranks NaN by total order.
                #[allow(clippy::neg_cmp_op_on_partial_ord)]
                let keep = !(s < threshold);
                any |= keep;
            }
            if !any {
                continue;
            }
            for (j, &s) in chunk.iter().enumerate() {
                self.offer(s, first_row + c * REJECT_CHUNK + j, item_ids);
            }
        }
    }

    /// Folds in one score, of the item in embedding row `row` (above every
    /// row offered before).
    #[inline]
    fn offer(&mut self, s: f32, row: usize, item_ids: &[u32]) {
        if s < self.threshold {
            return;
        }
        if self.is_excluded(row) {
            return;
        }
        self.candidates.push((order_key(s, item_ids[row]), s));
        if self.candidates.len() >= self.capacity {
            self.shrink();
        }
    }

    /// Whether `row` is excluded: the exclusions below it are skipped for
    /// good, as rows come in ascending order.
    #[inline]
    fn is_excluded(&mut self, row: usize) -> bool {
        let rest = &self.excluded[self.next_excluded..];
        let below = rest.iter().take_while(|&&e| (e as usize) < row).count();
        self.next_excluded += below;
        rest.get(below).is_some_and(|&e| e as usize == row)
    }

    /// Keeps the best `k` candidates and raises the threshold to the worst of them.
    fn shrink(&mut self) {
        if self.candidates.len() <= self.k {
            return;
        }
        self.candidates
            .select_nth_unstable_by_key(self.k - 1, |c| c.0);
        self.candidates.truncate(self.k);
        self.threshold = self.candidates[self.k - 1].1;
    }

    fn finish(mut self) -> Vec<(f32, u32)> {
        if self.candidates.len() > self.k {
            self.candidates.select_nth_unstable_by_key(self.k, |c| c.0);
            self.candidates.truncate(self.k);
        }
        self.candidates.sort_unstable_by_key(|c| c.0);
        self.candidates
            .into_iter()
            .map(|(key, score)| (score, key as u32))
            .collect()
    }
}

/// The mean embedding of the last `max_history` entries of `history` that
/// the catalogue has, into `out` (zeros when there are none).
fn pool(tt: &TwoTower, index: &ItemIndex, history: &[u32], out: &mut [f32]) {
    out.fill(0.0);
    let capped = &history[history.len().saturating_sub(tt.max_history)..];
    let mut count = 0usize;
    for &id in capped {
        if let Some(row) = index.row_of(id) {
            for (o, e) in out.iter_mut().zip(tt.embedding(row)) {
                *o += e;
            }
            count += 1;
        }
    }
    if count > 0 {
        let n = count as f32;
        for o in out.iter_mut() {
            *o /= n;
        }
    }
}

/// Scores `users` (`tops.len()` rows of `dim`) against every item with
/// [`simd::score_block`], [`simd::GROUP`] users at a time over item tiles of
/// [`IN_PLACE_TILE`], and folds the scores into the running top-Ks: one
/// comparison per item against every user's threshold at once, then the
/// users whose threshold it passed. Every group of users is scored against
/// one tile before the next tile is read, so the catalogue goes through the
/// memory bus once per call rather than once per group.
fn score_in_place(tt: &TwoTower, users: &[f32], tops: &mut [RunningTopK], scratch: &mut Vec<f32>) {
    const G: usize = simd::GROUP;
    let dim = tt.dim;
    let items = tt.items();
    if items == 0 {
        return;
    }
    let tile_items = IN_PLACE_TILE.min(items);
    if scratch.len() < tile_items * G {
        scratch.resize(tile_items * G, 0.0);
    }
    // Each group's users transposed; missing users of a short last group
    // stay zero and their scores are never looked at.
    let groups = tops.len().div_ceil(G);
    let mut users_t = vec![0.0f32; groups * dim * G];
    for (u, user) in users.chunks_exact(dim).take(tops.len()).enumerate() {
        let t = &mut users_t[(u / G) * dim * G..(u / G + 1) * dim * G];
        for (d, &v) in user.iter().enumerate() {
            t[d * G + u % G] = v;
        }
    }
    // Missing users of a short last group never pass (+inf).
    let mut thresholds = vec![[f32::INFINITY; G]; groups];
    for (u, top) in tops.iter().enumerate() {
        thresholds[u / G][u % G] = top.threshold;
    }
    let mut hits = Vec::with_capacity(tile_items);
    for tile_start in (0..items).step_by(tile_items) {
        let n = tile_items.min(items - tile_start);
        let tile = &tt.item_embeddings[tile_start * dim..(tile_start + n) * dim];
        for (g, group) in tops.chunks_mut(G).enumerate() {
            let scores = &mut scratch[..n * G];
            let users = &users_t[g * dim * G..(g + 1) * dim * G];
            let thresholds = &mut thresholds[g];
            // The kernel compares each item's scores with the thresholds
            // as they were when the tile began (as in `fold`, a NaN never
            // rejects); a threshold raised meanwhile only lets `offer`
            // turn more of them away.
            simd::score_block(users, tile, dim, scores, thresholds, &mut hits);
            // A short last group's missing users (zero vectors, +inf
            // thresholds) pass only with a NaN score: never offered.
            let present = u32::MAX >> (32 - group.len());
            for &(j, users) in &hits {
                let j = j as usize;
                let mut users = users & present;
                while users != 0 {
                    let u = users.trailing_zeros() as usize;
                    users &= users - 1;
                    let top = &mut group[u];
                    top.offer(scores[j * G + u], tile_start + j, &tt.item_ids);
                    thresholds[u] = top.threshold;
                }
            }
        }
    }
}

/// Whether a block of `b` users is scored in place: any block with
/// AVX-512, whose kernel beats sgemm's packing even on [`USER_BLOCK`] users
/// now that every group shares each item tile; blocks of at most
/// [`IN_PLACE_MAX_USERS`] with AVX2 + FMA; never on other CPUs.
fn in_place(b: usize) -> bool {
    match simd::level() {
        simd::Level::Avx512 => true,
        simd::Level::Avx2 => b <= IN_PLACE_MAX_USERS,
        _ => false,
    }
}

pub(super) fn predict(tt: &TwoTower, rows: &Rows) -> Predictions {
    check_features(tt.num_features, rows);
    let index = tt.item_index();
    let items = tt.items();
    let dim = tt.dim;
    let in_dim = dim + tt.num_features;
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0u32);
    let mut out_items = Vec::with_capacity(rows.len() * tt.top_k.min(items));
    let mut out_scores = Vec::with_capacity(rows.len() * tt.top_k.min(items));
    // Sized by the path that uses it: a user group's item tile in place,
    // a user block's item tile through sgemm.
    let mut score_tile = Vec::new();
    let mut scratch = Scratch::default();

    for start in (0..rows.len()).step_by(USER_BLOCK) {
        let b = USER_BLOCK.min(rows.len() - start);
        let mut input = vec![0.0f32; b * in_dim];
        for u in 0..b {
            let x = &mut input[u * in_dim..(u + 1) * in_dim];
            pool(tt, &index, rows.history_of(start + u), &mut x[..dim]);
            x[dim..].copy_from_slice(rows.features_of(start + u));
        }
        let users: &[f32] = if tt.tower.is_empty() {
            &input
        } else {
            layers_block(&tt.tower, &input, b, &mut scratch)
        };

        let mut tops: Vec<RunningTopK> = (0..b)
            .map(|u| {
                let mut excluded = Vec::new();
                if tt.exclude_seen {
                    excluded.extend(
                        rows.history_of(start + u)
                            .iter()
                            .filter_map(|&id| index.row_of(id).map(|r| r as u32)),
                    );
                    excluded.sort_unstable();
                    excluded.dedup();
                }
                RunningTopK::new(tt.top_k, excluded)
            })
            .collect();

        if tt.top_k > 0 && in_place(b) {
            score_in_place(tt, users, &mut tops, &mut score_tile);
        } else if tt.top_k > 0 {
            score_tile.resize(USER_BLOCK.min(rows.len()) * ITEM_TILE.min(items), 0.0);
            for tile_start in (0..items).step_by(ITEM_TILE) {
                let n = ITEM_TILE.min(items - tile_start);
                let tile = &tt.item_embeddings[tile_start * dim..(tile_start + n) * dim];
                // SAFETY: `users` holds b x dim values (row stride dim),
                // `tile` holds n x dim (read transposed: row stride 1, column
                // stride dim) and `score_tile` holds at least b x n (row
                // stride n); every index sgemm forms lies inside those lengths.
                unsafe {
                    sgemm(
                        b,
                        dim,
                        n,
                        1.0,
                        users.as_ptr(),
                        dim as isize,
                        1,
                        tile.as_ptr(),
                        1,
                        dim as isize,
                        0.0,
                        score_tile.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
                for (u, top) in tops.iter_mut().enumerate() {
                    top.fold(&score_tile[u * n..(u + 1) * n], tile_start, &tt.item_ids);
                }
            }
        }

        for top in tops {
            for (score, id) in top.finish() {
                out_items.push(id);
                out_scores.push(score);
            }
            offsets.push(out_items.len() as u32);
        }
    }
    Predictions::TopK {
        offsets,
        items: out_items,
        scores: out_scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::two_tower::topk_order;

    #[test]
    fn order_keys_sort_as_topk_order_does() {
        let scores = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
        ];
        let mut pairs = Vec::new();
        for (i, &s) in scores.iter().enumerate() {
            for id in [0, 7, u32::MAX] {
                pairs.push((s, id ^ i as u32));
            }
        }
        let mut by_order = pairs.clone();
        by_order.sort_by(topk_order);
        let mut by_key = pairs;
        by_key.sort_by_key(|&(s, id)| order_key(s, id));
        let bits = |v: &[(f32, u32)]| {
            v.iter()
                .map(|&(s, id)| ((s + 0.0).to_bits(), id))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&by_key), bits(&by_order));
    }
}
