//! ONNX graphs on the GPU: the CPU fast path's plan (`model::onnx::plan`),
//! step by step, as WGSL dispatches. Fused dense chains run on the dense
//! kernel (`shaders/dense.wgsl`) with their epilogue applied in place; the
//! other per-row nodes on the kernels in `shaders/onnx_*.wgsl`. Constants
//! the steps read are uploaded once; a batch runs in blocks of rows sized
//! to the adapter's binding limit, one submission per block.
//!
//! Integer tensors are i32 on the device: int64 values (feeds, constants)
//! are checked to fit when they are uploaded and widened again when read
//! back. What the kernels cannot run (an integer exponent computed per row,
//! ArgMax over integers, a product with more than 6 leading dimensions, an
//! int64 constant past 32 bits) is refused when the model is loaded, naming
//! the node, so a worker can fall back to the native CPU path.

use std::collections::HashMap;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::kernels::{DenseParams, KernelConfig, Kernels, read_mapped, staging};
use super::{Error, Gpu, Result};
use crate::model::onnx::graph::{Graph, ValueId};
use crate::model::onnx::infer::Val;
use crate::model::onnx::kernels::{broadcast_shapes, broadcast_strides, reduced_shape};
use crate::model::onnx::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::model::onnx::plan::{DenseStep, Epilogue, Kernel};
use crate::model::onnx::proto::data_type;
use crate::model::onnx::{DType, Data, Feed, OnnxModel, Tensor};

/// Rows per block at most (fewer when a row's widest value would not fit
/// one storage binding).
pub const GPU_BLOCK_ROWS: usize = 16_384;
/// Invocations per workgroup of the `onnx_*` kernels.
const WG: u32 = 64;
/// Dimensions the kernels' index arithmetic handles.
const MAX_RANK: usize = 8;
/// Leading (batch) dimensions of a MatMul the matmul kernel handles.
const MAX_BATCH: usize = 6;

struct Pipelines {
    unary: wgpu::ComputePipeline,
    clip_f32: wgpu::ComputePipeline,
    clip_i32: wgpu::ComputePipeline,
    binary_f32: wgpu::ComputePipeline,
    binary_i32: wgpu::ComputePipeline,
    cast_f32_i32: wgpu::ComputePipeline,
    cast_i32_f32: wgpu::ComputePipeline,
    cast_i32_i32: wgpu::ComputePipeline,
    softmax: wgpu::ComputePipeline,
    layer_norm: wgpu::ComputePipeline,
    channel_affine: wgpu::ComputePipeline,
    argmax: wgpu::ComputePipeline,
    gather: wgpu::ComputePipeline,
    copy: wgpu::ComputePipeline,
    reduce_f32: wgpu::ComputePipeline,
    reduce_i32: wgpu::ComputePipeline,
    matmul: wgpu::ComputePipeline,
}

impl Pipelines {
    fn new(gpu: &Gpu) -> Pipelines {
        let module = |name: &str, source: &str| {
            gpu.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
        };
        let pipe = |module: &wgpu::ShaderModule, entry: &str| {
            gpu.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: None,
                    module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        };
        let elementwise = module(
            "onnx_elementwise",
            include_str!("../../shaders/onnx_elementwise.wgsl"),
        );
        let rowwise = module(
            "onnx_rowwise",
            include_str!("../../shaders/onnx_rowwise.wgsl"),
        );
        let index = module("onnx_index", include_str!("../../shaders/onnx_index.wgsl"));
        let reduce = module(
            "onnx_reduce",
            include_str!("../../shaders/onnx_reduce.wgsl"),
        );
        let matmul = module(
            "onnx_matmul",
            include_str!("../../shaders/onnx_matmul.wgsl"),
        );
        Pipelines {
            unary: pipe(&elementwise, "unary"),
            clip_f32: pipe(&elementwise, "clip_f32"),
            clip_i32: pipe(&elementwise, "clip_i32"),
            binary_f32: pipe(&elementwise, "binary_f32"),
            binary_i32: pipe(&elementwise, "binary_i32"),
            cast_f32_i32: pipe(&elementwise, "cast_f32_i32"),
            cast_i32_f32: pipe(&elementwise, "cast_i32_f32"),
            cast_i32_i32: pipe(&elementwise, "cast_i32_i32"),
            softmax: pipe(&rowwise, "softmax"),
            layer_norm: pipe(&rowwise, "layer_norm"),
            channel_affine: pipe(&rowwise, "channel_affine"),
            argmax: pipe(&rowwise, "argmax"),
            gather: pipe(&index, "gather"),
            copy: pipe(&index, "copy"),
            reduce_f32: pipe(&reduce, "reduce_f32"),
            reduce_i32: pipe(&reduce, "reduce_i32"),
            matmul: pipe(&matmul, "main"),
        }
    }
}

/// A fused dense chain's weights on the device.
struct DenseDevice {
    w: wgpu::Buffer,
    b: wgpu::Buffer,
    /// The first epilogue step is a relu the dense kernel applies itself.
    relu: bool,
    epilogue: Vec<DeviceEpilogue>,
}

enum DeviceEpilogue {
    Unary {
        code: u32,
        alpha: f32,
    },
    Clip {
        lo: f32,
        hi: f32,
    },
    LayerNorm {
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
        epsilon: f32,
    },
    Softmax {
        log: bool,
    },
}

/// Per-node constants prepared at load (normalization parameters).
enum Prepared {
    /// LayerNormalization's scale and bias expanded to the normalized shape.
    LayerNorm {
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
    },
    /// BatchNormalization as `x * scale + shift` per channel.
    BatchNorm {
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
    },
}

/// A value of the block being run: a device buffer of f32 or i32 words.
#[derive(Clone)]
struct DVal {
    buf: Arc<wgpu::Buffer>,
    int: bool,
    shape: Vec<usize>,
}

/// An ONNX model ready to run on one adapter.
pub struct GpuOnnx {
    model: OnnxModel,
    /// The GPU room's kernels: dense chains run on its matrix kernels.
    kernels: Kernels,
    pipes: Pipelines,
    consts: HashMap<ValueId, (Arc<wgpu::Buffer>, bool)>,
    dense: HashMap<usize, DenseDevice>,
    prepared: HashMap<usize, Prepared>,
    /// ai.onnx.ml nodes (`super::trees`).
    ml: HashMap<usize, super::trees::DeviceMl>,
    block_rows: usize,
}

impl std::fmt::Debug for GpuOnnx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOnnx")
            .field("steps", &self.model.plan().steps.len())
            .field("block_rows", &self.block_rows)
            .finish()
    }
}

fn unsupported(label: &str, why: &str) -> Error {
    Error::Onnx(format!("the GPU path does not run {label}: {why}"))
}

/// f32 words of `t`, or i32 words of an integer tensor (each checked to fit).
fn words(t: &Tensor, what: &str) -> std::result::Result<(Vec<u32>, bool), String> {
    match &t.data {
        Data::F32(v) => Ok((v.iter().map(|x| x.to_bits()).collect(), false)),
        Data::I64(v) => {
            let mut out = Vec::with_capacity(v.len());
            for &x in v {
                let n = i32::try_from(x).map_err(|_| {
                    format!(
                        "{what} holds {x}, outside the 32-bit integers the WGSL kernels compute with"
                    )
                })?;
                out.push(n as u32);
            }
            Ok((out, true))
        }
    }
}

fn storage(gpu: &Gpu, label: &str, data: &[u32]) -> wgpu::Buffer {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: if bytes.is_empty() { &[0; 4] } else { bytes },
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}

fn scratch(gpu: &Gpu, label: &str, values: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (values as u64 * 4).max(4),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

fn f32s(gpu: &Gpu, label: &str, v: &[f32]) -> wgpu::Buffer {
    let w: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
    storage(gpu, label, &w)
}

/// `(groups in x, groups in y)` for `count` invocations of `WG`.
fn linear_groups(count: usize) -> (u32, u32) {
    let groups = count.div_ceil(WG as usize).max(1);
    let x = groups.min(65_535);
    (x as u32, groups.div_ceil(x) as u32)
}

/// `dims` padded to [`MAX_RANK`] words.
fn padded(dims: &[usize]) -> Vec<u32> {
    let mut out: Vec<u32> = dims.iter().map(|&d| d as u32).collect();
    out.resize(MAX_RANK, 0);
    out
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

fn unary_code(u: UnaryOp) -> (u32, f32) {
    match u {
        UnaryOp::Sqrt => (0, 0.0),
        UnaryOp::Relu => (1, 0.0),
        UnaryOp::LeakyRelu(a) => (2, a),
        UnaryOp::Sigmoid => (3, 0.0),
        UnaryOp::Tanh => (4, 0.0),
        UnaryOp::Erf => (5, 0.0),
        UnaryOp::Gelu => (6, 0.0),
        UnaryOp::GeluTanh => (7, 0.0),
    }
}

fn narrow_code(to: i32) -> u32 {
    match to {
        data_type::INT8 => 1,
        data_type::UINT8 => 2,
        data_type::INT16 => 3,
        data_type::UINT16 => 4,
        _ => 0,
    }
}

/// `axis` (negative from the end) in `rank` dimensions, checked at load.
fn axis(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64) as usize
    } else {
        a as usize
    }
}

/// One block being encoded.
struct Block<'a> {
    gpu: &'a Gpu,
    g: &'a GpuOnnx,
    encoder: wgpu::CommandEncoder,
    vals: Vec<Option<DVal>>,
    rows: usize,
    /// Gather nodes' out-of-range flags, to read back with the outputs.
    gathers: Vec<(usize, wgpu::Buffer)>,
}

impl GpuOnnx {
    /// Compiles the kernels and uploads the constants `model`'s steps read.
    /// Fails, naming the node, on anything the kernels cannot run.
    pub fn new(gpu: &Gpu, model: &OnnxModel) -> Result<GpuOnnx> {
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let built = Self::build(gpu, model);
        let oom = pollster::block_on(oom.pop());
        let invalid = pollster::block_on(scope.pop());
        if let Some(e) = oom.or(invalid) {
            return Err(Error::Wgpu {
                adapter: gpu.info.name.clone(),
                stage: "loading the ONNX model",
                message: e.to_string(),
            });
        }
        built
    }

    fn build(gpu: &Gpu, model: &OnnxModel) -> Result<GpuOnnx> {
        let graph = model.graph();
        let plan = model.plan();
        let mut consts = HashMap::new();
        let mut dense = HashMap::new();
        let mut prepared = HashMap::new();
        let mut ml = HashMap::new();
        for (s, step) in plan.steps.iter().enumerate() {
            match &step.kernel {
                Kernel::Dense(d) => {
                    dense.insert(s, dense_device(gpu, d));
                }
                Kernel::Node(i) => {
                    let node = &graph.nodes[*i];
                    check_node(graph, *i)?;
                    if let Some(p) = prepare(gpu, graph, *i) {
                        prepared.insert(*i, p);
                    }
                    if let Op::Ml(m) = &node.op {
                        ml.insert(*i, super::trees::DeviceMl::new(gpu, m)?);
                    }
                    for (slot, v) in node.inputs.iter().enumerate() {
                        let Some(v) = v else { continue };
                        let Val::Const(t) = graph.val(*v) else {
                            continue;
                        };
                        if !reads_constant(&node.op, slot) || consts.contains_key(v) {
                            continue;
                        }
                        // Pow's exponent is float on the device, whatever its type.
                        let t = if matches!(node.op, Op::Binary(BinaryOp::Pow)) {
                            Tensor::f32(t.shape.clone(), t.to_f32_vec())
                        } else {
                            t.clone()
                        };
                        let (w, int) = words(&t, &format!("constant '{}'", graph.values[*v].name))
                            .map_err(|e| unsupported(&node.label, &e))?;
                        let buf = storage(gpu, &graph.values[*v].name, &w);
                        consts.insert(*v, (Arc::new(buf), int));
                    }
                }
            }
        }
        let widest = graph
            .values
            .iter()
            .filter_map(|v| match &v.state {
                crate::model::onnx::graph::State::Known(Val::Rows { dims, .. }) => {
                    Some(dims.iter().product::<usize>())
                }
                _ => None,
            })
            .max()
            .unwrap_or(1)
            .max(1);
        let binding = gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size) as usize;
        let block_rows = (binding / (4 * widest)).min(GPU_BLOCK_ROWS);
        if block_rows == 0 {
            return Err(Error::OverLimit {
                adapter: gpu.info.name.clone(),
                what: "one row of the ONNX model's widest value".into(),
                needed: 4 * widest as u64,
                limit: binding as u64,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(GpuOnnx {
            model: model.clone(),
            kernels: Kernels::new(gpu, KernelConfig::for_limits(&gpu.limits)),
            pipes: Pipelines::new(gpu),
            consts,
            dense,
            prepared,
            ml,
            block_rows,
        })
    }

    /// Rows per block on this adapter.
    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// Runs in blocks of at most `rows` rows (for tests of the blocking;
    /// never more than the adapter allows).
    pub fn with_block_rows(mut self, rows: usize) -> GpuOnnx {
        self.block_rows = self.block_rows.min(rows.max(1));
        self
    }

    /// Scores `rows` rows: each output `[rows] + dims`, as
    /// [`OnnxModel::run`] gives them.
    pub fn run(&self, gpu: &Gpu, feeds: &[Feed<'_>], rows: usize) -> Result<Vec<Tensor>> {
        let graph = self.model.graph();
        if let Err(e) = self.model.run_checks(feeds, rows) {
            return Err(Error::Onnx(e.to_string()));
        }
        let mut outs: Vec<Data> = graph
            .outputs
            .iter()
            .map(|o| match o.dtype {
                DType::F32 => Data::F32(Vec::new()),
                DType::I64 => Data::I64(Vec::new()),
            })
            .collect();
        for start in (0..rows).step_by(self.block_rows.max(1)) {
            let end = rows.min(start + self.block_rows);
            let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let block = self.run_block(gpu, feeds, start..end);
            let oom = pollster::block_on(oom.pop());
            let invalid = pollster::block_on(scope.pop());
            if let Some(e) = oom.or(invalid) {
                return Err(Error::Wgpu {
                    adapter: gpu.info.name.clone(),
                    stage: "running the ONNX model",
                    message: e.to_string(),
                });
            }
            for (acc, t) in outs.iter_mut().zip(block?) {
                match (acc, t.data) {
                    (Data::F32(a), Data::F32(v)) => a.extend(v),
                    (Data::I64(a), Data::I64(v)) => a.extend(v),
                    _ => unreachable!("output types are fixed at load"),
                }
            }
        }
        Ok(outs
            .into_iter()
            .zip(&graph.outputs)
            .map(|(data, o)| Tensor {
                shape: std::iter::once(rows)
                    .chain(o.dims.iter().copied())
                    .collect(),
                data,
            })
            .collect())
    }

    fn run_block(
        &self,
        gpu: &Gpu,
        feeds: &[Feed<'_>],
        range: std::ops::Range<usize>,
    ) -> Result<Vec<Tensor>> {
        let graph = self.model.graph();
        let n = range.len();
        let mut b = Block {
            gpu,
            g: self,
            encoder: gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("onnx block"),
                }),
            vals: vec![None; graph.values.len()],
            rows: n,
            gathers: Vec::new(),
        };
        for (input, feed) in graph.inputs.iter().zip(feeds) {
            let per_row: usize = input.dims.iter().product();
            let r = range.start * per_row..range.end * per_row;
            let (w, int) = match feed {
                Feed::F32(v) => (
                    v[r].iter().map(|x| x.to_bits()).collect::<Vec<u32>>(),
                    false,
                ),
                Feed::I64(v) => {
                    let t = Tensor::i64(vec![r.len()], v[r].to_vec());
                    words(&t, &format!("input '{}'", input.name)).map_err(Error::Onnx)?
                }
            };
            let shape = std::iter::once(n)
                .chain(input.dims.iter().copied())
                .collect();
            b.vals[input.value] = Some(DVal {
                buf: Arc::new(storage(gpu, &input.name, &w)),
                int,
                shape,
            });
        }
        for (s, step) in self.model.plan().steps.iter().enumerate() {
            match &step.kernel {
                Kernel::Dense(d) => b.dense(s, d, step.output, &step.frees),
                Kernel::Node(i) => b.node(*i, &step.frees)?,
            }
            for v in &step.frees {
                b.vals[*v] = None;
            }
        }
        b.finish()
    }
}

/// Whether `op` reads the values of its input `slot` on the device (shape
/// and axes inputs are used at load only).
fn reads_constant(op: &Op, slot: usize) -> bool {
    match op {
        Op::Binary(_) | Op::MatMul | Op::Gemm { .. } | Op::Concat { .. } => true,
        Op::Gather { .. } => slot <= 1,
        _ => slot == 0,
    }
}

/// Refuses what the kernels cannot run.
fn check_node(graph: &Graph, i: usize) -> Result<()> {
    let node = &graph.nodes[i];
    let input = |k: usize| node.inputs.get(k).copied().flatten().map(|v| graph.val(v));
    let float = |k: usize| input(k).is_none_or(|v| v.dtype() == DType::F32);
    let why = match &node.op {
        Op::Binary(BinaryOp::Pow) if input(1).is_some_and(|e| e.is_rows()) && !float(1) => {
            "an integer exponent computed per row".to_string()
        }
        Op::ArgMax { .. } if !float(0) => "ArgMax over integers".to_string(),
        Op::MatMul => {
            let rank = |k: usize| input(k).map_or(0, |v| v.dims().len());
            if rank(0).max(rank(1)) <= MAX_BATCH + 2 {
                return Ok(());
            }
            format!("a MatMul with more than {MAX_BATCH} leading dimensions")
        }
        _ => return Ok(()),
    };
    Err(unsupported(&node.label, &why))
}

/// Normalization parameters prepared once.
fn prepare(gpu: &Gpu, graph: &Graph, i: usize) -> Option<Prepared> {
    let node = &graph.nodes[i];
    let c = |k: usize| -> Option<&Tensor> {
        node.inputs
            .get(k)
            .copied()
            .flatten()
            .and_then(|v| graph.val(v).as_const())
    };
    match &node.op {
        Op::LayerNorm { axis: a, .. } => {
            let dims = graph.val(node.inputs[0]?).dims();
            let ax = axis(*a, dims.len());
            let normalized: Vec<usize> = dims[ax..]
                .iter()
                .map(|d| match d {
                    crate::model::onnx::infer::Dim::Fixed(k) => *k,
                    crate::model::onnx::infer::Dim::Rows => 1,
                })
                .collect();
            let norm: usize = normalized.iter().product();
            let expand =
                |t: &Tensor| crate::model::onnx::kernels::expand(t, &normalized).to_f32_vec();
            let scale = expand(c(1)?);
            let shift = c(2).map_or_else(|| vec![0.0; norm], expand);
            Some(Prepared::LayerNorm {
                scale: f32s(gpu, "layer norm scale", &scale),
                shift: f32s(gpu, "layer norm shift", &shift),
            })
        }
        Op::BatchNorm { epsilon } => {
            let p = |k: usize| c(k).and_then(|t| t.as_f32());
            let (s, b, mean, var) = (p(1)?, p(2)?, p(3)?, p(4)?);
            let scale: Vec<f32> = s
                .iter()
                .zip(var)
                .map(|(s, v)| s / (v + epsilon).sqrt())
                .collect();
            let shift: Vec<f32> = b
                .iter()
                .zip(mean)
                .zip(&scale)
                .map(|((b, m), k)| b - m * k)
                .collect();
            Some(Prepared::BatchNorm {
                scale: f32s(gpu, "batch norm scale", &scale),
                shift: f32s(gpu, "batch norm shift", &shift),
            })
        }
        _ => None,
    }
}

fn dense_device(gpu: &Gpu, d: &DenseStep) -> DenseDevice {
    let relu = d.epilogue.first() == Some(&Epilogue::Unary(UnaryOp::Relu));
    let rest = if relu {
        &d.epilogue[1..]
    } else {
        &d.epilogue[..]
    };
    let epilogue = rest
        .iter()
        .map(|e| match e {
            Epilogue::Unary(u) => {
                let (code, alpha) = unary_code(*u);
                DeviceEpilogue::Unary { code, alpha }
            }
            Epilogue::Clip { lo, hi } => DeviceEpilogue::Clip { lo: *lo, hi: *hi },
            Epilogue::LayerNorm {
                scale,
                bias,
                epsilon,
            } => DeviceEpilogue::LayerNorm {
                scale: f32s(gpu, "layer norm scale", scale),
                shift: f32s(
                    gpu,
                    "layer norm shift",
                    &bias.clone().unwrap_or_else(|| vec![0.0; scale.len()]),
                ),
                epsilon: *epsilon,
            },
            Epilogue::Softmax { log } => DeviceEpilogue::Softmax { log: *log },
        })
        .collect();
    DenseDevice {
        w: f32s(gpu, &d.layer.name, &d.layer.weight),
        b: f32s(gpu, &d.layer.name, &d.layer.bias),
        relu,
        epilogue,
    }
}

impl<'a> Block<'a> {
    fn graph(&self) -> &'a Graph {
        self.g.model.graph()
    }

    fn dispatch(
        &mut self,
        pipe: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.dispatch_entries(pipe, &entries, groups);
    }

    /// A dispatch whose buffers sit at the given binding numbers.
    fn dispatch_at(
        &mut self,
        pipe: &wgpu::ComputePipeline,
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: *i,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.dispatch_entries(pipe, &entries, groups);
    }

    fn dispatch_entries(
        &mut self,
        pipe: &wgpu::ComputePipeline,
        entries: &[wgpu::BindGroupEntry],
        groups: (u32, u32),
    ) {
        let bind = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipe.get_bind_group_layout(0),
                entries,
            });
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
        pass.set_pipeline(pipe);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    fn params(&self, words: &[u32]) -> wgpu::Buffer {
        storage(self.gpu, "params", words)
    }

    /// The concrete shape of per-row value `v` in this block.
    fn shape_of(&self, v: ValueId) -> Vec<usize> {
        match self.graph().val(v) {
            Val::Rows { dims, .. } => std::iter::once(self.rows)
                .chain(dims.iter().copied())
                .collect(),
            Val::Const(t) => t.shape.clone(),
            Val::Sym { shape, .. } => shape.clone(),
        }
    }

    /// Input `k` of node `i` as a device value.
    fn operand(&self, i: usize, k: usize) -> Option<DVal> {
        let v = self.graph().nodes[i].inputs.get(k).copied().flatten()?;
        match self.graph().val(v) {
            Val::Rows { .. } => self.vals[v].clone(),
            Val::Const(t) => self.g.consts.get(&v).map(|(buf, int)| DVal {
                buf: buf.clone(),
                int: *int,
                shape: t.shape.clone(),
            }),
            Val::Sym { .. } => None,
        }
    }

    /// A buffer holding `x`'s values that this step may overwrite: `x`'s own
    /// when nothing else holds it after this step, else a copy.
    fn writable(&mut self, i: usize, frees: &[ValueId]) -> DVal {
        let v = self.graph().nodes[i].inputs[0].expect("input 1 checked at load");
        let x = self.operand(i, 0).expect("a per-row input");
        if frees.contains(&v) {
            self.vals[v] = None;
            if Arc::strong_count(&x.buf) == 1 {
                return x;
            }
        }
        let count: usize = x.shape.iter().product();
        let copy = scratch(self.gpu, "copy", count);
        self.encoder.copy_buffer_to_buffer(
            &x.buf,
            0,
            &copy,
            0,
            (count as u64 * 4).max(4).min(x.buf.size()),
        );
        DVal {
            buf: Arc::new(copy),
            int: x.int,
            shape: x.shape,
        }
    }

    fn set(&mut self, v: ValueId, buf: wgpu::Buffer, int: bool) {
        let shape = self.shape_of(v);
        self.vals[v] = Some(DVal {
            buf: Arc::new(buf),
            int,
            shape,
        });
    }

    fn dense(&mut self, s: usize, d: &DenseStep, output: ValueId, _frees: &[ValueId]) {
        let g = self.g;
        let dev = &g.dense[&s];
        let x = self.vals[d.input]
            .clone()
            .expect("the dense input is computed");
        let count: usize = x.shape.iter().product();
        let rows = count / d.layer.in_dim;
        let m = d.layer.out_dim;
        let y = scratch(self.gpu, &d.layer.name, rows * m);
        let p = DenseParams {
            rows: rows as u32,
            in_dim: d.layer.in_dim as u32,
            out_dim: m as u32,
            relu: u32::from(dev.relu),
        };
        g.kernels
            .encode_dense(self.gpu, &mut self.encoder, p, &x.buf, &dev.w, &dev.b, &y);
        for e in &dev.epilogue {
            match e {
                DeviceEpilogue::Unary { code, alpha } => {
                    let p = self.params(&[*code, (rows * m) as u32, alpha.to_bits()]);
                    self.dispatch_at(&g.pipes.unary, &[(0, &p), (3, &y)], linear_groups(rows * m));
                }
                DeviceEpilogue::Clip { lo, hi } => {
                    let p = self.params(&[(rows * m) as u32, lo.to_bits(), hi.to_bits()]);
                    self.dispatch_at(
                        &g.pipes.clip_f32,
                        &[(0, &p), (3, &y)],
                        linear_groups(rows * m),
                    );
                }
                DeviceEpilogue::LayerNorm {
                    scale,
                    shift,
                    epsilon,
                } => {
                    let p = self.params(&[rows as u32, m as u32, epsilon.to_bits()]);
                    self.dispatch_at(
                        &self.g.pipes.layer_norm,
                        &[(0, &p), (1, &y), (2, scale), (3, shift)],
                        linear_groups(rows),
                    );
                }
                DeviceEpilogue::Softmax { log } => {
                    let p = self.params(&[rows as u32, m as u32, 1, *log as u32]);
                    self.dispatch_at(&g.pipes.softmax, &[(0, &p), (1, &y)], linear_groups(rows));
                }
            }
        }
        self.set(output, y, false);
    }

    fn node(&mut self, i: usize, frees: &[ValueId]) -> Result<()> {
        let g = self.g;
        let node = &g.model.graph().nodes[i];
        let out = node.output;
        let out_shape = self.shape_of(out);
        let count: usize = out_shape.iter().product();
        let out_int = self.graph().val(out).dtype() != DType::F32;
        let pipes = &g.pipes;
        match &node.op {
            Op::Identity
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze => {
                let x = self.operand(i, 0).expect("a per-row input");
                self.vals[out] = Some(DVal {
                    buf: x.buf,
                    int: x.int,
                    shape: out_shape,
                });
            }
            Op::Cast { to } => {
                let x = self.operand(i, 0).expect("a per-row input");
                if !x.int && !out_int {
                    self.vals[out] = Some(DVal {
                        buf: x.buf,
                        int: false,
                        shape: out_shape,
                    });
                    return Ok(());
                }
                let y = scratch(self.gpu, "cast", count);
                let code = narrow_code(*to);
                match (x.int, out_int) {
                    (false, false) => unreachable!("handled above"),
                    (false, true) => {
                        let p = self.params(&[count as u32, code]);
                        self.dispatch_at(
                            &pipes.cast_f32_i32,
                            &[(0, &p), (1, &x.buf), (6, &y)],
                            linear_groups(count),
                        );
                    }
                    (true, false) => {
                        let p = self.params(&[count as u32]);
                        self.dispatch_at(
                            &pipes.cast_i32_f32,
                            &[(0, &p), (4, &x.buf), (3, &y)],
                            linear_groups(count),
                        );
                    }
                    (true, true) => {
                        let p = self.params(&[count as u32, code]);
                        self.dispatch_at(
                            &pipes.cast_i32_i32,
                            &[(0, &p), (4, &x.buf), (6, &y)],
                            linear_groups(count),
                        );
                    }
                }
                self.set(out, y, out_int);
            }
            Op::Binary(op) => {
                let (a, b) = (
                    self.operand(i, 0).expect("operand"),
                    self.operand(i, 1).expect("operand"),
                );
                let shape = broadcast_shapes(&a.shape, &b.shape).expect("checked at load");
                let code = match op {
                    BinaryOp::Add => 0,
                    BinaryOp::Sub => 1,
                    BinaryOp::Mul => 2,
                    BinaryOp::Div => 3,
                    BinaryOp::Pow => 4,
                };
                let mut words = vec![code, shape.len() as u32, count as u32];
                words.extend(padded(&shape));
                words.extend(padded(&broadcast_strides(&a.shape, &shape)));
                words.extend(padded(&broadcast_strides(&b.shape, &shape)));
                let p = self.params(&words);
                let y = scratch(self.gpu, "binary", count);
                if out_int {
                    self.dispatch_at(
                        &pipes.binary_i32,
                        &[(0, &p), (4, &a.buf), (5, &b.buf), (6, &y)],
                        linear_groups(count),
                    );
                } else {
                    self.dispatch_at(
                        &pipes.binary_f32,
                        &[(0, &p), (1, &a.buf), (2, &b.buf), (3, &y)],
                        linear_groups(count),
                    );
                }
                self.set(out, y, out_int);
            }
            Op::Unary(u) => {
                let x = self.writable(i, frees);
                let (code, alpha) = unary_code(*u);
                let p = self.params(&[code, count as u32, alpha.to_bits()]);
                self.dispatch_at(&pipes.unary, &[(0, &p), (3, &x.buf)], linear_groups(count));
                self.vals[out] = Some(DVal {
                    shape: out_shape,
                    ..x
                });
            }
            Op::Clip => {
                let bound = |k: usize| {
                    node.inputs
                        .get(k)
                        .copied()
                        .flatten()
                        .and_then(|v| self.graph().val(v).as_const().cloned())
                };
                let (lo, hi) = (bound(1), bound(2));
                let x = self.writable(i, frees);
                if x.int {
                    let lo = lo.map_or(i32::MIN, |t| {
                        t.to_i64_vec()[0].clamp(i32::MIN as i64, i32::MAX as i64) as i32
                    });
                    let hi = hi.map_or(i32::MAX, |t| {
                        t.to_i64_vec()[0].clamp(i32::MIN as i64, i32::MAX as i64) as i32
                    });
                    let p = self.params(&[count as u32, lo as u32, hi as u32]);
                    self.dispatch_at(
                        &pipes.clip_i32,
                        &[(0, &p), (6, &x.buf)],
                        linear_groups(count),
                    );
                } else {
                    let lo = lo.map_or(f32::NEG_INFINITY, |t| t.to_f32_vec()[0]);
                    let hi = hi.map_or(f32::INFINITY, |t| t.to_f32_vec()[0]);
                    let p = self.params(&[count as u32, lo.to_bits(), hi.to_bits()]);
                    self.dispatch_at(
                        &pipes.clip_f32,
                        &[(0, &p), (3, &x.buf)],
                        linear_groups(count),
                    );
                }
                self.vals[out] = Some(DVal {
                    shape: out_shape,
                    ..x
                });
            }
            Op::Softmax { axis: a, log } => {
                let x = self.writable(i, frees);
                let ax = axis(*a, x.shape.len());
                let outer: usize = x.shape[..ax].iter().product();
                let inner: usize = x.shape[ax + 1..].iter().product();
                let p = self.params(&[outer as u32, x.shape[ax] as u32, inner as u32, *log as u32]);
                self.dispatch_at(
                    &pipes.softmax,
                    &[(0, &p), (1, &x.buf)],
                    linear_groups(outer * inner),
                );
                self.vals[out] = Some(DVal {
                    shape: out_shape,
                    ..x
                });
            }
            Op::LayerNorm { axis: a, epsilon } => {
                let Some(Prepared::LayerNorm { scale, shift }) = g.prepared.get(&i) else {
                    unreachable!("prepared at load");
                };
                let x = self.writable(i, frees);
                let ax = axis(*a, x.shape.len());
                let norm: usize = x.shape[ax..].iter().product();
                let groups = count / norm.max(1);
                let p = self.params(&[groups as u32, norm as u32, epsilon.to_bits()]);
                self.dispatch_at(
                    &pipes.layer_norm,
                    &[(0, &p), (1, &x.buf), (2, scale), (3, shift)],
                    linear_groups(groups),
                );
                self.vals[out] = Some(DVal {
                    shape: out_shape,
                    ..x
                });
            }
            Op::BatchNorm { .. } => {
                let Some(Prepared::BatchNorm { scale, shift }) = g.prepared.get(&i) else {
                    unreachable!("prepared at load");
                };
                let x = self.writable(i, frees);
                let inner: usize = x.shape[2..].iter().product();
                let p = self.params(&[count as u32, x.shape[1] as u32, inner as u32]);
                self.dispatch_at(
                    &pipes.channel_affine,
                    &[(0, &p), (1, &x.buf), (2, scale), (3, shift)],
                    linear_groups(count),
                );
                self.vals[out] = Some(DVal {
                    shape: out_shape,
                    ..x
                });
            }
            Op::ArgMax {
                axis: a,
                select_last_index,
                ..
            } => {
                let x = self.operand(i, 0).expect("a per-row input");
                let ax = axis(*a, x.shape.len());
                let outer: usize = x.shape[..ax].iter().product();
                let inner: usize = x.shape[ax + 1..].iter().product();
                let y = scratch(self.gpu, "argmax", count);
                let p = self.params(&[
                    outer as u32,
                    x.shape[ax] as u32,
                    inner as u32,
                    *select_last_index as u32,
                ]);
                self.dispatch_at(
                    &pipes.argmax,
                    &[(0, &p), (4, &x.buf), (5, &y)],
                    linear_groups(outer * inner),
                );
                self.set(out, y, true);
            }
            Op::Gather { axis: a } => {
                let (data, idx) = (
                    self.operand(i, 0).expect("operand"),
                    self.operand(i, 1).expect("operand"),
                );
                let ax = axis(*a, data.shape.len());
                let outer: usize = data.shape[..ax].iter().product();
                let inner: usize = data.shape[ax + 1..].iter().product();
                let n_idx: usize = idx.shape.iter().product();
                let p = self.params(&[
                    outer as u32,
                    data.shape[ax] as u32,
                    inner as u32,
                    n_idx as u32,
                ]);
                let y = scratch(self.gpu, "gather", count);
                let bad = storage(self.gpu, "gather flag", &[u32::MAX]);
                self.dispatch_at(
                    &pipes.gather,
                    &[(0, &p), (1, &data.buf), (2, &y), (3, &idx.buf), (4, &bad)],
                    linear_groups(count),
                );
                self.gathers.push((i, bad));
                self.set(out, y, data.int);
            }
            Op::Concat { axis: a } => {
                let parts: Vec<DVal> = (0..node.inputs.len())
                    .filter_map(|k| self.operand(i, k))
                    .collect();
                let ax = axis(*a, out_shape.len());
                let out_strides = row_major_strides(&out_shape);
                let y = scratch(self.gpu, "concat", count);
                let mut offset = 0usize;
                for part in &parts {
                    let n: usize = part.shape.iter().product();
                    let mut words = vec![
                        part.shape.len() as u32,
                        n as u32,
                        0,
                        (offset * out_strides[ax]) as u32,
                    ];
                    words.extend(padded(&part.shape));
                    words.extend(padded(&row_major_strides(&part.shape)));
                    words.extend(padded(&out_strides));
                    let p = self.params(&words);
                    if n > 0 {
                        self.dispatch_at(
                            &pipes.copy,
                            &[(0, &p), (1, &part.buf), (2, &y)],
                            linear_groups(n),
                        );
                    }
                    offset += part.shape[ax];
                }
                self.set(out, y, out_int);
            }
            Op::Transpose { perm } => {
                let x = self.operand(i, 0).expect("a per-row input");
                let perm =
                    crate::model::onnx::infer::permutation("", perm.as_deref(), x.shape.len())
                        .expect("checked at load");
                let in_strides = row_major_strides(&x.shape);
                let src: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
                let mut words = vec![out_shape.len() as u32, count as u32, 0, 0];
                words.extend(padded(&out_shape));
                words.extend(padded(&src));
                words.extend(padded(&row_major_strides(&out_shape)));
                let p = self.params(&words);
                let y = scratch(self.gpu, "transpose", count);
                self.dispatch_at(
                    &pipes.copy,
                    &[(0, &p), (1, &x.buf), (2, &y)],
                    linear_groups(count),
                );
                self.set(out, y, x.int);
            }
            Op::Reduce {
                op: kind,
                axes,
                keep_dims,
                noop_with_empty_axes,
            } => {
                let x = self.operand(i, 0).expect("a per-row input");
                let listed: Vec<i64> = match (axes, node.inputs.get(1).copied().flatten()) {
                    (Some(a), _) => a.clone(),
                    (None, Some(v)) => self
                        .graph()
                        .val(v)
                        .as_const()
                        .map_or_else(Vec::new, Tensor::to_i64_vec),
                    (None, None) => Vec::new(),
                };
                if listed.is_empty() && *noop_with_empty_axes {
                    self.vals[out] = Some(DVal {
                        shape: out_shape,
                        ..x
                    });
                    return Ok(());
                }
                let rank = x.shape.len();
                let mut red: Vec<usize> = listed.iter().map(|&a| axis(a, rank)).collect();
                red.sort_unstable();
                let strides = row_major_strides(&x.shape);
                let kept: Vec<usize> = (0..rank).filter(|d| !red.contains(d)).collect();
                let red_dims: Vec<usize> = red.iter().map(|&d| x.shape[d]).collect();
                let red_count: usize = red_dims.iter().product();
                debug_assert_eq!(
                    reduced_shape(&x.shape, &red, *keep_dims)
                        .iter()
                        .product::<usize>(),
                    count
                );
                let mut words = vec![
                    count as u32,
                    kept.len() as u32,
                    red.len() as u32,
                    red_count as u32,
                    (*kind == ReduceOp::Mean) as u32,
                ];
                words.extend(padded(
                    &kept.iter().map(|&d| x.shape[d]).collect::<Vec<_>>(),
                ));
                words.extend(padded(
                    &kept.iter().map(|&d| strides[d]).collect::<Vec<_>>(),
                ));
                words.extend(padded(&red_dims));
                words.extend(padded(&red.iter().map(|&d| strides[d]).collect::<Vec<_>>()));
                let p = self.params(&words);
                let y = scratch(self.gpu, "reduce", count);
                if x.int {
                    self.dispatch_at(
                        &pipes.reduce_i32,
                        &[(0, &p), (3, &x.buf), (4, &y)],
                        linear_groups(count),
                    );
                } else {
                    self.dispatch_at(
                        &pipes.reduce_f32,
                        &[(0, &p), (1, &x.buf), (2, &y)],
                        linear_groups(count),
                    );
                }
                self.set(out, y, x.int);
            }
            Op::MatMul | Op::Gemm { .. } => self.matmul(i, &out_shape, count),
            Op::ConstantOfShape { value } => {
                let t = crate::model::onnx::kernels::fill(out_shape.clone(), value);
                let (w, int) = words(&t, &node.label).map_err(Error::Onnx)?;
                let y = storage(self.gpu, "fill", &w);
                self.set(out, y, int);
            }
            Op::Shape { .. } | Op::Constant(_) => unreachable!("folded at load"),
            Op::Ml(m) => {
                let x = self.operand(i, 0).expect("a per-row input");
                let before = std::mem::replace(
                    &mut self.encoder,
                    self.gpu.device.create_command_encoder(&Default::default()),
                );
                let (y, int) = g.ml[&i].run(self.gpu, m, before, &x.buf, &x.shape)?;
                self.set(out, y, int);
            }
        }
        Ok(())
    }

    fn matmul(&mut self, i: usize, out_shape: &[usize], count: usize) {
        let g = self.g;
        let node = &g.model.graph().nodes[i];
        let (a, b) = (
            self.operand(i, 0).expect("operand"),
            self.operand(i, 1).expect("operand"),
        );
        let (m, n, k, batch, sa, sb, head, c) = match &node.op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let (m, k) = if *trans_a {
                    (a.shape[1], a.shape[0])
                } else {
                    (a.shape[0], a.shape[1])
                };
                let n = if *trans_b { b.shape[0] } else { b.shape[1] };
                let (ar, ak) = if *trans_a { (1, m) } else { (k, 1) };
                let (bk, bc) = if *trans_b { (1, k) } else { (n, 1) };
                let c = self.operand(i, 2);
                let (cr, cc) = match &c {
                    Some(c) => {
                        let s = broadcast_strides(&c.shape, &[m, n]);
                        (s[0], s[1])
                    }
                    None => (0, 0),
                };
                let head = [
                    ar as u32,
                    ak as u32,
                    bk as u32,
                    bc as u32,
                    alpha.to_bits(),
                    c.is_some() as u32,
                    beta.to_bits(),
                    cr as u32,
                    cc as u32,
                ];
                (m, n, k, Vec::new(), Vec::new(), Vec::new(), head, c)
            }
            _ => {
                let mut sa = a.shape.clone();
                let mut sb = b.shape.clone();
                if sa.len() == 1 {
                    sa.insert(0, 1);
                }
                if sb.len() == 1 {
                    sb.push(1);
                }
                let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
                let batch = broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2])
                    .expect("checked at load");
                // Strides of each operand's matrices, broadcast to `batch`.
                let stride = |s: &[usize]| {
                    let mats: Vec<usize> = s[..s.len() - 2].to_vec();
                    let size = s[s.len() - 2] * s[s.len() - 1];
                    broadcast_strides(&mats, &batch)
                        .into_iter()
                        .map(|x| x * size)
                        .collect::<Vec<_>>()
                };
                let (ba, bb) = (stride(&sa), stride(&sb));
                let head = [k as u32, 1, n as u32, 1, 1.0f32.to_bits(), 0, 0, 0, 0];
                (m, n, k, batch, ba, bb, head, None)
            }
        };
        let pad6 = |v: &[usize]| {
            let mut w: Vec<u32> = v.iter().map(|&x| x as u32).collect();
            w.resize(MAX_BATCH, 0);
            w
        };
        let mut words = vec![
            count as u32,
            batch.len() as u32,
            m as u32,
            n as u32,
            k as u32,
        ];
        words.extend(head);
        words.extend(pad6(&batch));
        words.extend(pad6(&sa));
        words.extend(pad6(&sb));
        let p = self.params(&words);
        let y = scratch(self.gpu, "matmul", count);
        let dummy;
        let c_buf = match &c {
            Some(c) => &*c.buf,
            None => {
                dummy = scratch(self.gpu, "no c", 1);
                &dummy
            }
        };
        debug_assert_eq!(count, out_shape.iter().product::<usize>());
        self.dispatch(
            &g.pipes.matmul,
            &[&p, &a.buf, &b.buf, c_buf, &y],
            linear_groups(count),
        );
        self.set(node.output, y, false);
    }

    /// Submits the block and reads its outputs (and Gather's flags) back.
    fn finish(self) -> Result<Vec<Tensor>> {
        let Block {
            gpu,
            g,
            encoder,
            vals,
            gathers,
            ..
        } = self;
        let graph = g.model.graph();
        let mut encoder = encoder;
        let mut copy_out = |buf: &wgpu::Buffer, bytes: u64| {
            let s = staging(gpu, bytes);
            let n = bytes.max(4).next_multiple_of(4).min(buf.size());
            encoder.copy_buffer_to_buffer(buf, 0, &s, 0, n);
            s
        };
        let flags: Vec<(usize, wgpu::Buffer)> =
            gathers.iter().map(|(i, f)| (*i, copy_out(f, 4))).collect();
        let outputs: Vec<(&DVal, wgpu::Buffer, u64)> = graph
            .outputs
            .iter()
            .map(|o| {
                let v = vals[o.value].as_ref().expect("outputs are computed");
                let bytes = v.shape.iter().product::<usize>() as u64 * 4;
                (v, copy_out(&v.buf, bytes), bytes)
            })
            .collect();
        let done = gpu.queue.submit([encoder.finish()]);
        for (i, flag) in &flags {
            let bytes = read_mapped(gpu, flag, 4, done.clone())?;
            let at = u32::from_le_bytes(bytes[..4].try_into().unwrap());
            if at != u32::MAX {
                return Err(Error::Onnx(format!(
                    "{}: index entry {at} is out of range for the table it indexes",
                    graph.nodes[*i].label
                )));
            }
        }
        let mut outs = Vec::with_capacity(outputs.len());
        for (v, s, bytes) in outputs {
            let bytes = read_mapped(gpu, &s, bytes, done.clone())?;
            let data = if v.int {
                Data::I64(
                    bytes
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                )
            } else {
                Data::F32(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                )
            };
            outs.push(Tensor {
                shape: v.shape.clone(),
                data,
            });
        }
        Ok(outs)
    }
}
