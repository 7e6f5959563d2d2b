//! Shape inference with a symbolic batch dimension, and constant folding.
//!
//! Every value of a graph is one of three things at load:
//! - a constant (an initializer, or a node whose inputs are all constants,
//!   folded here by running it once);
//! - a shape that involves the batch size (`Shape` of a per-row value, and
//!   the Gather/Concat/Unsqueeze arithmetic exporters put on it before a
//!   Reshape), kept symbolically;
//! - a per-row value, `[N, d1, d2, ...]`, computed for every block of rows.
//!
//! The rule that makes a graph runnable on any split of the rows: the batch
//! dimension `N` is the first dimension of every per-row value and nowhere
//! else, and no operator reduces, broadcasts, reshapes or indexes across it.
//! A node that would is refused here, naming it; so every row's outputs
//! depend on that row alone.
//!
//! The shape rules of the larger operator families live beside this file:
//! normalizations (`norm`), products (`linear`), value moves (`layout`) and
//! reductions (`reduce`).

mod layout;
mod linear;
mod norm;
mod reduce;

pub use layout::permutation;
use layout::reshape_dims;

use super::error::{Error, Result};
use super::kernels;
use super::op::{BinaryOp, Op, ReduceOp};
use super::proto::data_type;
use super::tensor::{DType, MAX_CONST_ELEMENTS, MAX_RANK, Tensor, checked_elements};

/// Values one row of a per-row value may hold.
pub const MAX_ROW_ELEMENTS: usize = 1 << 26;

/// A dimension during inference: the batch size, or a known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    Rows,
    Fixed(usize),
}

/// An entry of a shape tensor: the batch size, or a known integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymInt {
    Batch,
    Known(i64),
}

/// What is known of a value at load.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Const(Tensor),
    /// An int64 tensor of rank 0 or 1 (`shape`) with the batch size among
    /// its entries.
    Sym {
        shape: Vec<usize>,
        values: Vec<SymInt>,
    },
    /// A per-row value: `[N] + dims`, computed for each block of rows.
    Rows {
        dtype: DType,
        dims: Vec<usize>,
    },
}

impl Val {
    pub fn dtype(&self) -> DType {
        match self {
            Val::Const(t) => t.dtype(),
            Val::Sym { .. } => DType::I64,
            Val::Rows { dtype, .. } => *dtype,
        }
    }

    /// The symbolic shape: per-row values start with [`Dim::Rows`].
    pub fn dims(&self) -> Vec<Dim> {
        match self {
            Val::Const(t) => t.shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            Val::Sym { shape, .. } => shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            Val::Rows { dims, .. } => std::iter::once(Dim::Rows)
                .chain(dims.iter().map(|&d| Dim::Fixed(d)))
                .collect(),
        }
    }

    pub fn is_rows(&self) -> bool {
        matches!(self, Val::Rows { .. })
    }

    pub fn as_const(&self) -> Option<&Tensor> {
        match self {
            Val::Const(t) => Some(t),
            _ => None,
        }
    }

    /// The entries of an integer tensor known at load (constant or
    /// symbolic), if it is one.
    pub fn shape_values(&self) -> Option<Vec<SymInt>> {
        match self {
            Val::Const(t) => t
                .as_i64()
                .map(|v| v.iter().map(|&x| SymInt::Known(x)).collect()),
            Val::Sym { values, .. } => Some(values.clone()),
            Val::Rows { .. } => None,
        }
    }
}

/// How a node's outputs came to be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every output is a constant or symbolic shape: the node never runs.
    Folded,
    /// The node runs on every block of rows.
    PerRow,
}

fn err(label: &str, detail: impl Into<String>) -> Error {
    Error::Node {
        node: label.to_string(),
        detail: detail.into(),
    }
}

/// `axis` (negative counts from the end) as an index into `rank` dimensions.
fn axis_in(label: &str, what: &str, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(err(
            label,
            format!("{what} {axis} is out of range for a tensor of rank {rank}"),
        ));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Distinct, sorted axes.
fn axes_in(label: &str, what: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = axes
        .iter()
        .map(|&a| axis_in(label, what, a, rank))
        .collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    let n = out.len();
    out.dedup();
    if out.len() != n {
        return Err(err(label, format!("{what}s {axes:?} repeat an axis")));
    }
    Ok(out)
}

/// The refusal for a node that would mix rows, with why.
fn mixes_rows(label: &str, why: &str) -> Error {
    err(
        label,
        format!(
            "{why}; herd scores each row on its own, so the first (batch) dimension must stay \
             first and untouched"
        ),
    )
}

/// Per-row value from a symbolic shape, or why it is not one.
fn to_rows(label: &str, dtype: DType, dims: &[Dim]) -> Result<Val> {
    if dims.first() != Some(&Dim::Rows) {
        return Err(mixes_rows(
            label,
            "its result does not keep the batch dimension first",
        ));
    }
    let mut rest = Vec::with_capacity(dims.len() - 1);
    for d in &dims[1..] {
        match d {
            Dim::Fixed(n) => rest.push(*n),
            Dim::Rows => {
                return Err(mixes_rows(
                    label,
                    "its result has the batch dimension in a second place",
                ));
            }
        }
    }
    if rest.len() + 1 > MAX_RANK {
        return Err(err(
            label,
            format!(
                "its result has rank {}; herd handles at most {MAX_RANK}",
                rest.len() + 1
            ),
        ));
    }
    if checked_elements(&rest, MAX_ROW_ELEMENTS).is_none() {
        return Err(err(
            label,
            format!(
                "its result holds more than herd's limit of {MAX_ROW_ELEMENTS} values per row ({rest:?})"
            ),
        ));
    }
    Ok(Val::Rows { dtype, dims: rest })
}

/// The broadcast of symbolic shapes; the batch size only broadcasts with 1.
fn broadcast(label: &str, a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            Dim::Fixed(1)
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (Dim::Fixed(1), y) => Ok(y),
            (x, Dim::Fixed(1)) => Ok(x),
            (Dim::Rows, Dim::Fixed(k)) | (Dim::Fixed(k), Dim::Rows) => Err(mixes_rows(
                label,
                &format!("it broadcasts the batch dimension against a dimension of {k}"),
            )),
            _ => Err(err(
                label,
                format!("shapes {} and {} do not broadcast", show(a), show(b)),
            )),
        })
        .collect()
}

/// `[N, 4, 3]` for messages.
pub fn show(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Rows => "N".to_string(),
            Dim::Fixed(n) => n.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn fixed(dims: &[Dim]) -> Vec<usize> {
    dims.iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Rows => unreachable!("only called on constant shapes"),
        })
        .collect()
}

/// A required input.
fn input<'a>(label: &str, op: &Op, inputs: &[Option<&'a Val>], i: usize) -> Result<&'a Val> {
    inputs.get(i).copied().flatten().ok_or_else(|| {
        err(
            label,
            format!("{} needs input {} and it is missing", op.onnx_name(), i + 1),
        )
    })
}

fn want_dtype(label: &str, what: &str, v: &Val, dtype: DType) -> Result<()> {
    if v.dtype() != dtype {
        return Err(err(
            label,
            format!("{what} is {}, expected {}", v.dtype().name(), dtype.name()),
        ));
    }
    Ok(())
}

/// A constant integer list (axes, a shape without the batch size).
fn const_ints(label: &str, what: &str, v: &Val) -> Result<Vec<i64>> {
    match v {
        Val::Const(t) => t
            .as_i64()
            .map(<[i64]>::to_vec)
            .ok_or_else(|| err(label, format!("{what} must be int64"))),
        _ => Err(err(
            label,
            format!("{what} must be a constant known at load (it depends on the rows)"),
        )),
    }
}

/// Infers `op`'s output from its inputs (`None`: an omitted optional
/// input), folding the node when its inputs are known at load.
pub fn infer(op: &Op, inputs: &[Option<&Val>], label: &str) -> Result<(Val, Outcome)> {
    let present: Vec<&Val> = inputs.iter().flatten().copied().collect();
    if let Op::Shape { start, end } = op {
        let a = input(label, op, inputs, 0)?;
        let dims = a.dims();
        let (s, e) = shape_range(dims.len(), *start, *end);
        let values = dims[s..e.max(s)]
            .iter()
            .map(|d| match d {
                Dim::Rows => SymInt::Batch,
                Dim::Fixed(k) => SymInt::Known(*k as i64),
            })
            .collect::<Vec<_>>();
        return Ok((symbolic(vec![values.len()], values), Outcome::Folded));
    }
    let fills_rows = matches!(op, Op::ConstantOfShape { .. })
        && matches!(present.first(), Some(Val::Sym { .. }));
    if fills_rows || present.iter().any(|v| v.is_rows()) {
        let (dtype, dims) = shape_of(op, inputs, label)?;
        return Ok((to_rows(label, dtype, &dims)?, Outcome::PerRow));
    }
    if present.iter().all(|v| matches!(v, Val::Const(_))) {
        let (_, dims) = shape_of(op, inputs, label)?;
        let shape = fixed(&dims);
        if checked_elements(&shape, MAX_CONST_ELEMENTS).is_none() {
            return Err(err(
                label,
                format!(
                    "folds to a constant of shape {shape:?}, more than herd's limit of \
                     {MAX_CONST_ELEMENTS} values"
                ),
            ));
        }
        let consts: Vec<Option<&Tensor>> = inputs
            .iter()
            .map(|v| v.map(|v| v.as_const().expect("all constants")))
            .collect();
        let t = super::eval::eval(op, &consts, &shape).map_err(|e| err(label, e))?;
        return Ok((Val::Const(t), Outcome::Folded));
    }
    Ok((fold_symbolic(op, inputs, label)?, Outcome::Folded))
}

/// A shape tensor: a constant when the batch size is not among `values`.
fn symbolic(shape: Vec<usize>, values: Vec<SymInt>) -> Val {
    if values.iter().all(|v| matches!(v, SymInt::Known(_))) {
        let known = values
            .iter()
            .map(|v| if let SymInt::Known(k) = v { *k } else { 0 })
            .collect();
        Val::Const(Tensor::i64(shape, known))
    } else {
        Val::Sym { shape, values }
    }
}

/// Symbolic dims from shape entries: the batch size must come first.
fn sym_dims(label: &str, values: &[SymInt]) -> Result<Vec<Dim>> {
    values
        .iter()
        .map(|v| match *v {
            SymInt::Batch => Ok(Dim::Rows),
            SymInt::Known(k) if k >= 0 => Ok(Dim::Fixed(k as usize)),
            SymInt::Known(k) => Err(err(label, format!("a shape holds the negative size {k}"))),
        })
        .collect()
}

/// The element type and symbolic shape of `op`'s (first) output.
fn shape_of(op: &Op, inputs: &[Option<&Val>], label: &str) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    match op {
        Op::Binary(b) => {
            let (a, c) = (x()?, input(label, op, inputs, 1)?);
            if *b == BinaryOp::Pow {
                want_dtype(label, "Pow's base", a, DType::F32)?;
            } else if a.dtype() != c.dtype() {
                return Err(err(
                    label,
                    format!(
                        "its inputs are {} and {}; they must be of one type",
                        a.dtype().name(),
                        c.dtype().name()
                    ),
                ));
            }
            Ok((a.dtype(), broadcast(label, &a.dims(), &c.dims())?))
        }
        Op::Unary(_) => {
            let a = x()?;
            want_dtype(label, "its input", a, DType::F32)?;
            Ok((DType::F32, a.dims()))
        }
        Op::Softmax { axis, .. } => norm::softmax(op, inputs, label, *axis),
        Op::LayerNorm { axis, .. } => norm::layer_norm(op, inputs, label, *axis),
        Op::BatchNorm { .. } => norm::batch_norm(op, inputs, label),
        Op::Gemm {
            trans_a, trans_b, ..
        } => linear::gemm(op, inputs, label, *trans_a, *trans_b),
        Op::MatMul => linear::matmul(op, inputs, label),
        Op::Gather { axis } => layout::gather(op, inputs, label, *axis),
        Op::Concat { axis } => layout::concat(inputs, label, *axis),
        Op::Reshape { allow_zero } => layout::reshape(op, inputs, label, *allow_zero),
        Op::Flatten { axis } => layout::flatten(op, inputs, label, *axis),
        Op::Squeeze => layout::squeeze(op, inputs, label),
        Op::Unsqueeze => layout::unsqueeze(op, inputs, label),
        Op::Transpose { perm } => layout::transpose(op, inputs, label, perm.as_deref()),
        Op::Identity => {
            let a = x()?;
            Ok((a.dtype(), a.dims()))
        }
        Op::Cast { to } => {
            let a = x()?;
            Ok((DType::from_onnx(*to).unwrap(), a.dims()))
        }
        Op::Clip => {
            let a = x()?;
            for (i, what) in [(1, "min"), (2, "max")] {
                if let Some(b) = inputs.get(i).copied().flatten() {
                    let Val::Const(t) = b else {
                        return Err(err(label, format!("its {what} must be a constant")));
                    };
                    if t.len() != 1 || t.dtype() != a.dtype() {
                        return Err(err(
                            label,
                            format!("its {what} must be one {} value", a.dtype().name()),
                        ));
                    }
                }
            }
            Ok((a.dtype(), a.dims()))
        }
        Op::Reduce {
            op: kind,
            axes,
            keep_dims,
            noop_with_empty_axes,
        } => reduce::reduce(
            op,
            inputs,
            label,
            *kind,
            axes.as_deref(),
            *keep_dims,
            *noop_with_empty_axes,
        ),
        Op::ArgMax {
            axis, keep_dims, ..
        } => reduce::arg_max(op, inputs, label, *axis, *keep_dims),
        Op::Shape { start, end } => {
            let a = x()?;
            let (s, e) = shape_range(a.dims().len(), *start, *end);
            Ok((DType::I64, vec![Dim::Fixed(e.saturating_sub(s))]))
        }
        Op::Constant(t) => Ok((t.dtype(), t.shape.iter().map(|&d| Dim::Fixed(d)).collect())),
        Op::Ml(m) => ml_shape(m, x()?, label),
        Op::ConstantOfShape { value } => {
            let s = x()?;
            if s.is_rows() {
                return Err(err(
                    label,
                    "its shape input is computed from the rows' values; herd needs it known at load",
                ));
            }
            let values = s
                .shape_values()
                .ok_or_else(|| err(label, "its shape input must be int64"))?;
            Ok((value.dtype(), sym_dims(label, &values)?))
        }
    }
}

/// An ai.onnx.ml node's output: rows of features `[N, F]` in; labels `[N]`
/// (int64) or scores `[N, width]` out.
fn ml_shape(m: &super::op::MlNode, a: &Val, label: &str) -> Result<(DType, Vec<Dim>)> {
    use crate::model::trees::{ClassLabels, Width};
    let dims = a.dims();
    let width = match dims.as_slice() {
        [Dim::Rows, Dim::Fixed(f)] => *f,
        [Dim::Rows] if m.name == "ZipMap" => 1,
        _ if !a.is_rows() => {
            return Err(err(
                label,
                "its input is a constant; herd runs ai.onnx.ml operators on the rows",
            ));
        }
        _ => {
            return Err(err(
                label,
                format!(
                    "its input has shape {}; expected [N, features]",
                    show(&dims)
                ),
            ));
        }
    };
    want_dtype(label, "its input", a, DType::F32)?;
    let fits = match m.op.input_width() {
        Width::Exact(w) => w == width,
        Width::AtLeast(w) => w <= width,
        Width::Any => true,
    };
    if !fits {
        let need = match m.op.input_width() {
            Width::Exact(w) => format!("exactly {w}"),
            Width::AtLeast(w) => format!("at least {w}"),
            Width::Any => unreachable!(),
        };
        return Err(err(
            label,
            format!("reads {need} features, but its input has {width} per row"),
        ));
    }
    if m.is_labels() {
        let strings = match &*m.op {
            crate::model::trees::MlOp::Trees(t) => t
                .ensemble
                .classes()
                .is_some_and(|c| matches!(c.labels, ClassLabels::Str(_))),
            crate::model::trees::MlOp::LinearClassifier(c) => {
                matches!(c.labels, ClassLabels::Str(_))
            }
            _ => false,
        };
        if strings {
            return Err(err(
                label,
                "its labels are strings; herd stores numbers: store the scores (the \
                 probabilities) instead",
            ));
        }
        return Ok((DType::I64, vec![Dim::Rows]));
    }
    let mut out = vec![Dim::Rows];
    if dims.len() == 2 {
        out.push(Dim::Fixed(m.op.output_width(width)));
    }
    Ok((DType::F32, out))
}

/// The `[start, end)` range of dimensions Shape returns (clamped, as ONNX says).
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    (clamp(start), clamp(end.unwrap_or(r)))
}

/// Folds a node whose inputs are known at load, one of them a symbolic
/// shape: the integer bookkeeping exporters do on `Shape` before a Reshape.
fn fold_symbolic(op: &Op, inputs: &[Option<&Val>], label: &str) -> Result<Val> {
    let sym = |v: &Val| -> Option<(Vec<usize>, Vec<SymInt>)> {
        match v {
            Val::Sym { shape, values } => Some((shape.clone(), values.clone())),
            Val::Const(t) if t.dtype() == DType::I64 && t.shape.len() <= 1 => Some((
                t.shape.clone(),
                t.as_i64()
                    .unwrap()
                    .iter()
                    .map(|&x| SymInt::Known(x))
                    .collect(),
            )),
            _ => None,
        }
    };
    let refuse = || {
        err(
            label,
            format!(
                "{} computes with the batch size, which herd folds only through Shape, Gather, \
                 Concat, Squeeze, Unsqueeze, Identity and Cast to an integer type",
                op.onnx_name()
            ),
        )
    };
    let first = inputs.first().copied().flatten().ok_or_else(refuse)?;
    let (shape, values) = sym(first).ok_or_else(refuse)?;
    let make = symbolic;
    match op {
        Op::Identity => Ok(make(shape, values)),
        Op::Cast { to } if *to != data_type::FLOAT => Ok(make(shape, values)),
        Op::Gather { axis } if shape.len() == 1 && (*axis == 0 || *axis == -1) => {
            let idx = input(label, op, inputs, 1)?
                .as_const()
                .and_then(|t| t.as_i64().map(|v| (t.shape.clone(), v.to_vec())))
                .ok_or_else(refuse)?;
            let n = values.len() as i64;
            let mut out = Vec::with_capacity(idx.1.len());
            for &i in &idx.1 {
                let r = if i < 0 { i + n } else { i };
                if r < 0 || r >= n {
                    return Err(err(
                        label,
                        format!("index {i} is out of range for {n} values"),
                    ));
                }
                out.push(values[r as usize]);
            }
            Ok(make(idx.0, out))
        }
        Op::Concat { axis } if *axis == 0 || *axis == -1 => {
            let mut out = Vec::new();
            for v in inputs.iter().flatten() {
                let (s, vals) = sym(v).ok_or_else(refuse)?;
                if s.len() != 1 {
                    return Err(refuse());
                }
                out.extend(vals);
            }
            Ok(make(vec![out.len()], out))
        }
        Op::Unsqueeze if shape.is_empty() => Ok(make(vec![1], values)),
        Op::Squeeze if shape == [1] => Ok(make(vec![], values)),
        Op::Reshape { allow_zero } => {
            let target = input(label, op, inputs, 1)?
                .shape_values()
                .ok_or_else(refuse)?;
            let dims = reshape_dims(label, &[Dim::Fixed(values.len())], &target, *allow_zero)?;
            Ok(make(fixed(&dims), values))
        }
        _ => Err(refuse()),
    }
}
