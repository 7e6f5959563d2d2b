//! The TOML files exactly as written: one struct per table, one field per key.
//!
//! This stage only checks what serde can check: that every key is known
//! (`deny_unknown_fields`), that required keys are present and that each value
//! has the right TOML type. Integers are read as `i64` (TOML's own integer
//! type) and enumerations as strings, so that [`super::resolve`] can reject an
//! out-of-range or misspelt value with a message that names the key, quotes
//! the value and says what was expected. Values that `resolve` checks keep
//! their byte span ([`Spanned`]) so that its errors carry a line and column.
//!
//! Nothing here applies defaults or checks one key against another; that is
//! `resolve`'s job.

use serde::Deserialize;
use toml::Spanned;

/// A job file (`jobs/*.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub job: Spanned<JobTable>,
    pub input: Spanned<InputTable>,
    pub model: Spanned<ModelTable>,
    pub partition: Option<PartitionTable>,
    pub stragglers: Option<StragglersTable>,
    pub output: Spanned<OutputTable>,
    pub validate: Option<ValidateTable>,
    pub generate: Option<Spanned<GenerateTable>>,
}

/// `[job]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTable {
    pub name: Spanned<String>,
    pub model_version: Spanned<String>,
    /// The fleet file; absent: `../hosts.toml` from the job file.
    pub hosts: Option<Spanned<String>>,
}

/// `[input]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTable {
    pub path: Spanned<String>,
    pub id_column: Spanned<String>,
    pub history_column: Option<Spanned<String>>,
    pub feature_columns: Option<Spanned<Vec<Spanned<String>>>>,
    pub read: Option<Spanned<String>>,
    pub storage: Option<StorageTable>,
    pub on_invalid: Option<Spanned<String>>,
}

/// `[model]`: the keys of every model kind; `resolve` rejects the keys that do
/// not belong to the chosen kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTable {
    pub kind: Spanned<String>,
    /// The weights file (mlp, two_tower).
    pub weights: Option<Spanned<String>>,
    // onnx
    pub path: Option<Spanned<String>>,
    pub inputs: Option<Spanned<std::collections::BTreeMap<String, Vec<String>>>>,
    // mlp
    pub layers: Option<Spanned<Vec<Spanned<String>>>>,
    pub output: Option<Spanned<String>>,
    // two_tower
    pub top_k: Option<Spanned<i64>>,
    pub max_history: Option<Spanned<i64>>,
    pub exclude_seen: Option<Spanned<bool>>,
}

impl ModelTable {
    /// The keys of one model kind or another that this table sets, with the
    /// span of each value, in the order above. A key added to the table is
    /// added here too and to its family's `keys`.
    pub fn kind_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        [
            ("path", self.path.as_ref().map(Spanned::span)),
            ("inputs", self.inputs.as_ref().map(Spanned::span)),
            ("layers", self.layers.as_ref().map(Spanned::span)),
            ("output", self.output.as_ref().map(Spanned::span)),
            ("top_k", self.top_k.as_ref().map(Spanned::span)),
            ("max_history", self.max_history.as_ref().map(Spanned::span)),
            (
                "exclude_seen",
                self.exclude_seen.as_ref().map(Spanned::span),
            ),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .collect()
    }
}

/// `[partition]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionTable {
    pub target_chunk_cost: Option<Spanned<i64>>,
}

/// `[stragglers]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StragglersTable {
    pub speculation: Option<bool>,
    pub split_running: Option<bool>,
    pub max_attempts: Option<Spanned<i64>>,
}

/// `[output]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputTable {
    pub store: Spanned<String>,
    /// A duration string (`"7d"`) or an integer number of seconds.
    pub ttl: Option<Spanned<toml::Value>>,
    pub keep_versions: Option<Spanned<i64>>,
    /// `[[output.sink]]` tables.
    pub sink: Option<Vec<SinkTable>>,
}

/// `[[output.sink]]`: one output beside the store; `kind` picks it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTable {
    pub kind: Spanned<String>,
    pub url: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub cluster: Option<Spanned<bool>>,
    pub encoding: Option<Spanned<String>>,
}

/// `[validate]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateTable {
    pub min_coverage: Option<Spanned<f64>>,
    pub max_non_finite: Option<Spanned<i64>>,
    pub spot_check: Option<Spanned<i64>>,
    pub max_topk_churn: Option<Spanned<f64>>,
    pub max_mean_shift: Option<Spanned<f64>>,
    pub min_rows: Option<Spanned<i64>>,
    pub max_row_change: Option<Spanned<f64>>,
}

/// `[generate]`: the synthetic data set a demo job makes for itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateTable {
    pub kind: Spanned<String>,
    pub users: Option<Spanned<i64>>,
    pub items: Option<Spanned<i64>>,
    pub dim: Option<Spanned<i64>>,
    pub features: Option<Spanned<i64>>,
    pub seed: Option<Spanned<i64>>,
    pub trees: Option<Spanned<i64>>,
    pub depth: Option<Spanned<i64>>,
}

/// A fleet file (`hosts.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// `[[host]]` entries; absent or empty is an error in `resolve`.
    pub host: Option<Vec<Spanned<HostTable>>>,
}

/// One `[[host]]`: the keys of every host kind; `resolve` rejects the keys
/// that do not belong to the chosen kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTable {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    // ssh
    pub address: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub user: Option<Spanned<String>>,
    pub identity: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
    pub trust: Option<Spanned<String>>,
    pub worker_binary: Option<Spanned<String>>,
    pub reconnect_window: Option<Spanned<String>>,
    // slurm
    pub partition: Option<Spanned<String>>,
    pub time: Option<Spanned<String>>,
    pub account: Option<Spanned<String>>,
    pub qos: Option<Spanned<String>>,
    pub gres: Option<Spanned<String>>,
    pub gpus_per_task: Option<Spanned<i64>>,
    pub cpus_per_task: Option<Spanned<i64>>,
    pub extra_args: Option<Spanned<Vec<String>>>,
    pub ship: Option<Spanned<String>>,
    pub requeue: Option<Spanned<bool>>,
    pub start_timeout: Option<Spanned<String>>,
    pub node_cache: Option<Spanned<String>>,
    // every kind
    pub slots: Option<Spanned<i64>>,
    pub device: Option<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
    pub cost_per_hour: Option<Spanned<f64>>,
    /// Accepted by the parser only so that `resolve` can refuse it with a
    /// message of its own: passwords are never read from files.
    pub password: Option<Spanned<toml::Value>>,
}

impl HostTable {
    /// The keys of one host kind or another that this entry sets, with the
    /// span of each value, in the order above. A key added to the table is
    /// added here too and to its kind's `keys`.
    pub fn kind_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        [
            ("address", self.address.as_ref().map(Spanned::span)),
            ("port", self.port.as_ref().map(Spanned::span)),
            ("user", self.user.as_ref().map(Spanned::span)),
            ("identity", self.identity.as_ref().map(Spanned::span)),
            ("known_hosts", self.known_hosts.as_ref().map(Spanned::span)),
            ("trust", self.trust.as_ref().map(Spanned::span)),
            (
                "worker_binary",
                self.worker_binary.as_ref().map(Spanned::span),
            ),
            (
                "reconnect_window",
                self.reconnect_window.as_ref().map(Spanned::span),
            ),
            ("partition", self.partition.as_ref().map(Spanned::span)),
            ("time", self.time.as_ref().map(Spanned::span)),
            ("account", self.account.as_ref().map(Spanned::span)),
            ("qos", self.qos.as_ref().map(Spanned::span)),
            ("gres", self.gres.as_ref().map(Spanned::span)),
            (
                "gpus_per_task",
                self.gpus_per_task.as_ref().map(Spanned::span),
            ),
            (
                "cpus_per_task",
                self.cpus_per_task.as_ref().map(Spanned::span),
            ),
            ("extra_args", self.extra_args.as_ref().map(Spanned::span)),
            ("ship", self.ship.as_ref().map(Spanned::span)),
            ("requeue", self.requeue.as_ref().map(Spanned::span)),
            (
                "start_timeout",
                self.start_timeout.as_ref().map(Spanned::span),
            ),
            ("node_cache", self.node_cache.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .collect()
    }
}

/// Keys the parser accepts but that are never valid; left out of the list of
/// allowed keys in "unknown key" messages.
pub const REFUSED_KEYS: &[&str] = &[
    "password",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "account_key",
];

/// `[input.storage]`: object-store options for a URL input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageTable {
    pub endpoint: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub allow_http: Option<Spanned<bool>>,
    /// Accepted by the parser only so that `resolve` can refuse them with a
    /// message of their own: credentials come from the environment.
    pub access_key_id: Option<Spanned<toml::Value>>,
    pub secret_access_key: Option<Spanned<toml::Value>>,
    pub session_token: Option<Spanned<toml::Value>>,
    pub account_key: Option<Spanned<toml::Value>>,
}

/// For the tests of a kind table (model families, host kinds): every key
/// serde knows for `T` beyond `common`, each set alone on top of `base` (to
/// the first TOML value of a type it takes), must be reported by
/// `kind_keys` of the parsed table as itself and belong to one of `kinds`
/// (each kind's own keys); and every kind's key must be a key of `T`.
/// Derived from the struct itself, so a key added to the table is checked
/// without the test naming it. `table` and `kind` name them in failures.
#[cfg(test)]
pub(crate) fn assert_kind_table<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    base: &str,
    common: &[&str],
    kind_keys: impl Fn(&T) -> Vec<&'static str>,
    kinds: &[&[&str]],
    table: &str,
    kind: &str,
) {
    let e = toml::from_str::<T>(&format!("{base}\nnot_a_key = 1\n")).unwrap_err();
    let fields: Vec<String> = e
        .message()
        .split('`')
        .skip(3)
        .step_by(2)
        .map(String::from)
        .filter(|f| !common.contains(&f.as_str()))
        .collect();
    assert!(!fields.is_empty(), "no keys found in: {}", e.message());
    for field in &fields {
        let parsed = ["'x'", "1", "true", "1.5", "['x']", "{ x = ['x'] }"]
            .iter()
            .find_map(|v| toml::from_str::<T>(&format!("{base}\n{field} = {v}\n")).ok())
            .unwrap_or_else(|| panic!("no TOML value fits key '{field}'"));
        assert_eq!(
            kind_keys(&parsed),
            [field.as_str()],
            "kind_keys of a table setting '{field}'"
        );
        assert!(
            kinds.iter().any(|k| k.contains(&field.as_str())),
            "'{field}' belongs to no {kind}"
        );
    }
    for key in kinds.iter().flat_map(|k| k.iter()) {
        assert!(fields.iter().any(|f| f == key), "'{key}' is no {table} key");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown_key_refused<T: serde::de::DeserializeOwned + std::fmt::Debug>(base: &str) {
        let text = format!("{base}\nnot_a_key = 1\n");
        let e = toml::from_str::<T>(&text).expect_err("an unknown key must be refused");
        assert!(
            e.message().starts_with("unknown field `not_a_key`"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn every_table_refuses_unknown_keys() {
        unknown_key_refused::<JobTable>("name = 'a'\nmodel_version = 'v'");
        unknown_key_refused::<InputTable>("path = 'p'\nid_column = 'id'");
        unknown_key_refused::<ModelTable>("kind = 'mlp'\nweights = 'w'");
        unknown_key_refused::<PartitionTable>("");
        unknown_key_refused::<StragglersTable>("");
        unknown_key_refused::<OutputTable>("store = 's'");
        unknown_key_refused::<ValidateTable>("");
        unknown_key_refused::<GenerateTable>("kind = 'mlp'");
        unknown_key_refused::<StorageTable>("");
        unknown_key_refused::<HostTable>("name = 'a'\nkind = 'local'");
        unknown_key_refused::<FleetFile>("");
        unknown_key_refused::<JobFile>(
            "[job]\nname = 'a'\nmodel_version = 'v'\n[input]\npath = 'p'\nid_column = 'i'\n\
             [model]\nkind = 'mlp'\nweights = 'w'\n[output]\nstore = 's'\n",
        );
    }

    #[test]
    fn values_keep_their_spans() {
        let text = "kind = 'mlp'\nweights = 'w'\ntop_k = 5\n";
        let m: ModelTable = toml::from_str(text).unwrap();
        let top_k = m.top_k.unwrap();
        assert_eq!(&text[top_k.span()], "5");
        assert_eq!(&text[m.kind.span()], "'mlp'");
    }
}
