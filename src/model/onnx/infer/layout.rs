//! Shape rules of the operators that move values without computing:
//! Gather, Concat, Reshape, Flatten, Squeeze, Unsqueeze and Transpose.

use super::{
    DType, Dim, Op, Result, SymInt, Val, axes_in, axis_in, const_ints, err, input, mixes_rows,
    show, want_dtype,
};

/// Gather along an axis other than the batch's; constant indices are checked
/// against the dimension.
pub(super) fn gather(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    axis: i64,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let (data, idx) = (x()?, input(label, op, inputs, 1)?);
    want_dtype(label, "its indices", idx, DType::I64)?;
    let dd = data.dims();
    let ax = axis_in(label, "axis", axis, dd.len())?;
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

/// Concat along an axis other than the batch's, of values of one type and rank.
pub(super) fn concat(inputs: &[Option<&Val>], label: &str, axis: i64) -> Result<(DType, Vec<Dim>)> {
    let parts: Vec<&Val> = inputs.iter().flatten().copied().collect();
    if parts.is_empty() {
        return Err(err(label, "Concat of nothing"));
    }
    let first = parts[0].dims();
    let ax = axis_in(label, "axis", axis, first.len())?;
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

/// Reshape to a target shape known at load.
pub(super) fn reshape(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    allow_zero: bool,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let (data, shape) = (x()?, input(label, op, inputs, 1)?);
    let target = shape.shape_values().ok_or_else(|| {
        err(
            label,
            "its target shape is computed from the rows' values; herd needs it known at load",
        )
    })?;
    Ok((
        data.dtype(),
        reshape_dims(label, &data.dims(), &target, allow_zero)?,
    ))
}

/// Flatten to 2-D, keeping the batch dimension first.
pub(super) fn flatten(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    axis: i64,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let a = x()?;
    let dims = a.dims();
    let r = dims.len() as i64;
    if axis < -r || axis > r {
        return Err(err(
            label,
            format!("axis {axis} is out of range for rank {r}"),
        ));
    }
    let ax = if axis < 0 { axis + r } else { axis } as usize;
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

/// Squeeze the given axes (each of size 1), or every dimension of size 1.
pub(super) fn squeeze(op: &Op, inputs: &[Option<&Val>], label: &str) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
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

/// Unsqueeze: size-1 dimensions inserted at the given axes.
pub(super) fn unsqueeze(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
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

/// Transpose by `perm` (reversed dimensions when absent).
pub(super) fn transpose(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    perm: Option<&[i64]>,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let a = x()?;
    let dims = a.dims();
    let perm = permutation(label, perm, dims.len())?;
    Ok((a.dtype(), perm.iter().map(|&p| dims[p]).collect()))
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

/// The output dims of Reshape: `target` entries are known sizes, -1 (one
/// inferred), 0 (copy the input's dimension unless `allow_zero`) or the
/// batch size.
pub(super) fn reshape_dims(
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
