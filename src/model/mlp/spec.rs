//! An mlp's settings: which layers, which output activation; resolved from
//! the job's `[model]` table and used to load the weights.

use serde::{Deserialize, Serialize};

use super::Mlp;
use crate::config::{self, raw, source::Source};
use crate::model::family::FamilySpec;
use crate::model::layers::OUTPUT_ACTIVATIONS;
use crate::model::weights::{Weights, check_chain};
use crate::model::{Error, Model, OutputActivation, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpSpec {
    /// Explicit layer names, or `None` for every `*.weight` with a matching
    /// `*.bias`, ordered by the numbers in their names.
    pub layers: Option<Vec<String>>,
    pub output: OutputActivation,
}

impl MlpSpec {
    /// `layers` (names, each once) and `output` (default sigmoid).
    pub(crate) fn resolve(raw: &raw::ModelTable, src: &Source<'_>) -> config::Result<MlpSpec> {
        let layers = match &raw.layers {
            None => None,
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(src.error(
                        list.span(),
                        "[model] layers is empty; expected the layer names in order, \
                         e.g. [\"fc1\", \"fc2\"] (or no layers key to take every \
                         '*.weight' in numeric order)",
                    ));
                }
                let mut names: Vec<String> = Vec::with_capacity(list.get_ref().len());
                for layer in list.get_ref() {
                    let name = layer.get_ref();
                    if name.is_empty() {
                        return Err(src.error(
                            layer.span(),
                            "a name in [model] layers is empty; expected a tensor name \
                             prefix such as 'fc1'",
                        ));
                    }
                    if names.contains(name) {
                        return Err(src.error(
                            layer.span(),
                            format!(
                                "[model] layers lists '{name}' twice; expected each layer once"
                            ),
                        ));
                    }
                    names.push(name.clone());
                }
                Some(names)
            }
        };
        let output = match &raw.output {
            None => OutputActivation::Sigmoid,
            Some(v) => src.choice(
                v,
                "[model] output",
                "an output activation",
                OUTPUT_ACTIVATIONS,
            )?,
        };
        Ok(MlpSpec { layers, output })
    }
}

impl FamilySpec for MlpSpec {
    /// The layers in order; the first must take exactly `num_features`
    /// inputs, each later one what the one before gives.
    fn load(&self, bytes: &[u8], num_features: usize) -> Result<Model> {
        let weights = Weights::parse(bytes)?;
        let names = match &self.layers {
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
        if let Some(last) = layers.last()
            && last.out_dim > crate::model::MAX_SCORES
        {
            return Err(Error::TooManyScores {
                layer: last.name.clone(),
                found: last.out_dim,
            });
        }
        Ok(Model::Mlp(Mlp {
            layers,
            output: self.output,
        }))
    }
}
