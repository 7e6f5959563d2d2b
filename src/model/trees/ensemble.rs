//! The data model of a tree ensemble, built from the attributes of
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

use std::collections::HashMap;

use super::attrs::{Attrs, Reals};
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
    fn parse(name: &str) -> Option<Aggregate> {
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

/// Attribute names of the operators, for the checks that say which is wrong.
struct Names {
    ids: &'static str,
    nodeids: &'static str,
    treeids: &'static str,
    weights: &'static str,
}

const REGRESSOR_NAMES: Names = Names {
    ids: "target_ids",
    nodeids: "target_nodeids",
    treeids: "target_treeids",
    weights: "target_weights",
};

const CLASSIFIER_NAMES: Names = Names {
    ids: "class_ids",
    nodeids: "class_nodeids",
    treeids: "class_treeids",
    weights: "class_weights",
};

fn same_len(name: &str, len: usize, expected: usize, of: &str) -> Result<()> {
    if len != expected {
        return Err(Error::attr(
            name,
            format!("has {len} entries but '{of}' has {expected}; they must match"),
        ));
    }
    Ok(())
}

fn index(name: &str, i: usize, v: i64, len: usize, what: &str) -> Result<u32> {
    if v < 0 || v as usize >= len || v > u32::MAX as i64 {
        return Err(Error::attr(
            name,
            format!("entry {i} is {v}, expected a {what} index in 0..{len}"),
        ));
    }
    Ok(v as u32)
}

fn feature(name: &str, i: usize, v: i64) -> Result<u32> {
    if !(0..=u32::MAX as i64).contains(&v) {
        return Err(Error::attr(
            name,
            format!("entry {i} is {v}, expected a feature index >= 0"),
        ));
    }
    Ok(v as u32)
}

impl Ensemble {
    /// TreeEnsembleRegressor (`classifier = false`) or
    /// TreeEnsembleClassifier, ai.onnx.ml opsets 1 and 3.
    pub fn from_v3(attrs: &Attrs, classifier: bool) -> Result<Ensemble> {
        let names = if classifier {
            &CLASSIFIER_NAMES
        } else {
            &REGRESSOR_NAMES
        };
        let aggregate = match attrs.string("aggregate_function")? {
            None => Aggregate::Sum,
            Some(s) => Aggregate::parse(s).ok_or_else(|| {
                Error::attr(
                    "aggregate_function",
                    format!("is '{s}', expected AVERAGE, SUM, MIN or MAX"),
                )
            })?,
        };
        let post_transform = match attrs.string("post_transform")? {
            None => PostTransform::None,
            Some(s) => PostTransform::parse(s).ok_or_else(|| {
                Error::attr(
                    "post_transform",
                    format!("is '{s}', expected NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO or PROBIT"),
                )
            })?,
        };
        let base = attrs.reals_or_tensor("base_values")?;
        let values = attrs
            .reals_or_tensor("nodes_values")?
            .unwrap_or(Reals::F32(Vec::new()));
        let weights = attrs
            .reals_or_tensor(names.weights)?
            .unwrap_or(Reals::F32(Vec::new()));
        let double = values.is_double()
            || weights.is_double()
            || base.as_ref().is_some_and(Reals::is_double);
        let base_values = base.map(|b| b.to_f64()).unwrap_or_default();

        let kind;
        let n_targets;
        if classifier {
            let strings = attrs.strs("classlabels_strings")?;
            let ints = attrs.ints("classlabels_int64s")?;
            let labels = match (strings.is_empty(), ints.is_empty()) {
                (false, true) => ClassLabels::Str(strings),
                (true, false) => ClassLabels::Int(ints),
                (true, true) => {
                    return Err(Error::attr(
                        "classlabels_int64s",
                        "and 'classlabels_strings' are both empty; a classifier needs its labels",
                    ));
                }
                (false, false) => {
                    return Err(Error::attr(
                        "classlabels_int64s",
                        "and 'classlabels_strings' are both given; a classifier has one of them",
                    ));
                }
            };
            if labels.len() < 2 {
                return Err(Error::attr(
                    "classlabels_int64s",
                    "holds one class; herd runs classifiers of two classes or more",
                ));
            }
            n_targets = labels.len();
            let class_ids = attrs.ints(names.ids)?;
            let distinct: std::collections::BTreeSet<i64> = class_ids.iter().copied().collect();
            let weights_all_positive = (0..weights.len()).all(|i| weights.get(i) >= 0.0);
            kind = Kind::Classifier(Classes {
                labels,
                binary: n_targets == 2 && distinct.len() == 1,
                weights_all_positive,
            });
        } else {
            let n = attrs.int("n_targets")?.unwrap_or(0);
            if n <= 0 || n > u32::MAX as i64 {
                return Err(Error::attr(
                    "n_targets",
                    format!("is {n}, expected at least 1"),
                ));
            }
            n_targets = n as usize;
            kind = Kind::Regressor;
        }
        // One base value per target, or none (a two-class classifier may
        // also give one), as onnxruntime requires.
        let n_base = base_values.len();
        if n_base != 0 && n_base != n_targets && !(classifier && n_targets == 2 && n_base == 1) {
            return Err(Error::attr(
                "base_values",
                format!("has {n_base} entries for {n_targets} targets; expected 0 or {n_targets}"),
            ));
        }

        let treeids = attrs.ints("nodes_treeids")?;
        let nodeids = attrs.ints("nodes_nodeids")?;
        let featureids = attrs.ints("nodes_featureids")?;
        let modes = attrs.strs("nodes_modes")?;
        let trueids = attrs.ints("nodes_truenodeids")?;
        let falseids = attrs.ints("nodes_falsenodeids")?;
        let missing = attrs.ints("nodes_missing_value_tracks_true")?;
        let n = treeids.len();
        if n == 0 {
            return Err(Error::attr(
                "nodes_treeids",
                "is empty; the ensemble has no trees",
            ));
        }
        same_len("nodes_nodeids", nodeids.len(), n, "nodes_treeids")?;
        same_len("nodes_featureids", featureids.len(), n, "nodes_treeids")?;
        same_len("nodes_modes", modes.len(), n, "nodes_treeids")?;
        same_len("nodes_truenodeids", trueids.len(), n, "nodes_treeids")?;
        same_len("nodes_falsenodeids", falseids.len(), n, "nodes_treeids")?;
        same_len("nodes_values", values.len(), n, "nodes_treeids")?;
        if !missing.is_empty() && missing.len() > n {
            return Err(Error::attr(
                "nodes_missing_value_tracks_true",
                format!("has {} entries for {n} nodes", missing.len()),
            ));
        }

        // Each attribute node becomes a branching node or a leaf.
        let mut by_id: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        let mut slot = Vec::with_capacity(n); // Child per attribute node
        let (mut n_nodes, mut n_leaves) = (0u32, 0u32);
        for i in 0..n {
            if by_id.insert((treeids[i], nodeids[i]), i).is_some() {
                return Err(Error::node(treeids[i], nodeids[i], "appears twice"));
            }
            if modes[i] == "LEAF" {
                slot.push(Child::Leaf(n_leaves));
                n_leaves += 1;
            } else {
                slot.push(Child::Node(n_nodes));
                n_nodes += 1;
            }
        }
        let find = |tree: i64, node: i64, from: i64, which: &str| -> Result<Child> {
            match by_id.get(&(tree, node)) {
                Some(&j) => Ok(slot[j]),
                None => Err(Error::node(
                    tree,
                    from,
                    format!("its {which} node {node} does not exist in the tree"),
                )),
            }
        };
        let mut nodes = Vec::with_capacity(n_nodes as usize);
        for i in 0..n {
            if matches!(slot[i], Child::Leaf(_)) {
                continue;
            }
            let (tree, id) = (treeids[i], nodeids[i]);
            let t = values.get(i);
            let split = match modes[i].as_str() {
                "BRANCH_LEQ" => Split::Leq(t),
                "BRANCH_LT" => Split::Lt(t),
                "BRANCH_GTE" => Split::Gte(t),
                "BRANCH_GT" => Split::Gt(t),
                "BRANCH_EQ" => Split::Eq(t),
                "BRANCH_NEQ" => Split::Neq(t),
                other => {
                    return Err(Error::node(
                        tree,
                        id,
                        format!(
                            "mode '{other}' is not one of LEAF, BRANCH_LEQ, BRANCH_LT, \
                             BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ"
                        ),
                    ));
                }
            };
            let yes = find(tree, trueids[i], id, "true")?;
            let no = find(tree, falseids[i], id, "false")?;
            nodes.push(Node {
                feature: feature("nodes_featureids", i, featureids[i])?,
                split,
                missing_yes: missing.get(i) == Some(&1),
                yes,
                no,
            });
        }

        // Leaf weights, in (tree, node, position) order as onnxruntime
        // sorts them; the first weight of a leaf is its only one when the
        // ensemble has one target.
        let ids = attrs.ints(names.ids)?;
        let w_nodes = attrs.ints(names.nodeids)?;
        let w_trees = attrs.ints(names.treeids)?;
        same_len(names.nodeids, w_nodes.len(), ids.len(), names.ids)?;
        same_len(names.treeids, w_trees.len(), ids.len(), names.ids)?;
        same_len(names.weights, weights.len(), ids.len(), names.ids)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| (w_trees[i], w_nodes[i], i));
        let mut leaf_weights: Vec<Vec<Weight>> = vec![Vec::new(); n_leaves as usize];
        for &i in &order {
            let Some(&j) = by_id.get(&(w_trees[i], w_nodes[i])) else {
                return Err(Error::node(
                    w_trees[i],
                    w_nodes[i],
                    format!(
                        "'{}' entry {i} names a node that does not exist",
                        names.nodeids
                    ),
                ));
            };
            let Child::Leaf(leaf) = slot[j] else {
                continue; // a weight on a branching node: ignored, as onnxruntime does
            };
            if n_targets > 1 && (ids[i] < 0 || ids[i] as usize >= n_targets) {
                return Err(Error::attr(
                    names.ids,
                    format!(
                        "entry {i} is {}, expected an index in 0..{n_targets}",
                        ids[i]
                    ),
                ));
            }
            leaf_weights[leaf as usize].push(Weight {
                target: ids[i].clamp(0, u32::MAX as i64) as u32,
                value: weights.get(i),
            });
        }
        let mut leaves = Vec::with_capacity(n_leaves as usize);
        let mut all_weights = Vec::with_capacity(ids.len());
        for i in 0..n {
            if let Child::Leaf(leaf) = slot[i] {
                let w = &leaf_weights[leaf as usize];
                if w.is_empty() {
                    return Err(Error::node(
                        treeids[i],
                        nodeids[i],
                        "is a leaf without a weight",
                    ));
                }
                leaves.push((all_weights.len() as u32, w.len() as u32));
                all_weights.extend_from_slice(w);
            }
        }

        let mut roots = Vec::new();
        for i in 0..n {
            if i == 0 || treeids[i] != treeids[i - 1] {
                roots.push(slot[i]);
            }
        }
        Ensemble {
            kind,
            n_targets,
            aggregate,
            post_transform,
            base_values,
            double,
            nodes,
            leaves,
            weights: all_weights,
            roots,
            depths: Vec::new(),
            width: 0,
        }
        .checked(|node| {
            let i = (0..n).find(|&i| slot[i] == Child::Node(node)).unwrap_or(0);
            (treeids[i], nodeids[i])
        })
    }

    /// TreeEnsemble, ai.onnx.ml opset 5.
    pub fn from_v5(attrs: &Attrs) -> Result<Ensemble> {
        let aggregate = match attrs.int("aggregate_function")?.unwrap_or(1) {
            0 => Aggregate::Average,
            1 => Aggregate::Sum,
            2 => Aggregate::Min,
            3 => Aggregate::Max,
            v => {
                return Err(Error::attr(
                    "aggregate_function",
                    format!("is {v}, expected 0 (AVERAGE), 1 (SUM), 2 (MIN) or 3 (MAX)"),
                ));
            }
        };
        let post_transform = match attrs.int("post_transform")?.unwrap_or(0) {
            // onnxruntime's numbering, which swaps SOFTMAX and LOGISTIC
            // against the operator's documentation (1 = SOFTMAX there): a
            // model scores as the runtime it was checked with.
            0 => PostTransform::None,
            1 => PostTransform::Logistic,
            2 => PostTransform::Softmax,
            3 => PostTransform::SoftmaxZero,
            4 => PostTransform::Probit,
            v => {
                return Err(Error::attr(
                    "post_transform",
                    format!(
                        "is {v}, expected 0 (NONE), 1 (LOGISTIC), 2 (SOFTMAX), \
                         3 (SOFTMAX_ZERO) or 4 (PROBIT)"
                    ),
                ));
            }
        };
        let n = attrs.int("n_targets")?.unwrap_or(0);
        if n <= 0 || n > u32::MAX as i64 {
            return Err(Error::attr(
                "n_targets",
                format!("is {n}, expected at least 1"),
            ));
        }
        let n_targets = n as usize;
        let leaf_targets = attrs.ints("leaf_targetids")?;
        let leaf_weights = attrs
            .reals("leaf_weights")?
            .unwrap_or(Reals::F32(Vec::new()));
        same_len(
            "leaf_weights",
            leaf_weights.len(),
            leaf_targets.len(),
            "leaf_targetids",
        )?;
        let splits = attrs
            .reals("nodes_splits")?
            .unwrap_or(Reals::F32(Vec::new()));
        let membership = attrs.reals("membership_values")?;
        let double = leaf_weights.is_double()
            || splits.is_double()
            || membership.as_ref().is_some_and(Reals::is_double);
        let modes = attrs.ints("nodes_modes")?;
        let featureids = attrs.ints("nodes_featureids")?;
        let trueids = attrs.ints("nodes_truenodeids")?;
        let falseids = attrs.ints("nodes_falsenodeids")?;
        let trueleafs = attrs.ints("nodes_trueleafs")?;
        let falseleafs = attrs.ints("nodes_falseleafs")?;
        let missing = attrs.ints("nodes_missing_value_tracks_true")?;
        let tree_roots = attrs.ints("tree_roots")?;
        let n_nodes = modes.len();
        same_len("nodes_featureids", featureids.len(), n_nodes, "nodes_modes")?;
        same_len("nodes_splits", splits.len(), n_nodes, "nodes_modes")?;
        same_len("nodes_truenodeids", trueids.len(), n_nodes, "nodes_modes")?;
        same_len("nodes_falsenodeids", falseids.len(), n_nodes, "nodes_modes")?;
        same_len("nodes_trueleafs", trueleafs.len(), n_nodes, "nodes_modes")?;
        same_len("nodes_falseleafs", falseleafs.len(), n_nodes, "nodes_modes")?;
        if !missing.is_empty() {
            same_len(
                "nodes_missing_value_tracks_true",
                missing.len(),
                n_nodes,
                "nodes_modes",
            )?;
        }
        if tree_roots.is_empty() {
            return Err(Error::attr(
                "tree_roots",
                "is empty; the ensemble has no trees",
            ));
        }
        let n_leaves = leaf_targets.len();
        let mut leaves = Vec::with_capacity(n_leaves);
        let mut weights = Vec::with_capacity(n_leaves);
        for (i, &target) in leaf_targets.iter().enumerate() {
            if target < 0 || (n_targets > 1 && target as usize >= n_targets) {
                return Err(Error::attr(
                    "leaf_targetids",
                    format!("entry {i} is {target}, expected an index in 0..{n_targets}"),
                ));
            }
            leaves.push((i as u32, 1));
            weights.push(Weight {
                target: target.min(u32::MAX as i64) as u32,
                value: leaf_weights.get(i),
            });
        }
        // BRANCH_MEMBER nodes take their sets from `membership_values` in
        // node order, each set ended by a NaN.
        let membership = membership.map(|m| m.to_f64()).unwrap_or_default();
        let mut sets = membership.split(|v| v.is_nan());
        let child = |i: usize, leaf: i64, id: i64, which: &str| -> Result<Child> {
            if leaf != 0 {
                Ok(Child::Leaf(index(which, i, id, n_leaves, "leaf")?))
            } else {
                Ok(Child::Node(index(which, i, id, n_nodes, "node")?))
            }
        };
        let mut nodes = Vec::with_capacity(n_nodes);
        for i in 0..n_nodes {
            let t = splits.get(i);
            let split = match modes[i] {
                0 => Split::Leq(t),
                1 => Split::Lt(t),
                2 => Split::Gte(t),
                3 => Split::Gt(t),
                4 => Split::Eq(t),
                5 => Split::Neq(t),
                6 => Split::Member(sets.next().map(<[f64]>::to_vec).ok_or_else(|| {
                    Error::attr(
                        "membership_values",
                        format!("has no set for BRANCH_MEMBER node {i}"),
                    )
                })?),
                m => {
                    return Err(Error::attr(
                        "nodes_modes",
                        format!("entry {i} is {m}, expected 0 to 6 (BRANCH_LEQ .. BRANCH_MEMBER)"),
                    ));
                }
            };
            nodes.push(Node {
                feature: feature("nodes_featureids", i, featureids[i])?,
                split,
                missing_yes: missing.get(i) == Some(&1),
                yes: child(i, trueleafs[i], trueids[i], "nodes_truenodeids")?,
                no: child(i, falseleafs[i], falseids[i], "nodes_falsenodeids")?,
            });
        }
        // A root whose two children are the same leaf is a tree of that one
        // leaf (onnxruntime's reading of the spec).
        let mut roots = Vec::with_capacity(tree_roots.len());
        for (k, &r) in tree_roots.iter().enumerate() {
            let r = index("tree_roots", k, r, n_nodes, "node")? as usize;
            roots.push(
                if trueids[r] == falseids[r] && trueleafs[r] != 0 && falseleafs[r] != 0 {
                    Child::Leaf(index("nodes_truenodeids", r, trueids[r], n_leaves, "leaf")?)
                } else {
                    Child::Node(r as u32)
                },
            );
        }
        Ensemble {
            kind: Kind::Regressor,
            n_targets,
            aggregate,
            post_transform,
            base_values: Vec::new(),
            double,
            nodes,
            leaves,
            weights,
            roots,
            depths: Vec::new(),
            width: 0,
        }
        .checked(|node| (-1, node as i64))
    }

    /// Finds each tree's depth, refusing cycles, and the input width.
    /// `name` says which (tree, node) ids a node index had in the model.
    fn checked(mut self, name: impl Fn(u32) -> (i64, i64)) -> Result<Ensemble> {
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
