//! The attributes of ai.onnx.ml nodes, between the ONNX protobuf and the
//! plain values [`crate::model::trees`] builds its operators from: read
//! when a graph's node is one of them, written when herd writes a tree
//! model (`herd gen gbdt`).

use super::error::{Error, Result};
use super::proto::{AttributeProto, NodeProto, TensorProto, attribute_type, data_type};
use super::tensor::{self, Data, ExternalFiles};
use crate::model::trees::{Attr, Attrs};

/// The attributes of `node` as plain values (tensor attributes as their
/// element lists: float, double or integer).
pub fn attrs(node: &NodeProto, files: &ExternalFiles) -> Result<Attrs> {
    let mut out = Attrs::new();
    for a in &node.attribute {
        let bad = |detail: String| Error::Tensor {
            tensor: format!("{} (attribute of node '{}')", a.name, node.name),
            detail,
        };
        let value = match a.r#type {
            attribute_type::INT => Attr::Int(a.i),
            attribute_type::FLOAT => Attr::Float(a.f),
            attribute_type::STRING => Attr::Str(String::from_utf8_lossy(&a.s).into_owned()),
            attribute_type::INTS => Attr::Ints(a.ints.clone()),
            attribute_type::FLOATS => Attr::Floats(a.floats.clone()),
            attribute_type::STRINGS => Attr::Strs(
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            attribute_type::TENSOR => {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| bad("is a tensor attribute without a tensor".into()))?;
                if t.data_type == data_type::DOUBLE {
                    Attr::Doubles(doubles(t).map_err(bad)?)
                } else {
                    match tensor::from_proto(t, files)?.data {
                        Data::F32(v) => Attr::Floats(v),
                        Data::I64(v) => Attr::Ints(v),
                    }
                }
            }
            other => {
                return Err(bad(format!(
                    "has attribute type {other}, which no ai.onnx.ml operator herd runs takes"
                )));
            }
        };
        out.insert(&a.name, value);
    }
    Ok(out)
}

fn doubles(t: &TensorProto) -> std::result::Result<Vec<f64>, String> {
    if !t.raw_data.is_empty() {
        if t.raw_data.len() % 8 != 0 {
            return Err(format!(
                "holds {} bytes of doubles, not a multiple of 8",
                t.raw_data.len()
            ));
        }
        return Ok(t
            .raw_data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect());
    }
    Ok(t.double_data.clone())
}

/// `attrs` as ONNX attributes, for writing a node. Doubles are written as
/// a double tensor, as the `*_as_tensor` attributes hold them.
pub fn attr_protos(attrs: &Attrs) -> Vec<AttributeProto> {
    attrs
        .iter()
        .map(|(name, value)| {
            let mut a = AttributeProto {
                name: name.to_string(),
                ..Default::default()
            };
            match value {
                Attr::Int(v) => (a.r#type, a.i) = (attribute_type::INT, *v),
                Attr::Float(v) => (a.r#type, a.f) = (attribute_type::FLOAT, *v),
                Attr::Str(v) => (a.r#type, a.s) = (attribute_type::STRING, v.as_bytes().to_vec()),
                Attr::Ints(v) => (a.r#type, a.ints) = (attribute_type::INTS, v.clone()),
                Attr::Floats(v) => (a.r#type, a.floats) = (attribute_type::FLOATS, v.clone()),
                Attr::Strs(v) => {
                    a.r#type = attribute_type::STRINGS;
                    a.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
                }
                Attr::Doubles(v) => {
                    a.r#type = attribute_type::TENSOR;
                    a.t = Some(TensorProto {
                        name: name.to_string(),
                        dims: vec![v.len() as i64],
                        data_type: data_type::DOUBLE,
                        double_data: v.clone(),
                        ..Default::default()
                    });
                }
            }
            a
        })
        .collect()
}
