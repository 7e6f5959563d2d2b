//! One node on concrete tensors: what folding runs at load, and what the
//! reference path and the fast path's unfused nodes run per block of rows.

use super::infer::{permutation, shape_range};
use super::kernels;
use super::op::Op;
use super::tensor::Tensor;

/// `axis` (negative from the end) in `rank` dimensions; checked at load.
fn axis(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64) as usize
    } else {
        a as usize
    }
}

/// Runs `op` on `inputs` (`None`: an omitted optional input). `shape` is
/// the output shape the inference found, with the batch size of these
/// inputs filled in: the reshaping operators take it from there. Errors are
/// the ones only values can cause (an index out of range, an integer
/// division by zero).
pub fn eval(op: &Op, inputs: &[Option<&Tensor>], shape: &[usize]) -> Result<Tensor, String> {
    let x = || inputs[0].expect("input 1 checked at load");
    let at = |i: usize| inputs.get(i).copied().flatten();
    let out = match op {
        Op::Binary(b) => kernels::binary(*b, x(), at(1).unwrap())?,
        Op::Unary(u) => kernels::unary(*u, x()),
        Op::Softmax { axis: a, log } => {
            let t = x();
            let mut values = t.as_f32().unwrap().to_vec();
            kernels::softmax_in_place(&mut values, &t.shape, axis(*a, t.shape.len()), *log);
            Tensor::f32(t.shape.clone(), values)
        }
        Op::LayerNorm { axis: a, epsilon } => {
            let t = x();
            let ax = axis(*a, t.shape.len());
            let normalized = &t.shape[ax..];
            let norm: usize = normalized.iter().product();
            let scale = kernels::expand(at(1).unwrap(), normalized);
            let bias = at(2).map(|b| kernels::expand(b, normalized));
            let mut values = t.as_f32().unwrap().to_vec();
            kernels::layer_norm_in_place(
                &mut values,
                norm,
                scale.as_f32().unwrap(),
                bias.as_ref().map(|b| b.as_f32().unwrap()),
                *epsilon,
            );
            Tensor::f32(t.shape.clone(), values)
        }
        Op::BatchNorm { epsilon } => {
            let p = |i: usize| at(i).unwrap().as_f32().unwrap();
            kernels::batch_norm(x(), p(1), p(2), p(3), p(4), *epsilon)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => kernels::gemm(
            x(),
            at(1).unwrap(),
            at(2),
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
        ),
        Op::MatMul => kernels::matmul(x(), at(1).unwrap()),
        Op::Gather { axis: a } => {
            let t = x();
            kernels::gather(t, at(1).unwrap(), axis(*a, t.shape.len()))?
        }
        Op::Concat { axis: a } => {
            let parts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
            kernels::concat(&parts, axis(*a, parts[0].shape.len()))
        }
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity => {
            x().clone().reshaped(shape.to_vec())
        }
        Op::Transpose { perm } => {
            let t = x();
            let perm = permutation("", perm.as_deref(), t.shape.len()).expect("checked at load");
            kernels::transpose(t, &perm)
        }
        Op::Cast { to } => kernels::cast(x(), *to),
        Op::Clip => kernels::clip(x(), at(1), at(2)),
        Op::Reduce {
            op: kind,
            axes,
            keep_dims,
            noop_with_empty_axes,
        } => {
            let t = x();
            let listed = match (axes, at(1)) {
                (Some(a), _) => a.clone(),
                (None, Some(v)) => v.as_i64().expect("int64 axes checked at load").to_vec(),
                (None, None) => Vec::new(),
            };
            if listed.is_empty() && *noop_with_empty_axes {
                t.clone()
            } else {
                let mut axes: Vec<usize> = if listed.is_empty() {
                    (0..t.shape.len()).collect()
                } else {
                    listed.iter().map(|&a| axis(a, t.shape.len())).collect()
                };
                axes.sort_unstable();
                kernels::reduce(t, &axes, *keep_dims, *kind)
            }
        }
        Op::ArgMax {
            axis: a,
            keep_dims,
            select_last_index,
        } => {
            let t = x();
            kernels::argmax(t, axis(*a, t.shape.len()), *keep_dims, *select_last_index)
        }
        Op::Shape { start, end } => {
            let t = x();
            let (s, e) = shape_range(t.shape.len(), *start, *end);
            let dims: Vec<i64> = t.shape[s..e.max(s)].iter().map(|&d| d as i64).collect();
            Tensor::i64(vec![dims.len()], dims)
        }
        Op::Constant(t) => t.clone(),
        Op::ConstantOfShape { value } => kernels::fill(shape.to_vec(), value),
        Op::Ml(_) => return Err("ai.onnx.ml operators run on the rows only".into()),
    };
    debug_assert_eq!(
        out.shape,
        shape,
        "{} computed a shape the inference did not expect",
        op.onnx_name()
    );
    Ok(out)
}
