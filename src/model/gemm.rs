//! Dense layers on AVX-512: `out = bias + input x weight^T` for a block of
//! rows, with the weights packed once per layer into panels of [`NR`]
//! outputs (each input coordinate's [`NR`] weights side by side) and a
//! register tile of [`MR`] rows x [`NR`] outputs: 24 of the 32 zmm
//! registers hold sums, two hold the panel's weights for one coordinate,
//! and each row's input value is broadcast from memory into its multiply-add.
//!
//! Every output is `bias[o]` followed by one fused multiply-add per input
//! coordinate in order, whatever the tile, block or thread it falls in, so
//! a row scores the same wherever it lies in a chunk.

// AVX-512 intrinsics are stable from Rust 1.89, past the crate's 1.85: the
// kernel builds with the toolchain the project uses and runs only where
// `available` says so.
#![allow(clippy::incompatible_msrv)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::simd::{self, Level};
use super::sparse;

/// Outputs per panel: two zmm registers.
pub(crate) const NR: usize = 32;
/// Rows per register tile.
pub(crate) const MR: usize = 12;

/// A layer's weights as the kernels read them, each form built at its
/// first use: for this kernel panel `p` holds, for each input coordinate
/// `k`, the weights of outputs `p * NR .. p * NR + NR` (zeros past
/// `out_dim`), the bias padded alike; for [`sparse`] the same in groups of
/// [`sparse::GROUP`] outputs.
#[derive(Default)]
pub struct Packed {
    panels: OnceLock<Box<(Aligned, Vec<f32>)>>,
    groups: OnceLock<Box<sparse::Groups>>,
}

impl Clone for Packed {
    /// A copy packs again at its first use (it is cheap next to scoring).
    fn clone(&self) -> Self {
        Packed::default()
    }
}

impl PartialEq for Packed {
    /// Derived from the weights, so never a difference between two layers.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.panels.get().is_some() {
            "Packed"
        } else {
            "Packed(not yet)"
        })
    }
}

impl Packed {
    /// The panels and padded bias of `weight` (`[out_dim, in_dim]`).
    fn get(&self, weight: &[f32], bias: &[f32], in_dim: usize) -> (&[f32], &[f32]) {
        let (w, b) = &**self
            .panels
            .get_or_init(|| Box::new(pack_panels(weight, bias, in_dim, NR)));
        (w.as_slice(), b)
    }

    /// The groups of [`sparse`]; `None` when a weight is not finite.
    pub(crate) fn groups(
        &self,
        weight: &[f32],
        bias: &[f32],
        in_dim: usize,
    ) -> Option<(&[f32], &[f32])> {
        let groups = self
            .groups
            .get_or_init(|| Box::new(sparse::pack(weight, bias, in_dim)));
        groups
            .as_ref()
            .as_ref()
            .map(|(w, b)| (w.as_slice(), &b[..]))
    }
}

/// A cache line of floats: the packed weights start on one, so that no
/// register load of them straddles two lines (which halves the rate at
/// which the kernels read weights on Zen 4).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Floats stored from the start of a cache line.
pub(crate) struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

impl Aligned {
    fn zeros(len: usize) -> Aligned {
        Aligned {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is 16 f32 without padding (repr(C), size 64), so
        // the lines are `16 * lines.len() >= len` contiguous floats.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

/// `weight` (`[out_dim, in_dim]`) in panels of `width` outputs: panel `p`
/// holds, for each input coordinate `k`, the weights of outputs
/// `p * width ..` side by side (zeros past `out_dim`); the bias padded to
/// whole panels.
pub(crate) fn pack_panels(
    weight: &[f32],
    bias: &[f32],
    in_dim: usize,
    width: usize,
) -> (Aligned, Vec<f32>) {
    let out_dim = bias.len();
    let panels = out_dim.div_ceil(width);
    let mut packed = Aligned::zeros(panels * in_dim * width);
    let w = packed.as_mut_slice();
    for o in 0..out_dim {
        let (p, lane) = (o / width, o % width);
        for k in 0..in_dim {
            w[(p * in_dim + k) * width + lane] = weight[o * in_dim + k];
        }
    }
    let mut b = vec![0.0f32; panels * width];
    b[..out_dim].copy_from_slice(bias);
    (packed, b)
}

/// Whether [`dense`] runs on this CPU.
pub(crate) fn available() -> bool {
    simd::level() == Level::Avx512
}

/// `out[r * out_dim + o] = bias[o] + input[r] . weight[o]` for the `n_rows`
/// rows of `input` (`[n_rows, in_dim]`), `out_dim = bias.len()`; then
/// `max(0, _)` when `relu`.
///
/// # Panics
/// When [`available`] is false or the lengths disagree.
pub(crate) fn dense(
    packed: &Packed,
    weight: &[f32],
    bias: &[f32],
    input: &[f32],
    n_rows: usize,
    relu: bool,
    out: &mut [f32],
) {
    assert!(available(), "gemm::dense needs AVX-512F");
    let out_dim = bias.len();
    assert!(out_dim > 0, "a layer without outputs");
    let in_dim = weight.len() / out_dim;
    assert_eq!(weight.len(), in_dim * out_dim);
    assert_eq!(input.len(), n_rows * in_dim);
    assert_eq!(out.len(), n_rows * out_dim);
    let (w, b) = packed.get(weight, bias, in_dim);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (asserted above); the lengths asserted
    // above and the panel layout keep every access inside the slices.
    unsafe {
        dense_avx512(w, b, input, (n_rows, in_dim, out_dim), relu, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, b, input, relu, out);
        unreachable!("AVX-512 on a CPU that is not x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unused_unsafe)]
unsafe fn dense_avx512(
    w: &[f32],
    b: &[f32],
    input: &[f32],
    (n_rows, in_dim, out_dim): (usize, usize, usize),
    relu: bool,
    out: &mut [f32],
) {
    let panels = out_dim.div_ceil(NR);
    let (pa, po) = (input.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    while r < n_rows {
        let m = MR.min(n_rows - r);
        for p in 0..panels {
            let cols = NR.min(out_dim - p * NR);
            // SAFETY: rows r..r + m of `input` and `out` exist, panel p of
            // `w` holds in_dim x NR floats and `b` NR from p * NR; the tile
            // writes `cols` outputs per row from column p * NR.
            unsafe {
                let tile = Tile {
                    a: pa.add(r * in_dim),
                    lda: in_dim,
                    k: in_dim,
                    w: w.as_ptr().add(p * in_dim * NR),
                    bias: b.as_ptr().add(p * NR),
                    out: po.add(r * out_dim + p * NR),
                    ldo: out_dim,
                    cols,
                    relu,
                };
                match m {
                    12 => tile.run::<12>(),
                    11 => tile.run::<11>(),
                    10 => tile.run::<10>(),
                    9 => tile.run::<9>(),
                    8 => tile.run::<8>(),
                    7 => tile.run::<7>(),
                    6 => tile.run::<6>(),
                    5 => tile.run::<5>(),
                    4 => tile.run::<4>(),
                    3 => tile.run::<3>(),
                    2 => tile.run::<2>(),
                    _ => tile.run::<1>(),
                }
            }
        }
        r += m;
    }
}

/// One register tile's operands: rows of `a` (stride `lda`, `k` values
/// each), a weight panel (`k` x [`NR`]), its bias, and where the outputs go
/// (stride `ldo`, the first `cols` of [`NR`]), relu or not.
#[cfg(target_arch = "x86_64")]
struct Tile {
    a: *const f32,
    lda: usize,
    k: usize,
    w: *const f32,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
    cols: usize,
    relu: bool,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// `M` rows of the tile (at most [`MR`]).
    ///
    /// # Safety
    /// AVX-512F must be present and the pointers valid for the extents above.
    #[target_feature(enable = "avx512f")]
    #[allow(unused_unsafe)]
    #[inline]
    unsafe fn run<const M: usize>(&self) {
        unsafe {
            let b0 = _mm512_loadu_ps(self.bias);
            let b1 = _mm512_loadu_ps(self.bias.add(16));
            let mut acc = [[b0, b1]; M];
            let mut w = self.w;
            for kk in 0..self.k {
                let w0 = _mm512_loadu_ps(w);
                let w1 = _mm512_loadu_ps(w.add(16));
                for (r, sums) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*self.a.add(r * self.lda + kk));
                    sums[0] = _mm512_fmadd_ps(x, w0, sums[0]);
                    sums[1] = _mm512_fmadd_ps(x, w1, sums[1]);
                }
                w = w.add(NR);
            }
            if self.relu {
                // max(x, 0) is 0 for a NaN x, as `f32::max` is.
                let zero = _mm512_setzero_ps();
                for sums in acc.iter_mut() {
                    sums[0] = _mm512_max_ps(sums[0], zero);
                    sums[1] = _mm512_max_ps(sums[1], zero);
                }
            }
            let (m0, m1) = lane_masks(self.cols);
            for (r, sums) in acc.iter().enumerate() {
                let o = self.out.add(r * self.ldo);
                _mm512_mask_storeu_ps(o, m0, sums[0]);
                _mm512_mask_storeu_ps(o.add(16), m1, sums[1]);
            }
        }
    }
}

/// Store masks for the first `cols` (at most [`NR`]) lanes of two registers.
#[cfg(target_arch = "x86_64")]
fn lane_masks(cols: usize) -> (__mmask16, __mmask16) {
    let bits = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    };
    (bits(cols), bits(cols.saturating_sub(16)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dense;
    use crate::model::layers::{Kernel, dense_block_on};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    fn layer(in_dim: usize, out_dim: usize) -> Dense {
        Dense {
            name: "t".into(),
            in_dim,
            out_dim,
            weight: values(in_dim * out_dim, 11),
            bias: values(out_dim, 12),
            packed: Packed::default(),
        }
    }

    /// Shapes with every kind of tail: rows past a whole tile, outputs past
    /// a whole panel or short of one, and inputs of any length.
    const SHAPES: [(usize, usize, usize); 10] = [
        (0, 8, 5),
        (1, 1, 5),
        (5, 3, 16),
        (12, 64, 32),
        (13, 64, 33),
        (25, 70, 70),
        (24, 256, 256),
        (7, 17, 47),
        (31, 64, 128),
        (2, 5, 96),
    ];

    #[test]
    fn dense_is_the_bias_then_one_fused_multiply_add_per_input_in_order() {
        if !available() {
            eprintln!(
                "dense_is_the_bias_then_one_fused_multiply_add_per_input_in_order: no AVX-512F on this CPU, sgemm runs instead"
            );
            return;
        }
        for (n, in_dim, out_dim) in SHAPES {
            let l = layer(in_dim, out_dim);
            let input = values(n * in_dim, 13);
            let mut out = vec![f32::NAN; n * out_dim];
            dense(&l.packed, &l.weight, &l.bias, &input, n, false, &mut out);
            for r in 0..n {
                for o in 0..out_dim {
                    let mut want = l.bias[o];
                    for k in 0..in_dim {
                        want = input[r * in_dim + k].mul_add(l.weight[o * in_dim + k], want);
                    }
                    assert_eq!(
                        out[r * out_dim + o].to_bits(),
                        want.to_bits(),
                        "({n},{in_dim},{out_dim}) row {r} output {o}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_dense_path_this_cpu_runs_agrees() {
        let kernels: Vec<Kernel> = [Kernel::Sgemm, Kernel::Avx512, Kernel::Avx512Sparse]
            .into_iter()
            .filter(|&k| k == Kernel::Sgemm || available())
            .collect();
        eprintln!(
            "every_dense_path_this_cpu_runs_agrees: {kernels:?} (simd level {:?})",
            simd::level()
        );
        for (n, in_dim, out_dim) in SHAPES {
            let l = layer(in_dim, out_dim);
            // Half the inputs zero, so that the sparse kernel runs.
            let input: Vec<f32> = values(n * in_dim, 14).iter().map(|v| v.max(0.0)).collect();
            for (&kernel, relu) in kernels.iter().flat_map(|k| [(k, false), (k, true)]) {
                // A buffer left from a block of the same size: the kernels
                // must write every output over what it holds.
                let mut out = vec![f32::NAN; n * out_dim];
                dense_block_on(kernel, &l, &input, n, relu, &mut out);
                assert_eq!(out.len(), n * out_dim);
                for r in 0..n {
                    for o in 0..out_dim {
                        let want: f64 = l.bias[o] as f64
                            + (0..in_dim)
                                .map(|k| {
                                    input[r * in_dim + k] as f64 * l.weight[o * in_dim + k] as f64
                                })
                                .sum::<f64>();
                        let want = if relu { want.max(0.0) } else { want };
                        let got = out[r * out_dim + o] as f64;
                        assert!(
                            (got - want).abs()
                                <= 1e-5 * (1.0 + want.abs()) * (in_dim as f64).sqrt(),
                            "{kernel:?} relu {relu} ({n},{in_dim},{out_dim}) row {r} output {o}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
