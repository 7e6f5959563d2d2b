//! Reading safetensors bytes: tensors by name with their shapes checked,
//! dense layers found by name and ordered by the numbers in their names
//! (natural order: `10` after `2`), floats widened from F16 and BF16.

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{Dense, Error, Result};

/// How many tensor names an error message lists before eliding the rest.
const NAMES_IN_ERRORS: usize = 20;

/// Checks that the first layer takes `first_in` inputs (from `source_desc`)
/// and that each later layer takes what the one before it gives.
pub(crate) fn check_chain(layers: &[Dense], first_in: usize, source_desc: String) -> Result<()> {
    let mut expected_in = first_in;
    let mut source = source_desc;
    for layer in layers {
        if layer.in_dim != expected_in {
            return Err(Error::LayerInput {
                layer: layer.name.clone(),
                expected: layer.in_dim,
                found: expected_in,
                source_desc: source,
            });
        }
        expected_in = layer.out_dim;
        source = format!("layer '{}'", layer.name);
    }
    Ok(())
}

pub(crate) struct Weights<'a> {
    pub(crate) st: SafeTensors<'a>,
    names: Vec<String>,
}

impl<'a> Weights<'a> {
    /// Parses safetensors `bytes`.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Weights<'a>> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format(e.to_string()))?;
        Ok(Weights::new(st))
    }

    fn new(st: SafeTensors<'a>) -> Self {
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        Weights { st, names }
    }

    pub(crate) fn present(&self) -> String {
        if self.names.is_empty() {
            return "none".into();
        }
        let mut s = self
            .names
            .iter()
            .take(NAMES_IN_ERRORS)
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.names.len() > NAMES_IN_ERRORS {
            s.push_str(&format!(" and {} more", self.names.len() - NAMES_IN_ERRORS));
        }
        s
    }

    pub(crate) fn get(&self, kind: &'static str, name: &str) -> Result<TensorView<'a>> {
        self.st.tensor(name).map_err(|_| Error::MissingTensor {
            kind,
            tensor: name.to_string(),
            present: self.present(),
        })
    }

    /// Every `NAME.weight` under `prefix` with its `NAME.bias`, or 2-D and
    /// without one (`nn.Linear(bias=False)`), ordered by the numbers in `NAME`
    /// (compared as numbers, left to right). A weight is never left out
    /// because it has no bias: a layer dropped from the middle of a stack
    /// whose shapes still chain would score every row wrong.
    pub(crate) fn default_layer_names(&self, prefix: &str) -> Result<Vec<String>> {
        // A lone `nn.Linear` saved under the prefix's own name
        // (`user_tower.weight`) is a one-layer stack.
        let own_name = prefix.strip_suffix('.').filter(|n| !n.is_empty());
        let mut layers: Vec<(Vec<u64>, String)> = self
            .names
            .iter()
            .filter_map(|n| n.strip_suffix(".weight"))
            .filter_map(|base| {
                let rest = if Some(base) == own_name {
                    ""
                } else {
                    base.strip_prefix(prefix)?
                };
                Some((numbers_in(rest), base))
            })
            // A 1-D weight without a bias is a norm's scale, not a layer.
            .filter(|(_, base)| {
                self.st.tensor(&format!("{base}.bias")).is_ok()
                    || self
                        .st
                        .tensor(&format!("{base}.weight"))
                        .is_ok_and(|w| w.shape().len() == 2)
            })
            .map(|(key, base)| (key, base.to_string()))
            .collect();
        if layers.len() > 1 {
            if let Some((_, name)) = layers.iter().find(|(key, _)| key.is_empty()) {
                return Err(Error::UnorderedLayer {
                    layer: name.clone(),
                });
            }
        }
        layers.sort();
        for pair in layers.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(Error::AmbiguousLayerOrder {
                    first: pair[0].1.clone(),
                    second: pair[1].1.clone(),
                });
            }
        }
        Ok(layers.into_iter().map(|(_, name)| name).collect())
    }

    /// Layer `name`: `name.weight` [out, in] and `name.bias` [out], or no
    /// bias (zeros, as `nn.Linear(bias=False)` computes). A NaN or an
    /// infinity in either is refused: relu would turn a NaN into 0 where
    /// PyTorch keeps it, so the stored scores would be finite and wrong.
    pub(crate) fn dense(&self, kind: &'static str, name: &str) -> Result<Dense> {
        let w_name = format!("{name}.weight");
        let b_name = format!("{name}.bias");
        let w = self.get(kind, &w_name)?;
        let (out_dim, in_dim) = match w.shape() {
            &[out_dim, in_dim] => (out_dim, in_dim),
            other => {
                return Err(Error::Shape {
                    tensor: w_name,
                    expected: "[out, in] (2-D, as torch.nn.Linear stores it)".into(),
                    found: other.to_vec(),
                });
            }
        };
        let bias = match self.st.tensor(&b_name) {
            Err(_) => vec![0.0; out_dim],
            Ok(b) if b.shape() != [out_dim] => {
                return Err(Error::Shape {
                    tensor: b_name,
                    expected: format!("[{out_dim}] (the out dim of '{w_name}')"),
                    found: b.shape().to_vec(),
                });
            }
            Ok(b) => finite(&b_name, read_f32(&b_name, &b)?)?,
        };
        Ok(Dense {
            name: name.to_string(),
            in_dim,
            out_dim,
            weight: finite(&w_name, read_f32(&w_name, &w)?)?,
            bias,
            packed: Default::default(),
        })
    }
}

/// `values` of tensor `name`, if each is finite.
fn finite(name: &str, values: Vec<f32>) -> Result<Vec<f32>> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(values),
        Some(index) => Err(Error::NonFiniteWeight {
            tensor: name.to_string(),
            index,
            value: values[index],
        }),
    }
}

/// The decimal numbers in `name`, left to right (`"block2.fc10"` -> `[2, 10]`).
fn numbers_in(name: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut current: Option<u64> = None;
    for c in name.chars() {
        match c.to_digit(10) {
            Some(d) => {
                current = Some(
                    current
                        .unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(d as u64),
                )
            }
            None => out.extend(current.take()),
        }
    }
    out.extend(current);
    out
}

/// A float tensor as f32 values: F32 as is, F16 and BF16 widened.
pub(crate) fn read_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(Error::Dtype {
                tensor: name.to_string(),
                expected: "F32 (or F16 / BF16)",
                found: format!("{other:?}"),
            });
        }
    })
}

/// IEEE 754 half precision to single precision, exactly.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    match exp {
        0 => {
            let magnitude = mant as f32 / (1u32 << 24) as f32;
            if sign != 0 { -magnitude } else { magnitude }
        }
        31 => f32::from_bits(sign | 0x7f80_0000 | (mant << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (mant << 13)),
    }
}
