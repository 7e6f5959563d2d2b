//! From the raw TOML structs to the settings the rest of herd uses.
//!
//! This is where the rules that serde cannot express live: ranges, the names
//! of enumeration values, keys that belong to one model or host kind only,
//! rules between tables (a two_tower model needs a history column) and between
//! entries (host names are unique). Every error names the file, line and
//! column of the offending value, quotes it in single quotes and says what was
//! expected.
//!
//! Paths are joined to the folder of the file that names them, lexically:
//! nothing is canonicalised and nothing is checked for existence (the caller
//! does that, with the file system). A path starting with `~/` is kept as
//! written; the caller expands it against the user's home folder (the fleet
//! does so for `identity` and `known_hosts`).
//!
//! Pure: no file system, no clock, no environment.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw;
use super::{
    Device, Error, Fleet, Generate, GenerateKind, Host, Input, Job, Model, Output, Partition,
    Result, SshHost, Stragglers, Transport, Trust, Validate,
};
use crate::model::{ModelSpec, OutputActivation};

/// The fleet file of a job that names none, relative to the job file (jobs
/// live in `jobs/`, `hosts.toml` at the top of the project).
pub const DEFAULT_HOSTS: &str = "../hosts.toml";
/// Longest job or host name, in characters.
pub const MAX_NAME_LEN: usize = 128;
/// Longest `model_version`, in characters.
pub const MAX_MODEL_VERSION_LEN: usize = 256;
pub const DEFAULT_TOP_K: i64 = 100;
/// Largest `top_k`: every prediction holds K (item, score) pairs.
pub const MAX_TOP_K: i64 = 10_000;
pub const DEFAULT_MAX_HISTORY: i64 = 500;
/// Largest `max_history` (the per-entity work cap itself needs a bound).
pub const MAX_MAX_HISTORY: i64 = 1_000_000;
pub const DEFAULT_MAX_ATTEMPTS: i64 = 4;
pub const MAX_MAX_ATTEMPTS: i64 = 100;
/// The ttl of a job that names none: 7 days ("7d").
pub const DEFAULT_TTL_SECS: u64 = 7 * 86_400;
/// Longest ttl: 100 years, in seconds.
pub const MAX_TTL_SECS: u64 = 100 * 365 * 86_400;
pub const DEFAULT_KEEP_VERSIONS: i64 = 5;
/// Fewest versions kept: the live one and the one before it (for a roll back).
pub const MIN_KEEP_VERSIONS: i64 = 2;
pub const MAX_KEEP_VERSIONS: i64 = 1_000;
pub const DEFAULT_SPOT_CHECK: i64 = 200;
pub const DEFAULT_SLOTS: i64 = 1;
pub const MAX_SLOTS: i64 = 256;
pub const MAX_THREADS: i64 = 4_096;
pub const DEFAULT_GENERATE_USERS: i64 = 10_000;
pub const MAX_GENERATE_USERS: i64 = 100_000_000;
pub const DEFAULT_GENERATE_ITEMS: i64 = 1_000;
pub const MAX_GENERATE_ITEMS: i64 = 10_000_000;
pub const DEFAULT_GENERATE_DIM: i64 = 32;
pub const MAX_GENERATE_DIM: i64 = 4_096;
pub const DEFAULT_GENERATE_FEATURES: i64 = 8;
pub const MAX_GENERATE_FEATURES: i64 = 4_096;
pub const DEFAULT_GENERATE_SEED: i64 = 42;

const MODEL_KINDS: &[(&str, Kind)] = &[("mlp", Kind::Mlp), ("two_tower", Kind::TwoTower)];
const OUTPUTS: &[(&str, OutputActivation)] = &[
    ("sigmoid", OutputActivation::Sigmoid),
    ("softmax", OutputActivation::Softmax),
    ("none", OutputActivation::None),
];
const GENERATE_KINDS: &[(&str, GenerateKind)] = &[
    ("two-tower", GenerateKind::TwoTower),
    ("mlp", GenerateKind::Mlp),
];
const HOST_KINDS: &[(&str, HostKind)] = &[("local", HostKind::Local), ("ssh", HostKind::Ssh)];
const TRUSTS: &[(&str, Trust)] = &[("strict", Trust::Strict), ("accept-new", Trust::AcceptNew)];
const DEVICES: &[(&str, Device)] = &[
    ("auto", Device::Auto),
    ("gpu", Device::Gpu),
    ("wgpu-cpu", Device::WgpuCpu),
    ("cpu", Device::Cpu),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mlp,
    TwoTower,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostKind {
    Local,
    Ssh,
}

/// Parses and checks a job file. `file` is the job file's path: it names the
/// file in errors and is the base of the job's relative paths.
pub fn parse_job(text: &str, file: &Path) -> Result<Job> {
    let src = Source { text, file };
    let raw: raw::JobFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    src.job(raw)
}

/// Parses and checks a fleet file (`hosts.toml`). `file` is its path: it names
/// the file in errors and is the base of the hosts' relative paths.
pub fn parse_fleet(text: &str, file: &Path) -> Result<Fleet> {
    let src = Source { text, file };
    let raw: raw::FleetFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    src.fleet(raw)
}

/// Parses a time to live: `"7d"`, `"12h"`, `"30m"`, `"3600s"` or `"3600"`
/// (seconds), into seconds. At least one second, at most [`MAX_TTL_SECS`].
/// An error message starts with the quoted input and says what was expected.
pub fn parse_ttl(s: &str) -> std::result::Result<u64, String> {
    const EXPECTED: &str = "expected a number of seconds ('3600') or a number followed by \
                            s, m, h or d ('3600s', '30m', '12h', '7d')";
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        Some(_) => (s, 's'),
        None => return Err(format!("'' is empty; {EXPECTED}")),
    };
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("'{s}' has the unknown unit '{unit}'; {EXPECTED}")),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a duration; {EXPECTED}"));
    }
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n <= MAX_TTL_SECS)
        .ok_or_else(|| {
            format!("'{s}' is too long; expected at most {MAX_TTL_SECS} seconds (100 years)")
        })?;
    if secs == 0 {
        return Err(format!(
            "'{s}' is zero, which would make every prediction stale at once; \
             expected at least one second"
        ));
    }
    Ok(secs)
}

/// The text being parsed and its path: turns byte spans into located errors.
struct Source<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        let (line, column) = self.position(span.start);
        Error {
            file: self.file.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// `offset` moved into the text and onto a character boundary.
    fn clamp(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    /// The header (`[model]`, `[[host]]`) of the table that holds `offset`,
    /// or `None` at the top level.
    fn table_at(&self, offset: usize) -> Option<&str> {
        let offset = self.clamp(offset);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        self.text[..end].lines().rev().find_map(|line| {
            let line = line.trim_start();
            if !line.starts_with('[') {
                return None;
            }
            let close = if line.starts_with("[[") { "]]" } else { "]" };
            line.find(close).map(|i| &line[..i + close.len()])
        })
    }

    /// The header written on the line of `offset`, if that line is one.
    fn header_on_line_of(&self, offset: usize) -> Option<&str> {
        let offset = self.clamp(offset);
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next()?.trim_start();
        line.starts_with('[').then_some(line)
    }

    /// The key written before the value at `offset` on its line (`top_k` in
    /// `top_k = 'abc'`), if any.
    fn key_before(&self, offset: usize) -> Option<&str> {
        let offset = self.clamp(offset);
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let prefix = &self.text[line_start..offset];
        let eq = prefix.find('=')?;
        let key = prefix[..eq].trim();
        let key = key.rsplit(['{', ',']).next().unwrap_or(key).trim();
        (!key.is_empty()).then_some(key)
    }

    /// Rewrites a TOML or serde error in the words of this file format.
    fn toml_error(&self, e: &toml::de::Error) -> Error {
        let span = e.span().unwrap_or(0..0);
        let message = e.message();
        let table = self.table_at(span.start);
        let place = table.map_or(String::new(), |t| format!("{t} "));
        let ticked = quoted_names(message);
        let text = self.text.get(span.clone()).unwrap_or("");
        let rewritten = if message.starts_with("unknown field `") {
            let name = ticked.first().cloned().unwrap_or_default();
            let allowed: Vec<String> = ticked
                .iter()
                .skip(1)
                .filter(|k| !raw::REFUSED_KEYS.contains(&k.as_str()))
                .map(|k| format!("'{k}'"))
                .collect();
            match self.header_on_line_of(span.start) {
                // An unknown table: `[extra]` or `[model.extra]`.
                Some(header) => {
                    let header = header.split(']').next().unwrap_or(header);
                    let header = header.trim_start_matches('[');
                    let parent = header
                        .rsplit_once('.')
                        .map_or(String::new(), |(parent, _)| format!(" in [{parent}]"));
                    format!(
                        "unknown table [{header}]; expected one of the keys{parent}: {}",
                        allowed.join(", ")
                    )
                }
                None => {
                    let where_ =
                        table.map_or("at the top level".to_string(), |t| format!("in {t}"));
                    format!(
                        "unknown key '{name}' {where_}; expected one of {}",
                        allowed.join(", ")
                    )
                }
            }
        } else if message.starts_with("missing field `") {
            let name = ticked.first().cloned().unwrap_or_default();
            if text.starts_with('[') {
                format!("{text} is missing the required key '{name}'")
            } else if let Some(key) = self.key_before(span.start).filter(|_| !span.is_empty()) {
                format!("{place}{key} is missing the required key '{name}'")
            } else {
                format!("the required table [{name}] is missing")
            }
        } else if let Some(rest) = message.strip_prefix("invalid type: ") {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
            let key = self.key_before(span.start).unwrap_or(text);
            let (found_kind, found_value) = describe_found(found);
            if let Some(header) = self.header_on_line_of(span.start) {
                let header = header.split(']').next().unwrap_or(header);
                let name = header.trim_start_matches('[');
                let hint = if expected == "a sequence" {
                    format!(", written [[{name}]]")
                } else {
                    String::new()
                };
                return self.error(
                    span,
                    format!(
                        "[{name}] is {found_kind}; expected {}{hint}",
                        describe_expected(expected)
                    ),
                );
            }
            let value = found_value.map_or(String::new(), |v| format!(" = '{v}'"));
            format!(
                "{place}{key}{value} is {found_kind}; expected {}",
                describe_expected(expected)
            )
        } else if message.starts_with("duplicate key") {
            match self.header_on_line_of(span.start) {
                Some(_) => format!("table [{text}] is defined twice; expected each table once"),
                None => format!("{place}'{text}' is defined twice; expected each key once"),
            }
        } else {
            format!("invalid TOML: {}", message.replace('`', "'"))
        };
        self.error(span, rewritten)
    }

    /// A path value: joined to the folder of this file unless absolute or
    /// starting with `~/` (kept for the caller to expand).
    fn path(&self, value: &Spanned<String>, label: &str) -> Result<PathBuf> {
        let s = value.get_ref();
        if s.is_empty() {
            return Err(self.error(value.span(), format!("{label} is empty; expected a path")));
        }
        if let Some(p) =
            super::location::local_path(s, label).map_err(|m| self.error(value.span(), m))?
        {
            return Ok(p);
        }
        if s == "~" || s.starts_with("~/") {
            return Ok(PathBuf::from(s));
        }
        Ok(beside(self.file, s))
    }

    /// A job or host name: letters, digits, `-`, `_` and `.`.
    fn name(&self, value: &Spanned<String>, label: &str) -> Result<String> {
        const EXPECTED: &str = "expected letters, digits, '-', '_' and '.' only";
        let s = value.get_ref();
        if s.is_empty() {
            return Err(self.error(value.span(), format!("{label} is empty; {EXPECTED}")));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(self.error(
                value.span(),
                format!("{label} = '{s}' contains '{c}'; {EXPECTED}"),
            ));
        }
        if s.chars().count() > MAX_NAME_LEN {
            return Err(self.error(
                value.span(),
                format!("{label} = '{s}' is too long; expected at most {MAX_NAME_LEN} characters"),
            ));
        }
        Ok(s.clone())
    }

    /// A column name: any non-empty string.
    fn column(&self, value: &Spanned<String>, label: &str) -> Result<String> {
        if value.get_ref().is_empty() {
            return Err(self.error(
                value.span(),
                format!("{label} is empty; expected a column name of the input file"),
            ));
        }
        Ok(value.get_ref().clone())
    }

    fn choice<T: Copy>(
        &self,
        value: &Spanned<String>,
        label: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Result<T> {
        let s = value.get_ref();
        options
            .iter()
            .find(|(name, _)| name == s)
            .map(|&(_, v)| v)
            .ok_or_else(|| {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("'{n}'")).collect();
                self.error(
                    value.span(),
                    format!("{label} = '{s}' is not {what}; expected {}", one_of(&names)),
                )
            })
    }

    fn int(&self, value: &Spanned<i64>, label: &str, min: i64, max: Option<i64>) -> Result<i64> {
        let v = *value.get_ref();
        if v >= min && max.is_none_or(|max| v <= max) {
            return Ok(v);
        }
        let expected = match max {
            Some(max) => format!("an integer from {min} to {max}"),
            None => format!("an integer of at least {min}"),
        };
        Err(self.error(
            value.span(),
            format!("{label} = '{v}' is out of range; expected {expected}"),
        ))
    }

    fn int_or(
        &self,
        value: &Option<Spanned<i64>>,
        default: i64,
        label: &str,
        min: i64,
        max: Option<i64>,
    ) -> Result<i64> {
        value
            .as_ref()
            .map_or(Ok(default), |v| self.int(v, label, min, max))
    }

    fn number(&self, value: &Spanned<f64>, label: &str, min: f64, max: Option<f64>) -> Result<f64> {
        let v = *value.get_ref();
        if v.is_finite() && v >= min && max.is_none_or(|max| v <= max) {
            return Ok(v);
        }
        let expected = match max {
            Some(max) => format!("a number from {min} to {max}"),
            None => format!("a number of at least {min}"),
        };
        Err(self.error(
            value.span(),
            format!("{label} = '{v}' is out of range; expected {expected}"),
        ))
    }

    fn job(&self, raw: raw::JobFile) -> Result<Job> {
        let job = raw.job.get_ref();
        let name = self.name(&job.name, "[job] name")?;
        let model_version = job.model_version.get_ref();
        if model_version.trim().is_empty() {
            return Err(self.error(
                job.model_version.span(),
                "[job] model_version is empty; expected the version of the model's weights, \
                 e.g. 'two-tower-2026-11-28'",
            ));
        }
        if model_version.chars().any(char::is_control) {
            return Err(self.error(
                job.model_version.span(),
                format!(
                    "[job] model_version = '{}' contains a control character; expected printable text",
                    model_version.escape_default()
                ),
            ));
        }
        if model_version.chars().count() > MAX_MODEL_VERSION_LEN {
            return Err(self.error(
                job.model_version.span(),
                format!(
                    "[job] model_version is too long; expected at most {MAX_MODEL_VERSION_LEN} characters"
                ),
            ));
        }
        let hosts = match &job.hosts {
            Some(h) => self.path(h, "[job] hosts")?,
            None => beside(self.file, DEFAULT_HOSTS),
        };

        let kind = self.choice(
            &raw.model.get_ref().kind,
            "[model] kind",
            "a model kind",
            MODEL_KINDS,
        )?;
        let input = self.input(&raw.input, &raw.model.get_ref().kind, kind)?;
        let model = self.model(raw.model.get_ref(), kind)?;
        let partition = self.partition(raw.partition.as_ref())?;
        let stragglers = self.stragglers(raw.stragglers.as_ref())?;
        let output = self.output(raw.output.get_ref())?;
        let validate = self.validate(raw.validate.as_ref(), &raw.model.get_ref().kind, kind)?;
        let generate = raw
            .generate
            .as_ref()
            .map(|g| self.generate(g.get_ref(), &raw.model.get_ref().kind, kind))
            .transpose()?;
        Ok(Job {
            file: self.file.to_path_buf(),
            name,
            model_version: model_version.clone(),
            hosts,
            input,
            model,
            partition,
            stragglers,
            output,
            validate,
            generate,
        })
    }

    fn input(
        &self,
        table: &Spanned<raw::InputTable>,
        kind_value: &Spanned<String>,
        kind: Kind,
    ) -> Result<Input> {
        let raw = table.get_ref();
        let url = super::location::input_url(raw.path.get_ref(), "[input] path")
            .map_err(|m| self.error(raw.path.span(), m))?;
        let storage = match &raw.storage {
            None => super::Storage::default(),
            Some(t) => super::location::storage(t, url.as_ref())
                .map_err(|(span, m)| self.error(span, m))?,
        };
        let path = match url {
            Some(url) => super::Location::Url(url),
            None => super::Location::Local(self.path(&raw.path, "[input] path")?),
        };
        let id_column = self.column(&raw.id_column, "[input] id_column")?;
        let history_column = match (&raw.history_column, kind) {
            (None, Kind::TwoTower) => {
                return Err(self.error(
                    table.span(),
                    format!(
                        "[input] has no history_column, but [model] kind = 'two_tower' (line {}) \
                         needs one; expected history_column = the name of the column of item-id lists",
                        self.line_of(&kind_value.span())
                    ),
                ));
            }
            (Some(h), Kind::Mlp) => {
                return Err(self.error(
                    h.span(),
                    format!(
                        "[input] history_column = '{}' is set, but [model] kind = 'mlp' (line {}) \
                         reads no history; expected no history_column (or kind = 'two_tower')",
                        h.get_ref(),
                        self.line_of(&kind_value.span())
                    ),
                ));
            }
            (Some(h), Kind::TwoTower) => {
                let h_name = self.column(h, "[input] history_column")?;
                if h_name == id_column {
                    return Err(self.error(
                        h.span(),
                        format!(
                            "[input] history_column = '{h_name}' is also the id_column; \
                             expected two different columns"
                        ),
                    ));
                }
                Some(h_name)
            }
            (None, Kind::Mlp) => None,
        };
        let feature_columns = match &raw.feature_columns {
            None => None,
            Some(list) => {
                if list.get_ref().is_empty() && kind == Kind::Mlp {
                    return Err(self.error(
                        list.span(),
                        "[input] feature_columns is empty, but [model] kind = 'mlp' scores \
                         feature vectors; expected at least one column (or no feature_columns \
                         for every column but the id column)",
                    ));
                }
                let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
                let mut names = Vec::with_capacity(list.get_ref().len());
                for column in list.get_ref() {
                    let name = self.column(column, "a name in [input] feature_columns")?;
                    if name == id_column {
                        return Err(self.error(
                            column.span(),
                            format!(
                                "[input] feature_columns lists '{name}', the id_column; \
                                 expected feature columns only"
                            ),
                        ));
                    }
                    if history_column.as_deref() == Some(name.as_str()) {
                        return Err(self.error(
                            column.span(),
                            format!(
                                "[input] feature_columns lists '{name}', the history_column; \
                                 expected feature columns only"
                            ),
                        ));
                    }
                    let line = self.line_of(&column.span());
                    if let Some(first) = seen.insert(column.get_ref(), line) {
                        let first = if first == line {
                            String::new()
                        } else {
                            format!(" (first on line {first})")
                        };
                        return Err(self.error(
                            column.span(),
                            format!(
                                "[input] feature_columns lists '{name}' twice{first}; \
                                 expected each column once"
                            ),
                        ));
                    }
                    names.push(name);
                }
                Some(names)
            }
        };
        Ok(Input {
            path,
            storage,
            id_column,
            history_column,
            feature_columns,
        })
    }

    fn model(&self, raw: &raw::ModelTable, kind: Kind) -> Result<Model> {
        let weights = self.path(&raw.weights, "[model] weights")?;
        let foreign = |key: &str, span: Range<usize>, owner: &str| {
            self.error(
                span,
                format!(
                    "[model] {key} is a key of kind = '{owner}', not of kind = '{}'; \
                     expected it removed",
                    raw.kind.get_ref()
                ),
            )
        };
        let spec = match kind {
            Kind::Mlp => {
                if let Some(v) = &raw.top_k {
                    return Err(foreign("top_k", v.span(), "two_tower"));
                }
                if let Some(v) = &raw.max_history {
                    return Err(foreign("max_history", v.span(), "two_tower"));
                }
                if let Some(v) = &raw.exclude_seen {
                    return Err(foreign("exclude_seen", v.span(), "two_tower"));
                }
                let layers = match &raw.layers {
                    None => None,
                    Some(list) => {
                        if list.get_ref().is_empty() {
                            return Err(self.error(
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
                                return Err(self.error(
                                    layer.span(),
                                    "a name in [model] layers is empty; expected a tensor name \
                                     prefix such as 'fc1'",
                                ));
                            }
                            if names.contains(name) {
                                return Err(self.error(
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
                    Some(v) => self.choice(v, "[model] output", "an output activation", OUTPUTS)?,
                };
                ModelSpec::Mlp { layers, output }
            }
            Kind::TwoTower => {
                if let Some(v) = &raw.layers {
                    return Err(foreign("layers", v.span(), "mlp"));
                }
                if let Some(v) = &raw.output {
                    return Err(foreign("output", v.span(), "mlp"));
                }
                let top_k = self.int_or(
                    &raw.top_k,
                    DEFAULT_TOP_K,
                    "[model] top_k",
                    1,
                    Some(MAX_TOP_K),
                )?;
                let max_history = self.int_or(
                    &raw.max_history,
                    DEFAULT_MAX_HISTORY,
                    "[model] max_history",
                    1,
                    Some(MAX_MAX_HISTORY),
                )?;
                ModelSpec::TwoTower {
                    top_k: top_k as usize,
                    max_history: max_history as usize,
                    exclude_seen: raw.exclude_seen.as_ref().is_none_or(|v| *v.get_ref()),
                }
            }
        };
        Ok(Model { spec, weights })
    }

    fn partition(&self, raw: Option<&raw::PartitionTable>) -> Result<Partition> {
        let target_chunk_cost = raw
            .and_then(|p| p.target_chunk_cost.as_ref())
            .map(|v| self.int(v, "[partition] target_chunk_cost", 1, None))
            .transpose()?
            .map(|v| v as u64);
        Ok(Partition { target_chunk_cost })
    }

    fn stragglers(&self, raw: Option<&raw::StragglersTable>) -> Result<Stragglers> {
        let Some(raw) = raw else {
            return Ok(Stragglers {
                speculation: true,
                split_running: true,
                max_attempts: DEFAULT_MAX_ATTEMPTS as u32,
            });
        };
        let max_attempts = self.int_or(
            &raw.max_attempts,
            DEFAULT_MAX_ATTEMPTS,
            "[stragglers] max_attempts",
            1,
            Some(MAX_MAX_ATTEMPTS),
        )?;
        Ok(Stragglers {
            speculation: raw.speculation.unwrap_or(true),
            split_running: raw.split_running.unwrap_or(true),
            max_attempts: max_attempts as u32,
        })
    }

    fn output(&self, raw: &raw::OutputTable) -> Result<Output> {
        let store = self.path(&raw.store, "[output] store")?;
        let ttl_secs = match &raw.ttl {
            None => DEFAULT_TTL_SECS,
            Some(v) => match v.get_ref() {
                toml::Value::String(s) => parse_ttl(s)
                    .map_err(|message| self.error(v.span(), format!("[output] ttl = {message}")))?,
                toml::Value::Integer(n) => u64::try_from(*n)
                    .ok()
                    .filter(|&n| (1..=MAX_TTL_SECS).contains(&n))
                    .ok_or_else(|| {
                        self.error(
                            v.span(),
                            format!(
                                "[output] ttl = '{n}' is out of range; expected from 1 to \
                                 {MAX_TTL_SECS} seconds"
                            ),
                        )
                    })?,
                other => {
                    return Err(self.error(
                        v.span(),
                        format!(
                            "[output] ttl = '{other}' is {}; expected a duration string such as \
                             '7d' or an integer number of seconds",
                            value_kind(other)
                        ),
                    ));
                }
            },
        };
        let keep_versions = self.int_or(
            &raw.keep_versions,
            DEFAULT_KEEP_VERSIONS,
            "[output] keep_versions",
            MIN_KEEP_VERSIONS,
            Some(MAX_KEEP_VERSIONS),
        )?;
        Ok(Output {
            store,
            ttl_secs,
            keep_versions: keep_versions as u32,
        })
    }

    fn validate(
        &self,
        raw: Option<&raw::ValidateTable>,
        kind_value: &Spanned<String>,
        kind: Kind,
    ) -> Result<Validate> {
        let Some(raw) = raw else {
            return Ok(Validate {
                min_coverage: 1.0,
                max_non_finite: 0,
                spot_check: DEFAULT_SPOT_CHECK as u64,
                max_topk_churn: None,
                max_mean_shift: None,
            });
        };
        let min_coverage = raw.min_coverage.as_ref().map_or(Ok(1.0), |v| {
            self.number(v, "[validate] min_coverage", 0.0, Some(1.0))
        })?;
        let max_non_finite =
            self.int_or(&raw.max_non_finite, 0, "[validate] max_non_finite", 0, None)?;
        let spot_check = self.int_or(
            &raw.spot_check,
            DEFAULT_SPOT_CHECK,
            "[validate] spot_check",
            0,
            None,
        )?;
        let max_topk_churn = match &raw.max_topk_churn {
            None => None,
            Some(v) if kind == Kind::Mlp => {
                return Err(self.error(
                    v.span(),
                    format!(
                        "[validate] max_topk_churn is for kind = 'two_tower', but [model] kind = \
                         'mlp' (line {}) has no top-K; expected it removed (max_mean_shift \
                         checks drift of scores)",
                        self.line_of(&kind_value.span())
                    ),
                ));
            }
            Some(v) => Some(self.number(v, "[validate] max_topk_churn", 0.0, Some(1.0))?),
        };
        let max_mean_shift = raw
            .max_mean_shift
            .as_ref()
            .map(|v| self.number(v, "[validate] max_mean_shift", 0.0, None))
            .transpose()?;
        Ok(Validate {
            min_coverage,
            max_non_finite: max_non_finite as u64,
            spot_check: spot_check as u64,
            max_topk_churn,
            max_mean_shift,
        })
    }

    fn generate(
        &self,
        raw: &raw::GenerateTable,
        kind_value: &Spanned<String>,
        kind: Kind,
    ) -> Result<Generate> {
        let gen_kind = self.choice(
            &raw.kind,
            "[generate] kind",
            "a data set kind",
            GENERATE_KINDS,
        )?;
        let matching = match kind {
            Kind::Mlp => (GenerateKind::Mlp, "mlp"),
            Kind::TwoTower => (GenerateKind::TwoTower, "two-tower"),
        };
        if gen_kind != matching.0 {
            return Err(self.error(
                raw.kind.span(),
                format!(
                    "[generate] kind = '{}' does not match [model] kind = '{}' (line {}); \
                     expected kind = '{}'",
                    raw.kind.get_ref(),
                    kind_value.get_ref(),
                    self.line_of(&kind_value.span()),
                    matching.1
                ),
            ));
        }
        let users = self.int_or(
            &raw.users,
            DEFAULT_GENERATE_USERS,
            "[generate] users",
            1,
            Some(MAX_GENERATE_USERS),
        )?;
        let items = self.int_or(
            &raw.items,
            DEFAULT_GENERATE_ITEMS,
            "[generate] items",
            1,
            Some(MAX_GENERATE_ITEMS),
        )?;
        let dim = self.int_or(
            &raw.dim,
            DEFAULT_GENERATE_DIM,
            "[generate] dim",
            1,
            Some(MAX_GENERATE_DIM),
        )?;
        let min_features = if gen_kind == GenerateKind::Mlp { 1 } else { 0 };
        let features = self.int_or(
            &raw.features,
            DEFAULT_GENERATE_FEATURES,
            "[generate] features",
            min_features,
            Some(MAX_GENERATE_FEATURES),
        )?;
        let seed = self.int_or(&raw.seed, DEFAULT_GENERATE_SEED, "[generate] seed", 0, None)?;
        Ok(Generate {
            kind: gen_kind,
            users: users as u64,
            items: items as u32,
            dim: dim as usize,
            features: features as usize,
            seed: seed as u64,
        })
    }

    fn fleet(&self, raw: raw::FleetFile) -> Result<Fleet> {
        let entries = raw.host.unwrap_or_default();
        if entries.is_empty() {
            return Err(self.error(
                0..0,
                "no [[host]] entries; expected at least one, e.g. \
                 [[host]] name = \"local\" kind = \"local\"",
            ));
        }
        let mut hosts: Vec<Host> = Vec::with_capacity(entries.len());
        // name -> line of the host that uses it
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut local: Option<(String, usize)> = None;
        for entry in &entries {
            let host = self.host(entry)?;
            let raw = entry.get_ref();
            let line = self.line_of(&raw.name.span());
            if let Some(first) = names.insert(host.name.clone(), line) {
                return Err(self.error(
                    raw.name.span(),
                    format!(
                        "host name '{}' on line {line} is already used by the host on line {first}; \
                         expected unique host names",
                        host.name
                    ),
                ));
            }
            if host.transport == Transport::Local {
                if let Some((first_name, first_line)) = &local {
                    return Err(self.error(
                        raw.kind.span(),
                        format!(
                            "host '{}' is a second kind = 'local' host (the first is '{first_name}' \
                             on line {first_line}); expected at most one local host (raise its \
                             slots instead)",
                            host.name
                        ),
                    ));
                }
                local = Some((host.name.clone(), line));
            }
            hosts.push(host);
        }
        Ok(Fleet {
            file: self.file.to_path_buf(),
            hosts,
        })
    }

    fn host(&self, entry: &Spanned<raw::HostTable>) -> Result<Host> {
        let raw = entry.get_ref();
        let name = self.name(&raw.name, "[[host]] name")?;
        let label = |key: &str| format!("host '{name}': {key}");
        if let Some(p) = &raw.password {
            return Err(self.error(
                p.span(),
                format!(
                    "host '{name}': 'password' is refused: passwords are never read from \
                     files; expected a key file (identity = \"~/.ssh/id_ed25519\") or the ssh \
                     agent (no identity)"
                ),
            ));
        }
        let kind = self.choice(&raw.kind, &label("kind"), "a host kind", HOST_KINDS)?;
        let transport = match kind {
            HostKind::Local => {
                let ssh_only = [
                    ("address", raw.address.as_ref().map(Spanned::span)),
                    ("port", raw.port.as_ref().map(Spanned::span)),
                    ("user", raw.user.as_ref().map(Spanned::span)),
                    ("identity", raw.identity.as_ref().map(Spanned::span)),
                    ("known_hosts", raw.known_hosts.as_ref().map(Spanned::span)),
                    ("trust", raw.trust.as_ref().map(Spanned::span)),
                    (
                        "worker_binary",
                        raw.worker_binary.as_ref().map(Spanned::span),
                    ),
                ];
                if let Some((key, Some(span))) = ssh_only.into_iter().find(|(_, s)| s.is_some()) {
                    return Err(self.error(
                        span,
                        format!(
                            "host '{name}': {key} is only for kind = 'ssh'; a kind = 'local' host \
                             runs its workers as local processes (expected {key} removed, or \
                             kind = 'ssh')"
                        ),
                    ));
                }
                Transport::Local
            }
            HostKind::Ssh => Transport::Ssh(self.ssh_host(entry, &name)?),
        };
        let slots = self.int_or(
            &raw.slots,
            DEFAULT_SLOTS,
            &label("slots"),
            1,
            Some(MAX_SLOTS),
        )?;
        let device = match &raw.device {
            None => Device::Auto,
            Some(v) => self.choice(v, &label("device"), "a device", DEVICES)?,
        };
        let threads = raw
            .threads
            .as_ref()
            .map(|v| self.int(v, &label("threads"), 1, Some(MAX_THREADS)))
            .transpose()?
            .map(|t| t as u32);
        let cost_per_hour = raw.cost_per_hour.as_ref().map_or(Ok(0.0), |v| {
            self.number(v, &label("cost_per_hour"), 0.0, None)
        })?;
        Ok(Host {
            name,
            transport,
            slots: slots as u32,
            device,
            threads,
            cost_per_hour,
        })
    }

    fn ssh_host(&self, entry: &Spanned<raw::HostTable>, name: &str) -> Result<SshHost> {
        let raw = entry.get_ref();
        let Some(address) = &raw.address else {
            return Err(self.error(
                entry.span(),
                format!(
                    "host '{name}' is kind = 'ssh' but has no address; expected \
                     address = \"host\", \"host:port\" or an alias from ~/.ssh/config"
                ),
            ));
        };
        let text = address.get_ref();
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(self.error(
                address.span(),
                format!(
                    "host '{name}': address = '{text}' is not a host address; expected \
                     \"host\", \"host:port\" or an alias from ~/.ssh/config, without spaces"
                ),
            ));
        }
        let written_port = split_port(text);
        if let Some(port) = written_port {
            if !port.parse::<u16>().is_ok_and(|p| p >= 1) {
                return Err(self.error(
                    address.span(),
                    format!(
                        "host '{name}': address = '{text}' has the port '{port}'; expected a \
                         port from 1 to 65535"
                    ),
                ));
            }
        }
        let address = match &raw.port {
            None => text.clone(),
            Some(port) => {
                let p = self.int(port, &format!("host '{name}': port"), 1, Some(65_535))?;
                if written_port.is_some() {
                    return Err(self.error(
                        port.span(),
                        format!(
                            "host '{name}': port = '{p}' is given, but address = '{text}' already \
                             names a port; expected the port in one place only"
                        ),
                    ));
                }
                if text.contains(':') {
                    format!("[{text}]:{p}")
                } else {
                    format!("{text}:{p}")
                }
            }
        };
        let user = match &raw.user {
            None => None,
            Some(u) if u.get_ref().is_empty() || u.get_ref().chars().any(char::is_whitespace) => {
                return Err(self.error(
                    u.span(),
                    format!(
                        "host '{name}': user = '{}' is not a user name; expected a login name \
                         without spaces (or no user key for the local user name)",
                        u.get_ref()
                    ),
                ));
            }
            Some(u) => Some(u.get_ref().clone()),
        };
        let path = |v: &Option<Spanned<String>>, key: &str| {
            v.as_ref()
                .map(|p| self.path(p, &format!("host '{name}': {key}")))
                .transpose()
        };
        Ok(SshHost {
            address,
            user,
            identity: path(&raw.identity, "identity")?,
            known_hosts: path(&raw.known_hosts, "known_hosts")?,
            trust: match &raw.trust {
                None => Trust::Strict,
                Some(v) => {
                    self.choice(v, &format!("host '{name}': trust"), "a trust mode", TRUSTS)?
                }
            },
            worker_binary: path(&raw.worker_binary, "worker_binary")?,
        })
    }
}

/// The port written in an address (`h:22`, `[::1]:22`), if any. A bare IPv6
/// address (more than one `:`) and an ssh alias have none.
fn split_port(address: &str) -> Option<&str> {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once("]:").map(|(_, port)| port);
    }
    match address.matches(':').count() {
        1 => address.split_once(':').map(|(_, port)| port),
        _ => None,
    }
}

/// `'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`.
fn one_of(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The names serde puts in backticks, in order.
fn quoted_names(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// serde's description of a value found ("string \"abc\"", "integer `3`")
/// as (a kind in words, the value).
fn describe_found(found: &str) -> (String, Option<String>) {
    let (kind, value) = match found.split_once(' ') {
        Some((kind, value)) => (kind, Some(value.trim_matches(['`', '"']).to_string())),
        None => (found, None),
    };
    let kind = match kind {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a number with a fraction",
        "boolean" => "a boolean",
        "sequence" => "a list",
        "map" => "a table",
        other => other,
    };
    let value = if kind == "a number with a fraction" {
        value.map(|v| v.trim_start_matches("point ").trim_matches('`').to_string())
    } else {
        value
    };
    (kind.to_string(), value)
}

/// serde's name of an expected type, in the words of a TOML file.
fn describe_expected(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => {
            "an integer".to_string()
        }
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        e if e.starts_with("struct ") || e == "a map" => "a table".to_string(),
        "a string" | "a boolean" => expected.to_string(),
        other => other.replace('`', "'"),
    }
}

fn value_kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number with a fraction",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_TOWER: &str = r#"[job]
name = "nightly-candidates"
model_version = "two-tower-2026-11-28"
hosts = "../hosts.toml"

[input]
path = "../data/users.parquet"
id_column = "user_id"
history_column = "history"
feature_columns = ["f0", "f1"]

[model]
kind = "two_tower"
weights = "../models/two_tower.safetensors"
top_k = 100
max_history = 500
exclude_seen = true

[partition]
target_chunk_cost = 2_000_000_000

[stragglers]
speculation = true
split_running = true
max_attempts = 4

[output]
store = "../store"
ttl = "7d"
keep_versions = 5

[validate]
min_coverage = 1.0
max_non_finite = 0
spot_check = 500
max_topk_churn = 0.9
"#;

    const MLP: &str = r#"[job]
name = "churn"
model_version = "mlp-1"

[input]
path = "../data/accounts.parquet"
id_column = "account"

[model]
kind = "mlp"
weights = "../models/mlp.safetensors"

[output]
store = "../store"
"#;

    const FLEET: &str = r#"[[host]]
name = "local"
kind = "local"
slots = 2
device = "auto"

[[host]]
name = "gpu1"
kind = "ssh"
address = "gpu1.lab:22"
user = "ml"
identity = "~/.ssh/id_ed25519"
slots = 1
device = "gpu"
cost_per_hour = 2.50
"#;

    fn job(text: &str) -> Result<Job> {
        parse_job(text, Path::new("jobs/x.toml"))
    }

    fn fleet(text: &str) -> Result<Fleet> {
        parse_fleet(text, Path::new("conf/hosts.toml"))
    }

    /// `text` with the line starting `key =` in table `[table]` replaced by
    /// `line` (or removed when `line` is empty), or `line` added to the table.
    fn with(text: &str, table: &str, key: &str, line: &str) -> String {
        let mut out = Vec::new();
        let mut in_table = false;
        let mut done = false;
        let header = format!("[{table}]");
        for l in text.lines() {
            if l.starts_with('[') {
                if in_table && !done {
                    if !line.is_empty() {
                        out.push(line.to_string());
                    }
                    done = true;
                }
                in_table = l == header;
                out.push(l.to_string());
                continue;
            }
            if in_table && l.split('=').next().map(str::trim) == Some(key) {
                if !line.is_empty() {
                    out.push(line.to_string());
                }
                done = true;
                continue;
            }
            out.push(l.to_string());
        }
        if !done {
            if !in_table {
                out.push(header);
            }
            if !line.is_empty() {
                out.push(line.to_string());
            }
        }
        out.join("\n") + "\n"
    }

    /// The error of `result`, asserted to sit on the line where `needle` is.
    fn error_at<T: std::fmt::Debug>(result: Result<T>, text: &str, needle: &str) -> Error {
        let e = result.expect_err("expected a config error");
        let want = text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("'{needle}' is not in the text"))
            + 1;
        assert_eq!(e.line, Some(want), "line of: {e}");
        assert!(e.column.is_some(), "column of: {e}");
        e
    }

    fn assert_contains(e: &Error, parts: &[&str]) {
        let s = e.to_string();
        for p in parts {
            assert!(s.contains(p), "'{s}' should contain '{p}'");
        }
    }

    #[test]
    fn design_two_tower_job_resolves_with_paths_next_to_the_job() {
        let j = job(TWO_TOWER).unwrap();
        assert_eq!(j.file, Path::new("jobs/x.toml"));
        assert_eq!(j.name, "nightly-candidates");
        assert_eq!(j.model_version, "two-tower-2026-11-28");
        assert_eq!(j.hosts, Path::new("hosts.toml"));
        assert_eq!(
            j.input.path,
            super::super::Location::Local("data/users.parquet".into())
        );
        assert_eq!(j.input.id_column, "user_id");
        assert_eq!(j.input.history_column.as_deref(), Some("history"));
        assert_eq!(
            j.input.feature_columns,
            Some(vec!["f0".to_string(), "f1".to_string()])
        );
        assert_eq!(
            j.model.spec,
            ModelSpec::TwoTower {
                top_k: 100,
                max_history: 500,
                exclude_seen: true
            }
        );
        assert_eq!(j.model.weights, Path::new("models/two_tower.safetensors"));
        assert_eq!(j.partition.target_chunk_cost, Some(2_000_000_000));
        assert_eq!(j.output.store, Path::new("store"));
        assert_eq!(j.output.ttl_secs, 7 * 86_400);
        assert_eq!(j.output.keep_versions, 5);
        assert_eq!(j.validate.spot_check, 500);
        assert_eq!(j.validate.max_topk_churn, Some(0.9));
        assert_eq!(j.validate.max_mean_shift, None);
        assert_eq!(j.generate, None);
    }

    #[test]
    fn minimal_mlp_job_takes_every_default() {
        let j = job(MLP).unwrap();
        assert_eq!(j.hosts, Path::new("hosts.toml"));
        assert_eq!(j.input.history_column, None);
        assert_eq!(j.input.feature_columns, None);
        assert_eq!(
            j.model.spec,
            ModelSpec::Mlp {
                layers: None,
                output: OutputActivation::Sigmoid
            }
        );
        assert_eq!(j.partition.target_chunk_cost, None);
        assert_eq!(
            j.stragglers,
            Stragglers {
                speculation: true,
                split_running: true,
                max_attempts: 4
            }
        );
        assert_eq!(j.output.ttl_secs, 604_800);
        assert_eq!(j.output.keep_versions, 5);
        assert_eq!(
            j.validate,
            Validate {
                min_coverage: 1.0,
                max_non_finite: 0,
                spot_check: 200,
                max_topk_churn: None,
                max_mean_shift: None
            }
        );
    }

    #[test]
    fn defaults_inside_present_tables() {
        let text = with(MLP, "stragglers", "speculation", "speculation = false");
        let text = with(&text, "validate", "max_non_finite", "max_non_finite = 3");
        let j = job(&text).unwrap();
        assert!(!j.stragglers.speculation);
        assert!(j.stragglers.split_running);
        assert_eq!(j.stragglers.max_attempts, 4);
        assert_eq!(j.validate.max_non_finite, 3);
        assert_eq!(j.validate.min_coverage, 1.0);
        assert_eq!(j.validate.spot_check, 200);
    }

    #[test]
    fn job_in_the_current_folder_finds_hosts_one_folder_up() {
        let j = parse_job(MLP, Path::new("x.toml")).unwrap();
        assert_eq!(j.hosts, Path::new("../hosts.toml"));
        assert_eq!(j.output.store, Path::new("../store"));
    }

    #[test]
    fn explicit_paths_absolute_and_home_are_kept() {
        let text = with(MLP, "job", "hosts", "hosts = \"/etc/herd/hosts.toml\"");
        let text = with(&text, "input", "path", "path = \"~/data/a.parquet\"");
        let j = job(&text).unwrap();
        assert_eq!(j.hosts, Path::new("/etc/herd/hosts.toml"));
        assert_eq!(
            j.input.path,
            super::super::Location::Local("~/data/a.parquet".into())
        );
    }

    #[test]
    fn empty_path_is_refused() {
        let text = with(MLP, "output", "store", "store = \"\"");
        let e = error_at(job(&text), &text, "store =");
        assert_contains(&e, &["[output] store is empty; expected a path"]);
    }

    #[test]
    fn a_url_where_a_local_path_belongs_is_refused() {
        let text = with(
            MLP,
            "output",
            "store",
            "store = \"redis://127.0.0.1:6379/0\"",
        );
        let e = error_at(job(&text), &text, "store =");
        assert_contains(
            &e,
            &["[output] store = 'redis://127.0.0.1:6379/0' is a redis:// URL"],
        );
        let text = with(MLP, "output", "store", "store = \"file:///srv/herd/store\"");
        assert_eq!(
            job(&text).unwrap().output.store,
            Path::new("/srv/herd/store")
        );
    }

    #[test]
    fn input_urls_and_storage_options_resolve() {
        use super::super::{Location, Storage};
        let text = with(MLP, "input", "path", "path = \"s3://bucket/users/\"")
            + "[input.storage]\nendpoint = \"http://127.0.0.1:9000/\"\nregion = \"us-east-1\"\n\
               allow_http = true\n";
        let j = job(&text).unwrap();
        assert_eq!(j.input.path.to_string(), "s3://bucket/users/");
        assert!(matches!(j.input.path, Location::Url(_)));
        assert_eq!(
            j.input.storage,
            Storage {
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into()),
                allow_http: true,
            }
        );
        let text = with(MLP, "input", "path", "path = \"file:///data/users/\"");
        assert_eq!(
            job(&text).unwrap().input.path,
            Location::Local("/data/users/".into())
        );
    }

    #[test]
    fn unknown_input_schemes_and_credentials_in_the_file_are_refused() {
        let text = with(MLP, "input", "path", "path = \"hdfs://nn/users\"");
        let e = error_at(job(&text), &text, "path =");
        assert_contains(&e, &["'hdfs://nn/users' has the scheme 'hdfs://'"]);

        let base = with(MLP, "input", "path", "path = \"s3://bucket/users/\"");
        let text = base.clone() + "[input.storage]\nsecret_access_key = \"hunter2\"\n";
        let e = error_at(job(&text), &text, "secret_access_key");
        assert_contains(&e, &["credentials are never read from the job file"]);
        assert!(!e.to_string().contains("hunter2"), "{e}");

        let text = base.clone() + "[input.storage]\nendpoint = \"http://127.0.0.1:9000\"\n";
        let e = error_at(job(&text), &text, "endpoint");
        assert_contains(&e, &["is plain HTTP", "allow_http = true"]);

        let text = with(MLP, "input", "path", "path = \"gs://bucket/users/\"")
            + "[input.storage]\nregion = \"eu-west-1\"\n";
        let e = error_at(job(&text), &text, "region");
        assert_contains(&e, &["only for s3:// inputs"]);
    }

    #[test]
    fn error_display_is_file_line_column_message() {
        let text = with(MLP, "model", "kind", "kind = \"two-tower\"");
        let e = job(&text).unwrap_err();
        let line = text.lines().position(|l| l.starts_with("kind")).unwrap() + 1;
        assert_eq!(
            e.to_string(),
            format!(
                "jobs/x.toml:{line}:8: [model] kind = 'two-tower' is not a model kind; \
                 expected 'mlp' or 'two_tower'"
            )
        );
    }

    #[test]
    fn column_counts_characters_not_bytes() {
        let text = with(MLP, "job", "name", "name = \"héllo wörld\"");
        let e = error_at(job(&text), &text, "name =");
        assert_eq!(e.column, Some(8));
        assert_contains(&e, &["[job] name = 'héllo wörld' contains 'é'"]);
    }

    #[test]
    fn job_name_rules() {
        for (value, want) in [
            ("\"\"", "[job] name is empty"),
            ("\"a b\"", "contains ' '"),
            ("\"a/b\"", "contains '/'"),
        ] {
            let text = with(MLP, "job", "name", &format!("name = {value}"));
            let e = error_at(job(&text), &text, "name =");
            assert_contains(
                &e,
                &[want, "expected letters, digits, '-', '_' and '.' only"],
            );
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        let text = with(MLP, "job", "name", &format!("name = \"{long}\""));
        let e = error_at(job(&text), &text, "name =");
        assert_contains(&e, &["is too long; expected at most 128 characters"]);
        let text = with(MLP, "job", "name", "name = \"nightly_v2.1-a\"");
        assert_eq!(job(&text).unwrap().name, "nightly_v2.1-a");
    }

    #[test]
    fn model_version_must_not_be_empty() {
        let text = with(MLP, "job", "model_version", "model_version = \" \"");
        let e = error_at(job(&text), &text, "model_version");
        assert_contains(&e, &["[job] model_version is empty"]);
    }

    #[test]
    fn missing_required_key_names_the_table() {
        let text = with(MLP, "input", "id_column", "");
        let e = error_at(job(&text), &text, "[input]");
        assert_contains(&e, &["[input] is missing the required key 'id_column'"]);
    }

    #[test]
    fn missing_required_table_is_named() {
        let text = MLP.replace("[output]\nstore = \"../store\"\n", "");
        let e = job(&text).unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(1)));
        assert_contains(&e, &["the required table [output] is missing"]);
    }

    #[test]
    fn unknown_key_lists_the_allowed_keys_of_its_table() {
        let text = with(MLP, "stragglers", "speculate", "speculate = true");
        let e = error_at(job(&text), &text, "speculate");
        assert_contains(
            &e,
            &["unknown key 'speculate' in [stragglers]; expected one of \
                 'speculation', 'split_running', 'max_attempts'"],
        );
    }

    #[test]
    fn unknown_table_is_an_unknown_top_level_key() {
        let text = format!("{MLP}[extra]\na = 1\n");
        let e = error_at(job(&text), &text, "[extra]");
        assert_contains(
            &e,
            &[
                "unknown table [extra]; expected one of the keys: 'job'",
                "'generate'",
            ],
        );
        let text = format!("{MLP}[model.extra]\na = 1\n");
        let e = error_at(job(&text), &text, "[model.extra]");
        assert_contains(
            &e,
            &[
                "unknown table [model.extra]; expected one of the keys in [model]: 'kind', 'weights'",
            ],
        );
    }

    #[test]
    fn wrong_type_names_key_value_and_expected_type() {
        let text = with(MLP, "stragglers", "max_attempts", "max_attempts = \"four\"");
        let e = error_at(job(&text), &text, "max_attempts");
        assert_contains(
            &e,
            &["[stragglers] max_attempts = 'four' is a string; expected an integer"],
        );
        let text = with(MLP, "stragglers", "speculation", "speculation = 1");
        let e = error_at(job(&text), &text, "speculation");
        assert_contains(
            &e,
            &["[stragglers] speculation = '1' is an integer; expected a boolean"],
        );
        let text = with(MLP, "input", "feature_columns", "feature_columns = \"f0\"");
        let e = error_at(job(&text), &text, "feature_columns");
        assert_contains(&e, &["feature_columns = 'f0' is a string; expected a list"]);
    }

    #[test]
    fn toml_syntax_error_is_located() {
        let text = MLP.replace("name = \"churn\"", "name = \"churn");
        let e = error_at(job(&text), &text, "name =");
        assert_contains(&e, &["invalid TOML"]);
    }

    #[test]
    fn duplicate_key_is_named() {
        let text = MLP.replace("name = \"churn\"", "name = \"churn\"\nname = \"again\"");
        let e = error_at(job(&text), &text, "\"again\"");
        assert_contains(
            &e,
            &["[job] 'name' is defined twice; expected each key once"],
        );
        let text = format!("{MLP}[job]\nname = \"b\"\n");
        let e = job(&text).unwrap_err();
        assert_eq!(e.line, Some(MLP.lines().count() + 1));
        assert_contains(&e, &["table [job] is defined twice"]);
    }

    #[test]
    fn two_tower_needs_a_history_column() {
        let text = with(TWO_TOWER, "input", "history_column", "");
        let text = with(&text, "input", "feature_columns", "");
        let e = error_at(job(&text), &text, "[input]");
        let kind_line = text.lines().position(|l| l.starts_with("kind")).unwrap() + 1;
        assert_contains(
            &e,
            &[
                "[input] has no history_column",
                &format!("kind = 'two_tower' (line {kind_line})"),
            ],
        );
    }

    #[test]
    fn mlp_refuses_a_history_column() {
        let text = with(MLP, "input", "history_column", "history_column = \"h\"");
        let e = error_at(job(&text), &text, "history_column");
        assert_contains(
            &e,
            &["history_column = 'h' is set, but [model] kind = 'mlp'"],
        );
    }

    #[test]
    fn feature_columns_rules() {
        let cases = [
            ("[\"f0\", \"f1\", \"f0\"]", "lists 'f0' twice"),
            ("[\"f0\", \"user_id\"]", "lists 'user_id', the id_column"),
            ("[\"history\"]", "lists 'history', the history_column"),
            ("[\"\"]", "a name in [input] feature_columns is empty"),
        ];
        for (list, want) in cases {
            let text = with(
                TWO_TOWER,
                "input",
                "feature_columns",
                &format!("feature_columns = {list}"),
            );
            let e = error_at(job(&text), &text, "feature_columns");
            assert_contains(&e, &[want]);
        }
        let text = with(
            TWO_TOWER,
            "input",
            "feature_columns",
            "feature_columns = []",
        );
        assert_eq!(job(&text).unwrap().input.feature_columns, Some(vec![]));
        let text = with(MLP, "input", "feature_columns", "feature_columns = []");
        let e = error_at(job(&text), &text, "feature_columns");
        assert_contains(&e, &["feature_columns is empty, but [model] kind = 'mlp'"]);
    }

    #[test]
    fn history_column_must_differ_from_id_column() {
        let text = with(
            TWO_TOWER,
            "input",
            "history_column",
            "history_column = \"user_id\"",
        );
        let e = error_at(job(&text), &text, "history_column");
        assert_contains(&e, &["is also the id_column"]);
    }

    #[test]
    fn model_keys_of_the_other_kind_are_refused() {
        for line in ["top_k = 5", "max_history = 5", "exclude_seen = false"] {
            let key = line.split(' ').next().unwrap();
            let text = with(MLP, "model", key, line);
            let e = error_at(job(&text), &text, line);
            assert_contains(
                &e,
                &[&format!(
                    "[model] {key} is a key of kind = 'two_tower', not of kind = 'mlp'"
                )],
            );
        }
        for line in ["layers = [\"fc1\"]", "output = \"none\""] {
            let key = line.split(' ').next().unwrap();
            let text = with(TWO_TOWER, "model", key, line);
            let e = error_at(job(&text), &text, line);
            assert_contains(
                &e,
                &[&format!(
                    "[model] {key} is a key of kind = 'mlp', not of kind = 'two_tower'"
                )],
            );
        }
    }

    #[test]
    fn mlp_layers_and_output() {
        let text = with(MLP, "model", "layers", "layers = [\"fc1\", \"fc2\"]");
        let text = with(&text, "model", "output", "output = \"softmax\"");
        assert_eq!(
            job(&text).unwrap().model.spec,
            ModelSpec::Mlp {
                layers: Some(vec!["fc1".into(), "fc2".into()]),
                output: OutputActivation::Softmax
            }
        );
        for (line, want) in [
            ("layers = []", "[model] layers is empty"),
            ("layers = [\"a\", \"a\"]", "[model] layers lists 'a' twice"),
            ("layers = [\"\"]", "a name in [model] layers is empty"),
        ] {
            let text = with(MLP, "model", "layers", line);
            let e = error_at(job(&text), &text, "layers");
            assert_contains(&e, &[want]);
        }
        let text = with(MLP, "model", "output", "output = \"relu\"");
        let e = error_at(job(&text), &text, "output =");
        assert_contains(
            &e,
            &["[model] output = 'relu' is not an output activation; \
                 expected 'sigmoid', 'softmax' or 'none'"],
        );
    }

    #[test]
    fn two_tower_ranges_and_defaults() {
        for (line, want) in [
            (
                "top_k = 0",
                "[model] top_k = '0' is out of range; expected an integer from 1 to 10000",
            ),
            ("top_k = 10001", "top_k = '10001' is out of range"),
            (
                "max_history = 0",
                "[model] max_history = '0' is out of range",
            ),
            ("max_history = -3", "max_history = '-3' is out of range"),
        ] {
            let key = line.split(' ').next().unwrap();
            let text = with(TWO_TOWER, "model", key, line);
            let e = error_at(job(&text), &text, line);
            assert_contains(&e, &[want]);
        }
        let text = with(TWO_TOWER, "model", "top_k", "");
        let text = with(&text, "model", "max_history", "");
        let text = with(&text, "model", "exclude_seen", "");
        assert_eq!(
            job(&text).unwrap().model.spec,
            ModelSpec::TwoTower {
                top_k: 100,
                max_history: 500,
                exclude_seen: true
            }
        );
        let text = with(TWO_TOWER, "model", "top_k", "top_k = 10_000");
        let text = with(&text, "model", "exclude_seen", "exclude_seen = false");
        assert_eq!(
            job(&text).unwrap().model.spec,
            ModelSpec::TwoTower {
                top_k: 10_000,
                max_history: 500,
                exclude_seen: false
            }
        );
    }

    #[test]
    fn target_chunk_cost_must_be_positive() {
        let text = with(
            MLP,
            "partition",
            "target_chunk_cost",
            "target_chunk_cost = 0",
        );
        let e = error_at(job(&text), &text, "target_chunk_cost");
        assert_contains(
            &e,
            &["target_chunk_cost = '0' is out of range; expected an integer of at least 1"],
        );
        let text = with(
            MLP,
            "partition",
            "target_chunk_cost",
            "target_chunk_cost = 1_000",
        );
        assert_eq!(job(&text).unwrap().partition.target_chunk_cost, Some(1000));
    }

    #[test]
    fn max_attempts_from_1_to_100() {
        for bad in ["0", "101", "-1"] {
            let line = format!("max_attempts = {bad}");
            let text = with(MLP, "stragglers", "max_attempts", &line);
            let e = error_at(job(&text), &text, &line);
            assert_contains(
                &e,
                &[&format!(
                    "[stragglers] max_attempts = '{bad}' is out of range; expected an integer from 1 to 100"
                )],
            );
        }
        let text = with(MLP, "stragglers", "max_attempts", "max_attempts = 100");
        assert_eq!(job(&text).unwrap().stragglers.max_attempts, 100);
    }

    #[test]
    fn ttl_as_string_or_seconds() {
        for (line, secs) in [
            ("ttl = \"12h\"", 43_200),
            ("ttl = \"30m\"", 1_800),
            ("ttl = \"3600s\"", 3_600),
            ("ttl = \"90\"", 90),
            ("ttl = 86400", 86_400),
        ] {
            let text = with(MLP, "output", "ttl", line);
            assert_eq!(job(&text).unwrap().output.ttl_secs, secs, "{line}");
        }
        for (line, want) in [
            (
                "ttl = \"7x\"",
                "[output] ttl = '7x' has the unknown unit 'x'",
            ),
            ("ttl = \"d\"", "[output] ttl = 'd' is not a duration"),
            ("ttl = 0", "[output] ttl = '0' is out of range"),
            ("ttl = -5", "[output] ttl = '-5' is out of range"),
            (
                "ttl = 1.5",
                "[output] ttl = '1.5' is a number with a fraction; expected a duration",
            ),
        ] {
            let text = with(MLP, "output", "ttl", line);
            let e = error_at(job(&text), &text, "ttl");
            assert_contains(&e, &[want]);
        }
    }

    #[test]
    fn keep_versions_keeps_at_least_the_live_and_previous() {
        let text = with(MLP, "output", "keep_versions", "keep_versions = 1");
        let e = error_at(job(&text), &text, "keep_versions");
        assert_contains(
            &e,
            &["keep_versions = '1' is out of range; expected an integer from 2 to 1000"],
        );
        let text = with(MLP, "output", "keep_versions", "keep_versions = 2");
        assert_eq!(job(&text).unwrap().output.keep_versions, 2);
    }

    #[test]
    fn validate_ranges() {
        for (table_text, line, want) in [
            (
                MLP,
                "min_coverage = 1.5",
                "min_coverage = '1.5' is out of range; expected a number from 0 to 1",
            ),
            (
                MLP,
                "min_coverage = -0.1",
                "min_coverage = '-0.1' is out of range",
            ),
            (
                MLP,
                "min_coverage = nan",
                "min_coverage = 'NaN' is out of range",
            ),
            (
                MLP,
                "max_non_finite = -1",
                "max_non_finite = '-1' is out of range",
            ),
            (MLP, "spot_check = -1", "spot_check = '-1' is out of range"),
            (
                TWO_TOWER,
                "max_topk_churn = 1.01",
                "max_topk_churn = '1.01' is out of range",
            ),
            (
                MLP,
                "max_mean_shift = -0.5",
                "max_mean_shift = '-0.5' is out of range; expected a number of at least 0",
            ),
            (
                MLP,
                "max_topk_churn = 0.5",
                "max_topk_churn is for kind = 'two_tower'",
            ),
        ] {
            let key = line.split(' ').next().unwrap();
            let text = with(table_text, "validate", key, line);
            let e = error_at(job(&text), &text, line);
            assert_contains(&e, &[want]);
        }
        let text = with(MLP, "validate", "min_coverage", "min_coverage = 0");
        let text = with(&text, "validate", "max_mean_shift", "max_mean_shift = 0.25");
        let v = job(&text).unwrap().validate;
        assert_eq!(v.min_coverage, 0.0);
        assert_eq!(v.max_mean_shift, Some(0.25));
    }

    #[test]
    fn generate_defaults_and_kind_must_match_the_model() {
        let text = with(TWO_TOWER, "generate", "kind", "kind = \"two-tower\"");
        assert_eq!(
            job(&text).unwrap().generate,
            Some(Generate {
                kind: GenerateKind::TwoTower,
                users: 10_000,
                items: 1_000,
                dim: 32,
                features: 8,
                seed: 42
            })
        );
        let text = with(
            MLP,
            "generate",
            "kind",
            "kind = \"mlp\"\nusers = 500\nfeatures = 3\nseed = 7",
        );
        let g = job(&text).unwrap().generate.unwrap();
        assert_eq!(
            (g.kind, g.users, g.features, g.seed),
            (GenerateKind::Mlp, 500, 3, 7)
        );

        let text = with(MLP, "generate", "kind", "kind = \"two-tower\"");
        let e = error_at(job(&text), &text, "kind = \"two-tower\"");
        assert_contains(
            &e,
            &[
                "[generate] kind = 'two-tower' does not match [model] kind = 'mlp'",
                "expected kind = 'mlp'",
            ],
        );
        let text = with(TWO_TOWER, "generate", "kind", "kind = 'two_tower'");
        let e = error_at(job(&text), &text, "kind = 'two_tower'");
        assert_contains(
            &e,
            &[
                "[generate] kind = 'two_tower' is not a data set kind; expected 'two-tower' or 'mlp'",
            ],
        );
    }

    #[test]
    fn generate_ranges() {
        for (line, want) in [
            ("users = 0", "[generate] users = '0' is out of range"),
            ("items = 0", "[generate] items = '0' is out of range"),
            ("items = 10_000_001", "items = '10000001' is out of range"),
            ("dim = 0", "[generate] dim = '0' is out of range"),
            (
                "features = 0",
                "[generate] features = '0' is out of range; expected an integer from 1",
            ),
            ("seed = -1", "[generate] seed = '-1' is out of range"),
        ] {
            let text = with(MLP, "generate", "kind", &format!("kind = \"mlp\"\n{line}"));
            let e = error_at(job(&text), &text, line);
            assert_contains(&e, &[want]);
        }
        let text = with(
            TWO_TOWER,
            "generate",
            "kind",
            "kind = \"two-tower\"\nfeatures = 0",
        );
        assert_eq!(job(&text).unwrap().generate.unwrap().features, 0);
    }

    #[test]
    fn parse_ttl_units() {
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("7d"), Ok(DEFAULT_TTL_SECS));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("30m"), Ok(1_800));
        assert_eq!(parse_ttl("3600s"), Ok(3_600));
        assert_eq!(parse_ttl("3600"), Ok(3_600));
        assert_eq!(parse_ttl("36500d"), Ok(MAX_TTL_SECS));
        for (bad, want) in [
            ("", "'' is empty"),
            ("7w", "'7w' has the unknown unit 'w'"),
            ("-7d", "'-7d' is not a duration"),
            ("7.5h", "'7.5h' is not a duration"),
            (" 7d", "' 7d' is not a duration"),
            ("0", "'0' is zero"),
            ("0d", "'0d' is zero"),
            ("36501d", "'36501d' is too long"),
            ("99999999999999999999999", "is too long"),
        ] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(e.contains(want), "'{e}' should contain '{want}'");
        }
    }

    #[test]
    fn design_fleet_resolves() {
        let f = fleet(FLEET).unwrap();
        assert_eq!(f.file, Path::new("conf/hosts.toml"));
        assert_eq!(
            f.hosts,
            vec![
                Host {
                    name: "local".into(),
                    transport: Transport::Local,
                    slots: 2,
                    device: Device::Auto,
                    threads: None,
                    cost_per_hour: 0.0
                },
                Host {
                    name: "gpu1".into(),
                    transport: Transport::Ssh(SshHost {
                        address: "gpu1.lab:22".into(),
                        user: Some("ml".into()),
                        identity: Some(PathBuf::from("~/.ssh/id_ed25519")),
                        known_hosts: None,
                        trust: Trust::Strict,
                        worker_binary: None
                    }),
                    slots: 1,
                    device: Device::Gpu,
                    threads: None,
                    cost_per_hour: 2.5
                }
            ]
        );
    }

    fn ssh(extra: &str) -> String {
        format!("[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"box\"\n{extra}\n")
    }

    fn one_ssh(extra: &str) -> SshHost {
        match fleet(&ssh(extra)).unwrap().hosts.remove(0).transport {
            Transport::Ssh(s) => s,
            Transport::Local => panic!("expected an ssh host"),
        }
    }

    #[test]
    fn host_written_as_a_single_table_asks_for_double_brackets() {
        let text = "[host]\nname = \"a\"\nkind = \"local\"\n";
        let e = error_at(fleet(text), text, "[host]");
        assert_contains(
            &e,
            &["[host] is a table; expected a list, written [[host]]"],
        );
    }

    #[test]
    fn missing_key_of_an_inline_table_names_the_table() {
        let text = "host = [{ name = \"a\" }]\n";
        let e = error_at(fleet(text), text, "host");
        assert_contains(&e, &["host is missing the required key 'kind'"]);
    }

    #[test]
    fn fleet_needs_a_host() {
        for text in ["", "# nothing\n", "host = []\n"] {
            let e = fleet(text).unwrap_err();
            assert_eq!((e.line, e.column), (Some(1), Some(1)));
            assert_contains(&e, &["no [[host]] entries; expected at least one"]);
        }
    }

    #[test]
    fn duplicate_host_names_name_both_lines() {
        let text = format!(
            "{}{}",
            ssh(""),
            ssh("").replace("address = \"box\"", "address = \"other\"")
        );
        let e = fleet(&text).unwrap_err();
        assert_eq!(e.line, Some(7));
        assert_contains(
            &e,
            &["host name 'a' on line 7 is already used by the host on line 2"],
        );
    }

    #[test]
    fn host_name_and_kind_rules() {
        let text = "[[host]]\nname = \"a b\"\nkind = \"local\"\n";
        let e = error_at(fleet(text), text, "name");
        assert_contains(&e, &["[[host]] name = 'a b' contains ' '"]);
        let text = "[[host]]\nname = \"a\"\nkind = \"remote\"\n";
        let e = error_at(fleet(text), text, "kind");
        assert_contains(
            &e,
            &["host 'a': kind = 'remote' is not a host kind; expected 'local' or 'ssh'"],
        );
        let text = "[[host]]\nname = \"a\"\n";
        let e = error_at(fleet(text), text, "[[host]]");
        assert_contains(&e, &["[[host]] is missing the required key 'kind'"]);
    }

    #[test]
    fn local_host_refuses_ssh_keys() {
        for line in [
            "address = \"x\"",
            "port = 22",
            "user = \"u\"",
            "identity = \"k\"",
            "known_hosts = \"k\"",
            "trust = \"strict\"",
            "worker_binary = \"w\"",
        ] {
            let key = line.split(' ').next().unwrap();
            let text = format!("[[host]]\nname = \"l\"\nkind = \"local\"\n{line}\n");
            let e = error_at(fleet(&text), &text, line);
            assert_contains(&e, &[&format!("host 'l': {key} is only for kind = 'ssh'")]);
        }
    }

    #[test]
    fn at_most_one_local_host() {
        let text =
            "[[host]]\nname = \"a\"\nkind = \"local\"\n[[host]]\nname = \"b\"\nkind = \"local\"\n";
        let e = fleet(text).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert_contains(
            &e,
            &["host 'b' is a second kind = 'local' host (the first is 'a' on line 2)"],
        );
    }

    #[test]
    fn password_is_refused_and_not_offered_as_a_key() {
        let text = ssh("password = \"hunter2\"");
        let e = error_at(fleet(&text), &text, "password");
        assert_contains(
            &e,
            &["'password' is refused: passwords are never read from files"],
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let text = ssh("passwd = \"x\"");
        let e = error_at(fleet(&text), &text, "passwd");
        assert_contains(
            &e,
            &["unknown key 'passwd' in [[host]]; expected one of 'name', 'kind'"],
        );
        assert!(!e.to_string().contains("'password'"), "{e}");
    }

    #[test]
    fn ssh_host_needs_an_address() {
        let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\n";
        let e = error_at(fleet(text), text, "[[host]]");
        assert_contains(&e, &["host 'a' is kind = 'ssh' but has no address"]);
        let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"a b\"\n";
        let e = error_at(fleet(text), text, "address");
        assert_contains(&e, &["address = 'a b' is not a host address"]);
    }

    #[test]
    fn port_goes_in_one_place() {
        assert_eq!(one_ssh("port = 2222").address, "box:2222");
        assert_eq!(one_ssh("").address, "box");
        let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"::1\"\nport = 22\n";
        match &fleet(text).unwrap().hosts[0].transport {
            Transport::Ssh(s) => assert_eq!(s.address, "[::1]:22"),
            Transport::Local => panic!("expected ssh"),
        }
        let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"[::1]:2200\"\n";
        assert!(fleet(text).is_ok());
        let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"h:22\"\nport = 22\n";
        let e = error_at(fleet(text), text, "port");
        assert_contains(
            &e,
            &["port = '22' is given, but address = 'h:22' already names a port"],
        );
        for (address, port) in [
            ("h:abc", "abc"),
            ("h:0", "0"),
            ("h:70000", "70000"),
            ("h:", ""),
        ] {
            let text = format!("[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"{address}\"\n");
            let e = error_at(fleet(&text), &text, "address");
            assert_contains(
                &e,
                &[&format!(
                    "has the port '{port}'; expected a port from 1 to 65535"
                )],
            );
        }
        let text = ssh("port = 0");
        let e = error_at(fleet(&text), &text, "port");
        assert_contains(&e, &["host 'a': port = '0' is out of range"]);
    }

    #[test]
    fn ssh_paths_and_trust() {
        let s = one_ssh(
            "identity = \"keys/id\"\nknown_hosts = \"~/.ssh/kh\"\nworker_binary = \"/opt/herd\"\ntrust = \"accept-new\"\nuser = \"ml\"",
        );
        assert_eq!(s.identity, Some(PathBuf::from("conf/keys/id")));
        assert_eq!(s.known_hosts, Some(PathBuf::from("~/.ssh/kh")));
        assert_eq!(s.worker_binary, Some(PathBuf::from("/opt/herd")));
        assert_eq!(s.trust, Trust::AcceptNew);
        assert_eq!(s.user.as_deref(), Some("ml"));
        assert_eq!(one_ssh("").trust, Trust::Strict);
        let text = ssh("trust = \"yes\"");
        let e = error_at(fleet(&text), &text, "trust");
        assert_contains(
            &e,
            &["host 'a': trust = 'yes' is not a trust mode; expected 'strict' or 'accept-new'"],
        );
        let text = ssh("user = \"\"");
        let e = error_at(fleet(&text), &text, "user");
        assert_contains(&e, &["user = '' is not a user name"]);
    }

    #[test]
    fn host_slots_device_threads_cost() {
        for (line, want) in [
            (
                "slots = 0",
                "host 'a': slots = '0' is out of range; expected an integer from 1 to 256",
            ),
            ("slots = 257", "slots = '257' is out of range"),
            (
                "device = \"cuda\"",
                "device = 'cuda' is not a device; expected 'auto', 'gpu', 'wgpu-cpu' or 'cpu'",
            ),
            ("threads = 0", "host 'a': threads = '0' is out of range"),
            (
                "cost_per_hour = -1.0",
                "cost_per_hour = '-1' is out of range; expected a number of at least 0",
            ),
            (
                "cost_per_hour = inf",
                "cost_per_hour = 'inf' is out of range",
            ),
        ] {
            let text = ssh(line);
            let e = error_at(fleet(&text), &text, line);
            assert_contains(&e, &[want]);
        }
        for (name, device) in DEVICES {
            let text = ssh(&format!("device = \"{name}\""));
            assert_eq!(fleet(&text).unwrap().hosts[0].device, *device);
        }
        let text = ssh("slots = 256\nthreads = 8\ncost_per_hour = 3");
        let h = &fleet(&text).unwrap().hosts[0];
        assert_eq!((h.slots, h.threads, h.cost_per_hour), (256, Some(8), 3.0));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn located_within(e: &Error, text: &str) {
            let lines = text.split('\n').count();
            let line = e.line.expect("a line");
            assert!(line >= 1 && line <= lines, "{e}: line {line} of {lines}");
        }

        proptest! {
            #[test]
            fn any_text_is_parsed_or_refused_with_a_location(text in "\\PC{0,200}") {
                if let Err(e) = job(&text) {
                    located_within(&e, &text);
                }
                if let Err(e) = fleet(&text) {
                    located_within(&e, &text);
                }
            }

            #[test]
            fn a_corrupted_job_is_parsed_or_refused_with_a_location(
                at in 0usize..TWO_TOWER.len(),
                insert in "[ -~\\n]{0,8}",
                cut in 0usize..6,
            ) {
                let mut at = at;
                while !TWO_TOWER.is_char_boundary(at) {
                    at -= 1;
                }
                let end = (at + cut).min(TWO_TOWER.len());
                let text = format!("{}{insert}{}", &TWO_TOWER[..at], &TWO_TOWER[end..]);
                if let Err(e) = job(&text) {
                    located_within(&e, &text);
                }
            }

            #[test]
            fn ttl_units_scale_to_seconds(n in 1u64..=36_500) {
                prop_assert_eq!(parse_ttl(&format!("{n}d")), Ok(n * 86_400));
                prop_assert_eq!(parse_ttl(&format!("{n}h")), Ok(n * 3_600));
                prop_assert_eq!(parse_ttl(&format!("{n}m")), Ok(n * 60));
                prop_assert_eq!(parse_ttl(&format!("{n}s")), Ok(n));
                prop_assert_eq!(parse_ttl(&n.to_string()), Ok(n));
            }
        }
    }
}

/// `rel` joined to the folder of `file`, with `.` and `dir/..` removed
/// lexically (`jobs/../store` reads as `store` in every message).
fn beside(file: &Path, rel: &str) -> PathBuf {
    use std::path::Component;
    let joined = file.parent().unwrap_or(Path::new("")).join(rel);
    let mut out: Vec<Component> = Vec::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod beside_tests {
    use super::beside;
    use std::path::{Path, PathBuf};

    #[test]
    fn paths_beside_a_file_lose_dot_and_dotdot_lexically() {
        assert_eq!(
            beside(Path::new("jobs/demo.toml"), "../store"),
            PathBuf::from("store")
        );
        assert_eq!(
            beside(Path::new("jobs/demo.toml"), "./data/x.parquet"),
            PathBuf::from("jobs/data/x.parquet")
        );
        assert_eq!(
            beside(Path::new("demo.toml"), "../up/x"),
            PathBuf::from("../up/x")
        );
        assert_eq!(
            beside(Path::new("/etc/herd/job.toml"), "/abs/store"),
            PathBuf::from("/abs/store")
        );
        assert_eq!(beside(Path::new("a/job.toml"), ".."), PathBuf::from("."));
    }
}
