//! Why a model's weights could not be loaded: every variant names the tensor
//! and says what was expected.

/// A model load failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An ONNX model herd cannot run (the message names the file's node,
    /// input or output).
    #[error("{0}")]
    Onnx(String),

    /// Rows a model could not score (the message says which value).
    #[error("{0}")]
    Run(String),

    #[error("weights are not a valid safetensors file: {0}")]
    Format(String),

    #[error("{kind} weights have no tensor '{tensor}' (tensors present: {present})")]
    MissingTensor {
        kind: &'static str,
        tensor: String,
        present: String,
    },

    #[error("tensor '{tensor}' has shape {found:?}, expected {expected}")]
    Shape {
        tensor: String,
        expected: String,
        found: Vec<usize>,
    },

    #[error(
        "tensor '{tensor}' holds {value} at flat index {index}: a dense layer's weights \
         and biases must be finite numbers (a model trained into NaN is broken; \
         re-export it from a good checkpoint)"
    )]
    NonFiniteWeight {
        tensor: String,
        index: usize,
        value: f32,
    },

    #[error("tensor '{tensor}' has dtype {found}, expected {expected}")]
    Dtype {
        tensor: String,
        expected: &'static str,
        found: String,
    },

    #[error(
        "no dense layers found: expected pairs NAME.weight [out, in] + NAME.bias [out] \
         (tensors present: {present})"
    )]
    NoLayers { present: String },

    #[error(
        "cannot order layers '{first}' and '{second}': their names carry the same numbers; \
         list them in order with `layers = [...]`"
    )]
    AmbiguousLayerOrder { first: String, second: String },

    #[error(
        "layer '{layer}' has no number in its name to order it by; \
         list the layers in order with `layers = [...]`"
    )]
    UnorderedLayer { layer: String },

    #[error("layer '{layer}' takes {expected} inputs but gets {found} from {source_desc}")]
    LayerInput {
        layer: String,
        expected: usize,
        found: usize,
        source_desc: String,
    },

    #[error(
        "the user tower's last layer '{layer}' outputs {found} values, expected the embedding dim {dim}"
    )]
    TowerOutput {
        layer: String,
        found: usize,
        dim: usize,
    },

    #[error(
        "two_tower weights have no user tower (no 'user_tower.*' layers), so the {num_features} \
         feature column(s) have nowhere to go: set feature_columns = [] in [input]"
    )]
    FeaturesWithoutTower { num_features: usize },

    #[error("tensor 'item_ids' entry {index} is {value}, expected an integer in 0..={max}", max = u32::MAX)]
    ItemIdRange { index: usize, value: String },

    #[error(
        "tensor 'item_ids' repeats id {id} (entries {first} and {second}); item ids must be unique"
    )]
    DuplicateItemId {
        id: u32,
        first: usize,
        second: usize,
    },

    #[error(
        "the last layer '{layer}' outputs {found} scores per entity; a stored prediction holds \
         at most {max} scores (its count is 16 bits)",
        max = super::MAX_SCORES
    )]
    TooManyScores { layer: String, found: usize },

    #[error("two_tower embedding dim is 0 in tensor 'item_embeddings'; expected at least 1")]
    ZeroDim,
}

/// The result of loading a model.
pub type Result<T> = std::result::Result<T, Error>;
