//! Dense layers followed by relu whose input has many zeros (the layers
//! after the first in an mlp: their input is the relu of the one before,
//! about half zeros), on AVX-512: each row multiplies only the weights of
//! its non-zero inputs.
//!
//! Every output is still `bias[o]` followed by one fused multiply-add per
//! non-zero input coordinate in order, then `max(0, _)`. With finite weights
//! a skipped `fma(±0, w, acc)` could only have turned an `acc` of `-0` into
//! `+0`, and the relu after the layer makes both `+0`: the outputs are those
//! of [`super::gemm`]'s kernel bit for bit. Layers with a weight that is not
//! finite (where `0 * inf` is NaN) are left to that kernel.
//!
//! The weights are packed in groups of [`GROUP`] outputs (eight zmm
//! registers of sums per row), and read in pieces of [`PIECE`] inputs (16 KiB,
//! which stays in the L1 cache while every row of a sub-block of
//! [`SUB_ROWS`] rows goes through it). Each row's non-zero inputs are listed
//! once per sub-block (value and coordinate, in order).

// AVX-512 intrinsics are stable from Rust 1.89, past the crate's 1.85 (as
// in `gemm`).
#![allow(clippy::incompatible_msrv)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::sync::atomic::{AtomicUsize, Ordering};

use super::gemm;

/// Outputs per weight group: eight zmm registers of sums.
pub(crate) const GROUP: usize = 128;
/// Inputs per piece of a group's weights (`PIECE * GROUP` floats: 16 KiB).
pub(crate) const PIECE: usize = 32;
/// Rows whose non-zero inputs are listed together and go through each piece.
pub(crate) const SUB_ROWS: usize = 32;
/// A sub-block runs here when at most this many sixteenths of its inputs
/// are non-zero, else on the dense kernel: the limit until a process sets
/// its own from a [`SparseTrial`] on its CPU ([`set_sparse_limit`]). Where
/// the dense kernel's multiply-adds are twice as fast for the same loads
/// (a core with two full-width 512-bit FMA units), the sparse kernel, which
/// is bound by its loads, only wins on sparser input.
pub(crate) const MAX_DENSITY_16THS: usize = 10;

/// The limit in force, in sixteenths (see [`MAX_DENSITY_16THS`]).
static LIMIT_16THS: AtomicUsize = AtomicUsize::new(MAX_DENSITY_16THS);

/// The density limit, in sixteenths of a sub-block's inputs, at or under
/// which a sub-block runs on the sparse kernel.
pub fn sparse_limit() -> usize {
    LIMIT_16THS.load(Ordering::Relaxed)
}

/// Sets [`sparse_limit`] for this process (16 and above: every sub-block
/// sparse; 0: only sub-blocks whose inputs are all zero). The outputs are
/// the same bit for bit whichever kernel runs a sub-block; only the time
/// differs.
pub fn set_sparse_limit(sixteenths: usize) {
    LIMIT_16THS.store(sixteenths.min(16), Ordering::Relaxed);
}

/// Inputs and outputs of a [`SparseTrial`]'s layer.
const TRIAL_DIM: usize = 256;
/// Rows of a [`SparseTrial`].
const TRIAL_ROWS: usize = 256;

/// A layer of [`TRIAL_DIM`] inputs and outputs and [`TRIAL_ROWS`] rows of
/// input, half of whose values are zero (as after a relu), to time the two
/// kernels on: whoever may read a clock times [`SparseTrial::run`] each way
/// and passes the times to [`sparse_limit_from`].
pub struct SparseTrial {
    packed: gemm::Packed,
    weight: Vec<f32>,
    bias: Vec<f32>,
    input: Vec<f32>,
    out: Vec<f32>,
}

impl SparseTrial {
    /// `None` where the sparse kernel does not run (no AVX-512).
    pub fn new() -> Option<SparseTrial> {
        if !fits(TRIAL_DIM, TRIAL_DIM) {
            return None;
        }
        let mut rng = crate::splitmix::SplitMix64(0x0074_7269_616c);
        let mut uniform = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let weight = (0..TRIAL_DIM * TRIAL_DIM).map(|_| uniform()).collect();
        let bias = (0..TRIAL_DIM).map(|_| uniform()).collect();
        let input = (0..TRIAL_ROWS * TRIAL_DIM)
            .map(|_| uniform().max(0.0))
            .collect();
        Some(SparseTrial {
            packed: gemm::Packed::default(),
            weight,
            bias,
            input,
            out: vec![0.0; TRIAL_ROWS * TRIAL_DIM],
        })
    }

    /// Scores the rows once: every sub-block on the sparse kernel when
    /// `sparse`, else every one on the dense kernel.
    pub fn run(&mut self, sparse: bool) {
        let limit = if sparse { 16 } else { 0 };
        let (w, b, x) = (&self.weight, &self.bias, &self.input);
        dense_relu(limit, &self.packed, w, b, x, TRIAL_ROWS, &mut self.out);
    }
}

/// The sparse kernel is given a density only where the trial has it at
/// most this fraction of the dense kernel's time: near the break-even the
/// trial (a small layer, its weights hot, its zeros uniform) favours the
/// sparse kernel over what a real layer's blocks get from it.
const SPARSE_MARGIN: f64 = 0.9;

/// The limit at which the sparse kernel beats the dense one, from a
/// [`SparseTrial`]'s time on each (seconds, any unit alike): the sparse
/// kernel's time grows with the density and the dense kernel's does not,
/// the trial's density is eight sixteenths, and the sparse kernel must win
/// by [`SPARSE_MARGIN`]. [`MAX_DENSITY_16THS`] when a time is not a
/// positive number.
pub fn sparse_limit_from(sparse: f64, dense: f64) -> usize {
    if !(sparse > 0.0 && dense > 0.0 && sparse.is_finite() && dense.is_finite()) {
        return MAX_DENSITY_16THS;
    }
    ((8.0 * SPARSE_MARGIN * dense / sparse) as usize).min(16)
}

/// A layer's weights in groups of [`GROUP`] outputs (for each input
/// coordinate the group's weights side by side, zeros past `out_dim`) and
/// its bias padded alike; `None` when a weight is not finite.
pub(crate) type Groups = Option<(gemm::Aligned, Vec<f32>)>;

pub(crate) fn pack(weight: &[f32], bias: &[f32], in_dim: usize) -> Groups {
    if !weight.iter().all(|w| w.is_finite()) {
        return None;
    }
    Some(gemm::pack_panels(weight, bias, in_dim, GROUP))
}

/// Whether [`dense_relu`] takes a layer of these sizes: as wide as a group
/// (a narrower one would waste most of the group's sums).
pub(crate) fn fits(in_dim: usize, out_dim: usize) -> bool {
    gemm::available() && in_dim > 0 && out_dim >= GROUP
}

/// `out = max(0, bias + input x weight^T)` as [`gemm::dense`] with relu
/// computes it, bit for bit; `false` (nothing written) when the layer has a
/// weight that is not finite. A sub-block of rows runs on the sparse kernel
/// when at most `limit` sixteenths of its inputs are non-zero (callers pass
/// [`sparse_limit`]), else on the dense one.
///
/// # Panics
/// When [`fits`] is false or the lengths disagree.
pub(crate) fn dense_relu(
    limit: usize,
    packed: &gemm::Packed,
    weight: &[f32],
    bias: &[f32],
    input: &[f32],
    n_rows: usize,
    out: &mut [f32],
) -> bool {
    let out_dim = bias.len();
    let in_dim = weight.len() / out_dim.max(1);
    assert!(
        fits(in_dim, out_dim),
        "sparse::dense_relu on a layer it does not take"
    );
    assert_eq!(weight.len(), in_dim * out_dim);
    assert_eq!(input.len(), n_rows * in_dim);
    assert_eq!(out.len(), n_rows * out_dim);
    let Some((w, b)) = packed.groups(weight, bias, in_dim) else {
        return false;
    };
    let mut lists = Lists::new(in_dim);
    // Rows `from..to` on the dense kernel, in one call: consecutive dense
    // sub-blocks go together, so its row tiles are not cut at every
    // sub-block.
    let dense = |from: usize, to: usize, out: &mut [f32]| {
        let rows_in = &input[from * in_dim..to * in_dim];
        let rows_out = &mut out[from * out_dim..to * out_dim];
        gemm::dense(packed, weight, bias, rows_in, to - from, true, rows_out);
    };
    // The first row of the dense sub-blocks not yet run.
    let mut dense_from = None;
    for r0 in (0..n_rows).step_by(SUB_ROWS) {
        let m = SUB_ROWS.min(n_rows - r0);
        let rows_in = &input[r0 * in_dim..(r0 + m) * in_dim];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (`fits`).
        let entries = unsafe { count_non_zero(rows_in) };
        #[cfg(not(target_arch = "x86_64"))]
        let entries = unreachable!("AVX-512 on a CPU that is not x86-64");
        // Counted first: a sub-block that goes to the dense kernel is not
        // listed (the lists' compressing stores cost more than the count).
        if entries * 16 > limit * m * in_dim {
            dense_from.get_or_insert(r0);
            continue;
        }
        if let Some(from) = dense_from.take() {
            dense(from, r0, out);
        }
        let rows_out = &mut out[r0 * out_dim..(r0 + m) * out_dim];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present; the lists hold room for SUB_ROWS
        // rows of in_dim entries and a register's slack; `w` holds in_dim x
        // GROUP floats per group and `b` GROUP per group, and the lists'
        // coordinates are below in_dim.
        unsafe {
            let listed = lists.fill(rows_in, m, in_dim);
            debug_assert_eq!(listed, entries);
            lists.run(w, b, (m, in_dim, out_dim), rows_out)
        }
    }
    if let Some(from) = dense_from {
        dense(from, n_rows, out);
    }
    true
}

/// The values of `input` that are not zero (NaN included), as
/// [`Lists::fill`] counts them.
///
/// # Safety
/// AVX-512F must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unused_unsafe)]
unsafe fn count_non_zero(input: &[f32]) -> usize {
    let zero = _mm512_setzero_ps();
    let mut chunks = input.chunks_exact(16);
    let mut n = 0;
    for c in &mut chunks {
        // SAFETY: the chunk holds 16 floats.
        let x = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        n += _mm512_cmp_ps_mask(x, zero, _CMP_NEQ_UQ).count_ones() as usize;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mask = ((1u32 << rest.len()) - 1) as __mmask16;
        // SAFETY: the mask keeps the load to the remainder's floats.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, rest.as_ptr()) };
        n += _mm512_mask_cmp_ps_mask(mask, x, zero, _CMP_NEQ_UQ).count_ones() as usize;
    }
    n
}

/// The non-zero inputs of a sub-block's rows: row `r`'s entries of piece
/// `p` are `starts[r * (pieces + 1) + p] .. starts[r * (pieces + 1) + p + 1]`
/// of `coords` and `values`, in coordinate order.
struct Lists {
    coords: Vec<u32>,
    values: Vec<f32>,
    starts: Vec<usize>,
    pieces: usize,
}

impl Lists {
    fn new(in_dim: usize) -> Lists {
        let pieces = in_dim.div_ceil(PIECE);
        // One register's slack: every store writes 16 lanes.
        let room = SUB_ROWS * in_dim + 16;
        Lists {
            coords: vec![0; room],
            values: vec![0.0; room],
            starts: vec![0; SUB_ROWS * (pieces + 1)],
            pieces,
        }
    }

    /// Lists the non-zero inputs (NaN included) of `m` rows; the number of
    /// entries.
    ///
    /// # Safety
    /// AVX-512F must be present; `m <= SUB_ROWS`, `input.len() == m * in_dim`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(unused_unsafe)]
    unsafe fn fill(&mut self, input: &[f32], m: usize, in_dim: usize) -> usize {
        assert!(m <= SUB_ROWS && input.len() == m * in_dim);
        let (pc, pv) = (self.coords.as_mut_ptr(), self.values.as_mut_ptr());
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let zero = _mm512_setzero_ps();
        let mut n = 0;
        for r in 0..m {
            let row = input.as_ptr().wrapping_add(r * in_dim);
            for p in 0..self.pieces {
                self.starts[r * (self.pieces + 1) + p] = n;
                let end = in_dim.min((p + 1) * PIECE);
                let mut k = p * PIECE;
                while k < end {
                    let lanes = (end - k).min(16);
                    let mask = ((1u32 << lanes) - 1) as __mmask16;
                    // SAFETY: lanes k..k + lanes of the row exist; n stays
                    // at most the entries listed so far, below room - 16.
                    let keep = unsafe {
                        let x = _mm512_maskz_loadu_ps(mask, row.add(k));
                        let keep = _mm512_mask_cmp_ps_mask(mask, x, zero, _CMP_NEQ_UQ);
                        let at = _mm512_add_epi32(iota, _mm512_set1_epi32(k as i32));
                        _mm512_storeu_ps(pv.add(n), _mm512_maskz_compress_ps(keep, x));
                        _mm512_storeu_si512(
                            pc.add(n).cast(),
                            _mm512_maskz_compress_epi32(keep, at),
                        );
                        keep
                    };
                    n += keep.count_ones() as usize;
                    k += lanes;
                }
            }
            self.starts[r * (self.pieces + 1) + self.pieces] = n;
        }
        n
    }

    /// Every group and piece of the layer through the `m` listed rows.
    ///
    /// # Safety
    /// AVX-512F must be present; [`Lists::fill`] listed these `m` rows;
    /// `w`/`b` are the layer's groups; `out.len() == m * out_dim`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(unused_unsafe)]
    unsafe fn run(
        &self,
        w: &[f32],
        b: &[f32],
        (m, in_dim, out_dim): (usize, usize, usize),
        out: &mut [f32],
    ) {
        assert_eq!(out.len(), m * out_dim);
        assert_eq!(w.len(), out_dim.div_ceil(GROUP) * in_dim * GROUP);
        let (pc, pv) = (self.coords.as_ptr(), self.values.as_ptr());
        let zero = _mm512_setzero_ps();
        for g in 0..out_dim.div_ceil(GROUP) {
            let cols = GROUP.min(out_dim - g * GROUP);
            let masks: [__mmask16; 8] = std::array::from_fn(|j| lane_mask(cols, j));
            let wg = w.as_ptr().wrapping_add(g * in_dim * GROUP);
            // SAFETY: b holds GROUP floats per group.
            let bias: [__m512; 8] = std::array::from_fn(|j| unsafe {
                _mm512_loadu_ps(b.as_ptr().add(g * GROUP + 16 * j))
            });
            for p in 0..self.pieces {
                let last = p + 1 == self.pieces;
                for r in 0..m {
                    let o = out.as_mut_ptr().wrapping_add(r * out_dim + g * GROUP);
                    let at = r * (self.pieces + 1) + p;
                    // SAFETY: the masks keep loads and stores to the row's
                    // `cols` outputs of this group; every listed coordinate
                    // is below in_dim, so its GROUP weights lie in `w`.
                    unsafe {
                        let mut acc = bias;
                        if p > 0 {
                            for (j, a) in acc.iter_mut().enumerate() {
                                *a = _mm512_maskz_loadu_ps(masks[j], o.add(16 * j));
                            }
                        }
                        for e in self.starts[at]..self.starts[at + 1] {
                            let x = _mm512_set1_ps(*pv.add(e));
                            let wr = in_one_register(wg.add(*pc.add(e) as usize * GROUP));
                            for (j, a) in acc.iter_mut().enumerate() {
                                *a = _mm512_fmadd_ps(x, _mm512_loadu_ps(wr.add(16 * j)), *a);
                            }
                        }
                        for (j, a) in acc.iter().enumerate() {
                            // max(x, 0) is 0 for a NaN x, as in `gemm`.
                            let v = if last { _mm512_max_ps(*a, zero) } else { *a };
                            _mm512_mask_storeu_ps(o.add(16 * j), masks[j], v);
                        }
                    }
                }
            }
        }
    }
}

/// `p`, which the compiler must now hold in one register: the eight loads
/// of a coordinate's weights then address it plus a constant. Left to
/// itself the compiler kept the group's start and the coordinate's offset
/// in two registers and added them in each load; a multiply-add that reads
/// memory through two registers is split into two operations on Intel
/// cores (measured on a Xeon with AVX-512: a fifth of the kernel's time).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
// The block touches no memory: the pointer only passes through a register.
#[allow(clippy::pointers_in_nomem_asm_block)]
fn in_one_register(mut p: *const f32) -> *const f32 {
    // SAFETY: an empty template; it only hides the value's origin.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags));
    }
    p
}

/// The store mask of register `j` of a group with `cols` outputs.
#[cfg(target_arch = "x86_64")]
fn lane_mask(cols: usize, j: usize) -> __mmask16 {
    let n = cols.saturating_sub(16 * j).min(16);
    ((1u32 << n) - 1) as __mmask16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dense;
    use crate::model::layers::{Kernel, dense_block_on};

    /// Values in [-1, 1]; `zeros` in sixteenths of them are zero (some
    /// `-0`), the rest a pseudo-random sign and size.
    fn values(n: usize, seed: u32, zeros: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                if (h >> 7) % 16 < zeros {
                    if h % 3 == 0 { -0.0 } else { 0.0 }
                } else {
                    (h % 2001) as f32 / 1000.0 - 1.0
                }
            })
            .collect()
    }

    fn layer(in_dim: usize, out_dim: usize) -> Dense {
        let mut bias = values(out_dim, 12, 0);
        // A bias of -0 with inputs all zero is where skipping could show.
        bias[0] = -0.0;
        Dense {
            name: "t".into(),
            in_dim,
            out_dim,
            weight: values(in_dim * out_dim, 11, 0),
            bias,
            packed: gemm::Packed::default(),
        }
    }

    /// `max(0, v)` as the kernels store it: `+0` for `-0` and NaN.
    fn relu(v: f32) -> f32 {
        if v > 0.0 { v } else { 0.0 }
    }

    /// Row `r` through `l` as the bias then one fused multiply-add per
    /// input in order, then relu.
    fn chain(l: &Dense, input: &[f32], r: usize) -> Vec<f32> {
        (0..l.out_dim)
            .map(|o| {
                let mut acc = l.bias[o];
                for k in 0..l.in_dim {
                    acc = input[r * l.in_dim + k].mul_add(l.weight[o * l.in_dim + k], acc);
                }
                relu(acc)
            })
            .collect()
    }

    /// The layer through the sparse path at the limit in force, and at
    /// the limits that send every sub-block to one kernel (as a CPU's
    /// timing may choose), against the chain.
    fn check(l: &Dense, input: &[f32], n: usize, what: &str) {
        let want: Vec<Vec<f32>> = (0..n).map(|r| chain(l, input, r)).collect();
        for limit in [None, Some(0), Some(8), Some(16)] {
            // What a block of the same size left: every output is written over.
            let mut out = vec![f32::NAN; n * l.out_dim];
            match limit {
                None => dense_block_on(Kernel::Avx512Sparse, l, input, n, true, &mut out),
                Some(limit) => {
                    let (w, b, p) = (&l.weight, &l.bias, &l.packed);
                    // As `dense_block_on` does with a layer it leaves.
                    if !dense_relu(limit, p, w, b, input, n, &mut out) {
                        gemm::dense(p, w, b, input, n, true, &mut out);
                    }
                }
            }
            assert_eq!(out.len(), n * l.out_dim);
            for (r, want) in want.iter().enumerate() {
                for (o, w) in want.iter().enumerate() {
                    assert_eq!(
                        out[r * l.out_dim + o].to_bits(),
                        w.to_bits(),
                        "{what}, limit {limit:?}: row {r} output {o}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_limit_follows_the_trial_times_and_keeps_its_default_without_them() {
        // Sparse as fast as dense at half density: a tenth less density
        // (7.2/16) wins by the margin.
        assert_eq!(sparse_limit_from(1.0, 1.0), 7);
        // Sparse at 75% of dense's time (a core whose FMAs are half rate):
        // up to 9.6/16.
        assert_eq!(sparse_limit_from(0.75, 1.0), 9);
        // Sparse slower than dense (two full-width FMA units): 6.26/16.
        assert_eq!(sparse_limit_from(1.15, 1.0), 6);
        assert_eq!(sparse_limit_from(1.0, 4.0), 16);
        assert_eq!(sparse_limit_from(100.0, 1.0), 0);
        for (s, d) in [
            (0.0, 1.0),
            (1.0, 0.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
        ] {
            assert_eq!(sparse_limit_from(s, d), MAX_DENSITY_16THS, "{s} {d}");
        }
    }

    #[test]
    fn a_trial_runs_each_kernel_to_the_same_outputs() {
        let Some(mut trial) = SparseTrial::new() else {
            assert!(
                !gemm::available(),
                "a trial wherever the sparse kernel runs"
            );
            eprintln!(
                "a_trial_runs_each_kernel_to_the_same_outputs: no AVX-512F on this CPU, the sparse kernel never runs"
            );
            return;
        };
        let half = trial.input.iter().filter(|v| **v == 0.0).count();
        let all = trial.input.len();
        assert!(
            half * 5 > all * 2 && half * 5 < all * 3,
            "{half} of {all} zero"
        );
        trial.run(true);
        let sparse = trial.out.clone();
        trial.out.fill(f32::NAN);
        trial.run(false);
        assert!(sparse.iter().any(|v| *v > 0.0));
        let same = sparse
            .iter()
            .zip(&trial.out)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "the two kernels disagree on the trial's layer");
    }

    #[test]
    fn relu_layers_on_sparse_input_score_as_the_fused_chain_bit_for_bit() {
        if !gemm::available() {
            eprintln!(
                "relu_layers_on_sparse_input_score_as_the_fused_chain_bit_for_bit: no AVX-512F on this CPU, the sparse kernel never runs"
            );
            return;
        }
        // Rows past a sub-block, inputs past a piece or short of one,
        // outputs past a group; every density, all zero to none zero (the
        // dense kernel then takes the sub-block).
        let shapes = [
            (0, 32, 128),
            (1, 1, 128),
            (33, 256, 256),
            (70, 33, 130),
            (5, 64, 300),
            (32, 17, 200),
        ];
        for (n, in_dim, out_dim) in shapes {
            let l = layer(in_dim, out_dim);
            for zeros in [16, 15, 8, 4, 0] {
                let mut input = values(n * in_dim, 13 + zeros, zeros);
                if n > 2 {
                    // Values the relu before would not give, scored alike.
                    input[in_dim] = f32::NAN;
                    input[2 * in_dim + in_dim / 2] = f32::INFINITY;
                }
                check(
                    &l,
                    &input,
                    n,
                    &format!("({n},{in_dim},{out_dim}) {zeros}/16 zero"),
                );
            }
        }
    }

    #[test]
    fn sub_blocks_of_either_kernel_side_by_side_score_as_the_chain() {
        if !gemm::available() {
            eprintln!(
                "sub_blocks_of_either_kernel_side_by_side_score_as_the_chain: no AVX-512F on this CPU"
            );
            return;
        }
        // Sub-blocks of 32 rows: sparse, two dense (run together), sparse,
        // and a short dense one at the end, at the limit 8/16.
        let (in_dim, out_dim) = (48, 130);
        let l = layer(in_dim, out_dim);
        let mut input = Vec::new();
        for (rows, zeros) in [(32, 14), (64, 2), (32, 16), (7, 0)] {
            input.extend(values(rows * in_dim, 5 + zeros, zeros));
        }
        check(&l, &input, 135, "mixed densities");
    }

    #[test]
    fn a_layer_with_a_weight_that_is_not_finite_is_left_to_the_dense_kernel() {
        if !gemm::available() {
            eprintln!(
                "a_layer_with_a_weight_that_is_not_finite_is_left_to_the_dense_kernel: no AVX-512F on this CPU"
            );
            return;
        }
        let mut l = layer(64, 128);
        // 0 * inf is NaN: a skipped zero input would hide it.
        l.weight[5 * 64 + 3] = f32::INFINITY;
        let input = values(40 * 64, 3, 12);
        let (w, b) = (&l.weight, &l.bias);
        let mut out = vec![0.0; 40 * 128];
        assert!(!dense_relu(
            MAX_DENSITY_16THS,
            &l.packed,
            w,
            b,
            &input,
            40,
            &mut out
        ));
        check(&l, &input, 40, "an infinite weight");
    }

    /// A row's scores do not depend on where it lies in a chunk: which
    /// sub-blocks run sparse or dense, and how the rows are split over
    /// threads, leave every bit as it is.
    #[test]
    fn an_mlp_row_scores_the_same_wherever_it_lies() {
        use crate::model::mlp::Mlp;
        use crate::model::{EntityIds, Model, OutputActivation, Predictions, Rows};
        let dims = [16, 160, 256, 3];
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| Dense {
                name: i.to_string(),
                weight: values(d[0] * d[1], 40 + i as u32, 0)
                    .iter()
                    .map(|w| w / (d[0] as f32).sqrt())
                    .collect(),
                ..layer(d[0], d[1])
            })
            .collect();
        let model = Model::Mlp(Mlp {
            layers,
            output: OutputActivation::None,
        });
        let n = 700;
        let rows = Rows {
            ids: EntityIds::Int((0..n as u64).collect()),
            num_features: 16,
            features: values(n * 16, 9, 0),
            history_offsets: Vec::new(),
            history_items: Vec::new(),
        };
        let scores = |p: Predictions| match p {
            Predictions::Scores { values, .. } => values.iter().map(|v| v.to_bits()).collect(),
            other => panic!("an mlp gave {other:?}"),
        };
        let whole: Vec<u32> = scores(model.predict(&rows).unwrap());
        assert_eq!(whole.len(), n * 3);
        for split in [1, 31, 250, 333] {
            let mut parts = Vec::new();
            for start in (0..n).step_by(split) {
                let range = start..(start + split).min(n);
                parts.extend(scores(model.predict_range(&rows, range).unwrap()));
            }
            assert_eq!(parts, whole, "rows in ranges of {split}");
        }
        for threads in [2, 3] {
            let p = crate::worker::predict_cpu(&model, &rows, threads).unwrap();
            assert_eq!(scores(p), whole, "{threads} threads");
        }
    }
}
