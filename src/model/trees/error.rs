//! Why an ai.onnx.ml operator cannot be built, or a run of it failed. Load
//! errors name the attribute, the tree and the node; the caller adds the
//! file and the graph node.

/// A load failure of one operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("attribute '{name}' {detail}")]
    Attr { name: String, detail: String },

    #[error("tree {tree} node {node}: {detail}")]
    Node {
        tree: i64,
        node: i64,
        detail: String,
    },

    #[error("{0}")]
    Model(String),

    #[error("operator '{op}' is not one herd runs from ai.onnx.ml; herd runs {list}", list = super::OPS.join(", "))]
    Unsupported { op: String },
}

impl Error {
    pub fn attr(name: &str, detail: impl Into<String>) -> Error {
        Error::Attr {
            name: name.to_string(),
            detail: detail.into(),
        }
    }

    pub fn node(tree: i64, node: i64, detail: impl Into<String>) -> Error {
        Error::Node {
            tree,
            node,
            detail: detail.into(),
        }
    }
}

/// A failure while scoring rows (the input, not the model, is at fault).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the operator reads feature {feature} but rows have {width} features")]
    Width { feature: usize, width: usize },

    #[error("row {row} feature {feature} is NaN, which {op} does not accept")]
    NaN {
        op: &'static str,
        row: usize,
        feature: usize,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
