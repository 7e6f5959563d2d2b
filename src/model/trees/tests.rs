//! Tests of the tree room on ensembles built here: load errors, cost, and
//! the fast layouts against the reference on random trees of every split.
//! Agreement with onnxruntime itself is tests/tree_fixtures.rs.

use super::*;
use crate::model::trees::fast::{Compiled, Layout};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const GRID: [f32; 7] = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5];

/// v3 attributes of `trees` random trees over `width` features.
fn random_v3(
    rng: &mut Rng,
    trees: usize,
    width: usize,
    depth: usize,
    modes: &[&str],
    targets: usize,
) -> Attrs {
    let (mut tids, mut nids, mut ms, mut fs, mut vs, mut ts, mut fls, mut miss) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let (mut wt, mut wn, mut wi, mut ww) = (vec![], vec![], vec![], vec![]);
    for t in 0..trees {
        // Nodes numbered depth first; a stack of (id slot, depth).
        let mut next_id = 0i64;
        let mut todo = vec![(0usize, 0usize)];
        let base = tids.len();
        let mut count = 0;
        while let Some((_, d)) = todo.pop() {
            let id = next_id;
            next_id += 1;
            count += 1;
            tids.push(t as i64);
            nids.push(id);
            let leaf = d >= depth || (d > 0 && rng.below(4) == 0);
            if leaf {
                ms.push("LEAF".to_string());
                fs.push(0);
                vs.push(0.0);
                ts.push(0);
                fls.push(0);
                miss.push(0);
                for _ in 0..1 + rng.below(2) {
                    wt.push(t as i64);
                    wn.push(id);
                    wi.push(rng.below(targets as u64) as i64);
                    ww.push((rng.unit() * 4.0 - 2.0) as f32);
                }
            } else {
                ms.push(modes[rng.below(modes.len() as u64) as usize].to_string());
                fs.push(rng.below(width as u64) as i64);
                let v = if rng.below(3) == 0 {
                    (rng.unit() * 3.0 - 1.5) as f32
                } else {
                    GRID[rng.below(7) as usize]
                };
                vs.push(v);
                ts.push(-1); // patched below
                fls.push(-1);
                miss.push(rng.below(2) as i64);
                todo.push((0, d + 1));
                todo.push((0, d + 1));
            }
        }
        // Children of depth-first order: the true child follows its
        // parent; the false child follows the true child's subtree.
        fn size(ms: &[String], i: usize) -> usize {
            if ms[i] == "LEAF" {
                1
            } else {
                let t = size(ms, i + 1);
                1 + t + size(ms, i + 1 + t)
            }
        }
        let _ = count;
        let local: Vec<String> = ms[base..].to_vec();
        for i in 0..local.len() {
            if local[i] != "LEAF" {
                let t = size(&local, i + 1);
                ts[base + i] = (i + 1) as i64;
                fls[base + i] = (i + 1 + t) as i64;
            }
        }
    }
    Attrs::new()
        .with("nodes_treeids", Attr::Ints(tids))
        .with("nodes_nodeids", Attr::Ints(nids))
        .with("nodes_modes", Attr::Strs(ms))
        .with("nodes_featureids", Attr::Ints(fs))
        .with("nodes_values", Attr::Floats(vs))
        .with("nodes_truenodeids", Attr::Ints(ts))
        .with("nodes_falsenodeids", Attr::Ints(fls))
        .with("nodes_missing_value_tracks_true", Attr::Ints(miss))
        .with("target_treeids", Attr::Ints(wt))
        .with("target_nodeids", Attr::Ints(wn))
        .with("target_ids", Attr::Ints(wi))
        .with("target_weights", Attr::Floats(ww))
        .with("n_targets", Attr::Int(targets as i64))
}

fn rows(rng: &mut Rng, n: usize, width: usize) -> Vec<f32> {
    (0..n * width)
        .map(|_| match rng.below(10) {
            0 => f32::NAN,
            1 => GRID[rng.below(7) as usize].next_up_or_same(),
            2..=5 => GRID[rng.below(7) as usize],
            _ => (rng.unit() * 4.0 - 2.0) as f32,
        })
        .collect()
}

trait NextUp {
    fn next_up_or_same(self) -> f32;
}
impl NextUp for f32 {
    fn next_up_or_same(self) -> f32 {
        f32::from_bits(if self > 0.0 {
            self.to_bits() + 1
        } else {
            self.to_bits()
        })
    }
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn fast_layouts_score_every_split_mode_as_the_reference() {
    let all = [
        "BRANCH_LEQ",
        "BRANCH_LT",
        "BRANCH_GTE",
        "BRANCH_GT",
        "BRANCH_EQ",
        "BRANCH_NEQ",
    ];
    let comparisons = &all[..4];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..40 {
        let modes: &[&str] = if case % 2 == 0 { comparisons } else { &all };
        let targets = [1, 1, 3][case % 3];
        let width = 5;
        let mut attrs = random_v3(&mut rng, 7, width, 1 + case % 6, modes, targets);
        attrs.insert(
            "aggregate_function",
            Attr::Str(["SUM", "AVERAGE", "MIN", "MAX"][case % 4].to_string()),
        );
        attrs.insert(
            "post_transform",
            Attr::Str(["NONE", "LOGISTIC", "SOFTMAX"][case % 3].to_string()),
        );
        let e = Ensemble::from_v3(&attrs, false).unwrap();
        let n = 700; // not a multiple of any block or lane count
        let x = rows(&mut rng, n, width);
        let want = e.score_reference(&x, n, width);
        for layout in [Layout::Auto, Layout::Perfect, Layout::General] {
            let c = Compiled::with_layout(&e, layout);
            if case % 2 == 0 && layout != Layout::General {
                assert_eq!(
                    c.name(),
                    "perfect",
                    "case {case}: comparisons fit the perfect layout"
                );
            }
            let got = c.score(&e, &x, n, width);
            assert!(
                same(&got.scores, &want.scores),
                "case {case} layout {}: scores differ",
                c.name()
            );
        }
    }
}

#[test]
fn canonical_thresholds_split_f32_inputs_as_double_thresholds_do() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let t: f64 = match rng.below(4) {
            0 => GRID[rng.below(7) as usize] as f64,
            1 => rng.unit() * 2.0 - 1.0,
            2 => [f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1e39, -1e39][rng.below(6) as usize],
            _ => (rng.unit() as f32) as f64,
        };
        let split = match rng.below(4) {
            0 => ensemble::Split::Leq(t),
            1 => ensemble::Split::Lt(t),
            2 => ensemble::Split::Gte(t),
            _ => ensemble::Split::Gt(t),
        };
        let attrs = Attrs::new()
            .with("nodes_treeids", Attr::Ints(vec![0, 0, 0]))
            .with("nodes_nodeids", Attr::Ints(vec![0, 1, 2]))
            .with(
                "nodes_modes",
                Attr::Strs(vec![split.name().into(), "LEAF".into(), "LEAF".into()]),
            )
            .with("nodes_featureids", Attr::Ints(vec![0, 0, 0]))
            .with("nodes_values_as_tensor", Attr::Doubles(vec![t, 0.0, 0.0]))
            .with("nodes_truenodeids", Attr::Ints(vec![1, 0, 0]))
            .with("nodes_falsenodeids", Attr::Ints(vec![2, 0, 0]))
            .with("target_treeids", Attr::Ints(vec![0, 0]))
            .with("target_nodeids", Attr::Ints(vec![1, 2]))
            .with("target_ids", Attr::Ints(vec![0, 0]))
            .with("target_weights", Attr::Floats(vec![1.0, 2.0]))
            .with("n_targets", Attr::Int(1));
        let mut e = Ensemble::from_v3(&attrs, false).unwrap();
        e.double = false; // compile the f32 layout for a double threshold
        let xs: Vec<f32> = {
            let f = t as f32;
            vec![
                f,
                f32::from_bits(f.to_bits().wrapping_add(1)),
                f32::from_bits(f.to_bits().wrapping_sub(1)),
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                0.0,
                -0.0,
            ]
        };
        let want = e.score_reference(&xs, xs.len(), 1);
        for layout in [Layout::Perfect, Layout::General] {
            let got = Compiled::with_layout(&e, layout).score(&e, &xs, xs.len(), 1);
            assert!(
                same(&got.scores, &want.scores),
                "{split:?} on {xs:?}: {:?} vs {:?}",
                got.scores,
                want.scores
            );
        }
    }
}

fn tiny(modes: &[&str], trues: &[i64], falses: &[i64], weights_on: &[i64]) -> Attrs {
    let n = modes.len();
    Attrs::new()
        .with("nodes_treeids", Attr::Ints(vec![0; n]))
        .with("nodes_nodeids", Attr::Ints((0..n as i64).collect()))
        .with(
            "nodes_modes",
            Attr::Strs(modes.iter().map(|s| s.to_string()).collect()),
        )
        .with("nodes_featureids", Attr::Ints(vec![0; n]))
        .with("nodes_values", Attr::Floats(vec![0.5; n]))
        .with("nodes_truenodeids", Attr::Ints(trues.to_vec()))
        .with("nodes_falsenodeids", Attr::Ints(falses.to_vec()))
        .with("target_treeids", Attr::Ints(vec![0; weights_on.len()]))
        .with("target_nodeids", Attr::Ints(weights_on.to_vec()))
        .with("target_ids", Attr::Ints(vec![0; weights_on.len()]))
        .with("target_weights", Attr::Floats(vec![1.0; weights_on.len()]))
        .with("n_targets", Attr::Int(1))
}

#[test]
fn a_tree_with_a_cycle_is_refused_naming_the_node() {
    let attrs = tiny(
        &["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"],
        &[1, 0, 0],
        &[2, 2, 0],
        &[2],
    );
    let err = Ensemble::from_v3(&attrs, false).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    assert!(err.contains("tree 0 node"), "{err}");
}

#[test]
fn a_leaf_without_a_weight_is_refused() {
    let attrs = tiny(
        &["BRANCH_LEQ", "LEAF", "LEAF"],
        &[1, 0, 0],
        &[2, 0, 0],
        &[1],
    );
    let err = Ensemble::from_v3(&attrs, false).unwrap_err().to_string();
    assert_eq!(err, "tree 0 node 2: is a leaf without a weight");
}

#[test]
fn a_child_that_does_not_exist_is_refused() {
    let attrs = tiny(
        &["BRANCH_LEQ", "LEAF", "LEAF"],
        &[1, 0, 0],
        &[9, 0, 0],
        &[1, 2],
    );
    let err = Ensemble::from_v3(&attrs, false).unwrap_err().to_string();
    assert_eq!(
        err,
        "tree 0 node 0: its false node 9 does not exist in the tree"
    );
}

#[test]
fn an_unknown_mode_and_mismatched_lengths_are_refused_by_name() {
    let attrs = tiny(
        &["BRANCH_LE", "LEAF", "LEAF"],
        &[1, 0, 0],
        &[2, 0, 0],
        &[1, 2],
    );
    let err = Ensemble::from_v3(&attrs, false).unwrap_err().to_string();
    assert!(err.contains("mode 'BRANCH_LE'"), "{err}");
    let attrs = tiny(
        &["BRANCH_LEQ", "LEAF", "LEAF"],
        &[1, 0, 0],
        &[2, 0, 0],
        &[1, 2],
    )
    .with("nodes_values", Attr::Floats(vec![0.5]));
    let err = Ensemble::from_v3(&attrs, false).unwrap_err().to_string();
    assert_eq!(
        err,
        "attribute 'nodes_values' has 1 entries but 'nodes_treeids' has 3; they must match"
    );
    let err = MlOp::from_attrs("SVMClassifier", &Attrs::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'SVMClassifier'") && err.contains("TreeEnsembleRegressor"),
        "{err}"
    );
}

#[test]
fn cost_per_row_sums_each_trees_deepest_path() {
    // Tree 0: root -> (leaf, node -> (leaf, leaf)): deepest path 3 nodes.
    // Tree 1: a single leaf: 1.
    let attrs = Attrs::new()
        .with("nodes_treeids", Attr::Ints(vec![0, 0, 0, 0, 0, 1]))
        .with("nodes_nodeids", Attr::Ints(vec![0, 1, 2, 3, 4, 0]))
        .with(
            "nodes_modes",
            Attr::Strs(
                ["BRANCH_LEQ", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "LEAF"]
                    .map(String::from)
                    .to_vec(),
            ),
        )
        .with("nodes_featureids", Attr::Ints(vec![3, 0, 1, 0, 0, 0]))
        .with("nodes_values", Attr::Floats(vec![0.0; 6]))
        .with("nodes_truenodeids", Attr::Ints(vec![1, 0, 3, 0, 0, 0]))
        .with("nodes_falsenodeids", Attr::Ints(vec![2, 0, 4, 0, 0, 0]))
        .with("target_treeids", Attr::Ints(vec![0, 0, 0, 1]))
        .with("target_nodeids", Attr::Ints(vec![1, 3, 4, 0]))
        .with("target_ids", Attr::Ints(vec![0; 4]))
        .with("target_weights", Attr::Floats(vec![1.0; 4]))
        .with("n_targets", Attr::Int(1));
    let op = MlOp::from_attrs("TreeEnsembleRegressor", &attrs).unwrap();
    assert_eq!(op.cost_per_row(4), 4);
    assert_eq!(op.input_width(), Width::AtLeast(4));
    let err = op.run(&[0.0; 3], 1, 3).unwrap_err().to_string();
    assert_eq!(err, "the operator reads feature 3 but rows have 3 features");
}
