//! Writing ONNX files: a small graph builder, and the built-in mlp exported
//! the way `torch.onnx` writes an `nn.Sequential` of Linear layers (Gemm
//! with transB = 1). herd writes its own demo and benchmark models with it;
//! tests build malformed models with it.

use prost::Message;

use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
    attribute_type, data_type,
};
use super::tensor::{Tensor, to_proto};
use crate::model::{Mlp, OutputActivation};

/// The IR version herd writes (ONNX 1.16: opsets up to 21).
pub const IR_VERSION: i64 = 10;

/// A declared dimension of a graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub enum DimDecl {
    Size(i64),
    /// A named symbolic size, such as the batch.
    Named(String),
}

/// `["N", 64]` as declarations: the batch then fixed sizes.
pub fn batch_dims(dims: &[usize]) -> Vec<DimDecl> {
    std::iter::once(DimDecl::Named("N".into()))
        .chain(dims.iter().map(|&d| DimDecl::Size(d as i64)))
        .collect()
}

/// A graph under construction.
#[derive(Clone, Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    opsets: Vec<OperatorSetIdProto>,
}

fn value_info(name: &str, elem_type: i32, dims: &[DimDecl]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                DimDecl::Size(k) => DimensionValue::DimValue(*k),
                                DimDecl::Named(p) => DimensionValue::DimParam(p.clone()),
                            }),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
        doc_string: String::new(),
    }
}

impl GraphBuilder {
    /// A graph of the default domain at `opset`.
    pub fn new(opset: i64) -> GraphBuilder {
        GraphBuilder {
            graph: GraphProto {
                name: "herd".into(),
                ..Default::default()
            },
            opsets: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
        }
    }

    /// Also imports `domain` at `version`.
    pub fn opset(mut self, domain: &str, version: i64) -> Self {
        self.opsets.push(OperatorSetIdProto {
            domain: domain.to_string(),
            version,
        });
        self
    }

    pub fn input(mut self, name: &str, elem_type: i32, dims: &[DimDecl]) -> Self {
        self.graph.input.push(value_info(name, elem_type, dims));
        self
    }

    pub fn output(mut self, name: &str, elem_type: i32, dims: &[DimDecl]) -> Self {
        self.graph.output.push(value_info(name, elem_type, dims));
        self
    }

    pub fn initializer(mut self, name: &str, t: &Tensor) -> Self {
        self.graph.initializer.push(to_proto(name, t));
        self
    }

    /// A node of the default domain.
    pub fn node(
        mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> Self {
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: name.to_string(),
            op_type: op_type.to_string(),
            attribute: attributes,
            ..Default::default()
        });
        self
    }

    /// A node of `domain` (e.g. ai.onnx.ml).
    pub fn node_in(
        mut self,
        domain: &str,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> Self {
        self = self.node(op_type, name, inputs, outputs, attributes);
        if let Some(n) = self.graph.node.last_mut() {
            n.domain = domain.to_string();
        }
        self
    }

    /// The model.
    pub fn model(self) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: self.opsets,
            producer_name: "herd".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            ..Default::default()
        }
    }

    /// The model file's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.model().encode_to_vec()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// The built-in mlp as an ONNX graph: input `features` `[N, in]`, one Gemm
/// (transB = 1, PyTorch's Linear) per layer with Relu between, the output
/// activation after the last, output `scores` `[N, out]`.
pub fn mlp_to_onnx(mlp: &Mlp) -> Vec<u8> {
    let in_dim = mlp.layers.first().map_or(0, |l| l.in_dim);
    let out_dim = mlp.layers.last().map_or(in_dim, |l| l.out_dim);
    let mut b = GraphBuilder::new(17).input("features", data_type::FLOAT, &batch_dims(&[in_dim]));
    let mut x = "features".to_string();
    for (i, layer) in mlp.layers.iter().enumerate() {
        let w = format!("{i}.weight");
        let bias = format!("{i}.bias");
        let y = format!("linear{i}");
        b = b
            .initializer(
                &w,
                &Tensor::f32(vec![layer.out_dim, layer.in_dim], layer.weight.clone()),
            )
            .initializer(&bias, &Tensor::f32(vec![layer.out_dim], layer.bias.clone()))
            .node(
                "Gemm",
                &format!("fc{i}"),
                &[&x, &w, &bias],
                &[&y],
                vec![attr_int("transB", 1)],
            );
        x = y;
        if i + 1 < mlp.layers.len() {
            let r = format!("relu{i}");
            b = b.node("Relu", &r, &[&x], &[&r], vec![]);
            x = r;
        }
    }
    let last = match mlp.output {
        OutputActivation::Sigmoid => Some("Sigmoid"),
        OutputActivation::Softmax => Some("Softmax"),
        OutputActivation::None => None,
    };
    match last {
        Some(op) => b = b.node(op, "output", &[&x], &["scores"], vec![]),
        None => b = b.node("Identity", "output", &[&x], &["scores"], vec![]),
    }
    b.output("scores", data_type::FLOAT, &batch_dims(&[out_dim]))
        .finish()
}
