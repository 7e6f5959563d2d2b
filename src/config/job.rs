//! Job files (`jobs/*.toml`), resolved: the rules serde cannot express
//! (ranges, the names of enumeration values, keys that belong to one model
//! kind only, rules between tables such as a two_tower model needing a
//! history column), every error naming the file, line and column of the
//! offending value.
//!
//! Paths are joined to the folder of the job file, lexically: nothing is
//! canonicalised and nothing is checked for existence (the caller does that,
//! with the file system). Pure: no file system, no clock, no environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::output::Output;
use super::raw;
use super::source::quoted;
use super::source::{Source, beside};
use super::{Location, Result, Storage};
use crate::model::{FAMILIES, Family, ModelSpec};

/// The fleet file of a job that names none, relative to the job file (jobs
/// live in `jobs/`, `hosts.toml` at the top of the project).
pub const DEFAULT_HOSTS: &str = "../hosts.toml";
/// Longest `model_version`, in characters.
pub const MAX_MODEL_VERSION_LEN: usize = 256;
pub const DEFAULT_MAX_ATTEMPTS: i64 = 4;
pub const MAX_MAX_ATTEMPTS: i64 = 100;
pub const DEFAULT_SPOT_CHECK: i64 = 200;
/// Fewest rows a version needs to go live: an empty version never does.
pub const DEFAULT_MIN_ROWS: i64 = 1;
/// Largest change of the row count against the live version, as a fraction
/// of the live count: fewer than half or more than 1.5x is refused.
pub const DEFAULT_MAX_ROW_CHANGE: f64 = 0.5;
pub const DEFAULT_GENERATE_USERS: i64 = 10_000;
pub const MAX_GENERATE_USERS: i64 = 100_000_000;
pub const DEFAULT_GENERATE_ITEMS: i64 = 1_000;
pub const MAX_GENERATE_ITEMS: i64 = 10_000_000;
pub const DEFAULT_GENERATE_DIM: i64 = 32;
pub const MAX_GENERATE_DIM: i64 = 4_096;
pub const DEFAULT_GENERATE_FEATURES: i64 = 8;
pub const MAX_GENERATE_FEATURES: i64 = 4_096;
pub const DEFAULT_GENERATE_SEED: i64 = 42;
/// Trees and depth of a generated gbdt (`herd gen gbdt`'s defaults and limits).
pub const DEFAULT_GENERATE_TREES: i64 = 500;
pub const MAX_GENERATE_TREES: i64 = 100_000;
pub const DEFAULT_GENERATE_DEPTH: i64 = 8;
pub const MAX_GENERATE_DEPTH: i64 = 16;

/// `[generate] kind`: each synthetic data set and the model kind it is for.
const GENERATE_KINDS: &[(&str, GenerateKind, &str)] = &[
    ("two-tower", GenerateKind::TwoTower, "two_tower"),
    ("mlp", GenerateKind::Mlp, "mlp"),
    ("gbdt", GenerateKind::Gbdt, "onnx"),
];

/// A job file, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub file: PathBuf,
    pub name: String,
    pub model_version: String,
    /// The fleet file, relative paths already joined to the job's folder.
    pub hosts: PathBuf,
    pub input: Input,
    pub model: Model,
    pub partition: Partition,
    pub stragglers: Stragglers,
    pub output: Output,
    pub validate: Validate,
    /// `[generate]`: the synthetic data this job's input and weights are made
    /// from when they do not exist yet (the demo job of a fresh clone).
    pub generate: Option<Generate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// A file, folder or glob here, or an object-store URL.
    pub path: Location,
    /// Who reads the rows of a chunk.
    pub read: ReadMode,
    /// `[input.storage]`; used by URL inputs only.
    pub storage: Storage,
    pub id_column: String,
    /// Required for two_tower; absent for mlp.
    pub history_column: Option<String>,
    /// `None`: every column but the id and history columns, in file order.
    pub feature_columns: Option<Vec<String>>,
    /// What a null, NaN or infinite feature value does.
    pub on_invalid: OnInvalid,
}

/// `[input] read`: who reads a chunk's rows from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// Workers on local hosts, and every worker of a URL input; the
    /// coordinator for SSH hosts of a local input (their machine may not
    /// have the path).
    Auto,
    /// The coordinator reads every row and sends it to the worker.
    Coordinator,
    /// Workers read their own rows from the same path, told only which.
    Workers,
}

/// `read = ...` in `[input]`: each mode's name.
pub const READ_MODES: &[(&str, ReadMode)] = &[
    ("auto", ReadMode::Auto),
    ("coordinator", ReadMode::Coordinator),
    ("workers", ReadMode::Workers),
];

/// `[input] on_invalid`: what a null, NaN or infinite feature value does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Whoever reads a chunk refuses the value: the run stops (exit 2),
    /// naming the file, column and row, and its version is dropped.
    Error,
    /// The entity is left out of the version, listed in the report, and
    /// counted as excluded by the coverage check.
    Skip,
    /// The value is passed to the model as NaN: only for models that define
    /// missing values.
    Missing,
}

const ON_INVALID: &[(&str, OnInvalid)] = &[
    ("error", OnInvalid::Error),
    ("skip", OnInvalid::Skip),
    ("missing", OnInvalid::Missing),
];

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub spec: ModelSpec,
    pub weights: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Multiply-adds per chunk; `None`: about 1-2 s of one slot's work.
    pub target_chunk_cost: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stragglers {
    pub speculation: bool,
    pub split_running: bool,
    /// Attempts per chunk before the run fails (at least 1).
    pub max_attempts: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Validate {
    /// Fraction of input entities that must have a prediction.
    pub min_coverage: f64,
    pub max_non_finite: u64,
    /// Entities re-scored on the CPU reference and compared.
    pub spot_check: u64,
    /// Refuse to flip when the top-K churn against the live version is above
    /// this (two_tower); `None`: no drift check.
    pub max_topk_churn: Option<f64>,
    /// Refuse to flip when the mean score moved more than this against the
    /// live version; `None`: no check.
    pub max_mean_shift: Option<f64>,
    /// Fewest stored rows a version needs (an empty version never flips).
    pub min_rows: u64,
    /// Largest change of the row count against the live version, as a
    /// fraction of the live count.
    pub max_row_change: f64,
}

/// A synthetic data set (`herd gen`'s settings) named by a job.
#[derive(Clone, Debug, PartialEq)]
pub struct Generate {
    pub kind: GenerateKind,
    pub users: u64,
    pub items: u32,
    pub dim: usize,
    pub features: usize,
    pub seed: u64,
    /// Trees and their depth (gbdt; `herd gen gbdt`'s limits).
    pub trees: usize,
    pub depth: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerateKind {
    TwoTower,
    Mlp,
    /// A tree ensemble written as ONNX, for `kind = "onnx"`.
    Gbdt,
}

/// Parses and checks a job file. `file` is the job file's path: it names the
/// file in errors and is the base of the job's relative paths.
pub fn parse_job(text: &str, file: &Path) -> Result<Job> {
    let src = Source { text, file };
    let raw: raw::JobFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    src.job(raw)
}

impl Source<'_> {
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

        let kinds: Vec<(&str, &Family)> = FAMILIES.iter().map(|f| (f.kind, *f)).collect();
        let family = self.choice(
            &raw.model.get_ref().kind,
            "[model] kind",
            "a model kind",
            &kinds,
        )?;
        let mut input = self.input(&raw.input, &raw.model.get_ref().kind, family)?;
        let model = self.model(&raw.model, family)?;
        input.on_invalid = self.on_invalid(raw.input.get_ref(), &model.spec)?;
        if let Some(columns) = model.spec.feature_columns() {
            if let Some(list) = &raw.input.get_ref().feature_columns {
                return Err(self.error(
                    list.span(),
                    "[input] feature_columns is set, but [model.inputs] names the columns; \
                     expected one of them (the columns of [model.inputs] are read)",
                ));
            }
            input.feature_columns = Some(columns);
        }
        let partition = self.partition(raw.partition.as_ref())?;
        let stragglers = self.stragglers(raw.stragglers.as_ref())?;
        let output = self.output(raw.output.get_ref())?;
        let validate = self.validate(
            raw.validate.as_ref(),
            &raw.model.get_ref().kind,
            &model.spec,
        )?;
        let generate = raw
            .generate
            .as_ref()
            .map(|g| self.generate(g.get_ref(), &raw.model.get_ref().kind, family))
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
        family: &Family,
    ) -> Result<Input> {
        let raw = table.get_ref();
        let url = super::location::input_url(raw.path.get_ref(), "[input] path")
            .map_err(|m| self.error(raw.path.span(), m))?;
        let storage = match &raw.storage {
            None => Storage::default(),
            Some(t) => super::location::storage(t, url.as_ref())
                .map_err(|(span, m)| self.error(span, m))?,
        };
        let path = match url {
            Some(url) => Location::Url(url),
            None => Location::Local(self.path(&raw.path, "[input] path")?),
        };
        let read = match &raw.read {
            None => ReadMode::Auto,
            Some(v) => match READ_MODES.iter().find(|(name, _)| name == v.get_ref()) {
                Some((_, mode)) => *mode,
                None => {
                    return Err(self.error(
                        v.span(),
                        format!(
                            "[input] read = '{}' is not a read mode; expected {}",
                            v.get_ref(),
                            quoted(READ_MODES.iter().map(|(n, _)| *n))
                        ),
                    ));
                }
            },
        };
        let id_column = self.column(&raw.id_column, "[input] id_column")?;
        let kind_line = self.line_of(&kind_value.span());
        let history_column = match (&raw.history_column, family.reads_history) {
            (None, true) => {
                return Err(self.error(
                    table.span(),
                    format!(
                        "[input] has no history_column, but [model] kind = '{}' (line {kind_line}) \
                         needs one; expected history_column = the name of the column of item-id lists",
                        family.kind
                    ),
                ));
            }
            (Some(h), false) => {
                let readers = kinds_where(|f| f.reads_history);
                return Err(self.error(
                    h.span(),
                    format!(
                        "[input] history_column = '{}' is set, but [model] kind = '{}' (line {kind_line}) \
                         reads no history; expected no history_column (or kind = {readers})",
                        h.get_ref(),
                        family.kind
                    ),
                ));
            }
            (Some(h), true) => {
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
            (None, false) => None,
        };
        let feature_columns = match &raw.feature_columns {
            None => None,
            Some(list) => {
                Some(self.feature_columns(list, &id_column, history_column.as_deref(), family)?)
            }
        };
        Ok(Input {
            path,
            read,
            storage,
            id_column,
            history_column,
            feature_columns,
            on_invalid: OnInvalid::Error,
        })
    }

    /// `[input] on_invalid`: `missing` only for a model that defines missing
    /// values (and then the default), else `error` by default.
    fn on_invalid(&self, raw: &raw::InputTable, spec: &ModelSpec) -> Result<OnInvalid> {
        let Some(value) = &raw.on_invalid else {
            return Ok(match spec.accepts_missing() {
                true => OnInvalid::Missing,
                false => OnInvalid::Error,
            });
        };
        let chosen = self.choice(
            value,
            "[input] on_invalid",
            "what an invalid feature does",
            ON_INVALID,
        )?;
        if chosen == OnInvalid::Missing && !spec.accepts_missing() {
            return Err(self.error(
                value.span(),
                format!(
                    "[input] on_invalid = \"missing\" passes null, NaN and infinite features to the \
                     model as NaN, but [model] kind = '{}' does not define missing values; \
                     expected \"error\" or \"skip\"",
                    spec.kind_name()
                ),
            ));
        }
        Ok(chosen)
    }

    /// `[input] feature_columns`: each once, none of them the id or history
    /// column, at least one for a kind that scores feature vectors.
    fn feature_columns(
        &self,
        list: &Spanned<Vec<Spanned<String>>>,
        id_column: &str,
        history_column: Option<&str>,
        family: &Family,
    ) -> Result<Vec<String>> {
        if list.get_ref().is_empty() && family.needs_features {
            return Err(self.error(
                list.span(),
                format!(
                    "[input] feature_columns is empty, but [model] kind = '{}' scores \
                     feature vectors; expected at least one column (or no feature_columns \
                     for every column but the id column)",
                    family.kind
                ),
            ));
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut names = Vec::with_capacity(list.get_ref().len());
        for column in list.get_ref() {
            let name = self.column(column, "a name in [input] feature_columns")?;
            for (other, what) in [
                (Some(id_column), "id_column"),
                (history_column, "history_column"),
            ] {
                if other == Some(name.as_str()) {
                    return Err(self.error(
                        column.span(),
                        format!(
                            "[input] feature_columns lists '{name}', the {what}; \
                             expected feature columns only"
                        ),
                    ));
                }
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
        Ok(names)
    }

    /// `[model]`: the weights, then the chosen family's settings; a key of
    /// another kind is refused, naming the kinds it belongs to.
    fn model(&self, table: &Spanned<raw::ModelTable>, family: &Family) -> Result<Model> {
        let raw = table.get_ref();
        // The model file: `path` for kinds that take one (an ONNX file),
        // `weights` for the others.
        let takes_path = family.keys.contains(&"path");
        let weights = match (&raw.weights, takes_path) {
            (Some(w), false) => self.path(w, "[model] weights")?,
            (Some(w), true) => {
                return Err(self.error(
                    w.span(),
                    format!(
                        "[model] weights is not a key of kind = '{}'; expected path = the \
                         model file",
                        family.kind
                    ),
                ));
            }
            (None, true) => match &raw.path {
                Some(p) => self.path(p, "[model] path")?,
                None => {
                    return Err(self.error(
                        table.span(),
                        format!(
                            "[model] has no path; kind = '{}' needs path = the model file",
                            family.kind
                        ),
                    ));
                }
            },
            (None, false) => {
                return Err(self.error(
                    table.span(),
                    format!(
                        "[model] has no weights; kind = '{}' needs weights = the safetensors file",
                        family.kind
                    ),
                ));
            }
        };
        if let Some((key, span)) = raw
            .kind_keys()
            .into_iter()
            .find(|(key, _)| !family.keys.contains(key))
        {
            return Err(self.error(
                span,
                format!(
                    "[model] {key} is a key of kind = {}, not of kind = '{}'; \
                     expected it removed",
                    kinds_where(|f| f.keys.contains(&key)),
                    family.kind
                ),
            ));
        }
        let spec = (family.resolve)(raw, self)?;
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

    fn validate(
        &self,
        raw: Option<&raw::ValidateTable>,
        kind_value: &Spanned<String>,
        spec: &ModelSpec,
    ) -> Result<Validate> {
        let Some(raw) = raw else {
            return Ok(Validate {
                min_coverage: 1.0,
                max_non_finite: 0,
                spot_check: DEFAULT_SPOT_CHECK as u64,
                max_topk_churn: None,
                max_mean_shift: None,
                min_rows: DEFAULT_MIN_ROWS as u64,
                max_row_change: DEFAULT_MAX_ROW_CHANGE,
            });
        };
        let min_rows = self.int_or(
            &raw.min_rows,
            DEFAULT_MIN_ROWS,
            "[validate] min_rows",
            0,
            None,
        )?;
        let max_row_change = raw
            .max_row_change
            .as_ref()
            .map_or(Ok(DEFAULT_MAX_ROW_CHANGE), |v| {
                self.number(v, "[validate] max_row_change", 0.0, None)
            })?;
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
            Some(v) if spec.top_k().is_none() => {
                return Err(self.error(
                    v.span(),
                    format!(
                        "[validate] max_topk_churn is for kind = {}, but [model] kind = \
                         '{}' (line {}) has no top-K; expected it removed (max_mean_shift \
                         checks drift of scores)",
                        kinds_where(|f| f.keys.contains(&"top_k")),
                        spec.kind_name(),
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
            min_rows: min_rows as u64,
            max_row_change,
        })
    }

    fn generate(
        &self,
        raw: &raw::GenerateTable,
        kind_value: &Spanned<String>,
        family: &Family,
    ) -> Result<Generate> {
        let kinds: Vec<(&str, (GenerateKind, &str))> = GENERATE_KINDS
            .iter()
            .map(|&(name, kind, model)| (name, (kind, model)))
            .collect();
        let (gen_kind, model_kind) =
            self.choice(&raw.kind, "[generate] kind", "a data set kind", &kinds)?;
        if model_kind != family.kind {
            let expected = match GENERATE_KINDS.iter().find(|g| g.2 == family.kind) {
                Some(g) => format!("expected kind = '{}'", g.0),
                None => format!(
                    "kind = '{}' has no synthetic data set; expected no [generate] table",
                    family.kind
                ),
            };
            return Err(self.error(
                raw.kind.span(),
                format!(
                    "[generate] kind = '{}' does not match [model] kind = '{}' (line {}); {expected}",
                    raw.kind.get_ref(),
                    kind_value.get_ref(),
                    self.line_of(&kind_value.span()),
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
        let min_features = if family.needs_features { 1 } else { 0 };
        let features = self.int_or(
            &raw.features,
            DEFAULT_GENERATE_FEATURES,
            "[generate] features",
            min_features,
            Some(MAX_GENERATE_FEATURES),
        )?;
        let seed = self.int_or(&raw.seed, DEFAULT_GENERATE_SEED, "[generate] seed", 0, None)?;
        let trees = self.int_or(
            &raw.trees,
            DEFAULT_GENERATE_TREES,
            "[generate] trees",
            1,
            Some(MAX_GENERATE_TREES),
        )?;
        let depth = self.int_or(
            &raw.depth,
            DEFAULT_GENERATE_DEPTH,
            "[generate] depth",
            1,
            Some(MAX_GENERATE_DEPTH),
        )?;
        Ok(Generate {
            kind: gen_kind,
            users: users as u64,
            items: items as u32,
            dim: dim as usize,
            features: features as usize,
            seed: seed as u64,
            trees: trees as usize,
            depth: depth as usize,
        })
    }
}

/// The kinds (quoted, `'a' or 'b'`) of the families for which `pred` holds.
fn kinds_where(pred: impl Fn(&Family) -> bool) -> String {
    quoted(FAMILIES.iter().filter(|f| pred(f)).map(|f| f.kind))
}
