//! Shape rules of the reductions: ReduceMean, ReduceSum and ArgMax.

use super::{
    DType, Dim, Op, ReduceOp, Result, Val, axes_in, axis_in, const_ints, input, mixes_rows,
};

/// ReduceMean and ReduceSum over axes other than the batch's.
pub(super) fn reduce(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    kind: ReduceOp,
    axes: Option<&[i64]>,
    keep_dims: bool,
    noop_with_empty_axes: bool,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let a = x()?;
    let dims = a.dims();
    let axes = reduce_axes(label, axes, inputs, dims.len())?;
    let axes = match axes {
        Some(axes) => axes,
        None if noop_with_empty_axes => return Ok((a.dtype(), dims)),
        None => (0..dims.len()).collect(),
    };
    if axes.iter().any(|&ax| dims[ax] == Dim::Rows) {
        let name = if kind == ReduceOp::Mean {
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
            } else if keep_dims {
                Some(Dim::Fixed(1))
            } else {
                None
            }
        })
        .collect();
    Ok((a.dtype(), out))
}

/// ArgMax along an axis other than the batch's.
pub(super) fn arg_max(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    axis: i64,
    keep_dims: bool,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let a = x()?;
    let dims = a.dims();
    let ax = axis_in(label, "axis", axis, dims.len())?;
    if dims[ax] == Dim::Rows {
        return Err(mixes_rows(label, "it compares values across rows (axis 0)"));
    }
    let mut out = dims;
    if keep_dims {
        out[ax] = Dim::Fixed(1);
    } else {
        out.remove(ax);
    }
    Ok((DType::I64, out))
}

/// The axes a Reduce node reduces: `Some(sorted axes)`, or `None` when it
/// names none (then it reduces all, or nothing with noop_with_empty_axes).
pub(super) fn reduce_axes(
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
