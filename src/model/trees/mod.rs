//! The classical machine-learning operators of ONNX (domain `ai.onnx.ml`):
//! tree ensembles (TreeEnsembleClassifier, TreeEnsembleRegressor, the
//! opset-5 TreeEnsemble), linear models and the feature transforms that
//! scikit-learn, XGBoost and LightGBM exports put around them.
//!
//! Pure: an operator is built from plain attribute values ([`Attrs`], named
//! and typed as the ONNX operator defines them, so the ONNX room builds one
//! from a parsed node with [`MlOp::from_attrs`]) and scores rows given as
//! row-major f32. Every operator scores as onnxruntime scores it, quirks
//! included (see [`ensemble`]), because users compare herd's numbers with
//! the runtime they exported for. Missing feature values (NaN) reach the
//! trees as missing and go where `nodes_missing_value_tracks_true` (or the
//! split) sends them.
//!
//! Tree ensembles have two paths: [`Ensemble::score_reference`], one row
//! and one tree at a time on the model as loaded, obviously right; and
//! [`fast`], the layout chosen for batch scoring, checked against it.

pub mod attrs;
pub mod ensemble;
mod error;
pub mod fast;
pub mod linear;
mod load;
pub mod score;
#[cfg(test)]
mod tests;
pub mod transform;

pub use attrs::{Attr, Attrs, Reals};
pub use ensemble::{Aggregate, ClassLabels, Ensemble, Kind};
pub use error::{Error, Result, RunError};
pub use linear::Labels;
pub use score::Scored;
pub use transform::PostTransform;

use linear::{Binarizer, Imputer, LinearClassifier, LinearRegressor, Normalizer, Scaler};

/// The ai.onnx.ml operators herd runs.
pub const OPS: &[&str] = &[
    "Binarizer",
    "Imputer",
    "LinearClassifier",
    "LinearRegressor",
    "Normalizer",
    "Scaler",
    "TreeEnsemble",
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "ZipMap",
];

/// A tree ensemble with its fast layout, built once at load.
#[derive(Clone, Debug)]
pub struct Trees {
    pub ensemble: Ensemble,
    pub fast: fast::Compiled,
}

impl Trees {
    pub fn new(ensemble: Ensemble) -> Trees {
        let fast = fast::Compiled::new(&ensemble);
        Trees { ensemble, fast }
    }

    /// The operator's output for `scored` (from any path): label codes
    /// become the class labels.
    pub fn output(&self, scored: Scored) -> MlOutput {
        let labels = scored.labels.map(|codes| match self.ensemble.classes() {
            Some(c) => match &c.labels {
                ClassLabels::Int(_) => Labels::Int(codes),
                ClassLabels::Str(names) => Labels::Str(
                    codes
                        .iter()
                        .map(|&c| names.get(c as usize).cloned().unwrap_or_default())
                        .collect(),
                ),
            },
            None => Labels::Int(codes),
        });
        MlOutput {
            width: scored.width,
            values: scored.scores,
            labels,
        }
    }
}

/// One ai.onnx.ml operator, ready to run.
#[derive(Clone, Debug)]
pub enum MlOp {
    /// TreeEnsembleClassifier, TreeEnsembleRegressor or TreeEnsemble.
    Trees(Box<Trees>),
    LinearClassifier(LinearClassifier),
    LinearRegressor(LinearRegressor),
    Scaler(Scaler),
    Normalizer(Normalizer),
    Binarizer(Binarizer),
    Imputer(Imputer),
    /// Class labels of the maps ZipMap would build; herd keeps the
    /// probability tensor instead, so the operator passes it through.
    ZipMap(ClassLabels),
}

/// What an operator put out for a run of rows: `width` values per row and,
/// for classifiers, a label per row.
#[derive(Clone, Debug, PartialEq)]
pub struct MlOutput {
    pub width: usize,
    pub values: Vec<f32>,
    pub labels: Option<Labels>,
}

impl MlOp {
    /// Builds operator `op_type` from its attributes.
    pub fn from_attrs(op_type: &str, attrs: &Attrs) -> Result<MlOp> {
        Ok(match op_type {
            "TreeEnsembleClassifier" => {
                MlOp::Trees(Box::new(Trees::new(Ensemble::from_v3(attrs, true)?)))
            }
            "TreeEnsembleRegressor" => {
                MlOp::Trees(Box::new(Trees::new(Ensemble::from_v3(attrs, false)?)))
            }
            "TreeEnsemble" => MlOp::Trees(Box::new(Trees::new(Ensemble::from_v5(attrs)?))),
            "LinearClassifier" => MlOp::LinearClassifier(LinearClassifier::from_attrs(attrs)?),
            "LinearRegressor" => MlOp::LinearRegressor(LinearRegressor::from_attrs(attrs)?),
            "Scaler" => MlOp::Scaler(Scaler::from_attrs(attrs)?),
            "Normalizer" => MlOp::Normalizer(Normalizer::from_attrs(attrs)?),
            "Binarizer" => MlOp::Binarizer(Binarizer::from_attrs(attrs)?),
            "Imputer" => MlOp::Imputer(Imputer::from_attrs(attrs)?),
            "ZipMap" => {
                let strings = attrs.strs("classlabels_strings")?;
                MlOp::ZipMap(if strings.is_empty() {
                    ClassLabels::Int(attrs.ints("classlabels_int64s")?)
                } else {
                    ClassLabels::Str(strings)
                })
            }
            other => {
                return Err(Error::Unsupported {
                    op: other.to_string(),
                });
            }
        })
    }

    /// Whether NaN inputs are defined for the operator (a missing value the
    /// model knows how to score): tree ensembles and the Imputer.
    pub fn defines_missing(&self) -> bool {
        matches!(self, MlOp::Trees(_) | MlOp::Imputer(_) | MlOp::ZipMap(_))
    }

    /// The input width the operator needs: `Exact` for linear models (one
    /// coefficient per feature), `AtLeast` for trees (the largest feature
    /// index read, plus one), `Any` for elementwise operators.
    pub fn input_width(&self) -> Width {
        match self {
            MlOp::Trees(t) => Width::AtLeast(t.ensemble.width),
            MlOp::LinearClassifier(m) => Width::Exact(m.width()),
            MlOp::LinearRegressor(m) => Width::Exact(m.width()),
            MlOp::Scaler(s) if s.scale.len() > 1 => Width::Exact(s.scale.len()),
            _ => Width::Any,
        }
    }

    /// Values per row of the operator's float output for rows of `width`.
    pub fn output_width(&self, width: usize) -> usize {
        match self {
            MlOp::Trees(t) => t.ensemble.n_targets,
            MlOp::LinearClassifier(m) => m.output_width(),
            MlOp::LinearRegressor(m) => m.targets,
            _ => width,
        }
    }

    /// Whether the operator puts out labels (its first output) as well.
    pub fn has_labels(&self) -> bool {
        match self {
            MlOp::Trees(t) => t.ensemble.classes().is_some(),
            MlOp::LinearClassifier(_) => true,
            _ => false,
        }
    }

    /// Node visits (trees) or multiply-adds (linear models) per row, for
    /// planning chunks.
    pub fn cost_per_row(&self, width: usize) -> u64 {
        match self {
            MlOp::Trees(t) => t.ensemble.cost_per_row(),
            MlOp::LinearClassifier(m) => m.coefficients.len() as u64,
            MlOp::LinearRegressor(m) => m.coefficients.len() as u64,
            _ => width as u64,
        }
    }

    /// Scores `rows` rows of `width` features (row-major) on the fast path.
    pub fn run(
        &self,
        x: &[f32],
        rows: usize,
        width: usize,
    ) -> std::result::Result<MlOutput, RunError> {
        self.run_with(x, rows, width, false)
    }

    /// As [`MlOp::run`], on the reference path (trees one row and one tree
    /// at a time).
    pub fn run_reference(
        &self,
        x: &[f32],
        rows: usize,
        width: usize,
    ) -> std::result::Result<MlOutput, RunError> {
        self.run_with(x, rows, width, true)
    }

    fn run_with(
        &self,
        x: &[f32],
        rows: usize,
        width: usize,
        reference: bool,
    ) -> std::result::Result<MlOutput, RunError> {
        debug_assert_eq!(x.len(), rows * width);
        match self.input_width() {
            Width::Exact(w) if w != width => {
                return Err(RunError::Width {
                    feature: w.max(1) - 1,
                    width,
                });
            }
            Width::AtLeast(w) if w > width => {
                return Err(RunError::Width {
                    feature: w - 1,
                    width,
                });
            }
            _ => {}
        }
        let plain = |values: Vec<f32>| MlOutput {
            width,
            values,
            labels: None,
        };
        Ok(match self {
            MlOp::Trees(t) => t.output(if reference {
                t.ensemble.score_reference(x, rows, width)
            } else {
                t.fast.score(&t.ensemble, x, rows, width)
            }),
            MlOp::LinearClassifier(m) => {
                let (values, labels) = m.run(x, rows, width);
                MlOutput {
                    width: m.output_width(),
                    values,
                    labels: Some(labels),
                }
            }
            MlOp::LinearRegressor(m) => MlOutput {
                width: m.targets,
                values: m.run(x, rows, width),
                labels: None,
            },
            MlOp::Scaler(s) => plain(s.run(x, width)?),
            MlOp::Normalizer(n) => plain(n.run(x, width)),
            MlOp::Binarizer(b) => plain(b.run(x, width)?),
            MlOp::Imputer(i) => plain(i.run(x, width)),
            MlOp::ZipMap(_) => plain(x.to_vec()),
        })
    }
}

/// The input width an operator accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Exact(usize),
    AtLeast(usize),
    Any,
}
