//! Every ai.onnx.ml node of the fixtures in tests/fixtures/trees (made by
//! make.py with onnxruntime) scored by herd's operators, on the fast path,
//! the reference and the WGSL kernels (lavapipe on a machine without a
//! GPU; no adapter at all is a failure), against onnxruntime's outputs:
//! scores within 1e-5 (relative), labels exact, NaN inputs included. The
//! tree kernel's walk equals the CPU's bit for bit; every fixture's whole
//! graph runs on the GPU path, and through a full `herd run` on device =
//! "cpu" and "wgpu-cpu".

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use herd::config::Device;
use herd::gpu::{self, Gpu, GpuMl, GpuTrees};
use herd::model::trees::{Attr, Attrs, Labels, MlOp, MlOutput};
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

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        gpu::choose(Device::WgpuCpu)
            .ok()
            .flatten()
            .or_else(|| gpu::choose(Device::Gpu).ok().flatten())
            .expect(
                "no wgpu adapter found, so the tree kernel cannot be tested; install a \
                 software Vulkan adapter with `apt-get install -y mesa-vulkan-drivers libvulkan1`",
            )
    })
}

/// Which paths score each node: the CPU's fast path and reference, or
/// the WGSL kernels.
#[derive(Clone, Copy, PartialEq)]
enum Paths {
    Cpu,
    Wgsl,
}

fn kernels() -> &'static GpuMl {
    static KERNELS: OnceLock<GpuMl> = OnceLock::new();
    KERNELS.get_or_init(|| GpuMl::new(gpu()))
}

/// Operator `op` on the WGSL kernels, as a graph on the GPU path runs it:
/// from its input to its outputs on the device (but a tree ensemble given
/// in doubles, whose leaves add up in f64 on the host), agreeing with the
/// CPU's fast path within 1e-5, labels exact.
fn on_wgsl(
    label: &str,
    op: &MlOp,
    x: &[f32],
    rows: usize,
    width: usize,
) -> Result<MlOutput, String> {
    let (got, on_device) = kernels()
        .run(gpu(), op, x, rows, width)
        .map_err(|e| e.to_string())?;
    let double = matches!(op, MlOp::Trees(t) if t.ensemble.double);
    if on_device == double {
        return Err(format!(
            "{label}: on the device from input to output: {on_device}"
        ));
    }
    let cpu = op.run(x, rows, width).map_err(|e| e.to_string())?;
    let agree = got.values.len() == cpu.values.len()
        && got
            .values
            .iter()
            .zip(&cpu.values)
            .all(|(&a, &b)| close(a as f64, b as f64));
    if !agree || got.labels != cpu.labels {
        return Err(format!(
            "{label}: the kernels gave {:?} / {:?} but the CPU path {:?} / {:?}",
            got.values, got.labels, cpu.values, cpu.labels
        ));
    }
    Ok(got)
}

/// Checks every ML node of one case on `paths`; returns the failures.
fn check_case(
    name: &str,
    case: &Value,
    vals: &BTreeMap<String, Tensor>,
    key: impl Fn(&str) -> String,
    paths: Paths,
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
        let results = match paths {
            Paths::Cpu => vec![
                ("fast", op.run(&xf, rows, width).map_err(|e| e.to_string())),
                (
                    "reference",
                    op.run_reference(&xf, rows, width)
                        .map_err(|e| e.to_string()),
                ),
            ],
            Paths::Wgsl => vec![("wgsl", on_wgsl(&label, &op, &xf, rows, width))],
        };
        for (path, result) in results {
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

fn synthetic(paths: Paths) {
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
        failures.extend(check_case(
            name,
            case,
            &vals,
            |v| format!("{name}/val.{v}"),
            paths,
        ));
    }
    if !failures.is_empty() {
        panic!("{} failures:\n{}", failures.len(), failures.join("\n"));
    }
}

#[test]
fn synthetic_operators_score_as_onnxruntime_does() {
    synthetic(Paths::Cpu);
}

#[test]
fn synthetic_operators_on_the_wgsl_kernels_score_as_onnxruntime_and_the_cpu_do() {
    synthetic(Paths::Wgsl);
}

#[test]
fn real_models_score_as_onnxruntime_does() {
    real_models(Paths::Cpu);
}

#[test]
fn real_models_on_the_wgsl_kernels_score_as_onnxruntime_and_the_cpu_do() {
    real_models(Paths::Wgsl);
}

fn real_models(paths: Paths) {
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
        failures.extend(check_case(
            name,
            &case,
            &vals,
            |v| format!("val.{v}"),
            paths,
        ));
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

/// A TreeEnsemble (opset 5) exercising every test: thresholds `splits`
/// (doubles or floats), member sets with and without negative values,
/// missing values sent to `yes` at the root.
fn every_test_ensemble(double: bool) -> herd::model::trees::Ensemble {
    let splits = [0.1, 0.3, 0.7, 1e40, 0.1, 0.5, 0.0, 0.0];
    let modes = [0, 1, 2, 3, 4, 5, 6, 6];
    let members = [-1.0, 2.5, 3.0, f64::NAN, 0.1, 2.0, 3.0, f64::NAN];
    let weights = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1e-9, 2e-9];
    let reals = |v: &[f64]| {
        if double {
            Attr::Doubles(v.to_vec())
        } else {
            Attr::Floats(v.iter().map(|&x| x as f32).collect())
        }
    };
    let ensemble = Attrs::new()
        .with("n_targets", Attr::Int(1))
        .with("aggregate_function", Attr::Int(1))
        .with("post_transform", Attr::Int(0))
        .with("tree_roots", Attr::Ints(vec![0, 7]))
        .with("nodes_modes", Attr::Ints(modes.to_vec()))
        .with("nodes_featureids", Attr::Ints(vec![0, 0, 1, 1, 2, 2, 3, 3]))
        .with("nodes_splits", reals(&splits))
        .with("membership_values", reals(&members))
        .with(
            "nodes_truenodeids",
            Attr::Ints(vec![0, 1, 2, 3, 4, 5, 6, 8]),
        )
        .with("nodes_trueleafs", Attr::Ints(vec![1; 8]))
        .with(
            "nodes_falsenodeids",
            Attr::Ints(vec![1, 2, 3, 4, 5, 6, 7, 9]),
        )
        .with("nodes_falseleafs", Attr::Ints(vec![0, 0, 0, 0, 0, 0, 1, 1]))
        .with(
            "nodes_missing_value_tracks_true",
            Attr::Ints(vec![1, 0, 0, 0, 0, 0, 0, 0]),
        )
        .with("leaf_targetids", Attr::Ints(vec![0; 10]))
        .with("leaf_weights", reals(&weights));
    match MlOp::from_attrs("TreeEnsemble", &ensemble).unwrap() {
        MlOp::Trees(t) => t.ensemble,
        _ => unreachable!(),
    }
}

#[test]
fn a_nan_reaching_a_binarizer_on_the_kernels_fails_naming_its_row_and_feature() {
    let op = MlOp::from_attrs(
        "Binarizer",
        &Attrs::new().with("threshold", Attr::Float(0.5)),
    )
    .unwrap();
    let mut x = vec![0.25f32; 3 * 4];
    x[2 * 4 + 1] = f32::NAN;
    x[2 * 4 + 3] = f32::NAN;
    let e = kernels().run(gpu(), &op, &x, 3, 4).unwrap_err().to_string();
    let cpu = op.run(&x, 3, 4).unwrap_err().to_string();
    assert!(e.contains("row 2 feature 1"), "{e}");
    assert_eq!(e, cpu);
    x[2 * 4 + 1] = 0.75;
    x[2 * 4 + 3] = 0.5;
    let (out, on_device) = kernels().run(gpu(), &op, &x, 3, 4).unwrap();
    assert!(on_device);
    assert_eq!(out.values, op.run(&x, 3, 4).unwrap().values);
    assert_eq!(out.values.iter().sum::<f32>(), 1.0);
}

#[test]
fn every_branch_test_on_the_wgsl_kernel_splits_rows_as_the_cpu_does_at_float_edges() {
    // Each threshold, the floats either side of it, NaN, infinities,
    // integers and fractions near the member sets, and values past i32.
    let mut values = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.5,
        -1.0,
        2.0,
        2.5,
        2.9,
        3.0,
        3.9,
        0.0,
        -0.0,
        -2_147_483_648.0,
        3e9,
        f32::MAX,
    ];
    for t in [0.1f64, 0.3, 0.5, 0.7, 1e40] {
        let f = t as f32;
        // The floats either side (all these thresholds are positive).
        values.extend([
            f,
            f32::from_bits(f.to_bits() + 1),
            f32::from_bits(f.to_bits() - 1),
        ]);
    }
    let width = 4;
    let n = values.len();
    let rows = n * n;
    let x: Vec<f32> = (0..rows * width)
        .map(|i| {
            let (r, j) = (i / width, i % width);
            values[(r / n.pow((j % 2) as u32) + j * 5) % n]
        })
        .collect();
    for double in [false, true] {
        let e = every_test_ensemble(double);
        assert_eq!(e.double, double);
        let want = e.score_reference(&x, rows, width);
        let g = GpuTrees::new(gpu(), &e).unwrap();
        let got = g.score(gpu(), &x, rows, width).unwrap();
        for r in 0..rows {
            assert_eq!(
                got.scores[r].to_bits(),
                want.scores[r].to_bits(),
                "double = {double}: row {r} {:?}: kernel {}, cpu {}",
                &x[r * width..(r + 1) * width],
                got.scores[r],
                want.scores[r]
            );
        }
    }
}

#[test]
fn every_tree_model_as_a_graph_on_the_gpu_path_gives_onnxruntimes_outputs() {
    // The whole ONNX graph (labels, ZipMap, linear models, transforms) as
    // a worker on a GPU runs it, against onnxruntime and the CPU path.
    use herd::gpu::GpuOnnx;
    use herd::model::onnx::{Data, Feed, OnnxFile, OnnxModel, Outputs};
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".onnx").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 16, "fixtures: {names:?}");
    for name in &names {
        let bytes = std::fs::read(dir().join(format!("{name}.onnx"))).unwrap();
        let file = OnnxFile::parse(&bytes).unwrap();
        let vals = tensors(&std::fs::read(dir().join(format!("{name}.io.safetensors"))).unwrap());
        let outputs: Vec<String> = vals
            .keys()
            .filter_map(|k| k.strip_prefix("out.").map(str::to_string))
            .collect();
        // Every fixture loads as its exporter wrote it (onnxmltools' opset 8
        // and 9 around tree ensembles included).
        let model = OnnxModel::load(&file, &Default::default(), &Outputs::Named(outputs.clone()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = &vals["in.X"];
        let xf: Vec<f32> = x.f.iter().map(|&v| v as f32).collect();
        let rows = x.shape[0];
        let g = GpuOnnx::new(gpu(), &model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = g
            .run(gpu(), &[Feed::F32(&xf)], rows)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let cpu = model.run(&[Feed::F32(&xf)], rows).unwrap();
        for ((o, got), cpu) in outputs.iter().zip(&got).zip(&cpu) {
            let want = &vals[&format!("out.{o}")];
            match (&got.data, &cpu.data) {
                (Data::F32(g), Data::F32(c)) => {
                    for (i, ((&a, &c), &b)) in g.iter().zip(c).zip(&want.f).enumerate() {
                        assert!(
                            close(a as f64, b) && close(a as f64, c as f64),
                            "{name} '{o}' value {i}: gpu path {a}, cpu path {c}, onnxruntime {b}"
                        );
                    }
                }
                (Data::I64(g), Data::I64(c)) => {
                    assert_eq!(g, c, "{name} '{o}': gpu path and cpu path differ");
                    assert_eq!(g, &want.i, "{name} '{o}': labels");
                }
                _ => panic!("{name} '{o}': the paths gave different types"),
            }
        }
    }
}

/// One stored slice of a merged model's output: a fixture's labels (one
/// column) or its scores, with onnxruntime's values.
struct Part {
    what: String,
    width: usize,
    want: Vec<f64>,
    labels: bool,
}

/// Fixtures `names` as one ONNX model for one `herd run`: each fixture's
/// whole graph (its nodes renamed apart, reading its own input
/// `<k>_X`), and one output, the concatenation of every fixture's outputs
/// (labels cast to float). Returns the model and what each slice of a
/// stored row must be.
fn merged_model(names: &[&str]) -> (Vec<u8>, Vec<Part>) {
    use herd::model::onnx::OnnxFile;
    use herd::model::onnx::proto::{NodeProto, data_type};
    use herd::model::onnx::write::{GraphBuilder, attr_int, batch_dims};
    use prost::Message;
    let mut b = GraphBuilder::new(17).opset("ai.onnx.ml", 1);
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut initializers = Vec::new();
    let (mut parts, mut concat) = (Vec::new(), Vec::new());
    for (k, name) in names.iter().enumerate() {
        let p = |v: &str| format!("{k}_{v}");
        let bytes = std::fs::read(dir().join(format!("{name}.onnx"))).unwrap();
        let file = OnnxFile::parse(&bytes).unwrap();
        let graph = file.proto().graph.clone().unwrap();
        let vals = tensors(&std::fs::read(dir().join(format!("{name}.io.safetensors"))).unwrap());
        assert_eq!(vals["in.X"].shape, [ROWS, 8], "{name}");
        b = b.input(&p("X"), data_type::FLOAT, &batch_dims(&[8]));
        for t in &graph.initializer {
            let mut t = t.clone();
            t.name = p(&t.name);
            initializers.push(t);
        }
        for (i, n) in graph.node.iter().enumerate() {
            let mut n = n.clone();
            let rename = |v: &mut String| {
                if !v.is_empty() {
                    *v = p(v);
                }
            };
            n.input.iter_mut().for_each(rename);
            n.output.iter_mut().for_each(rename);
            n.name = p(&format!("{}{i}", n.name));
            nodes.push(n);
        }
        for o in &graph.output {
            let int = o
                .r#type
                .as_ref()
                .and_then(|t| t.tensor_type.as_ref())
                .is_some_and(|t| t.elem_type == data_type::INT64);
            if int {
                let (f, col) = (p(&format!("{}_f", o.name)), p(&format!("{}_col", o.name)));
                b = b
                    .node("Cast", &f, &[&p(&o.name)], &[&f], vec![attr_int("to", 1)])
                    .initializer(
                        &p("axes"),
                        &herd::model::onnx::Tensor::i64(vec![1], vec![1]),
                    )
                    .node("Unsqueeze", &col, &[&f, &p("axes")], &[&col], vec![]);
                concat.push(col);
                let want = &vals[&format!("out.{}", o.name)];
                parts.push(Part {
                    what: format!("{name} {}", o.name),
                    width: 1,
                    want: want.f.clone(),
                    labels: true,
                });
                continue;
            }
            // ZipMap's output is the probability tensor it was given.
            let source = graph
                .node
                .iter()
                .find(|n| n.op_type == "ZipMap" && n.output.first() == Some(&o.name))
                .map_or(format!("out.{}", o.name), |z| format!("val.{}", z.input[0]));
            let want = &vals[&source];
            concat.push(p(&o.name));
            parts.push(Part {
                what: format!("{name} {}", o.name),
                width: want.f.len() / ROWS,
                want: want.f.clone(),
                labels: false,
            });
        }
    }
    let total: usize = parts.iter().map(|p| p.width).sum();
    let refs: Vec<&str> = concat.iter().map(String::as_str).collect();
    let mut m = b
        .node("Concat", "all", &refs, &["all"], vec![attr_int("axis", 1)])
        .output("all", data_type::FLOAT, &batch_dims(&[total]))
        .model();
    // The fixtures' nodes go first: the added ones read their outputs.
    let g = m.graph.as_mut().unwrap();
    let added = std::mem::take(&mut g.node);
    g.node = nodes.into_iter().chain(added).collect();
    g.initializer.extend(initializers);
    (m.encode_to_vec(), parts)
}

/// Rows of every fixture input.
const ROWS: usize = 61;

/// `id` and each fixture's 8 features as `<k>_f<j>`; a missing value is
/// written as a null on even rows and as NaN on odd rows.
fn write_rows(path: &Path, names: &[&str]) {
    use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
    use std::sync::Arc;
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "id".into(),
        Arc::new(Int64Array::from_iter_values(0..ROWS as i64)),
    )];
    for (k, name) in names.iter().enumerate() {
        let vals = tensors(&std::fs::read(dir().join(format!("{name}.io.safetensors"))).unwrap());
        let x = &vals["in.X"].f;
        for j in 0..8 {
            let col: Float32Array = (0..ROWS)
                .map(|r| {
                    let v = x[r * 8 + j] as f32;
                    (!v.is_nan() || r % 2 == 1).then_some(v)
                })
                .collect();
            columns.push((format!("{k}_f{j}"), Arc::new(col)));
        }
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// One `herd run` of fixtures `names` (as [`merged_model`]) on `device`:
/// what differs from onnxruntime, slice by slice.
fn herd_run(names: &[&str], device: &str) -> Vec<String> {
    use herd::model::EntityKey;
    use herd::store::{Store, Value};
    let (model, parts) = merged_model(names);
    let s = tempfile::tempdir().unwrap();
    let p = s.path();
    std::fs::write(p.join("model.onnx"), model).unwrap();
    write_rows(&p.join("rows.parquet"), names);
    std::fs::write(
        p.join("hosts.toml"),
        format!("[[host]]\nname = \"local\"\nkind = \"local\"\nslots = 1\ndevice = \"{device}\"\n"),
    )
    .unwrap();
    let mut inputs = String::new();
    for k in 0..names.len() {
        let cols: Vec<String> = (0..8).map(|j| format!("\"{k}_f{j}\"")).collect();
        inputs.push_str(&format!("\"{k}_X\" = [{}]\n", cols.join(", ")));
    }
    std::fs::write(
        p.join("job.toml"),
        format!(
            "[job]\nname = \"tree-fixtures\"\nmodel_version = \"1\"\nhosts = \"hosts.toml\"\n\n\
             [input]\npath = \"rows.parquet\"\nid_column = \"id\"\n\n\
             [model]\nkind = \"onnx\"\npath = \"model.onnx\"\n[model.inputs]\n{inputs}\n\
             [output]\nstore = \"store\"\n"
        ),
    )
    .unwrap();
    let out = common::herd_in(p, &["run", "job.toml", "--report", "r.json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "device {device}: {}\n(wgpu-cpu needs a software Vulkan driver: apt-get install -y \
         mesa-vulkan-drivers libvulkan1)",
        common::text(&out)
    );
    // The worker scored where it was told to (no fallback to the CPU).
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("r.json")).unwrap()).unwrap();
    let backend = report["hosts"][0]["backend"].as_str().unwrap_or_default();
    assert_eq!(backend == "cpu", device == "cpu", "{device}: {report}");
    let store = Store::open_existing(&p.join("store")).unwrap();
    let mut failures = Vec::new();
    for r in 0..ROWS {
        let got = store.get(&EntityKey::Int(r as u64), None, 0).unwrap();
        let Some(Value::Scores(row)) = got.map(|g| g.value) else {
            failures.push(format!("{device}: row {r} not stored as scores"));
            continue;
        };
        let mut at = 0;
        for part in &parts {
            let got = &row[at..at + part.width];
            let want = &part.want[r * part.width..(r + 1) * part.width];
            at += part.width;
            let same = got.iter().zip(want).all(|(&g, &w)| match part.labels {
                true => g as f64 == w,
                false => close(g as f64, w),
            });
            if !same {
                failures.push(format!(
                    "{device}: {} row {r}: herd stored {got:?}, onnxruntime {want:?}",
                    part.what
                ));
            }
        }
        if at != row.len() {
            failures.push(format!(
                "{device}: row {r} has {} values, not {at}",
                row.len()
            ));
        }
    }
    failures
}

#[test]
fn every_fixture_through_herd_run_stores_onnxruntimes_outputs_on_cpu_and_wgpu_cpu() {
    // Each fixture's whole graph, its inputs' missing values written as
    // nulls and NaNs, scored by a full `herd run` on both devices: labels
    // exact, scores within 1e-5. To keep this quick the fixtures run
    // merged into one model per run: those with missing values in theirs
    // (every reader of its input defines missing values) and the others
    // (a graph reading the rows with, say, a Scaler, refuses missing
    // values, as onnxruntime would score NaN through it).
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".onnx").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 16, "fixtures: {names:?}");
    let missing = |n: &String| {
        let vals = tensors(&std::fs::read(dir().join(format!("{n}.io.safetensors"))).unwrap());
        vals["in.X"].f.iter().any(|v| v.is_nan())
    };
    let (with, without): (Vec<&str>, Vec<&str>) = names
        .iter()
        .map(String::as_str)
        .partition(|n| missing(&n.to_string()));
    assert!(with.len() >= 8, "fixtures with missing values: {with:?}");
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = ["cpu", "wgpu-cpu"]
            .into_iter()
            .map(|device| {
                let (with, without) = (&with, &without);
                s.spawn(move || {
                    let mut f = herd_run(with, device);
                    f.extend(herd_run(without, device));
                    f
                })
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    if !failures.is_empty() {
        panic!("{} failures:\n{}", failures.len(), failures.join("\n"));
    }
}
