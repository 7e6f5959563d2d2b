//! The committed ONNX fixtures (tests/fixtures/onnx, made by make.py with
//! onnxruntime) and how to compare herd's outputs with onnxruntime's.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herd::model::onnx::{Data, ExternalFiles, Feed, OnnxFile, OnnxModel, Outputs, Tensor};
use safetensors::{Dtype, SafeTensors};

/// onnxruntime's outputs and herd's agree within this, relative...
pub const RTOL: f32 = 1e-5;
/// ...plus this much absolute, for values near zero that sums in another
/// order land on differently (float32 rounding of terms of size ~1).
pub const ATOL: f32 = 1e-6;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

pub fn read_model(path: &Path) -> (OnnxFile, ExternalFiles) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = OnnxFile::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut files = ExternalFiles::new();
    for location in file.external_files().unwrap() {
        let p = path.parent().unwrap().join(&location);
        files.insert(location, std::fs::read(&p).unwrap());
    }
    (file, files)
}

/// The fixture's tensors: "in.NAME" fed to onnxruntime, "out.NAME" it returned.
pub fn read_io(name: &str) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(dir().join(format!("{name}.io.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (key, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 => Tensor::f32(
                shape,
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::I64 => Tensor::i64(
                shape,
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::I32 => Tensor::i64(
                shape,
                data.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            other => panic!("{name}: tensor {key} has dtype {other:?}"),
        };
        out.insert(key, t);
    }
    out
}

pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".onnx").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() > 30, "fixtures missing: found {names:?}");
    names
}

/// Outputs onnxruntime computed that herd does not (yet): the label of a
/// scikit-learn classifier goes through ai.onnx.ml's ArrayFeatureExtractor.
pub fn skipped_output(fixture: &str, output: &str) -> bool {
    fixture.starts_with("sklearn_mlp_") && output == "label"
}

pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    match (&got.data, &want.data) {
        (Data::F32(g), Data::F32(w)) => {
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                let ok = (a - b).abs() <= RTOL * b.abs() + ATOL || (a.is_nan() && b.is_nan());
                assert!(ok, "{what}: value {i}: herd {a}, onnxruntime {b}");
            }
        }
        (Data::I64(g), Data::I64(w)) => assert_eq!(g, w, "{what}"),
        _ => panic!(
            "{what}: herd computed {:?}, onnxruntime {:?}",
            got.dtype(),
            want.dtype()
        ),
    }
}

pub struct Loaded {
    pub model: OnnxModel,
    pub io: BTreeMap<String, Tensor>,
    pub rows: usize,
}

pub fn load(name: &str) -> Loaded {
    let (file, files) = read_model(&dir().join(format!("{name}.onnx")));
    let io = read_io(name);
    let outputs: Vec<String> = io
        .keys()
        .filter_map(|k| k.strip_prefix("out."))
        .filter(|o| !skipped_output(name, o))
        .map(str::to_string)
        .collect();
    let model = OnnxModel::load(&file, &files, &Outputs::Named(outputs.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(model.outputs().len(), outputs.len(), "{name}: outputs");
    let rows = io.values().next().unwrap().shape[0];
    Loaded { model, io, rows }
}

pub fn feeds<'a>(l: &'a Loaded, range: std::ops::Range<usize>) -> Vec<Feed<'a>> {
    l.model
        .inputs()
        .iter()
        .map(|i| {
            let t = &l.io[&format!("in.{}", i.name)];
            let per_row: usize = i.dims.iter().product();
            let r = range.start * per_row..range.end * per_row;
            match &t.data {
                Data::F32(v) => Feed::F32(&v[r]),
                Data::I64(v) => Feed::I64(&v[r]),
            }
        })
        .collect()
}
