//! The SIMD level this CPU runs ([`level`]: AVX-512, AVX2 + FMA, NEON, or
//! none), found once at run time, and kernels for the shapes where sgemm
//! spends more time packing than multiplying: scoring a few users against a
//! whole catalogue (sgemm copies every item embedding on each call), and
//! dense layers with a handful of outputs (a matrix-vector product). They
//! read the large operand where it lies, in AVX-512 where the CPU has it,
//! else AVX2 + FMA; [`available`] is false on other CPUs and the callers use
//! sgemm there.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Floats per AVX register; the kernels need the inner dimension to be a
/// multiple of it.
pub(crate) const LANES: usize = 8;

/// The widest SIMD instructions a kernel may use here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// x86-64 with AVX-512F (and AVX2 + FMA).
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// aarch64 (NEON is part of the architecture): sgemm's NEON kernels.
    Neon,
    /// None of the above: sgemm's portable kernels.
    Portable,
}

impl Level {
    /// The name shown in adapter strings.
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Neon => "neon",
            Level::Portable => "portable",
        }
    }
}

/// The widest level this CPU supports, detected once.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        [Level::Avx512, Level::Avx2, Level::Neon]
            .into_iter()
            .find(|l| supported(*l))
            .unwrap_or(Level::Portable)
    })
}

/// Whether this CPU runs the kernels of `level`.
pub(crate) fn supported(level: Level) -> bool {
    #[cfg(target_arch = "x86_64")]
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => avx2 && is_x86_feature_detected!("avx512f"),
        #[cfg(not(target_arch = "x86_64"))]
        Level::Avx512 => false,
        Level::Avx2 => avx2,
        Level::Neon => cfg!(target_arch = "aarch64"),
        Level::Portable => true,
    }
}

/// Whether this CPU runs the kernels below (AVX2 and FMA, or AVX-512).
pub(crate) fn available() -> bool {
    matches!(level(), Level::Avx512 | Level::Avx2)
}

/// Users scored together by [`score_block`]: two AVX registers.
pub(crate) const GROUP: usize = 16;
/// Items [`score_block`] scores per step of its inner loop.
const ITEMS_PER_STEP: usize = 6;

/// `out[j * GROUP + u] = items[j] . user u` for every row `j` of `items`
/// (`out.len() / GROUP` rows of `dim` floats), where `users_t[d * GROUP + u]`
/// holds coordinate `d` of user `u` (the users transposed, `dim` x
/// [`GROUP`]). Item values are broadcast against the users' coordinates, so
/// the items are read in place and no horizontal sums are needed.
///
/// Also pushes onto `hits` (cleared first), ascending, `(j, users)` for
/// every row `j` where some user's score is not below that user's `floor`
/// (`!(score < floor)`, so a NaN on either side counts), bit `u` of `users`
/// set for each such user `u`: the caller then looks only at those scores,
/// not at every score.
///
/// # Panics
/// When [`available`] is false or the lengths disagree.
pub(crate) fn score_block(
    users_t: &[f32],
    items: &[f32],
    dim: usize,
    out: &mut [f32],
    floor: &[f32; GROUP],
    hits: &mut Vec<(u32, u32)>,
) {
    assert!(available(), "score_block needs AVX2 and FMA");
    score_block_at(level(), users_t, items, dim, out, floor, hits)
}

/// [`score_block`] with the kernel of `level` (one this CPU supports).
pub(crate) fn score_block_at(
    level: Level,
    users_t: &[f32],
    items: &[f32],
    dim: usize,
    out: &mut [f32],
    floor: &[f32; GROUP],
    hits: &mut Vec<(u32, u32)>,
) {
    assert!(supported(level));
    assert_eq!(users_t.len(), dim * GROUP);
    assert_eq!(out.len() % GROUP, 0);
    assert_eq!(items.len(), out.len() / GROUP * dim);
    assert!(out.len() / GROUP <= u32::MAX as usize);
    hits.clear();
    hits.reserve(out.len() / GROUP);
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F (checked above), the lengths checked
        // above keep every load and store inside the slices, and `hits` has
        // room for a row number per row.
        Level::Avx512 => unsafe { score_block_avx512(users_t, items, dim, out, floor, hits) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: likewise for AVX2 and FMA.
        Level::Avx2 => unsafe { score_block_avx2(users_t, items, dim, out, floor, hits) },
        other => panic!("score_block has no {other:?} kernel"),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unused_unsafe)]
unsafe fn score_block_avx512(
    users_t: &[f32],
    items: &[f32],
    dim: usize,
    out: &mut [f32],
    floor: &[f32; GROUP],
    hits: &mut Vec<(u32, u32)>,
) {
    // One zmm register holds a coordinate of all GROUP users; twelve items
    // per step keep twelve independent sums in flight.
    const STEP: usize = 12;
    let n = out.len() / GROUP;
    let (pu, pe, po) = (users_t.as_ptr(), items.as_ptr(), out.as_mut_ptr());
    let floor = unsafe { _mm512_loadu_ps(floor.as_ptr()) };
    // Not-less-than, true when unordered: `!(score < floor)`.
    let hit = |a: __m512| unsafe { u32::from(_mm512_cmp_ps_mask::<_CMP_NLT_UQ>(a, floor)) };
    let mut j = 0;
    while j + STEP <= n {
        unsafe {
            let e = pe.add(j * dim);
            let mut acc = [_mm512_setzero_ps(); STEP];
            for d in 0..dim {
                let u = _mm512_loadu_ps(pu.add(d * GROUP));
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*e.add(i * dim + d)), u, *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(po.add((j + i) * GROUP), *a);
                let users = hit(*a);
                if users != 0 {
                    hits.push(((j + i) as u32, users));
                }
            }
        }
        j += STEP;
    }
    while j < n {
        unsafe {
            let e = pe.add(j * dim);
            let mut a = _mm512_setzero_ps();
            for d in 0..dim {
                a = _mm512_fmadd_ps(
                    _mm512_set1_ps(*e.add(d)),
                    _mm512_loadu_ps(pu.add(d * GROUP)),
                    a,
                );
            }
            _mm512_storeu_ps(po.add(j * GROUP), a);
            let users = hit(a);
            if users != 0 {
                hits.push((j as u32, users));
            }
        }
        j += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unused_unsafe)]
unsafe fn score_block_avx2(
    users_t: &[f32],
    items: &[f32],
    dim: usize,
    out: &mut [f32],
    floor: &[f32; GROUP],
    hits: &mut Vec<(u32, u32)>,
) {
    let n = out.len() / GROUP;
    let (pu, pe, po) = (users_t.as_ptr(), items.as_ptr(), out.as_mut_ptr());
    let (f0, f1) = unsafe {
        (
            _mm256_loadu_ps(floor.as_ptr()),
            _mm256_loadu_ps(floor.as_ptr().add(LANES)),
        )
    };
    // Not-less-than, true when unordered: `!(score < floor)`.
    let hit = |a0: __m256, a1: __m256| unsafe {
        let low = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(a0, f0)) as u32;
        let high = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(a1, f1)) as u32;
        low | high << LANES
    };
    let mut j = 0;
    // ITEMS_PER_STEP items at a time: twelve accumulators (6 items x 16
    // users), enough independent sums to keep both FMA pipes busy.
    while j + ITEMS_PER_STEP <= n {
        unsafe {
            let e = pe.add(j * dim);
            let mut acc = [_mm256_setzero_ps(); 2 * ITEMS_PER_STEP];
            for d in 0..dim {
                let a = _mm256_loadu_ps(pu.add(d * GROUP));
                let b = _mm256_loadu_ps(pu.add(d * GROUP + LANES));
                for i in 0..ITEMS_PER_STEP {
                    let x = _mm256_broadcast_ss(&*e.add(i * dim + d));
                    acc[2 * i] = _mm256_fmadd_ps(x, a, acc[2 * i]);
                    acc[2 * i + 1] = _mm256_fmadd_ps(x, b, acc[2 * i + 1]);
                }
            }
            for (i, v) in acc.iter().enumerate() {
                _mm256_storeu_ps(po.add((j + i / 2) * GROUP + (i % 2) * LANES), *v);
            }
            for i in 0..ITEMS_PER_STEP {
                let users = hit(acc[2 * i], acc[2 * i + 1]);
                if users != 0 {
                    hits.push(((j + i) as u32, users));
                }
            }
        }
        j += ITEMS_PER_STEP;
    }
    while j < n {
        unsafe {
            let e = pe.add(j * dim);
            let mut a0 = _mm256_setzero_ps();
            let mut a1 = _mm256_setzero_ps();
            for d in 0..dim {
                let x = _mm256_broadcast_ss(&*e.add(d));
                a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(pu.add(d * GROUP)), a0);
                a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(pu.add(d * GROUP + LANES)), a1);
            }
            _mm256_storeu_ps(po.add(j * GROUP), a0);
            _mm256_storeu_ps(po.add(j * GROUP + LANES), a1);
            let users = hit(a0, a1);
            if users != 0 {
                hits.push((j as u32, users));
            }
        }
        j += 1;
    }
}

/// `out[r * stride + o] = bias[o] + rows[r] . weight[o]` for each of the
/// `out_dim` weight rows (`[out_dim, in_dim]`, as `torch.nn.Linear` stores
/// them), where `in_dim = weight.len() / bias.len()`; `stride` is the output
/// row length (at least `out_dim`).
///
/// # Panics
/// When [`available`] is false, `in_dim` is not a non-zero multiple of
/// [`LANES`], or the lengths disagree.
pub(crate) fn dense_dots(
    rows: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    let out_dim = bias.len();
    assert!(available(), "dense_dots needs AVX2 and FMA");
    assert!(out_dim > 0 && stride >= out_dim);
    let in_dim = weight.len() / out_dim;
    assert!(in_dim > 0 && in_dim.is_multiple_of(LANES) && weight.len() == in_dim * out_dim);
    assert_eq!(rows.len() % in_dim, 0);
    let n = rows.len() / in_dim;
    assert!(out.len() >= n.saturating_sub(1) * stride + out_dim || n == 0);
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present and the lengths checked above keep
        // every access inside the slices.
        Level::Avx512 if in_dim.is_multiple_of(2 * LANES) => unsafe {
            dense_dots_avx512(rows, weight, bias, out, stride, in_dim, n)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are present (AVX-512 implies them here), and
        // the lengths checked above keep every access inside the slices.
        Level::Avx512 | Level::Avx2 => unsafe {
            dense_dots_avx2(rows, weight, bias, out, stride, in_dim, n)
        },
        other => panic!("dense_dots has no {other:?} kernel"),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unused_unsafe)]
unsafe fn dense_dots_avx512(
    rows: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
    in_dim: usize,
    n: usize,
) {
    const W: usize = 16;
    for (o, &b) in bias.iter().enumerate() {
        let w = &weight[o * in_dim..(o + 1) * in_dim];
        let mut r = 0;
        while r + 4 <= n {
            unsafe {
                let mut acc = [_mm512_setzero_ps(); 4];
                let mut d = 0;
                while d < in_dim {
                    let x = _mm512_loadu_ps(w.as_ptr().add(d));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let v = _mm512_loadu_ps(rows.as_ptr().add((r + i) * in_dim + d));
                        *a = _mm512_fmadd_ps(v, x, *a);
                    }
                    d += W;
                }
                for (i, a) in acc.into_iter().enumerate() {
                    out[(r + i) * stride + o] = b + _mm512_reduce_add_ps(a);
                }
            }
            r += 4;
        }
        while r < n {
            unsafe {
                let mut a = _mm512_setzero_ps();
                let mut d = 0;
                while d < in_dim {
                    let x = _mm512_loadu_ps(w.as_ptr().add(d));
                    a = _mm512_fmadd_ps(_mm512_loadu_ps(rows.as_ptr().add(r * in_dim + d)), x, a);
                    d += W;
                }
                out[r * stride + o] = b + _mm512_reduce_add_ps(a);
            }
            r += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unused_unsafe)]
unsafe fn dense_dots_avx2(
    rows: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
    in_dim: usize,
    n: usize,
) {
    for (o, &b) in bias.iter().enumerate() {
        let w = &weight[o * in_dim..(o + 1) * in_dim];
        let mut r = 0;
        while r + 4 <= n {
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut d = 0;
                while d < in_dim {
                    let x = _mm256_loadu_ps(w.as_ptr().add(d));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let v = _mm256_loadu_ps(rows.as_ptr().add((r + i) * in_dim + d));
                        *a = _mm256_fmadd_ps(v, x, *a);
                    }
                    d += LANES;
                }
                for (i, a) in acc.into_iter().enumerate() {
                    out[(r + i) * stride + o] = b + hsum(a);
                }
            }
            r += 4;
        }
        while r < n {
            unsafe {
                let mut a = _mm256_setzero_ps();
                let mut d = 0;
                while d < in_dim {
                    let x = _mm256_loadu_ps(w.as_ptr().add(d));
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(rows.as_ptr().add(r * in_dim + d)), x, a);
                    d += LANES;
                }
                out[r * stride + o] = b + hsum(a);
            }
            r += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(unused_unsafe)]
unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 * *y as f64) as f32)
            .sum()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn score_block_matches_dot_products_for_every_tail() {
        if !available() {
            eprintln!(
                "score_block_matches_dot_products_for_every_tail: no AVX2+FMA on this CPU, the sgemm path runs instead"
            );
            return;
        }
        let levels = [Level::Avx512, Level::Avx2]
            .into_iter()
            .filter(|l| supported(*l));
        for (level, dim, n) in levels.flat_map(|l| {
            [1, 3, 8, 64, 71]
                .into_iter()
                .flat_map(move |d| [0, 1, 3, 4, 5, 9, 12, 13, 31].map(|n| (l, d, n)))
        }) {
            {
                let (users_t, items) = (values(dim * GROUP, 1), values(n * dim, 3));
                let mut out = vec![f32::NAN; n * GROUP];
                // Every user's floor differs; user 5's is NaN (every row a
                // hit), unless the last one's rows are all below.
                let mut floor: [f32; GROUP] = std::array::from_fn(|u| u as f32 / 8.0 - 0.5);
                let nan_floor = dim % 2 == 1;
                if nan_floor {
                    floor[5] = f32::NAN;
                }
                let mut hits = vec![(7, 7)];
                score_block_at(level, &users_t, &items, dim, &mut out, &floor, &mut hits);
                let mut want_hits = Vec::new();
                for j in 0..n {
                    for u in 0..GROUP {
                        let user: Vec<f32> = (0..dim).map(|d| users_t[d * GROUP + u]).collect();
                        let want = dot(&user, &items[j * dim..(j + 1) * dim]);
                        assert!(
                            (out[j * GROUP + u] - want).abs() < 1e-4,
                            "{level:?} dim {dim} n {n} item {j} user {u}"
                        );
                    }
                    let row = &out[j * GROUP..(j + 1) * GROUP];
                    #[allow(clippy::neg_cmp_op_on_partial_ord)]
                    let users = (0..GROUP)
                        .filter(|&u| !(row[u] < floor[u]))
                        .fold(0u32, |m, u| m | 1 << u);
                    if users != 0 {
                        want_hits.push((j as u32, users));
                    }
                }
                assert_eq!(
                    hits, want_hits,
                    "{level:?} dim {dim} n {n}: rows with a hit"
                );
                if nan_floor {
                    assert!(
                        hits.len() == n && hits.iter().all(|(_, m)| m & 1 << 5 != 0),
                        "a NaN floor makes every row a hit"
                    );
                }
            }
        }
    }

    #[test]
    fn dense_dots_matches_dot_products_and_keeps_the_stride() {
        if !available() {
            eprintln!(
                "dense_dots_matches_dot_products_and_keeps_the_stride: no AVX2+FMA on this CPU"
            );
            return;
        }
        for (in_dim, out_dim, n) in [(8, 1, 1), (256, 1, 7), (64, 3, 9), (16, 2, 4), (24, 1, 5)] {
            let (rows, w, b) = (
                values(n * in_dim, 4),
                values(out_dim * in_dim, 5),
                values(out_dim, 6),
            );
            let stride = out_dim + 1;
            let mut out = vec![7.0f32; n * stride];
            dense_dots(&rows, &w, &b, &mut out, stride);
            for r in 0..n {
                for o in 0..out_dim {
                    let want = b[o]
                        + dot(
                            &rows[r * in_dim..(r + 1) * in_dim],
                            &w[o * in_dim..(o + 1) * in_dim],
                        );
                    assert!(
                        (out[r * stride + o] - want).abs() < 1e-4,
                        "({in_dim},{out_dim},{n}) row {r} out {o}"
                    );
                }
                assert_eq!(
                    out[r * stride + out_dim],
                    7.0,
                    "the stride's padding is untouched"
                );
            }
        }
    }
}
