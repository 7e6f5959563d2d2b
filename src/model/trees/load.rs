//! Building an [`Ensemble`] from an operator's attributes: the opset 1/3
//! TreeEnsembleClassifier and TreeEnsembleRegressor (nodes named by tree
//! and node id, weights listed apart) and the opset 5 TreeEnsemble (nodes
//! and leaves by index). Each step reads one concern: the transforms, the
//! targets or classes, the node table, the leaf weights, the roots; what
//! every tree must satisfy is checked once after, in
//! [`Ensemble::checked`].

use std::collections::HashMap;

use super::attrs::{Attrs, Reals};
use super::ensemble::{
    Aggregate, Child, ClassLabels, Classes, Ensemble, Kind, Node, Split, Weight,
};
use super::error::{Error, Result};
use super::transform::PostTransform;

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

/// Each leaf's range of weights, and the weights.
type LeafTable = (Vec<(u32, u32)>, Vec<Weight>);

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

/// `n_targets`, which must be at least 1.
fn n_targets(attrs: &Attrs) -> Result<usize> {
    let n = attrs.int("n_targets")?.unwrap_or(0);
    if n <= 0 || n > u32::MAX as i64 {
        return Err(Error::attr(
            "n_targets",
            format!("is {n}, expected at least 1"),
        ));
    }
    Ok(n as usize)
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
        let (aggregate, post_transform) = v3_transforms(attrs)?;
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
        let (kind, n_targets) = if classifier {
            v3_classes(attrs, names, &weights)?
        } else {
            (Kind::Regressor, n_targets(attrs)?)
        };
        // One base value per target, or none (a two-class classifier may
        // also give one), as onnxruntime requires.
        let n_base = base_values.len();
        if n_base != 0 && n_base != n_targets && !(classifier && n_targets == 2 && n_base == 1) {
            return Err(Error::attr(
                "base_values",
                format!("has {n_base} entries for {n_targets} targets; expected 0 or {n_targets}"),
            ));
        }
        let nodes = V3Nodes::read(attrs, values)?;
        let table = V3Table::new(&nodes)?;
        let branches = table.branches(&nodes)?;
        let (leaves, weights) = table.leaf_weights(attrs, names, &nodes, &weights, n_targets)?;
        let roots = (0..nodes.len())
            .filter(|&i| i == 0 || nodes.treeids[i] != nodes.treeids[i - 1])
            .map(|i| table.slot[i])
            .collect();
        Ensemble {
            kind,
            n_targets,
            aggregate,
            post_transform,
            base_values,
            double,
            nodes: branches,
            leaves,
            weights,
            roots,
            depths: Vec::new(),
            width: 0,
        }
        .checked(|node| {
            let i = (0..nodes.len())
                .find(|&i| table.slot[i] == Child::Node(node))
                .unwrap_or(0);
            (nodes.treeids[i], nodes.nodeids[i])
        })
    }

    /// TreeEnsemble, ai.onnx.ml opset 5.
    pub fn from_v5(attrs: &Attrs) -> Result<Ensemble> {
        let (aggregate, post_transform) = v5_transforms(attrs)?;
        let n_targets = n_targets(attrs)?;
        let (targets, values) = v5_leaf_attrs(attrs)?;
        let nodes = V5Nodes::read(attrs)?;
        let (leaves, weights) = v5_leaves(&targets, &values, n_targets)?;
        let double = values.is_double()
            || nodes.splits.is_double()
            || nodes.membership.as_ref().is_some_and(Reals::is_double);
        let branches = nodes.branches(leaves.len())?;
        let roots = nodes.roots(leaves.len())?;
        Ensemble {
            kind: Kind::Regressor,
            n_targets,
            aggregate,
            post_transform,
            base_values: Vec::new(),
            double,
            nodes: branches,
            leaves,
            weights,
            roots,
            depths: Vec::new(),
            width: 0,
        }
        .checked(|node| (-1, node as i64))
    }
}

/// `aggregate_function` and `post_transform` of opsets 1 and 3 (names).
fn v3_transforms(attrs: &Attrs) -> Result<(Aggregate, PostTransform)> {
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
    Ok((aggregate, post_transform))
}

/// A classifier's labels and what its weights say about them.
fn v3_classes(attrs: &Attrs, names: &Names, weights: &Reals) -> Result<(Kind, usize)> {
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
    let n_targets = labels.len();
    let class_ids = attrs.ints(names.ids)?;
    let distinct: std::collections::BTreeSet<i64> = class_ids.iter().copied().collect();
    let weights_all_positive = (0..weights.len()).all(|i| weights.get(i) >= 0.0);
    let classes = Classes {
        labels,
        binary: n_targets == 2 && distinct.len() == 1,
        weights_all_positive,
    };
    Ok((Kind::Classifier(classes), n_targets))
}

/// The `nodes_*` attributes of opsets 1 and 3, checked to be one length.
struct V3Nodes {
    treeids: Vec<i64>,
    nodeids: Vec<i64>,
    featureids: Vec<i64>,
    modes: Vec<String>,
    trueids: Vec<i64>,
    falseids: Vec<i64>,
    missing: Vec<i64>,
    values: Reals,
}

impl V3Nodes {
    fn read(attrs: &Attrs, values: Reals) -> Result<V3Nodes> {
        let nodes = V3Nodes {
            treeids: attrs.ints("nodes_treeids")?,
            nodeids: attrs.ints("nodes_nodeids")?,
            featureids: attrs.ints("nodes_featureids")?,
            modes: attrs.strs("nodes_modes")?,
            trueids: attrs.ints("nodes_truenodeids")?,
            falseids: attrs.ints("nodes_falsenodeids")?,
            missing: attrs.ints("nodes_missing_value_tracks_true")?,
            values,
        };
        let n = nodes.len();
        if n == 0 {
            return Err(Error::attr(
                "nodes_treeids",
                "is empty; the ensemble has no trees",
            ));
        }
        for (name, len) in [
            ("nodes_nodeids", nodes.nodeids.len()),
            ("nodes_featureids", nodes.featureids.len()),
            ("nodes_modes", nodes.modes.len()),
            ("nodes_truenodeids", nodes.trueids.len()),
            ("nodes_falsenodeids", nodes.falseids.len()),
            ("nodes_values", nodes.values.len()),
        ] {
            same_len(name, len, n, "nodes_treeids")?;
        }
        if nodes.missing.len() > n {
            return Err(Error::attr(
                "nodes_missing_value_tracks_true",
                format!("has {} entries for {n} nodes", nodes.missing.len()),
            ));
        }
        Ok(nodes)
    }

    fn len(&self) -> usize {
        self.treeids.len()
    }

    /// Node `i`'s test.
    fn split(&self, i: usize) -> Result<Split> {
        let t = self.values.get(i);
        Ok(match self.modes[i].as_str() {
            "BRANCH_LEQ" => Split::Leq(t),
            "BRANCH_LT" => Split::Lt(t),
            "BRANCH_GTE" => Split::Gte(t),
            "BRANCH_GT" => Split::Gt(t),
            "BRANCH_EQ" => Split::Eq(t),
            "BRANCH_NEQ" => Split::Neq(t),
            other => {
                return Err(Error::node(
                    self.treeids[i],
                    self.nodeids[i],
                    format!(
                        "mode '{other}' is not one of LEAF, BRANCH_LEQ, BRANCH_LT, \
                         BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ"
                    ),
                ));
            }
        })
    }
}

/// Where each attribute node of opsets 1 and 3 went: a branching node or
/// a leaf, found by its (tree id, node id).
struct V3Table {
    by_id: HashMap<(i64, i64), usize>,
    /// Per attribute node.
    slot: Vec<Child>,
    n_leaves: u32,
}

impl V3Table {
    fn new(nodes: &V3Nodes) -> Result<V3Table> {
        let n = nodes.len();
        let mut by_id = HashMap::with_capacity(n);
        let mut slot = Vec::with_capacity(n);
        let (mut n_nodes, mut n_leaves) = (0u32, 0u32);
        for i in 0..n {
            let (tree, id) = (nodes.treeids[i], nodes.nodeids[i]);
            if by_id.insert((tree, id), i).is_some() {
                return Err(Error::node(tree, id, "appears twice"));
            }
            if nodes.modes[i] == "LEAF" {
                slot.push(Child::Leaf(n_leaves));
                n_leaves += 1;
            } else {
                slot.push(Child::Node(n_nodes));
                n_nodes += 1;
            }
        }
        Ok(V3Table {
            by_id,
            slot,
            n_leaves,
        })
    }

    fn find(&self, tree: i64, node: i64, from: i64, which: &str) -> Result<Child> {
        match self.by_id.get(&(tree, node)) {
            Some(&j) => Ok(self.slot[j]),
            None => Err(Error::node(
                tree,
                from,
                format!("its {which} node {node} does not exist in the tree"),
            )),
        }
    }

    /// The branching nodes, in attribute order.
    fn branches(&self, nodes: &V3Nodes) -> Result<Vec<Node>> {
        let mut out = Vec::new();
        for i in 0..nodes.len() {
            if matches!(self.slot[i], Child::Leaf(_)) {
                continue;
            }
            let (tree, id) = (nodes.treeids[i], nodes.nodeids[i]);
            let split = nodes.split(i)?;
            out.push(Node {
                feature: feature("nodes_featureids", i, nodes.featureids[i])?,
                split,
                missing_yes: nodes.missing.get(i) == Some(&1),
                yes: self.find(tree, nodes.trueids[i], id, "true")?,
                no: self.find(tree, nodes.falseids[i], id, "false")?,
            });
        }
        Ok(out)
    }

    /// Leaf weights, in (tree, node, position) order as onnxruntime sorts
    /// them; the first weight of a leaf is its only one when the ensemble
    /// has one target. Returns each leaf's range of weights and the weights.
    fn leaf_weights(
        &self,
        attrs: &Attrs,
        names: &Names,
        nodes: &V3Nodes,
        weights: &Reals,
        n_targets: usize,
    ) -> Result<LeafTable> {
        let ids = attrs.ints(names.ids)?;
        let w_nodes = attrs.ints(names.nodeids)?;
        let w_trees = attrs.ints(names.treeids)?;
        same_len(names.nodeids, w_nodes.len(), ids.len(), names.ids)?;
        same_len(names.treeids, w_trees.len(), ids.len(), names.ids)?;
        same_len(names.weights, weights.len(), ids.len(), names.ids)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| (w_trees[i], w_nodes[i], i));
        let mut per_leaf: Vec<Vec<Weight>> = vec![Vec::new(); self.n_leaves as usize];
        for &i in &order {
            let Some(&j) = self.by_id.get(&(w_trees[i], w_nodes[i])) else {
                return Err(Error::node(
                    w_trees[i],
                    w_nodes[i],
                    format!(
                        "'{}' entry {i} names a node that does not exist",
                        names.nodeids
                    ),
                ));
            };
            let Child::Leaf(leaf) = self.slot[j] else {
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
            per_leaf[leaf as usize].push(Weight {
                target: ids[i].clamp(0, u32::MAX as i64) as u32,
                value: weights.get(i),
            });
        }
        let mut leaves = Vec::with_capacity(self.n_leaves as usize);
        let mut all = Vec::with_capacity(ids.len());
        for i in 0..nodes.len() {
            if let Child::Leaf(leaf) = self.slot[i] {
                let w = &per_leaf[leaf as usize];
                if w.is_empty() {
                    return Err(Error::node(
                        nodes.treeids[i],
                        nodes.nodeids[i],
                        "is a leaf without a weight",
                    ));
                }
                leaves.push((all.len() as u32, w.len() as u32));
                all.extend_from_slice(w);
            }
        }
        Ok((leaves, all))
    }
}

/// `aggregate_function` and `post_transform` of opset 5 (numbers).
fn v5_transforms(attrs: &Attrs) -> Result<(Aggregate, PostTransform)> {
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
    Ok((aggregate, post_transform))
}

/// `leaf_targetids` and `leaf_weights` of opset 5, one per leaf.
fn v5_leaf_attrs(attrs: &Attrs) -> Result<(Vec<i64>, Reals)> {
    let targets = attrs.ints("leaf_targetids")?;
    let values = attrs
        .reals("leaf_weights")?
        .unwrap_or(Reals::F32(Vec::new()));
    same_len(
        "leaf_weights",
        values.len(),
        targets.len(),
        "leaf_targetids",
    )?;
    Ok((targets, values))
}

/// Opset 5's leaves, one weight each: their ranges and the weights.
fn v5_leaves(targets: &[i64], values: &Reals, n_targets: usize) -> Result<LeafTable> {
    let mut leaves = Vec::with_capacity(targets.len());
    let mut weights = Vec::with_capacity(targets.len());
    for (i, &target) in targets.iter().enumerate() {
        if target < 0 || (n_targets > 1 && target as usize >= n_targets) {
            return Err(Error::attr(
                "leaf_targetids",
                format!("entry {i} is {target}, expected an index in 0..{n_targets}"),
            ));
        }
        leaves.push((i as u32, 1));
        weights.push(Weight {
            target: target.min(u32::MAX as i64) as u32,
            value: values.get(i),
        });
    }
    Ok((leaves, weights))
}

/// The `nodes_*` attributes of opset 5, checked to be one length.
struct V5Nodes {
    modes: Vec<i64>,
    featureids: Vec<i64>,
    splits: Reals,
    membership: Option<Reals>,
    trueids: Vec<i64>,
    falseids: Vec<i64>,
    trueleafs: Vec<i64>,
    falseleafs: Vec<i64>,
    missing: Vec<i64>,
    tree_roots: Vec<i64>,
}

impl V5Nodes {
    fn read(attrs: &Attrs) -> Result<V5Nodes> {
        let nodes = V5Nodes {
            splits: attrs
                .reals("nodes_splits")?
                .unwrap_or(Reals::F32(Vec::new())),
            membership: attrs.reals("membership_values")?,
            modes: attrs.ints("nodes_modes")?,
            featureids: attrs.ints("nodes_featureids")?,
            trueids: attrs.ints("nodes_truenodeids")?,
            falseids: attrs.ints("nodes_falsenodeids")?,
            trueleafs: attrs.ints("nodes_trueleafs")?,
            falseleafs: attrs.ints("nodes_falseleafs")?,
            missing: attrs.ints("nodes_missing_value_tracks_true")?,
            tree_roots: attrs.ints("tree_roots")?,
        };
        let n = nodes.modes.len();
        same_len("nodes_featureids", nodes.featureids.len(), n, "nodes_modes")?;
        same_len("nodes_splits", nodes.splits.len(), n, "nodes_modes")?;
        same_len("nodes_truenodeids", nodes.trueids.len(), n, "nodes_modes")?;
        same_len("nodes_falsenodeids", nodes.falseids.len(), n, "nodes_modes")?;
        same_len("nodes_trueleafs", nodes.trueleafs.len(), n, "nodes_modes")?;
        same_len("nodes_falseleafs", nodes.falseleafs.len(), n, "nodes_modes")?;
        if !nodes.missing.is_empty() {
            same_len(
                "nodes_missing_value_tracks_true",
                nodes.missing.len(),
                n,
                "nodes_modes",
            )?;
        }
        if nodes.tree_roots.is_empty() {
            return Err(Error::attr(
                "tree_roots",
                "is empty; the ensemble has no trees",
            ));
        }
        Ok(nodes)
    }

    fn child(&self, i: usize, leaf: i64, id: i64, which: &str, n_leaves: usize) -> Result<Child> {
        if leaf != 0 {
            Ok(Child::Leaf(index(which, i, id, n_leaves, "leaf")?))
        } else {
            Ok(Child::Node(index(which, i, id, self.modes.len(), "node")?))
        }
    }

    /// Every node (all of opset 5's nodes branch). BRANCH_MEMBER nodes
    /// take their sets from `membership_values` in node order, each set
    /// ended by a NaN.
    fn branches(&self, n_leaves: usize) -> Result<Vec<Node>> {
        let membership = self
            .membership
            .as_ref()
            .map(Reals::to_f64)
            .unwrap_or_default();
        let mut sets = membership.split(|v| v.is_nan());
        let mut nodes = Vec::with_capacity(self.modes.len());
        for i in 0..self.modes.len() {
            let t = self.splits.get(i);
            let split = match self.modes[i] {
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
            let (yes, no) = (
                (self.trueleafs[i], self.trueids[i], "nodes_truenodeids"),
                (self.falseleafs[i], self.falseids[i], "nodes_falsenodeids"),
            );
            nodes.push(Node {
                feature: feature("nodes_featureids", i, self.featureids[i])?,
                split,
                missing_yes: self.missing.get(i) == Some(&1),
                yes: self.child(i, yes.0, yes.1, yes.2, n_leaves)?,
                no: self.child(i, no.0, no.1, no.2, n_leaves)?,
            });
        }
        Ok(nodes)
    }

    /// Each tree's root. A root whose two children are the same leaf is a
    /// tree of that one leaf (onnxruntime's reading of the spec).
    fn roots(&self, n_leaves: usize) -> Result<Vec<Child>> {
        let mut roots = Vec::with_capacity(self.tree_roots.len());
        for (k, &r) in self.tree_roots.iter().enumerate() {
            let r = index("tree_roots", k, r, self.modes.len(), "node")? as usize;
            let (t, f) = (self.trueids[r], self.falseids[r]);
            roots.push(
                if t == f && self.trueleafs[r] != 0 && self.falseleafs[r] != 0 {
                    Child::Leaf(index("nodes_truenodeids", r, t, n_leaves, "leaf")?)
                } else {
                    Child::Node(r as u32)
                },
            );
        }
        Ok(roots)
    }
}
