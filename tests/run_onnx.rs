//! `[model] kind = "onnx"` through `herd run`: fixtures from tests/fixtures
//! (made with onnxruntime) written as Parquet, scored by local workers, and
//! the stored values compared with onnxruntime's outputs within 1e-5
//! (relative). A network on the native CPU path and on the WGSL shaders
//! (lavapipe), a two-input graph fed integer ids through `[model.inputs]`,
//! tree ensembles whose inputs hold nulls and NaNs (missing values), on
//! the CPU and the WGSL tree kernel, and the tree demo job
//! (jobs/trees.toml).

mod common;

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

#[test]
fn a_scikit_learn_network_stores_onnxruntimes_probabilities_on_cpu_and_wgpu() {
    single_input("onnx", "sklearn_mlp_classifier", "out.probabilities", "cpu");
    single_input(
        "onnx",
        "sklearn_mlp_classifier",
        "out.probabilities",
        "wgpu-cpu",
    );
}

#[test]
fn a_two_input_graph_is_fed_float_and_integer_columns_by_model_inputs() {
    let name = "embedding_two_inputs";
    let io = io("onnx", name);
    let (dshape, dense) = &io["in.dense"];
    let (ishape, ids) = &io["in.ids"];
    let model = fixture("onnx", &format!("{name}.onnx"));
    let cols = |p: &str, n: usize| -> String {
        let c: Vec<String> = (0..n).map(|j| format!("\"{p}{j}\"")).collect();
        c.join(", ")
    };
    let extra = format!(
        "output = \"log_probs\"\n[model.inputs]\ndense = [{}]\nids = [{}]\n",
        cols("d", dshape[1]),
        cols("i", ishape[1])
    );
    let s = run("cpu", &model, &extra, None);
    write_parquet(
        &s.path().join("rows.parquet"),
        &[("d", dense, dshape[1]), ("i", ids, ishape[1])],
    );
    score(&s, "cpu");
    let (oshape, want) = &io["out.log_probs"];
    assert_stored(s.path(), want, oshape[1], name);
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
    // device = auto: a GPU when there is one, else the native CPU path
    // (never lavapipe); wgpu-cpu: the WGSL tree kernel on lavapipe.
    single_input(
        "trees",
        "lightgbm_classifier_binary",
        "out.probabilities",
        "auto",
    );
    single_input(
        "trees",
        "lightgbm_classifier_binary",
        "out.probabilities",
        "wgpu-cpu",
    );
    single_input(
        "trees",
        "sklearn_random_forest_regressor",
        "out.variable",
        "wgpu-cpu",
    );
}

#[test]
fn the_tree_demo_job_generates_its_data_and_model_and_stores_probabilities() {
    // jobs/trees.toml and hosts.toml as a fresh checkout has them.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(p.join("jobs")).unwrap();
    std::fs::copy(repo.join("jobs/trees.toml"), p.join("jobs/trees.toml")).unwrap();
    std::fs::copy(repo.join("hosts.toml"), p.join("hosts.toml")).unwrap();
    let out = herd_in(p, &["--run", "jobs/trees.toml", "--report", "r.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(p.join("data/trees/gbdt.onnx").is_file());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("r.json")).unwrap()).unwrap();
    assert_eq!(report["flipped"], true, "{report}");
    assert_eq!(report["rows"], 10_000, "{report}");
    // The classifier's probabilities are stored: two per row, summing to 1.
    let store = Store::open_existing(&p.join("store-trees")).unwrap();
    let mut positive = 0;
    for id in (0..10_000u64).step_by(97) {
        let got = store.get(&EntityKey::Int(id), None, 0).unwrap().unwrap();
        let Value::Scores(s) = &got.value else {
            panic!("row {id}: not scores: {:?}", got.value)
        };
        assert_eq!(s.len(), 2, "row {id}: {s:?}");
        assert!(
            (s[0] + s[1] - 1.0).abs() < 1e-6 && s[1] >= 0.0,
            "row {id}: {s:?}"
        );
        positive += usize::from(s[1] > 0.5);
    }
    assert!(
        positive > 0 && positive < 104,
        "{positive} of 104 rows over 0.5"
    );
}
