//! Why an ONNX model cannot be run, and why a run of it failed. Load errors
//! name the node (by name, or by position and operator when unnamed), the
//! graph input or output, or the tensor; the caller adds the file.

/// A model load failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a valid ONNX model file: {0}")]
    Decode(String),

    #[error("the model has no graph")]
    NoGraph,

    #[error(
        "the model imports opset {version} of {domain}; herd runs opsets {min} to {max} of the \
         default domain (convert it with onnx.version_converter, or export with that opset)",
        min = super::op::MIN_OPSET,
        max = super::op::MAX_OPSET
    )]
    Opset { domain: String, version: i64 },

    #[error("tensor '{tensor}' {detail}")]
    Tensor { tensor: String, detail: String },

    #[error("tensor '{tensor}' reads external data from '{location}': {detail}")]
    ExternalData {
        tensor: String,
        location: String,
        detail: String,
    },

    #[error("graph input '{input}' {detail}")]
    Input { input: String, detail: String },

    #[error("graph output '{output}' {detail}")]
    Output { output: String, detail: String },

    #[error(
        "the graph uses operators herd does not run: {}; herd runs {}",
        .nodes.join(", "),
        super::op::supported_list()
    )]
    Unsupported {
        /// `node 'NAME' (OP)` per unsupported node.
        nodes: Vec<String>,
    },

    #[error("{node}: {detail}")]
    Node { node: String, detail: String },

    #[error("{0}")]
    Graph(String),
}

/// The result of loading a model.
pub type Result<T> = std::result::Result<T, Error>;

/// A failure while scoring rows (the model loaded; these rows break it).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RunError {
    #[error("{node}: {detail}")]
    Node { node: String, detail: String },

    #[error("input '{input}' {detail}")]
    Feed { input: String, detail: String },
}
