//! Running a graph on rows: the reference path (every node on the whole
//! batch, plain loops) and the fast path (the plan's steps over blocks of
//! rows, dense chains through the built-in mlp's kernels).

use std::collections::HashMap;

use super::error::RunError;
use super::eval::eval;
use super::graph::{Graph, ValueId};
use super::infer::{Outcome, Val};
use super::kernels;
use super::op::{Op, UnaryOp};
use super::plan::{Epilogue, Kernel, Plan};
use super::proto::data_type;
use super::tensor::{DType, Data, Tensor};
use crate::model::layers::dense_block;

/// Rows per block on the fast path (as the built-in mlp's blocks).
pub const BLOCK_ROWS: usize = 1024;
/// Values any one per-row value of a block may hold: graphs with wide rows
/// run in smaller blocks.
pub const BLOCK_VALUES: usize = 1 << 22;

/// One graph input's values for a run of rows, row-major.
#[derive(Clone, Copy, Debug)]
pub enum Feed<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

impl<'a> Feed<'a> {
    pub fn len(&self) -> usize {
        match self {
            Feed::F32(v) => v.len(),
            Feed::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            Feed::F32(_) => DType::F32,
            Feed::I64(_) => DType::I64,
        }
    }

    fn slice(&self, range: std::ops::Range<usize>) -> Feed<'a> {
        match *self {
            Feed::F32(v) => Feed::F32(&v[range]),
            Feed::I64(v) => Feed::I64(&v[range]),
        }
    }

    fn to_tensor(self, shape: Vec<usize>) -> Tensor {
        match self {
            Feed::F32(v) => Tensor::f32(shape, v.to_vec()),
            Feed::I64(v) => Tensor::i64(shape, v.to_vec()),
        }
    }
}

fn rows_shape(graph: &Graph, v: ValueId, rows: usize) -> Vec<usize> {
    match graph.val(v) {
        Val::Rows { dims, .. } => std::iter::once(rows).chain(dims.iter().copied()).collect(),
        _ => unreachable!("only per-row values are computed"),
    }
}

/// The values of one batch (or block) of rows.
struct Values<'a, 'g> {
    graph: &'g Graph,
    feeds: HashMap<ValueId, Feed<'a>>,
    slots: Vec<Option<Tensor>>,
    rows: usize,
    /// ai.onnx.ml nodes on their reference path (trees one row and one
    /// tree at a time).
    reference: bool,
}

impl<'a, 'g> Values<'a, 'g> {
    fn new(graph: &'g Graph, feeds: &[Feed<'a>], range: std::ops::Range<usize>) -> Self {
        let mut map = HashMap::new();
        for (input, feed) in graph.inputs.iter().zip(feeds) {
            let per_row: usize = input.dims.iter().product();
            map.insert(
                input.value,
                feed.slice(range.start * per_row..range.end * per_row),
            );
        }
        Values {
            graph,
            feeds: map,
            slots: vec![None; graph.values.len()],
            rows: range.len(),
            reference: false,
        }
    }

    /// Makes a fed input available as a tensor (node steps read tensors).
    fn materialize(&mut self, v: ValueId) {
        if self.slots[v].is_none() {
            if let Some(feed) = self.feeds.get(&v) {
                self.slots[v] = Some(feed.to_tensor(rows_shape(self.graph, v, self.rows)));
            }
        }
    }

    /// Node `i` of the graph on these rows.
    fn run_node(&mut self, i: usize) -> Result<(), RunError> {
        let node = &self.graph.nodes[i];
        for v in node.inputs.iter().flatten() {
            if self.graph.val(*v).is_rows() {
                self.materialize(*v);
            }
        }
        let inputs: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|v| {
                v.and_then(|v| match self.graph.val(v) {
                    Val::Const(t) => Some(t),
                    // Symbolic shapes: the output shape below carries them.
                    Val::Sym { .. } => None,
                    Val::Rows { .. } => self.slots[v].as_ref(),
                })
            })
            .collect();
        let shape = rows_shape(self.graph, node.output, self.rows);
        let out = match &node.op {
            Op::Ml(m) => run_ml(m, inputs[0].expect("checked at load"), self.reference),
            op => eval(op, &inputs, &shape),
        }
        .map_err(|detail| RunError::Node {
            node: node.label.clone(),
            detail,
        })?;
        self.slots[node.output] = Some(out);
        Ok(())
    }

    /// Node `i` when it only renames or reshapes its input and this step
    /// is the input's last reader: the input's buffer becomes the output,
    /// uncopied. False when the node must run.
    fn move_view(&mut self, i: usize, frees: &[ValueId]) -> bool {
        let node = &self.graph.nodes[i];
        let Some(Some(x)) = node.inputs.first() else {
            return false;
        };
        let same_type = self.graph.val(*x).dtype() == self.graph.val(node.output).dtype();
        let view = match &node.op {
            Op::Identity
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze => true,
            Op::Cast { to } => same_type && (*to == data_type::FLOAT || *to == data_type::INT64),
            _ => false,
        };
        if !view || !frees.contains(x) || self.slots[*x].is_none() {
            return false;
        }
        let shape = rows_shape(self.graph, node.output, self.rows);
        let t = self.slots[*x].take().expect("checked above");
        self.slots[node.output] = Some(t.reshaped(shape));
        true
    }

    /// The f32 values of per-row value `v`.
    fn f32_values(&self, v: ValueId) -> &[f32] {
        if let Some(t) = &self.slots[v] {
            return t.as_f32().expect("float checked at load");
        }
        match self.feeds.get(&v) {
            Some(Feed::F32(s)) => s,
            _ => unreachable!("value {v} is computed before it is read"),
        }
    }

    /// Output value `v` as a tensor.
    fn take_output(&mut self, v: ValueId) -> Tensor {
        self.materialize(v);
        self.slots[v].take().expect("outputs are computed")
    }
}

/// Every per-row node on all `rows` at once, unfused: the result the fast
/// path is checked against.
pub fn run_reference(
    graph: &Graph,
    feeds: &[Feed<'_>],
    rows: usize,
) -> Result<Vec<Tensor>, RunError> {
    let mut values = Values::new(graph, feeds, 0..rows);
    values.reference = true;
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.outcome == Outcome::PerRow {
            values.run_node(i)?;
        }
    }
    // An output read twice (listed twice) is copied for the second.
    let mut outs = Vec::with_capacity(graph.outputs.len());
    for o in &graph.outputs {
        values.materialize(o.value);
        outs.push(values.slots[o.value].clone().expect("outputs are computed"));
    }
    Ok(outs)
}

/// Rows per block for `graph`: [`BLOCK_ROWS`], fewer when a per-row value
/// is wide.
pub fn block_rows(graph: &Graph) -> usize {
    let widest = graph
        .values
        .iter()
        .filter_map(|v| match &v.state {
            super::graph::State::Known(Val::Rows { dims, .. }) => {
                Some(dims.iter().product::<usize>())
            }
            _ => None,
        })
        .max()
        .unwrap_or(1)
        .max(1);
    (BLOCK_VALUES / widest).clamp(1, BLOCK_ROWS)
}

/// The plan's steps over blocks of rows.
pub fn run_fast(
    graph: &Graph,
    plan: &Plan,
    feeds: &[Feed<'_>],
    rows: usize,
) -> Result<Vec<Tensor>, RunError> {
    let block = block_rows(graph);
    let mut outs: Vec<Data> = graph
        .outputs
        .iter()
        .map(|o| match o.dtype {
            DType::F32 => Data::F32(Vec::with_capacity(rows * o.dims.iter().product::<usize>())),
            DType::I64 => Data::I64(Vec::with_capacity(rows * o.dims.iter().product::<usize>())),
        })
        .collect();
    let mut pool: Vec<Vec<f32>> = Vec::new();
    for start in (0..rows).step_by(block) {
        let end = rows.min(start + block);
        let mut values = Values::new(graph, feeds, start..end);
        for step in &plan.steps {
            match &step.kernel {
                Kernel::Node(i) => {
                    if !values.move_view(*i, &step.frees) {
                        values.run_node(*i).map_err(|e| in_rows(e, start, end))?;
                    }
                }
                Kernel::Dense(d) => {
                    let x = values.f32_values(d.input);
                    let n_rows = x.len() / d.layer.in_dim.max(1);
                    let mut out = pool.pop().unwrap_or_default();
                    // A relu right after the layer is applied as its kernel
                    // stores, which can then skip the zeros in its input
                    // (a relu's before it) on the sparse kernel.
                    let relu = matches!(d.epilogue.first(), Some(Epilogue::Unary(UnaryOp::Relu)));
                    dense_block(&d.layer, x, n_rows, relu, &mut out);
                    let m = d.layer.out_dim;
                    for e in &d.epilogue[usize::from(relu)..] {
                        apply(e, &mut out, m);
                    }
                    let shape = rows_shape(graph, step.output, end - start);
                    values.slots[step.output] = Some(Tensor::f32(shape, out));
                }
            }
            for &v in &step.frees {
                if let Some(Tensor {
                    data: Data::F32(buf),
                    ..
                }) = values.slots[v].take()
                {
                    pool.push(buf);
                }
            }
        }
        for (acc, o) in outs.iter_mut().zip(&graph.outputs) {
            let t = if graph.outputs.iter().filter(|p| p.value == o.value).count() > 1 {
                values.materialize(o.value);
                values.slots[o.value].clone().unwrap()
            } else {
                values.take_output(o.value)
            };
            match (acc, t.data) {
                (Data::F32(a), Data::F32(v)) => a.extend_from_slice(&v),
                (Data::I64(a), Data::I64(v)) => a.extend_from_slice(&v),
                _ => unreachable!("output types checked at load"),
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

fn in_rows(e: RunError, start: usize, end: usize) -> RunError {
    match e {
        RunError::Node { node, detail } => RunError::Node {
            node,
            detail: format!("{detail} (in rows {start}..{end} of the batch)"),
        },
        other => other,
    }
}

/// One epilogue operation over every `m`-value row of `out`, in place.
fn apply(e: &Epilogue, out: &mut [f32], m: usize) {
    match e {
        Epilogue::Unary(u) => kernels::unary_in_place(*u, out),
        Epilogue::Clip { lo, hi } => {
            for v in out.iter_mut() {
                *v = kernels::clip_one(*v, *lo, *hi);
            }
        }
        Epilogue::LayerNorm {
            scale,
            bias,
            epsilon,
        } => kernels::layer_norm_in_place(out, m, scale, bias.as_deref(), *epsilon),
        Epilogue::Softmax { log } => {
            let rows = out.len() / m.max(1);
            kernels::softmax_in_place(out, &[rows, m], 1, *log);
        }
    }
}

/// An ai.onnx.ml node on `x` (`[rows, features]`, or `[rows]` for ZipMap):
/// the labels or the scores, as the node's port says.
fn run_ml(m: &super::op::MlNode, x: &Tensor, reference: bool) -> Result<Tensor, String> {
    use crate::model::trees::Labels;
    let rows = x.shape[0];
    let width = x.shape.get(1).copied().unwrap_or(1);
    let values = x.as_f32().expect("float checked at load");
    let out = if reference {
        m.op.run_reference(values, rows, width)
    } else {
        m.op.run(values, rows, width)
    }
    .map_err(|e| e.to_string())?;
    if m.is_labels() {
        return match out.labels {
            Some(Labels::Int(codes)) => Ok(Tensor::i64(vec![rows], codes)),
            _ => Err("its labels are not integers (refused at load)".into()),
        };
    }
    let mut shape = x.shape.clone();
    if shape.len() == 2 {
        shape[1] = out.width;
    }
    Ok(Tensor::f32(shape, out.values))
}
