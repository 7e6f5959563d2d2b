//! Operator attributes as plain values, named and typed as the ONNX
//! operators define them, so that whoever parsed a node (the ONNX room, or a
//! test reading a JSON dump) builds an operator with one call.

use std::collections::BTreeMap;

use super::error::{Error, Result};

/// One attribute's value. Tensor attributes (`nodes_splits`,
/// `leaf_weights`, `*_as_tensor`, ...) arrive as their element list:
/// `Floats` for a float tensor, `Doubles` for a double tensor, `Ints` for
/// any integer tensor (the uint8 `nodes_modes` of TreeEnsemble included).
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Doubles(Vec<f64>),
    Strs(Vec<String>),
}

impl Attr {
    fn kind(&self) -> &'static str {
        match self {
            Attr::Int(_) => "an integer",
            Attr::Float(_) => "a float",
            Attr::Str(_) => "a string",
            Attr::Ints(_) => "a list of integers",
            Attr::Floats(_) => "a list of floats",
            Attr::Doubles(_) => "a list of doubles",
            Attr::Strs(_) => "a list of strings",
        }
    }
}

/// Real numbers from a float or a double attribute, kept at the precision
/// the model gave them.
#[derive(Clone, Debug, PartialEq)]
pub enum Reals {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Reals {
    pub fn len(&self) -> usize {
        match self {
            Reals::F32(v) => v.len(),
            Reals::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> f64 {
        match self {
            Reals::F32(v) => v[i] as f64,
            Reals::F64(v) => v[i],
        }
    }

    pub fn is_double(&self) -> bool {
        matches!(self, Reals::F64(_))
    }

    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// The attributes of one node, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs {
    map: BTreeMap<String, Attr>,
}

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    /// Sets `name` (a builder step).
    pub fn with(mut self, name: &str, value: Attr) -> Attrs {
        self.map.insert(name.to_string(), value);
        self
    }

    pub fn insert(&mut self, name: &str, value: Attr) {
        self.map.insert(name.to_string(), value);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Every attribute, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn wrong(name: &str, expected: &str, found: &Attr) -> Error {
        Error::attr(name, format!("is {}, expected {expected}", found.kind()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(Self::wrong(name, "an integer", a)),
        }
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(a) => Err(Self::wrong(name, "a float", a)),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<&str>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attr::Str(v)) => Ok(Some(v)),
            Some(a) => Err(Self::wrong(name, "a string", a)),
        }
    }

    /// An integer list; absent reads as empty.
    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        match self.map.get(name) {
            None => Ok(Vec::new()),
            Some(Attr::Ints(v)) => Ok(v.clone()),
            Some(a) => Err(Self::wrong(name, "a list of integers", a)),
        }
    }

    /// A float list; absent reads as empty.
    pub fn floats(&self, name: &str) -> Result<Vec<f32>> {
        match self.map.get(name) {
            None => Ok(Vec::new()),
            Some(Attr::Floats(v)) => Ok(v.clone()),
            Some(a) => Err(Self::wrong(name, "a list of floats", a)),
        }
    }

    /// A string list; absent reads as empty.
    pub fn strs(&self, name: &str) -> Result<Vec<String>> {
        match self.map.get(name) {
            None => Ok(Vec::new()),
            Some(Attr::Strs(v)) => Ok(v.clone()),
            Some(a) => Err(Self::wrong(name, "a list of strings", a)),
        }
    }

    /// Floats or doubles (a tensor attribute); absent reads as `None`.
    pub fn reals(&self, name: &str) -> Result<Option<Reals>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(Reals::F32(v.clone()))),
            Some(Attr::Doubles(v)) => Ok(Some(Reals::F64(v.clone()))),
            Some(a) => Err(Self::wrong(name, "a list of floats or doubles", a)),
        }
    }

    /// `name` as floats, or `name_as_tensor` (float or double); both given
    /// is an error, as neither says which wins.
    pub fn reals_or_tensor(&self, name: &str) -> Result<Option<Reals>> {
        let tensor = format!("{name}_as_tensor");
        match (self.map.contains_key(name), self.map.contains_key(&tensor)) {
            (true, true) => Err(Error::attr(
                name,
                format!("and '{tensor}' are both given; a model sets one of them"),
            )),
            (true, false) => Ok(Some(Reals::F32(self.floats(name)?))),
            (false, true) => self.reals(&tensor),
            (false, false) => Ok(None),
        }
    }
}
