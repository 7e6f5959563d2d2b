//! `herd model inspect`: what a model file holds and how herd would run it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::OnnxFile;
use super::error::Result;
use super::graph::{self, Graph, Mode, Outputs, Unsupported};
use super::infer::Outcome;
use super::plan::{self, Kernel, Plan};
use super::proto::{DimensionValue, ValueInfoProto, data_type};
use super::tensor::ExternalFiles;

/// The native CPU path, which runs every step herd plans.
const CPU: &str = "cpu";

/// A backend besides the native CPU path, as `herd model inspect` asks it
/// about each plan step: its name and why it cannot run a step (`None`: it
/// can). The GPU room answers for `wgpu`; the model room asks.
pub struct Backend<'a> {
    pub name: &'static str,
    pub refuses: &'a dyn Fn(&Graph, &Kernel) -> Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

/// A graph input or output as the file declares it.
#[derive(Clone, Debug, Serialize)]
pub struct ValueDesc {
    pub name: String,
    pub dtype: String,
    /// `"N"` for the batch, a name or `"?"` for other dynamic dimensions.
    pub shape: Vec<String>,
    /// Why herd cannot feed or store it, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One step of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct StepDesc {
    /// `dense` for a fused chain, else the operator.
    pub kernel: String,
    /// E.g. `64->256 +bias relu`.
    pub detail: String,
    /// The graph nodes the step computes.
    pub nodes: Vec<String>,
    /// The backends that run it (`cpu` always).
    pub backends: Vec<String>,
    /// Why each other backend does not, as `BACKEND: why`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// Everything `herd model inspect` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub ir_version: i64,
    pub producer: String,
    pub opsets: Vec<Opset>,
    pub inputs: Vec<ValueDesc>,
    pub outputs: Vec<ValueDesc>,
    /// The output herd stores by default, when there is one.
    pub stored_output: Option<String>,
    /// Nodes by operator (domain-qualified outside the default domain).
    pub ops: BTreeMap<String, usize>,
    /// The fast path's steps for the stored output (or for every output
    /// herd can compute, when the model does not load).
    pub plan: Vec<StepDesc>,
    /// Nodes computed once at load.
    pub folded: Vec<String>,
    /// Multiply-adds per row of the plan shown, as chunk planning uses them.
    pub cost_per_row: u64,
    /// The backends that run every step of the plan (`cpu` always).
    pub backends: Vec<String>,
    /// Every step a backend refuses, as `BACKEND: why` naming the node: on
    /// that backend the model falls back to the native CPU path (`device =
    /// "auto"` does; a device set to that backend fails).
    pub falls_back: Vec<String>,
    pub unsupported: Vec<Unsupported>,
    /// Why the model would not load, if it would not.
    pub problems: Vec<String>,
    /// Whether `kind = "onnx"` runs it with the default output.
    pub runnable: bool,
}

fn shape_of(info: &ValueInfoProto) -> (String, Vec<String>) {
    let Some(t) = info.r#type.as_ref() else {
        return ("?".into(), Vec::new());
    };
    let Some(tt) = &t.tensor_type else {
        return ("non-tensor".into(), Vec::new());
    };
    let dims = tt.shape.as_ref().map_or_else(Vec::new, |s| {
        s.dim
            .iter()
            .enumerate()
            .map(|(i, d)| match &d.value {
                Some(DimensionValue::DimValue(v)) => v.to_string(),
                Some(DimensionValue::DimParam(_)) | None if i == 0 => "N".into(),
                Some(DimensionValue::DimParam(p)) => p.clone(),
                None => "?".into(),
            })
            .collect()
    });
    (data_type::name(tt.elem_type), dims)
}

fn steps(graph: &Graph, plan: &Plan, others: &[Backend<'_>]) -> Vec<StepDesc> {
    plan.steps
        .iter()
        .map(|s| {
            let nodes = s
                .nodes
                .iter()
                .map(|&i| graph.nodes[i].label.clone())
                .collect();
            let (kernel, detail) = match &s.kernel {
                Kernel::Dense(d) => {
                    let mut detail = format!("{}->{}", d.layer.in_dim, d.layer.out_dim);
                    if d.layer.bias.iter().any(|&b| b != 0.0) {
                        detail.push_str(" +bias");
                    }
                    for e in &d.epilogue {
                        detail.push(' ');
                        detail.push_str(&e.describe());
                    }
                    ("dense".to_string(), detail)
                }
                Kernel::Node(i) => match &graph.nodes[*i].op {
                    super::op::Op::Ml(m) => (m.name.to_string(), ml_detail(m)),
                    op => (op.onnx_name().to_string(), String::new()),
                },
            };
            let mut backends = vec![CPU.to_string()];
            let mut refused = Vec::new();
            for b in others {
                match (b.refuses)(graph, &s.kernel) {
                    None => backends.push(b.name.to_string()),
                    Some(why) => refused.push(format!("{}: {why}", b.name)),
                }
            }
            StepDesc {
                kernel,
                detail,
                nodes,
                backends,
                refused,
            }
        })
        .collect()
}

/// What an ai.onnx.ml step computes: for a tree ensemble its trees, depth,
/// layout and node visits per row.
fn ml_detail(m: &super::op::MlNode) -> String {
    use crate::model::trees::MlOp;
    let what = if m.is_labels() { "labels" } else { "scores" };
    match &*m.op {
        MlOp::Trees(t) => {
            let e = &t.ensemble;
            let deepest = e.depths.iter().max().copied().unwrap_or(0);
            let layout = match t.fast.name() {
                "perfect" => format!("perfect layout ({})", crate::model::trees::fast::isa_name()),
                other => format!("{other} layout"),
            };
            format!(
                "{what}: {} trees, deepest path {deepest} nodes, {} targets, {layout}, {} node \
                 visits per row",
                e.n_trees(),
                e.n_targets,
                e.cost_per_row()
            )
        }
        MlOp::LinearClassifier(_) | MlOp::LinearRegressor(_) => what.to_string(),
        _ => String::new(),
    }
}

/// Inspects `file`: declared inputs and outputs, the operators, and the
/// plan. Fails only when there is no graph to look at (an opset herd does
/// not run, an unreadable tensor); what keeps the model from loading is in
/// `problems` and `unsupported`.
pub fn inspect(file: &OnnxFile, files: &ExternalFiles) -> Result<Inspection> {
    inspect_on(file, files, &[])
}

/// [`inspect`], asking `others` (backends besides the native CPU path)
/// which steps they run.
pub fn inspect_on(
    file: &OnnxFile,
    files: &ExternalFiles,
    others: &[Backend<'_>],
) -> Result<Inspection> {
    let proto = file.proto();
    let everything = graph::import(proto, files, &Outputs::All, Mode::Inspect)?;
    let loaded = graph::import(proto, files, &Outputs::Default, Mode::Load);
    let g = proto.graph.as_ref().expect("import checked the graph");
    let initializers: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .map(|i| {
            let (dtype, shape) = shape_of(i);
            ValueDesc {
                name: i.name.clone(),
                dtype,
                shape,
                problem: graph::check_input(i).err(),
            }
        })
        .collect();
    let mut problems = everything.problems.clone();
    let (plan_graph, stored_output, runnable) = match loaded {
        Ok(g) => {
            let name = g.outputs.first().map(|o| o.name.clone());
            (g, name, true)
        }
        Err(e) => {
            let msg = e.to_string();
            if !problems.contains(&msg) {
                problems.insert(0, msg);
            }
            (everything.clone(), None, false)
        }
    };
    let computed: Vec<&str> = everything.outputs.iter().map(|o| o.name.as_str()).collect();
    let outputs = g
        .output
        .iter()
        .map(|o| {
            let (dtype, shape) = shape_of(o);
            let problem = (!computed.contains(&o.name.as_str()))
                .then(|| "herd cannot compute it (see problems)".to_string());
            ValueDesc {
                name: o.name.clone(),
                dtype,
                shape,
                problem,
            }
        })
        .collect();
    let plan = plan::plan(&plan_graph);
    let plan = steps(&plan_graph, &plan, others);
    let falls_back: Vec<String> = plan.iter().flat_map(|s| s.refused.clone()).collect();
    let mut backends = vec![CPU.to_string()];
    for b in others {
        let prefix = format!("{}: ", b.name);
        if !falls_back.iter().any(|r| r.starts_with(&prefix)) {
            backends.push(b.name.to_string());
        }
    }
    Ok(Inspection {
        ir_version: proto.ir_version,
        producer: format!("{} {}", proto.producer_name, proto.producer_version)
            .trim()
            .to_string(),
        opsets: proto
            .opset_import
            .iter()
            .map(|o| Opset {
                domain: if o.domain.is_empty() {
                    "ai.onnx".into()
                } else {
                    o.domain.clone()
                },
                version: o.version,
            })
            .collect(),
        inputs,
        outputs,
        stored_output,
        ops: everything.op_counts.clone(),
        plan,
        folded: plan_graph
            .nodes
            .iter()
            .filter(|n| n.outcome == Outcome::Folded)
            .map(|n| n.label.clone())
            .collect(),
        cost_per_row: plan::cost_per_row(&plan_graph),
        backends,
        falls_back,
        unsupported: everything.unsupported,
        problems,
        runnable,
    })
}

impl Inspection {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let shape = |v: &ValueDesc| format!("[{}]", v.shape.join(", "));
        let opsets: Vec<String> = self
            .opsets
            .iter()
            .map(|o| format!("{} {}", o.domain, o.version))
            .collect();
        let _ = writeln!(
            s,
            "ONNX IR {}, {}, opsets: {}",
            self.ir_version,
            if self.producer.is_empty() {
                "unknown producer"
            } else {
                &self.producer
            },
            opsets.join(", ")
        );
        let _ = writeln!(s, "inputs:");
        for i in &self.inputs {
            let _ = write!(s, "  {} {} {}", i.name, i.dtype, shape(i));
            if let Some(p) = &i.problem {
                let _ = write!(s, "  !! {p}");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "outputs:");
        for o in &self.outputs {
            let stored = if self.stored_output.as_deref() == Some(o.name.as_str()) {
                "  (stored by default)"
            } else {
                ""
            };
            let _ = write!(s, "  {} {} {}{stored}", o.name, o.dtype, shape(o));
            if let Some(p) = &o.problem {
                let _ = write!(s, "  !! {p}");
            }
            s.push('\n');
        }
        let ops: Vec<String> = self.ops.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        let _ = writeln!(s, "operators: {}", ops.join(", "));
        if !self.folded.is_empty() {
            let _ = writeln!(s, "folded at load: {}", self.folded.join(", "));
        }
        let _ = writeln!(s, "plan ({} steps):", self.plan.len());
        for (i, step) in self.plan.iter().enumerate() {
            let detail = if step.detail.is_empty() {
                String::new()
            } else {
                format!(" {}", step.detail)
            };
            let _ = writeln!(
                s,
                "  {:>3}. {}{detail}  [{}]  <- {}",
                i + 1,
                step.kernel,
                step.backends.join(", "),
                step.nodes.join(", ")
            );
        }
        let trees = self.plan.iter().any(|p| p.detail.contains("node visits"));
        let _ = writeln!(
            s,
            "cost per row: {} {}{}",
            self.cost_per_row,
            if trees {
                "(tree node visits plus multiply-adds)"
            } else {
                "multiply-adds"
            },
            if self.runnable {
                ""
            } else {
                " (of every output herd can compute)"
            }
        );
        let _ = writeln!(s, "backends: {}", self.backends.join(", "));
        for f in &self.falls_back {
            let _ = writeln!(
                s,
                "  falls back to the native CPU path on {f} (device = \"auto\" scores on \
                 the CPU; a device set to it fails)"
            );
        }
        if !self.unsupported.is_empty() {
            let _ = writeln!(s, "unsupported operators:");
            for u in &self.unsupported {
                let _ = writeln!(s, "  {}", u.node);
            }
        }
        if self.runnable {
            let _ = writeln!(s, "runs with kind = \"onnx\"");
        } else {
            let _ = writeln!(s, "does not run:");
            for p in &self.problems {
                let _ = writeln!(s, "  {p}");
            }
        }
        s
    }
}
