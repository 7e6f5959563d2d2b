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
        Op::Softmax { axis, .. } => {
            let a = x()?;
            want_dtype(label, "its input", a, DType::F32)?;
            let dims = a.dims();
            let ax = axis_in(label, "axis", *axis, dims.len())?;
            if dims[ax] == Dim::Rows {
                return Err(mixes_rows(label, "it normalizes across rows (axis 0)"));
            }
            Ok((DType::F32, dims))
        }
        Op::LayerNorm { axis, .. } => {
            let a = x()?;
            want_dtype(label, "its input", a, DType::F32)?;
            let dims = a.dims();
            let ax = axis_in(label, "axis", *axis, dims.len())?;
            if ax == 0 && dims[0] == Dim::Rows {
                return Err(mixes_rows(label, "it normalizes across rows (axis 0)"));
            }
            let normalized = &dims[ax..];
            for (i, what) in [(1, "scale"), (2, "bias")] {
                let Some(p) = inputs.get(i).copied().flatten() else {
                    if i == 1 {
                        return Err(err(label, "LayerNormalization needs a scale input"));
                    }
                    continue;
                };
                let Val::Const(t) = p else {
                    return Err(err(label, format!("its {what} must be a constant")));
                };
                want_dtype(label, what, p, DType::F32)?;
                let target = fixed(normalized);
                if kernels::broadcast_shapes(&t.shape, &target).as_deref() != Some(&target[..]) {
                    return Err(err(
                        label,
                        format!(
                            "its {what} of shape {:?} does not broadcast to the normalized shape {target:?}",
                            t.shape
                        ),
                    ));
                }
            }
            Ok((DType::F32, dims))
        }
        Op::BatchNorm { .. } => {
            let a = x()?;
            want_dtype(label, "its input", a, DType::F32)?;
            let dims = a.dims();
            if dims.len() < 2 {
                return Err(err(
                    label,
                    format!("its input {} has no channel dimension", show(&dims)),
                ));
            }
            let Dim::Fixed(c) = dims[1] else {
                return Err(mixes_rows(label, "its channels are the batch dimension"));
            };
            for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
                let p = input(label, op, inputs, i)?;
                let Val::Const(t) = p else {
                    return Err(err(label, format!("its {what} must be a constant")));
                };
                want_dtype(label, what, p, DType::F32)?;
                if t.shape != [c] {
                    return Err(err(
                        label,
                        format!("its {what} has shape {:?}, expected [{c}]", t.shape),
                    ));
                }
            }
            Ok((DType::F32, dims))
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let (a, b) = (x()?, input(label, op, inputs, 1)?);
            want_dtype(label, "A", a, DType::F32)?;
            want_dtype(label, "B", b, DType::F32)?;
            let (mut da, mut db) = (a.dims(), b.dims());
            if da.len() != 2 || db.len() != 2 {
                return Err(err(
                    label,
                    format!("Gemm takes 2-D inputs, got {} and {}", show(&da), show(&db)),
                ));
            }
            if *trans_a {
                da.reverse();
            }
            if *trans_b {
                db.reverse();
            }
            if da[1] == Dim::Rows || db[0] == Dim::Rows {
                return Err(mixes_rows(label, "it sums over the batch dimension"));
            }
            if da[1] != db[0] {
                return Err(err(
                    label,
                    format!("A' {} and B' {} do not multiply", show(&da), show(&db)),
                ));
            }
            let out = vec![da[0], db[1]];
            if let Some(c) = inputs.get(2).copied().flatten() {
                want_dtype(label, "C", c, DType::F32)?;
                let joined = broadcast(label, &c.dims(), &out)?;
                if joined != out {
                    return Err(err(
                        label,
                        format!("C {} does not broadcast to {}", show(&c.dims()), show(&out)),
                    ));
                }
            }
            Ok((DType::F32, out))
        }
        Op::MatMul => {
            let (a, b) = (x()?, input(label, op, inputs, 1)?);
            want_dtype(label, "its first input", a, DType::F32)?;
            want_dtype(label, "its second input", b, DType::F32)?;
            let (mut da, mut db) = (a.dims(), b.dims());
            if da.is_empty() || db.is_empty() {
                return Err(err(label, "MatMul of a scalar"));
            }
            let (a_vec, b_vec) = (da.len() == 1, db.len() == 1);
            if a_vec {
                da.insert(0, Dim::Fixed(1));
            }
            if b_vec {
                db.push(Dim::Fixed(1));
            }
            let (k1, k2) = (da[da.len() - 1], db[db.len() - 2]);
            if k1 == Dim::Rows || k2 == Dim::Rows {
                return Err(mixes_rows(label, "it sums over the batch dimension"));
            }
            if k1 != k2 {
                return Err(err(
                    label,
                    format!(
                        "{} and {} do not multiply",
                        show(&a.dims()),
                        show(&b.dims())
                    ),
                ));
            }
            let mut out = broadcast(label, &da[..da.len() - 2], &db[..db.len() - 2])?;
            if !a_vec {
                out.push(da[da.len() - 2]);
            }
            if !b_vec {
                out.push(db[db.len() - 1]);
            }
            Ok((DType::F32, out))
        }
        Op::Gather { axis } => {
            let (data, idx) = (x()?, input(label, op, inputs, 1)?);
            want_dtype(label, "its indices", idx, DType::I64)?;
            let dd = data.dims();
            let ax = axis_in(label, "axis", *axis, dd.len())?;
            let Dim::Fixed(n) = dd[ax] else {
                return Err(mixes_rows(label, "it indexes along the batch dimension"));
            };
            if let Val::Const(t) = idx {
                for &i in t.as_i64().unwrap() {
                    if i < -(n as i64) || i >= n as i64 {
                        return Err(err(
                            label,
                            format!("index {i} is out of range for a dimension of {n}"),
                        ));
                    }
                }
            }
            let mut out = dd[..ax].to_vec();
            out.extend(idx.dims());
            out.extend_from_slice(&dd[ax + 1..]);
            Ok((data.dtype(), out))
        }
        Op::Concat { axis } => {
            let parts: Vec<&Val> = inputs.iter().flatten().copied().collect();
            if parts.is_empty() {
                return Err(err(label, "Concat of nothing"));
            }
            let first = parts[0].dims();
            let ax = axis_in(label, "axis", *axis, first.len())?;
            let mut total = 0usize;
            for p in &parts {
                let d = p.dims();
                if p.dtype() != parts[0].dtype() {
                    return Err(err(label, "its inputs are of different types"));
                }
                if d.len() != first.len() {
                    return Err(err(
                        label,
                        format!("joins {} and {} of different ranks", show(&first), show(&d)),
                    ));
                }
                for (i, (x, y)) in d.iter().zip(&first).enumerate() {
                    if i != ax && x != y {
                        let why = if [*x, *y].contains(&Dim::Rows) {
                            return Err(mixes_rows(
                                label,
                                &format!(
                                    "it joins per-row values with a constant of shape {}",
                                    show(if *x == Dim::Rows { &first } else { &d })
                                ),
                            ));
                        } else {
                            format!("joins {} and {} along axis {ax}", show(&first), show(&d))
                        };
                        return Err(err(label, why));
                    }
                }
                match d[ax] {
                    Dim::Fixed(n) => total += n,
                    Dim::Rows => {
                        return Err(mixes_rows(label, "it joins along the batch dimension"));
                    }
                }
            }
            let mut out = first;
            out[ax] = Dim::Fixed(total);
            Ok((parts[0].dtype(), out))
        }
        Op::Reshape { allow_zero } => {
            let (data, shape) = (x()?, input(label, op, inputs, 1)?);
            let target = shape.shape_values().ok_or_else(|| {
                err(label, "its target shape is computed from the rows' values; herd needs it known at load")
            })?;
            Ok((
                data.dtype(),
                reshape_dims(label, &data.dims(), &target, *allow_zero)?,
            ))
        }
        Op::Flatten { axis } => {
            let a = x()?;
            let dims = a.dims();
            let r = dims.len() as i64;
            if *axis < -r || *axis > r {
                return Err(err(
                    label,
                    format!("axis {axis} is out of range for rank {r}"),
                ));
            }
            let ax = if *axis < 0 { axis + r } else { *axis } as usize;
            let size = |part: &[Dim]| -> usize {
                part.iter()
                    .map(|d| if let Dim::Fixed(k) = d { *k } else { 1 })
                    .product()
            };
            let head = if a.is_rows() {
                if ax == 0 || size(&dims[1..ax]) != 1 {
                    return Err(mixes_rows(
                        label,
                        &format!("Flatten at axis {axis} merges the batch dimension with others"),
                    ));
                }
                Dim::Rows
            } else {
                Dim::Fixed(size(&dims[..ax]))
            };
            Ok((a.dtype(), vec![head, Dim::Fixed(size(&dims[ax..]))]))
        }
        Op::Squeeze => {
            let a = x()?;
            let dims = a.dims();
            let out = match inputs.get(1).copied().flatten() {
                Some(axes) => {
                    let axes = axes_in(
                        label,
                        "axis",
                        &const_ints(label, "its axes", axes)?,
                        dims.len(),
                    )?;
                    for &ax in &axes {
                        match dims[ax] {
                            Dim::Fixed(1) => {}
                            Dim::Rows => {
                                return Err(mixes_rows(label, "it squeezes the batch dimension"));
                            }
                            Dim::Fixed(n) => {
                                return Err(err(
                                    label,
                                    format!("it squeezes axis {ax} of size {n}, not 1"),
                                ));
                            }
                        }
                    }
                    dims.iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, d)| *d)
                        .collect()
                }
                // Every dimension of size 1; the batch dimension stays even
                // when a block happens to hold one row.
                None => dims
                    .iter()
                    .copied()
                    .filter(|d| *d != Dim::Fixed(1))
                    .collect(),
            };
            Ok((a.dtype(), out))
        }
        Op::Unsqueeze => {
            let a = x()?;
            let dims = a.dims();
            let axes = const_ints(label, "its axes", input(label, op, inputs, 1)?)?;
            let rank = dims.len() + axes.len();
            let axes = axes_in(label, "axis", &axes, rank)?;
            let mut rest = dims.into_iter();
            let out: Vec<Dim> = (0..rank)
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::Fixed(1)
                    } else {
                        rest.next().unwrap()
                    }
                })
                .collect();
            Ok((a.dtype(), out))
        }
        Op::Transpose { perm } => {
            let a = x()?;
            let dims = a.dims();
            let perm = permutation(label, perm.as_deref(), dims.len())?;
            Ok((a.dtype(), perm.iter().map(|&p| dims[p]).collect()))
        }
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
        } => {
            let a = x()?;
            let dims = a.dims();
            let axes = reduce_axes(label, axes.as_deref(), inputs, dims.len())?;
            let axes = match axes {
                Some(axes) => axes,
                None if *noop_with_empty_axes => return Ok((a.dtype(), dims)),
                None => (0..dims.len()).collect(),
            };
            if axes.iter().any(|&ax| dims[ax] == Dim::Rows) {
                let name = if *kind == ReduceOp::Mean {
                    "averages"
                } else {
                    "sums"
                };
                return Err(mixes_rows(
                    label,
                    &format!("it {name} over the batch dimension"),
                ));
            }
            let out = dims
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    if !axes.contains(&i) {
                        Some(*d)
                    } else if *keep_dims {
                        Some(Dim::Fixed(1))
                    } else {
                        None
                    }
                })
                .collect();
            Ok((a.dtype(), out))
        }
        Op::ArgMax {
            axis, keep_dims, ..
        } => {
            let a = x()?;
            let dims = a.dims();
            let ax = axis_in(label, "axis", *axis, dims.len())?;
            if dims[ax] == Dim::Rows {
                return Err(mixes_rows(label, "it compares values across rows (axis 0)"));
            }
            let mut out = dims;
            if *keep_dims {
                out[ax] = Dim::Fixed(1);
            } else {
                out.remove(ax);
            }
            Ok((DType::I64, out))
        }
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

/// A Transpose permutation: `perm`, or reversed dimensions when absent.
pub fn permutation(label: &str, perm: Option<&[i64]>, rank: usize) -> Result<Vec<usize>> {
    let perm: Vec<usize> = match perm {
        None => (0..rank).rev().collect(),
        Some(p) => {
            let mut seen = vec![false; rank];
            let mut out = Vec::with_capacity(rank);
            for &v in p {
                if v < 0 || v as usize >= rank || seen[v as usize] {
                    return Err(err(
                        label,
                        format!("perm {p:?} is not a permutation of {rank} axes"),
                    ));
                }
                seen[v as usize] = true;
                out.push(v as usize);
            }
            if out.len() != rank {
                return Err(err(
                    label,
                    format!("perm {p:?} is not a permutation of {rank} axes"),
                ));
            }
            out
        }
    };
    Ok(perm)
}

/// The axes a Reduce node reduces: `Some(sorted axes)`, or `None` when it
/// names none (then it reduces all, or nothing with noop_with_empty_axes).
pub fn reduce_axes(
    label: &str,
    attr: Option<&[i64]>,
    inputs: &[Option<&Val>],
    rank: usize,
) -> Result<Option<Vec<usize>>> {
    let axes = match (attr, inputs.get(1).copied().flatten()) {
        (Some(a), _) => a.to_vec(),
        (None, Some(v)) => const_ints(label, "its axes", v)?,
        (None, None) => Vec::new(),
    };
    if axes.is_empty() {
        return Ok(None);
    }
    axes_in(label, "axis", &axes, rank).map(Some)
}

/// The output dims of Reshape: `target` entries are known sizes, -1 (one
/// inferred), 0 (copy the input's dimension unless `allow_zero`) or the
/// batch size.
fn reshape_dims(
    label: &str,
    input: &[Dim],
    target: &[SymInt],
    allow_zero: bool,
) -> Result<Vec<Dim>> {
    let rows = input.first() == Some(&Dim::Rows);
    let per_row: usize = input
        .iter()
        .map(|d| if let Dim::Fixed(k) = d { *k } else { 1 })
        .product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, t) in target.iter().enumerate() {
        let d = match *t {
            SymInt::Batch => Dim::Rows,
            SymInt::Known(-1) => {
                if infer_at.replace(i).is_some() {
                    return Err(err(label, "its target shape has more than one -1"));
                }
                Dim::Fixed(0)
            }
            SymInt::Known(0) if !allow_zero => *input.get(i).ok_or_else(|| {
                err(
                    label,
                    format!("its target shape copies dimension {i} (0), which the input lacks"),
                )
            })?,
            SymInt::Known(k) if k >= 0 => Dim::Fixed(k as usize),
            SymInt::Known(k) => {
                return Err(err(label, format!("its target shape holds {k}")));
            }
        };
        out.push(d);
    }
    let mut known: usize = 1;
    for (i, d) in out.iter().enumerate() {
        if let (false, Dim::Fixed(k)) = (Some(i) == infer_at, d) {
            known = known
                .checked_mul(*k)
                .ok_or_else(|| err(label, format!("its target shape {target:?} is too large")))?;
        }
    }
    let out_rows = out.iter().filter(|d| **d == Dim::Rows).count();
    match (rows, out_rows, infer_at) {
        (false, 0, None) if known == per_row => Ok(out),
        (false, 0, Some(i)) if known > 0 && per_row % known == 0 => {
            out[i] = Dim::Fixed(per_row / known);
            Ok(out)
        }
        // The batch dimension kept where it was: the rest must hold one row.
        (true, 1, None) if out[0] == Dim::Rows && known == per_row => Ok(out),
        (true, 1, Some(i)) if out[0] == Dim::Rows && known > 0 && per_row % known == 0 => {
            out[i] = Dim::Fixed(per_row / known);
            Ok(out)
        }
        // -1 first, standing for the batch: the rest must be exactly one row.
        (true, 0, Some(0)) if known == per_row => {
            out[0] = Dim::Rows;
            Ok(out)
        }
        (true, _, _) => Err(mixes_rows(
            label,
            &format!(
                "it reshapes {} to {target:?}, which does not keep one row per batch entry",
                show(input)
            ),
        )),
        _ => Err(err(
            label,
            format!("it cannot reshape {} to {target:?}", show(input)),
        )),
    }
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
