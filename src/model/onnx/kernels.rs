//! The operators on concrete tensors, with plain loops: constant folding at
//! load, the reference path, and the fast path's unfused nodes all run
//! these. Shapes have been checked by the shape inference before any of them
//! is called, so a disagreement here is a bug and panics.

use std::f32::consts::FRAC_1_SQRT_2;

use super::op::{BinaryOp, ReduceOp, UnaryOp};
use super::proto::data_type;
use super::tensor::{DType, Data, Tensor};

/// `sqrt(2 / pi)`, for the tanh form of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// The numpy broadcast of two shapes, or `None` when they do not broadcast.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Row-major strides of `shape`, with 0 where `shape` is broadcast up to
/// `out` (missing leading dimensions and dimensions of size 1).
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let o = i + out.len() - shape.len();
        strides[o] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// `f` over the broadcast of `a` (shape `sa`) and `b` (shape `sb`) to `out`.
fn broadcast_map<T: Copy, U>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &[usize],
    f: impl Fn(T, T) -> U,
) -> Vec<U> {
    let total: usize = out.iter().product();
    if sa == out && sb == out {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    if sa == out && b.len() == 1 {
        return a.iter().map(|&x| f(x, b[0])).collect();
    }
    if sb == out && a.len() == 1 {
        return b.iter().map(|&y| f(a[0], y)).collect();
    }
    let mut result = Vec::with_capacity(total);
    if total == 0 {
        return result;
    }
    if out.is_empty() {
        result.push(f(a[0], b[0]));
        return result;
    }
    let rank = out.len();
    let (ta, tb) = (broadcast_strides(sa, out), broadcast_strides(sb, out));
    let inner = out[rank - 1];
    let (ia, ib) = (ta[rank - 1], tb[rank - 1]);
    let mut index = vec![0usize; rank - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for _ in 0..total / inner {
        for j in 0..inner {
            result.push(f(a[oa + j * ia], b[ob + j * ib]));
        }
        // The odometer over every dimension but the last.
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            oa += ta[d];
            ob += tb[d];
            if index[d] < out[d] {
                break;
            }
            oa -= ta[d] * out[d];
            ob -= tb[d] * out[d];
            index[d] = 0;
        }
    }
    result
}

/// `a` broadcast to `out` and copied.
pub fn expand(a: &Tensor, out: &[usize]) -> Tensor {
    match &a.data {
        Data::F32(v) => Tensor::f32(
            out.to_vec(),
            broadcast_map(v, &a.shape, &[0.0f32], &[], out, |x, _| x),
        ),
        Data::I64(v) => Tensor::i64(
            out.to_vec(),
            broadcast_map(v, &a.shape, &[0i64], &[], out, |x, _| x),
        ),
    }
}

/// Add, Sub, Mul, Div or Pow with numpy broadcasting. Pow takes a float
/// base and a float or integer exponent; the others take two tensors of one
/// type. Integer division truncates toward zero; dividing by zero is an
/// error.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let out = broadcast_shapes(&a.shape, &b.shape).expect("shapes checked at load");
    if op == BinaryOp::Pow {
        let base = a.as_f32().expect("Pow's base is float (checked at load)");
        let exponent = b.to_f32_vec();
        return Ok(Tensor::f32(
            out.clone(),
            broadcast_map(base, &a.shape, &exponent, &b.shape, &out, f32::powf),
        ));
    }
    match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let f: fn(f32, f32) -> f32 = match op {
                BinaryOp::Add => |p, q| p + q,
                BinaryOp::Sub => |p, q| p - q,
                BinaryOp::Mul => |p, q| p * q,
                BinaryOp::Div => |p, q| p / q,
                BinaryOp::Pow => unreachable!(),
            };
            Ok(Tensor::f32(
                out.clone(),
                broadcast_map(x, &a.shape, y, &b.shape, &out, f),
            ))
        }
        (Data::I64(x), Data::I64(y)) => {
            if op == BinaryOp::Div && y.contains(&0) {
                return Err("integer division by zero".into());
            }
            let f: fn(i64, i64) -> i64 = match op {
                BinaryOp::Add => |p, q| p.wrapping_add(q),
                BinaryOp::Sub => |p, q| p.wrapping_sub(q),
                BinaryOp::Mul => |p, q| p.wrapping_mul(q),
                BinaryOp::Div => |p, q| p.wrapping_div(q),
                BinaryOp::Pow => unreachable!(),
            };
            Ok(Tensor::i64(
                out.clone(),
                broadcast_map(x, &a.shape, y, &b.shape, &out, f),
            ))
        }
        _ => unreachable!("operand types checked at load"),
    }
}

/// One element through a unary operator.
#[inline]
pub fn unary_one(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Sqrt => x.sqrt(),
        // `max`, as the built-in mlp (NaN gives 0): it vectorizes, where a
        // compare and store per value costs a branch miss on half of them.
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::LeakyRelu(alpha) => {
            if x < 0.0 {
                alpha * x
            } else {
                x
            }
        }
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => libm::erff(x),
        UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erff(x * FRAC_1_SQRT_2)),
        UnaryOp::GeluTanh => {
            0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
        }
    }
}

/// A unary operator over every value, in place.
pub fn unary_in_place(op: UnaryOp, values: &mut [f32]) {
    match op {
        UnaryOp::Relu => {
            for v in values {
                *v = v.max(0.0);
            }
        }
        _ => {
            for v in values {
                *v = unary_one(op, *v);
            }
        }
    }
}

pub fn unary(op: UnaryOp, x: &Tensor) -> Tensor {
    let mut values = x.as_f32().expect("float checked at load").to_vec();
    unary_in_place(op, &mut values);
    Tensor::f32(x.shape.clone(), values)
}

/// `(outer, n, inner)`: the sizes before, at and after `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Softmax (or log-softmax) over runs of `n` values `inner` apart, in place.
pub fn softmax_in_place(values: &mut [f32], shape: &[usize], axis: usize, log: bool) {
    let (outer, n, inner) = split_at_axis(shape, axis);
    if n == 0 {
        return;
    }
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            let at = |k: usize| base + k * inner;
            let max = (0..n)
                .map(|k| values[at(k)])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for k in 0..n {
                sum += (values[at(k)] - max).exp();
            }
            if log {
                let log_sum = sum.ln();
                for k in 0..n {
                    values[at(k)] = values[at(k)] - max - log_sum;
                }
            } else {
                for k in 0..n {
                    values[at(k)] = (values[at(k)] - max).exp() / sum;
                }
            }
        }
    }
}

/// Layer normalization of every run of the last `norm` values, in place:
/// `(x - mean) / sqrt(var + epsilon) * scale + bias` with `scale` and
/// `bias` (`norm` values each) already broadcast to the normalized shape.
pub fn layer_norm_in_place(
    values: &mut [f32],
    norm: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    epsilon: f32,
) {
    if norm == 0 {
        return;
    }
    for group in values.chunks_exact_mut(norm) {
        let mean = group.iter().map(|&v| v as f64).sum::<f64>() / norm as f64;
        let var = group
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / norm as f64;
        let inv = 1.0 / (var + epsilon as f64).sqrt();
        for (j, v) in group.iter_mut().enumerate() {
            let normed = ((*v as f64 - mean) * inv) as f32;
            *v = normed * scale[j] + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// BatchNormalization in inference mode over channel axis 1 of `x`.
pub fn batch_norm(
    x: &Tensor,
    scale: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f32,
) -> Tensor {
    let values = x.as_f32().expect("float checked at load");
    let (outer, channels, inner) = split_at_axis(&x.shape, 1);
    let mut out = Vec::with_capacity(values.len());
    for o in 0..outer {
        for c in 0..channels {
            let start = (o * channels + c) * inner;
            for &v in &values[start..start + inner] {
                out.push((v - mean[c]) / (var[c] + epsilon).sqrt() * scale[c] + bias[c]);
            }
        }
    }
    Tensor::f32(x.shape.clone(), out)
}

/// numpy's matmul: rank-1 operands are promoted (and the added dimension
/// dropped again); leading dimensions broadcast.
pub fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    let (av, bv) = (
        a.as_f32().expect("float checked at load"),
        b.as_f32().expect("float checked at load"),
    );
    let mut sa = a.shape.clone();
    let mut sb = b.shape.clone();
    let (a_vec, b_vec) = (sa.len() == 1, sb.len() == 1);
    if a_vec {
        sa.insert(0, 1);
    }
    if b_vec {
        sb.push(1);
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    debug_assert_eq!(k, sb[sb.len() - 2]);
    let batch =
        broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2]).expect("shapes checked at load");
    let batches: usize = batch.iter().product();
    // Which matrix of a and b each output matrix reads: broadcast the
    // matrix indices as values of shape batch.
    let index_of = |shape: &[usize]| -> Vec<usize> {
        let count: usize = shape.iter().product();
        let ids: Vec<usize> = (0..count).collect();
        broadcast_map(&ids, shape, &[0usize], &[], &batch, |x, _| x)
    };
    let (ia, ib) = (index_of(&sa[..sa.len() - 2]), index_of(&sb[..sb.len() - 2]));
    let mut out = vec![0.0f32; batches * m * n];
    for t in 0..batches {
        let am = &av[ia[t] * m * k..(ia[t] + 1) * m * k];
        let bm = &bv[ib[t] * k * n..(ib[t] + 1) * k * n];
        let om = &mut out[t * m * n..(t + 1) * m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for p in 0..k {
                    acc += am[i * k + p] * bm[p * n + j];
                }
                om[i * n + j] = acc;
            }
        }
    }
    let mut shape = batch;
    if !a_vec {
        shape.push(m);
    }
    if !b_vec {
        shape.push(n);
    }
    Tensor::f32(shape, out)
}

/// `alpha * A' B' + beta * C` with `A'`, `B'` transposed as asked and `C`
/// broadcast to the result.
pub fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Tensor {
    let a = if trans_a {
        transpose(a, &[1, 0])
    } else {
        a.clone()
    };
    let b = if trans_b {
        transpose(b, &[1, 0])
    } else {
        b.clone()
    };
    let product = matmul(&a, &b);
    let shape = product.shape.clone();
    let mut values = product.as_f32().unwrap().to_vec();
    let bias = c.map(|c| expand(c, &shape));
    for (i, v) in values.iter_mut().enumerate() {
        *v *= alpha;
        if let Some(bias) = &bias {
            *v += beta * bias.as_f32().expect("float checked at load")[i];
        }
    }
    Tensor::f32(shape, values)
}

/// numpy's `take` along `axis`; negative indices count from the end.
pub fn gather(data: &Tensor, indices: &Tensor, axis: usize) -> Result<Tensor, String> {
    let idx = indices.as_i64().expect("integer indices checked at load");
    let (outer, n, inner) = split_at_axis(&data.shape, axis);
    let mut rows = Vec::with_capacity(idx.len());
    for (at, &i) in idx.iter().enumerate() {
        let r = if i < 0 { i + n as i64 } else { i };
        if r < 0 || r >= n as i64 {
            return Err(format!(
                "index {i} (entry {at} of the indices) is out of range for a dimension of {n}"
            ));
        }
        rows.push(r as usize);
    }
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    fn take<T: Copy>(v: &[T], outer: usize, n: usize, inner: usize, rows: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * rows.len() * inner);
        for o in 0..outer {
            for &r in rows {
                let start = (o * n + r) * inner;
                out.extend_from_slice(&v[start..start + inner]);
            }
        }
        out
    }
    Ok(match &data.data {
        Data::F32(v) => Tensor::f32(shape, take(v, outer, n, inner, &rows)),
        Data::I64(v) => Tensor::i64(shape, take(v, outer, n, inner, &rows)),
    })
}

/// Tensors of one type joined along `axis`.
pub fn concat(parts: &[&Tensor], axis: usize) -> Tensor {
    let mut shape = parts[0].shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let outer: usize = shape[..axis].iter().product();
    fn join<T: Copy>(parts: &[&[T]], blocks: &[usize], outer: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(blocks.iter().sum::<usize>() * outer);
        for o in 0..outer {
            for (p, &block) in parts.iter().zip(blocks) {
                out.extend_from_slice(&p[o * block..(o + 1) * block]);
            }
        }
        out
    }
    let blocks: Vec<usize> = parts
        .iter()
        .map(|p| p.shape[axis..].iter().product())
        .collect();
    match parts[0].dtype() {
        DType::F32 => {
            let v: Vec<&[f32]> = parts.iter().map(|p| p.as_f32().unwrap()).collect();
            Tensor::f32(shape, join(&v, &blocks, outer))
        }
        DType::I64 => {
            let v: Vec<&[i64]> = parts.iter().map(|p| p.as_i64().unwrap()).collect();
            Tensor::i64(shape, join(&v, &blocks, outer))
        }
    }
}

/// Output dimension `i` is input dimension `perm[i]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Tensor {
    let rank = x.shape.len();
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * x.shape[d + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    fn permute<T: Copy>(v: &[T], shape: &[usize], strides: &[usize]) -> Vec<T> {
        let total: usize = shape.iter().product();
        let mut out = Vec::with_capacity(total);
        if total == 0 {
            return out;
        }
        let mut index = vec![0usize; shape.len()];
        let mut offset = 0usize;
        for _ in 0..total {
            out.push(v[offset]);
            for d in (0..shape.len()).rev() {
                index[d] += 1;
                offset += strides[d];
                if index[d] < shape[d] {
                    break;
                }
                offset -= strides[d] * shape[d];
                index[d] = 0;
            }
        }
        out
    }
    match &x.data {
        Data::F32(v) => Tensor::f32(shape.clone(), permute(v, &shape, &strides)),
        Data::I64(v) => Tensor::i64(shape.clone(), permute(v, &shape, &strides)),
    }
}

/// The shape after reducing `axes` (sorted, distinct).
pub fn reduced_shape(shape: &[usize], axes: &[usize], keep_dims: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(shape.len());
    for (d, &n) in shape.iter().enumerate() {
        if axes.contains(&d) {
            if keep_dims {
                out.push(1);
            }
        } else {
            out.push(n);
        }
    }
    out
}

/// ReduceSum or ReduceMean over `axes` (sorted, distinct), summing in the
/// order of the input.
pub fn reduce(x: &Tensor, axes: &[usize], keep_dims: bool, op: ReduceOp) -> Tensor {
    let kept: Vec<usize> = (0..x.shape.len())
        .map(|d| if axes.contains(&d) { 1 } else { x.shape[d] })
        .collect();
    let shape = reduced_shape(&x.shape, axes, keep_dims);
    let count: usize = axes.iter().map(|&d| x.shape[d]).product();
    let ids: Vec<usize> = (0..kept.iter().product()).collect();
    // For every input element, the output element it adds into.
    let target = broadcast_map(&ids, &kept, &[0usize], &[], &x.shape, |i, _| i);
    match &x.data {
        Data::F32(v) => {
            let mut out = vec![0.0f32; ids.len()];
            for (&t, &val) in target.iter().zip(v) {
                out[t] += val;
            }
            if op == ReduceOp::Mean && count > 0 {
                for o in &mut out {
                    *o /= count as f32;
                }
            }
            Tensor::f32(shape, out)
        }
        Data::I64(v) => {
            let mut out = vec![0i64; ids.len()];
            for (&t, &val) in target.iter().zip(v) {
                out[t] = out[t].wrapping_add(val);
            }
            if op == ReduceOp::Mean && count > 0 {
                for o in &mut out {
                    *o /= count as i64;
                }
            }
            Tensor::i64(shape, out)
        }
    }
}

/// The index of the largest value along `axis` (the first or, with
/// `last`, the last of equal ones).
pub fn argmax(x: &Tensor, axis: usize, keep_dims: bool, last: bool) -> Tensor {
    let (outer, n, inner) = split_at_axis(&x.shape, axis);
    let values = x.to_f32_vec();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| values[o * n * inner + k * inner + i];
            let mut best = 0usize;
            for k in 1..n {
                let better = if last {
                    at(k) >= at(best)
                } else {
                    at(k) > at(best)
                };
                if better {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    Tensor::i64(reduced_shape(&x.shape, &[axis], keep_dims), out)
}

/// Cast to ONNX element type `to`; integers narrower than int64 wrap as in
/// C, floats to integers truncate toward zero.
pub fn cast(x: &Tensor, to: i32) -> Tensor {
    let shape = x.shape.clone();
    if to == data_type::FLOAT {
        return Tensor::f32(shape, x.to_f32_vec());
    }
    let wide = x.to_i64_vec();
    let narrow = |f: fn(i64) -> i64| -> Tensor {
        let v = match &x.data {
            // A float goes straight to the narrow type (saturating), as
            // onnxruntime's static_cast does for values in range.
            Data::F32(v) => v.iter().map(|&x| f(x as i64)).collect(),
            Data::I64(_) => wide.iter().map(|&x| f(x)).collect(),
        };
        Tensor::i64(shape.clone(), v)
    };
    match to {
        data_type::INT32 => narrow(|v| v as i32 as i64),
        data_type::INT16 => narrow(|v| v as i16 as i64),
        data_type::INT8 => narrow(|v| v as i8 as i64),
        data_type::UINT8 => narrow(|v| v as u8 as i64),
        data_type::UINT16 => narrow(|v| v as u16 as i64),
        data_type::UINT32 => narrow(|v| v as u32 as i64),
        _ => Tensor::i64(shape, wide),
    }
}

/// Values limited to `[lo, hi]` (either bound optional).
pub fn clip(x: &Tensor, lo: Option<&Tensor>, hi: Option<&Tensor>) -> Tensor {
    match &x.data {
        Data::F32(v) => {
            let lo = lo.map_or(f32::NEG_INFINITY, |t| t.to_f32_vec()[0]);
            let hi = hi.map_or(f32::INFINITY, |t| t.to_f32_vec()[0]);
            Tensor::f32(
                x.shape.clone(),
                v.iter().map(|&x| clip_one(x, lo, hi)).collect(),
            )
        }
        Data::I64(v) => {
            let lo = lo.map_or(i64::MIN, |t| t.to_i64_vec()[0]);
            let hi = hi.map_or(i64::MAX, |t| t.to_i64_vec()[0]);
            Tensor::i64(
                x.shape.clone(),
                v.iter().map(|&x| x.max(lo).min(hi)).collect(),
            )
        }
    }
}

#[inline]
pub fn clip_one(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// A tensor of `shape` holding `value`'s single element everywhere.
pub fn fill(shape: Vec<usize>, value: &Tensor) -> Tensor {
    let n = shape.iter().product();
    match &value.data {
        Data::F32(v) => Tensor::f32(shape, vec![v[0]; n]),
        Data::I64(v) => Tensor::i64(shape, vec![v[0]; n]),
    }
}
