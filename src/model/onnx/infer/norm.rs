//! Shape rules of the normalizations: Softmax, LogSoftmax,
//! LayerNormalization and BatchNormalization.

use super::{
    DType, Dim, Op, Result, Val, axis_in, err, fixed, input, kernels, mixes_rows, show, want_dtype,
};

/// Softmax and LogSoftmax: along an axis other than the batch's.
pub(super) fn softmax(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    axis: i64,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let a = x()?;
    want_dtype(label, "its input", a, DType::F32)?;
    let dims = a.dims();
    let ax = axis_in(label, "axis", axis, dims.len())?;
    if dims[ax] == Dim::Rows {
        return Err(mixes_rows(label, "it normalizes across rows (axis 0)"));
    }
    Ok((DType::F32, dims))
}

/// LayerNormalization: over the dimensions from `axis` on, with a constant
/// scale (and bias) that broadcasts to them.
pub(super) fn layer_norm(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    axis: i64,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
    let a = x()?;
    want_dtype(label, "its input", a, DType::F32)?;
    let dims = a.dims();
    let ax = axis_in(label, "axis", axis, dims.len())?;
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

/// BatchNormalization (inference): per channel (axis 1), with constant
/// parameters of one value per channel.
pub(super) fn batch_norm(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
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
