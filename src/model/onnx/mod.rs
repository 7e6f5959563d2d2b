//! Models from ONNX files: a user's own network, exported by torch.onnx,
//! skl2onnx or onnxscript, run on herd's own kernels.
//!
//! Pure, like the rest of `model`: the file's bytes and its external-data
//! files arrive as bytes ([`OnnxFile::external_files`] says which to read);
//! nothing here reads a file. The stages:
//!
//! 1. [`OnnxFile::parse`]: the protobuf decoded by prost ([`proto`]).
//! 2. [`graph::import`]: opsets checked (13 to 21 of the default domain),
//!    the nodes the chosen outputs need kept, operators read ([`op`]),
//!    every value shaped with a symbolic batch dimension and constants
//!    folded ([`infer`]). A graph that would mix rows (reduce, reshape or
//!    index across the batch dimension) is refused here, so any split of
//!    the rows into chunks scores the same.
//! 3. [`plan::plan`]: dense chains fused onto the built-in mlp's kernels.
//! 4. [`OnnxModel::run`] (fast, in blocks of rows) and
//!    [`OnnxModel::run_reference`] (every node on plain loops, the result
//!    everything else is checked against).
//!
//! The room is laid out for the ai.onnx.ml operators (tree ensembles,
//! linear models) to join as more [`op::Op`]s: nodes carry their domain,
//! a graph computes any number of outputs of float or integer type, and no
//! operator here turns NaN into something else.

mod error;
mod eval;
mod exec;
mod family;
pub mod graph;
pub(crate) mod infer;
mod inspect;
pub(crate) mod kernels;
pub mod ml;
pub mod op;
pub(crate) mod plan;
pub mod proto;
mod tensor;
#[cfg(test)]
mod tests;
pub mod write;

pub use error::{Error, Result, RunError};
pub use exec::Feed;
pub use family::{FAMILY, MAX_TOP_K, Onnx, OnnxSpec};
pub use graph::{Input, Output, Outputs};
pub use inspect::{Backend, Inspection, inspect, inspect_on};
pub use tensor::{DType, Data, ExternalFiles, Tensor, check_location};

use proto::ModelProto;

/// A decoded `.onnx` file, before herd builds its graph.
#[derive(Clone, Debug)]
pub struct OnnxFile {
    proto: ModelProto,
}

impl OnnxFile {
    /// Decodes the protobuf; a truncated or foreign file fails here.
    pub fn parse(bytes: &[u8]) -> Result<OnnxFile> {
        Ok(OnnxFile {
            proto: graph::decode(bytes)?,
        })
    }

    /// The external-data files the model's tensors read, by the locations
    /// written in the model (relative to the model file; each checked to
    /// stay beside it), sorted and distinct.
    pub fn external_files(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if let Some(g) = &self.proto.graph {
            for t in &g.initializer {
                out.extend(tensor::external_location(t)?);
            }
            for n in &g.node {
                for a in &n.attribute {
                    for t in a.t.iter().chain(&a.tensors) {
                        out.extend(tensor::external_location(t)?);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }
}

/// A loaded ONNX model, ready to score rows.
#[derive(Clone, Debug)]
pub struct OnnxModel {
    graph: graph::Graph,
    plan: plan::Plan,
    cost_per_row: u64,
}

impl OnnxModel {
    /// Builds herd's graph and plan of `file` computing `outputs`, reading
    /// external data from `files`. Fails on the first thing herd cannot
    /// run, naming the node, input, output or tensor.
    pub fn load(file: &OnnxFile, files: &ExternalFiles, outputs: &Outputs) -> Result<OnnxModel> {
        let graph = graph::import(&file.proto, files, outputs, graph::Mode::Load)?;
        if graph.inputs.is_empty() {
            return Err(Error::Graph(
                "the chosen outputs read no graph input: nothing in them depends on the rows"
                    .into(),
            ));
        }
        let plan = plan::plan(&graph);
        let cost_per_row = plan::cost_per_row(&graph);
        Ok(OnnxModel {
            graph,
            plan,
            cost_per_row,
        })
    }

    /// The graph inputs the chosen outputs read, in the file's order: feed
    /// them in this order.
    pub fn inputs(&self) -> &[Input] {
        &self.graph.inputs
    }

    /// The outputs computed, in the order asked for.
    pub fn outputs(&self) -> &[Output] {
        &self.graph.outputs
    }

    /// herd's graph (for the GPU path, which runs the same plan).
    pub(crate) fn graph(&self) -> &graph::Graph {
        &self.graph
    }

    /// The fast path's steps (the GPU path runs them too).
    pub(crate) fn plan(&self) -> &plan::Plan {
        &self.plan
    }

    /// Whether the graph defines missing (NaN) inputs: every node reading a
    /// graph input is an operator that scores NaN as missing (a tree
    /// ensemble, an Imputer). What follows it sees no input values.
    pub fn defines_missing(&self) -> bool {
        let inputs: Vec<graph::ValueId> = self.graph.inputs.iter().map(|i| i.value).collect();
        let mut readers = self
            .graph
            .nodes
            .iter()
            .filter(|n| n.inputs.iter().flatten().any(|v| inputs.contains(v)))
            .peekable();
        readers.peek().is_some()
            && readers.all(|n| matches!(&n.op, op::Op::Ml(m) if m.op.defines_missing()))
    }

    /// Whether the graph runs ai.onnx.ml operators on the rows.
    pub fn uses_ml(&self) -> bool {
        self.graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, op::Op::Ml(_)))
    }

    /// Multiply-adds to score one row, for planning chunks.
    pub fn cost_per_row(&self) -> u64 {
        self.cost_per_row
    }

    /// One line, e.g. `"onnx: x [N, 10] -> probabilities [N, 4], 3 steps (2 dense), 420 multiply-adds per row"`.
    pub fn describe(&self) -> String {
        let shape = |dims: &[usize]| {
            let mut s = vec!["N".to_string()];
            s.extend(dims.iter().map(usize::to_string));
            format!("[{}]", s.join(", "))
        };
        let ins: Vec<String> = self
            .inputs()
            .iter()
            .map(|i| format!("{} {}", i.name, shape(&i.dims)))
            .collect();
        let outs: Vec<String> = self
            .outputs()
            .iter()
            .map(|o| format!("{} {}", o.name, shape(&o.dims)))
            .collect();
        let dense = self
            .plan
            .steps
            .iter()
            .filter(|s| matches!(s.kernel, plan::Kernel::Dense(_)))
            .count();
        format!(
            "onnx: {} -> {}, {} steps ({dense} dense), {} multiply-adds per row",
            ins.join(", "),
            outs.join(", "),
            self.plan.steps.len(),
            self.cost_per_row
        )
    }

    /// Checks `feeds` against the inputs for `rows` rows.
    pub(crate) fn run_checks(
        &self,
        feeds: &[Feed<'_>],
        rows: usize,
    ) -> std::result::Result<(), RunError> {
        if feeds.len() != self.inputs().len() {
            return Err(RunError::Feed {
                input: self
                    .inputs()
                    .get(feeds.len())
                    .map_or("?", |i| i.name.as_str())
                    .to_string(),
                detail: format!(
                    "is not fed: the model reads {} inputs, {} were given",
                    self.inputs().len(),
                    feeds.len()
                ),
            });
        }
        for (input, feed) in self.inputs().iter().zip(feeds) {
            let per_row: usize = input.dims.iter().product();
            if feed.dtype() != input.dtype {
                return Err(RunError::Feed {
                    input: input.name.clone(),
                    detail: format!(
                        "is fed {} values, expected {}",
                        feed.dtype().name(),
                        input.dtype.name()
                    ),
                });
            }
            if feed.len() != rows * per_row {
                return Err(RunError::Feed {
                    input: input.name.clone(),
                    detail: format!("is fed {} values for {rows} rows of {per_row}", feed.len()),
                });
            }
        }
        Ok(())
    }

    /// Scores `rows` rows on this thread with the fast path: each output as
    /// `[rows] + dims`. Agrees with [`OnnxModel::run_reference`] within
    /// float rounding.
    pub fn run(
        &self,
        feeds: &[Feed<'_>],
        rows: usize,
    ) -> std::result::Result<Vec<Tensor>, RunError> {
        self.run_checks(feeds, rows)?;
        exec::run_fast(&self.graph, &self.plan, feeds, rows)
    }

    /// Scores `rows` rows node by node with plain loops: the result every
    /// backend must match.
    pub fn run_reference(
        &self,
        feeds: &[Feed<'_>],
        rows: usize,
    ) -> std::result::Result<Vec<Tensor>, RunError> {
        self.run_checks(feeds, rows)?;
        exec::run_reference(&self.graph, feeds, rows)
    }
}
