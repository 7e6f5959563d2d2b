//! herd's plan of a graph for the fast CPU path: dense chains fused into one
//! step each, the remaining per-row nodes one step each, and when each
//! intermediate value can be dropped.
//!
//! A dense chain is MatMul (or Gemm) with a constant weight, then any of: a
//! constant bias Add, a BatchNormalization (both folded into the weights),
//! then element-wise activations (Relu, LeakyRelu, Sigmoid, Tanh, Gelu,
//! the `x * 0.5 * (1 + erf(x / sqrt 2))` pattern PyTorch writes for GELU,
//! Clip, ...), LayerNormalization over the last dimension, and Softmax or
//! LogSoftmax over it. The chain runs as one sgemm (the kernel of the
//! built-in mlp) with the rest applied to its output while it is in cache.
//! Fusing only ever swallows values nothing else reads.

use std::collections::HashMap;

use super::graph::{Graph, Node, ValueId};
use super::infer::{Outcome, Val};
use super::op::{BinaryOp, Op, UnaryOp};
use super::tensor::Tensor;
use crate::model::Dense;

/// What follows the matrix product of a dense step, applied per output row.
#[derive(Clone, Debug, PartialEq)]
pub enum Epilogue {
    Unary(UnaryOp),
    Clip {
        lo: f32,
        hi: f32,
    },
    LayerNorm {
        scale: Vec<f32>,
        bias: Option<Vec<f32>>,
        epsilon: f32,
    },
    Softmax {
        log: bool,
    },
}

impl Epilogue {
    pub fn describe(&self) -> String {
        match self {
            Epilogue::Unary(UnaryOp::Gelu) => "gelu".into(),
            Epilogue::Unary(UnaryOp::GeluTanh) => "gelu(tanh)".into(),
            Epilogue::Unary(UnaryOp::LeakyRelu(a)) => format!("leaky_relu({a})"),
            Epilogue::Unary(u) => format!("{u:?}").to_lowercase(),
            Epilogue::Clip { lo, hi } => format!("clip({lo}, {hi})"),
            Epilogue::LayerNorm { .. } => "layer_norm".into(),
            Epilogue::Softmax { log: false } => "softmax".into(),
            Epilogue::Softmax { log: true } => "log_softmax".into(),
        }
    }
}

/// One fused dense chain: `input` `[N, ..., in]` -> `output` `[N, ..., out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseStep {
    pub input: ValueId,
    pub layer: Dense,
    pub epilogue: Vec<Epilogue>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    Dense(DenseStep),
    /// `graph.nodes[i]`, run as it is.
    Node(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kernel: Kernel,
    pub output: ValueId,
    /// The graph nodes this step computes (positions in `graph.nodes`).
    pub nodes: Vec<usize>,
    /// Per-row values no later step reads, dropped after this one.
    pub frees: Vec<ValueId>,
}

/// The fast path's steps, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// Values that match a scalar within `rel` (relative).
fn scalar_near(v: &Val, want: f32, rel: f32) -> bool {
    match v {
        Val::Const(t) if t.len() == 1 => t
            .as_f32()
            .is_some_and(|x| (x[0] - want).abs() <= rel * want.abs()),
        _ => false,
    }
}

struct Fuser<'a> {
    graph: &'a Graph,
    /// Per-row nodes reading each value.
    readers: HashMap<ValueId, Vec<usize>>,
    /// Values that must stay whole (graph outputs herd computes).
    pinned: Vec<ValueId>,
    taken: Vec<bool>,
}

impl<'a> Fuser<'a> {
    /// The single per-row node reading `v`, when exactly one does and `v`
    /// is not an output.
    fn only_reader(&self, v: ValueId) -> Option<usize> {
        if self.pinned.contains(&v) {
            return None;
        }
        match self.readers.get(&v).map(Vec::as_slice) {
            Some([one]) if !self.taken[*one] => Some(*one),
            _ => None,
        }
    }

    fn node(&self, i: usize) -> &'a Node {
        &self.graph.nodes[i]
    }

    /// The other input of binary node `i` besides `v`, when it is a constant.
    fn other_const(&self, i: usize, v: ValueId) -> Option<&'a Tensor> {
        let n = self.node(i);
        let (a, b) = (
            n.inputs.first().copied().flatten(),
            n.inputs.get(1).copied().flatten(),
        );
        let other = if a == Some(v) {
            b
        } else if b == Some(v) {
            a
        } else {
            None
        }?;
        self.graph.val(other).as_const()
    }

    fn is_binary(&self, i: usize, op: BinaryOp) -> bool {
        self.node(i).op == Op::Binary(op)
    }

    /// A dense head at node `i`: its input and the layer in torch layout.
    fn dense_head(&self, i: usize) -> Option<(ValueId, Dense)> {
        let n = self.node(i);
        let x = n.inputs.first().copied().flatten()?;
        let w = n.inputs.get(1).copied().flatten()?;
        let Val::Rows { dims, .. } = self.graph.val(x) else {
            return None;
        };
        let weight = self.graph.val(w).as_const()?;
        if weight.shape.len() != 2 || dims.is_empty() {
            return None;
        }
        let values = weight.as_f32()?;
        let (alpha, beta, trans_b, bias_input) = match &n.op {
            Op::MatMul => (1.0, 0.0, false, None),
            Op::Gemm {
                alpha,
                beta,
                trans_a: false,
                trans_b,
            } if dims.len() == 1 => (*alpha, *beta, *trans_b, n.inputs.get(2).copied().flatten()),
            _ => return None,
        };
        let (in_dim, out_dim) = if trans_b {
            (weight.shape[1], weight.shape[0])
        } else {
            (weight.shape[0], weight.shape[1])
        };
        if in_dim == 0 || out_dim == 0 {
            return None;
        }
        // torch.nn.Linear's layout, [out, in], as the fast kernels want it.
        let mut w_out_in = vec![0.0f32; in_dim * out_dim];
        for o in 0..out_dim {
            for k in 0..in_dim {
                let v = if trans_b {
                    values[o * in_dim + k]
                } else {
                    values[k * out_dim + o]
                };
                w_out_in[o * in_dim + k] = alpha * v;
            }
        }
        let mut bias = vec![0.0f32; out_dim];
        if let Some(c) = bias_input {
            let c = self.graph.val(c).as_const()?;
            let row = row_vector(c, out_dim)?;
            for (b, v) in bias.iter_mut().zip(row) {
                *b = beta * v;
            }
        }
        Some((
            x,
            Dense {
                name: n.label.clone(),
                in_dim,
                out_dim,
                weight: w_out_in,
                bias,
                packed: Default::default(),
            },
        ))
    }

    /// Extends a dense step whose output is `cur` as far as it goes;
    /// returns the new output and the nodes swallowed.
    fn extend(
        &mut self,
        step: &mut DenseStep,
        mut cur: ValueId,
        nodes: &mut Vec<usize>,
    ) -> ValueId {
        let m = step.layer.out_dim;
        loop {
            if let Some((out, used)) = self.erf_gelu(cur) {
                step.epilogue.push(Epilogue::Unary(UnaryOp::Gelu));
                for &u in &used {
                    self.taken[u] = true;
                }
                nodes.extend(used);
                cur = out;
                continue;
            }
            let Some(i) = self.only_reader(cur) else {
                return cur;
            };
            let n = self.node(i);
            let rank = match self.graph.val(n.output) {
                Val::Rows { dims, .. } => dims.len(),
                _ => return cur,
            };
            let fused = match &n.op {
                Op::Binary(BinaryOp::Add) if step.epilogue.is_empty() => self
                    .other_const(i, cur)
                    .filter(|c| c.shape.len() <= rank + 1)
                    .and_then(|c| row_vector(c, m))
                    .map(|row| {
                        for (b, v) in step.layer.bias.iter_mut().zip(row) {
                            *b += v;
                        }
                    })
                    .is_some(),
                Op::BatchNorm { epsilon } if step.epilogue.is_empty() && rank == 1 => {
                    let p = |k: usize| {
                        n.inputs[k]
                            .and_then(|v| self.graph.val(v).as_const())
                            .and_then(|t| t.as_f32())
                    };
                    match (p(1), p(2), p(3), p(4)) {
                        (Some(s), Some(b), Some(mean), Some(var)) => {
                            let layer = &mut step.layer;
                            for o in 0..m {
                                let k = s[o] / (var[o] + epsilon).sqrt();
                                for w in &mut layer.weight[o * layer.in_dim..(o + 1) * layer.in_dim]
                                {
                                    *w *= k;
                                }
                                layer.bias[o] = (layer.bias[o] - mean[o]) * k + b[o];
                            }
                            true
                        }
                        _ => false,
                    }
                }
                Op::Unary(u) => {
                    step.epilogue.push(Epilogue::Unary(*u));
                    true
                }
                Op::Clip => {
                    let bound = |k: usize, default: f32| -> Option<f32> {
                        match n.inputs.get(k).copied().flatten() {
                            None => Some(default),
                            Some(v) => self.graph.val(v).as_const()?.as_f32().map(|x| x[0]),
                        }
                    };
                    match (bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)) {
                        (Some(lo), Some(hi)) => {
                            step.epilogue.push(Epilogue::Clip { lo, hi });
                            true
                        }
                        _ => false,
                    }
                }
                Op::LayerNorm { axis, epsilon } if *axis == -1 || *axis == rank as i64 => {
                    let p = |k: usize| {
                        n.inputs
                            .get(k)
                            .copied()
                            .flatten()
                            .and_then(|v| self.graph.val(v).as_const())
                    };
                    let scale = p(1).and_then(|t| row_vector(t, m));
                    let bias = match p(2) {
                        Some(t) => row_vector(t, m).map(Some),
                        None if n.inputs.get(2).copied().flatten().is_none() => Some(None),
                        None => None,
                    };
                    match (scale, bias) {
                        (Some(scale), Some(bias)) => {
                            step.epilogue.push(Epilogue::LayerNorm {
                                scale,
                                bias,
                                epsilon: *epsilon,
                            });
                            true
                        }
                        _ => false,
                    }
                }
                Op::Softmax { axis, log } if *axis == -1 || *axis == rank as i64 => {
                    step.epilogue.push(Epilogue::Softmax { log: *log });
                    true
                }
                _ => false,
            };
            if !fused {
                return cur;
            }
            self.taken[i] = true;
            nodes.push(i);
            cur = n.output;
        }
    }

    /// GELU written out as PyTorch exports it: `d = x / sqrt(2)` (or `x *
    /// (1 / sqrt 2)`), `e = erf(d)`, `p = e + 1`, then `x * p * 0.5` in any
    /// grouping. Returns the result and the nodes it spans.
    fn erf_gelu(&self, x: ValueId) -> Option<(ValueId, Vec<usize>)> {
        if self.pinned.contains(&x) {
            return None;
        }
        let readers = self.readers.get(&x)?;
        if readers.len() != 2 || readers.iter().any(|&r| self.taken[r]) {
            return None;
        }
        let c = |i: usize, v: ValueId| self.other_const(i, v).map(|t| Val::Const(t.clone()));
        let div = *readers.iter().find(|&&r| {
            (self.is_binary(r, BinaryOp::Div)
                && self.node(r).inputs[0] == Some(x)
                && c(r, x).is_some_and(|k| scalar_near(&k, std::f32::consts::SQRT_2, 1e-6)))
                || (self.is_binary(r, BinaryOp::Mul)
                    && c(r, x)
                        .is_some_and(|k| scalar_near(&k, std::f32::consts::FRAC_1_SQRT_2, 1e-6)))
        })?;
        let other = *readers.iter().find(|&&r| r != div)?;
        let erf = self.only_reader(self.node(div).output)?;
        if self.node(erf).op != Op::Unary(UnaryOp::Erf) {
            return None;
        }
        let add = self.only_reader(self.node(erf).output)?;
        let e = self.node(erf).output;
        if !(self.is_binary(add, BinaryOp::Add)
            && c(add, e).is_some_and(|k| scalar_near(&k, 1.0, 0.0)))
        {
            return None;
        }
        let p = self.node(add).output;
        let half = |i: usize, v: ValueId| {
            self.is_binary(i, BinaryOp::Mul) && c(i, v).is_some_and(|k| scalar_near(&k, 0.5, 0.0))
        };
        let mul_of = |i: usize, a: ValueId, b: ValueId| {
            let n = self.node(i);
            self.is_binary(i, BinaryOp::Mul)
                && (n.inputs[..2] == [Some(a), Some(b)] || n.inputs[..2] == [Some(b), Some(a)])
        };
        let o = self.node(other).output;
        // x * p, then * 0.5
        if mul_of(other, x, p) && self.only_reader(p) == Some(other) {
            let last = self.only_reader(o)?;
            if half(last, o) {
                return Some((self.node(last).output, vec![div, erf, add, other, last]));
            }
            return None;
        }
        // (x * 0.5) * p
        if half(other, x) {
            let last = self.only_reader(o)?;
            if mul_of(last, o, p) && self.only_reader(p) == Some(last) {
                return Some((self.node(last).output, vec![div, erf, add, other, last]));
            }
            return None;
        }
        // x * (p * 0.5)
        let inner = self.only_reader(p)?;
        let q = self.node(inner).output;
        if half(inner, p) && mul_of(other, x, q) && self.only_reader(q) == Some(other) {
            return Some((o, vec![div, erf, add, inner, other]));
        }
        None
    }
}

/// `t` as `len` values along the last dimension (a scalar, `[len]`,
/// `[1, len]`, ... broadcast), or `None` when it is not one.
fn row_vector(t: &Tensor, len: usize) -> Option<Vec<f32>> {
    let values = t.as_f32()?;
    let leading_ones = t.shape.iter().rev().skip(1).all(|&d| d == 1);
    match t.shape.last() {
        _ if values.len() == 1 => Some(vec![values[0]; len]),
        Some(&n) if n == len && leading_ones => Some(values.to_vec()),
        _ => None,
    }
}

/// Plans `graph`'s per-row nodes.
pub fn plan(graph: &Graph) -> Plan {
    let mut readers: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        if n.outcome == Outcome::PerRow {
            for v in n.inputs.iter().flatten() {
                let list = readers.entry(*v).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
    }
    let mut f = Fuser {
        graph,
        readers,
        pinned: graph.outputs.iter().map(|o| o.value).collect(),
        taken: vec![false; graph.nodes.len()],
    };
    let mut steps = Vec::new();
    for i in 0..graph.nodes.len() {
        if f.taken[i] || graph.nodes[i].outcome != Outcome::PerRow {
            continue;
        }
        f.taken[i] = true;
        if let Some((input, layer)) = f.dense_head(i) {
            let mut step = DenseStep {
                input,
                layer,
                epilogue: Vec::new(),
            };
            let mut nodes = vec![i];
            let output = f.extend(&mut step, graph.nodes[i].output, &mut nodes);
            steps.push(Step {
                kernel: Kernel::Dense(step),
                output,
                nodes,
                frees: Vec::new(),
            });
        } else {
            steps.push(Step {
                kernel: Kernel::Node(i),
                output: graph.nodes[i].output,
                nodes: vec![i],
                frees: Vec::new(),
            });
        }
    }
    // Liveness: a per-row value is dropped after the last step reading it.
    let mut last_read: HashMap<ValueId, usize> = HashMap::new();
    for (s, step) in steps.iter().enumerate() {
        for v in step_inputs(graph, step) {
            last_read.insert(v, s);
        }
    }
    let pinned: Vec<ValueId> = graph.outputs.iter().map(|o| o.value).collect();
    for (v, s) in last_read {
        if graph.val(v).is_rows() && !pinned.contains(&v) {
            steps[s].frees.push(v);
        }
    }
    for step in &mut steps {
        step.frees.sort_unstable();
    }
    Plan { steps }
}

/// The per-row values `step` reads.
pub fn step_inputs(graph: &Graph, step: &Step) -> Vec<ValueId> {
    match &step.kernel {
        Kernel::Dense(d) => vec![d.input],
        Kernel::Node(i) => graph.nodes[*i]
            .inputs
            .iter()
            .flatten()
            .copied()
            .filter(|v| graph.val(*v).is_rows())
            .collect(),
    }
}

/// Multiply-adds per row: a matrix product's output values times its inner
/// dimension, an ai.onnx.ml node's own cost (a tree ensemble's node visits
/// on each tree's deepest path), plus one per value every other per-row
/// node produces (so a graph without products still costs something to
/// plan with).
pub fn cost_per_row(graph: &Graph) -> u64 {
    let mut cost = 0u64;
    for n in &graph.nodes {
        if n.outcome != Outcome::PerRow {
            continue;
        }
        let Val::Rows { dims, .. } = graph.val(n.output) else {
            continue;
        };
        if let Op::Ml(m) = &n.op {
            // Tree ensembles: the node visits of each tree's deepest path;
            // linear models: their multiply-adds.
            let width = n.inputs[0].map_or(1, |v| dim_size(graph.val(v).dims().last()));
            cost = cost.saturating_add(m.op.cost_per_row(width as usize));
            continue;
        }
        let out: u64 = dims.iter().map(|&d| d as u64).product();
        let inner = match &n.op {
            Op::MatMul | Op::Gemm { .. } => {
                let a = n.inputs[0].map(|v| graph.val(v).dims());
                match (&n.op, a) {
                    (Op::Gemm { trans_a: true, .. }, Some(d)) => dim_size(d.first()),
                    (_, Some(d)) => dim_size(d.last()),
                    _ => 1,
                }
            }
            _ => 1,
        };
        cost = cost.saturating_add(out.saturating_mul(inner));
    }
    cost.max(1)
}

fn dim_size(d: Option<&super::infer::Dim>) -> u64 {
    match d {
        Some(super::infer::Dim::Fixed(k)) => *k as u64,
        _ => 1,
    }
}
