//! The ai.onnx.ml nodes of a graph on the GPU path: tree ensembles on the
//! tree kernel (`shaders/trees.wgsl`), everything after the walk and the
//! linear models and feature transforms on `shaders/ml.wgsl`, so a graph of
//! them stays on the device from its input to its outputs.
//!
//! Two cases finish on the host instead, after reading the tree kernel's
//! output back (the CPU path's own code, so the numbers are the same): a
//! model given in doubles (its leaves add up in f64, which WGSL lacks) and
//! class labels outside the 32-bit integers the kernels write; and a
//! linear classifier with such labels runs on the host altogether. A block
//! whose tree outputs would not fit one binding also finishes on the host
//! (its walk is split into dispatches there).
//!
//! [`GpuMl`] runs one operator on its own (no graph), for tests.

use super::{Block, Out, linear_groups, scratch, storage};
use crate::gpu::kernels::{read_mapped, staging};
use crate::gpu::trees::{GpuTrees, tree_pipeline};
use crate::gpu::{Error, Gpu, Result};
use crate::model::onnx::op::MlNode;
use crate::model::trees::linear::Norm;
use crate::model::trees::{
    Aggregate, ClassLabels, Kind, Labels, MlOp, MlOutput, PostTransform, RunError,
};

/// The entry points of `shaders/ml.wgsl`.
pub(crate) struct MlPipelines {
    linear: wgpu::ComputePipeline,
    scaler: wgpu::ComputePipeline,
    imputer: wgpu::ComputePipeline,
    binarizer: wgpu::ComputePipeline,
    normalizer: wgpu::ComputePipeline,
    tree_finish: wgpu::ComputePipeline,
    /// The tree walk (`shaders/trees.wgsl`), shared by every ensemble.
    trees: wgpu::ComputePipeline,
}

impl MlPipelines {
    pub(crate) fn new(gpu: &Gpu) -> MlPipelines {
        let module = gpu
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("ml"),
                source: wgpu::ShaderSource::Wgsl(include_str!("../../../shaders/ml.wgsl").into()),
            });
        let pipe = |entry: &str| {
            gpu.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        };
        MlPipelines {
            linear: pipe("linear"),
            scaler: pipe("scaler"),
            imputer: pipe("imputer"),
            binarizer: pipe("binarizer"),
            normalizer: pipe("normalizer"),
            tree_finish: pipe("tree_finish"),
            trees: tree_pipeline(gpu),
        }
    }
}

fn transform_code(t: PostTransform) -> u32 {
    match t {
        PostTransform::None => 0,
        PostTransform::Logistic => 1,
        PostTransform::Softmax => 2,
        PostTransform::SoftmaxZero => 3,
        PostTransform::Probit => 4,
    }
}

/// Each class's label code as an i32 word (the integer label, or the
/// index of a string label); `None` when a label does not fit.
fn label_codes(labels: &ClassLabels) -> Option<Vec<u32>> {
    (0..labels.len())
        .map(|k| i32::try_from(labels.code(k)).ok().map(|c| c as u32))
        .collect()
}

fn f32_words(v: impl IntoIterator<Item = f32>) -> Vec<u32> {
    v.into_iter().map(f32::to_bits).collect()
}

/// What a tree ensemble's finish on the device needs besides the walk.
pub(crate) struct TreeFinish {
    params: [u32; 9],
    base: wgpu::Buffer,
    classes: wgpu::Buffer,
}

/// An ai.onnx.ml node ready on one adapter: its constants uploaded.
pub(crate) enum DeviceMl {
    /// A tree ensemble: the walk on the tree kernel, then the finish on the
    /// device (`Some`) or on the host.
    Trees(Box<GpuTrees>, Option<TreeFinish>),
    /// LinearClassifier or LinearRegressor: `m` words but the row count.
    Linear {
        m: [u32; 6],
        coefficients: wgpu::Buffer,
        intercepts: wgpu::Buffer,
        classes: wgpu::Buffer,
        out_width: usize,
    },
    Scaler {
        offset: wgpu::Buffer,
        scale: wgpu::Buffer,
        len: usize,
    },
    Imputer {
        imputed: wgpu::Buffer,
        len: usize,
        replaced: f32,
    },
    Binarizer(f32),
    Normalizer(u32),
    /// ZipMap: the probability tensor passes on.
    ZipMap,
    /// Run on the host between dispatches (labels past 32 bits).
    Host,
}

/// The buffers an encoded node leaves on the device.
pub(crate) struct Encoded {
    pub values: wgpu::Buffer,
    /// Label codes (i32 words), for classifiers.
    pub labels: Option<wgpu::Buffer>,
    /// Binarizer's first NaN index (u32::MAX: none).
    pub nan_flag: Option<wgpu::Buffer>,
}

impl DeviceMl {
    pub(crate) fn new(gpu: &Gpu, pipes: &MlPipelines, op: &MlOp) -> Result<DeviceMl> {
        let up = |label: &str, v: &[f32]| storage(gpu, label, &f32_words(v.iter().copied()));
        Ok(match op {
            MlOp::Trees(t) => {
                let e = &t.ensemble;
                let trees = Box::new(GpuTrees::with_pipeline(gpu, e, Some(pipes.trees.clone()))?);
                let codes = match e.classes() {
                    Some(c) => label_codes(&c.labels),
                    None => Some(vec![0]),
                };
                let finish = codes.filter(|_| !e.double).map(|codes| {
                    let (binary, positive) = e
                        .classes()
                        .map_or((0, 0), |c| (c.binary as u32, c.weights_all_positive as u32));
                    let aggregate = match e.effective_aggregate() {
                        Aggregate::Sum => 0,
                        Aggregate::Average => 1,
                        Aggregate::Min => 2,
                        Aggregate::Max => 3,
                    };
                    TreeFinish {
                        params: [
                            0,
                            e.n_targets as u32,
                            matches!(e.kind, Kind::Classifier(_)) as u32,
                            aggregate,
                            (e.n_trees() as f32).to_bits(),
                            transform_code(e.post_transform),
                            e.base_values.len() as u32,
                            binary,
                            positive,
                        ],
                        base: storage(
                            gpu,
                            "base values",
                            &f32_words(e.base_values.iter().map(|&b| b as f32)),
                        ),
                        classes: storage(gpu, "class labels", &codes),
                    }
                });
                DeviceMl::Trees(trees, finish)
            }
            MlOp::LinearClassifier(c) => {
                let Some(codes) = label_codes(&c.labels) else {
                    return Ok(DeviceMl::Host);
                };
                DeviceMl::Linear {
                    m: [
                        c.width() as u32,
                        c.intercepts.len() as u32,
                        1,
                        transform_code(c.post_transform),
                        1,
                        c.output_width() as u32,
                    ],
                    coefficients: up("coefficients", &c.coefficients),
                    intercepts: up("intercepts", &c.intercepts),
                    classes: storage(gpu, "class labels", &codes),
                    out_width: c.output_width(),
                }
            }
            MlOp::LinearRegressor(r) => DeviceMl::Linear {
                m: [
                    r.width() as u32,
                    r.targets as u32,
                    r.intercepts.is_some() as u32,
                    transform_code(r.post_transform),
                    0,
                    r.targets as u32,
                ],
                coefficients: up("coefficients", &r.coefficients),
                intercepts: up("intercepts", r.intercepts.as_deref().unwrap_or(&[])),
                classes: storage(gpu, "class labels", &[0]),
                out_width: r.targets,
            },
            MlOp::Scaler(s) => DeviceMl::Scaler {
                offset: up("offset", &s.offset),
                scale: up("scale", &s.scale),
                len: s.scale.len(),
            },
            MlOp::Imputer(i) => DeviceMl::Imputer {
                imputed: up("imputed", &i.imputed),
                len: i.imputed.len(),
                replaced: i.replaced,
            },
            MlOp::Binarizer(b) => DeviceMl::Binarizer(b.threshold),
            MlOp::Normalizer(n) => DeviceMl::Normalizer(match n.norm {
                Norm::Max => 0,
                Norm::L1 => 1,
                Norm::L2 => 2,
            }),
            MlOp::ZipMap(_) => DeviceMl::ZipMap,
        })
    }

    /// Encodes the node on `x` (`rows` x `width` f32 on the device) into
    /// `encoder`. `None`: it finishes on the host ([`DeviceMl::run_on_host`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode(
        &self,
        gpu: &Gpu,
        pipes: &MlPipelines,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        rows: usize,
        width: usize,
    ) -> Result<Option<Encoded>> {
        let count = rows * width;
        match self {
            DeviceMl::Trees(trees, Some(f)) => {
                return tree_finish(gpu, pipes, encoder, trees, f, x, rows, width);
            }
            DeviceMl::Trees(_, None) | DeviceMl::Host => return Ok(None),
            DeviceMl::ZipMap => {
                // The graph path passes the buffer itself on; alone, a copy.
                let y = scratch(gpu, "probabilities", count);
                encoder.copy_buffer_to_buffer(x, 0, &y, 0, (count as u64 * 4).max(4));
                return Ok(Some(Encoded {
                    values: y,
                    labels: None,
                    nan_flag: None,
                }));
            }
            _ => {}
        }
        self.encode_kernel(gpu, pipes, encoder, x, rows, width)
            .map(Some)
    }

    /// The linear models and feature transforms, on `shaders/ml.wgsl`.
    #[allow(clippy::too_many_arguments)]
    fn encode_kernel(
        &self,
        gpu: &Gpu,
        pipes: &MlPipelines,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        rows: usize,
        width: usize,
    ) -> Result<Encoded> {
        let count = rows * width;
        let params = |words: &[u32]| storage(gpu, "ml params", words);
        let plain = |values| Encoded {
            values,
            labels: None,
            nan_flag: None,
        };
        let mut d = |pipe, buffers: &[(u32, &wgpu::Buffer)], groups| {
            dispatch(gpu, encoder, pipe, buffers, groups)
        };
        Ok(match self {
            DeviceMl::Trees(..) | DeviceMl::Host | DeviceMl::ZipMap => {
                unreachable!("encoded by DeviceMl::encode")
            }
            DeviceMl::Linear {
                m,
                coefficients,
                intercepts,
                classes,
                out_width,
            } => {
                if m[0] as usize != width {
                    return Err(run_error(RunError::Width {
                        feature: (m[0] as usize).max(1) - 1,
                        width,
                    }));
                }
                let p = params(&[&[rows as u32], &m[..]].concat());
                let y = scratch(gpu, "linear scores", rows * out_width);
                let labels = scratch(gpu, "labels", rows);
                let b = [
                    (0, &p),
                    (1, x),
                    (2, &y),
                    (3, coefficients),
                    (4, intercepts),
                    (5, &labels),
                    (6, classes),
                ];
                d(&pipes.linear, &b, linear_groups(rows));
                Encoded {
                    values: y,
                    labels: Some(labels),
                    nan_flag: None,
                }
            }
            DeviceMl::Scaler { offset, scale, len } => {
                let per_feature = *len == width;
                if !per_feature && *len != 1 {
                    return Err(run_error(RunError::Width {
                        feature: len - 1,
                        width,
                    }));
                }
                let p = params(&[count as u32, width as u32, per_feature as u32]);
                let y = scratch(gpu, "scaled", count);
                let b = [(0, &p), (1, x), (2, &y), (3, offset), (4, scale)];
                d(&pipes.scaler, &b, linear_groups(count));
                plain(y)
            }
            DeviceMl::Imputer {
                imputed,
                len,
                replaced,
            } => {
                let per_feature = *len == width;
                let p = params(&[
                    count as u32,
                    width as u32,
                    per_feature as u32,
                    replaced.to_bits(),
                ]);
                let y = scratch(gpu, "imputed", count);
                d(
                    &pipes.imputer,
                    &[(0, &p), (1, x), (2, &y), (3, imputed)],
                    linear_groups(count),
                );
                plain(y)
            }
            DeviceMl::Binarizer(t) => {
                let p = params(&[count as u32, t.to_bits()]);
                let y = scratch(gpu, "binarized", count);
                let flag = storage(gpu, "nan flag", &[u32::MAX]);
                d(
                    &pipes.binarizer,
                    &[(0, &p), (1, x), (2, &y), (7, &flag)],
                    linear_groups(count),
                );
                Encoded {
                    values: y,
                    labels: None,
                    nan_flag: Some(flag),
                }
            }
            DeviceMl::Normalizer(norm) => {
                let p = params(&[rows as u32, width as u32, *norm]);
                let y = scratch(gpu, "normalized", count);
                d(
                    &pipes.normalizer,
                    &[(0, &p), (1, x), (2, &y)],
                    linear_groups(rows),
                );
                plain(y)
            }
        })
    }

    /// The node on the host, after the work in `encoder` (submitted here):
    /// the walk on the device for a tree ensemble, the rest on the CPU.
    pub(crate) fn run_on_host(
        &self,
        gpu: &Gpu,
        op: &MlOp,
        encoder: wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        rows: usize,
        width: usize,
    ) -> Result<MlOutput> {
        if let (DeviceMl::Trees(g, _), MlOp::Trees(t)) = (self, op) {
            return Ok(t.output(g.score_buffer(gpu, encoder, x, rows, width)?));
        }
        let bytes = (rows * width * 4) as u64;
        let s = staging(gpu, bytes);
        let mut encoder = encoder;
        encoder.copy_buffer_to_buffer(x, 0, &s, 0, bytes.max(4).min(x.size()));
        let done = gpu.queue.submit([encoder.finish()]);
        let values: Vec<f32> = read_mapped(gpu, &s, bytes, done)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        op.run(&values, rows, width).map_err(run_error)
    }
}

fn run_error(e: RunError) -> Error {
    Error::Onnx(e.to_string())
}

fn dispatch(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    pipe: &wgpu::ComputePipeline,
    buffers: &[(u32, &wgpu::Buffer)],
    groups: (u32, u32),
) {
    super::block::dispatch_pass(gpu, encoder, pipe, &super::block::bound_at(buffers), groups);
}

/// The walk into a sums buffer, then the finish; `None` when the sums of
/// `rows` rows would not fit one binding (the host path splits the walk).
#[allow(clippy::too_many_arguments)]
fn tree_finish(
    gpu: &Gpu,
    pipes: &MlPipelines,
    encoder: &mut wgpu::CommandEncoder,
    trees: &GpuTrees,
    f: &TreeFinish,
    x: &wgpu::Buffer,
    rows: usize,
    width: usize,
) -> Result<Option<Encoded>> {
    let n = trees.ensemble().n_targets;
    let Some(sums) = trees.encode_sums(gpu, encoder, x, rows, width)? else {
        return Ok(None);
    };
    let mut m = f.params;
    m[0] = rows as u32;
    let p = storage(gpu, "tree finish params", &m);
    let y = scratch(gpu, "tree scores", rows * n);
    let labels = scratch(gpu, "labels", rows);
    dispatch(
        gpu,
        encoder,
        &pipes.tree_finish,
        &[
            (0, &p),
            (2, &y),
            (3, &f.base),
            (5, &labels),
            (6, &f.classes),
            (8, &sums),
        ],
        linear_groups(rows),
    );
    Ok(Some(Encoded {
        values: y,
        labels: Some(labels),
        nan_flag: None,
    }))
}

impl Block<'_> {
    /// Node `i`, an ai.onnx.ml operator: on the device when it can be,
    /// else after reading its input back.
    pub(super) fn ml(&mut self, i: usize, m: &MlNode, out: Out) -> Result<()> {
        let g = self.g;
        let gpu = self.gpu;
        let dev = &g.ml[&i];
        if matches!(dev, DeviceMl::ZipMap) {
            self.pass_on(i, out);
            return Ok(());
        }
        let x = self.operand(i, 0).expect("a per-row input");
        let rows = x.shape[0];
        let width = x.shape.get(1).copied().unwrap_or(1);
        let label = &self.graph().nodes[i].label;
        let on_device = dev
            .encode(gpu, &g.pipes.ml, &mut self.encoder, &x.buf, rows, width)
            .map_err(|e| Error::Onnx(format!("{label}: {e}")))?;
        if let Some(enc) = on_device {
            if let Some(f) = enc.nan_flag {
                self.nans.push((i, f, width));
            }
            match (m.is_labels(), enc.labels) {
                (true, Some(l)) => self.set(out.id, l, true),
                _ => self.set(out.id, enc.values, false),
            }
            return Ok(());
        }
        let before = std::mem::replace(
            &mut self.encoder,
            gpu.device.create_command_encoder(&Default::default()),
        );
        let result = dev
            .run_on_host(gpu, &m.op, before, &x.buf, rows, width)
            .map_err(|e| Error::Onnx(format!("{label}: {e}")))?;
        if m.is_labels() {
            let w = labels_words(m, &result)?;
            self.set(out.id, storage(gpu, "labels", &w), true);
            return Ok(());
        }
        let w = f32_words(result.values);
        self.set(out.id, storage(gpu, m.name, &w), false);
        Ok(())
    }
}

/// Binarizer's NaN flag as the CPU path's error, `first_row` the block's
/// first row: `None` when no value was NaN.
pub(crate) fn nan_error(flag: u32, width: usize, first_row: usize) -> Option<RunError> {
    (flag != u32::MAX).then(|| RunError::NaN {
        op: "Binarizer",
        row: first_row + flag as usize / width.max(1),
        feature: flag as usize % width.max(1),
    })
}

/// Integer labels as the i32 words integer tensors are on the device.
pub(crate) fn labels_words(m: &MlNode, out: &MlOutput) -> Result<Vec<u32>> {
    let Some(Labels::Int(codes)) = &out.labels else {
        return Err(Error::Onnx(format!(
            "{}: its labels are not integers (refused at load)",
            m.name
        )));
    };
    codes
        .iter()
        .map(|&c| {
            i32::try_from(c).map(|v| v as u32).map_err(|_| {
                Error::Onnx(format!(
                    "{}: label {c} is outside the 32-bit integers the WGSL kernels compute with",
                    m.name
                ))
            })
        })
        .collect()
}

/// One ai.onnx.ml operator on the device on its own, without a graph:
/// what the graph path runs for it, for tests against the CPU path.
pub struct GpuMl {
    pipes: MlPipelines,
}

impl std::fmt::Debug for GpuMl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMl").finish_non_exhaustive()
    }
}

impl GpuMl {
    /// Compiles the kernels.
    pub fn new(gpu: &Gpu) -> GpuMl {
        GpuMl {
            pipes: MlPipelines::new(gpu),
        }
    }

    /// Scores `rows` rows of `width` features with `op`: its values and
    /// labels, and whether it ran on the device from input to output.
    pub fn run(
        &self,
        gpu: &Gpu,
        op: &MlOp,
        x: &[f32],
        rows: usize,
        width: usize,
    ) -> Result<(MlOutput, bool)> {
        let dev = DeviceMl::new(gpu, &self.pipes, op)?;
        let xb = storage(gpu, "rows", &f32_words(x.iter().copied()));
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        let Some(enc) = dev.encode(gpu, &self.pipes, &mut encoder, &xb, rows, width)? else {
            let out = dev.run_on_host(gpu, op, encoder, &xb, rows, width)?;
            return Ok((out, false));
        };
        let out_width = op.output_width(width);
        let read = |encoder: &mut wgpu::CommandEncoder, b: &wgpu::Buffer, words: usize| {
            let s = staging(gpu, words as u64 * 4);
            encoder.copy_buffer_to_buffer(b, 0, &s, 0, (words as u64 * 4).max(4));
            (s, words as u64 * 4)
        };
        let values = read(&mut encoder, &enc.values, rows * out_width);
        let labels = enc.labels.as_ref().map(|b| read(&mut encoder, b, rows));
        let flag = enc.nan_flag.as_ref().map(|b| read(&mut encoder, b, 1));
        let done = gpu.queue.submit([encoder.finish()]);
        let words = |(s, bytes): (wgpu::Buffer, u64)| -> Result<Vec<u32>> {
            Ok(read_mapped(gpu, &s, bytes, done.clone())?
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())
        };
        if let Some(f) = flag {
            if let Some(e) = nan_error(words(f)?[0], width, 0) {
                return Err(run_error(e));
            }
        }
        let values = words(values)?.into_iter().map(f32::from_bits).collect();
        let codes: Option<Vec<i64>> = match labels.filter(|_| op.has_labels()) {
            Some(l) => Some(words(l)?.into_iter().map(|w| w as i32 as i64).collect()),
            None => None,
        };
        let classes = match op {
            MlOp::Trees(t) => t.ensemble.classes().map(|c| &c.labels),
            MlOp::LinearClassifier(c) => Some(&c.labels),
            _ => None,
        };
        let labels = codes.map(|codes| match classes {
            Some(ClassLabels::Str(names)) => Labels::Str(
                codes
                    .iter()
                    .map(|&c| names.get(c as usize).cloned().unwrap_or_default())
                    .collect(),
            ),
            _ => Labels::Int(codes),
        });
        Ok((
            MlOutput {
                width: out_width,
                values,
                labels,
            },
            true,
        ))
    }
}
