//! The batch-scoring layouts of a tree ensemble, chosen at load.
//!
//! Both turn every split into one canonical test, "go left when
//! `x <= t`", with a flag saying where NaN goes: BRANCH_LT becomes `<=` the
//! next float below its threshold, BRANCH_GTE and BRANCH_GT swap their
//! children, and a double threshold becomes the f32 that splits every f32
//! input the same way. So the fast paths compare in f32 and still send
//! every input where onnxruntime sends it.
//!
//! - [`Perfect`]: each tree padded to a complete tree of its depth and laid
//!   out breadth first, so a node's children are `2i + 1` and `2i + 2`
//!   and a walk is `depth` steps of `i = 2i + 1 + (x > t)` with no branch.
//!   Rows are scored in blocks, tree by tree (the tree's nodes stay in L1
//!   for the whole block); inside a block many rows walk the same tree at
//!   once: 8 per AVX2 register (4 registers in flight), 16 per AVX-512
//!   register, or 8 interleaved scalar walks, picked at run time.
//! - [`General`]: compact nodes with explicit children, one row and one
//!   tree at a time; for what the first cannot hold (BRANCH_EQ, NEQ,
//!   MEMBER, trees deeper than [`MAX_PERFECT_DEPTH`]).
//!
//! docs/performance.md has the numbers that chose between them. Models
//! given in doubles keep the reference path, which adds up in f64 as
//! onnxruntime does for them.

use super::ensemble::{Child, Ensemble, Node, Split};
use super::score::{RowState, Scored};

/// Trees deeper than this (branching levels) keep the general layout:
/// a complete tree of depth 12 is 4,095 nodes and 4,096 leaf slots.
pub const MAX_PERFECT_DEPTH: u32 = 12;
/// Rows scored together, tree by tree: 64 rows of 100 features (25 KiB)
/// stay in L1 with the tree; 256 ran at half the speed (docs/performance.md).
const BLOCK_ROWS: usize = 64;
/// In a node's feature word: NaN goes left.
const NAN_LEFT: u32 = 1 << 31;
/// In a general child reference: the index is a leaf's.
const LEAF: u32 = 1 << 31;

/// The next f32 below `f` (`-inf` stays `-inf`; NaN stays NaN).
fn next_down(f: f32) -> f32 {
    if f.is_nan() || f == f32::NEG_INFINITY {
        return f;
    }
    if f == 0.0 {
        return -f32::from_bits(1);
    }
    let bits = f.to_bits();
    f32::from_bits(if f > 0.0 { bits - 1 } else { bits + 1 })
}

/// The largest f32 at or below `t` (NaN for NaN).
fn at_or_below(t: f64) -> f32 {
    let f = t as f32;
    if (f as f64) > t { next_down(f) } else { f }
}

/// The largest f32 strictly below `t`; NaN (a test nothing passes) when
/// there is none.
fn strictly_below(t: f64) -> f32 {
    let f = at_or_below(t);
    if f as f64 == t {
        if f == f32::NEG_INFINITY {
            return f32::NAN;
        }
        next_down(f)
    } else {
        f
    }
}

/// A split as "left when `x <= t`": `(t, NaN goes left, left, right)`, or
/// `None` for the tests that are not one comparison.
fn canonical(node: &Node) -> Option<(f32, bool, Child, Child)> {
    let m = node.missing_yes;
    Some(match node.split {
        Split::Leq(t) => (at_or_below(t), m, node.yes, node.no),
        Split::Lt(t) => (strictly_below(t), m, node.yes, node.no),
        // x >= t is "not x < t": swap the children; NaN fails >= so it goes
        // to `no` (now left) unless it tracks `yes`.
        Split::Gte(t) => (strictly_below(t), !m, node.no, node.yes),
        Split::Gt(t) => (at_or_below(t), !m, node.no, node.yes),
        _ => return None,
    })
}

/// How leaf weights reach a row's scores on the fast paths.
#[derive(Clone, Debug, PartialEq)]
enum Adding {
    /// Sum or average where every leaf of tree `t` adds one weight to
    /// target `target[t]` (gradient boosting, one target): scores add up
    /// straight from the leaf value, in tree order.
    Single { target: Vec<u32>, has: Vec<bool> },
    /// Anything else: the leaf index goes through [`Ensemble::add_leaf`].
    General,
}

impl Adding {
    fn new(e: &Ensemble, reachable: &[Vec<u32>]) -> Adding {
        use super::ensemble::Aggregate;
        if !matches!(e.effective_aggregate(), Aggregate::Sum | Aggregate::Average) {
            return Adding::General;
        }
        let n = e.n_targets;
        let mut target = Vec::with_capacity(e.n_trees());
        let mut has = vec![false; n];
        for leaves in reachable {
            let first = e.leaf_weights(leaves[0])[0].target;
            let single = |&l: &u32| {
                let w = e.leaf_weights(l);
                n == 1 || (w.len() == 1 && w[0].target == first)
            };
            if !leaves.iter().all(single) {
                return Adding::General;
            }
            let k = if n == 1 { 0 } else { first };
            has[k as usize] = true;
            target.push(k);
        }
        Adding::Single { target, has }
    }
}

/// The leaves each tree can reach, for [`Adding::new`].
fn reachable_leaves(e: &Ensemble) -> Vec<Vec<u32>> {
    let mut seen = vec![false; e.nodes.len()];
    e.roots
        .iter()
        .map(|&root| {
            seen.fill(false);
            let mut leaves = Vec::new();
            let mut stack = vec![root];
            while let Some(c) = stack.pop() {
                match c {
                    Child::Leaf(l) => leaves.push(l),
                    Child::Node(i) => {
                        if !std::mem::replace(&mut seen[i as usize], true) {
                            let n = &e.nodes[i as usize];
                            stack.push(n.no);
                            stack.push(n.yes);
                        }
                    }
                }
            }
            leaves
        })
        .collect()
}

/// `walk(tree, rows of x, row count, out)`: each row's leaf slot (perfect)
/// or leaf (general) in `tree`.
type Walk<'a> = dyn Fn(usize, &[f32], usize, &mut [u32]) + 'a;

/// The layout chosen for an ensemble.
#[derive(Clone, Debug)]
pub enum Compiled {
    Perfect(Perfect, AddingPlan),
    General(General, AddingPlan),
    /// Double-precision models: the reference path.
    Reference,
}

/// [`Adding`], kept opaque outside this module.
#[derive(Clone, Debug)]
pub struct AddingPlan(Adding);

/// Which layout to build (the benchmark compares them; a model gets
/// [`Layout::Auto`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Auto,
    Perfect,
    General,
}

impl Compiled {
    pub fn new(e: &Ensemble) -> Compiled {
        Compiled::with_layout(e, Layout::Auto)
    }

    /// Builds `layout` (`Perfect` falls back to `General` when the model
    /// does not fit it).
    pub fn with_layout(e: &Ensemble, layout: Layout) -> Compiled {
        if e.double {
            return Compiled::Reference;
        }
        let adding = AddingPlan(Adding::new(e, &reachable_leaves(e)));
        if layout != Layout::General {
            if let Some(p) = Perfect::new(e) {
                return Compiled::Perfect(p, adding);
            }
        }
        Compiled::General(General::new(e), adding)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Compiled::Perfect(..) => "perfect",
            Compiled::General(..) => "general",
            Compiled::Reference => "reference",
        }
    }

    /// Scores `rows` rows of `width` features.
    pub fn score(&self, e: &Ensemble, x: &[f32], rows: usize, width: usize) -> Scored {
        let (walk, adding): (&Walk, &Adding) = match self {
            Compiled::Reference => return e.score_reference(x, rows, width),
            Compiled::Perfect(p, a) => (&|t, x, n, out| p.slots(t, x, width, n, out), &a.0),
            Compiled::General(g, a) => (&|t, x, n, out| g.leaves(t, x, width, n, out), &a.0),
        };
        let slot_leaf = |t: usize, s: u32| match self {
            Compiled::Perfect(p, _) => p.slot_leaf[p.trees[t].leaves as usize + s as usize],
            _ => s,
        };
        let n = e.n_targets;
        let mut scores = vec![0.0f32; rows * n];
        let mut labels = e.classes().map(|_| vec![0i64; rows]);
        let mut state = RowState::<f32>::new(n);
        let mut slots = vec![0u32; BLOCK_ROWS];
        let mut acc = vec![0.0f32; BLOCK_ROWS * n];
        let mut leaves: Vec<u32> = Vec::new();
        let n_trees = e.n_trees();
        let mut start = 0;
        while start < rows {
            let b = BLOCK_ROWS.min(rows - start);
            let xb = &x[start * width..(start + b) * width];
            match adding {
                Adding::Single { target, .. } => {
                    acc[..b * n].fill(0.0);
                    for (t, &k) in target.iter().enumerate() {
                        walk(t, xb, b, &mut slots[..b]);
                        let k = k as usize;
                        let values = match self {
                            Compiled::Perfect(p, _) => &p.slot_value[p.trees[t].leaves as usize..],
                            _ => &[][..],
                        };
                        for r in 0..b {
                            let v = if values.is_empty() {
                                e.weights[e.leaves[slots[r] as usize].0 as usize].value as f32
                            } else {
                                values[slots[r] as usize]
                            };
                            acc[r * n + k] += v;
                        }
                    }
                }
                Adding::General => {
                    leaves.resize(b * n_trees, 0);
                    for t in 0..n_trees {
                        walk(t, xb, b, &mut slots[..b]);
                        for r in 0..b {
                            leaves[r * n_trees + t] = slot_leaf(t, slots[r]);
                        }
                    }
                }
            }
            for r in 0..b {
                let row = start + r;
                match adding {
                    Adding::Single { has, .. } => {
                        state.scores.copy_from_slice(&acc[r * n..(r + 1) * n]);
                        state.has.copy_from_slice(has);
                    }
                    Adding::General => {
                        state.clear();
                        for &leaf in &leaves[r * n_trees..(r + 1) * n_trees] {
                            e.add_leaf(leaf, &mut state);
                        }
                    }
                }
                let code = e.finalize(&mut state, &mut scores[row * n..(row + 1) * n]);
                if let Some(l) = labels.as_mut() {
                    l[row] = code;
                }
            }
            start += b;
        }
        Scored {
            width: n,
            scores,
            labels,
        }
    }
}

/// Where a tree lives in [`Perfect`]'s arrays.
#[derive(Clone, Copy, Debug)]
struct PerfectTree {
    /// Branching levels: the tree has `2^depth - 1` nodes, `2^depth` slots.
    depth: u32,
    nodes: u32,
    leaves: u32,
}

/// Complete trees, breadth first: see the module docs.
#[derive(Clone, Debug)]
pub struct Perfect {
    trees: Vec<PerfectTree>,
    /// Per node: the threshold's bits, then the feature word (feature
    /// index, [`NAN_LEFT`]).
    nodes: Vec<[u32; 2]>,
    /// Per leaf slot: the ensemble's leaf.
    slot_leaf: Vec<u32>,
    /// Per leaf slot: the leaf's first weight.
    slot_value: Vec<f32>,
}

impl Perfect {
    fn new(e: &Ensemble) -> Option<Perfect> {
        let mut p = Perfect {
            trees: Vec::with_capacity(e.n_trees()),
            nodes: Vec::new(),
            slot_leaf: Vec::new(),
            slot_value: Vec::new(),
        };
        for (t, &root) in e.roots.iter().enumerate() {
            let depth = e.depths[t] - 1;
            if depth > MAX_PERFECT_DEPTH {
                return None;
            }
            let tree = PerfectTree {
                depth,
                nodes: p.nodes.len() as u32,
                leaves: p.slot_leaf.len() as u32,
            };
            p.nodes.resize(p.nodes.len() + (1 << depth) - 1, [0, 0]);
            p.slot_leaf.resize(p.slot_leaf.len() + (1 << depth), 0);
            if !p.place(e, &tree, root, 0, 0) {
                return None;
            }
            p.trees.push(tree);
        }
        p.slot_value = p
            .slot_leaf
            .iter()
            .map(|&l| e.leaf_weights(l)[0].value as f32)
            .collect();
        Some(p)
    }

    /// Lays `c` at node `i` (level `level`) of `tree`; false when a split
    /// has no canonical form.
    fn place(&mut self, e: &Ensemble, tree: &PerfectTree, c: Child, i: usize, level: u32) -> bool {
        if level == tree.depth {
            let Child::Leaf(l) = c else {
                unreachable!("a tree deeper than its depth");
            };
            let slot = i + 1 - (1 << tree.depth);
            self.slot_leaf[tree.leaves as usize + slot] = l;
            return true;
        }
        let (left, right) = match c {
            Child::Node(j) => {
                let node = &e.nodes[j as usize];
                let Some((t, nan_left, left, right)) = canonical(node) else {
                    return false;
                };
                let word = node.feature | if nan_left { NAN_LEFT } else { 0 };
                self.nodes[tree.nodes as usize + i] = [t.to_bits(), word];
                (left, right)
            }
            Child::Leaf(_) => {
                // Padding under a shallow leaf: every value (NaN too) goes
                // left, down to the leaf's slot.
                self.nodes[tree.nodes as usize + i] = [f32::INFINITY.to_bits(), NAN_LEFT];
                (c, c)
            }
        };
        self.place(e, tree, left, 2 * i + 1, level + 1)
            && self.place(e, tree, right, 2 * i + 2, level + 1)
    }

    /// The leaf slot tree `t` sends each of `rows` rows of `x` to.
    fn slots(&self, t: usize, x: &[f32], width: usize, rows: usize, out: &mut [u32]) {
        let tree = self.trees[t];
        let nodes = &self.nodes[tree.nodes as usize..tree.nodes as usize + (1 << tree.depth) - 1];
        if tree.depth == 0 {
            out[..rows].fill(0);
            return;
        }
        let done = simd::slots(nodes, tree.depth, x, width, rows, out);
        for r in done..rows {
            out[r] = walk_one(nodes, tree.depth, &x[r * width..(r + 1) * width]);
        }
    }
}

/// One row down one complete tree; returns its leaf slot.
#[inline]
fn walk_one(nodes: &[[u32; 2]], depth: u32, row: &[f32]) -> u32 {
    let mut i = 0usize;
    for _ in 0..depth {
        let [t, word] = nodes[i];
        let x = row[(word & !NAN_LEFT) as usize];
        let left = x <= f32::from_bits(t) || (x.is_nan() && word & NAN_LEFT != 0);
        i = 2 * i + 2 - left as usize;
    }
    (i + 1 - (1 << depth)) as u32
}

/// Eight rows down one complete tree at once, interleaved so their loads
/// overlap; the portable walk.
fn slots_scalar(
    nodes: &[[u32; 2]],
    depth: u32,
    x: &[f32],
    width: usize,
    rows: usize,
    out: &mut [u32],
) -> usize {
    const G: usize = 8;
    let mut r = 0;
    while r + G <= rows {
        let mut i = [0usize; G];
        for _ in 0..depth {
            for (lane, i) in i.iter_mut().enumerate() {
                let [t, word] = nodes[*i];
                let v = x[(r + lane) * width + (word & !NAN_LEFT) as usize];
                let left = (v <= f32::from_bits(t)) | (v.is_nan() & (word & NAN_LEFT != 0));
                *i = 2 * *i + 2 - left as usize;
            }
        }
        for lane in 0..G {
            out[r + lane] = (i[lane] + 1 - (1 << depth)) as u32;
        }
        r += G;
    }
    r
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // registers in flight, indexed by group
mod simd {
    //! Rows in SIMD lanes walking one complete tree: gathers fetch each
    //! lane's node and feature value. Chosen at run time by the CPU's
    //! features.
    use super::{NAN_LEFT, slots_scalar};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Isa {
        Avx512,
        Avx2,
        Scalar,
    }

    /// What this CPU runs: AVX2 where it has it. AVX-512 was measured
    /// slower on the AMD EPYC (Zen 4) this project runs on, whose 512-bit
    /// gathers cost more than two 256-bit ones (docs/performance.md), so it
    /// is taken only when asked for: `HERD_TREES_ISA=avx512` (or `avx2`,
    /// `scalar`), for benchmarks and for CPUs where it pays.
    pub fn isa() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let asked = std::env::var("HERD_TREES_ISA").unwrap_or_default();
            if asked == "avx512" && is_x86_feature_detected!("avx512f") {
                Isa::Avx512
            } else if asked != "scalar" && is_x86_feature_detected!("avx2") {
                Isa::Avx2
            } else {
                Isa::Scalar
            }
        })
    }

    /// Fills `out` for the leading rows it handles; returns how many.
    pub fn slots(
        nodes: &[[u32; 2]],
        depth: u32,
        x: &[f32],
        width: usize,
        rows: usize,
        out: &mut [u32],
    ) -> usize {
        // Gathers index with i32: the block must fit.
        if rows * width >= i32::MAX as usize / 2 || nodes.len() >= i32::MAX as usize / 4 {
            return slots_scalar(nodes, depth, x, width, rows, out);
        }
        match isa() {
            // SAFETY: the features were detected at run time; every index the
            // kernels form is a node of `nodes` (a complete tree of `depth`
            // levels) or a feature of a row below `rows`, both checked in
            // bounds by construction (features were checked against the
            // width when the model met the rows).
            Isa::Avx512 => unsafe { slots_avx512(nodes, depth, x, width, rows, out) },
            Isa::Avx2 => unsafe { slots_avx2(nodes, depth, x, width, rows, out) },
            Isa::Scalar => slots_scalar(nodes, depth, x, width, rows, out),
        }
    }

    // AVX-512 intrinsics are stable from Rust 1.89, past the crate's 1.85:
    // the kernel builds with the toolchain the project uses and runs only
    // when asked for (see `isa`).
    #[allow(clippy::incompatible_msrv)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn slots_avx512(
        nodes: &[[u32; 2]],
        depth: u32,
        x: &[f32],
        width: usize,
        rows: usize,
        out: &mut [u32],
    ) -> usize {
        const G: usize = 4; // registers in flight
        const L: usize = 16;
        let base = nodes.as_ptr() as *const i32;
        let xp = x.as_ptr();
        let one = _mm512_set1_epi32(1);
        let feat_mask = _mm512_set1_epi32(!NAN_LEFT as i32);
        let nan_bit = _mm512_set1_epi32(NAN_LEFT as i32);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let w = _mm512_set1_epi32(width as i32);
        let first_slot = _mm512_set1_epi32((1i32 << depth) - 1);
        let mut r = 0;
        while r + G * L <= rows {
            let mut off = [_mm512_setzero_si512(); G];
            let mut idx = [_mm512_setzero_si512(); G];
            for g in 0..G {
                let row = _mm512_add_epi32(lanes, _mm512_set1_epi32((r + g * L) as i32));
                off[g] = _mm512_mullo_epi32(row, w);
            }
            for _ in 0..depth {
                for g in 0..G {
                    let i2 = _mm512_add_epi32(idx[g], idx[g]);
                    // SAFETY: see `slots`: indices stay inside `nodes` and `x`.
                    let (t, word, v) = unsafe {
                        let t = _mm512_i32gather_ps::<4>(i2, base as *const f32);
                        let word = _mm512_i32gather_epi32::<4>(_mm512_add_epi32(i2, one), base);
                        let f = _mm512_and_si512(word, feat_mask);
                        let v = _mm512_i32gather_ps::<4>(_mm512_add_epi32(off[g], f), xp);
                        (t, word, v)
                    };
                    let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, t);
                    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                    let nan_left = _mm512_test_epi32_mask(word, nan_bit);
                    let left = le | (nan & nan_left);
                    let next = _mm512_add_epi32(i2, one);
                    idx[g] = _mm512_mask_add_epi32(next, !left, next, one);
                }
            }
            for g in 0..G {
                let slot = _mm512_sub_epi32(idx[g], first_slot);
                // SAFETY: `out` holds `rows` entries and r + (g + 1) L <= rows.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(r + g * L) as *mut _, slot) };
            }
            r += G * L;
        }
        let done = r;
        let rest = unsafe {
            slots_avx2(
                nodes,
                depth,
                &x[done * width..],
                width,
                rows - done,
                &mut out[done..],
            )
        };
        done + rest
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn slots_avx2(
        nodes: &[[u32; 2]],
        depth: u32,
        x: &[f32],
        width: usize,
        rows: usize,
        out: &mut [u32],
    ) -> usize {
        const G: usize = 4;
        const L: usize = 8;
        let base = nodes.as_ptr() as *const i32;
        let xp = x.as_ptr();
        let one = _mm256_set1_epi32(1);
        let two = _mm256_set1_epi32(2);
        let feat_mask = _mm256_set1_epi32(!NAN_LEFT as i32);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let w = _mm256_set1_epi32(width as i32);
        let first_slot = _mm256_set1_epi32((1i32 << depth) - 1);
        let mut r = 0;
        while r + L <= rows {
            // Four registers in flight while rows last, then one at a time.
            let count = if r + G * L <= rows { G } else { 1 };
            let mut off = [_mm256_setzero_si256(); G];
            let mut idx = [_mm256_setzero_si256(); G];
            for g in 0..count {
                let row = _mm256_add_epi32(lanes, _mm256_set1_epi32((r + g * L) as i32));
                off[g] = _mm256_mullo_epi32(row, w);
            }
            for _ in 0..depth {
                for g in 0..count {
                    let i2 = _mm256_add_epi32(idx[g], idx[g]);
                    // SAFETY: see `slots`: indices stay inside `nodes` and `x`.
                    let (t, word, v) = unsafe {
                        let t = _mm256_i32gather_ps::<4>(base as *const f32, i2);
                        let word = _mm256_i32gather_epi32::<4>(base, _mm256_add_epi32(i2, one));
                        let f = _mm256_and_si256(word, feat_mask);
                        let v = _mm256_i32gather_ps::<4>(xp, _mm256_add_epi32(off[g], f));
                        (t, word, v)
                    };
                    let le = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(v, t));
                    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                    let nan_left = _mm256_srai_epi32::<31>(word);
                    let left = _mm256_or_si256(le, _mm256_and_si256(nan, nan_left));
                    // `left` is -1 where the row goes left: 2i + 2 + left.
                    idx[g] = _mm256_add_epi32(_mm256_add_epi32(i2, two), left);
                }
            }
            for g in 0..count {
                let slot = _mm256_sub_epi32(idx[g], first_slot);
                // SAFETY: `out` holds `rows` entries and r + (g + 1) L <= rows.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(r + g * L) as *mut _, slot) };
            }
            r += count * L;
        }
        r
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub fn slots(
        nodes: &[[u32; 2]],
        depth: u32,
        x: &[f32],
        width: usize,
        rows: usize,
        out: &mut [u32],
    ) -> usize {
        super::slots_scalar(nodes, depth, x, width, rows, out)
    }
}

/// The instruction set the perfect layout's walk uses on this CPU.
pub fn isa_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        match simd::isa() {
            simd::Isa::Avx512 => "avx512",
            simd::Isa::Avx2 => "avx2",
            simd::Isa::Scalar => "scalar",
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "scalar"
    }
}

/// A split's test in the general layout.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Test {
    /// `x <= t` (the canonical form of LEQ, LT, GTE, GT).
    Le(f32),
    Eq(f32),
    Neq(f32),
    /// `x` is one of `members[first..first + len]` (truncated first when
    /// `truncate`: see [`Split::Member`]).
    Member {
        first: u32,
        len: u32,
        truncate: bool,
    },
    /// No f32 passes (EQ with a threshold no f32 equals).
    Never,
    /// Every f32 passes (NEQ with such a threshold).
    Always,
}

#[derive(Clone, Copy, Debug)]
struct GeneralNode {
    test: Test,
    feature: u32,
    /// NaN goes to `yes` whatever the test says.
    nan_yes: bool,
    /// A node index, or a leaf index with [`LEAF`].
    yes: u32,
    no: u32,
}

/// Compact nodes with explicit children: see the module docs.
#[derive(Clone, Debug)]
pub struct General {
    nodes: Vec<GeneralNode>,
    members: Vec<f32>,
    roots: Vec<u32>,
}

fn reference(c: Child) -> u32 {
    match c {
        Child::Node(i) => i,
        Child::Leaf(l) => l | LEAF,
    }
}

impl General {
    fn new(e: &Ensemble) -> General {
        let mut members = Vec::new();
        let exact = |t: f64| {
            let f = t as f32;
            (f as f64 == t).then_some(f)
        };
        let nodes = e
            .nodes
            .iter()
            .map(|n| {
                if let Some((t, nan_left, left, right)) = canonical(n) {
                    return GeneralNode {
                        test: Test::Le(t),
                        feature: n.feature,
                        nan_yes: nan_left,
                        yes: reference(left),
                        no: reference(right),
                    };
                }
                let test = match &n.split {
                    Split::Eq(t) => exact(*t).map_or(Test::Never, Test::Eq),
                    Split::Neq(t) => exact(*t).map_or(Test::Always, Test::Neq),
                    Split::Member(values) => {
                        let first = members.len() as u32;
                        members.extend(values.iter().filter_map(|&v| exact(v)));
                        Test::Member {
                            first,
                            len: members.len() as u32 - first,
                            truncate: values.iter().any(|&v| v < 0.0),
                        }
                    }
                    _ => unreachable!("canonical() takes the comparisons"),
                };
                GeneralNode {
                    test,
                    feature: n.feature,
                    nan_yes: n.missing_yes,
                    yes: reference(n.yes),
                    no: reference(n.no),
                }
            })
            .collect();
        General {
            nodes,
            members,
            roots: e.roots.iter().map(|&r| reference(r)).collect(),
        }
    }

    /// The leaf tree `t` sends each of `rows` rows of `x` to.
    fn leaves(&self, t: usize, x: &[f32], width: usize, rows: usize, out: &mut [u32]) {
        for (r, o) in out[..rows].iter_mut().enumerate() {
            let row = &x[r * width..(r + 1) * width];
            let mut c = self.roots[t];
            while c & LEAF == 0 {
                let n = &self.nodes[c as usize];
                let v = row[n.feature as usize];
                let pass = match n.test {
                    Test::Le(t) => v <= t,
                    Test::Eq(t) => v == t,
                    Test::Neq(t) => v != t,
                    Test::Member {
                        first,
                        len,
                        truncate,
                    } => {
                        let v = if truncate {
                            super::ensemble::truncate(v) as f32
                        } else {
                            v
                        };
                        self.members[first as usize..(first + len) as usize].contains(&v)
                    }
                    Test::Never => false,
                    Test::Always => true,
                };
                c = if pass || (n.nan_yes && v.is_nan()) {
                    n.yes
                } else {
                    n.no
                };
            }
            *o = c & !LEAF;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete tree of `depth` levels over `width` features with
    /// thresholds on a grid, NaN directions mixed.
    fn tree(depth: u32, width: usize, seed: u32) -> Vec<[u32; 2]> {
        (0..(1u32 << depth) - 1)
            .map(|i| {
                let h = i
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                let t = ((h >> 8) % 7) as f32 * 0.5 - 1.5;
                let word = (h % width as u32) | if h & 1 << 20 != 0 { NAN_LEFT } else { 0 };
                [t.to_bits(), word]
            })
            .collect()
    }

    fn rows(n: usize, width: usize) -> Vec<f32> {
        (0..n * width)
            .map(|i| match i % 11 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                k => (k as f32 - 6.0) * 0.5,
            })
            .collect()
    }

    #[test]
    fn every_walk_sends_rows_to_the_leaf_the_one_row_walk_finds() {
        for depth in [1, 3, 8, 12] {
            for rows_n in [1, 7, 8, 31, 64, 65, 257] {
                let width = 13;
                let nodes = tree(depth, width, depth * 7 + rows_n as u32);
                let x = rows(rows_n, width);
                let want: Vec<u32> = (0..rows_n)
                    .map(|r| walk_one(&nodes, depth, &x[r * width..(r + 1) * width]))
                    .collect();
                let mut got = vec![u32::MAX; rows_n];
                let done = slots_scalar(&nodes, depth, &x, width, rows_n, &mut got);
                assert_eq!(
                    &got[..done],
                    &want[..done],
                    "scalar, depth {depth}, {rows_n} rows"
                );
                #[cfg(target_arch = "x86_64")]
                {
                    if is_x86_feature_detected!("avx2") {
                        let mut got = vec![u32::MAX; rows_n];
                        // SAFETY: AVX2 was detected just above.
                        let done = unsafe { simd_avx2(&nodes, depth, &x, width, rows_n, &mut got) };
                        assert_eq!(
                            &got[..done],
                            &want[..done],
                            "avx2, depth {depth}, {rows_n} rows"
                        );
                    }
                    if is_x86_feature_detected!("avx512f") {
                        let mut got = vec![u32::MAX; rows_n];
                        // SAFETY: AVX-512F was detected just above.
                        let done =
                            unsafe { simd_avx512(&nodes, depth, &x, width, rows_n, &mut got) };
                        assert_eq!(
                            &got[..done],
                            &want[..done],
                            "avx512, depth {depth}, {rows_n} rows"
                        );
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    use super::simd::{slots_avx2 as simd_avx2, slots_avx512 as simd_avx512};
}
