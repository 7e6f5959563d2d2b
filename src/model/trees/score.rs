//! Scoring a tree ensemble: the reference loop (one row, one tree at a
//! time, on the model as loaded) and the aggregation and finalisation that
//! every path shares, written to give onnxruntime's numbers: scores add up
//! in the model's precision in tree order, and the classifier's binary
//! cases derive the second class exactly as onnxruntime does.

use std::ops::{Add, Div, Neg, Sub};

use super::ensemble::{Aggregate, Ensemble, Kind};
use super::transform::{PostTransform, logistic, probit};

/// The number type scores add up in: f32 for float models, f64 for
/// double ones.
pub trait Acc:
    Copy
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Send
    + Sync
{
    fn of(v: f64) -> Self;
    fn f32(self) -> f32;
}

impl Acc for f32 {
    #[inline]
    fn of(v: f64) -> f32 {
        v as f32
    }
    #[inline]
    fn f32(self) -> f32 {
        self
    }
}

impl Acc for f64 {
    #[inline]
    fn of(v: f64) -> f64 {
        v
    }
    #[inline]
    fn f32(self) -> f32 {
        self as f32
    }
}

/// Scores of a run of rows: `width` values per row, and a label code per
/// row for classifiers (the integer label, or the index of a string label).
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub width: usize,
    pub scores: Vec<f32>,
    pub labels: Option<Vec<i64>>,
}

/// One row's running aggregate: a score per target and whether any leaf
/// gave that target a weight.
pub struct RowState<A> {
    pub scores: Vec<A>,
    pub has: Vec<bool>,
}

impl<A: Acc> RowState<A> {
    pub fn new(n: usize) -> RowState<A> {
        RowState {
            scores: vec![A::default(); n],
            has: vec![false; n],
        }
    }

    pub fn clear(&mut self) {
        self.scores.fill(A::default());
        self.has.fill(false);
    }
}

impl Ensemble {
    /// How leaf weights combine: a classifier always sums.
    pub fn effective_aggregate(&self) -> Aggregate {
        match self.kind {
            Kind::Classifier(_) => Aggregate::Sum,
            Kind::Regressor => self.aggregate,
        }
    }

    /// Adds leaf `leaf`'s weights to a row's aggregate.
    #[inline]
    pub fn add_leaf<A: Acc>(&self, leaf: u32, state: &mut RowState<A>) {
        let weights = self.leaf_weights(leaf);
        let agg = self.effective_aggregate();
        if self.n_targets == 1 {
            // One target: the leaf's first weight, whatever its target id.
            let v = A::of(weights[0].value);
            let (s, has) = (&mut state.scores[0], &mut state.has[0]);
            match agg {
                Aggregate::Sum | Aggregate::Average => *s = *s + v,
                Aggregate::Min => {
                    if !*has || v < *s {
                        *s = v;
                    }
                    *has = true;
                }
                Aggregate::Max => {
                    if !*has || v > *s {
                        *s = v;
                    }
                    *has = true;
                }
            }
            return;
        }
        for w in weights {
            let k = w.target as usize;
            let v = A::of(w.value);
            let (s, has) = (&mut state.scores[k], &mut state.has[k]);
            match agg {
                Aggregate::Sum | Aggregate::Average => *s = *s + v,
                Aggregate::Min => {
                    if !*has || v < *s {
                        *s = v;
                    }
                }
                Aggregate::Max => {
                    if !*has || v > *s {
                        *s = v;
                    }
                }
            }
            *has = true;
        }
    }

    /// Base values, averaging and the post transform: writes the row's
    /// `n_targets` outputs to `z` and returns its label code (0 for a
    /// regressor).
    pub fn finalize<A: Acc>(&self, state: &mut RowState<A>, z: &mut [f32]) -> i64 {
        match &self.kind {
            Kind::Regressor => {
                self.finalize_regressor(state, z);
                0
            }
            Kind::Classifier(_) => self.finalize_classifier(state, z),
        }
    }

    fn finalize_regressor<A: Acc>(&self, state: &mut RowState<A>, z: &mut [f32]) {
        let n = self.n_targets;
        let n_trees = A::of(self.n_trees() as f64);
        let base = &self.base_values;
        let s = &mut state.scores;
        if n == 1 {
            let origin = if base.len() == 1 {
                A::of(base[0])
            } else {
                A::default()
            };
            let v = match self.aggregate {
                Aggregate::Sum => s[0] + origin,
                Aggregate::Average => s[0] / n_trees + origin,
                Aggregate::Min | Aggregate::Max => {
                    if state.has[0] {
                        s[0] + origin
                    } else {
                        origin
                    }
                }
            };
            // With one target only PROBIT applies (onnxruntime skips the others).
            z[0] = if self.post_transform == PostTransform::Probit {
                probit(v.f32())
            } else {
                v.f32()
            };
            return;
        }
        // Several targets: a target no leaf gave a weight to scores 0, its
        // base value not added (onnxruntime 1.31).
        let use_base = base.len() == n;
        for k in 0..n {
            let b = if use_base {
                A::of(base[k])
            } else {
                A::default()
            };
            s[k] = if !state.has[k] {
                A::default()
            } else {
                match self.aggregate {
                    Aggregate::Sum | Aggregate::Min | Aggregate::Max => s[k] + b,
                    Aggregate::Average => s[k] / n_trees + b,
                }
            };
        }
        write_scores(&s[..], self.post_transform, -1, z);
    }

    fn finalize_classifier<A: Acc>(&self, state: &mut RowState<A>, z: &mut [f32]) -> i64 {
        let Kind::Classifier(classes) = &self.kind else {
            unreachable!("finalize_classifier on a regressor")
        };
        let base = &self.base_values;
        let (s, has) = (&mut state.scores, &mut state.has);
        let n = self.n_targets;
        if n > 2 {
            for k in 0..base.len() {
                if has[k] {
                    s[k] = s[k] + A::of(base[k]);
                } else {
                    s[k] = A::of(base[k]);
                    has[k] = true;
                }
            }
            // The first class with the highest score; class 0 when no class
            // has a score at all.
            let mut best: Option<usize> = None;
            for k in 0..n {
                if has[k] && best.is_none_or(|b| s[k] > s[b]) {
                    best = Some(k);
                }
            }
            write_scores(&s[..], self.post_transform, -1, z);
            return classes.labels.code(best.unwrap_or(0));
        }
        // Two classes.
        let mut add_second = -1;
        let mut len = 2;
        match base.len() {
            2 => {
                if has[1] {
                    s[1] = A::of(base[1]) + s[0];
                    s[0] = -s[1];
                    has[1] = true;
                } else {
                    s[1] = s[1] + A::of(base[1]);
                    s[0] = s[0] + A::of(base[0]);
                }
            }
            1 => {
                s[0] = s[0] + A::of(base[0]);
                if !has[1] {
                    len = 1;
                }
            }
            0 => {
                add_second = 3;
                if !has[1] {
                    len = 1;
                }
            }
            _ => {}
        }
        let positive = if len == 2 && has[1] {
            s[1]
        } else if has[0] {
            s[0]
        } else {
            A::default()
        };
        let code = if classes.binary {
            if classes.weights_all_positive {
                if positive > A::of(0.5) {
                    add_second = 0;
                    classes.labels.code(1)
                } else {
                    add_second = 1;
                    classes.labels.code(0)
                }
            } else if positive > A::default() {
                add_second = 2;
                classes.labels.code(1)
            } else {
                add_second = 3;
                classes.labels.code(0)
            }
        } else if positive > A::default() {
            1
        } else {
            0
        };
        if len == 2 {
            // Both classes written: a class without a weight scores 0.
            for k in 0..2 {
                if !has[k] {
                    s[k] = A::default();
                }
            }
        }
        write_scores(&s[..len], self.post_transform, add_second, z);
        code
    }

    /// The reference: every row through every tree on the model as loaded.
    pub fn score_reference(&self, x: &[f32], rows: usize, width: usize) -> Scored {
        if self.double {
            self.score_reference_in::<f64>(x, rows, width)
        } else {
            self.score_reference_in::<f32>(x, rows, width)
        }
    }

    fn score_reference_in<A: Acc>(&self, x: &[f32], rows: usize, width: usize) -> Scored {
        let n = self.n_targets;
        let mut scores = vec![0.0f32; rows * n];
        let mut labels = self.classes().map(|_| vec![0i64; rows]);
        let mut state = RowState::<A>::new(n);
        for r in 0..rows {
            let row = &x[r * width..(r + 1) * width];
            state.clear();
            for t in 0..self.n_trees() {
                let leaf = self.leaf(t, row);
                self.add_leaf(leaf, &mut state);
            }
            let code = self.finalize(&mut state, &mut scores[r * n..(r + 1) * n]);
            if let Some(l) = labels.as_mut() {
                l[r] = code;
            }
        }
        Scored {
            width: n,
            scores,
            labels,
        }
    }
}

/// Writes finished scores (`len >= 2`, or one score of a binary
/// classifier) to `z`, transformed. With one score `add_second` says how
/// the second class is derived: 0 or 1, `1 - p` (p through the logistic
/// when that is the transform); 2 or 3, the negated score (both through the
/// logistic when that is the transform); -1, not at all. Other transforms
/// do not apply to one score, as in onnxruntime.
pub fn write_scores<A: Acc>(
    scores: &[A],
    transform: PostTransform,
    add_second: i32,
    z: &mut [f32],
) {
    if scores.len() >= 2 {
        for (o, s) in z.iter_mut().zip(scores) {
            *o = s.f32();
        }
        transform.apply_row(&mut z[..scores.len()]);
        return;
    }
    let s = scores[0];
    match (add_second, transform) {
        // onnxruntime leaves the second column unwritten here: NaN says so.
        (_, PostTransform::Probit) => {
            z[0] = probit(s.f32());
            if add_second >= 0 {
                z[1] = f32::NAN;
            }
        }
        (0 | 1, PostTransform::Logistic) => {
            let p = logistic(s.f32());
            z[0] = 1.0 - p;
            z[1] = p;
        }
        (0 | 1, _) => {
            z[0] = (A::of(1.0) - s).f32();
            z[1] = s.f32();
        }
        (2 | 3, PostTransform::Logistic) => {
            z[0] = logistic((-s).f32());
            z[1] = logistic(s.f32());
        }
        (2 | 3, _) => {
            z[0] = (-s).f32();
            z[1] = s.f32();
        }
        _ => z[0] = s.f32(),
    }
}
