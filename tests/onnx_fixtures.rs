//! Every committed ONNX fixture (tests/fixtures/onnx, made by make.py with
//! onnxruntime) scored by herd's fast and reference CPU paths, compared with
//! onnxruntime's outputs; and the bad models refused at load with errors
//! that name what is wrong.

mod onnx_common;

use std::collections::BTreeSet;

use herd::model::onnx::{self, Data, Error, ExternalFiles, OnnxFile, OnnxModel, Outputs, Tensor};
use onnx_common::*;

#[test]
fn every_fixture_matches_onnxruntime_on_the_fast_and_reference_paths() {
    for name in fixture_names() {
        let l = load(&name);
        let fast = l.model.run(&feeds(&l, 0..l.rows), l.rows).unwrap();
        let reference = l
            .model
            .run_reference(&feeds(&l, 0..l.rows), l.rows)
            .unwrap();
        for (o, (f, r)) in l.model.outputs().iter().zip(fast.iter().zip(&reference)) {
            let want = &l.io[&format!("out.{}", o.name)];
            assert_close(&format!("{name} fast '{}'", o.name), f, want);
            assert_close(&format!("{name} reference '{}'", o.name), r, want);
        }
    }
}

#[test]
fn scoring_rows_in_any_split_gives_each_row_the_same_result() {
    for name in fixture_names() {
        let l = load(&name);
        let whole = l.model.run(&feeds(&l, 0..l.rows), l.rows).unwrap();
        // Uneven pieces: one row, then 5, then the rest.
        let cuts = [0, 1, 6, l.rows];
        for w in cuts.windows(2) {
            let part = l.model.run(&feeds(&l, w[0]..w[1]), w[1] - w[0]).unwrap();
            for (o, (p, all)) in l.model.outputs().iter().zip(part.iter().zip(&whole)) {
                let per_row = p.len() / (w[1] - w[0]);
                let slice = |t: &Tensor| match &t.data {
                    Data::F32(v) => {
                        Tensor::f32(p.shape.clone(), v[w[0] * per_row..w[1] * per_row].to_vec())
                    }
                    Data::I64(v) => {
                        Tensor::i64(p.shape.clone(), v[w[0] * per_row..w[1] * per_row].to_vec())
                    }
                };
                assert_close(&format!("{name} rows {w:?} '{}'", o.name), p, &slice(all));
            }
        }
    }
}

#[test]
fn every_supported_operator_is_checked_against_onnxruntime_by_some_fixture() {
    let mut seen = BTreeSet::new();
    for name in fixture_names() {
        let (file, files) = read_model(&dir().join(format!("{name}.onnx")));
        let inspection = onnx::inspect(&file, &files).unwrap();
        seen.extend(inspection.ops.keys().cloned());
    }
    let missing: Vec<&&str> = onnx::op::SUPPORTED
        .iter()
        .filter(|op| !seen.contains(**op))
        .collect();
    assert!(missing.is_empty(), "no fixture uses {missing:?}");
}

#[test]
fn a_classifier_stores_its_probabilities_by_default() {
    for name in ["sklearn_mlp_classifier", "sklearn_mlp_binary"] {
        let (file, files) = read_model(&dir().join(format!("{name}.onnx")));
        let model = OnnxModel::load(&file, &files, &Outputs::Default).unwrap();
        let names: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["probabilities"], "{name}");
        // scikit-learn's label goes through ai.onnx.ml ArrayFeatureExtractor,
        // which herd does not run yet: asked for, it is refused by name.
        let err = OnnxModel::load(&file, &files, &Outputs::Named(vec!["label".into()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ai.onnx.ml.ArrayFeatureExtractor"), "{err}");
    }
}

#[test]
fn external_weights_are_read_from_the_file_beside_the_model() {
    let (file, files) = read_model(&dir().join("external_weights.onnx"));
    assert_eq!(
        file.external_files().unwrap(),
        ["external_weights.onnx.data"]
    );
    assert!(OnnxModel::load(&file, &files, &Outputs::Default).is_ok());
    let err = OnnxModel::load(&file, &ExternalFiles::new(), &Outputs::Default).unwrap_err();
    assert!(
        matches!(&err, Error::ExternalData { location, .. } if location == "external_weights.onnx.data"),
        "{err}"
    );
}

fn bad(name: &str) -> String {
    let path = dir().join("bad").join(format!("{name}.onnx"));
    let bytes = std::fs::read(&path).unwrap();
    let outputs = if name == "output_constant" {
        Outputs::Named(vec!["y".into()])
    } else {
        Outputs::Default
    };
    match OnnxFile::parse(&bytes).and_then(|f| OnnxModel::load(&f, &ExternalFiles::new(), &outputs))
    {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_models_are_refused_at_load_naming_the_node_input_or_output() {
    let cases: &[(&str, &[&str])] = &[
        (
            "unsupported_op",
            &["node 'pick' (Hardmax)", "herd runs Add, ArgMax"],
        ),
        (
            "dynamic_feature_dim",
            &["graph input 'x'", "dynamic dimension 1 ('F')"],
        ),
        (
            "output_not_per_row",
            &["node 'total' (ReduceSum)", "sums over the batch dimension"],
        ),
        (
            "output_constant",
            &["graph output 'y'", "does not depend on the input rows"],
        ),
        ("double_input", &["graph input 'x'", "double"]),
        ("opset_12", &["opset 12", "13 to 21"]),
        ("truncated", &["not a valid ONNX model file"]),
    ];
    for (name, wants) in cases {
        let msg = bad(name);
        for want in *wants {
            assert!(msg.contains(want), "{name}: '{msg}' lacks '{want}'");
        }
    }
    let files: BTreeSet<String> = std::fs::read_dir(dir().join("bad"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        files.len(),
        cases.len(),
        "every bad model has a case: {files:?}"
    );
}

fn herd_inspect(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["model", "inspect"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn model_inspect_prints_inputs_outputs_the_plan_and_the_cost() {
    let path = dir().join("mlp_batchnorm.onnx");
    let (code, out, err) = herd_inspect(&[path.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["inputs"][0]["name"], "x");
    assert_eq!(j["inputs"][0]["shape"], serde_json::json!(["N", "10"]));
    assert_eq!(j["stored_output"], "probabilities");
    assert_eq!(j["ops"]["Gemm"], 2);
    // Gemm + BatchNormalization + Relu in one step, Gemm + Softmax in another.
    let plan = j["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert_eq!(plan[0]["kernel"], "dense");
    assert_eq!(plan[0]["detail"], "10->32 +bias relu");
    assert_eq!(plan[0]["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(plan[1]["detail"], "32->4 +bias softmax");
    // 10x32 + 32x4 products, one per value of the batch norm, relu and softmax.
    assert_eq!(j["cost_per_row"], 10 * 32 + 32 * 4 + 32 + 32 + 4);
    assert_eq!(j["runnable"], true);

    let (code, out, _) = herd_inspect(&[path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("dense 10->32 +bias relu  [cpu, wgpu]"),
        "{out}"
    );
    assert!(out.contains("cost per row: 516 multiply-adds"), "{out}");
    assert!(out.contains("backends: cpu, wgpu\n"), "{out}");
    assert!(!out.contains("falls back"), "{out}");
}

#[test]
fn model_inspect_lists_the_backends_and_the_steps_that_fall_back_to_the_cpu() {
    use herd::model::onnx::proto::data_type::{FLOAT, INT64};
    use herd::model::onnx::write::{GraphBuilder, attr_int, batch_dims};
    // ArgMax over integers: the native CPU path runs it, the WGSL kernels
    // do not; the dense step before it runs on both.
    let w = Tensor::f32(vec![4, 3], (0..12).map(|i| i as f32 / 7.0).collect());
    let bytes = GraphBuilder::new(17)
        .input("x", FLOAT, &batch_dims(&[4]))
        .initializer("w", &w)
        .node("MatMul", "project", &["x", "w"], &["h"], vec![])
        .node(
            "Cast",
            "to_int",
            &["h"],
            &["hi"],
            vec![attr_int("to", INT64 as i64)],
        )
        .node(
            "ArgMax",
            "pick",
            &["hi"],
            &["best"],
            vec![attr_int("axis", 1)],
        )
        .node(
            "Cast",
            "to_float",
            &["best"],
            &["y"],
            vec![attr_int("to", FLOAT as i64)],
        )
        .output("y", FLOAT, &batch_dims(&[1]))
        .finish();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("int_argmax.onnx");
    std::fs::write(&path, bytes).unwrap();
    let (code, out, err) = herd_inspect(&[path.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["backends"], serde_json::json!(["cpu"]), "{out}");
    let falls_back = j["falls_back"].as_array().unwrap();
    assert_eq!(falls_back.len(), 1, "{out}");
    let why = falls_back[0].as_str().unwrap();
    assert!(
        why.starts_with("wgpu: ") && why.contains("'pick'") && why.contains("ArgMax over integers"),
        "{why}"
    );
    let plan = j["plan"].as_array().unwrap();
    let step = |kernel: &str| plan.iter().find(|s| s["kernel"] == kernel).unwrap();
    assert_eq!(
        step("dense")["backends"],
        serde_json::json!(["cpu", "wgpu"])
    );
    assert_eq!(step("ArgMax")["backends"], serde_json::json!(["cpu"]));

    let (_, text, _) = herd_inspect(&[path.to_str().unwrap()]);
    assert!(text.contains("backends: cpu\n"), "{text}");
    assert!(
        text.contains("falls back to the native CPU path on wgpu: ") && text.contains("'pick'"),
        "{text}"
    );
}

#[test]
fn model_inspect_of_a_model_herd_cannot_run_names_the_operator_and_exits_2() {
    let path = dir().join("bad/unsupported_op.onnx");
    let (code, out, _) = herd_inspect(&[path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("unsupported operators:\n  node 'pick' (Hardmax)"),
        "{out}"
    );
    assert!(out.contains("does not run:"), "{out}");

    let path = dir().join("bad/truncated.onnx");
    let (code, _, err) = herd_inspect(&[path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("truncated.onnx") && err.contains("not a valid ONNX model file"),
        "{err}"
    );
}
