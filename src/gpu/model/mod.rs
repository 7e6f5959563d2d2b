//! A model with its weights on the device, and the host side of prediction:
//! batching rows, tiling item embeddings to the adapter's limits, and keeping
//! the device busy (one submission per batch; the next batch is prepared and
//! uploaded while the device runs the current one, and results are read back
//! while it runs the next).

use std::time::{Duration, Instant};

use super::kernels::{
    self, DenseParams, INVOCATIONS, KernelConfig, Kernels, NARROW_BELOW, TILE, TOPK_STORAGE_BUFFERS,
};
use super::{Error, Gpu, Result};
use crate::model::{Dense, ItemIndex, Model, OutputActivation, Predictions, Rows};

mod mlp;
mod two_tower;

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
            Model::Mlp(m) => mlp::load_mlp(gpu, m, limits),
            Model::TwoTower(t) => two_tower::load_two_tower(gpu, t, limits, config),
            Model::Onnx(m) => super::onnx::GpuOnnx::new(gpu, &m.model).map(|d| Loaded::Onnx {
                device: Box::new(d),
                scorer: m.clone(),
            }),
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
