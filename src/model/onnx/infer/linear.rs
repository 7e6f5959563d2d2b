//! Shape rules of the products: Gemm and MatMul.

use super::{DType, Dim, Op, Result, Val, broadcast, err, input, mixes_rows, show, want_dtype};

/// Gemm: two 2-D inputs (each optionally transposed) and an optional C that
/// broadcasts to the product.
pub(super) fn gemm(
    op: &Op,
    inputs: &[Option<&Val>],
    label: &str,
    trans_a: bool,
    trans_b: bool,
) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
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
    if trans_a {
        da.reverse();
    }
    if trans_b {
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

/// MatMul with NumPy's rules: vectors promoted, leading dimensions
/// broadcast, never summing over the batch dimension.
pub(super) fn matmul(op: &Op, inputs: &[Option<&Val>], label: &str) -> Result<(DType, Vec<Dim>)> {
    let x = || input(label, op, inputs, 0);
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
