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

mod block;
mod elementwise;
mod layout;
mod matmul;
mod ml;
mod normalize;
mod reduce;

pub use ml::GpuMl;

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
    ml: ml::MlPipelines,
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
            ml: ml::MlPipelines::new(gpu),
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
    /// ai.onnx.ml nodes (`ml`).
    ml: HashMap<usize, ml::DeviceMl>,
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

/// The output of the node being encoded: its value, its shape in this
/// block, how many values that is, and whether they are integers.
struct Out {
    id: ValueId,
    shape: Vec<usize>,
    count: usize,
    int: bool,
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
    /// Binarizer nodes' NaN flags and their input widths, likewise.
    nans: Vec<(usize, wgpu::Buffer, usize)>,
    /// The block's first row in the batch, for messages.
    first_row: usize,
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
        let pipes = Pipelines::new(gpu);
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
                        ml.insert(*i, ml::DeviceMl::new(gpu, &pipes.ml, &m.op)?);
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
            pipes,
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
            nans: Vec::new(),
            first_row: range.start,
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

/// Why the kernels cannot run plan step `kernel` of `graph`, if they cannot:
/// what [`GpuOnnx::new`] refuses, found without a device (for `herd model
/// inspect`).
pub fn refusal(graph: &Graph, kernel: &Kernel) -> Option<String> {
    let Kernel::Node(i) = kernel else {
        return None;
    };
    if let Err(e) = check_node(graph, *i) {
        return Some(e.to_string());
    }
    let node = &graph.nodes[*i];
    for (slot, v) in node.inputs.iter().enumerate() {
        let Some(v) = v else { continue };
        let Val::Const(t) = graph.val(*v) else {
            continue;
        };
        // Pow's exponent goes up as float, whatever its type.
        if !reads_constant(&node.op, slot) || matches!(node.op, Op::Binary(BinaryOp::Pow)) {
            continue;
        }
        if let Err(e) = words(t, &format!("constant '{}'", graph.values[*v].name)) {
            return Some(unsupported(&node.label, &e).to_string());
        }
    }
    None
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

impl Block<'_> {
    /// Encodes node `i` (a step of its own), by operator family.
    fn node(&mut self, i: usize, frees: &[ValueId]) -> Result<()> {
        let g = self.g;
        let node = &g.model.graph().nodes[i];
        let id = node.output;
        let shape = self.shape_of(id);
        let out = Out {
            id,
            count: shape.iter().product(),
            int: self.graph().val(id).dtype() != DType::F32,
            shape,
        };
        match &node.op {
            Op::Identity
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze => self.pass_on(i, out),
            Op::Cast { to } => self.cast(i, out, *to),
            Op::Binary(op) => self.binary(i, out, *op),
            Op::Unary(u) => self.unary(i, frees, out, *u),
            Op::Clip => self.clip(i, frees, out),
            Op::Softmax { axis: a, log } => self.softmax(i, frees, out, *a, *log),
            Op::LayerNorm { axis: a, epsilon } => self.layer_norm(i, frees, out, *a, *epsilon),
            Op::BatchNorm { .. } => self.batch_norm(i, frees, out),
            Op::ArgMax {
                axis: a,
                select_last_index,
                ..
            } => self.arg_max(i, out, *a, *select_last_index),
            Op::Gather { axis: a } => self.gather(i, out, *a),
            Op::Concat { axis: a } => self.concat(i, out, *a),
            Op::Transpose { perm } => self.transpose(i, out, perm.as_deref()),
            Op::Reduce {
                op: kind,
                axes,
                keep_dims,
                noop_with_empty_axes,
            } => self.reduce(
                i,
                out,
                *kind,
                axes.as_deref(),
                *keep_dims,
                *noop_with_empty_axes,
            ),
            Op::MatMul | Op::Gemm { .. } => self.matmul(i, &out.shape, out.count),
            Op::ConstantOfShape { value } => self.fill(i, out, value)?,
            Op::Shape { .. } | Op::Constant(_) => unreachable!("folded at load"),
            Op::Ml(m) => self.ml(i, m, out)?,
        }
        Ok(())
    }
}
