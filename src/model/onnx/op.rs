//! The operators herd runs, with their attributes read and checked once at
//! load, as each opset from [`MIN_OPSET`] to [`MAX_OPSET`] defines them.

use super::error::{Error, Result};
use super::proto::{AttributeProto, NodeProto, attribute_type, data_type};
use super::tensor::{self, ExternalFiles, Tensor};
use crate::model::trees::{self, MlOp};

/// The oldest default-domain opset herd runs.
pub const MIN_OPSET: i64 = 13;
/// The newest default-domain opset herd runs.
pub const MAX_OPSET: i64 = 21;

/// The domain of the classical machine-learning operators (tree ensembles,
/// linear models, ZipMap), run by [`crate::model::trees`].
pub const ML_DOMAIN: &str = "ai.onnx.ml";

/// Every operator herd runs, as `herd model inspect` and errors list them.
/// Shape, Constant and ConstantOfShape are folded at load.
pub const SUPPORTED: &[&str] = &[
    "Add",
    "ArgMax",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Div",
    "Erf",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "LogSoftmax",
    "MatMul",
    "Mul",
    "Pow",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

pub(super) fn supported_list() -> String {
    let ml: Vec<String> = trees::OPS
        .iter()
        .map(|o| format!("{ML_DOMAIN}.{o}"))
        .collect();
    format!("{}, {}", SUPPORTED.join(", "), ml.join(", "))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Sqrt,
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Erf,
    /// `0.5 x (1 + erf(x / sqrt 2))`
    Gelu,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`
    GeluTanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Mean,
    Sum,
}

/// One operator with its attributes. Inputs that ONNX passes as tensors but
/// herd needs at load (axes, shapes, clip bounds) are read from constants
/// by the shape inference, not here.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Binary(BinaryOp),
    Unary(UnaryOp),
    /// Softmax (or LogSoftmax) along `axis`.
    Softmax {
        axis: i64,
        log: bool,
    },
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    /// Inference mode: normalized with the stored mean and variance, per
    /// channel (axis 1).
    BatchNorm {
        epsilon: f32,
    },
    Gather {
        axis: i64,
    },
    Concat {
        axis: i64,
    },
    Reshape {
        allow_zero: bool,
    },
    Flatten {
        axis: i64,
    },
    /// Axes from the second input (absent: every dimension of size 1).
    Squeeze,
    Unsqueeze,
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Identity,
    Cast {
        /// The ONNX element type cast to.
        to: i32,
    },
    /// Bounds from the optional second and third inputs.
    Clip,
    Reduce {
        op: ReduceOp,
        /// Opsets before 18 give ReduceMean's axes as an attribute; else
        /// they are the second input.
        axes: Option<Vec<i64>>,
        keep_dims: bool,
        noop_with_empty_axes: bool,
    },
    ArgMax {
        axis: i64,
        keep_dims: bool,
        select_last_index: bool,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Constant(Tensor),
    ConstantOfShape {
        value: Tensor,
    },
    /// An ai.onnx.ml operator (domain [`ML_DOMAIN`]).
    Ml(MlNode),
}

/// An ai.onnx.ml operator and which of its outputs a node of herd's graph
/// computes: a classifier's labels are output 0 and its scores output 1,
/// each a node of its own (kept only when something reads it).
#[derive(Clone, Debug)]
pub struct MlNode {
    pub op: std::sync::Arc<MlOp>,
    /// The ONNX operator name (one of [`crate::model::trees::OPS`]).
    pub name: &'static str,
    pub port: usize,
}

impl MlNode {
    /// Whether this node computes a classifier's labels.
    pub fn is_labels(&self) -> bool {
        self.op.has_labels() && self.port == 0
    }
}

impl PartialEq for MlNode {
    fn eq(&self, other: &MlNode) -> bool {
        std::sync::Arc::ptr_eq(&self.op, &other.op) && self.port == other.port
    }
}

impl Op {
    /// The ONNX operator name, for messages and `herd model inspect`.
    pub fn onnx_name(&self) -> &'static str {
        match self {
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
            },
            Op::Unary(u) => match u {
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Relu => "Relu",
                UnaryOp::LeakyRelu(_) => "LeakyRelu",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Erf => "Erf",
                UnaryOp::Gelu | UnaryOp::GeluTanh => "Gelu",
            },
            Op::Softmax { log: false, .. } => "Softmax",
            Op::Softmax { log: true, .. } => "LogSoftmax",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Gather { .. } => "Gather",
            Op::Concat { .. } => "Concat",
            Op::Reshape { .. } => "Reshape",
            Op::Flatten { .. } => "Flatten",
            Op::Squeeze => "Squeeze",
            Op::Unsqueeze => "Unsqueeze",
            Op::Transpose { .. } => "Transpose",
            Op::Identity => "Identity",
            Op::Cast { .. } => "Cast",
            Op::Clip => "Clip",
            Op::Reduce {
                op: ReduceOp::Mean, ..
            } => "ReduceMean",
            Op::Reduce {
                op: ReduceOp::Sum, ..
            } => "ReduceSum",
            Op::ArgMax { .. } => "ArgMax",
            Op::Shape { .. } => "Shape",
            Op::Constant(_) => "Constant",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Ml(m) => m.name,
        }
    }
}

/// The attributes of one node, looked up by name with their types checked.
struct Attributes<'a> {
    node: &'a str,
    list: &'a [AttributeProto],
}

impl<'a> Attributes<'a> {
    fn get(&self, name: &str, ty: i32) -> Result<Option<&'a AttributeProto>> {
        let Some(a) = self.list.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        if !a.ref_attr_name.is_empty() {
            return Err(self.error(
                name,
                "refers to a function attribute; herd runs no functions",
            ));
        }
        // Writers before IR version 5 may leave the type out; trust the field then.
        if a.r#type != 0 && a.r#type != ty {
            return Err(self.error(
                name,
                &format!("has attribute type {}, expected {ty}", a.r#type),
            ));
        }
        Ok(Some(a))
    }

    fn error(&self, name: &str, detail: &str) -> Error {
        Error::Node {
            node: self.node.to_string(),
            detail: format!("attribute '{name}' {detail}"),
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .get(name, attribute_type::INT)?
            .map_or(default, |a| a.i))
    }

    fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .get(name, attribute_type::FLOAT)?
            .map_or(default, |a| a.f))
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool> {
        match self.int(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error(name, &format!("is {other}, expected 0 or 1"))),
        }
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .get(name, attribute_type::INTS)?
            .map(|a| a.ints.clone()))
    }

    fn string(&self, name: &str) -> Result<Option<String>> {
        match self.get(name, attribute_type::STRING)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone())
                .map(Some)
                .map_err(|_| self.error(name, "is not UTF-8")),
        }
    }
}

/// Reads `node`'s operator and attributes. `Ok(None)`: herd does not run
/// this operator (in this domain, at this opset). `label` names the node in
/// errors.
pub fn parse(
    node: &NodeProto,
    opset: i64,
    label: &str,
    files: &ExternalFiles,
) -> Result<Option<Op>> {
    if node.domain == ML_DOMAIN {
        return parse_ml(node, label, files);
    }
    if !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return Ok(None);
    }
    let at = Attributes {
        node: label,
        list: &node.attribute,
    };
    let op = match node.op_type.as_str() {
        "Gemm" => Op::Gemm {
            alpha: at.float("alpha", 1.0)?,
            beta: at.float("beta", 1.0)?,
            trans_a: at.flag("transA", false)?,
            trans_b: at.flag("transB", false)?,
        },
        "MatMul" => Op::MatMul,
        "Add" => Op::Binary(BinaryOp::Add),
        "Sub" => Op::Binary(BinaryOp::Sub),
        "Mul" => Op::Binary(BinaryOp::Mul),
        "Div" => Op::Binary(BinaryOp::Div),
        "Pow" => Op::Binary(BinaryOp::Pow),
        "Sqrt" => Op::Unary(UnaryOp::Sqrt),
        "Relu" => Op::Unary(UnaryOp::Relu),
        "LeakyRelu" => Op::Unary(UnaryOp::LeakyRelu(at.float("alpha", 0.01)?)),
        "Sigmoid" => Op::Unary(UnaryOp::Sigmoid),
        "Tanh" => Op::Unary(UnaryOp::Tanh),
        "Erf" => Op::Unary(UnaryOp::Erf),
        "Gelu" if opset >= 20 => gelu(&at)?,
        "Softmax" | "LogSoftmax" => Op::Softmax {
            axis: at.int("axis", -1)?,
            log: node.op_type == "LogSoftmax",
        },
        "LayerNormalization" if opset >= 17 => layer_norm(&at)?,
        "BatchNormalization" => batch_norm(&at)?,
        "Gather" => Op::Gather {
            axis: at.int("axis", 0)?,
        },
        "Concat" => Op::Concat {
            axis: at
                .get("axis", attribute_type::INT)?
                .map(|a| a.i)
                .ok_or_else(|| at.error("axis", "is required"))?,
        },
        "Reshape" => Op::Reshape {
            allow_zero: at.flag("allowzero", false)?,
        },
        "Flatten" => Op::Flatten {
            axis: at.int("axis", 1)?,
        },
        "Squeeze" => Op::Squeeze,
        "Unsqueeze" => Op::Unsqueeze,
        "Transpose" => Op::Transpose {
            perm: at.ints("perm")?,
        },
        "Identity" => Op::Identity,
        "Cast" => cast(&at)?,
        "Clip" => Op::Clip,
        "ReduceMean" | "ReduceSum" => reduce(&node.op_type, &at, opset)?,
        "ArgMax" => Op::ArgMax {
            axis: at.int("axis", 0)?,
            keep_dims: at.flag("keepdims", true)?,
            select_last_index: at.flag("select_last_index", false)?,
        },
        "Shape" => Op::Shape {
            start: at.int("start", 0)?,
            end: at.get("end", attribute_type::INT)?.map(|a| a.i),
        },
        "Constant" => Op::Constant(constant_value(&at, files)?),
        "ConstantOfShape" => constant_of_shape(&at, files)?,
        _ => return Ok(None),
    };
    Ok(Some(op))
}

/// Gelu (opset 20): exact, or the tanh approximation.
fn gelu(at: &Attributes<'_>) -> Result<Op> {
    match at.string("approximate")?.as_deref() {
        None | Some("none") => Ok(Op::Unary(UnaryOp::Gelu)),
        Some("tanh") => Ok(Op::Unary(UnaryOp::GeluTanh)),
        Some(other) => Err(at.error(
            "approximate",
            &format!("is '{other}', expected 'none' or 'tanh'"),
        )),
    }
}

/// LayerNormalization (opset 17), its statistics in float32.
fn layer_norm(at: &Attributes<'_>) -> Result<Op> {
    let stash = at.int("stash_type", 1)?;
    if stash != 1 {
        return Err(at.error(
            "stash_type",
            &format!("is {stash}; herd computes LayerNormalization statistics in float32 or wider (stash_type 1)"),
        ));
    }
    Ok(Op::LayerNorm {
        axis: at.int("axis", -1)?,
        epsilon: at.float("epsilon", 1e-5)?,
    })
}

/// BatchNormalization in inference mode.
fn batch_norm(at: &Attributes<'_>) -> Result<Op> {
    if at.flag("training_mode", false)? {
        return Err(at.error(
            "training_mode",
            "is 1; herd runs BatchNormalization in inference mode only (export the model in eval mode)",
        ));
    }
    Ok(Op::BatchNorm {
        epsilon: at.float("epsilon", 1e-5)?,
    })
}

/// Cast to one of the element types herd computes in.
fn cast(at: &Attributes<'_>) -> Result<Op> {
    let to = at
        .get("to", attribute_type::INT)?
        .map(|a| a.i as i32)
        .ok_or_else(|| at.error("to", "is required"))?;
    if tensor::DType::from_onnx(to).is_none() {
        return Err(at.error(
            "to",
            &format!(
                "casts to {}; herd computes in float32 and int64",
                data_type::name(to)
            ),
        ));
    }
    Ok(Op::Cast { to })
}

/// ReduceMean or ReduceSum (`op_type`); ReduceMean's axes are an attribute
/// before opset 18.
fn reduce(op_type: &str, at: &Attributes<'_>, opset: i64) -> Result<Op> {
    Ok(Op::Reduce {
        op: if op_type == "ReduceMean" {
            ReduceOp::Mean
        } else {
            ReduceOp::Sum
        },
        axes: if op_type == "ReduceMean" && opset < 18 {
            at.ints("axes")?
        } else {
            None
        },
        keep_dims: at.flag("keepdims", true)?,
        noop_with_empty_axes: at.flag("noop_with_empty_axes", false)?,
    })
}

/// ConstantOfShape: its one value (0.0 by default).
fn constant_of_shape(at: &Attributes<'_>, files: &ExternalFiles) -> Result<Op> {
    let value = match at.get("value", attribute_type::TENSOR)? {
        Some(a) => {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| at.error("value", "holds no tensor"))?;
            let v = tensor::from_proto(t, files)?;
            if v.len() != 1 {
                return Err(at.error("value", &format!("holds {} values, expected one", v.len())));
            }
            v
        }
        None => Tensor::f32(vec![1], vec![0.0]),
    };
    Ok(Op::ConstantOfShape { value })
}

/// The value of a Constant node, from whichever attribute holds it.
fn constant_value(at: &Attributes<'_>, files: &ExternalFiles) -> Result<Tensor> {
    if let Some(a) = at.get("value", attribute_type::TENSOR)? {
        let t =
            a.t.as_ref()
                .ok_or_else(|| at.error("value", "holds no tensor"))?;
        return tensor::from_proto(t, files);
    }
    if let Some(a) = at.get("value_float", attribute_type::FLOAT)? {
        return Ok(Tensor::f32(vec![], vec![a.f]));
    }
    if let Some(a) = at.get("value_floats", attribute_type::FLOATS)? {
        return Ok(Tensor::f32(vec![a.floats.len()], a.floats.clone()));
    }
    if let Some(a) = at.get("value_int", attribute_type::INT)? {
        return Ok(Tensor::i64(vec![], vec![a.i]));
    }
    if let Some(a) = at.get("value_ints", attribute_type::INTS)? {
        return Ok(Tensor::i64(vec![a.ints.len()], a.ints.clone()));
    }
    Err(Error::Node {
        node: at.node.to_string(),
        detail: "a Constant without a value, value_float(s) or value_int(s) attribute (string and sparse constants are not supported)".into(),
    })
}

/// An ai.onnx.ml node, computing its first output (the import makes a node
/// per output read).
fn parse_ml(node: &NodeProto, label: &str, files: &ExternalFiles) -> Result<Option<Op>> {
    let Some(name) = trees::OPS.iter().copied().find(|n| *n == node.op_type) else {
        return Ok(None);
    };
    let attrs = super::ml::attrs(node, files)?;
    let op = MlOp::from_attrs(name, &attrs).map_err(|e| Error::Node {
        node: label.to_string(),
        detail: e.to_string(),
    })?;
    Ok(Some(Op::Ml(MlNode {
        op: std::sync::Arc::new(op),
        name,
        port: 0,
    })))
}
