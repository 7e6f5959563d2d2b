//! From the decoded file to herd's graph: opsets checked, the nodes an
//! output needs kept (so an unused branch with an operator herd lacks does
//! not stop a model), every value typed and shaped with the symbolic batch
//! dimension, constants folded.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::error::{Error, Result};
use super::infer::{self, Outcome, Val};
use super::op::{self, ML_DOMAIN, Op};
use super::proto::{
    DimensionValue, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
    data_type,
};
use super::tensor::{self, DType, ExternalFiles, MAX_RANK};

pub type ValueId = usize;

/// Which graph outputs to compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// A classifier's probabilities, else the only float output.
    Default,
    Named(Vec<String>),
    /// Every output (for tests and inspection).
    All,
}

/// A graph input the kept nodes read: `[N] + dims` of `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub value: ValueId,
    pub dtype: DType,
    /// The element type the file declares (int32 inputs are fed as int32
    /// by other runtimes; herd widens them).
    pub onnx_type: i32,
    pub dims: Vec<usize>,
}

/// A computed graph output, `[N] + dims` of `dtype` per block of rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub value: ValueId,
    pub dtype: DType,
    pub onnx_type: i32,
    pub dims: Vec<usize>,
}

/// A node herd kept, with its operator read and its outcome known.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Position in the file's node list.
    pub index: usize,
    /// `node 'NAME' (OP)`, or `node #INDEX (OP, output 'V')` when unnamed.
    pub label: String,
    pub op: Op,
    pub inputs: Vec<Option<ValueId>>,
    pub output: ValueId,
    pub outcome: Outcome,
}

/// What is known of a value.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Known(Val),
    /// Downstream of a node herd does not run (or, when inspecting, of a
    /// problem already recorded).
    Unknown,
    /// An extra output of a node that herd does not compute (why).
    Unavailable(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub state: State,
}

/// A node herd does not run, for errors and inspection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unsupported {
    pub node: String,
    pub op: String,
    pub domain: String,
}

/// herd's graph of one model.
#[derive(Clone, Debug)]
pub struct Graph {
    pub values: Vec<Value>,
    /// Kept nodes, in the file's (topological) order.
    pub nodes: Vec<Node>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// The default domain's opset.
    pub opset: i64,
    /// Every node of the file, by operator (domain-qualified outside the
    /// default domain), for inspection.
    pub op_counts: BTreeMap<String, usize>,
    /// Nodes whose operator herd does not run (only when inspecting: a
    /// load fails on the first of them instead).
    pub unsupported: Vec<Unsupported>,
    /// Problems found while inspecting (a load fails on them instead).
    pub problems: Vec<String>,
}

impl Graph {
    /// The known value of `id`.
    pub fn val(&self, id: ValueId) -> &Val {
        match &self.values[id].state {
            State::Known(v) => v,
            State::Unknown | State::Unavailable(_) => {
                panic!("value '{}' is unknown", self.values[id].name)
            }
        }
    }
}

/// Whether a load stops at the first problem or an inspection collects them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Load,
    Inspect,
}

pub fn decode(bytes: &[u8]) -> Result<ModelProto> {
    use prost::Message;
    if bytes.is_empty() {
        return Err(Error::Decode("the file is empty".into()));
    }
    ModelProto::decode(bytes).map_err(|e| Error::Decode(e.to_string()))
}

fn label(index: usize, n: &NodeProto) -> String {
    let op = if n.domain.is_empty() || n.domain == "ai.onnx" {
        n.op_type.clone()
    } else {
        format!("{}.{}", n.domain, n.op_type)
    };
    if n.name.is_empty() {
        let out = n
            .output
            .first()
            .map_or(String::new(), |o| format!(", output '{o}'"));
        format!("node #{index} ({op}{out})")
    } else {
        format!("node '{}' ({op})", n.name)
    }
}

/// The default domain's opset, checked.
pub fn default_opset(model: &ModelProto) -> Result<i64> {
    let mut found = None;
    for o in &model.opset_import {
        match o.domain.as_str() {
            "" | "ai.onnx" => found = Some(o.version),
            ML_DOMAIN => {}
            _ => {}
        }
    }
    // A graph of ai.onnx.ml nodes alone (onnxmltools' tree exports import
    // the default domain at opset 9) reads none of its operators.
    let default_nodes = model.graph.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| n.domain.is_empty() || n.domain == "ai.onnx")
    });
    if !default_nodes {
        return Ok(found
            .unwrap_or(op::MAX_OPSET)
            .clamp(op::MIN_OPSET, op::MAX_OPSET));
    }
    let version = found.ok_or_else(|| {
        Error::Graph("the model imports no opset of the default ONNX domain".into())
    })?;
    // onnxmltools writes opset 8 or 9 around its tree ensembles: the few
    // operators it uses there mean at opset 7 what they mean at 13 (their
    // versions from opset 7 on changed only types they do not see: Cast
    // gained strings, the arithmetic gained integer types), so only beside
    // ai.onnx.ml nodes they are read as at 13; a network at an older opset
    // is refused.
    let same_since_7 = |op: &str| {
        matches!(
            op,
            "Identity" | "Cast" | "Mul" | "Add" | "Sub" | "Div" | "Relu" | "Sigmoid" | "Tanh"
        )
    };
    let only_stable = model.graph.as_ref().is_some_and(|g| {
        g.node.iter().any(|n| n.domain == ML_DOMAIN)
            && g.node
                .iter()
                .filter(|n| n.domain.is_empty() || n.domain == "ai.onnx")
                .all(|n| same_since_7(&n.op_type))
    });
    if (7..op::MIN_OPSET).contains(&version) && only_stable {
        return Ok(op::MIN_OPSET);
    }
    if !(op::MIN_OPSET..=op::MAX_OPSET).contains(&version) {
        return Err(Error::Opset {
            domain: "the default domain".into(),
            version,
        });
    }
    Ok(version)
}

/// The declared type of a graph input or output, as (element type, dims);
/// `None` dims: unknown rank. Non-tensor types are errors.
fn tensor_type(info: &ValueInfoProto) -> std::result::Result<(i32, Option<Vec<Decl>>), String> {
    let t = info.r#type.as_ref().ok_or("has no type")?;
    let Some(tt) = &t.tensor_type else {
        return Err(format!("is a {}, not a tensor", kind_of(t)));
    };
    let dims = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(DimensionValue::DimValue(v)) => Decl::Size(*v),
                Some(DimensionValue::DimParam(p)) => Decl::Named(p.clone()),
                None => Decl::Unknown,
            })
            .collect()
    });
    Ok((tt.elem_type, dims))
}

fn kind_of(t: &TypeProto) -> &'static str {
    if t.sequence_type.is_some() {
        "sequence (such as a ZipMap's list of maps)"
    } else if t.map_type.is_some() {
        "map"
    } else {
        "non-tensor value"
    }
}

/// A declared dimension.
#[derive(Clone, Debug, PartialEq)]
enum Decl {
    Size(i64),
    Named(String),
    Unknown,
}

/// Checks a graph input's declaration: a tensor of a type herd computes,
/// the first dimension the batch (named or unknown), the others fixed.
pub fn check_input(info: &ValueInfoProto) -> std::result::Result<(i32, DType, Vec<usize>), String> {
    let (elem, dims) = tensor_type(info)?;
    let dtype = DType::from_onnx(elem).ok_or_else(|| {
        format!(
            "is {}; herd feeds float32 and integer inputs (export the model with float32 inputs)",
            data_type::name(elem)
        )
    })?;
    let dims = dims.ok_or(
        "has no declared shape; herd needs [batch, d1, ...] with every dimension but the first fixed",
    )?;
    if dims.is_empty() {
        return Err("is a scalar; herd needs a batch dimension first".into());
    }
    if dims.len() > MAX_RANK {
        return Err(format!(
            "has {} dimensions; herd handles at most {MAX_RANK}",
            dims.len()
        ));
    }
    if let Decl::Size(k) = dims[0] {
        return Err(format!(
            "has a fixed first dimension of {k}; herd needs the first dimension to be the batch \
             (a named or unknown size): export with a dynamic batch axis"
        ));
    }
    let mut rest = Vec::with_capacity(dims.len() - 1);
    for (i, d) in dims.iter().enumerate().skip(1) {
        match d {
            Decl::Size(k) if *k > 0 => rest.push(*k as usize),
            Decl::Size(k) => return Err(format!("has dimension {i} of size {k}")),
            Decl::Named(p) => {
                return Err(format!(
                    "has a dynamic dimension {i} ('{p}'); herd needs every dimension but the \
                     first (the batch) fixed"
                ));
            }
            Decl::Unknown => {
                return Err(format!(
                    "has a dynamic dimension {i} (no size); herd needs every dimension but the \
                     first (the batch) fixed"
                ));
            }
        }
    }
    if tensor::checked_elements(&rest, infer::MAX_ROW_ELEMENTS).is_none() {
        return Err(format!(
            "holds more than herd's limit of {} values per row",
            infer::MAX_ROW_ELEMENTS
        ));
    }
    Ok((elem, dtype, rest))
}

/// The outputs to compute, by name.
fn choose_outputs(graph: &GraphProto, outputs: &Outputs) -> Result<Vec<String>> {
    let declared: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    match outputs {
        Outputs::All => Ok(declared.iter().map(|s| s.to_string()).collect()),
        Outputs::Named(names) => {
            for n in names {
                if !declared.contains(&n.as_str()) {
                    return Err(Error::Output {
                        output: n.clone(),
                        detail: format!(
                            "is not an output of the graph; its outputs are {}",
                            quoted(&declared)
                        ),
                    });
                }
            }
            Ok(names.clone())
        }
        Outputs::Default => {
            // A classifier's probabilities count as a float output, whether
            // a tensor or ZipMap's maps of them.
            let zipmap = |name: &str| {
                graph.node.iter().any(|n| {
                    n.domain == ML_DOMAIN
                        && n.op_type == "ZipMap"
                        && n.output.first().is_some_and(|o| o == name)
                })
            };
            let floats: Vec<&str> = graph
                .output
                .iter()
                .filter(|o| matches!(tensor_type(o), Ok((data_type::FLOAT, _))) || zipmap(&o.name))
                .map(|o| o.name.as_str())
                .collect();
            match floats.as_slice() {
                [one] => Ok(vec![one.to_string()]),
                // A single output of another type: the load says what is
                // wrong with it (or with the inputs before it).
                [] if declared.len() == 1 => Ok(vec![declared[0].to_string()]),
                [] => Err(Error::Graph(format!(
                    "the graph has no float tensor output to store (its outputs are {}); choose \
                     one with output = \"NAME\" in [model]",
                    quoted(&declared)
                ))),
                many => {
                    if let Some(p) = many
                        .iter()
                        .find(|n| **n == "probabilities" || **n == "output_probability")
                    {
                        return Ok(vec![p.to_string()]);
                    }
                    Err(Error::Graph(format!(
                        "the graph has several float outputs ({}); choose the one to store with \
                         output = \"NAME\" in [model]",
                        quoted(many)
                    )))
                }
            }
        }
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds herd's graph of `model` computing `outputs`.
pub fn import(
    model: &ModelProto,
    files: &ExternalFiles,
    outputs: &Outputs,
    mode: Mode,
) -> Result<Graph> {
    let opset = default_opset(model)?;
    let graph = model.graph.as_ref().ok_or(Error::NoGraph)?;
    if let Some(s) = graph.sparse_initializer.first() {
        let name = s.values.as_ref().map_or("", |v| v.name.as_str());
        return Err(Error::Tensor {
            tensor: name.to_string(),
            detail: "is a sparse initializer; herd has no sparse tensors".into(),
        });
    }
    let chosen = choose_outputs(graph, outputs)?;

    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let declared_inputs: HashMap<&str, &ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains_key(i.name.as_str()))
        .map(|i| (i.name.as_str(), i))
        .collect();

    let producer = producers(graph, &initializers, &declared_inputs, &chosen)?;
    let needed = needed_nodes(graph, &producer, &chosen);
    let op_counts = op_counts(graph);

    // Every value something kept reads: an ai.onnx.ml node computes those
    // of its outputs only (a classifier's labels are seldom read).
    let mut used: HashSet<&str> = chosen.iter().map(String::as_str).collect();
    for (i, n) in graph.node.iter().enumerate() {
        if needed[i] {
            used.extend(n.input.iter().map(String::as_str));
        }
    }
    let zipmaps: HashSet<&str> = graph
        .node
        .iter()
        .filter(|n| n.domain == ML_DOMAIN && n.op_type == "ZipMap")
        .filter_map(|n| n.output.first().map(String::as_str))
        .collect();

    let mut b = Builder {
        files,
        mode,
        values: Vec::new(),
        ids: HashMap::new(),
        inputs: Vec::new(),
        initializers,
        declared_inputs,
        unsupported: Vec::new(),
        problems: Vec::new(),
    };
    let mut nodes = Vec::new();
    for (i, n) in graph.node.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        if n.domain == ML_DOMAIN && n.output.len() > 1 {
            for (port, out) in n.output.iter().enumerate() {
                if !out.is_empty() && used.contains(out.as_str()) {
                    if let Some(node) = b.node(i, n, opset, port)? {
                        nodes.push(node);
                    }
                }
            }
        } else if let Some(node) = b.node(i, n, opset, 0)? {
            nodes.push(node);
        }
    }
    if mode == Mode::Load && !b.unsupported.is_empty() {
        return Err(Error::Unsupported {
            nodes: b.unsupported.iter().map(|u| u.node.clone()).collect(),
        });
    }

    let mut outs = Vec::new();
    for name in &chosen {
        let id = b.value(name)?;
        // ZipMap's maps are stored as the probability tensor they hold.
        let declared = graph
            .output
            .iter()
            .find(|o| &o.name == name)
            .filter(|_| !zipmaps.contains(name.as_str()));
        match b.output(name, id, declared) {
            Ok(Some(o)) => outs.push(o),
            Ok(None) => {}
            Err(e) if mode == Mode::Inspect => b.problems.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    // Inputs in the file's order, whatever order the nodes read them in.
    let position = |name: &str| graph.input.iter().position(|i| i.name == name);
    b.inputs.sort_by_key(|i| position(&i.name));
    Ok(Graph {
        values: b.values,
        nodes,
        inputs: b.inputs,
        outputs: outs,
        opset,
        op_counts,
        unsupported: b.unsupported,
        problems: b.problems,
    })
}

/// Which node defines each value, checking that every value is defined
/// once, before it is read, and that every chosen output is defined.
fn producers<'a>(
    graph: &'a GraphProto,
    initializers: &HashMap<&str, &TensorProto>,
    declared_inputs: &HashMap<&str, &ValueInfoProto>,
    chosen: &[String],
) -> Result<HashMap<&'a str, usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            let known = producer.contains_key(input.as_str())
                || initializers.contains_key(input.as_str())
                || declared_inputs.contains_key(input.as_str());
            if !known {
                return Err(Error::Graph(format!(
                    "{} reads '{input}', which no earlier node, graph input or initializer \
                     defines (nodes must be in topological order)",
                    label(i, n)
                )));
            }
        }
        for out in n.output.iter().filter(|s| !s.is_empty()) {
            let clash = initializers.contains_key(out.as_str())
                || declared_inputs.contains_key(out.as_str());
            if clash || producer.insert(out.as_str(), i).is_some() {
                return Err(Error::Graph(format!(
                    "{} defines '{out}', which is already defined",
                    label(i, n)
                )));
            }
        }
    }
    for name in chosen {
        let defined = producer.contains_key(name.as_str())
            || initializers.contains_key(name.as_str())
            || declared_inputs.contains_key(name.as_str());
        if !defined {
            return Err(Error::Output {
                output: name.clone(),
                detail: "is not defined by any node, graph input or initializer".into(),
            });
        }
    }
    Ok(producer)
}

/// The nodes the chosen outputs need, by index.
fn needed_nodes(
    graph: &GraphProto,
    producer: &HashMap<&str, usize>,
    chosen: &[String],
) -> Vec<bool> {
    let mut needed = vec![false; graph.node.len()];
    let mut stack: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if let Some(&i) = producer.get(v) {
            if !needed[i] {
                needed[i] = true;
                stack.extend(
                    graph.node[i]
                        .input
                        .iter()
                        .filter(|s| !s.is_empty())
                        .map(String::as_str),
                );
            }
        }
    }
    needed
}

/// Nodes by operator (domain-qualified outside the default domain).
fn op_counts(graph: &GraphProto) -> BTreeMap<String, usize> {
    let mut op_counts = BTreeMap::new();
    for n in &graph.node {
        let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
            n.op_type.clone()
        } else {
            format!("{}.{}", n.domain, n.op_type)
        };
        *op_counts.entry(key).or_insert(0) += 1;
    }
    op_counts
}

struct Builder<'a> {
    files: &'a ExternalFiles,
    mode: Mode,
    values: Vec<Value>,
    ids: HashMap<String, ValueId>,
    inputs: Vec<Input>,
    initializers: HashMap<&'a str, &'a TensorProto>,
    declared_inputs: HashMap<&'a str, &'a ValueInfoProto>,
    unsupported: Vec<Unsupported>,
    problems: Vec<String>,
}

impl Builder<'_> {
    fn push(&mut self, name: &str, state: State) -> ValueId {
        let id = self.values.len();
        self.values.push(Value {
            name: name.to_string(),
            state,
        });
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The value named `name`, creating graph inputs and initializers on
    /// first use.
    fn value(&mut self, name: &str) -> Result<ValueId> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        if let Some(t) = self.initializers.get(name) {
            let t = tensor::from_proto(t, self.files)?;
            return Ok(self.push(name, State::Known(Val::Const(t))));
        }
        if let Some(info) = self.declared_inputs.get(name) {
            return match check_input(info) {
                Ok((onnx_type, dtype, dims)) => {
                    let id = self.push(
                        name,
                        State::Known(Val::Rows {
                            dtype,
                            dims: dims.clone(),
                        }),
                    );
                    self.inputs.push(Input {
                        name: name.to_string(),
                        value: id,
                        dtype,
                        onnx_type,
                        dims,
                    });
                    Ok(id)
                }
                Err(detail) => {
                    let e = Error::Input {
                        input: name.to_string(),
                        detail,
                    };
                    if self.mode == Mode::Load {
                        return Err(e);
                    }
                    self.problems.push(e.to_string());
                    Ok(self.push(name, State::Unknown))
                }
            };
        }
        // An output of a node that was not kept or produced nothing.
        Ok(self.push(name, State::Unknown))
    }

    /// Node `n`, computing its output `port` (0 but for ai.onnx.ml nodes
    /// with several outputs, which get a node per output read).
    fn node(
        &mut self,
        index: usize,
        n: &NodeProto,
        opset: i64,
        port: usize,
    ) -> Result<Option<Node>> {
        let label = label(index, n);
        let mut inputs = Vec::with_capacity(n.input.len());
        for i in &n.input {
            inputs.push(if i.is_empty() {
                None
            } else {
                Some(self.value(i)?)
            });
        }
        let out_name = n
            .output
            .get(port)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::Graph(format!("{label} has no output")))?;
        let ml = n.domain == ML_DOMAIN;
        // Outputs past the first (LayerNormalization's mean and inverse
        // deviation, BatchNormalization's training statistics): unknown, so
        // a node reading them fails by name. (An ai.onnx.ml node's are its
        // own nodes.)
        for (k, extra) in n.output.iter().enumerate().skip(1) {
            if !extra.is_empty() && !ml {
                let why = format!(
                    "output {} '{extra}' of {label}, which herd does not compute",
                    k + 1
                );
                self.push(extra, State::Unavailable(why));
            }
        }
        let parsed = op::parse(n, opset, &label, self.files);
        let op = match parsed {
            Ok(Some(Op::Ml(mut m))) => {
                let ports = if m.op.has_labels() { 2 } else { 1 };
                if port >= ports {
                    let e = Error::Node {
                        node: label.clone(),
                        detail: format!(
                            "has output {} '{out_name}', which herd does not compute",
                            port + 1
                        ),
                    };
                    return self.fail(e, out_name);
                }
                m.port = port;
                Op::Ml(m)
            }
            Ok(Some(op)) => op,
            Ok(None) => {
                self.unsupported.push(Unsupported {
                    node: label.clone(),
                    op: n.op_type.clone(),
                    domain: n.domain.clone(),
                });
                self.push(out_name, State::Unknown);
                return Ok(None);
            }
            Err(e) => return self.fail(e, out_name),
        };
        let mut vals = Vec::with_capacity(inputs.len());
        for (slot, id) in inputs.iter().enumerate() {
            match id {
                None => vals.push(None),
                Some(id) => match &self.values[*id].state {
                    State::Known(v) => vals.push(Some(v.clone())),
                    // The unsupported node upstream is what gets reported.
                    State::Unknown => {
                        self.push(out_name, State::Unknown);
                        return Ok(None);
                    }
                    State::Unavailable(why) => {
                        let e = Error::Node {
                            node: label.clone(),
                            detail: format!("its input {} is {why}", slot + 1),
                        };
                        return self.fail(e, out_name);
                    }
                },
            }
        }
        let refs: Vec<Option<&Val>> = vals.iter().map(Option::as_ref).collect();
        match infer::infer(&op, &refs, &label) {
            Ok((val, outcome)) => {
                let output = self.push(out_name, State::Known(val));
                Ok(Some(Node {
                    index,
                    label,
                    op,
                    inputs,
                    output,
                    outcome,
                }))
            }
            Err(e) => self.fail(e, out_name),
        }
    }

    /// Records a node's problem when inspecting (its output becomes
    /// unknown), or fails the load.
    fn fail(&mut self, e: Error, out_name: &str) -> Result<Option<Node>> {
        if self.mode == Mode::Load {
            return Err(e);
        }
        self.problems.push(e.to_string());
        self.push(out_name, State::Unknown);
        Ok(None)
    }

    fn output(
        &mut self,
        name: &str,
        id: ValueId,
        declared: Option<&ValueInfoProto>,
    ) -> Result<Option<Output>> {
        let out_err = |detail: String| Error::Output {
            output: name.to_string(),
            detail,
        };
        let val = match &self.values[id].state {
            State::Known(v) => v.clone(),
            State::Unknown => return Ok(None),
            State::Unavailable(why) => return Err(out_err(format!("is {why}"))),
        };
        let onnx_type = match declared.map(tensor_type) {
            Some(Ok((t, _))) => t,
            Some(Err(detail)) => return Err(out_err(detail)),
            None => 0,
        };
        let Val::Rows { dtype, dims } = val else {
            return Err(out_err(
                "does not depend on the input rows (it is a constant); herd stores one \
                 prediction per row"
                    .into(),
            ));
        };
        if onnx_type != 0 && DType::from_onnx(onnx_type) != Some(dtype) {
            return Err(out_err(format!(
                "is declared {} but computes as {}",
                data_type::name(onnx_type),
                dtype.name()
            )));
        }
        let onnx_type = if onnx_type == 0 {
            match dtype {
                DType::F32 => data_type::FLOAT,
                DType::I64 => data_type::INT64,
            }
        } else {
            onnx_type
        };
        Ok(Some(Output {
            name: name.to_string(),
            value: id,
            dtype,
            onnx_type,
            dims,
        }))
    }
}
