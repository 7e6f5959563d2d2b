//! A model with its weights on the device, and the host side of prediction:
//! batching rows, tiling item embeddings to the adapter's limits, and keeping
//! the device busy (one submission per batch; the next batch is prepared and
//! uploaded while the device runs the current one, and results are read back
//! while it runs the next).

use std::time::{Duration, Instant};

use super::kernels::{
    self, ActivationParams, CANDIDATE_BYTES, DenseParams, Entry, INVOCATIONS, KernelConfig,
    Kernels, NARROW_BELOW, NARROW_ROWS, PoolParams, RoundBuffers, RoundParams, TILE,
    TOPK_STORAGE_BUFFERS,
};
use super::{Error, Gpu, Result};
use crate::model::{Dense, ItemIndex, Mlp, Model, OutputActivation, Predictions, Rows, TwoTower};

/// Rows of an mlp scored per submission (fewer when the adapter's binding
/// limit requires): large enough that the device is never starved, small
/// enough that the next batch's upload overlaps this one's arithmetic.
const MLP_BATCH_ROWS: usize = 1 << 17;
/// Users of a two_tower model scored per submission, at most.
const TWO_TOWER_BATCH_USERS: usize = 1 << 15;

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

struct DeviceTwoTower {
    dim: usize,
    items: usize,
    tiles: Vec<ItemTile>,
    index: ItemIndex,
    tower: Vec<DeviceDense>,
    num_features: usize,
    top_k: usize,
    max_history: usize,
    exclude_seen: bool,
}

enum Loaded {
    Mlp {
        layers: Vec<DeviceDense>,
        output: OutputActivation,
    },
    TwoTower(DeviceTwoTower),
    Onnx {
        device: Box<super::onnx::GpuOnnx>,
        scorer: crate::model::onnx::Onnx,
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
            .field("config", &self.kernels.config)
            .finish_non_exhaustive()
    }
}

/// Where the time of [`GpuModel::time_kernels`] went.
#[derive(Clone, Debug)]
pub struct KernelTiming {
    /// One pass of the kernels over every row, inputs already on the device.
    pub per_pass: Duration,
    /// Passes timed.
    pub passes: usize,
    /// Device time of one more pass by kernel (from timestamp queries, in
    /// the order the kernels first ran); empty when the adapter has none.
    pub by_kernel: Vec<(&'static str, Duration)>,
}

impl GpuModel {
    /// Uploads `model`'s weights to `gpu`, tiled to the adapter's limits.
    pub fn new(gpu: &Gpu, model: &Model) -> Result<GpuModel> {
        GpuModel::with_limits(gpu, model, TileLimits::of(&gpu.limits))
    }

    /// As [`GpuModel::new`], tiling to `limits` (clamped to the adapter's).
    pub fn with_limits(gpu: &Gpu, model: &Model, limits: TileLimits) -> Result<GpuModel> {
        GpuModel::with_config(gpu, model, limits, KernelConfig::for_limits(&gpu.limits))
    }

    /// As [`GpuModel::with_limits`], with kernels compiled to `config`
    /// (benchmarks compare shapes this way).
    pub fn with_config(
        gpu: &Gpu,
        model: &Model,
        limits: TileLimits,
        config: KernelConfig,
    ) -> Result<GpuModel> {
        let limits = limits.within(TileLimits::of(&gpu.limits));
        let adapter = gpu.info.name.clone();
        check_kernel_limits(gpu, config)?;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let kernels = Kernels::new(gpu, config);
        let loaded = match model {
            Model::Mlp(m) => load_mlp(gpu, m, limits),
            Model::TwoTower(t) => load_two_tower(gpu, t, limits, config),
            Model::Onnx(m) => super::onnx::GpuOnnx::new(gpu, &m.model).map(|d| Loaded::Onnx {
                device: Box::new(d),
                scorer: m.clone(),
            }),
            // A family with no kernels here (`supports` says which have them).
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

    /// The shapes its kernels were compiled with.
    pub fn config(&self) -> KernelConfig {
        self.kernels.config
    }

    /// Scores `rows`: mlp gives `Predictions::Scores`, two_tower
    /// `Predictions::TopK` (best first, ties by the smaller item id).
    pub fn predict(&self, gpu: &Gpu, rows: &Rows) -> Result<Predictions> {
        self.in_scope(gpu, "prediction", || match &self.loaded {
            Loaded::Mlp { layers, output } => self.predict_mlp(gpu, layers, *output, rows),
            Loaded::TwoTower(t) => self.predict_two_tower(gpu, t, rows),
            Loaded::Onnx { device, scorer } => scorer
                .score_with(rows, |feeds, n| {
                    device.run(gpu, feeds, n).map_err(|e| e.to_string())
                })
                .map_err(|e| Error::Onnx(e.to_string())),
        })
    }

    /// Times the kernels alone: `rows` are uploaded once, then every kernel
    /// runs over all of them `passes` times (one submission per pass), with
    /// nothing read back. What `predict` adds to this is the host's share:
    /// preparing and uploading inputs and reading results.
    pub fn time_kernels(&self, gpu: &Gpu, rows: &Rows, passes: usize) -> Result<KernelTiming> {
        self.in_scope(gpu, "timing the kernels", || {
            let passes = passes.max(1);
            let run: Box<dyn Fn(&mut wgpu::CommandEncoder)> = match &self.loaded {
                Loaded::Mlp { layers, output } => {
                    let batches = self.stage_mlp_batches(gpu, layers, rows)?;
                    Box::new(move |encoder| {
                        for b in &batches {
                            self.encode_mlp(gpu, encoder, layers, *output, b, b.n);
                        }
                    })
                }
                Loaded::Onnx { .. } => {
                    return Err(Error::Unsupported(
                        "onnx (timing its kernels alone; time predict instead)",
                    ));
                }
                Loaded::TwoTower(t) => {
                    let users = self.prepare_users(t, rows)?;
                    let mut staged = Vec::new();
                    for range in self.user_batches(t, &users)? {
                        staged.push(self.stage_users(gpu, t, rows, &users, range));
                    }
                    Box::new(move |encoder| {
                        for s in &staged {
                            self.encode_two_tower(gpu, encoder, t, s);
                        }
                    })
                }
            };
            // One untimed pass: pipelines and first uses of the buffers.
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            run(&mut encoder);
            let index = gpu.queue.submit([encoder.finish()]);
            wait(gpu, index, &self.adapter)?;
            let started = Instant::now();
            let mut last = None;
            for _ in 0..passes {
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                run(&mut encoder);
                last = Some(gpu.queue.submit([encoder.finish()]));
            }
            if let Some(index) = last {
                wait(gpu, index, &self.adapter)?;
            }
            let per_pass = started.elapsed() / passes as u32;
            let by_kernel = self.profile_pass(gpu, &*run)?;
            Ok(KernelTiming {
                per_pass,
                passes,
                by_kernel,
            })
        })
    }

    /// Runs one more pass with a timestamp pair around every dispatch and
    /// sums the device time by kernel.
    fn profile_pass(
        &self,
        gpu: &Gpu,
        run: &dyn Fn(&mut wgpu::CommandEncoder),
    ) -> Result<Vec<(&'static str, Duration)>> {
        if !self.kernels.start_profile(gpu) {
            return Ok(Vec::new());
        }
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        run(&mut encoder);
        let resolved = self.kernels.finish_profile(gpu, &mut encoder);
        let index = gpu.queue.submit([encoder.finish()]);
        let Some((buffer, kernels)) = resolved else {
            return Ok(Vec::new());
        };
        let bytes = kernels::read_mapped(gpu, &buffer, kernels.len() as u64 * 16, index)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = gpu.queue.get_timestamp_period() as f64;
        let mut out: Vec<(&'static str, Duration)> = Vec::new();
        for (name, pair) in kernels.iter().zip(ticks.chunks(2)) {
            let ns = pair[1].saturating_sub(pair[0]) as f64 * period;
            let took = Duration::from_nanos(ns as u64);
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, total)) => *total += took,
                None => out.push((name, took)),
            }
        }
        Ok(out)
    }

    /// Runs `f` inside validation and out-of-memory error scopes, so that a
    /// kernel the device rejects is an error naming `stage`.
    fn in_scope<T>(
        &self,
        gpu: &Gpu,
        stage: &'static str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let out = f();
        let oom = pollster::block_on(oom.pop());
        let invalid = pollster::block_on(scope.pop());
        let out = out?;
        if let Some(e) = oom.or(invalid) {
            return Err(Error::Wgpu {
                adapter: self.adapter.clone(),
                stage,
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

    // ---- mlp ----

    /// Rows per mlp batch: what one binding holds of the widest activation,
    /// and what one dispatch's workgroups cover.
    fn mlp_batch_rows(&self, layers: &[DeviceDense]) -> Result<usize> {
        let widest = layers
            .iter()
            .map(|l| l.in_dim.max(l.out_dim))
            .max()
            .unwrap_or(1)
            .max(1) as u64;
        let by_binding = self.limits.max_binding_bytes / (widest * 4);
        let by_groups = self.limits.max_workgroups_per_dim as u64 * NARROW_ROWS as u64;
        let batch = by_binding.min(by_groups).min(MLP_BATCH_ROWS as u64) as usize;
        if batch == 0 {
            return Err(self.over_limit(
                format!("one row of the mlp ({widest} floats)"),
                widest * 4,
                self.limits.max_binding_bytes,
                "max_storage_buffer_binding_size",
            ));
        }
        Ok(batch)
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
        let batch = self.mlp_batch_rows(layers)?;
        let mut values = Vec::with_capacity(rows.len() * width);
        if rows.is_empty() {
            return Ok(Predictions::Scores { width, values });
        }
        // Two sets of input and read-back buffers: batch b + 1 is uploaded
        // and run while batch b is read back.
        let sets = if rows.len() > batch { 2 } else { 1 };
        let n0 = batch.min(rows.len());
        let bufs: Vec<MlpBatch> = (0..sets)
            .map(|_| self.mlp_buffers(gpu, layers, n0))
            .collect();
        let stagings: Vec<wgpu::Buffer> = (0..sets)
            .map(|_| kernels::staging(gpu, (n0 * width * 4) as u64))
            .collect();
        let mut pending: Option<(usize, usize, wgpu::SubmissionIndex)> = None;
        let mut start = 0;
        let mut b = 0;
        while start < rows.len() || pending.is_some() {
            let mut submitted = None;
            if start < rows.len() {
                let n = batch.min(rows.len() - start);
                let set = b % sets;
                let x = &rows.features[start * in_dim..(start + n) * in_dim];
                kernels::write(gpu, &bufs[set].input, x);
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                let out = self.encode_mlp(gpu, &mut encoder, layers, output, &bufs[set], n);
                let bytes = (n * width * 4) as u64;
                encoder.copy_buffer_to_buffer(out, 0, &stagings[set], 0, bytes.max(4));
                submitted = Some((set, n, gpu.queue.submit([encoder.finish()])));
                start += n;
                b += 1;
            }
            if let Some((set, n, index)) = pending.take() {
                let bytes =
                    kernels::read_mapped(gpu, &stagings[set], (n * width * 4) as u64, index)?;
                values.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
            }
            pending = submitted;
        }
        Ok(Predictions::Scores { width, values })
    }

    /// Device buffers for a batch of up to `n` rows: the input and one
    /// output per layer.
    fn mlp_buffers(&self, gpu: &Gpu, layers: &[DeviceDense], n: usize) -> MlpBatch {
        MlpBatch {
            n,
            input: kernels::scratch(gpu, "mlp rows", (n * layers[0].in_dim * 4) as u64),
            outputs: layers
                .iter()
                .map(|l| kernels::scratch(gpu, "mlp layer out", (n * l.out_dim * 4) as u64))
                .collect(),
        }
    }

    /// Every batch of `rows` uploaded, each with its own buffers.
    fn stage_mlp_batches(
        &self,
        gpu: &Gpu,
        layers: &[DeviceDense],
        rows: &Rows,
    ) -> Result<Vec<MlpBatch>> {
        let in_dim = layers[0].in_dim;
        check_features(rows, in_dim, "the mlp's first layer")?;
        let batch = self.mlp_batch_rows(layers)?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let n = batch.min(rows.len() - start);
            let b = self.mlp_buffers(gpu, layers, n);
            kernels::write(
                gpu,
                &b.input,
                &rows.features[start * in_dim..(start + n) * in_dim],
            );
            out.push(b);
            start += n;
        }
        Ok(out)
    }

    /// Records every layer (and the output activation) of the first `n` rows
    /// of a batch; returns the buffer holding their scores.
    fn encode_mlp<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        layers: &[DeviceDense],
        output: OutputActivation,
        b: &'a MlpBatch,
        n: usize,
    ) -> &'a wgpu::Buffer {
        let mut cur = &b.input;
        for (i, layer) in layers.iter().enumerate() {
            let last = i + 1 == layers.len();
            self.kernels.encode_dense(
                gpu,
                encoder,
                dense_params(n, layer, !last),
                cur,
                &layer.weight,
                &layer.bias,
                &b.outputs[i],
            );
            cur = &b.outputs[i];
        }
        let mode = match output {
            OutputActivation::Sigmoid => Some(0),
            OutputActivation::Softmax => Some(1),
            OutputActivation::None => None,
        };
        if let Some(mode) = mode {
            let p = ActivationParams {
                rows: n as u32,
                width: layers[layers.len() - 1].out_dim as u32,
                mode,
                pad: 0,
            };
            self.kernels.encode_activation(gpu, encoder, p, cur);
        }
        cur
    }

    // ---- two_tower ----

    fn predict_two_tower(&self, gpu: &Gpu, t: &DeviceTwoTower, rows: &Rows) -> Result<Predictions> {
        check_features(
            rows,
            t.num_features,
            "the two_tower model's feature columns",
        )?;
        check_histories(rows)?;
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
    fn prepare_users(&self, t: &DeviceTwoTower, rows: &Rows) -> Result<PreparedUsers> {
        check_features(
            rows,
            t.num_features,
            "the two_tower model's feature columns",
        )?;
        check_histories(rows)?;
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
    fn user_batches(
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
    fn stage_users(
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
    fn encode_two_tower(
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

/// Device buffers of one mlp batch of up to `n` rows.
struct MlpBatch {
    n: usize,
    input: wgpu::Buffer,
    outputs: Vec<wgpu::Buffer>,
}

/// Per-user inputs of the two_tower kernels, flattened.
struct PreparedUsers {
    pooled_offsets: Vec<u32>,
    pooled: Vec<u32>,
    seen_offsets: Vec<u32>,
    seen: Vec<u32>,
}

/// One batch of users on the device.
struct StagedUsers {
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

fn wait(gpu: &Gpu, index: wgpu::SubmissionIndex, adapter: &str) -> Result<()> {
    gpu.device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .map(|_| ())
        .map_err(|e| Error::ReadBack {
            adapter: adapter.to_string(),
            message: e.to_string(),
        })
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

/// The adapter must give the kernels the workgroup memory, invocations and
/// storage bindings `config` needs.
fn check_kernel_limits(gpu: &Gpu, config: KernelConfig) -> Result<()> {
    let l = &gpu.limits;
    let wg = l.max_compute_workgroup_storage_size as u64;
    for (what, needed, limit, name) in [
        (
            "the tiled matrix kernels",
            config.dense_workgroup_bytes(),
            wg,
            "max_compute_workgroup_storage_size",
        ),
        (
            "the top-K kernel",
            config.topk_workgroup_bytes(),
            wg,
            "max_compute_workgroup_storage_size",
        ),
        (
            "the tiled and top-K kernels",
            INVOCATIONS as u64,
            l.max_compute_invocations_per_workgroup as u64,
            "max_compute_invocations_per_workgroup",
        ),
        (
            "the top-K kernels",
            TOPK_STORAGE_BUFFERS as u64,
            l.max_storage_buffers_per_shader_stage as u64,
            "max_storage_buffers_per_shader_stage",
        ),
    ] {
        if needed > limit {
            return Err(Error::OverLimit {
                adapter: gpu.info.name.clone(),
                what: what.to_string(),
                needed,
                limit,
                limit_name: name,
            });
        }
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
        let groups = if l.out_dim < NARROW_BELOW {
            1
        } else {
            l.out_dim.div_ceil(TILE as usize) as u64
        };
        if groups > limits.max_workgroups_per_dim as u64 {
            return Err(Error::OverLimit {
                adapter: adapter.clone(),
                what: format!(
                    "layer '{}' with {} outputs ({TILE} per workgroup)",
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

fn load_two_tower(
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
