//! `[model] kind = "onnx"` through `herd run`: fixtures from tests/fixtures
//! (made with onnxruntime) written as Parquet, scored by local workers, and
//! the stored values compared with onnxruntime's outputs within 1e-5
//! (relative). Every network fixture on the native CPU path and on the WGSL
//! shaders (lavapipe), multi-input graphs fed integer ids through
//! `[model.inputs]`, a model with external data on an SSH host (a real sshd
//! on loopback), and tree ensembles whose inputs hold nulls and NaNs
//! (missing values).

mod common;
mod sshd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use common::{herd_in, text};
use herd::model::EntityKey;
use herd::store::{Store, Value};
use parquet::arrow::ArrowWriter;
use safetensors::{Dtype, SafeTensors};

fn fixture(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name)
}

/// A fixture's tensors as f32 (integers converted), with their shapes.
fn io(dir: &str, name: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture(dir, &format!("{name}.io.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let d = v.data();
            let values = match v.dtype() {
                Dtype::F32 => d
                    .chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::I64 => d
                    .chunks(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                other => panic!("{name}: tensor {n} has dtype {other:?}"),
            };
            (n, (v.shape().to_vec(), values))
        })
        .collect()
}

/// `id` plus one float column per `(name, values, width)` group; NaNs are
/// written as nulls on even rows and as NaN on odd rows.
fn write_parquet(path: &Path, groups: &[(&str, &[f32], usize)]) -> usize {
    let rows = groups[0].1.len() / groups[0].2;
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "id".into(),
        Arc::new(Int64Array::from_iter_values(0..rows as i64)),
    )];
    for (name, values, width) in groups {
        for j in 0..*width {
            let col: Float32Array = (0..rows)
                .map(|r| {
                    let v = values[r * width + j];
                    if v.is_nan() && r % 2 == 0 {
                        None
                    } else {
                        Some(v)
                    }
                })
                .collect();
            columns.push((format!("{name}{j}"), Arc::new(col)));
        }
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    rows
}

/// Runs a job scoring `model` on `device`; returns the scratch folder.
fn run(
    device: &str,
    model: &Path,
    model_extra: &str,
    columns: Option<&[String]>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("hosts.toml"),
        format!("[[host]]\nname = \"local\"\nkind = \"local\"\nslots = 2\ndevice = \"{device}\"\n"),
    )
    .unwrap();
    let features = columns.map_or(String::new(), |c| {
        let quoted: Vec<String> = c.iter().map(|c| format!("\"{c}\"")).collect();
        format!("feature_columns = [{}]\n", quoted.join(", "))
    });
    std::fs::write(
        p.join("job.toml"),
        format!(
            "[job]\nname = \"onnx-test\"\nmodel_version = \"1\"\nhosts = \"hosts.toml\"\n\n\
             [input]\npath = \"rows.parquet\"\nid_column = \"id\"\n{features}\n\
             [model]\nkind = \"onnx\"\npath = \"{}\"\n{model_extra}\n\
             [output]\nstore = \"store\"\n\n[validate]\nspot_check = 20\n",
            model.display()
        ),
    )
    .unwrap();
    dir
}

fn score(dir: &tempfile::TempDir, device: &str) {
    let out = herd_in(dir.path(), &["run", "job.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "device {device}: {}\n(wgpu-cpu needs a software Vulkan driver: apt-get install -y \
         mesa-vulkan-drivers libvulkan1)",
        text(&out)
    );
}

/// Every stored row equals `want` (`width` values per row) within 1e-5
/// relative (1e-6 absolute near zero).
fn assert_stored(dir: &Path, want: &[f32], width: usize, what: &str) {
    let store = Store::open_existing(&dir.join("store")).unwrap();
    let rows = want.len() / width;
    for r in 0..rows {
        let got = store
            .get(&EntityKey::Int(r as u64), None, 0)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: row {r} not stored"));
        let Value::Scores(got) = &got.value else {
            panic!("{what}: row {r}: not scores: {:?}", got.value)
        };
        let want = &want[r * width..(r + 1) * width];
        assert_eq!(got.len(), width, "{what}: row {r}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(g.abs()) + 1e-6,
                "{what}: row {r}: stored {got:?}, onnxruntime {want:?}"
            );
        }
    }
}

fn single_input(dir: &str, name: &str, output: &str, device: &str) {
    let io = io(dir, name);
    let (shape, x) = &io["in.X"];
    let model = fixture(dir, &format!("{name}.onnx"));
    let s = run(device, &model, "", None);
    write_parquet(&s.path().join("rows.parquet"), &[("f", x, shape[1])]);
    score(&s, device);
    let (oshape, want) = &io[output];
    let width = oshape.iter().skip(1).product();
    assert_stored(s.path(), want, width, &format!("{name} on {device}"));
}

/// Every network fixture, the graph output a run stores (`None`: the
/// default, a classifier's probabilities or the only float output) and the
/// fixture's name for it.
const NETWORKS: &[(&str, Option<&str>, &str)] = &[
    ("sklearn_mlp_binary", None, "probabilities"),
    ("sklearn_mlp_classifier", None, "probabilities"),
    ("sklearn_mlp_regressor", None, "variable"),
    ("mlp_batchnorm", None, "probabilities"),
    ("mlp_layernorm_gelu", None, "score"),
    ("embedding_two_inputs", Some("log_probs"), "log_probs"),
    ("external_weights", None, "y"),
    ("dynamic_reshape", Some("clipped"), "clipped"),
];

/// A full run of network fixture `name` on `device`: a single-input graph
/// reads the input's feature columns in order, a multi-input one (integer
/// ids included) gets each input's columns through `[model.inputs]`.
fn network(name: &str, output: Option<&str>, stored: &str, device: &str) {
    let io = io("onnx", name);
    let inputs: Vec<(&str, usize, &[f32])> = io
        .iter()
        .filter_map(|(k, (shape, v))| {
            let width = shape.iter().skip(1).product();
            k.strip_prefix("in.").map(|n| (n, width, v.as_slice()))
        })
        .collect();
    let prefixes: Vec<String> = inputs.iter().map(|(n, ..)| format!("{n}_")).collect();
    let mut extra = output.map_or(String::new(), |o| format!("output = \"{o}\"\n"));
    if inputs.len() > 1 {
        extra.push_str("[model.inputs]\n");
        for ((n, width, _), p) in inputs.iter().zip(&prefixes) {
            let cols: Vec<String> = (0..*width).map(|j| format!("\"{p}{j}\"")).collect();
            extra.push_str(&format!("{n} = [{}]\n", cols.join(", ")));
        }
    }
    let model = fixture("onnx", &format!("{name}.onnx"));
    let s = run(device, &model, &extra, None);
    let groups: Vec<(&str, &[f32], usize)> = inputs
        .iter()
        .zip(&prefixes)
        .map(|((_, width, v), p)| (p.as_str(), *v, *width))
        .collect();
    write_parquet(&s.path().join("rows.parquet"), &groups);
    score(&s, device);
    let (oshape, want) = &io[&format!("out.{stored}")];
    let width = oshape.iter().skip(1).product();
    assert_stored(s.path(), want, width, &format!("{name} on {device}"));
}

#[test]
fn every_network_fixture_stores_onnxruntimes_outputs_on_the_native_cpu_path() {
    for (name, output, stored) in NETWORKS {
        network(name, *output, stored, "cpu");
    }
}

#[test]
fn every_network_fixture_stores_onnxruntimes_outputs_on_the_wgsl_kernels() {
    for (name, output, stored) in NETWORKS {
        network(name, *output, stored, "wgpu-cpu");
    }
}

#[test]
fn external_data_ships_to_an_ssh_host_beside_the_model_by_content_hash() {
    let servers = sshd::Servers::start(1);
    let server = &servers.servers[0];
    let name = "external_weights";
    let io = io("onnx", name);
    let (shape, x) = &io["in.x"];
    let model = fixture("onnx", &format!("{name}.onnx"));
    let data = fixture("onnx", &format!("{name}.onnx.data"));
    let s = run("cpu", &model, "", None);
    std::fs::write(
        s.path().join("hosts.toml"),
        format!(
            "[[host]]\nname = \"{}\"\nkind = \"ssh\"\naddress = \"{}\"\nuser = \"root\"\n\
             identity = \"{}\"\nknown_hosts = \"{}\"\nslots = 1\ndevice = \"cpu\"\nthreads = 1\n",
            server.name,
            server.address(),
            servers.user_key.display(),
            servers.known_hosts.display(),
        ),
    )
    .unwrap();
    write_parquet(&s.path().join("rows.parquet"), &[("f", x, shape[1])]);
    let shipped = |s: &tempfile::TempDir| -> u64 {
        let out = herd_in(s.path(), &["run", "job.toml", "--report", "report.json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.path().join("report.json")).unwrap()).unwrap();
        r["hosts"][0]["shipped_bytes"].as_u64().unwrap()
    };
    let cold = shipped(&s);
    let (oshape, want) = &io["out.y"];
    assert_stored(s.path(), want, oshape[1], "external data over ssh");

    // The model and its data lie side by side in one folder of the cache,
    // byte for byte the job's files; the binary and both files were sent.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let folders: Vec<PathBuf> = std::fs::read_dir(server.cache().join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    for local in [&model, &data] {
        let remote = folders[0].join(local.file_name().unwrap());
        assert_eq!(
            std::fs::read(&remote).unwrap(),
            std::fs::read(local).unwrap()
        );
    }
    assert_eq!(
        cold,
        size(Path::new(common::HERD)) + size(&model) + size(&data)
    );
    // Again: everything is in the cache, nothing is sent.
    assert_eq!(shipped(&s), 0);
}

/// `herd run` of a job whose model or model inputs are wrong: the exit
/// code and the error text.
fn refused(model: &Path, extra: &str) -> (Option<i32>, String) {
    let s = run("cpu", model, extra, None);
    // A host nothing listens on: a run that got as far as the hosts would
    // fail there, on the connection, instead.
    std::fs::write(
        s.path().join("hosts.toml"),
        "[[host]]\nname = \"nowhere\"\nkind = \"ssh\"\naddress = \"127.0.0.1:1\"\n\
         user = \"nobody\"\nslots = 1\ndevice = \"cpu\"\n",
    )
    .unwrap();
    let x: Vec<f32> = (0..40).map(|i| i as f32 / 8.0).collect();
    write_parquet(&s.path().join("rows.parquet"), &[("f", &x, 4)]);
    let out = herd_in(s.path(), &["run", "job.toml"]);
    (out.status.code(), text(&out))
}

#[test]
fn bad_models_fail_the_run_with_exit_2_naming_the_file_before_any_host_is_touched() {
    let cases = [
        ("unsupported_op", "node 'pick' (Hardmax)"),
        ("dynamic_feature_dim", "graph input 'x'"),
        ("output_not_per_row", "node 'total' (ReduceSum)"),
        ("double_input", "graph input 'x'"),
        ("opset_12", "opset 12"),
        ("truncated", "not a valid ONNX model file"),
    ];
    for (name, want) in cases {
        let model = fixture("onnx", &format!("bad/{name}.onnx"));
        let (code, out) = refused(&model, "");
        assert_eq!(code, Some(2), "{name}: {out}");
        assert!(
            out.contains(&format!("{name}.onnx")) && out.contains(want),
            "{name}: {out}"
        );
        assert!(
            !out.contains("nowhere"),
            "{name}: a host was touched: {out}"
        );
    }
    // A graph input mapped to a column the input does not have.
    let model = fixture("onnx", "embedding_two_inputs.onnx");
    let extra =
        "[model.inputs]\ndense = [\"f0\", \"f1\", \"f2\", \"f3\"]\nids = [\"missing_ids\"]\n";
    let (code, out) = refused(&model, extra);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("missing_ids"), "{out}");
    assert!(!out.contains("nowhere"), "a host was touched: {out}");
}

#[test]
fn tree_ensembles_score_nulls_and_nans_as_missing_values_and_store_probabilities() {
    // A classifier (probabilities stored by default) and a regressor; both
    // fixtures' inputs hold missing values, written as nulls and as NaN.
    let io_c = io("trees", "lightgbm_classifier_binary");
    assert!(
        io_c["in.X"].1.iter().any(|v| v.is_nan()),
        "the fixture has missing values"
    );
    single_input(
        "trees",
        "lightgbm_classifier_binary",
        "out.probabilities",
        "cpu",
    );
    single_input(
        "trees",
        "sklearn_random_forest_regressor",
        "out.variable",
        "cpu",
    );
    // device = auto scores a tree model on the CPU (no WGSL tree kernel yet).
    single_input(
        "trees",
        "lightgbm_classifier_binary",
        "out.probabilities",
        "auto",
    );
}
