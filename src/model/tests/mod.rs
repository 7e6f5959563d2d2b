//! The fast path against the reference and load errors (two_tower's fine
//! print in `two_tower`).

use safetensors::{Dtype, tensor::TensorView};

use super::mlp::MLP_BLOCK_ROWS;
use super::two_tower::{ITEM_TILE, USER_BLOCK};
use super::*;

mod two_tower;

// ---------------------------------------------------------------- helpers

/// Deterministic pseudo-random numbers.
use crate::splitmix::SplitMix64 as Rng;

trait Draw {
    fn below(&mut self, n: usize) -> usize;
    fn unit(&mut self) -> f32;
    fn vec(&mut self, n: usize) -> Vec<f32>;
}

impl Draw for Rng {
    fn below(&mut self, n: usize) -> usize {
        self.in_range(0..n as u64) as usize
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        self.signed_unit()
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

/// One tensor to serialize: name, dtype, shape, little-endian bytes.
#[derive(Clone)]
struct T(String, Dtype, Vec<usize>, Vec<u8>);

fn f32s(name: &str, shape: &[usize], values: &[f32]) -> T {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    T(name.to_string(), Dtype::F32, shape.to_vec(), bytes)
}

fn safetensors_bytes(tensors: &[T]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|T(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).expect("valid tensor view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serializable tensors")
}

/// `NAME.weight` [out, in] and `NAME.bias` [out], random.
fn layer(rng: &mut Rng, name: &str, in_dim: usize, out_dim: usize) -> Vec<T> {
    vec![
        f32s(
            &format!("{name}.weight"),
            &[out_dim, in_dim],
            &rng.vec(out_dim * in_dim),
        ),
        f32s(&format!("{name}.bias"), &[out_dim], &rng.vec(out_dim)),
    ]
}

fn mlp_spec(output: OutputActivation) -> ModelSpec {
    ModelSpec::Mlp(MlpSpec {
        layers: None,
        output,
    })
}

fn tt_spec(top_k: usize, max_history: usize, exclude_seen: bool) -> ModelSpec {
    ModelSpec::TwoTower(TwoTowerSpec {
        top_k,
        max_history,
        exclude_seen,
    })
}

fn load(spec: &ModelSpec, tensors: &[T], num_features: usize) -> Result<Model> {
    Model::from_safetensors(spec, &safetensors_bytes(tensors), num_features)
}

fn load_ok(spec: &ModelSpec, tensors: &[T], num_features: usize) -> Model {
    match load(spec, tensors, num_features) {
        Ok(m) => m,
        Err(e) => panic!("model should load: {e}"),
    }
}

fn load_err(spec: &ModelSpec, tensors: &[T], num_features: usize) -> String {
    match load(spec, tensors, num_features) {
        Ok(m) => panic!("expected a load error, got {}", m.describe()),
        Err(e) => e.to_string(),
    }
}

fn feature_rows(rng: &mut Rng, n: usize, num_features: usize) -> Rows {
    Rows {
        ids: EntityIds::Int((0..n as u64).collect()),
        num_features,
        features: rng.vec(n * num_features),
        history_offsets: Vec::new(),
        history_items: Vec::new(),
    }
}

fn history_rows(histories: &[Vec<u32>], features: Vec<f32>, num_features: usize) -> Rows {
    let mut offsets = vec![0u32];
    let mut items = Vec::new();
    for h in histories {
        items.extend_from_slice(h);
        offsets.push(items.len() as u32);
    }
    Rows {
        ids: EntityIds::Int((0..histories.len() as u64).collect()),
        num_features,
        features,
        history_offsets: offsets,
        history_items: items,
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + b.abs().max(a.abs()))
}

fn scores_of(p: &Predictions) -> (usize, &[f32]) {
    match p {
        Predictions::Scores { width, values } => (*width, values),
        Predictions::TopK { .. } => panic!("expected scores, got top-K"),
    }
}

struct TopKView<'a> {
    offsets: &'a [u32],
    items: &'a [u32],
    scores: &'a [f32],
}

impl<'a> TopKView<'a> {
    fn of(p: &'a Predictions) -> Self {
        match p {
            Predictions::TopK {
                offsets,
                items,
                scores,
            } => TopKView {
                offsets,
                items,
                scores,
            },
            Predictions::Scores { .. } => panic!("expected top-K, got scores"),
        }
    }
    fn row(&self, r: usize) -> (&'a [u32], &'a [f32]) {
        let (a, b) = (self.offsets[r] as usize, self.offsets[r + 1] as usize);
        (&self.items[a..b], &self.scores[a..b])
    }
}

/// Runs both paths, asserts they agree, returns the reference's answer.
fn predict_both(model: &Model, rows: &Rows) -> Predictions {
    let reference = model.predict_reference(rows).unwrap();
    let fast = model.predict(rows).unwrap();
    assert_eq!(
        reference.len(),
        rows.len(),
        "reference gives one prediction per row"
    );
    assert_eq!(
        fast.len(),
        rows.len(),
        "fast path gives one prediction per row"
    );
    match (&reference, &fast) {
        (Predictions::Scores { .. }, Predictions::Scores { .. }) => {
            let (rw, rv) = scores_of(&reference);
            let (fw, fv) = scores_of(&fast);
            assert_eq!(rw, fw, "score widths differ");
            assert_eq!(rv.len(), fv.len());
            for (i, (r, f)) in rv.iter().zip(fv).enumerate() {
                assert!(close(*f, *r), "score {i}: fast {f} vs reference {r}");
            }
        }
        (Predictions::TopK { .. }, Predictions::TopK { .. }) => {
            let (rv, fv) = (TopKView::of(&reference), TopKView::of(&fast));
            for r in 0..rows.len() {
                let (ri, rs) = rv.row(r);
                let (fi, fs) = fv.row(r);
                assert_eq!(ri.len(), fi.len(), "row {r}: result counts differ");
                let mut unique = fi.to_vec();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), fi.len(), "row {r}: fast path repeats an item");
                for i in 0..ri.len() {
                    assert!(
                        close(fs[i], rs[i]),
                        "row {r} rank {i}: fast {} vs reference {}",
                        fs[i],
                        rs[i]
                    );
                    if ri[i] != fi[i] {
                        let tie_before = i > 0 && close(rs[i], rs[i - 1]);
                        let tie_after = i + 1 < rs.len() && close(rs[i], rs[i + 1]);
                        let at_cut = i + 1 == rs.len();
                        assert!(
                            tie_before || tie_after || at_cut,
                            "row {r} rank {i}: fast item {} vs reference item {} without a tie",
                            fi[i],
                            ri[i]
                        );
                    }
                }
            }
        }
        _ => panic!("paths returned different kinds of predictions"),
    }
    reference
}

/// For models whose arithmetic is exact (one-hot or repeated embeddings, no
/// tower): the fast path must give the reference's answer to the bit,
/// including which items win ties.
fn predict_exact(model: &Model, rows: &Rows) -> Predictions {
    let reference = predict_both(model, rows);
    assert_eq!(
        model.predict(rows).unwrap(),
        reference,
        "fast path differs from the reference"
    );
    reference
}

// ---------------------------------------------------------------- mlp

fn random_mlp(rng: &mut Rng, dims: &[usize], output: OutputActivation) -> Model {
    let tensors: Vec<T> = dims
        .windows(2)
        .enumerate()
        .flat_map(|(i, w)| layer(rng, &(2 * i).to_string(), w[0], w[1]))
        .collect();
    load_ok(&mlp_spec(output), &tensors, dims[0])
}

#[test]
fn mlp_fast_matches_reference_for_every_output() {
    let mut rng = Rng(1);
    for output in [
        OutputActivation::Sigmoid,
        OutputActivation::Softmax,
        OutputActivation::None,
    ] {
        let model = random_mlp(&mut rng, &[7, 33, 17, 3], output);
        for n in [
            0,
            1,
            MLP_BLOCK_ROWS - 1,
            MLP_BLOCK_ROWS,
            2 * MLP_BLOCK_ROWS + 37,
        ] {
            predict_both(&model, &feature_rows(&mut rng, n, 7));
        }
    }
}

#[test]
fn mlp_reference_computes_relu_and_output_by_hand() {
    // 2 -> 2 (relu) -> 2; input (1, -2).
    let tensors = vec![
        f32s("0.weight", &[2, 2], &[1.0, 1.0, 2.0, 0.0]),
        f32s("0.bias", &[2], &[0.0, 0.5]),
        f32s("2.weight", &[2, 2], &[1.0, 0.0, 0.0, 1.0]),
        f32s("2.bias", &[2], &[0.0, -1.0]),
    ];
    let rows = Rows {
        ids: EntityIds::Str(vec!["a".into()]),
        num_features: 2,
        features: vec![1.0, -2.0],
        history_offsets: Vec::new(),
        history_items: Vec::new(),
    };
    // Hidden: (1 - 2 + 0, 2 + 0.5) = (-1, 2.5) -> relu (0, 2.5); out (0, 1.5).
    let none = load_ok(&mlp_spec(OutputActivation::None), &tensors, 2);
    assert_eq!(scores_of(&predict_both(&none, &rows)).1, &[0.0, 1.5]);

    let sigmoid = load_ok(&mlp_spec(OutputActivation::Sigmoid), &tensors, 2);
    let p = predict_both(&sigmoid, &rows);
    let s = scores_of(&p).1;
    assert!(
        close(s[0], 0.5) && close(s[1], 1.0 / (1.0 + (-1.5f32).exp())),
        "{s:?}"
    );

    let softmax = load_ok(&mlp_spec(OutputActivation::Softmax), &tensors, 2);
    let p = predict_both(&softmax, &rows);
    let s = scores_of(&p).1;
    let e = 1.5f32.exp();
    assert!(
        close(s[0], 1.0 / (1.0 + e)) && close(s[1], e / (1.0 + e)),
        "{s:?}"
    );
    assert!(close(s[0] + s[1], 1.0));
}

#[test]
fn mlp_layers_are_ordered_by_number_not_by_text() {
    let mut rng = Rng(2);
    // Text order would be 0, 10, 2: the chain 3->4, 5->2, 4->5 does not fit.
    let mut tensors = layer(&mut rng, "10", 5, 2);
    tensors.extend(layer(&mut rng, "0", 3, 4));
    tensors.extend(layer(&mut rng, "2", 4, 5));
    let model = load_ok(&mlp_spec(OutputActivation::None), &tensors, 3);
    assert_eq!(model.describe(), "mlp: 3->4->5->2, no output activation");
    predict_both(&model, &feature_rows(&mut rng, 5, 3));
}

#[test]
fn mlp_default_layers_skip_1d_weights_without_bias() {
    let mut rng = Rng(3);
    let mut tensors = layer(&mut rng, "net.0", 3, 4);
    tensors.extend(layer(&mut rng, "net.1", 4, 1));
    tensors.push(f32s("norm.weight", &[4], &rng.vec(4)));
    let model = load_ok(&mlp_spec(OutputActivation::Sigmoid), &tensors, 3);
    assert_eq!(model.describe(), "mlp: 3->4->1, sigmoid");
}

#[test]
fn an_mlp_with_more_outputs_than_a_value_holds_is_refused_at_load_naming_the_layer() {
    let mut rng = Rng(5);
    let mut tensors = layer(&mut rng, "net.0", 1, 2);
    tensors.extend(layer(&mut rng, "net.1", 2, crate::model::MAX_SCORES + 1));
    let e = load_err(&mlp_spec(OutputActivation::None), &tensors, 1);
    assert!(
        e.contains("'net.1'") && e.contains("65536") && e.contains("65535"),
        "{e}"
    );
    // As many as a value holds load.
    let mut tensors = layer(&mut rng, "net.0", 1, 2);
    tensors.extend(layer(&mut rng, "net.1", 2, crate::model::MAX_SCORES));
    load_ok(&mlp_spec(OutputActivation::None), &tensors, 1);
}

#[test]
fn ids_in_messages_have_control_characters_escaped_and_long_ones_cut() {
    use crate::model::EntityKey;
    let shown = EntityKey::Str("\x1b]0;pwned\x07".into()).to_string();
    assert_eq!(shown, "\\u{1b}]0;pwned\\u{7}");
    assert!(!shown.chars().any(char::is_control));
    let long = EntityKey::Str("é".repeat(50_000)).to_string();
    assert!(long.len() < 200, "{long}");
    assert!(long.ends_with("(100000 bytes in all)"), "{long}");
    assert_eq!(EntityKey::Str("u-1".into()).to_string(), "u-1");
    assert_eq!(EntityKey::Int(7).to_string(), "7");
    assert_eq!(EntityKey::Str("\n".into()).into_text(), "\n");
}

#[test]
fn mlp_layers_without_bias_are_kept_and_add_nothing() {
    let mut rng = Rng(13);
    // nn.Linear(4, 4, bias=False) in the middle: leaving it out would still
    // chain (3->4->1) and score every row wrong.
    let mut tensors = layer(&mut rng, "0", 3, 4);
    let middle = rng.vec(16);
    tensors.push(f32s("2.weight", &[4, 4], &middle));
    tensors.extend(layer(&mut rng, "4", 4, 1));
    let model = load_ok(&mlp_spec(OutputActivation::Sigmoid), &tensors, 3);
    assert_eq!(model.describe(), "mlp: 3->4->4->1, sigmoid");
    let mut with_zeros = tensors.clone();
    with_zeros.push(f32s("2.bias", &[4], &[0.0; 4]));
    let zeros = load_ok(&mlp_spec(OutputActivation::Sigmoid), &with_zeros, 3);
    let rows = feature_rows(&mut rng, 50, 3);
    assert_eq!(predict_both(&model, &rows), predict_both(&zeros, &rows));

    let explicit = ModelSpec::Mlp(MlpSpec {
        layers: Some(vec!["0".into(), "2".into(), "4".into()]),
        output: OutputActivation::Sigmoid,
    });
    assert_eq!(
        predict_both(&load_ok(&explicit, &tensors, 3), &rows),
        predict_both(&zeros, &rows)
    );
}

#[test]
fn mlp_weights_with_nan_or_infinity_are_refused() {
    let mut rng = Rng(14);
    for (tensor, value) in [("2.weight", f32::NAN), ("4.bias", f32::INFINITY)] {
        let mut tensors = layer(&mut rng, "0", 3, 4);
        tensors.extend(layer(&mut rng, "2", 4, 4));
        tensors.extend(layer(&mut rng, "4", 4, 1));
        let t = tensors.iter_mut().find(|t| t.0 == tensor).unwrap();
        t.3[0..4].copy_from_slice(&value.to_le_bytes());
        let err = load_err(&mlp_spec(OutputActivation::Sigmoid), &tensors, 3);
        assert!(
            err.contains(&format!("tensor '{tensor}' holds {value} at flat index 0")),
            "{err}"
        );
    }
}

#[test]
fn mlp_explicit_layers_are_used_in_the_order_given() {
    let mut rng = Rng(4);
    let mut tensors = layer(&mut rng, "fc1", 3, 6);
    tensors.extend(layer(&mut rng, "fc2", 6, 2));
    tensors.extend(layer(&mut rng, "unused", 9, 9));
    let spec = ModelSpec::Mlp(MlpSpec {
        layers: Some(vec!["fc1".into(), "fc2".into()]),
        output: OutputActivation::Softmax,
    });
    let model = load_ok(&spec, &tensors, 3);
    assert_eq!(model.describe(), "mlp: 3->6->2, softmax");
    predict_both(&model, &feature_rows(&mut rng, 300, 3));

    let swapped = ModelSpec::Mlp(MlpSpec {
        layers: Some(vec!["fc2".into(), "fc1".into()]),
        output: OutputActivation::Softmax,
    });
    let err = load_err(&swapped, &tensors, 6);
    assert!(
        err.contains("layer 'fc1' takes 3 inputs but gets 2 from layer 'fc2'"),
        "{err}"
    );

    let missing = ModelSpec::Mlp(MlpSpec {
        layers: Some(vec!["fc1".into(), "fc3".into()]),
        output: OutputActivation::None,
    });
    let err = load_err(&missing, &tensors, 3);
    assert!(
        err.contains("no tensor 'fc3.weight'") && err.contains("'fc1.bias'"),
        "{err}"
    );
}

#[test]
fn mlp_first_layer_must_take_the_feature_columns() {
    let mut rng = Rng(5);
    let tensors = layer(&mut rng, "0", 4, 1);
    let err = load_err(&mlp_spec(OutputActivation::None), &tensors, 3);
    assert!(
        err.contains("layer '0' takes 4 inputs but gets 3 from the input's feature columns"),
        "{err}"
    );
}

#[test]
fn mlp_shape_and_dtype_errors_name_the_tensor() {
    let mut rng = Rng(6);
    let spec = mlp_spec(OutputActivation::None);

    let three_d = vec![
        f32s("0.weight", &[1, 2, 2], &rng.vec(4)),
        f32s("0.bias", &[1], &[0.0]),
    ];
    let err = load_err(&spec, &three_d, 2);
    assert!(
        err.contains("'0.weight' has shape [1, 2, 2], expected [out, in]"),
        "{err}"
    );

    let bad_bias = vec![
        f32s("0.weight", &[3, 2], &rng.vec(6)),
        f32s("0.bias", &[2], &[0.0, 0.0]),
    ];
    let err = load_err(&spec, &bad_bias, 2);
    assert!(
        err.contains("'0.bias' has shape [2], expected [3]"),
        "{err}"
    );

    let int_weight = vec![
        T("0.weight".into(), Dtype::I32, vec![1, 2], vec![0; 8]),
        f32s("0.bias", &[1], &[0.0]),
    ];
    let err = load_err(&spec, &int_weight, 2);
    assert!(
        err.contains("'0.weight' has dtype I32, expected F32"),
        "{err}"
    );

    let err = load_err(&spec, &[f32s("scale", &[1], &[1.0])], 2);
    assert!(
        err.contains("no dense layers") && err.contains("'scale'"),
        "{err}"
    );

    let err = match Model::from_safetensors(&spec, b"not safetensors", 2) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("garbage bytes loaded"),
    };
    assert!(err.contains("not a valid safetensors file"), "{err}");
}

#[test]
fn mlp_layer_names_must_order_unambiguously() {
    let mut rng = Rng(7);
    let mut tensors = layer(&mut rng, "fc", 2, 2);
    tensors.extend(layer(&mut rng, "out", 2, 1));
    let err = load_err(&mlp_spec(OutputActivation::None), &tensors, 2);
    assert!(
        err.contains("has no number in its name") && err.contains("layers = ["),
        "{err}"
    );

    let mut tensors = layer(&mut rng, "a1", 2, 2);
    tensors.extend(layer(&mut rng, "b1", 2, 1));
    let err = load_err(&mlp_spec(OutputActivation::None), &tensors, 2);
    assert!(err.contains("cannot order layers 'a1' and 'b1'"), "{err}");
}

#[test]
fn half_precision_weights_load_as_their_f32_values() {
    // 1.5, -0.25, 2.0, 0.0 are exact in f16 and bf16.
    let f16_bits: [u16; 4] = [0x3e00, 0xb400, 0x4000, 0x0000];
    let bf16_bits: [u16; 4] = [0x3fc0, 0xbe80, 0x4000, 0x0000];
    let expected = [1.5f32, -0.25, 2.0, 0.0];
    for (dtype, bits) in [(Dtype::F16, f16_bits), (Dtype::BF16, bf16_bits)] {
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let tensors = vec![
            T("0.weight".into(), dtype, vec![2, 2], bytes),
            f32s("0.bias", &[2], &[0.0, 0.0]),
        ];
        let Model::Mlp(mlp) = load_ok(&mlp_spec(OutputActivation::None), &tensors, 2) else {
            panic!("an mlp spec loaded another kind");
        };
        assert_eq!(mlp.layers[0].weight, expected, "{dtype:?}");
    }
}

#[test]
fn f16_conversion_covers_subnormals_and_infinities() {
    use super::weights::f16_to_f32;
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x8200), -(2f32.powi(-15)));
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
    assert!(f16_to_f32(0x7e00).is_nan());
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
}

// ---------------------------------------------------------------- two_tower

struct Catalogue {
    dim: usize,
    embeddings: Vec<f32>,
    ids: Option<Vec<u32>>,
}

impl Catalogue {
    fn tensors(&self) -> Vec<T> {
        let items = self.embeddings.len() / self.dim;
        let mut t = vec![f32s(
            "item_embeddings",
            &[items, self.dim],
            &self.embeddings,
        )];
        if let Some(ids) = &self.ids {
            let bytes = ids
                .iter()
                .flat_map(|&id| (id as i64).to_le_bytes())
                .collect();
            t.push(T("item_ids".into(), Dtype::I64, vec![items], bytes));
        }
        t
    }
}

/// One-hot embeddings: item row `r` is the unit vector along `r % dim`,
/// scaled by `1 + r / dim` so rows differ.
fn one_hot(items: usize, dim: usize) -> Vec<f32> {
    let mut e = vec![0.0; items * dim];
    for r in 0..items {
        e[r * dim + r % dim] = 1.0 + (r / dim) as f32;
    }
    e
}

fn random_two_tower(
    rng: &mut Rng,
    items: usize,
    dim: usize,
    tower: &[usize],
    sparse_ids: bool,
    spec: &ModelSpec,
) -> (Model, Vec<u32>) {
    // Shuffled ids; sparse ones spread far apart to use the hashed lookup.
    let mut ids: Vec<u32> = (0..items as u32)
        .map(|i| if sparse_ids { i * 7919 + 13 } else { i })
        .collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    let cat = Catalogue {
        dim,
        embeddings: rng.vec(items * dim),
        ids: Some(ids.clone()),
    };
    let mut tensors = cat.tensors();
    let num_features = tower.first().map_or(0, |first| first - dim);
    for (i, w) in tower.windows(2).enumerate() {
        tensors.extend(layer(rng, &format!("user_tower.{}", 2 * i), w[0], w[1]));
    }
    (load_ok(spec, &tensors, num_features), ids)
}

fn random_histories(rng: &mut Rng, users: usize, ids: &[u32], max_len: usize) -> Vec<Vec<u32>> {
    (0..users)
        .map(|_| {
            let len = rng.below(max_len + 1);
            (0..len)
                .map(|_| {
                    if rng.below(10) == 0 {
                        u32::MAX - rng.below(1000) as u32 // not in the catalogue
                    } else {
                        ids[rng.below(ids.len())]
                    }
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------- cost, describe, concat

#[test]
fn entity_cost_counts_multiply_adds() {
    let mut rng = Rng(15);
    let mlp = random_mlp(&mut rng, &[3, 4, 5, 2], OutputActivation::None);
    assert_eq!(mlp.entity_cost(0), 3 * 4 + 4 * 5 + 5 * 2);
    assert_eq!(mlp.entity_cost(1000), 3 * 4 + 4 * 5 + 5 * 2);

    let (tt, _) = random_two_tower(
        &mut rng,
        100,
        8,
        &[8 + 2, 16, 8],
        false,
        &tt_spec(5, 50, true),
    );
    let fixed = (10 * 16 + 16 * 8) + 100 * 8;
    assert_eq!(tt.entity_cost(0), fixed);
    assert_eq!(tt.entity_cost(20), 20 * 8 + fixed);
    assert_eq!(
        tt.entity_cost(5000),
        50 * 8 + fixed,
        "history beyond the cap costs nothing"
    );
}

#[test]
fn describe_names_the_shapes() {
    let mut rng = Rng(16);
    let (tt, _) = random_two_tower(
        &mut rng,
        100,
        8,
        &[8 + 2, 16, 8],
        false,
        &tt_spec(5, 50, true),
    );
    assert_eq!(
        tt.describe(),
        "two_tower: 100 items x 8, tower 10->16->8, top 5, max history 50, exclude seen"
    );
    let (plain, _) = random_two_tower(&mut rng, 30, 4, &[], true, &tt_spec(3, 9, false));
    assert_eq!(
        plain.describe(),
        "two_tower: 30 items x 4, no tower, top 3, max history 9"
    );
}

#[test]
fn concat_of_parts_equals_prediction_of_the_whole() {
    let mut rng = Rng(17);
    let mlp = random_mlp(&mut rng, &[4, 8, 3], OutputActivation::Softmax);
    let rows = feature_rows(&mut rng, 100, 4);
    let parts = [0..30, 30..30, 30..100]
        .into_iter()
        .map(|r| mlp.predict(&rows.slice(r)).unwrap())
        .collect();
    assert_eq!(Predictions::concat(parts), mlp.predict(&rows).unwrap());

    let (tt, ids) = random_two_tower(&mut rng, 300, 4, &[], false, &tt_spec(6, 5, true));
    let histories = random_histories(&mut rng, 90, &ids, 12);
    let rows = history_rows(&histories, Vec::new(), 0);
    let parts = [0..1, 1..64, 64..64, 64..90]
        .into_iter()
        .map(|r| tt.predict(&rows.slice(r)).unwrap())
        .collect();
    assert_eq!(Predictions::concat(parts), tt.predict(&rows).unwrap());

    assert!(Predictions::concat(Vec::new()).is_empty());
}

#[test]
fn the_cpu_path_over_threads_and_blocks_equals_one_prediction_of_the_whole() {
    let mut rng = Rng(23);
    let mlp = random_mlp(&mut rng, &[4, 8, 3], OutputActivation::Softmax);
    // Fewer rows than a block, a few blocks, many blocks with a short last one.
    for n in [0, 1, 63, 200, 2_049] {
        let rows = feature_rows(&mut rng, n, 4);
        let whole = mlp.predict(&rows).unwrap();
        for threads in [1, 2, 3, 8] {
            let got = crate::worker::predict_cpu(&mlp, &rows, threads).unwrap();
            assert_eq!(got, whole, "mlp, {n} rows, {threads} threads");
        }
    }
    let (tt, ids) = random_two_tower(&mut rng, 300, 4, &[], false, &tt_spec(6, 5, true));
    let histories = random_histories(&mut rng, 700, &ids, 12);
    let rows = history_rows(&histories, Vec::new(), 0);
    let whole = tt.predict(&rows).unwrap();
    for threads in [2, 5] {
        let got = crate::worker::predict_cpu(&tt, &rows, threads).unwrap();
        assert_eq!(got, whole, "two_tower, {threads} threads");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the catalogue, cap, K and histories, the fast path
        /// returns the reference's top-K (up to near-ties) and never offers
        /// a seen item when exclude_seen is on.
        #[test]
        fn two_tower_fast_path_agrees_with_reference(
            seed in any::<u64>(),
            items in 1usize..300,
            dim in 1usize..6,
            top_k in 0usize..30,
            max_history in 0usize..8,
            exclude_seen in any::<bool>(),
            with_tower in any::<bool>(),
            users in 0usize..80,
        ) {
            let mut rng = Rng(seed);
            let tower = if with_tower { vec![dim + 2, 5, dim] } else { vec![] };
            let spec = tt_spec(top_k, max_history, exclude_seen);
            let (model, ids) = random_two_tower(&mut rng, items, dim, &tower, seed % 2 == 0, &spec);
            let num_features = if with_tower { 2 } else { 0 };
            let histories = random_histories(&mut rng, users, &ids, 12);
            let rows = history_rows(&histories, rng.vec(users * num_features), num_features);
            let p = predict_both(&model, &rows);
            let view = TopKView::of(&p);
            for (r, history) in histories.iter().enumerate() {
                let (got, _) = view.row(r);
                let eligible = if exclude_seen {
                    ids.iter().filter(|i| !history.contains(i)).count()
                } else {
                    items
                };
                prop_assert_eq!(got.len(), top_k.min(eligible));
                if exclude_seen {
                    prop_assert!(got.iter().all(|i| !history.contains(i)));
                }
            }
        }

        /// The mlp fast path matches the reference for any row count.
        #[test]
        fn mlp_fast_path_agrees_with_reference(
            seed in any::<u64>(),
            hidden in 1usize..40,
            width in 1usize..5,
            rows in 0usize..600,
        ) {
            let mut rng = Rng(seed);
            let model = random_mlp(&mut rng, &[6, hidden, width], OutputActivation::Softmax);
            predict_both(&model, &feature_rows(&mut rng, rows, 6));
        }
    }
}

#[test]
fn check_shape_accepts_well_formed_rows_and_names_each_defect() {
    let good = Rows {
        ids: EntityIds::Int(vec![1, 2]),
        num_features: 2,
        features: vec![0.0; 4],
        history_offsets: vec![0, 1, 3],
        history_items: vec![5, 6, 7],
    };
    assert_eq!(good.check_shape(2), Ok(()));
    let no_history = Rows {
        history_offsets: vec![],
        history_items: vec![],
        ..good.clone()
    };
    assert_eq!(no_history.check_shape(2), Ok(()));
    let cases = [
        (good.clone(), 3, "loaded for 3"),
        (
            Rows {
                features: vec![0.0; 3],
                ..good.clone()
            },
            2,
            "3 feature values for 2 rows",
        ),
        (
            Rows {
                history_offsets: vec![0, 1],
                ..good.clone()
            },
            2,
            "2 history offsets for 2 rows",
        ),
        (
            Rows {
                history_offsets: vec![1, 1, 3],
                ..good.clone()
            },
            2,
            "first history offset is 1",
        ),
        (
            Rows {
                history_offsets: vec![0, 3, 2],
                ..good.clone()
            },
            2,
            "decrease at row 1",
        ),
        (
            Rows {
                history_offsets: vec![0, 1, 9],
                ..good.clone()
            },
            2,
            "end at 9",
        ),
        (
            Rows {
                history_offsets: vec![],
                ..good.clone()
            },
            2,
            "without history offsets",
        ),
    ];
    for (rows, features, want) in cases {
        let e = rows.check_shape(features).unwrap_err();
        assert!(e.contains(want), "'{e}' should say '{want}'");
    }
}
