//! `kind = "onnx"`: a user's own model from an `.onnx` file (a network, a
//! tree ensemble, a linear model) as a model family. The settings say which
//! graph output is stored (`output`, or the classifier's probabilities, or
//! the only float output), whether as all its values or its `top_k` best,
//! and which feature columns feed which graph input (`[model.inputs]`, or
//! every feature column into the single input).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{DType, ExternalFiles, Feed, OnnxFile, OnnxModel, Outputs, Tensor};
use crate::config::{self, raw, source::Source};
use crate::model::family::{Family, FamilySpec, Scorer};
use crate::model::{Error, Model, ModelSpec, Predictions, Result, Rows, check_features};

/// Largest `top_k`.
pub const MAX_TOP_K: usize = 10_000;
/// Integer graph inputs are fed from feature columns, which rows carry as
/// f32: values of magnitude 2^24 or more could have been rounded, so they
/// are refused (naming the input) rather than fed changed.
pub const MAX_INT_FEATURE: f32 = 16_777_216.0;

/// The registry entry of `kind = "onnx"`.
pub static FAMILY: Family = Family {
    kind: "onnx",
    keys: &["path", "output", "top_k", "inputs"],
    reads_history: false,
    needs_features: true,
    resolve: |raw, src| OnnxSpec::resolve(raw, src).map(ModelSpec::Onnx),
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnnxSpec {
    /// The graph output to store; `None`: the default choice.
    pub output: Option<String>,
    /// Store the K best (index, score) of the output row instead of all.
    pub top_k: Option<usize>,
    /// Graph input name -> its feature columns, in order; empty: the
    /// graph's single input takes every feature column.
    pub inputs: Vec<(String, Vec<String>)>,
}

impl OnnxSpec {
    pub(crate) fn resolve(raw: &raw::ModelTable, src: &Source<'_>) -> config::Result<OnnxSpec> {
        let output = match &raw.output {
            None => None,
            Some(o) if o.get_ref().is_empty() => {
                return Err(src.error(
                    o.span(),
                    "[model] output is empty; expected the name of a graph output",
                ));
            }
            Some(o) => Some(o.get_ref().clone()),
        };
        let top_k = raw
            .top_k
            .as_ref()
            .map(|v| src.int(v, "[model] top_k", 1, Some(MAX_TOP_K as i64)))
            .transpose()?
            .map(|k| k as usize);
        let mut inputs = Vec::new();
        if let Some(table) = &raw.inputs {
            if table.get_ref().is_empty() {
                return Err(src.error(
                    table.span(),
                    "[model.inputs] is empty; expected graph input names mapped to column \
                     lists, e.g. dense = [\"f0\", \"f1\"] (or no [model.inputs] to feed every \
                     feature column to the graph's single input)",
                ));
            }
            for (name, columns) in table.get_ref() {
                if columns.is_empty() || columns.iter().any(String::is_empty) {
                    return Err(src.error(
                        table.span(),
                        format!(
                            "[model.inputs] {name} lists no columns or an empty name; \
                             expected the Parquet columns that feed graph input '{name}'"
                        ),
                    ));
                }
                inputs.push((name.clone(), columns.clone()));
            }
        }
        Ok(OnnxSpec {
            output,
            top_k,
            inputs,
        })
    }

    /// The feature columns `[model.inputs]` names, each once, in order of
    /// first mention; `None` when it is not set.
    pub fn columns(&self) -> Option<Vec<String>> {
        if self.inputs.is_empty() {
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        for (_, cols) in &self.inputs {
            for c in cols {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        Some(out)
    }
}

impl FamilySpec for OnnxSpec {
    fn top_k(&self) -> Option<usize> {
        self.top_k
    }

    fn feature_columns(&self) -> Option<Vec<String>> {
        self.columns()
    }

    /// A graph may define missing values (tree ensembles do); whether it
    /// does is known once it is loaded, where the run turns the default
    /// `on_invalid = "missing"` into `error` for a graph that does not.
    fn accepts_missing(&self) -> bool {
        true
    }

    fn companions(&self, bytes: &[u8]) -> Result<Vec<String>> {
        let file = OnnxFile::parse(bytes).map_err(onnx_error)?;
        file.external_files().map_err(onnx_error)
    }

    fn load(&self, bytes: &[u8], num_features: usize) -> Result<Model> {
        self.load_with(bytes, &ExternalFiles::new(), num_features)
    }

    fn load_with(
        &self,
        bytes: &[u8],
        companions: &ExternalFiles,
        num_features: usize,
    ) -> Result<Model> {
        let file = OnnxFile::parse(bytes).map_err(onnx_error)?;
        let outputs = match &self.output {
            Some(o) => Outputs::Named(vec![o.clone()]),
            None => Outputs::Default,
        };
        let model = OnnxModel::load(&file, companions, &outputs).map_err(onnx_error)?;
        let out = &model.outputs()[0];
        let width: usize = out.dims.iter().product();
        if width == 0 {
            return Err(Error::Onnx(format!(
                "graph output '{}' holds no values per row; herd stores at least one",
                out.name
            )));
        }
        let bindings = self.bind(&model, num_features)?;
        Ok(Model::Onnx(Onnx {
            model: Arc::new(model),
            bindings,
            width,
            top_k: self.top_k.map(|k| k.min(width)),
            num_features,
        }))
    }
}

fn onnx_error(e: super::Error) -> Error {
    Error::Onnx(e.to_string())
}

impl OnnxSpec {
    /// Which feature columns feed each graph input, checked against the
    /// graph's inputs (names, values per row, element types).
    fn bind(&self, model: &OnnxModel, num_features: usize) -> Result<Vec<Binding>> {
        let names: Vec<&str> = model.inputs().iter().map(|i| i.name.as_str()).collect();
        let quoted = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.inputs.is_empty() {
            let [input] = model.inputs() else {
                return Err(Error::Onnx(format!(
                    "the graph reads {} inputs ({quoted}); map each to its columns in \
                     [model.inputs]",
                    names.len()
                )));
            };
            let per_row: usize = input.dims.iter().product();
            if per_row != num_features {
                return Err(Error::Onnx(format!(
                    "graph input '{}' takes {per_row} values per row, but the input has \
                     {num_features} feature columns (check [input] feature_columns, or map the \
                     input's columns in [model.inputs])",
                    input.name
                )));
            }
            return Ok(vec![Binding {
                columns: (0..num_features).collect(),
                dtype: input.dtype,
                name: input.name.clone(),
            }]);
        }
        let all = self.columns().unwrap_or_default();
        for (name, _) in &self.inputs {
            if !names.contains(&name.as_str()) {
                return Err(Error::Onnx(format!(
                    "[model.inputs] maps '{name}', which is not an input the graph reads; \
                     its inputs are {quoted}"
                )));
            }
        }
        let mut out = Vec::new();
        for input in model.inputs() {
            let Some((_, cols)) = self.inputs.iter().find(|(n, _)| *n == input.name) else {
                return Err(Error::Onnx(format!(
                    "graph input '{}' is not fed: map it to its columns in [model.inputs]",
                    input.name
                )));
            };
            let per_row: usize = input.dims.iter().product();
            if per_row != cols.len() {
                return Err(Error::Onnx(format!(
                    "graph input '{}' takes {per_row} values per row, but [model.inputs] maps \
                     {} columns to it",
                    input.name,
                    cols.len()
                )));
            }
            out.push(Binding {
                columns: cols
                    .iter()
                    .map(|c| {
                        all.iter()
                            .position(|a| a == c)
                            .expect("listed in columns()")
                    })
                    .collect(),
                dtype: input.dtype,
                name: input.name.clone(),
            });
        }
        Ok(out)
    }
}

/// Which feature columns (indices into the rows' features) feed one graph
/// input, and as what.
#[derive(Clone, Debug, PartialEq)]
struct Binding {
    name: String,
    columns: Vec<usize>,
    dtype: DType,
}

/// The input values of one graph input for a run of rows.
enum Fed<'a> {
    Borrowed(&'a [f32]),
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A loaded ONNX model with its input bindings.
#[derive(Clone, Debug)]
pub struct Onnx {
    pub model: Arc<OnnxModel>,
    bindings: Vec<Binding>,
    /// Values per row of the stored output.
    pub width: usize,
    pub top_k: Option<usize>,
    num_features: usize,
}

/// Two loads are the same model only when one is a clone of the other.
impl PartialEq for Onnx {
    fn eq(&self, other: &Onnx) -> bool {
        Arc::ptr_eq(&self.model, &other.model)
            && self.bindings == other.bindings
            && self.top_k == other.top_k
    }
}

impl Onnx {
    fn feed<'a>(&self, b: &Binding, rows: &'a Rows) -> Result<Fed<'a>> {
        let n = rows.len();
        let identity = b.columns.len() == self.num_features
            && b.columns.iter().enumerate().all(|(i, &c)| i == c);
        if b.dtype == DType::F32 {
            if identity {
                return Ok(Fed::Borrowed(&rows.features));
            }
            let mut v = Vec::with_capacity(n * b.columns.len());
            for r in 0..n {
                let f = rows.features_of(r);
                v.extend(b.columns.iter().map(|&c| f[c]));
            }
            return Ok(Fed::F32(v));
        }
        let mut v = Vec::with_capacity(n * b.columns.len());
        for r in 0..n {
            let f = rows.features_of(r);
            for &c in &b.columns {
                let x = f[c];
                if x.fract() != 0.0 || x.abs() >= MAX_INT_FEATURE || x.is_nan() {
                    return Err(Error::Run(format!(
                        "graph input '{}' takes integers, but entity {} has {x} (integers of \
                         magnitude below 2^24 only)",
                        b.name,
                        rows.ids.key(r)
                    )));
                }
                v.push(x as i64);
            }
        }
        Ok(Fed::I64(v))
    }

    /// Scores `rows` with `run` (a backend's run of the graph on the feeds):
    /// the feeds are made from the rows, the stored output from what it gives.
    pub(crate) fn score_with(
        &self,
        rows: &Rows,
        run: impl FnOnce(&[Feed<'_>], usize) -> std::result::Result<Vec<Tensor>, String>,
    ) -> Result<Predictions> {
        check_features(self.num_features, rows);
        let fed = self
            .bindings
            .iter()
            .map(|b| self.feed(b, rows))
            .collect::<Result<Vec<_>>>()?;
        let feeds: Vec<Feed<'_>> = fed
            .iter()
            .map(|f| match f {
                Fed::Borrowed(v) => Feed::F32(v),
                Fed::F32(v) => Feed::F32(v),
                Fed::I64(v) => Feed::I64(v),
            })
            .collect();
        let out = run(&feeds, rows.len()).map_err(Error::Run)?;
        let t = out.into_iter().next().expect("one output");
        let values: Vec<f32> = match t.as_f32() {
            Some(v) => v.to_vec(),
            None => t
                .to_i64_vec()
                .into_iter()
                .map(|v| {
                    if (v as f32).abs() >= MAX_INT_FEATURE {
                        Err(Error::Run(format!(
                            "the stored output holds the integer {v}, which a float score \
                             cannot hold exactly"
                        )))
                    } else {
                        Ok(v as f32)
                    }
                })
                .collect::<Result<_>>()?,
        };
        Ok(match self.top_k {
            None => Predictions::Scores {
                width: self.width,
                values,
            },
            Some(k) => top_k(&values, self.width, k),
        })
    }

    /// Whether every operator the graph runs on the rows defines missing
    /// (NaN) inputs, as tree ensembles do.
    pub fn defines_missing(&self) -> bool {
        self.model.defines_missing()
    }
}

/// The `k` best (index, score) of each row of `width` values, best first,
/// ties by the smaller index.
fn top_k(values: &[f32], width: usize, k: usize) -> Predictions {
    let rows = values.len() / width;
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0u32);
    let mut items = Vec::with_capacity(rows * k);
    let mut scores = Vec::with_capacity(rows * k);
    let mut order: Vec<u32> = Vec::with_capacity(width);
    for row in values.chunks_exact(width) {
        order.clear();
        order.extend(0..width as u32);
        order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        for &i in &order[..k] {
            items.push(i);
            scores.push(row[i as usize]);
        }
        offsets.push(items.len() as u32);
    }
    Predictions::TopK {
        offsets,
        items,
        scores,
    }
}

impl Scorer for Onnx {
    fn predict_reference(&self, rows: &Rows) -> Result<Predictions> {
        self.score_with(rows, |feeds, n| {
            self.model
                .run_reference(feeds, n)
                .map_err(|e| e.to_string())
        })
    }

    fn predict(&self, rows: &Rows) -> Result<Predictions> {
        self.score_with(rows, |feeds, n| {
            self.model.run(feeds, n).map_err(|e| e.to_string())
        })
    }

    /// The graph's cost per row (multiply-adds; node visits for trees).
    fn entity_cost(&self, _history_len: usize) -> u64 {
        self.model.cost_per_row()
    }

    fn describe(&self) -> String {
        match self.top_k {
            Some(k) => format!("{}, top {k}", self.model.describe()),
            None => self.model.describe(),
        }
    }

    fn defines_missing(&self) -> bool {
        self.model.defines_missing()
    }
}
