//! Tree ensembles on the GPU (`shaders/trees.wgsl`), and the other
//! ai.onnx.ml operators of an ONNX graph run by [`super::GpuOnnx`].
//!
//! The kernel walks every tree for a row and adds the leaf weights up on
//! the device, with the same f32 additions in the same order as the CPU
//! path. In a graph ([`super::GpuOnnx`]) the finish (base values,
//! averaging, the post transform and the labels) then runs on the device
//! too (`shaders/ml.wgsl`, `onnx/ml.rs`); [`GpuTrees::score`] finishes on
//! the host with [`Ensemble::finalize`], the very code the CPU path runs,
//! so its numbers equal the CPU's bit for bit. A model given in doubles adds
//! up in f64 on the CPU; WGSL has no f64, so for those the kernel writes
//! the leaf each tree reached and the host adds the weights up.
//!
//! Thresholds are f64 in the model and inputs f32: each test is turned at
//! load into the f32 test that holds for exactly the same f32 inputs (for
//! float models, the threshold itself), so no comparison can differ.
//!
//! Limits, each refused at load with [`Error::OverLimit`] or
//! [`Error::Onnx`] (a worker with device = "auto" then scores on the CPU):
//! the node, leaf, weight and member tables must each fit one storage
//! binding; nodes and leaves are numbered below 2^31 and a member set holds
//! fewer than 2^24 values.

use wgpu::util::DeviceExt;

use super::kernels::{read_mapped, staging};
use super::{Error, Gpu, Result};
use crate::model::trees::ensemble::{Child, Split};
use crate::model::trees::score::RowState;
use crate::model::trees::{Aggregate, Ensemble, Scored};

/// Invocations per workgroup of the tree kernel.
const WG: u32 = 64;
/// A child index with this bit set is a leaf.
const LEAF: u32 = 1 << 31;
/// Values of one BRANCH_MEMBER set at most (the node's 24 length bits).
const MAX_MEMBERS: usize = (1 << 24) - 1;
/// Rows per upload in [`GpuTrees::score`] at most.
const BLOCK_ROWS: usize = 65_536;

/// The tests of `shaders/trees.wgsl`.
mod mode {
    pub const LEQ: u32 = 0;
    pub const LT: u32 = 1;
    pub const GTE: u32 = 2;
    pub const GT: u32 = 3;
    pub const EQ: u32 = 4;
    pub const NEQ: u32 = 5;
    pub const MEMBER_F32: u32 = 6;
    pub const MEMBER_I32: u32 = 7;
    pub const NEVER: u32 = 8;
    pub const ALWAYS: u32 = 9;
}

/// One node as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DeviceNode {
    feature: u32,
    flags: u32,
    value: u32,
    yes: u32,
    no: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    width: u32,
    n_trees: u32,
    n_targets: u32,
    aggregate: u32,
    leaf_mode: u32,
    row_offset: u32,
    stride: u32,
    max_depth: u32,
    pad: [u32; 3],
}

/// The next f32 after `f` (not NaN) toward +infinity (`up`) or -infinity.
fn step(f: f32, up: bool) -> f32 {
    if f == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let b = f.to_bits();
    f32::from_bits(if (f > 0.0) == up { b + 1 } else { b - 1 })
}

/// The largest f32 at or below `t`.
fn f32_at_or_below(t: f64) -> f32 {
    let f = t as f32;
    if f as f64 > t { step(f, false) } else { f }
}

/// The smallest f32 at or above `t`.
fn f32_at_or_above(t: f64) -> f32 {
    let f = t as f32;
    if (f as f64) < t { step(f, true) } else { f }
}

/// `split` as a kernel test on f32 inputs: `(mode, threshold)`, or the
/// member set's values as words.
fn device_test(split: &Split) -> (u32, f32, Vec<u32>) {
    use mode::*;
    let exact = |t: f64| (t as f32) as f64 == t;
    let (m, t) = match split {
        Split::Member(values) => {
            return if values.iter().any(|&v| v < 0.0) {
                // The row's value is truncated to an i32 first: only the
                // set's i32 values can match.
                let ints = values
                    .iter()
                    .filter(|v| {
                        v.fract() == 0.0 && (-2_147_483_648.0..2_147_483_648.0).contains(*v)
                    })
                    .map(|&v| v as i32 as u32)
                    .collect();
                (MEMBER_I32, 0.0, ints)
            } else {
                let floats = values
                    .iter()
                    .filter(|&&v| exact(v))
                    .map(|&v| (v as f32).to_bits())
                    .collect();
                (MEMBER_F32, 0.0, floats)
            };
        }
        Split::Neq(t) if t.is_nan() || !exact(*t) => (ALWAYS, 0.0),
        _ if split_threshold(split).is_nan() => (NEVER, 0.0),
        Split::Leq(t) => (LEQ, f32_at_or_below(*t)),
        Split::Lt(t) if exact(*t) => (LT, *t as f32),
        Split::Lt(t) => (LEQ, f32_at_or_below(*t)),
        Split::Gte(t) => (GTE, f32_at_or_above(*t)),
        Split::Gt(t) if exact(*t) => (GT, *t as f32),
        Split::Gt(t) => (GTE, f32_at_or_above(*t)),
        Split::Eq(t) if exact(*t) => (EQ, *t as f32),
        Split::Eq(_) => (NEVER, 0.0),
        Split::Neq(t) => (NEQ, *t as f32),
    };
    (m, t, Vec::new())
}

fn split_threshold(split: &Split) -> f64 {
    match split {
        Split::Leq(t)
        | Split::Lt(t)
        | Split::Gte(t)
        | Split::Gt(t)
        | Split::Eq(t)
        | Split::Neq(t) => *t,
        Split::Member(_) => 0.0,
    }
}

fn child(c: Child) -> u32 {
    match c {
        Child::Node(i) => i,
        Child::Leaf(l) => l | LEAF,
    }
}

fn upload(gpu: &Gpu, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: if bytes.is_empty() { &[0; 4] } else { bytes },
            usage,
        })
}

fn storage(gpu: &Gpu, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    upload(
        gpu,
        label,
        bytes,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    )
}

/// The tree kernel, compiled (once per graph: every ensemble of it shares it).
pub(crate) fn tree_pipeline(gpu: &Gpu) -> wgpu::ComputePipeline {
    let module = gpu
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("trees"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/trees.wgsl").into()),
        });
    gpu.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("trees"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
}

/// A tree ensemble uploaded once, ready to score rows.
pub struct GpuTrees {
    ensemble: Ensemble,
    pipeline: wgpu::ComputePipeline,
    nodes: wgpu::Buffer,
    roots: wgpu::Buffer,
    leaves: wgpu::Buffer,
    weights: wgpu::Buffer,
    members: wgpu::Buffer,
    /// The largest buffer one binding may be, in bytes.
    binding: u64,
}

impl std::fmt::Debug for GpuTrees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTrees")
            .field("trees", &self.ensemble.n_trees())
            .field("nodes", &self.ensemble.nodes.len())
            .finish_non_exhaustive()
    }
}

impl GpuTrees {
    /// Uploads `ensemble`'s tables and compiles the kernel.
    pub fn new(gpu: &Gpu, ensemble: &Ensemble) -> Result<GpuTrees> {
        GpuTrees::with_pipeline(gpu, ensemble, None)
    }

    /// As [`GpuTrees::new`], with the kernel already compiled
    /// ([`tree_pipeline`]) when given.
    pub(crate) fn with_pipeline(
        gpu: &Gpu,
        ensemble: &Ensemble,
        pipeline: Option<wgpu::ComputePipeline>,
    ) -> Result<GpuTrees> {
        let binding = gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size);
        let over = |what: &str, needed: usize| Error::OverLimit {
            adapter: gpu.info.name.clone(),
            what: format!("the tree ensemble's {what}"),
            needed: needed as u64,
            limit: binding,
            limit_name: "max_storage_buffer_binding_size",
        };
        if ensemble.nodes.len() >= LEAF as usize || ensemble.leaves.len() >= LEAF as usize {
            return Err(Error::Onnx(format!(
                "a tree ensemble of {} nodes and {} leaves is over the GPU path's 2^31 of each",
                ensemble.nodes.len(),
                ensemble.leaves.len()
            )));
        }
        let mut nodes = Vec::with_capacity(ensemble.nodes.len());
        let mut members: Vec<u32> = Vec::new();
        for (i, n) in ensemble.nodes.iter().enumerate() {
            let (m, t, set) = device_test(&n.split);
            if set.len() > MAX_MEMBERS {
                return Err(Error::Onnx(format!(
                    "BRANCH_MEMBER node {i} has {} values, over the GPU path's {MAX_MEMBERS}",
                    set.len()
                )));
            }
            let value = if set.is_empty() && m < mode::MEMBER_F32 {
                t.to_bits()
            } else {
                members.len() as u32
            };
            nodes.push(DeviceNode {
                feature: n.feature,
                flags: m | (u32::from(n.missing_yes) << 4) | ((set.len() as u32) << 8),
                value,
                yes: child(n.yes),
                no: child(n.no),
            });
            members.extend(set);
        }
        let roots: Vec<u32> = ensemble.roots.iter().map(|&r| child(r)).collect();
        let leaves: Vec<[u32; 2]> = ensemble.leaves.iter().map(|&(f, l)| [f, l]).collect();
        let weights: Vec<[u32; 2]> = ensemble
            .weights
            .iter()
            .map(|w| [w.target, (w.value as f32).to_bits()])
            .collect();
        let tables: [(&str, &[u8]); 5] = [
            ("nodes", bytemuck::cast_slice(&nodes)),
            ("roots", bytemuck::cast_slice(&roots)),
            ("leaves", bytemuck::cast_slice(&leaves)),
            ("weights", bytemuck::cast_slice(&weights)),
            ("member sets", bytemuck::cast_slice(&members)),
        ];
        for (what, bytes) in tables {
            if bytes.len() as u64 > binding {
                return Err(over(what, bytes.len()));
            }
        }
        let pipeline = pipeline.unwrap_or_else(|| tree_pipeline(gpu));
        let [nodes, roots, leaves, weights, members] = tables.map(|(l, b)| storage(gpu, l, b));
        Ok(GpuTrees {
            ensemble: ensemble.clone(),
            pipeline,
            nodes,
            roots,
            leaves,
            weights,
            members,
            binding,
        })
    }

    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }

    /// Scores `rows` rows of `width` features (row-major), uploading them
    /// in blocks.
    pub fn score(&self, gpu: &Gpu, x: &[f32], rows: usize, width: usize) -> Result<Scored> {
        self.check_width(width)?;
        let per_block = (self.binding as usize / (4 * width.max(1))).clamp(1, BLOCK_ROWS);
        let mut all = Scored {
            width: self.ensemble.n_targets,
            scores: Vec::with_capacity(rows * self.ensemble.n_targets),
            labels: self.ensemble.classes().map(|_| Vec::with_capacity(rows)),
        };
        for start in (0..rows).step_by(per_block) {
            let n = per_block.min(rows - start);
            let block = &x[start * width..(start + n) * width];
            let buf = storage(gpu, "tree rows", bytemuck::cast_slice(block));
            let encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let s = self.score_buffer(gpu, encoder, &buf, n, width)?;
            all.scores.extend(s.scores);
            if let (Some(a), Some(l)) = (all.labels.as_mut(), s.labels) {
                a.extend(l);
            }
        }
        Ok(all)
    }

    fn check_width(&self, width: usize) -> Result<()> {
        if self.ensemble.width > width {
            return Err(Error::Shape(format!(
                "the tree ensemble reads feature {} but rows have {width} features",
                self.ensemble.width - 1
            )));
        }
        Ok(())
    }

    /// Scores `rows` rows of `width` features already in `x` on the device,
    /// after the work in `encoder` (submitted here with the kernel's).
    pub fn score_buffer(
        &self,
        gpu: &Gpu,
        mut encoder: wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        rows: usize,
        width: usize,
    ) -> Result<Scored> {
        self.check_width(width)?;
        let e = &self.ensemble;
        let leaf_mode = e.double;
        let per_row = if leaf_mode {
            e.n_trees()
        } else {
            2 * e.n_targets
        };
        // Rows per dispatch: its output must fit one binding.
        let step = (self.binding as usize / (4 * per_row.max(1))).max(1);
        if 4 * per_row as u64 > self.binding {
            return Err(Error::OverLimit {
                adapter: gpu.info.name.clone(),
                what: "one row's tree outputs".into(),
                needed: 4 * per_row as u64,
                limit: self.binding,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let mut reads = Vec::new();
        for start in (0..rows).step_by(step) {
            let n = step.min(rows - start);
            let bytes = (n * per_row * 4) as u64;
            let out = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tree outputs"),
                size: bytes.max(4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            self.encode(gpu, &mut encoder, x, &out, start, n, width);
            let s = staging(gpu, bytes);
            encoder.copy_buffer_to_buffer(&out, 0, &s, 0, bytes.max(4));
            reads.push((n, s, bytes));
        }
        let done = gpu.queue.submit([encoder.finish()]);
        let mut scored = Scored {
            width: e.n_targets,
            scores: vec![0.0; rows * e.n_targets],
            labels: e.classes().map(|_| vec![0; rows]),
        };
        let mut at = 0;
        for (n, s, bytes) in reads {
            let words: Vec<u32> = read_mapped(gpu, &s, bytes, done.clone())?
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            self.finish_rows(&words, at, n, &mut scored);
            at += n;
        }
        Ok(scored)
    }

    /// Encodes the walk of `rows` rows of `width` features in `x` into a
    /// new buffer of sums (rows x targets, f32 bits) then has-a-weight
    /// flags, for a finish on the device; `None` for a model in doubles or
    /// when the buffer would not fit one binding.
    pub(crate) fn encode_sums(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        rows: usize,
        width: usize,
    ) -> Result<Option<wgpu::Buffer>> {
        self.check_width(width)?;
        let bytes = (rows * 2 * self.ensemble.n_targets * 4) as u64;
        if self.ensemble.double || bytes > self.binding {
            return Ok(None);
        }
        let out = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tree sums"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.encode(gpu, encoder, x, &out, 0, rows, width);
        Ok(Some(out))
    }

    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        start: usize,
        rows: usize,
        width: usize,
    ) {
        let e = &self.ensemble;
        let groups = rows.div_ceil(WG as usize).max(1);
        let gx = groups.min(65_535);
        let gy = groups.div_ceil(gx);
        let params = Params {
            rows: rows as u32,
            width: width as u32,
            n_trees: e.n_trees() as u32,
            n_targets: e.n_targets as u32,
            aggregate: match e.effective_aggregate() {
                Aggregate::Sum | Aggregate::Average => 0,
                Aggregate::Min => 1,
                Aggregate::Max => 2,
            },
            leaf_mode: u32::from(e.double),
            row_offset: start as u32,
            stride: gx as u32 * WG,
            max_depth: e.depths.iter().copied().max().unwrap_or(0),
            pad: [0; 3],
        };
        let params = upload(
            gpu,
            "tree params",
            bytemuck::bytes_of(&params),
            wgpu::BufferUsages::UNIFORM,
        );
        let buffers = [
            &params,
            x,
            &self.nodes,
            &self.roots,
            &self.leaves,
            &self.weights,
            &self.members,
            out,
        ];
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("trees"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("trees"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx as u32, gy as u32, 1);
    }

    /// Finishes rows `at..at + n` from the kernel's words: sums and flags
    /// (f32 models) or leaf indices (double models).
    fn finish_rows(&self, words: &[u32], at: usize, n: usize, scored: &mut Scored) {
        let e = &self.ensemble;
        let k = e.n_targets;
        let mut finish = |r: usize, code: i64| {
            if let Some(l) = scored.labels.as_mut() {
                l[at + r] = code;
            }
        };
        if e.double {
            let trees = e.n_trees();
            let mut state = RowState::<f64>::new(k);
            for r in 0..n {
                state.clear();
                for &leaf in &words[r * trees..(r + 1) * trees] {
                    e.add_leaf(leaf, &mut state);
                }
                let z = &mut scored.scores[(at + r) * k..(at + r + 1) * k];
                finish(r, e.finalize(&mut state, z));
            }
            return;
        }
        let (sums, has) = words.split_at(n * k);
        let mut state = RowState::<f32>::new(k);
        for r in 0..n {
            for j in 0..k {
                state.scores[j] = f32::from_bits(sums[r * k + j]);
                state.has[j] = has[r * k + j] != 0;
            }
            let z = &mut scored.scores[(at + r) * k..(at + r + 1) * k];
            finish(r, e.finalize(&mut state, z));
        }
    }
}
