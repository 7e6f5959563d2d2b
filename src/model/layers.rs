//! Stacks of dense layers as `torch.nn.Linear` stores them, shared by every
//! family built from them: the reference (one row at a time), the fast path
//! (blocks of rows through sgemm, or dot products where [`simd`] runs), the
//! output activations, and what a stack costs and looks like. sgemm
//! (`matrixmultiply`) picks its own kernel at run time: AVX-512, AVX2 + FMA,
//! NEON on aarch64, else portable.

use std::cell::RefCell;

use matrixmultiply::sgemm;
use serde::{Deserialize, Serialize};

use super::{gemm, simd, sparse};

/// Dense layers with at most this many outputs are dot products per row
/// (when [`simd`] runs here): sgemm would pack the whole input block for them.
const DOT_MAX_OUTPUTS: usize = 4;

/// What follows the last layer of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputActivation {
    Sigmoid,
    Softmax,
    None,
}

/// `output = ...` in `[model]`: the name of each activation.
pub(crate) const OUTPUT_ACTIVATIONS: &[(&str, OutputActivation)] = &[
    ("sigmoid", OutputActivation::Sigmoid),
    ("softmax", OutputActivation::Softmax),
    ("none", OutputActivation::None),
];

/// One dense layer, laid out as `torch.nn.Linear` stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub name: String,
    pub in_dim: usize,
    pub out_dim: usize,
    /// `[out_dim, in_dim]`, row-major.
    pub weight: Vec<f32>,
    /// `[out_dim]`.
    pub bias: Vec<f32>,
    /// The weights as the AVX-512 kernel reads them, packed at the first
    /// use (`Default::default()` when building a layer).
    pub packed: gemm::Packed,
}

/// Applies `activation` to one row of outputs, in place.
pub(crate) fn apply_output(activation: OutputActivation, out: &mut [f32]) {
    match activation {
        OutputActivation::None => {}
        OutputActivation::Sigmoid => {
            for v in out.iter_mut() {
                *v = 1.0 / (1.0 + (-*v).exp());
            }
        }
        OutputActivation::Softmax => {
            let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for v in out.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in out.iter_mut() {
                *v /= sum;
            }
        }
    }
}

/// Outputs the reference sums side by side: each is its own chain of
/// additions (bias, then inputs in order), so the bits are those of one
/// output at a time, but the CPU overlaps the chains' latencies.
const REFERENCE_LANES: usize = 8;

/// The reference's dense layer: each output is its bias plus the products
/// `w[i] * x[i]` added one by one in input order (no fused multiply-add),
/// whatever the order the outputs are computed in.
fn dense_one(layer: &Dense, input: &[f32]) -> Vec<f32> {
    let (in_dim, out_dim) = (layer.in_dim, layer.out_dim);
    let mut out = Vec::with_capacity(out_dim);
    let mut o = 0;
    while o + REFERENCE_LANES <= out_dim {
        let rows: [&[f32]; REFERENCE_LANES] =
            std::array::from_fn(|k| &layer.weight[(o + k) * in_dim..(o + k + 1) * in_dim]);
        let mut acc: [f32; REFERENCE_LANES] = std::array::from_fn(|k| layer.bias[o + k]);
        for (i, x) in input[..in_dim].iter().enumerate() {
            for k in 0..REFERENCE_LANES {
                acc[k] += rows[k][i] * x;
            }
        }
        out.extend_from_slice(&acc);
        o += REFERENCE_LANES;
    }
    for o in o..out_dim {
        let w = &layer.weight[o * in_dim..(o + 1) * in_dim];
        let mut acc = layer.bias[o];
        for i in 0..in_dim {
            acc += w[i] * input[i];
        }
        out.push(acc);
    }
    out
}

/// Dense layers with relu between them (not after the last).
pub(crate) fn layers_one(layers: &[Dense], input: Vec<f32>) -> Vec<f32> {
    let mut x = input;
    for (n, layer) in layers.iter().enumerate() {
        x = dense_one(layer, &x);
        if n + 1 < layers.len() {
            for v in x.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }
    x
}

/// `input` `[n_rows, layer.in_dim]` through one dense layer into `out`
/// `[n_rows, layer.out_dim]`, then relu when `relu`, applied as the kernel
/// stores. ONNX graphs' fused dense chains run here. A layer with relu after
/// it goes to the sparse kernel where there is one, which takes each block
/// of rows whose input is mostly zeros (as a relu before it leaves) and
/// leaves the others to the dense kernel.
pub(crate) fn dense_block(
    layer: &Dense,
    input: &[f32],
    n_rows: usize,
    relu: bool,
    out: &mut Vec<f32>,
) {
    dense_block_on(Kernel::best(relu), layer, input, n_rows, relu, out)
}

/// Which kernel [`dense_block_on`] runs for layers wider than a few outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// sgemm.
    Sgemm,
    /// [`gemm`] (AVX-512).
    Avx512,
    /// [`sparse`] for a layer followed by relu whose input has many zeros
    /// (AVX-512; [`gemm`] for the layers and sub-blocks it does not take).
    Avx512Sparse,
}

impl Kernel {
    /// The fastest this CPU runs, for input that is a relu's output or not.
    pub(crate) fn best(relu_input: bool) -> Kernel {
        match (gemm::available(), relu_input) {
            (false, _) => Kernel::Sgemm,
            (true, false) => Kernel::Avx512,
            (true, true) => Kernel::Avx512Sparse,
        }
    }
}

/// One dense layer, then relu when `relu`, as [`dense_block`]; with
/// `kernel` (an AVX-512 one only where the CPU has it; relu applied as it
/// stores) for layers wider than a few outputs.
pub(crate) fn dense_block_on(
    kernel: Kernel,
    layer: &Dense,
    input: &[f32],
    n_rows: usize,
    relu: bool,
    out: &mut Vec<f32>,
) {
    // Every path writes every output: the buffer is only resized.
    out.resize(n_rows * layer.out_dim, 0.0);
    dense_block_into(kernel, layer, input, n_rows, relu, out);
}

/// [`dense_block_on`] into `out`, exactly `n_rows * layer.out_dim` long,
/// every value of which it writes.
fn dense_block_into(
    kernel: Kernel,
    layer: &Dense,
    input: &[f32],
    n_rows: usize,
    relu: bool,
    out: &mut [f32],
) {
    assert_eq!(out.len(), n_rows * layer.out_dim);
    let dots = layer.out_dim <= DOT_MAX_OUTPUTS && layer.in_dim % simd::LANES == 0;
    if kernel != Kernel::Sgemm && !dots && layer.in_dim > 0 && layer.out_dim > 0 {
        let (w, b, packed) = (&layer.weight, &layer.bias, &layer.packed);
        let sparse = kernel == Kernel::Avx512Sparse
            && relu
            && sparse::fits(layer.in_dim, layer.out_dim)
            && sparse::dense_relu(sparse::sparse_limit(), packed, w, b, input, n_rows, out);
        if !sparse {
            gemm::dense(packed, w, b, input, n_rows, relu, out);
        }
        return;
    }
    dense_block_sgemm(layer, input, n_rows, out);
    if relu {
        for v in out.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

fn dense_block_sgemm(layer: &Dense, input: &[f32], n_rows: usize, out: &mut [f32]) {
    if layer.out_dim == 0 {
        return;
    }
    for row in out.chunks_exact_mut(layer.out_dim) {
        row.copy_from_slice(&layer.bias);
    }
    if n_rows == 0 || layer.in_dim == 0 {
        return;
    }
    if layer.out_dim <= DOT_MAX_OUTPUTS && layer.in_dim % simd::LANES == 0 && simd::available() {
        simd::dense_dots(input, &layer.weight, &layer.bias, out, layer.out_dim);
        return;
    }
    debug_assert_eq!(input.len(), n_rows * layer.in_dim);
    debug_assert_eq!(layer.weight.len(), layer.out_dim * layer.in_dim);
    // SAFETY: `input` holds n_rows x in_dim values (row stride in_dim),
    // `weight` holds out_dim x in_dim (read transposed: row stride 1, column
    // stride in_dim) and `out` holds n_rows x out_dim (row stride out_dim);
    // every index sgemm forms lies inside those lengths.
    unsafe {
        sgemm(
            n_rows,
            layer.in_dim,
            layer.out_dim,
            1.0,
            input.as_ptr(),
            layer.in_dim as isize,
            1,
            layer.weight.as_ptr(),
            1,
            layer.in_dim as isize,
            1.0,
            out.as_mut_ptr(),
            layer.out_dim as isize,
            1,
        );
    }
}

/// The buffers a block's layer outputs go through, kept from block to
/// block: allocating them per block (a megabyte each for a 256-wide layer
/// of 1024 rows) made the heap grow and shrink on every block, which cost
/// about a third of the mlp's throughput. They only grow: a block writes
/// the front of each, so a narrow layer's output (an mlp's last) does not
/// shorten a buffer the next block's wide layer would zero again to lengthen
/// (240 KiB a block for the 256-wide mlp, 1.7% of a run's time).
#[derive(Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    y: Vec<f32>,
}

thread_local! {
    /// Each scoring thread's [`Scratch`], kept from call to call (at most
    /// two of the largest block's layer outputs a thread has scored): a
    /// fresh one per call zeroed its buffers on the call's first block.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `f` with this thread's [`Scratch`] (a fresh one if it is in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// A block of rows through `layers`, relu between layers (not after the
/// last); the result lives in `s`.
pub(crate) fn layers_block<'s>(
    layers: &[Dense],
    input: &[f32],
    n_rows: usize,
    s: &'s mut Scratch,
) -> &'s mut [f32] {
    let Some(last) = layers.last() else {
        s.x.clear();
        s.x.extend_from_slice(input);
        return &mut s.x;
    };
    let mut len = 0;
    for (n, layer) in layers.iter().enumerate() {
        let source: &[f32] = if n == 0 { input } else { &s.x[..len] };
        let relu = n + 1 < layers.len();
        let need = n_rows * layer.out_dim;
        if s.y.len() < need {
            s.y.resize(need, 0.0);
        }
        let out = &mut s.y[..need];
        dense_block_into(Kernel::best(n > 0), layer, source, n_rows, relu, out);
        std::mem::swap(&mut s.x, &mut s.y);
        len = need;
    }
    debug_assert_eq!(len, n_rows * last.out_dim);
    &mut s.x[..len]
}

pub(crate) fn layers_cost(layers: &[Dense]) -> u64 {
    layers
        .iter()
        .map(|l| l.in_dim as u64 * l.out_dim as u64)
        .sum()
}

/// `"68->128->64"` for a stack of layers.
pub(crate) fn layers_shape(layers: &[Dense]) -> String {
    let mut dims: Vec<String> = layers
        .first()
        .map(|l| l.in_dim.to_string())
        .into_iter()
        .collect();
    dims.extend(layers.iter().map(|l| l.out_dim.to_string()));
    dims.join("->")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output `o` of the reference as one chain: the bias, then each
    /// product rounded and added in input order.
    fn one_output(l: &Dense, input: &[f32], o: usize) -> f32 {
        let w = &l.weight[o * l.in_dim..(o + 1) * l.in_dim];
        let mut acc = l.bias[o];
        for (w, x) in w.iter().zip(input) {
            acc += w * x;
        }
        acc
    }

    #[test]
    fn the_reference_layer_keeps_each_outputs_own_order_of_additions() {
        // Outputs short of a lane group, a group and a rest, many groups;
        // values whose sums depend on the order, and a NaN and an infinity.
        for (in_dim, out_dim) in [(3, 5), (17, 8), (64, 13), (37, 67)] {
            let v = |n: usize, seed: u32| -> Vec<f32> {
                (0..n as u32)
                    .map(|i| {
                        let h = i.wrapping_mul(2_654_435_761).wrapping_add(seed);
                        ((h % 20_001) as f32 - 10_000.0) * 10f32.powi((h >> 20) as i32 % 7 - 3)
                    })
                    .collect()
            };
            let mut weight = v(in_dim * out_dim, 5);
            weight[in_dim + 1] = f32::NAN;
            weight[2 * in_dim] = f32::INFINITY;
            let l = Dense {
                name: "t".into(),
                in_dim,
                out_dim,
                weight,
                bias: v(out_dim, 9),
                packed: gemm::Packed::default(),
            };
            let input = v(in_dim, 13);
            let got = dense_one(&l, &input);
            for (o, g) in got.iter().enumerate() {
                let want = one_output(&l, &input, o);
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{in_dim}x{out_dim}: output {o}"
                );
            }
        }
    }

    #[test]
    fn a_kept_scratch_scores_each_block_as_a_fresh_one_whatever_came_before() {
        // Wide, narrow and wide again, blocks growing and shrinking: what
        // the buffers hold past a block's own outputs never shows in them.
        let v = |n: usize, seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| {
                    (i.wrapping_mul(2_654_435_761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0
                })
                .collect()
        };
        let dims = [8, 300, 3, 40, 1];
        let layers: Vec<Dense> = dims
            .windows(2)
            .enumerate()
            .map(|(n, d)| Dense {
                name: format!("l{n}"),
                in_dim: d[0],
                out_dim: d[1],
                weight: v(d[0] * d[1], 3 + n as u32),
                bias: v(d[1], 17 + n as u32),
                packed: gemm::Packed::default(),
            })
            .collect();
        let mut kept = Scratch::default();
        for (b, rows) in [240, 7, 300, 1, 240].into_iter().enumerate() {
            let input = v(rows * dims[0], 100 + b as u32);
            let want = layers_block(&layers, &input, rows, &mut Scratch::default()).to_vec();
            let got = layers_block(&layers, &input, rows, &mut kept);
            assert_eq!(got.len(), rows, "block {b}");
            assert_eq!(got, &want[..], "block {b} of {rows} rows");
        }
    }
}
