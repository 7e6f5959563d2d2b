//! A model with its weights on the device, and the host side of prediction:
//! batching rows and tiling item embeddings to the adapter's limits.

use std::collections::HashMap;

use super::kernels::{
    self, ActivationParams, DENSE_TILE, DenseParams, Entry, Kernels, PoolParams, TOPK_BUF,
    TOPK_WORKGROUP_BYTES, TopKParams,
};
use super::{Error, Gpu, Result};
use crate::model::{Dense, Mlp, Model, OutputActivation, Predictions, Rows, TwoTower};

/// The largest `top_k` the GPU path selects: half the top-K kernel's
/// workgroup buffer.
pub const MAX_TOP_K: usize = TOPK_BUF / 2;

/// Invocations per workgroup the top-K kernel uses.
const TOPK_INVOCATIONS: u32 = 256;
/// Storage buffers the top-K kernel binds at once.
const TOPK_STORAGE_BUFFERS: u32 = 6;

/// The limits tiling works to. By default the adapter's own; tests force
/// smaller ones so that rows and item embeddings are split into many tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileLimits {
    /// Largest buffer bound to one kernel, in bytes.
    pub max_binding_bytes: u64,
    /// Most workgroups a dispatch may have along one dimension.
    pub max_workgroups_per_dim: u32,
}

impl TileLimits {
    /// The limits of an adapter: its storage binding size (capped by its
    /// largest buffer) and its workgroups per dimension.
    pub fn of(limits: &wgpu::Limits) -> TileLimits {
        TileLimits {
            max_binding_bytes: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
        }
    }

    /// These limits, never above `device`'s, rounded down to whole floats.
    fn within(self, device: TileLimits) -> TileLimits {
        TileLimits {
            max_binding_bytes: (self.max_binding_bytes.min(device.max_binding_bytes) / 4 * 4)
                .max(4),
            max_workgroups_per_dim: self
                .max_workgroups_per_dim
                .min(device.max_workgroups_per_dim)
                .max(1),
        }
    }
}

/// A dense layer's weights on the device.
struct DeviceDense {
    in_dim: usize,
    out_dim: usize,
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
}

/// Item embedding rows `start..start + len` (transposed: `[dim, len]`), with
/// their ids.
struct ItemTile {
    start: usize,
    len: usize,
    embeddings: wgpu::Buffer,
    ids: wgpu::Buffer,
}

enum Loaded {
    Mlp {
        layers: Vec<DeviceDense>,
        output: OutputActivation,
    },
    TwoTower {
        dim: usize,
        items: usize,
        tiles: Vec<ItemTile>,
        /// Item id -> embedding row (the first row when an id repeats).
        row_of: HashMap<u32, u32>,
        tower: Vec<DeviceDense>,
        num_features: usize,
        top_k: usize,
        max_history: usize,
        exclude_seen: bool,
    },
}

/// A model whose weights were uploaded once; [`GpuModel::predict`] scores
/// chunk after chunk with them.
pub struct GpuModel {
    kernels: Kernels,
    loaded: Loaded,
    limits: TileLimits,
    adapter: String,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel")
            .field("adapter", &self.adapter)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl GpuModel {
    /// Uploads `model`'s weights to `gpu`, tiled to the adapter's limits.
    pub fn new(gpu: &Gpu, model: &Model) -> Result<GpuModel> {
        GpuModel::with_limits(gpu, model, TileLimits::of(&gpu.limits))
    }

    /// As [`GpuModel::new`], tiling to `limits` (clamped to the adapter's).
    pub fn with_limits(gpu: &Gpu, model: &Model, limits: TileLimits) -> Result<GpuModel> {
        let limits = limits.within(TileLimits::of(&gpu.limits));
        let adapter = gpu.info.name.clone();
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let kernels = Kernels::new(gpu);
        let loaded = match model {
            Model::Mlp(m) => load_mlp(gpu, m, limits),
            Model::TwoTower(t) => load_two_tower(gpu, t, limits),
            // A family with no kernels here (`supports` says so first).
            #[allow(unreachable_patterns)]
            other => Err(Error::Unsupported(other.kind_name())),
        };
        let oom = pollster::block_on(oom.pop());
        let invalid = pollster::block_on(scope.pop());
        let loaded = loaded?;
        if let Some(e) = oom.or(invalid) {
            return Err(Error::Wgpu {
                adapter,
                stage: "loading the model",
                message: e.to_string(),
            });
        }
        Ok(GpuModel {
            kernels,
            loaded,
            limits,
            adapter,
        })
    }

    /// The limits this model tiles to.
    pub fn limits(&self) -> TileLimits {
        self.limits
    }

    /// Scores `rows`: mlp gives `Predictions::Scores`, two_tower
    /// `Predictions::TopK` (best first, ties by the smaller item id).
    pub fn predict(&self, gpu: &Gpu, rows: &Rows) -> Result<Predictions> {
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let out = match &self.loaded {
            Loaded::Mlp { layers, output } => self.predict_mlp(gpu, layers, *output, rows),
            Loaded::TwoTower { .. } => self.predict_two_tower(gpu, rows),
        };
        let oom = pollster::block_on(oom.pop());
        let invalid = pollster::block_on(scope.pop());
        let out = out?;
        if let Some(e) = oom.or(invalid) {
            return Err(Error::Wgpu {
                adapter: self.adapter.clone(),
                stage: "prediction",
                message: e.to_string(),
            });
        }
        Ok(out)
    }

    fn over_limit(&self, what: String, needed: u64, limit: u64, name: &'static str) -> Error {
        Error::OverLimit {
            adapter: self.adapter.clone(),
            what,
            needed,
            limit,
            limit_name: name,
        }
    }

    fn predict_mlp(
        &self,
        gpu: &Gpu,
        layers: &[DeviceDense],
        output: OutputActivation,
        rows: &Rows,
    ) -> Result<Predictions> {
        let in_dim = layers[0].in_dim;
        let width = layers[layers.len() - 1].out_dim;
        check_features(rows, in_dim, "the mlp's first layer")?;
        let widest = layers
            .iter()
            .map(|l| l.in_dim.max(l.out_dim))
            .max()
            .unwrap_or(1)
            .max(1) as u64;
        let by_binding = self.limits.max_binding_bytes / (widest * 4);
        let by_groups = self.limits.max_workgroups_per_dim as u64 * DENSE_TILE as u64;
        let batch = by_binding.min(by_groups) as usize;
        if batch == 0 {
            return Err(self.over_limit(
                format!("one row of the mlp ({widest} floats)"),
                widest * 4,
                self.limits.max_binding_bytes,
                "max_storage_buffer_binding_size",
            ));
        }
        let mut values = Vec::with_capacity(rows.len() * width);
        let mut start = 0;
        while start < rows.len() {
            let n = batch.min(rows.len() - start);
            let x = &rows.features[start * in_dim..(start + n) * in_dim];
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            let mut cur = kernels::upload(gpu, "mlp rows", x);
            for (i, layer) in layers.iter().enumerate() {
                let last = i + 1 == layers.len();
                let y = kernels::scratch(gpu, "mlp layer out", (n * layer.out_dim * 4) as u64);
                self.kernels.encode_dense(
                    gpu,
                    &mut encoder,
                    dense_params(n, layer, !last),
                    &cur,
                    &layer.weight,
                    &layer.bias,
                    &y,
                );
                cur = y;
            }
            let mode = match output {
                OutputActivation::Sigmoid => Some(0),
                OutputActivation::Softmax => Some(1),
                OutputActivation::None => None,
            };
            if let Some(mode) = mode {
                let p = ActivationParams {
                    rows: n as u32,
                    width: width as u32,
                    mode,
                    pad: 0,
                };
                self.kernels.encode_activation(gpu, &mut encoder, p, &cur);
            }
            let bytes = kernels::read_back(gpu, encoder, &cur, (n * width * 4) as u64)?;
            values.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
            start += n;
        }
        Ok(Predictions::Scores { width, values })
    }

    fn predict_two_tower(&self, gpu: &Gpu, rows: &Rows) -> Result<Predictions> {
        let Loaded::TwoTower {
            dim,
            items,
            row_of,
            tower,
            num_features,
            top_k,
            max_history,
            exclude_seen,
            ..
        } = &self.loaded
        else {
            unreachable!("predict_two_tower is only called on a two_tower model");
        };
        let (dim, nf) = (*dim, *num_features);
        check_features(rows, nf, "the two_tower model's feature columns")?;
        check_histories(rows)?;
        let users = rows.len();
        let k = (*top_k).min(*items);
        if users == 0 || k == 0 {
            return Ok(Predictions::TopK {
                offsets: vec![0; users + 1],
                items: Vec::new(),
                scores: Vec::new(),
            });
        }
        let kp = top_k.next_power_of_two();
        // The pooled input of the tower: history mean, then features (a model
        // without a tower uses the mean alone).
        let pool_nf = if tower.is_empty() { 0 } else { nf };
        let stride = dim + pool_nf;

        // Per user: embedding rows to pool (capped, unknown ids skipped) and
        // the sorted rows of the whole history (for exclude_seen).
        let mut pooled_rows: Vec<Vec<u32>> = Vec::with_capacity(users);
        let mut seen_rows: Vec<Vec<u32>> = Vec::with_capacity(users);
        for i in 0..users {
            let history = rows.history_of(i);
            let capped = &history[history.len().saturating_sub(*max_history)..];
            pooled_rows.push(
                capped
                    .iter()
                    .filter_map(|id| row_of.get(id).copied())
                    .collect(),
            );
            let mut seen: Vec<u32> = if *exclude_seen {
                history
                    .iter()
                    .filter_map(|id| row_of.get(id).copied())
                    .collect()
            } else {
                Vec::new()
            };
            seen.sort_unstable();
            seen.dedup();
            seen_rows.push(seen);
        }

        let widest = tower
            .iter()
            .map(|l| l.in_dim.max(l.out_dim))
            .max()
            .unwrap_or(0)
            .max(stride) as u64;
        let binding = self.limits.max_binding_bytes;
        let per_user_bytes = (widest * 4).max(kp as u64 * 12);
        let max_users = (binding / per_user_bytes)
            .min(self.limits.max_workgroups_per_dim as u64)
            .min(self.limits.max_workgroups_per_dim as u64 * DENSE_TILE as u64);
        if max_users == 0 {
            return Err(self.over_limit(
                format!("one user's tower activations or top-{kp} candidates"),
                per_user_bytes,
                binding,
                "max_storage_buffer_binding_size",
            ));
        }

        let mut offsets = vec![0u32];
        let mut out_items = Vec::new();
        let mut out_scores = Vec::new();
        let mut start = 0;
        while start < users {
            // Greedy batch: as many users as the limits allow.
            let (mut hist_bytes, mut seen_bytes) = (4u64, 4u64);
            let mut end = start;
            while end < users && ((end - start) as u64) < max_users {
                let h = pooled_rows[end].len() as u64 * 4;
                let s = seen_rows[end].len() as u64 * 4;
                if hist_bytes + h > binding || seen_bytes + s > binding {
                    break;
                }
                hist_bytes += h;
                seen_bytes += s;
                end += 1;
            }
            if end == start {
                return Err(self.over_limit(
                    format!("the history of row {start}"),
                    (pooled_rows[start].len().max(seen_rows[start].len()) as u64 + 1) * 4,
                    binding,
                    "max_storage_buffer_binding_size",
                ));
            }
            let n = end - start;
            let state = self.run_two_tower_batch(
                gpu,
                rows,
                start..end,
                &pooled_rows[start..end],
                &seen_rows[start..end],
                TwoTowerShape {
                    dim,
                    stride,
                    pool_nf,
                    kp,
                },
            )?;
            for u in 0..n {
                let best = &state[u * kp..u * kp + kp];
                for e in best.iter().take(k).take_while(|e| e.ok == 1) {
                    out_items.push(e.id);
                    out_scores.push(e.score);
                }
                offsets.push(out_items.len() as u32);
            }
            start = end;
        }
        Ok(Predictions::TopK {
            offsets,
            items: out_items,
            scores: out_scores,
        })
    }

    /// Pools, runs the tower and selects top-K for rows `range`; returns each
    /// user's `kp` best candidates, best first.
    fn run_two_tower_batch(
        &self,
        gpu: &Gpu,
        rows: &Rows,
        range: std::ops::Range<usize>,
        pooled_rows: &[Vec<u32>],
        seen_rows: &[Vec<u32>],
        shape: TwoTowerShape,
    ) -> Result<Vec<Entry>> {
        let Loaded::TwoTower {
            tiles,
            tower,
            exclude_seen,
            ..
        } = &self.loaded
        else {
            unreachable!("run_two_tower_batch is only called on a two_tower model");
        };
        let n = range.len();
        let TwoTowerShape {
            dim,
            stride,
            pool_nf,
            kp,
        } = shape;
        let (hist_offsets, hist_rows) = flatten(pooled_rows);
        let (seen_offsets, seen_flat) = flatten(seen_rows);
        let features = if pool_nf == 0 {
            &[][..]
        } else {
            &rows.features[range.start * pool_nf..range.end * pool_nf]
        };
        let hist_offsets = kernels::upload(gpu, "history offsets", &hist_offsets);
        let hist_rows = kernels::upload(gpu, "history rows", &hist_rows);
        let seen_offsets = kernels::upload(gpu, "seen offsets", &seen_offsets);
        let seen_flat = kernels::upload(gpu, "seen rows", &seen_flat);
        let features = kernels::upload(gpu, "features", features);

        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        let pooled = kernels::scratch(gpu, "pooled", (n * stride * 4) as u64);
        for (t, tile) in tiles.iter().enumerate() {
            let p = PoolParams {
                users: n as u32,
                dim: dim as u32,
                num_features: pool_nf as u32,
                tile_start: tile.start as u32,
                tile_len: tile.len as u32,
                first_tile: u32::from(t == 0),
                pad: [0; 2],
            };
            self.kernels.encode_pool(
                gpu,
                &mut encoder,
                p,
                &tile.embeddings,
                &hist_offsets,
                &hist_rows,
                &features,
                &pooled,
            );
        }
        let mut user_vecs = pooled;
        let mut user_stride = stride;
        for (i, layer) in tower.iter().enumerate() {
            let relu = i + 1 < tower.len();
            let y = kernels::scratch(gpu, "tower out", (n * layer.out_dim * 4) as u64);
            self.kernels.encode_dense(
                gpu,
                &mut encoder,
                dense_params(n, layer, relu),
                &user_vecs,
                &layer.weight,
                &layer.bias,
                &y,
            );
            user_vecs = y;
            user_stride = layer.out_dim;
        }
        let state_bytes = (n * kp * std::mem::size_of::<Entry>()) as u64;
        let state = kernels::scratch(gpu, "top-k state", state_bytes);
        for (t, tile) in tiles.iter().enumerate() {
            let p = TopKParams {
                users: n as u32,
                dim: dim as u32,
                tile_start: tile.start as u32,
                tile_len: tile.len as u32,
                kp: kp as u32,
                first_tile: u32::from(t == 0),
                exclude_seen: u32::from(*exclude_seen),
                user_stride: user_stride as u32,
            };
            self.kernels.encode_topk(
                gpu,
                &mut encoder,
                p,
                &user_vecs,
                &tile.embeddings,
                &tile.ids,
                &seen_offsets,
                &seen_flat,
                &state,
            );
        }
        let bytes = kernels::read_back(gpu, encoder, &state, state_bytes)?;
        Ok(bytemuck::pod_collect_to_vec::<u8, Entry>(&bytes))
    }
}

#[derive(Clone, Copy)]
struct TwoTowerShape {
    dim: usize,
    /// Floats per pooled row.
    stride: usize,
    /// Feature columns appended to the pooled history.
    pool_nf: usize,
    /// Candidates kept per user: a power of two >= top_k.
    kp: usize,
}

fn flatten(lists: &[Vec<u32>]) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = Vec::with_capacity(lists.len() + 1);
    let mut flat = Vec::new();
    offsets.push(0);
    for l in lists {
        flat.extend_from_slice(l);
        offsets.push(flat.len() as u32);
    }
    (offsets, flat)
}

fn dense_params(rows: usize, layer: &DeviceDense, relu: bool) -> DenseParams {
    DenseParams {
        rows: rows as u32,
        in_dim: layer.in_dim as u32,
        out_dim: layer.out_dim as u32,
        relu: u32::from(relu),
    }
}

fn check_features(rows: &Rows, expected: usize, what: &str) -> Result<()> {
    if rows.num_features != expected {
        return Err(Error::Shape(format!(
            "rows have {} feature columns but {what} expects {expected}",
            rows.num_features
        )));
    }
    if rows.features.len() != rows.len() * expected {
        return Err(Error::Shape(format!(
            "rows hold {} feature values, expected {} ({} rows x {expected})",
            rows.features.len(),
            rows.len() * expected,
            rows.len()
        )));
    }
    Ok(())
}

fn check_histories(rows: &Rows) -> Result<()> {
    let offsets = &rows.history_offsets;
    if offsets.is_empty() {
        return Ok(());
    }
    let ordered = offsets.windows(2).all(|w| w[0] <= w[1]);
    if offsets.len() != rows.len() + 1
        || offsets[0] != 0
        || !ordered
        || offsets[offsets.len() - 1] as usize != rows.history_items.len()
    {
        return Err(Error::Shape(format!(
            "history offsets must be {} ascending values from 0 to {} (the history items), \
             got {} values",
            rows.len() + 1,
            rows.history_items.len(),
            offsets.len()
        )));
    }
    Ok(())
}

fn load_layers(gpu: &Gpu, layers: &[Dense], limits: TileLimits) -> Result<Vec<DeviceDense>> {
    let adapter = &gpu.info.name;
    let mut out = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        if l.weight.len() != l.in_dim * l.out_dim || l.bias.len() != l.out_dim {
            return Err(Error::Shape(format!(
                "layer '{}': weight has {} values and bias {}, expected {} x {} and {}",
                l.name,
                l.weight.len(),
                l.bias.len(),
                l.out_dim,
                l.in_dim,
                l.out_dim
            )));
        }
        if i > 0 && layers[i - 1].out_dim != l.in_dim {
            return Err(Error::Shape(format!(
                "layer '{}' takes {} inputs but layer '{}' gives {}",
                l.name,
                l.in_dim,
                layers[i - 1].name,
                layers[i - 1].out_dim
            )));
        }
        let bytes = (l.weight.len() * 4) as u64;
        if bytes > limits.max_binding_bytes {
            return Err(Error::OverLimit {
                adapter: adapter.clone(),
                what: format!("layer '{}.weight' [{}, {}]", l.name, l.out_dim, l.in_dim),
                needed: bytes,
                limit: limits.max_binding_bytes,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let groups = l.out_dim.div_ceil(DENSE_TILE as usize) as u64;
        if groups > limits.max_workgroups_per_dim as u64 {
            return Err(Error::OverLimit {
                adapter: adapter.clone(),
                what: format!(
                    "layer '{}' with {} outputs ({DENSE_TILE} per workgroup)",
                    l.name, l.out_dim
                ),
                needed: groups,
                limit: limits.max_workgroups_per_dim as u64,
                limit_name: "max_compute_workgroups_per_dimension",
            });
        }
        out.push(DeviceDense {
            in_dim: l.in_dim,
            out_dim: l.out_dim,
            weight: kernels::upload(gpu, &format!("{}.weight", l.name), &l.weight),
            bias: kernels::upload(gpu, &format!("{}.bias", l.name), &l.bias),
        });
    }
    Ok(out)
}

fn load_mlp(gpu: &Gpu, m: &Mlp, limits: TileLimits) -> Result<Loaded> {
    if m.layers.is_empty() {
        return Err(Error::Shape("the mlp has no layers".to_string()));
    }
    Ok(Loaded::Mlp {
        layers: load_layers(gpu, &m.layers, limits)?,
        output: m.output,
    })
}

fn load_two_tower(gpu: &Gpu, t: &TwoTower, limits: TileLimits) -> Result<Loaded> {
    let adapter = &gpu.info.name;
    let l = &gpu.limits;
    for (needed, limit, name) in [
        (
            TOPK_WORKGROUP_BYTES,
            l.max_compute_workgroup_storage_size as u64,
            "max_compute_workgroup_storage_size",
        ),
        (
            TOPK_INVOCATIONS as u64,
            l.max_compute_invocations_per_workgroup as u64,
            "max_compute_invocations_per_workgroup",
        ),
        (
            TOPK_STORAGE_BUFFERS as u64,
            l.max_storage_buffers_per_shader_stage as u64,
            "max_storage_buffers_per_shader_stage",
        ),
    ] {
        if needed > limit {
            return Err(Error::OverLimit {
                adapter: adapter.clone(),
                what: "the top-K kernel".to_string(),
                needed,
                limit,
                limit_name: name,
            });
        }
    }
    if t.top_k > MAX_TOP_K {
        return Err(Error::TopKTooLarge {
            top_k: t.top_k,
            limit: MAX_TOP_K,
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
    let mut row_of = HashMap::with_capacity(items);
    for (row, id) in t.item_ids.iter().enumerate() {
        row_of.entry(*id).or_insert(row as u32);
    }
    Ok(Loaded::TwoTower {
        dim: t.dim,
        items,
        tiles,
        row_of,
        tower,
        num_features: t.num_features,
        top_k: t.top_k,
        max_history: t.max_history,
        exclude_seen: t.exclude_seen,
    })
}
