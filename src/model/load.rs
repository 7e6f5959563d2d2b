//! Reading safetensors bytes into a [`Model`], checking every shape.
//!
//! Weights follow PyTorch's conventions: a dense layer is `NAME.weight`
//! `[out, in]` plus `NAME.bias` `[out]`. Layers are found by name and ordered
//! by the numbers in their names (natural order: `10` after `2`), unless the
//! spec lists them.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{Dense, Error, Mlp, Model, ModelSpec, Result, TwoTower};

/// How many tensor names an error message lists before eliding the rest.
const NAMES_IN_ERRORS: usize = 20;

/// The prefix of the user tower's layers in two_tower weights.
pub const TOWER_PREFIX: &str = "user_tower.";

impl Model {
    /// Parses safetensors `bytes` into a model of kind `spec`, checking every
    /// shape. `num_features` is how many dense feature columns the input has:
    /// an mlp's first layer must take exactly that many inputs; a two_tower's
    /// user tower takes the embedding dim plus that many; a two_tower without
    /// a tower takes none.
    pub fn from_safetensors(spec: &ModelSpec, bytes: &[u8], num_features: usize) -> Result<Model> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format(e.to_string()))?;
        let weights = Weights::new(st);
        match spec {
            ModelSpec::Mlp { layers, output } => {
                let names = match layers {
                    Some(names) => names.clone(),
                    None => weights.default_layer_names("")?,
                };
                if names.is_empty() {
                    return Err(Error::NoLayers {
                        present: weights.present(),
                    });
                }
                let layers = names
                    .iter()
                    .map(|n| weights.dense("mlp", n))
                    .collect::<Result<Vec<_>>>()?;
                check_chain(
                    &layers,
                    num_features,
                    "the input's feature columns (check [input] feature_columns)".to_string(),
                )?;
                Ok(Model::Mlp(Mlp {
                    layers,
                    output: *output,
                }))
            }
            ModelSpec::TwoTower {
                top_k,
                max_history,
                exclude_seen,
            } => {
                let emb_view = weights.get("two_tower", "item_embeddings")?;
                let (items, dim) = match emb_view.shape() {
                    &[items, dim] => (items, dim),
                    other => {
                        return Err(Error::Shape {
                            tensor: "item_embeddings".into(),
                            expected: "[items, dim] (2-D)".into(),
                            found: other.to_vec(),
                        });
                    }
                };
                if dim == 0 {
                    return Err(Error::ZeroDim);
                }
                if items > u32::MAX as usize {
                    return Err(Error::Shape {
                        tensor: "item_embeddings".into(),
                        expected: format!("at most {} items", u32::MAX),
                        found: emb_view.shape().to_vec(),
                    });
                }
                let item_embeddings = read_f32("item_embeddings", &emb_view)?;
                let item_ids = match weights.st.tensor("item_ids") {
                    Ok(view) => {
                        if view.shape() != [items] {
                            return Err(Error::Shape {
                                tensor: "item_ids".into(),
                                expected: format!(
                                    "[{items}] (one id per row of 'item_embeddings')"
                                ),
                                found: view.shape().to_vec(),
                            });
                        }
                        read_ids(&view)?
                    }
                    Err(_) => (0..items as u32).collect(),
                };
                let tower_names = weights.default_layer_names(TOWER_PREFIX)?;
                let tower = tower_names
                    .iter()
                    .map(|n| weights.dense("two_tower", n))
                    .collect::<Result<Vec<_>>>()?;
                match tower.last() {
                    None if num_features > 0 => {
                        return Err(Error::FeaturesWithoutTower { num_features });
                    }
                    None => {}
                    Some(last) => {
                        check_chain(
                            &tower,
                            dim + num_features,
                            format!(
                                "the pooled history ({dim}) plus {num_features} feature column(s)"
                            ),
                        )?;
                        if last.out_dim != dim {
                            return Err(Error::TowerOutput {
                                layer: last.name.clone(),
                                found: last.out_dim,
                                dim,
                            });
                        }
                    }
                }
                Ok(Model::TwoTower(TwoTower {
                    dim,
                    item_embeddings,
                    item_ids,
                    tower,
                    num_features,
                    top_k: *top_k,
                    max_history: *max_history,
                    exclude_seen: *exclude_seen,
                }))
            }
        }
    }
}

/// Checks that the first layer takes `first_in` inputs (from `source_desc`)
/// and that each later layer takes what the one before it gives.
fn check_chain(layers: &[Dense], first_in: usize, source_desc: String) -> Result<()> {
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

struct Weights<'a> {
    st: SafeTensors<'a>,
    names: Vec<String>,
}

impl<'a> Weights<'a> {
    fn new(st: SafeTensors<'a>) -> Self {
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        Weights { st, names }
    }

    fn present(&self) -> String {
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

    fn get(&self, kind: &'static str, name: &str) -> Result<TensorView<'a>> {
        self.st.tensor(name).map_err(|_| Error::MissingTensor {
            kind,
            tensor: name.to_string(),
            present: self.present(),
        })
    }

    /// Every `NAME.weight` under `prefix` with a matching `NAME.bias`,
    /// ordered by the numbers in `NAME` (compared as numbers, left to right).
    fn default_layer_names(&self, prefix: &str) -> Result<Vec<String>> {
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
            .filter(|(_, base)| self.st.tensor(&format!("{base}.bias")).is_ok())
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

    fn dense(&self, kind: &'static str, name: &str) -> Result<Dense> {
        let w_name = format!("{name}.weight");
        let b_name = format!("{name}.bias");
        let w = self.get(kind, &w_name)?;
        let b = self.get(kind, &b_name)?;
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
        if b.shape() != [out_dim] {
            return Err(Error::Shape {
                tensor: b_name,
                expected: format!("[{out_dim}] (the out dim of '{w_name}')"),
                found: b.shape().to_vec(),
            });
        }
        Ok(Dense {
            name: name.to_string(),
            in_dim,
            out_dim,
            weight: read_f32(&w_name, &w)?,
            bias: read_f32(&b_name, &b)?,
        })
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
fn read_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
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
pub(super) fn f16_to_f32(h: u16) -> f32 {
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

/// The `item_ids` tensor as u32 ids: any integer dtype, every value within
/// u32, no id twice.
fn read_ids(view: &TensorView<'_>) -> Result<Vec<u32>> {
    let data = view.data();
    let wide: Vec<i128> = match view.dtype() {
        Dtype::U8 => data.iter().map(|&b| b as i128).collect(),
        Dtype::I8 => data.iter().map(|&b| b as i8 as i128).collect(),
        Dtype::U16 => data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as i128)
            .collect(),
        Dtype::I16 => data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as i128)
            .collect(),
        Dtype::U32 => data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128)
            .collect(),
        Dtype::U64 => data
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as i128)
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as i128)
            .collect(),
        other => {
            return Err(Error::Dtype {
                tensor: "item_ids".into(),
                expected: "an integer dtype (I64, I32, U32, ...)",
                found: format!("{other:?}"),
            });
        }
    };
    let mut first_seen: HashMap<u32, usize> = HashMap::with_capacity(wide.len());
    let mut ids = Vec::with_capacity(wide.len());
    for (index, value) in wide.into_iter().enumerate() {
        let id = u32::try_from(value).map_err(|_| Error::ItemIdRange {
            index,
            value: value.to_string(),
        })?;
        if let Some(&first) = first_seen.get(&id) {
            return Err(Error::DuplicateItemId {
                id,
                first,
                second: index,
            });
        }
        first_seen.insert(id, index);
        ids.push(id);
    }
    Ok(ids)
}
