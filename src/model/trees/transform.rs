//! The score transforms of the ai.onnx.ml operators, in f32 with the same
//! formulas onnxruntime uses (its probit is an approximation of the inverse
//! error function, not the exact one, and herd matches it).

use std::f32::consts::{PI, SQRT_2};

/// What happens to the scores after aggregation (`post_transform`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    /// Softmax over the non-zero scores; zeros stay zero.
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    pub fn parse(name: &str) -> Option<PostTransform> {
        Some(match name {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PostTransform::None => "NONE",
            PostTransform::Logistic => "LOGISTIC",
            PostTransform::Softmax => "SOFTMAX",
            PostTransform::SoftmaxZero => "SOFTMAX_ZERO",
            PostTransform::Probit => "PROBIT",
        }
    }

    /// Applies the transform to one row of two or more scores.
    pub fn apply_row(self, row: &mut [f32]) {
        match self {
            PostTransform::None => {}
            PostTransform::Logistic => row.iter_mut().for_each(|v| *v = logistic(*v)),
            PostTransform::Probit => row.iter_mut().for_each(|v| *v = probit(*v)),
            PostTransform::Softmax => softmax(row),
            PostTransform::SoftmaxZero => softmax_zero(row),
        }
    }
}

/// `1 / (1 + e^-x)`, computed on |x| so that large negative scores keep
/// their precision.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// The inverse error function by Winitzki's approximation (a = 0.147).
pub fn erf_inv(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sign * v3.sqrt()
}

/// The normal quantile of `p`: `sqrt 2 * erfinv(2p - 1)`.
pub fn probit(p: f32) -> f32 {
    SQRT_2 * erf_inv(2.0 * p - 1.0)
}

pub fn softmax(row: &mut [f32]) {
    let mut max = -f32::MAX;
    for &v in row.iter() {
        if v > max {
            max = v;
        }
    }
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

pub fn softmax_zero(row: &mut [f32]) {
    let mut max = -f32::MAX;
    for &v in row.iter() {
        if v > max {
            max = v;
        }
    }
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        if *v > 0.000_000_1 || *v < -0.000_000_1 {
            *v = (*v - max).exp();
            sum += *v;
        } else {
            *v *= exp_neg_max;
        }
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}
