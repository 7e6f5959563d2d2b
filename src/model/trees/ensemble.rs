//! The data model of a tree ensemble, built (in `load`) from the attributes of
//! TreeEnsembleClassifier / TreeEnsembleRegressor (ai.onnx.ml 1 and 3) or
//! TreeEnsemble (ai.onnx.ml 5), checked once at load.
//!
//! The quirks onnxruntime gives these operators are kept, since a model's
//! scores must equal onnxruntime's: a tree is a run of consecutive nodes
//! with the same tree id, rooted at the run's first node; with one target a
//! leaf contributes only its first weight; a classifier always sums (its
//! `aggregate_function` is not read); weights on a node that is not a leaf
//! are ignored. Where onnxruntime would read out of bounds, loop forever or
//! crash (a target id past the last target, a cycle, a leaf without a
//! weight) herd refuses the model instead.

use super::error::{Error, Result};
use super::transform::PostTransform;

/// How the trees' leaf weights combine (`aggregate_function`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Average,
    Sum,
    Min,
    Max,
}

impl Aggregate {
    pub(super) fn parse(name: &str) -> Option<Aggregate> {
        Some(match name {
            "AVERAGE" => Aggregate::Average,
            "SUM" => Aggregate::Sum,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Average => "AVERAGE",
            Aggregate::Sum => "SUM",
            Aggregate::Min => "MIN",
            Aggregate::Max => "MAX",
        }
    }
}

/// A node's test of its feature value `x` against its threshold; the node
/// goes to its `yes` child when the test holds. Thresholds are kept as f64
/// (exact for float models) and `x` is compared after widening, as
/// onnxruntime compares a float input with a double threshold.
#[derive(Clone, Debug, PartialEq)]
pub enum Split {
    Leq(f64),
    Lt(f64),
    Gte(f64),
    Gt(f64),
    Eq(f64),
    Neq(f64),
    /// `x` is one of the values (BRANCH_MEMBER of TreeEnsemble 5). As in
    /// onnxruntime 1.31: when a value is negative, `x` is truncated to an
    /// integer before the test (-1.5 is a member of {-1, 2}); otherwise it
    /// must equal a value.
    Member(Vec<f64>),
}

impl Split {
    /// Whether the test holds for `x` (NaN fails every test but NEQ).
    pub fn holds(&self, x: f32) -> bool {
        let x = x as f64;
        match self {
            Split::Leq(t) => x <= *t,
            Split::Lt(t) => x < *t,
            Split::Gte(t) => x >= *t,
            Split::Gt(t) => x > *t,
            Split::Eq(t) => x == *t,
            Split::Neq(t) => x != *t,
            Split::Member(values) => {
                if values.iter().any(|&v| v < 0.0) {
                    values.contains(&(truncate(x as f32) as f64))
                } else {
                    values.contains(&x)
                }
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Split::Leq(_) => "BRANCH_LEQ",
            Split::Lt(_) => "BRANCH_LT",
            Split::Gte(_) => "BRANCH_GTE",
            Split::Gt(_) => "BRANCH_GT",
            Split::Eq(_) => "BRANCH_EQ",
            Split::Neq(_) => "BRANCH_NEQ",
            Split::Member(_) => "BRANCH_MEMBER",
        }
    }
}

/// `x` as a C cast to a 32-bit integer does it on x86 (NaN and values out
/// of range give `i32::MIN`).
pub fn truncate(x: f32) -> i32 {
    if !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// Where a branch leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Child {
    Node(u32),
    Leaf(u32),
}

/// A branching node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub feature: u32,
    pub split: Split,
    /// A NaN feature value goes to `yes` (else it goes wherever the test
    /// sends it: `no`, or `yes` for NEQ).
    pub missing_yes: bool,
    pub yes: Child,
    pub no: Child,
}

impl Node {
    /// The child a feature value `x` leads to.
    #[inline]
    pub fn next(&self, x: f32) -> Child {
        if self.split.holds(x) || (self.missing_yes && x.is_nan()) {
            self.yes
        } else {
            self.no
        }
    }
}

/// One weight of a leaf: what it adds to which target (or class).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weight {
    pub target: u32,
    pub value: f64,
}

/// Class labels of a classifier, as its `classlabels_*` attribute gives them.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassLabels {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl ClassLabels {
    pub fn len(&self) -> usize {
        match self {
            ClassLabels::Int(v) => v.len(),
            ClassLabels::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label code onnxruntime's aggregation works with for class
    /// `index`: the integer label, or the index itself for string labels.
    pub fn code(&self, index: usize) -> i64 {
        match self {
            ClassLabels::Int(v) => v[index],
            ClassLabels::Str(_) => index as i64,
        }
    }
}

/// What a classifier knows beyond a regressor.
#[derive(Clone, Debug, PartialEq)]
pub struct Classes {
    pub labels: ClassLabels,
    /// Two classes, weights on one class id only: the other class's score
    /// is derived from it.
    pub binary: bool,
    /// No class weight is negative (binary: the score is a probability).
    pub weights_all_positive: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Regressor,
    Classifier(Classes),
}

/// A tree ensemble, ready to score rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Ensemble {
    pub kind: Kind,
    /// Targets (regressor) or classes (classifier): the output width.
    pub n_targets: usize,
    pub aggregate: Aggregate,
    pub post_transform: PostTransform,
    pub base_values: Vec<f64>,
    /// The model gave doubles: scores add up in f64 (else in f32, as
    /// onnxruntime adds them).
    pub double: bool,
    pub nodes: Vec<Node>,
    /// Per leaf, its range of `weights`.
    pub leaves: Vec<(u32, u32)>,
    pub weights: Vec<Weight>,
    /// The root of each tree.
    pub roots: Vec<Child>,
    /// Nodes on each tree's deepest root-to-leaf path, the leaf included.
    pub depths: Vec<u32>,
    /// One more than the largest feature index any node reads (0: none).
    pub width: usize,
}

impl Ensemble {
    /// Finds each tree's depth, refusing cycles, and the input width.
    /// `name` says which (tree, node) ids a node index had in the model.
    pub(super) fn checked(mut self, name: impl Fn(u32) -> (i64, i64)) -> Result<Ensemble> {
        const UNSEEN: u32 = 0;
        const OPEN: u32 = u32::MAX;
        // depth[node]: nodes on its deepest path down, leaf included.
        let mut depth = vec![UNSEEN; self.nodes.len()];
        let mut stack: Vec<u32> = Vec::new();
        let child_depth = |c: Child, depth: &[u32]| match c {
            Child::Leaf(_) => 1,
            Child::Node(j) => depth[j as usize],
        };
        for &root in &self.roots {
            let Child::Node(r) = root else { continue };
            if depth[r as usize] != UNSEEN {
                continue;
            }
            stack.push(r);
            while let Some(&i) = stack.last() {
                let node = &self.nodes[i as usize];
                if depth[i as usize] == UNSEEN {
                    depth[i as usize] = OPEN;
                    for c in [node.yes, node.no] {
                        if let Child::Node(j) = c {
                            match depth[j as usize] {
                                UNSEEN => stack.push(j),
                                OPEN => {
                                    let (t, id) = name(i);
                                    return Err(Error::node(
                                        t,
                                        id,
                                        "leads back to itself (the tree has a cycle)",
                                    ));
                                }
                                _ => {}
                            }
                        }
                    }
                } else {
                    stack.pop();
                    if depth[i as usize] == OPEN {
                        let d = 1 + child_depth(node.yes, &depth).max(child_depth(node.no, &depth));
                        depth[i as usize] = d;
                    }
                }
            }
        }
        self.depths = self.roots.iter().map(|&r| child_depth(r, &depth)).collect();
        self.width = self
            .nodes
            .iter()
            .zip(&depth)
            .filter(|(_, d)| **d != UNSEEN)
            .map(|(n, _)| n.feature as usize + 1)
            .max()
            .unwrap_or(0);
        Ok(self)
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Node visits per row for planning: each tree's deepest path, summed.
    pub fn cost_per_row(&self) -> u64 {
        self.depths.iter().map(|&d| d as u64).sum()
    }

    pub fn classes(&self) -> Option<&Classes> {
        match &self.kind {
            Kind::Classifier(c) => Some(c),
            Kind::Regressor => None,
        }
    }

    /// The leaf tree `t` sends row `x` to.
    #[inline]
    pub fn leaf(&self, t: usize, x: &[f32]) -> u32 {
        let mut c = self.roots[t];
        loop {
            match c {
                Child::Leaf(l) => return l,
                Child::Node(i) => {
                    let node = &self.nodes[i as usize];
                    c = node.next(x[node.feature as usize]);
                }
            }
        }
    }

    pub fn leaf_weights(&self, leaf: u32) -> &[Weight] {
        let (first, len) = self.leaves[leaf as usize];
        &self.weights[first as usize..(first + len) as usize]
    }
}
