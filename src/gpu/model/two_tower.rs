//! The two_tower model on the device: users in batches, the item
//! embeddings in tiles, top-K by filtered rounds over the tiles.

use super::kernels::{
    self, CANDIDATE_BYTES, Entry, KernelConfig, PoolParams, RoundBuffers, RoundParams, TILE,
};
use super::{
    DeviceTwoTower, Error, Gpu, GpuModel, ItemTile, Loaded, Result, TileLimits, check_features,
    check_histories, dense_params, load_layers,
};
use crate::model::{Predictions, Rows, TwoTower};

/// Users of a two_tower model scored per submission, at most.
const TWO_TOWER_BATCH_USERS: usize = 1 << 15;

impl GpuModel {
    pub(super) fn predict_two_tower(
        &self,
        gpu: &Gpu,
        t: &DeviceTwoTower,
        rows: &Rows,
    ) -> Result<Predictions> {
        t.check_rows(rows)?;
        let users = rows.len();
        let k = t.top_k.min(t.items);
        if users == 0 || k == 0 {
            return Ok(Predictions::TopK {
                offsets: vec![0; users + 1],
                items: Vec::new(),
                scores: Vec::new(),
            });
        }
        let prepared = self.prepare_users(t, rows)?;
        let kp = t.top_k.next_power_of_two();
        let mut offsets = vec![0u32];
        let mut out_items = Vec::new();
        let mut out_scores = Vec::new();
        let mut collect = |state: &[Entry], n: usize| {
            for u in 0..n {
                let best = &state[u * kp..u * kp + kp];
                for e in best.iter().take(k).take_while(|e| e.ok == 1) {
                    out_items.push(e.id);
                    out_scores.push(e.score);
                }
                offsets.push(out_items.len() as u32);
            }
        };
        // Batch b + 1 is prepared, uploaded and run while batch b is read.
        let mut pending: Option<(wgpu::Buffer, usize, wgpu::SubmissionIndex)> = None;
        for range in self.user_batches(t, &prepared)? {
            let n = range.len();
            let staged = self.stage_users(gpu, t, rows, &prepared, range);
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            self.encode_two_tower(gpu, &mut encoder, t, &staged);
            let bytes = (n * kp * std::mem::size_of::<Entry>()) as u64;
            let staging = kernels::staging(gpu, bytes);
            encoder.copy_buffer_to_buffer(&staged.state, 0, &staging, 0, bytes);
            let index = gpu.queue.submit([encoder.finish()]);
            if let Some((staging, n, index)) = pending.take() {
                let bytes = (n * kp * std::mem::size_of::<Entry>()) as u64;
                let state = kernels::read_mapped(gpu, &staging, bytes, index)?;
                collect(&bytemuck::pod_collect_to_vec::<u8, Entry>(&state), n);
            }
            pending = Some((staging, n, index));
        }
        if let Some((staging, n, index)) = pending.take() {
            let bytes = (n * kp * std::mem::size_of::<Entry>()) as u64;
            let state = kernels::read_mapped(gpu, &staging, bytes, index)?;
            collect(&bytemuck::pod_collect_to_vec::<u8, Entry>(&state), n);
        }
        Ok(Predictions::TopK {
            offsets,
            items: out_items,
            scores: out_scores,
        })
    }

    /// Per user: the embedding rows to pool (capped, unknown ids skipped)
    /// and, for exclude_seen, the sorted rows of the whole history.
    pub(super) fn prepare_users(&self, t: &DeviceTwoTower, rows: &Rows) -> Result<PreparedUsers> {
        t.check_rows(rows)?;
        let users = rows.len();
        let mut p = PreparedUsers {
            pooled_offsets: Vec::with_capacity(users + 1),
            pooled: Vec::new(),
            seen_offsets: Vec::with_capacity(users + 1),
            seen: Vec::new(),
        };
        p.pooled_offsets.push(0);
        p.seen_offsets.push(0);
        for i in 0..users {
            let history = rows.history_of(i);
            let capped = &history[history.len().saturating_sub(t.max_history)..];
            p.pooled.extend(
                capped
                    .iter()
                    .filter_map(|&id| t.index.row_of(id).map(|r| r as u32)),
            );
            p.pooled_offsets.push(p.pooled.len() as u32);
            if t.exclude_seen {
                let from = p.seen.len();
                p.seen.extend(
                    history
                        .iter()
                        .filter_map(|&id| t.index.row_of(id).map(|r| r as u32)),
                );
                let mine = &mut p.seen[from..];
                mine.sort_unstable();
                let kept = dedup_sorted(mine);
                p.seen.truncate(from + kept);
            }
            p.seen_offsets.push(p.seen.len() as u32);
        }
        Ok(p)
    }

    /// Users per batch: as many as the limits allow (tower activations,
    /// kept candidates and the candidate list of each user in one binding,
    /// one workgroup per user in a dispatch, histories in one binding).
    pub(super) fn user_batches(
        &self,
        t: &DeviceTwoTower,
        p: &PreparedUsers,
    ) -> Result<Vec<std::ops::Range<usize>>> {
        let users = p.pooled_offsets.len() - 1;
        let kp = t.top_k.next_power_of_two() as u64;
        let cap = self.candidate_cap(t) as u64;
        let widest = t
            .tower
            .iter()
            .map(|l| l.in_dim.max(l.out_dim))
            .max()
            .unwrap_or(0)
            .max(t.dim + t.pool_features()) as u64;
        let binding = self.limits.max_binding_bytes;
        let per_user_bytes = (widest * 4)
            .max(kp * std::mem::size_of::<Entry>() as u64)
            .max(cap * CANDIDATE_BYTES);
        let max_users = (binding / per_user_bytes)
            .min(self.limits.max_workgroups_per_dim as u64)
            .min(TWO_TOWER_BATCH_USERS as u64);
        if max_users == 0 {
            return Err(self.over_limit(
                format!("one user's tower activations or top-K candidates ({cap} x 8 bytes)"),
                per_user_bytes,
                binding,
                "max_storage_buffer_binding_size",
            ));
        }
        let mut out = Vec::new();
        let mut start = 0;
        while start < users {
            let (mut hist_bytes, mut seen_bytes) = (4u64, 4u64);
            let mut end = start;
            while end < users && ((end - start) as u64) < max_users {
                let h = (p.pooled_offsets[end + 1] - p.pooled_offsets[end]) as u64 * 4;
                let s = (p.seen_offsets[end + 1] - p.seen_offsets[end]) as u64 * 4;
                if hist_bytes + h > binding || seen_bytes + s > binding {
                    break;
                }
                hist_bytes += h;
                seen_bytes += s;
                end += 1;
            }
            if end == start {
                let len = (p.pooled_offsets[start + 1] - p.pooled_offsets[start])
                    .max(p.seen_offsets[start + 1] - p.seen_offsets[start]);
                return Err(self.over_limit(
                    format!("the history of row {start}"),
                    (len as u64 + 1) * 4,
                    binding,
                    "max_storage_buffer_binding_size",
                ));
            }
            out.push(start..end);
            start = end;
        }
        Ok(out)
    }

    /// Candidates a user's list holds per round: what fits behind the kept
    /// entries in the top-K kernel's workgroup buffer.
    fn candidate_cap(&self, t: &DeviceTwoTower) -> usize {
        self.kernels.config.topk_buf as usize - t.top_k.next_power_of_two()
    }

    /// Uploads the histories, features and scratch buffers of users `range`.
    pub(super) fn stage_users(
        &self,
        gpu: &Gpu,
        t: &DeviceTwoTower,
        rows: &Rows,
        p: &PreparedUsers,
        range: std::ops::Range<usize>,
    ) -> StagedUsers {
        let n = range.len();
        let rebase = |offsets: &[u32]| -> Vec<u32> {
            let base = offsets[0];
            offsets.iter().map(|o| o - base).collect()
        };
        let po = &p.pooled_offsets[range.start..=range.end];
        let so = &p.seen_offsets[range.start..=range.end];
        let pool_nf = t.pool_features();
        let features = if pool_nf == 0 {
            &[][..]
        } else {
            &rows.features[range.start * pool_nf..range.end * pool_nf]
        };
        let kp = t.top_k.next_power_of_two();
        let cap = self.candidate_cap(t);
        let stride = t.dim + pool_nf;
        StagedUsers {
            n,
            hist_offsets: kernels::upload(gpu, "history offsets", &rebase(po)),
            hist_rows: kernels::upload(
                gpu,
                "history rows",
                &p.pooled[po[0] as usize..po[n] as usize],
            ),
            seen_offsets: kernels::upload(gpu, "seen offsets", &rebase(so)),
            seen_rows: kernels::upload(gpu, "seen rows", &p.seen[so[0] as usize..so[n] as usize]),
            features: kernels::upload(gpu, "features", features),
            pooled: kernels::scratch(gpu, "pooled", (n * stride * 4) as u64),
            tower_outs: t
                .tower
                .iter()
                .map(|l| kernels::scratch(gpu, "tower out", (n * l.out_dim * 4) as u64))
                .collect(),
            state: kernels::scratch(
                gpu,
                "top-k state",
                (n * kp * std::mem::size_of::<Entry>()) as u64,
            ),
            counts: kernels::scratch(gpu, "candidate counts", (n * 4) as u64),
            cands: kernels::scratch(gpu, "candidates", n as u64 * cap as u64 * CANDIDATE_BYTES),
        }
    }

    /// Records pooling, the tower and every top-K round for staged users.
    pub(super) fn encode_two_tower(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        t: &DeviceTwoTower,
        s: &StagedUsers,
    ) {
        let pool_nf = t.pool_features();
        for (i, tile) in t.tiles.iter().enumerate() {
            let p = PoolParams {
                users: s.n as u32,
                dim: t.dim as u32,
                num_features: pool_nf as u32,
                tile_start: tile.start as u32,
                tile_len: tile.len as u32,
                first_tile: u32::from(i == 0),
                pad: [0; 2],
            };
            self.kernels.encode_pool(
                gpu,
                encoder,
                p,
                &tile.embeddings,
                &s.hist_offsets,
                &s.hist_rows,
                &s.features,
                &s.pooled,
            );
        }
        let mut user_vecs = &s.pooled;
        let mut user_stride = t.dim + pool_nf;
        for (i, layer) in t.tower.iter().enumerate() {
            let relu = i + 1 < t.tower.len();
            self.kernels.encode_dense(
                gpu,
                encoder,
                dense_params(s.n, layer, relu),
                user_vecs,
                &layer.weight,
                &layer.bias,
                &s.tower_outs[i],
            );
            user_vecs = &s.tower_outs[i];
            user_stride = layer.out_dim;
        }
        let kp = t.top_k.next_power_of_two();
        let cap = self.candidate_cap(t);
        for round in self.rounds(t) {
            let tile = &t.tiles[round.tile];
            let p = RoundParams {
                users: s.n as u32,
                dim: t.dim as u32,
                tile_len: tile.len as u32,
                tile_start: tile.start as u32,
                item_start: round.start as u32,
                item_end: round.end as u32,
                k: t.top_k as u32,
                kp: kp as u32,
                exclude_seen: u32::from(t.exclude_seen),
                user_stride: user_stride as u32,
                cap: cap as u32,
                first: u32::from(round.first),
                pad: [0; 4],
            };
            let buffers = RoundBuffers {
                user_vecs,
                emb: &tile.embeddings,
                item_ids: &tile.ids,
                seen_offsets: &s.seen_offsets,
                seen_rows: &s.seen_rows,
                state: &s.state,
                counts: &s.counts,
                cands: &s.cands,
            };
            self.kernels.encode_round(gpu, encoder, p, &buffers);
        }
    }

    /// The rounds items are scored in. The first holds at most as many items
    /// as a candidate list (all of them are candidates); later rounds grow with
    /// the items seen, so that a user expects at most `cap / round_slack`
    /// candidates in one (after `s` items, an item beats the K-th best with
    /// probability about K / s when scores are in no particular order).
    fn rounds(&self, t: &DeviceTwoTower) -> Vec<Round> {
        let cap = self.candidate_cap(t).max(1);
        let slack = self.kernels.config.round_slack.max(1) as usize;
        let widest = self.limits.max_workgroups_per_dim as usize * TILE as usize;
        let mut out = Vec::new();
        let first = match self.kernels.config.first_round_kp {
            0 => cap,
            m => (m as usize * t.top_k.next_power_of_two()).min(cap),
        };
        let mut seen = 0usize;
        for (i, tile) in t.tiles.iter().enumerate() {
            let mut start = 0;
            while start < tile.len {
                let size = if seen == 0 {
                    first
                } else {
                    (seen.saturating_mul(cap) / (slack * t.top_k.max(1))).max(cap)
                };
                let end = (start + size.min(widest)).min(tile.len);
                out.push(Round {
                    tile: i,
                    start,
                    end,
                    first: seen == 0,
                });
                seen += end - start;
                start = end;
            }
        }
        out
    }
}

/// Per-user inputs of the two_tower kernels, flattened.
pub(super) struct PreparedUsers {
    pooled_offsets: Vec<u32>,
    pooled: Vec<u32>,
    seen_offsets: Vec<u32>,
    seen: Vec<u32>,
}

/// One batch of users on the device.
pub(super) struct StagedUsers {
    n: usize,
    hist_offsets: wgpu::Buffer,
    hist_rows: wgpu::Buffer,
    seen_offsets: wgpu::Buffer,
    seen_rows: wgpu::Buffer,
    features: wgpu::Buffer,
    pooled: wgpu::Buffer,
    tower_outs: Vec<wgpu::Buffer>,
    state: wgpu::Buffer,
    counts: wgpu::Buffer,
    cands: wgpu::Buffer,
}

/// Items `start..end` of item tile `tile`.
struct Round {
    tile: usize,
    start: usize,
    end: usize,
    first: bool,
}

impl DeviceTwoTower {
    /// The rows' features and histories are what this model reads.
    fn check_rows(&self, rows: &Rows) -> Result<()> {
        check_features(
            rows,
            self.num_features,
            "the two_tower model's feature columns",
        )?;
        check_histories(rows)
    }

    /// Feature columns appended to the pooled history (none without a tower).
    fn pool_features(&self) -> usize {
        if self.tower.is_empty() {
            0
        } else {
            self.num_features
        }
    }
}

/// Moves the distinct values of a sorted slice to its front; returns how
/// many there are.
fn dedup_sorted(v: &mut [u32]) -> usize {
    if v.is_empty() {
        return 0;
    }
    let mut kept = 1;
    for i in 1..v.len() {
        if v[i] != v[kept - 1] {
            v[kept] = v[i];
            kept += 1;
        }
    }
    kept
}

pub(super) fn load_two_tower(
    gpu: &Gpu,
    t: &TwoTower,
    limits: TileLimits,
    config: KernelConfig,
) -> Result<Loaded> {
    let adapter = &gpu.info.name;
    if t.top_k > config.max_top_k() {
        return Err(Error::TopKTooLarge {
            top_k: t.top_k,
            limit: config.max_top_k(),
            adapter: adapter.clone(),
        });
    }
    if t.dim == 0 {
        return Err(Error::Shape("item_embeddings has dim 0".to_string()));
    }
    if t.item_embeddings.len() % t.dim != 0 || t.item_embeddings.len() / t.dim != t.item_ids.len() {
        return Err(Error::Shape(format!(
            "item_embeddings holds {} values, expected item_ids' {} items x dim {}",
            t.item_embeddings.len(),
            t.item_ids.len(),
            t.dim
        )));
    }
    let items = t.item_ids.len();
    if items > u32::MAX as usize / 2 {
        return Err(Error::Shape(format!(
            "{items} items is over the GPU path's limit of {}",
            u32::MAX / 2
        )));
    }
    let tower = load_layers(gpu, &t.tower, limits)?;
    if let (Some(first), Some(last)) = (t.tower.first(), t.tower.last()) {
        if first.in_dim != t.dim + t.num_features {
            return Err(Error::Shape(format!(
                "user tower layer '{}' takes {} inputs, expected dim {} + {} features",
                first.name, first.in_dim, t.dim, t.num_features
            )));
        }
        if last.out_dim != t.dim {
            return Err(Error::Shape(format!(
                "user tower layer '{}' gives {} outputs, expected the item dim {}",
                last.name, last.out_dim, t.dim
            )));
        }
    }
    let row_bytes = (t.dim * 4) as u64;
    if row_bytes > limits.max_binding_bytes {
        return Err(Error::OverLimit {
            adapter: adapter.clone(),
            what: format!("one row of item_embeddings (dim {})", t.dim),
            needed: row_bytes,
            limit: limits.max_binding_bytes,
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    let per_tile = (limits.max_binding_bytes / row_bytes) as usize;
    let mut tiles = Vec::new();
    let mut start = 0;
    while start < items {
        let len = per_tile.min(items - start);
        // Transposed, [dim, len]: the kernels read one dimension of many
        // items at a time.
        let mut transposed = vec![0.0f32; len * t.dim];
        for j in 0..len {
            let row = &t.item_embeddings[(start + j) * t.dim..(start + j + 1) * t.dim];
            for (d, v) in row.iter().enumerate() {
                transposed[d * len + j] = *v;
            }
        }
        tiles.push(ItemTile {
            start,
            len,
            embeddings: kernels::upload(gpu, "item embeddings", &transposed),
            ids: kernels::upload(gpu, "item ids", &t.item_ids[start..start + len]),
        });
        start += len;
    }
    Ok(Loaded::TwoTower(DeviceTwoTower {
        dim: t.dim,
        items,
        tiles,
        index: t.item_index(),
        tower,
        num_features: t.num_features,
        top_k: t.top_k,
        max_history: t.max_history,
        exclude_seen: t.exclude_seen,
    }))
}
