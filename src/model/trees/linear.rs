//! The linear models and the feature transforms of ai.onnx.ml, each as
//! onnxruntime evaluates it: LinearClassifier, LinearRegressor, Scaler,
//! Normalizer, Binarizer and Imputer. ZipMap needs nothing here: herd
//! stores the probability tensor ZipMap would have turned into maps.

use super::attrs::Attrs;
use super::ensemble::ClassLabels;
use super::error::{Error, Result, RunError};
use super::transform::{PostTransform, probit};

fn post_transform(attrs: &Attrs) -> Result<PostTransform> {
    match attrs.string("post_transform")? {
        None => Ok(PostTransform::None),
        Some(s) => PostTransform::parse(s).ok_or_else(|| {
            Error::attr(
                "post_transform",
                format!("is '{s}', expected NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO or PROBIT"),
            )
        }),
    }
}

/// `rows x outputs` dot products of the rows with `coefficients`
/// (`[outputs, width]`) plus `intercepts` (when given).
fn gemm(
    x: &[f32],
    rows: usize,
    width: usize,
    coefficients: &[f32],
    intercepts: Option<&[f32]>,
    outputs: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * outputs];
    for r in 0..rows {
        let row = &x[r * width..(r + 1) * width];
        for k in 0..outputs {
            let w = &coefficients[k * width..(k + 1) * width];
            let mut acc = 0.0f32;
            for (a, b) in row.iter().zip(w) {
                acc += a * b;
            }
            out[r * outputs + k] = acc + intercepts.map_or(0.0, |b| b[k]);
        }
    }
    out
}

/// Applies a post transform to rows of `width` scores, as onnxruntime's
/// batched update does: with one score per row only PROBIT applies.
fn transform_rows(values: &mut [f32], width: usize, transform: PostTransform) {
    if width == 1 {
        if transform == PostTransform::Probit {
            values.iter_mut().for_each(|v| *v = probit(*v));
        }
        return;
    }
    for row in values.chunks_mut(width) {
        transform.apply_row(row);
    }
}

fn outputs_of(coefficients: usize, outputs: usize, name: &str) -> Result<()> {
    if outputs == 0 || coefficients == 0 || coefficients % outputs != 0 {
        return Err(Error::attr(
            "coefficients",
            format!("has {coefficients} entries, expected a multiple of the {outputs} {name}"),
        ));
    }
    Ok(())
}

/// Labels a classifier operator puts out, one per row.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    Int(Vec<i64>),
    Str(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LinearClassifier {
    pub coefficients: Vec<f32>,
    pub intercepts: Vec<f32>,
    pub labels: ClassLabels,
    pub post_transform: PostTransform,
}

impl LinearClassifier {
    pub fn from_attrs(attrs: &Attrs) -> Result<LinearClassifier> {
        let coefficients = attrs.floats("coefficients")?;
        let intercepts = attrs.floats("intercepts")?;
        let strings = attrs.strs("classlabels_strings")?;
        let ints = attrs.ints("classlabels_ints")?;
        let labels = if strings.is_empty() {
            ClassLabels::Int(ints)
        } else {
            ClassLabels::Str(strings)
        };
        let classes = intercepts.len();
        outputs_of(coefficients.len(), classes, "intercepts")?;
        if classes == 1 && labels.len() != 2 {
            return Err(Error::attr(
                "classlabels_ints",
                format!(
                    "has {} labels for a one-score classifier; it needs exactly 2 (negative, positive)",
                    labels.len()
                ),
            ));
        }
        if classes > 1 && labels.len() != classes {
            return Err(Error::attr(
                "classlabels_ints",
                format!(
                    "has {} labels for {classes} classes (one intercept each); they must match",
                    labels.len()
                ),
            ));
        }
        Ok(LinearClassifier {
            coefficients,
            intercepts,
            labels,
            post_transform: post_transform(attrs)?,
        })
    }

    pub fn width(&self) -> usize {
        self.coefficients.len() / self.intercepts.len()
    }

    /// One score per class; a single score with two labels gets the
    /// second class added as `1 - score`.
    pub fn output_width(&self) -> usize {
        if self.intercepts.len() == 1 && self.labels.len() == 2 {
            2
        } else {
            self.intercepts.len()
        }
    }

    pub fn run(&self, x: &[f32], rows: usize, width: usize) -> (Vec<f32>, Labels) {
        let classes = self.intercepts.len();
        let scores = gemm(
            x,
            rows,
            width,
            &self.coefficients,
            Some(&self.intercepts),
            classes,
        );
        let mut codes = Vec::with_capacity(rows);
        if classes == 1 {
            // The label is the sign of the raw score.
            for &s in &scores {
                codes.push(usize::from(s > 0.0));
            }
        } else {
            for row in scores.chunks(classes) {
                let mut best = 0;
                for k in 1..classes {
                    if row[k] > row[best] {
                        best = k;
                    }
                }
                codes.push(best);
            }
        }
        let labels = match &self.labels {
            ClassLabels::Int(v) if classes > 1 || v.len() == 2 => {
                Labels::Int(codes.iter().map(|&c| v[c]).collect())
            }
            ClassLabels::Int(_) => Labels::Int(codes.iter().map(|&c| c as i64).collect()),
            ClassLabels::Str(v) if classes > 1 || v.len() == 2 => {
                Labels::Str(codes.iter().map(|&c| v[c].clone()).collect())
            }
            ClassLabels::Str(_) => Labels::Str(codes.iter().map(|c| c.to_string()).collect()),
        };
        let out = if self.output_width() == 2 && classes == 1 {
            // The second class comes as `1 - p`, p the score through the
            // logistic when that is the transform (no other transform applies
            // to one score; PROBIT leaves the second column unwritten in
            // onnxruntime, NaN here).
            let mut out = Vec::with_capacity(rows * 2);
            for &s in &scores {
                match self.post_transform {
                    PostTransform::Probit => out.extend([probit(s), f32::NAN]),
                    PostTransform::Logistic => {
                        let p = super::transform::logistic(s);
                        out.extend([1.0 - p, p]);
                    }
                    _ => out.extend([1.0 - s, s]),
                }
            }
            out
        } else {
            let mut scores = scores;
            transform_rows(&mut scores, classes, self.post_transform);
            scores
        };
        (out, labels)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LinearRegressor {
    pub coefficients: Vec<f32>,
    /// Used only when there is one per target, as onnxruntime does.
    pub intercepts: Option<Vec<f32>>,
    pub targets: usize,
    pub post_transform: PostTransform,
}

impl LinearRegressor {
    pub fn from_attrs(attrs: &Attrs) -> Result<LinearRegressor> {
        let coefficients = attrs.floats("coefficients")?;
        let targets = attrs.int("targets")?.unwrap_or(1);
        if targets < 1 {
            return Err(Error::attr(
                "targets",
                format!("is {targets}, expected at least 1"),
            ));
        }
        let targets = targets as usize;
        outputs_of(coefficients.len(), targets, "targets")?;
        let intercepts = attrs.floats("intercepts")?;
        Ok(LinearRegressor {
            coefficients,
            intercepts: (intercepts.len() == targets).then_some(intercepts),
            targets,
            post_transform: post_transform(attrs)?,
        })
    }

    pub fn width(&self) -> usize {
        self.coefficients.len() / self.targets
    }

    pub fn run(&self, x: &[f32], rows: usize, width: usize) -> Vec<f32> {
        let mut out = gemm(
            x,
            rows,
            width,
            &self.coefficients,
            self.intercepts.as_deref(),
            self.targets,
        );
        transform_rows(&mut out, self.targets, self.post_transform);
        out
    }
}

/// `(x - offset) * scale`, per feature or one pair for all.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaler {
    pub offset: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Scaler {
    pub fn from_attrs(attrs: &Attrs) -> Result<Scaler> {
        let scale = attrs.floats("scale")?;
        let offset = attrs.floats("offset")?;
        if scale.is_empty() {
            return Err(Error::attr("scale", "is empty"));
        }
        if scale.len() != offset.len() {
            return Err(Error::attr(
                "offset",
                format!(
                    "has {} entries but 'scale' has {}; they must match",
                    offset.len(),
                    scale.len()
                ),
            ));
        }
        Ok(Scaler { offset, scale })
    }

    pub fn run(&self, x: &[f32], width: usize) -> std::result::Result<Vec<f32>, RunError> {
        let per_feature = self.scale.len() == width;
        if !per_feature && self.scale.len() != 1 {
            return Err(RunError::Width {
                feature: self.scale.len() - 1,
                width,
            });
        }
        Ok(x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let j = if per_feature { i % width } else { 0 };
                (v - self.offset[j]) * self.scale[j]
            })
            .collect())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    Max,
    L1,
    L2,
}

/// Each row divided by its max, L1 or L2 norm (left as is when that is 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Normalizer {
    pub norm: Norm,
}

impl Normalizer {
    pub fn from_attrs(attrs: &Attrs) -> Result<Normalizer> {
        let norm = match attrs.string("norm")?.unwrap_or("MAX") {
            "MAX" => Norm::Max,
            "L1" => Norm::L1,
            "L2" => Norm::L2,
            s => {
                return Err(Error::attr(
                    "norm",
                    format!("is '{s}', expected MAX, L1 or L2"),
                ));
            }
        };
        Ok(Normalizer { norm })
    }

    pub fn run(&self, x: &[f32], width: usize) -> Vec<f32> {
        let mut out = x.to_vec();
        if width == 0 {
            return out;
        }
        for row in out.chunks_mut(width) {
            match self.norm {
                Norm::Max => {
                    let mut max = f32::MIN;
                    for &v in row.iter() {
                        if max < v {
                            max = v;
                        }
                    }
                    if max != 0.0 {
                        row.iter_mut().for_each(|v| *v /= max);
                    }
                }
                Norm::L1 => {
                    let sum: f32 = row.iter().fold(0.0, |s, v| s + v.abs());
                    if sum != 0.0 {
                        row.iter_mut().for_each(|v| *v /= sum);
                    }
                }
                Norm::L2 => {
                    let sum: f32 = row.iter().fold(0.0, |s, v| s + v * v);
                    if sum != 0.0 {
                        for v in row.iter_mut() {
                            let r = (*v * *v / sum).sqrt();
                            *v = if *v < 0.0 { -r } else { r };
                        }
                    }
                }
            }
        }
        out
    }
}

/// 1 where a value is above the threshold, else 0; NaN is an error.
#[derive(Clone, Debug, PartialEq)]
pub struct Binarizer {
    pub threshold: f32,
}

impl Binarizer {
    pub fn from_attrs(attrs: &Attrs) -> Result<Binarizer> {
        Ok(Binarizer {
            threshold: attrs.float("threshold")?.unwrap_or(0.0),
        })
    }

    pub fn run(&self, x: &[f32], width: usize) -> std::result::Result<Vec<f32>, RunError> {
        let mut out = Vec::with_capacity(x.len());
        for (i, &v) in x.iter().enumerate() {
            if v.is_nan() {
                return Err(RunError::NaN {
                    op: "Binarizer",
                    row: i / width.max(1),
                    feature: i % width.max(1),
                });
            }
            out.push(if v > self.threshold { 1.0 } else { 0.0 });
        }
        Ok(out)
    }
}

/// Values equal to `replaced` (NaN matches NaN) become the imputed value of
/// their feature (or the one imputed value for all).
#[derive(Clone, Debug, PartialEq)]
pub struct Imputer {
    pub imputed: Vec<f32>,
    pub replaced: f32,
}

impl Imputer {
    pub fn from_attrs(attrs: &Attrs) -> Result<Imputer> {
        if !attrs.ints("imputed_value_int64s")?.is_empty() {
            return Err(Error::attr(
                "imputed_value_int64s",
                "is set: herd imputes float features only",
            ));
        }
        let imputed = attrs.floats("imputed_value_floats")?;
        if imputed.is_empty() {
            return Err(Error::attr("imputed_value_floats", "is empty"));
        }
        Ok(Imputer {
            imputed,
            replaced: attrs.float("replaced_value_float")?.unwrap_or(0.0),
        })
    }

    pub fn run(&self, x: &[f32], width: usize) -> Vec<f32> {
        let per_feature = self.imputed.len() == width;
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let hit = (v.is_nan() && self.replaced.is_nan()) || v == self.replaced;
                if hit {
                    self.imputed[if per_feature { i % width } else { 0 }]
                } else {
                    v
                }
            })
            .collect()
    }
}
