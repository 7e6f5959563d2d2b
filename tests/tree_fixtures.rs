//! Every ai.onnx.ml node of the fixtures in tests/fixtures/trees (made by
//! make.py with onnxruntime) scored by herd's operators, on the fast path
//! and the reference, against onnxruntime's outputs: scores within 1e-5
//! (relative), labels exact, NaN inputs included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herd::model::trees::{Attr, Attrs, Labels, MlOp};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trees")
}

/// A tensor read back from a fixture, as f64 (labels as i64).
#[derive(Debug)]
struct Tensor {
    shape: Vec<usize>,
    f: Vec<f64>,
    i: Vec<i64>,
}

fn tensors(bytes: &[u8]) -> BTreeMap<String, Tensor> {
    let st = SafeTensors::deserialize(bytes).expect("fixture safetensors");
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let (mut f, mut i) = (Vec::new(), Vec::new());
        match view.dtype() {
            Dtype::F32 => {
                f = d
                    .chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect()
            }
            Dtype::F64 => {
                f = d
                    .chunks(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            }
            Dtype::I64 => {
                i = d
                    .chunks(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            }
            Dtype::I32 => {
                i = d
                    .chunks(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect()
            }
            other => panic!("tensor {name}: dtype {other:?}"),
        }
        if f.is_empty() && !i.is_empty() {
            f = i.iter().map(|&v| v as f64).collect();
        }
        out.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                f,
                i,
            },
        );
    }
    out
}

fn real(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN) // null: NaN
}

fn attrs(json: &Value) -> Attrs {
    let mut a = Attrs::new();
    for (name, v) in json.as_object().expect("attrs object") {
        let (kind, v) = v.as_object().unwrap().iter().next().unwrap();
        let attr = match kind.as_str() {
            "int" => Attr::Int(v.as_i64().unwrap()),
            "float" => Attr::Float(real(v) as f32),
            "str" => Attr::Str(v.as_str().unwrap().to_string()),
            "ints" => Attr::Ints(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect(),
            ),
            "floats" => Attr::Floats(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| real(x) as f32)
                    .collect(),
            ),
            "doubles" => Attr::Doubles(v.as_array().unwrap().iter().map(real).collect()),
            "strs" => Attr::Strs(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect(),
            ),
            other => panic!("attribute {name}: kind {other}"),
        };
        a.insert(name, attr);
    }
    a
}

/// Equal within 1e-5 of the larger magnitude, or within 1e-6 near zero
/// (where `1 - p` of a p near 1, or onnxruntime's approximate logistic,
/// leaves only absolute agreement); NaN equals NaN.
fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let d = (a - b).abs();
    d <= 1e-5 * a.abs().max(b.abs()) || d <= 1e-6
}

/// Checks every ML node of one case; returns the failures.
fn check_case(
    name: &str,
    case: &Value,
    vals: &BTreeMap<String, Tensor>,
    key: impl Fn(&str) -> String,
) -> Vec<String> {
    let mut failures = Vec::new();
    let strings = case["strings"].as_object().cloned().unwrap_or_default();
    for node in case["nodes"].as_array().unwrap() {
        let op_type = node["op"].as_str().unwrap();
        let label = format!("{name} {op_type} '{}'", node["name"].as_str().unwrap_or(""));
        let op = match MlOp::from_attrs(op_type, &attrs(&node["attrs"])) {
            Ok(op) => op,
            Err(e) => {
                failures.push(format!("{label}: load failed: {e}"));
                continue;
            }
        };
        let input = node["inputs"][0].as_str().unwrap();
        let Some(x) = vals.get(&key(input)) else {
            failures.push(format!("{label}: no value for input '{input}'"));
            continue;
        };
        let rows = if x.shape.len() == 2 { x.shape[0] } else { 1 };
        let width = *x.shape.last().unwrap();
        let xf: Vec<f32> = x.f.iter().map(|&v| v as f32).collect();
        let outputs: Vec<&str> = node["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        for (path, result) in [
            ("fast", op.run(&xf, rows, width)),
            ("reference", op.run_reference(&xf, rows, width)),
        ] {
            let out = match result {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{label} ({path}): run failed: {e}"));
                    continue;
                }
            };
            let mut values_name = outputs[0];
            if op.has_labels() {
                values_name = outputs[1];
                match (
                    &out.labels,
                    vals.get(&key(outputs[0])),
                    strings.get(outputs[0]),
                ) {
                    (Some(Labels::Int(got)), Some(want), _) => {
                        if *got != want.i {
                            let r = (0..rows).find(|&r| got[r] != want.i[r]).unwrap_or(0);
                            failures.push(format!(
                                "{label} ({path}): label of row {r} is {} but onnxruntime says {}",
                                got[r], want.i[r]
                            ));
                        }
                    }
                    (Some(Labels::Str(got)), _, Some(want)) => {
                        let want: Vec<&str> = want
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|s| s.as_str().unwrap())
                            .collect();
                        if got.iter().map(String::as_str).collect::<Vec<_>>() != want {
                            failures.push(format!(
                                "{label} ({path}): labels {got:?} but onnxruntime says {want:?}"
                            ));
                        }
                    }
                    (got, _, _) => failures.push(format!(
                        "{label} ({path}): labels {got:?} have no counterpart"
                    )),
                }
            }
            if op_type == "ZipMap" {
                continue;
            }
            let Some(want) = vals.get(&key(values_name)) else {
                failures.push(format!("{label}: no value for output '{values_name}'"));
                continue;
            };
            if want.f.len() != out.values.len() {
                failures.push(format!(
                    "{label} ({path}): {} values but onnxruntime gave {} (shape {:?})",
                    out.values.len(),
                    want.f.len(),
                    want.shape
                ));
                continue;
            }
            let w = out.width.max(1);
            if let Some(i) = (0..want.f.len()).find(|&i| !close(out.values[i] as f64, want.f[i])) {
                let row = i / w;
                failures.push(format!(
                    "{label} ({path}): row {row} is {:?} but onnxruntime says {:?} (input {:?})",
                    &out.values[row * w..(row + 1) * w],
                    &want.f[row * w..(row + 1) * w],
                    &xf[row * width..(row + 1) * width],
                ));
            }
        }
    }
    failures
}

#[test]
fn synthetic_operators_score_as_onnxruntime_does() {
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir().join("synthetic.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir().join("synthetic.io.safetensors")).unwrap();
    let vals = tensors(&bytes);
    let cases = json["cases"].as_array().unwrap();
    assert!(
        cases.len() > 300,
        "synthetic.json holds {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        failures.extend(check_case(name, case, &vals, |v| format!("{name}/val.{v}")));
    }
    if !failures.is_empty() {
        panic!("{} failures:\n{}", failures.len(), failures.join("\n"));
    }
}

#[test]
fn real_models_score_as_onnxruntime_does() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".nodes.json").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let case: Value = serde_json::from_slice(
            &std::fs::read(dir().join(format!("{name}.nodes.json"))).unwrap(),
        )
        .unwrap();
        let bytes = std::fs::read(dir().join(format!("{name}.io.safetensors"))).unwrap();
        let vals = tensors(&bytes);
        failures.extend(check_case(name, &case, &vals, |v| format!("val.{v}")));
    }
    if !failures.is_empty() {
        panic!("{} failures:\n{}", failures.len(), failures.join("\n"));
    }
}

#[test]
fn gen_gbdt_writes_an_onnx_ensemble_that_reads_back_as_the_same_model() {
    use herd::data::r#gen::{GenKind, GenOptions, gbdt_attrs, gbdt_onnx};
    use herd::model::onnx::{OnnxFile, ml};
    use herd::model::trees::Ensemble;
    let mut opts = GenOptions::defaults(GenKind::Gbdt);
    (opts.trees, opts.depth, opts.features) = (20, 6, 10);
    let bytes = gbdt_onnx(&opts);
    assert_eq!(bytes, gbdt_onnx(&opts), "same options, same bytes");
    let file = OnnxFile::parse(&bytes).unwrap();
    let graph = file.proto().graph.as_ref().unwrap();
    assert_eq!(graph.node.len(), 1);
    let node = &graph.node[0];
    assert_eq!(
        (node.domain.as_str(), node.op_type.as_str()),
        ("ai.onnx.ml", "TreeEnsembleClassifier")
    );
    let read = Ensemble::from_v3(&ml::attrs(node, &Default::default()).unwrap(), true).unwrap();
    let made = Ensemble::from_v3(&gbdt_attrs(&opts), true).unwrap();
    assert_eq!(read, made);
    // Every tree reaches the full depth on one path: 7 visits each.
    assert_eq!(read.cost_per_row(), 20 * 7);
    assert!(read.width <= 10);
}
