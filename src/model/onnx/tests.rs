//! Unit tests of the ONNX room, on graphs built with [`super::write`].
//! The fixtures made with onnxruntime are checked in `tests/onnx_fixtures.rs`.

use super::plan::{Epilogue, Kernel};
use super::proto::data_type::{FLOAT, INT64};
use super::write::{
    DimDecl, GraphBuilder, attr_float, attr_int, attr_ints, batch_dims, mlp_to_onnx,
};
use super::*;
use crate::model::{Dense, EntityIds, Mlp, Model, OutputActivation, Predictions, Rows};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn load(bytes: &[u8], outputs: &Outputs) -> Result<OnnxModel> {
    OnnxModel::load(&OnnxFile::parse(bytes)?, &ExternalFiles::new(), outputs)
}

fn load_err(bytes: &[u8]) -> String {
    match load(bytes, &Outputs::Default) {
        Ok(_) => panic!("the model loaded"),
        Err(e) => e.to_string(),
    }
}

fn run1(model: &OnnxModel, x: &[f32], rows: usize) -> Vec<f32> {
    let out = model.run(&[Feed::F32(x)], rows).unwrap();
    let fast = out[0].as_f32().unwrap().to_vec();
    let reference = model.run_reference(&[Feed::F32(x)], rows).unwrap();
    let reference = reference[0].as_f32().unwrap();
    for (i, (a, b)) in fast.iter().zip(reference).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs() + 1e-6,
            "value {i}: fast {a}, reference {b}"
        );
    }
    fast
}

fn test_mlp(dims: &[usize], output: OutputActivation) -> Mlp {
    let layers = dims
        .windows(2)
        .enumerate()
        .map(|(i, w)| Dense {
            name: i.to_string(),
            in_dim: w[0],
            out_dim: w[1],
            weight: values(w[0] * w[1], i as u32 * 7 + 1)
                .iter()
                .map(|v| v * 0.3)
                .collect(),
            bias: values(w[1], i as u32 * 7 + 3),
            packed: Default::default(),
        })
        .collect();
    Mlp { layers, output }
}

fn rows_of(x: &[f32], f: usize) -> Rows {
    Rows {
        ids: EntityIds::Int((0..(x.len() / f) as u64).collect()),
        num_features: f,
        features: x.to_vec(),
        history_offsets: vec![],
        history_items: vec![],
    }
}

#[test]
fn an_exported_mlp_runs_as_fused_dense_steps_and_matches_the_builtin_mlp() {
    for output in [
        OutputActivation::Sigmoid,
        OutputActivation::Softmax,
        OutputActivation::None,
    ] {
        let mlp = test_mlp(&[16, 32, 24, 3], output);
        let model = load(&mlp_to_onnx(&mlp), &Outputs::Default).unwrap();
        // One fused step per layer, relu (and the output activation) inside.
        let kinds: Vec<String> = model
            .plan
            .steps
            .iter()
            .map(|s| match &s.kernel {
                Kernel::Dense(d) => d
                    .epilogue
                    .iter()
                    .map(Epilogue::describe)
                    .collect::<Vec<_>>()
                    .join("+"),
                Kernel::Node(i) => model.graph.nodes[*i].op.onnx_name().to_string(),
            })
            .collect();
        let last = match output {
            OutputActivation::Sigmoid => "sigmoid",
            OutputActivation::Softmax => "softmax",
            OutputActivation::None => "",
        };
        let mut want = vec!["relu".to_string(), "relu".to_string(), last.to_string()];
        if output == OutputActivation::None {
            want.push("Identity".into());
        }
        assert_eq!(kinds, want, "{output:?}");

        let rows = 1100; // more than one block
        let x = values(rows * 16, 11);
        let got = run1(&model, &x, rows);
        let builtin = Model::Mlp(mlp.clone()).predict(&rows_of(&x, 16)).unwrap();
        let Predictions::Scores { values: want, .. } = builtin else {
            panic!()
        };
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * b.abs() + 1e-6, "{a} vs {b}");
        }
        // The planner's cost is the built-in mlp's plus one per value of the
        // activations.
        let products: u64 = mlp
            .layers
            .iter()
            .map(|l| (l.in_dim * l.out_dim) as u64)
            .sum();
        // relu, relu, and the output activation (or the Identity naming it).
        let elementwise = 32 + 24 + 3;
        assert_eq!(model.cost_per_row(), products + elementwise);
    }
}

#[test]
fn wide_relu_layers_of_an_exported_mlp_score_as_the_builtin_mlp_bit_for_bit() {
    // Layers wide enough for the sparse kernel (128 outputs and more, where
    // the CPU has AVX-512): the relu after each hidden layer runs in its
    // kernel, which skips the zeros of the relu before; every kernel gives
    // the same bits, so the export scores exactly as the built-in mlp.
    let mlp = test_mlp(&[16, 160, 130, 3], OutputActivation::None);
    let model = load(&mlp_to_onnx(&mlp), &Outputs::Default).unwrap();
    let rows = 300;
    let x = values(rows * 16, 7);
    let got = run1(&model, &x, rows);
    let builtin = Model::Mlp(mlp.clone()).predict(&rows_of(&x, 16)).unwrap();
    let Predictions::Scores { values: want, .. } = builtin else {
        panic!()
    };
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "value {i}: {a} vs {b}");
    }
}

/// x [N, 4] -> MatMul -> Add -> (nodes) -> y
fn dense_then(tail: impl FnOnce(GraphBuilder) -> GraphBuilder, out_dims: &[usize]) -> Vec<u8> {
    let b = GraphBuilder::new(18)
        .input("x", FLOAT, &batch_dims(&[4]))
        .initializer("w", &Tensor::f32(vec![4, 6], values(24, 5)))
        .initializer("b", &Tensor::f32(vec![6], values(6, 6)))
        .node("MatMul", "fc", &["x", "w"], &["m"], vec![])
        .node("Add", "bias", &["m", "b"], &["h"], vec![]);
    tail(b).output("y", FLOAT, &batch_dims(out_dims)).finish()
}

fn scalar(b: GraphBuilder, name: &str, v: f32) -> GraphBuilder {
    b.initializer(name, &Tensor::f32(vec![], vec![v]))
}

#[test]
fn the_erf_gelu_pattern_fuses_into_the_dense_step_in_every_grouping() {
    let groupings: [fn(GraphBuilder) -> GraphBuilder; 3] = [
        // (x * p) * 0.5
        |b| {
            scalar(
                scalar(scalar(b, "r2", std::f32::consts::SQRT_2), "one", 1.0),
                "half",
                0.5,
            )
            .node("Div", "d", &["h", "r2"], &["d"], vec![])
            .node("Erf", "e", &["d"], &["e"], vec![])
            .node("Add", "p", &["e", "one"], &["p"], vec![])
            .node("Mul", "xp", &["h", "p"], &["xp"], vec![])
            .node("Mul", "y", &["xp", "half"], &["y"], vec![])
        },
        // (x * 0.5) * p, with x * (1/sqrt 2)
        |b| {
            scalar(
                scalar(scalar(b, "r2", std::f32::consts::FRAC_1_SQRT_2), "one", 1.0),
                "half",
                0.5,
            )
            .node("Mul", "d", &["r2", "h"], &["d"], vec![])
            .node("Erf", "e", &["d"], &["e"], vec![])
            .node("Add", "p", &["one", "e"], &["p"], vec![])
            .node("Mul", "xh", &["h", "half"], &["xh"], vec![])
            .node("Mul", "y", &["xh", "p"], &["y"], vec![])
        },
        // x * (p * 0.5)
        |b| {
            scalar(
                scalar(scalar(b, "r2", std::f32::consts::SQRT_2), "one", 1.0),
                "half",
                0.5,
            )
            .node("Div", "d", &["h", "r2"], &["d"], vec![])
            .node("Erf", "e", &["d"], &["e"], vec![])
            .node("Add", "p", &["e", "one"], &["p"], vec![])
            .node("Mul", "ph", &["p", "half"], &["ph"], vec![])
            .node("Mul", "y", &["h", "ph"], &["y"], vec![])
        },
    ];
    for (g, tail) in groupings.into_iter().enumerate() {
        let model = load(&dense_then(tail, &[6]), &Outputs::Default).unwrap();
        assert_eq!(model.plan.steps.len(), 1, "grouping {g}");
        let Kernel::Dense(d) = &model.plan.steps[0].kernel else {
            panic!("grouping {g}: not fused")
        };
        assert_eq!(d.epilogue, vec![Epilogue::Unary(super::op::UnaryOp::Gelu)]);
        run1(&model, &values(40, 9), 10);
    }
}

#[test]
fn a_value_read_twice_is_not_swallowed_by_a_fusion() {
    // h feeds both a Relu and the output Add: the dense step stops at h.
    let bytes = dense_then(
        |b| {
            b.node("Relu", "r", &["h"], &["r"], vec![]).node(
                "Add",
                "y",
                &["r", "h"],
                &["y"],
                vec![],
            )
        },
        &[6],
    );
    let model = load(&bytes, &Outputs::Default).unwrap();
    let kernels: Vec<&str> = model
        .plan
        .steps
        .iter()
        .map(|s| match &s.kernel {
            Kernel::Dense(_) => "dense",
            Kernel::Node(i) => model.graph.nodes[*i].op.onnx_name(),
        })
        .collect();
    assert_eq!(kernels, ["dense", "Relu", "Add"]);
    let x = values(12, 2);
    let y = run1(&model, &x, 3);
    // y = relu(h) + h
    let w = values(24, 5);
    let b = values(6, 6);
    for r in 0..3 {
        for o in 0..6 {
            let h: f32 = b[o] + (0..4).map(|k| x[r * 4 + k] * w[k * 6 + o]).sum::<f32>();
            assert!((y[r * 6 + o] - (h.max(0.0) + h)).abs() < 1e-5);
        }
    }
}

#[test]
fn batch_norm_and_layer_norm_after_a_dense_layer_fold_into_its_step() {
    let bytes = dense_then(
        |b| {
            b.initializer("s", &Tensor::f32(vec![6], values(6, 20)))
                .initializer("bb", &Tensor::f32(vec![6], values(6, 21)))
                .initializer("mean", &Tensor::f32(vec![6], values(6, 22)))
                .initializer(
                    "var",
                    &Tensor::f32(
                        vec![6],
                        values(6, 23).iter().map(|v| v.abs() + 0.5).collect(),
                    ),
                )
                .initializer("g", &Tensor::f32(vec![6], values(6, 24)))
                .node(
                    "BatchNormalization",
                    "bn",
                    &["h", "s", "bb", "mean", "var"],
                    &["n"],
                    vec![attr_float("epsilon", 1e-3)],
                )
                .node("Tanh", "t", &["n"], &["t"], vec![])
                .node(
                    "LayerNormalization",
                    "ln",
                    &["t", "g", "bb"],
                    &["y"],
                    vec![attr_int("axis", -1)],
                )
        },
        &[6],
    );
    let model = load(&bytes, &Outputs::Default).unwrap();
    assert_eq!(model.plan.steps.len(), 1);
    run1(&model, &values(4 * 33, 3), 33);
}

/// A graph `x [N, 3, 4] -> OP -> y` for the row-mixing refusals.
fn one_node(op: &str, extra: &[(&str, Tensor)], attrs: Vec<proto::AttributeProto>) -> Vec<u8> {
    let mut b = GraphBuilder::new(18).input("x", FLOAT, &batch_dims(&[3, 4]));
    let mut inputs = vec!["x"];
    for (name, t) in extra {
        b = b.initializer(name, t);
        inputs.push(name);
    }
    b.node(op, "the_node", &inputs, &["y"], attrs)
        .output("y", FLOAT, &[])
        .finish()
}

#[test]
fn nodes_that_would_mix_rows_are_refused_naming_the_node() {
    let ints = |v: &[i64]| Tensor::i64(vec![v.len()], v.to_vec());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Softmax axis 0",
            one_node("Softmax", &[], vec![attr_int("axis", 0)]),
        ),
        (
            "Transpose moving the batch",
            one_node("Transpose", &[], vec![attr_ints("perm", &[1, 0, 2])]),
        ),
        (
            "Reshape merging rows",
            one_node("Reshape", &[("s", ints(&[-1, 3]))], vec![]),
        ),
        (
            "ReduceSum over rows",
            one_node("ReduceSum", &[("a", ints(&[0]))], vec![]),
        ),
        (
            "ReduceMean over everything",
            one_node("ReduceMean", &[], vec![]),
        ),
        (
            "Flatten at 0",
            one_node("Flatten", &[], vec![attr_int("axis", 0)]),
        ),
        (
            "Flatten at 2",
            one_node("Flatten", &[], vec![attr_int("axis", 2)]),
        ),
        (
            "Unsqueeze at 0",
            one_node("Unsqueeze", &[("a", ints(&[0]))], vec![]),
        ),
        (
            "Squeeze the batch",
            one_node("Squeeze", &[("a", ints(&[0]))], vec![]),
        ),
        (
            "ArgMax axis 0 (its default)",
            one_node("ArgMax", &[], vec![]),
        ),
        (
            "Gather along rows",
            one_node("Gather", &[("i", ints(&[0]))], vec![]),
        ),
        (
            "Concat with a constant",
            one_node(
                "Concat",
                &[("c", Tensor::f32(vec![1, 3, 4], vec![0.0; 12]))],
                vec![attr_int("axis", 2)],
            ),
        ),
        (
            "Add broadcasting rows",
            one_node(
                "Add",
                &[("c", Tensor::f32(vec![5, 1, 1], vec![0.0; 5]))],
                vec![],
            ),
        ),
        (
            "MatMul over rows",
            one_node(
                "MatMul",
                &[("w", Tensor::f32(vec![5, 1, 4, 2], vec![0.0; 40]))],
                vec![],
            ),
        ),
    ];
    for (what, bytes) in cases {
        let msg = load_err(&bytes);
        assert!(msg.contains("node 'the_node'"), "{what}: {msg}");
        assert!(
            msg.contains("batch") || msg.contains("rows"),
            "{what}: {msg}"
        );
    }
}

#[test]
fn gather_with_an_index_out_of_range_fails_the_run_naming_the_node() {
    let bytes = GraphBuilder::new(13)
        .input("ids", INT64, &batch_dims(&[2]))
        .initializer("table", &Tensor::f32(vec![5, 3], values(15, 1)))
        .node("Gather", "emb", &["table", "ids"], &["y"], vec![])
        .output("y", FLOAT, &batch_dims(&[2, 3]))
        .finish();
    let model = load(&bytes, &Outputs::Default).unwrap();
    let ok = model.run(&[Feed::I64(&[0, 4, -5, -1])], 2).unwrap();
    assert_eq!(ok[0].shape, [2, 2, 3]);
    let e = model.run(&[Feed::I64(&[0, 1, 5, 2])], 2).unwrap_err();
    assert!(
        e.to_string().contains("node 'emb' (Gather)") && e.to_string().contains("index 5"),
        "{e}"
    );
    let e = model
        .run_reference(&[Feed::I64(&[0, 1, 2, -6])], 2)
        .unwrap_err();
    assert!(e.to_string().contains("index -6"), "{e}");
}

#[test]
fn feeds_of_the_wrong_type_or_length_are_refused() {
    let mlp = test_mlp(&[4, 2], OutputActivation::None);
    let model = load(&mlp_to_onnx(&mlp), &Outputs::Default).unwrap();
    let e = model.run(&[Feed::F32(&[0.0; 7])], 2).unwrap_err();
    assert!(e.to_string().contains("input 'features'"), "{e}");
    let e = model.run(&[Feed::I64(&[0; 8])], 2).unwrap_err();
    assert!(e.to_string().contains("int64"), "{e}");
    let e = model.run(&[], 2).unwrap_err();
    assert!(e.to_string().contains("1 inputs, 0 were given"), "{e}");
}

#[test]
fn files_that_are_not_models_are_refused_as_corrupt() {
    for bytes in [
        &b""[..],
        b"\xff\xff\xff\xff\xff",
        b"this is not protobuf at all",
    ] {
        let e = OnnxFile::parse(bytes).unwrap_err().to_string();
        assert!(e.contains("not a valid ONNX model file"), "{e}");
    }
}

#[test]
fn external_data_locations_must_stay_beside_the_model() {
    for (location, want) in [
        ("../secrets", "climbs out"),
        ("a/../../b", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("C:\\x", "absolute"),
        ("", "empty"),
    ] {
        let e = check_location(location).unwrap_err();
        assert!(e.contains(want), "{location}: {e}");
    }
    assert!(check_location("weights/model.data").is_ok());

    let mut model = OnnxFile::parse(&mlp_to_onnx(&test_mlp(&[2, 1], OutputActivation::None)))
        .unwrap()
        .proto
        .clone();
    let init = &mut model.graph.as_mut().unwrap().initializer[0];
    init.raw_data.clear();
    init.data_location = proto::DATA_LOCATION_EXTERNAL;
    init.external_data = vec![proto::StringStringEntryProto {
        key: "location".into(),
        value: "../../x.bin".into(),
    }];
    use prost::Message;
    let file = OnnxFile::parse(&model.encode_to_vec()).unwrap();
    let e = file.external_files().unwrap_err().to_string();
    assert!(
        e.contains("tensor '0.weight'") && e.contains("climbs out"),
        "{e}"
    );
}

#[test]
fn a_tensor_whose_data_does_not_fill_its_shape_is_refused_by_name() {
    let mut model = OnnxFile::parse(&mlp_to_onnx(&test_mlp(&[2, 1], OutputActivation::None)))
        .unwrap()
        .proto
        .clone();
    model.graph.as_mut().unwrap().initializer[0].raw_data.pop();
    use prost::Message;
    let e = load_err(&model.encode_to_vec());
    assert!(
        e.contains("tensor '0.weight'") && e.contains("holds 7 bytes"),
        "{e}"
    );
}

#[test]
fn constant_of_shape_past_the_limit_is_refused_not_allocated() {
    let bytes = GraphBuilder::new(13)
        .input("x", FLOAT, &batch_dims(&[2]))
        .initializer("shape", &Tensor::i64(vec![2], vec![1 << 20, 1 << 20]))
        .node("ConstantOfShape", "huge", &["shape"], &["c"], vec![])
        .node("Add", "y", &["x", "c"], &["y"], vec![])
        .output("y", FLOAT, &[])
        .finish();
    let e = load_err(&bytes);
    assert!(e.contains("node 'huge'") && e.contains("limit"), "{e}");
}

#[test]
fn a_batch_size_computed_by_the_graph_fills_per_row_constants() {
    // ConstantOfShape(Shape(x)) + x, as exporters write zeros_like.
    let bytes = GraphBuilder::new(15)
        .input("x", FLOAT, &batch_dims(&[3]))
        .node("Shape", "s", &["x"], &["s"], vec![])
        .node(
            "ConstantOfShape",
            "ones",
            &["s"],
            &["ones"],
            vec![{
                let mut a = attr_int("value", 0);
                a.r#type = proto::attribute_type::TENSOR;
                a.t = Some(tensor::to_proto("v", &Tensor::f32(vec![1], vec![2.0])));
                a
            }],
        )
        .node("Mul", "y", &["x", "ones"], &["y"], vec![])
        .output("y", FLOAT, &batch_dims(&[3]))
        .finish();
    let model = load(&bytes, &Outputs::Default).unwrap();
    assert_eq!(
        run1(&model, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2),
        [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    );
}

#[test]
fn an_unused_branch_with_an_unsupported_operator_does_not_stop_the_model() {
    let bytes = GraphBuilder::new(13)
        .input("x", FLOAT, &batch_dims(&[3]))
        .node("Relu", "r", &["x"], &["y"], vec![])
        .node("Hardmax", "h", &["x"], &["z"], vec![])
        .output("y", FLOAT, &batch_dims(&[3]))
        .output("z", FLOAT, &batch_dims(&[3]))
        .finish();
    let model = load(&bytes, &Outputs::Named(vec!["y".into()])).unwrap();
    assert_eq!(run1(&model, &[-1.0, 0.5, 2.0], 1), [0.0, 0.5, 2.0]);
    let e = load(&bytes, &Outputs::Named(vec!["z".into()]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("node 'h' (Hardmax)"), "{e}");
    // Two float outputs and no choice: the error says how to choose.
    let e = load_err(&bytes);
    assert!(
        e.contains("'y', 'z'") && e.contains("output = \"NAME\""),
        "{e}"
    );

    let inspection = inspect(&OnnxFile::parse(&bytes).unwrap(), &ExternalFiles::new()).unwrap();
    assert!(!inspection.runnable);
    assert_eq!(inspection.unsupported.len(), 1);
    assert_eq!(inspection.unsupported[0].op, "Hardmax");
}

#[test]
fn inspect_shows_the_plan_the_cost_and_the_declared_values() {
    let mlp = test_mlp(&[8, 16, 1], OutputActivation::Sigmoid);
    let file = OnnxFile::parse(&mlp_to_onnx(&mlp)).unwrap();
    let i = inspect(&file, &ExternalFiles::new()).unwrap();
    assert!(i.runnable, "{:?}", i.problems);
    assert_eq!(i.stored_output.as_deref(), Some("scores"));
    assert_eq!(i.inputs[0].shape, ["N", "8"]);
    assert_eq!(i.ops.get("Gemm"), Some(&2));
    let kernels: Vec<(&str, &str)> = i
        .plan
        .iter()
        .map(|s| (s.kernel.as_str(), s.detail.as_str()))
        .collect();
    assert_eq!(
        kernels,
        [
            ("dense", "8->16 +bias relu"),
            ("dense", "16->1 +bias sigmoid")
        ]
    );
    assert_eq!(
        i.plan[0].nodes,
        ["node 'fc0' (Gemm)", "node 'relu0' (Relu)"]
    );
    assert_eq!(i.cost_per_row, 8 * 16 + 16 + 16 + 1);
    let text = i.to_text();
    assert!(text.contains("cost per row: 161 multiply-adds"), "{text}");
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["plan"][0]["backends"][0], "cpu");
}

#[test]
fn inputs_with_a_fixed_batch_or_a_dynamic_feature_dimension_are_refused() {
    for (dims, want) in [
        (
            vec![DimDecl::Size(1), DimDecl::Size(4)],
            "fixed first dimension of 1",
        ),
        (
            vec![DimDecl::Named("N".into()), DimDecl::Named("F".into())],
            "dynamic dimension 1 ('F')",
        ),
    ] {
        let bytes = GraphBuilder::new(13)
            .input("x", FLOAT, &dims)
            .node("Relu", "r", &["x"], &["y"], vec![])
            .output("y", FLOAT, &[])
            .finish();
        let e = load_err(&bytes);
        assert!(e.contains("graph input 'x'") && e.contains(want), "{e}");
    }
}
