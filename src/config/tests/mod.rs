//! Resolving job and fleet files: every rule, default and message.
use super::source::beside;
use super::*;
use crate::model::{MlpSpec, ModelSpec, OutputActivation, TwoTowerSpec};
use std::path::{Path, PathBuf};

mod fleet;
mod ranges;

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
    assert_eq!(j.input.path, Location::Local("data/users.parquet".into()));
    assert_eq!(j.input.id_column, "user_id");
    assert_eq!(j.input.history_column.as_deref(), Some("history"));
    assert_eq!(
        j.input.feature_columns,
        Some(vec!["f0".to_string(), "f1".to_string()])
    );
    assert_eq!(
        j.model.spec,
        ModelSpec::TwoTower(TwoTowerSpec {
            top_k: 100,
            max_history: 500,
            exclude_seen: true
        })
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
        ModelSpec::Mlp(MlpSpec {
            layers: None,
            output: OutputActivation::Sigmoid
        })
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
            max_mean_shift: None,
            min_rows: 1,
            max_row_change: 0.5,
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
    assert_eq!(j.input.path, Location::Local("~/data/a.parquet".into()));
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
    let text = with(MLP, "input", "path", "path = \"s3://bucket/users/\"")
        + "[input.storage]\nendpoint = \"http://127.0.0.1:9000/\"\nregion = \"us-east-1\"\n\
           allow_http = true\n";
    let j = job(&text).unwrap();
    assert_eq!(j.input.read, ReadMode::Auto);
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
    for (name, mode) in READ_MODES {
        let text = with(
            MLP,
            "input",
            "path",
            &format!("path = \"u/\"\nread = \"{name}\""),
        );
        assert_eq!(job(&text).unwrap().input.read, *mode);
    }
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
             expected 'mlp', 'two_tower' or 'onnx'"
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
        &["unknown table [model.extra]; expected one of the keys in [model]: 'kind', 'weights'"],
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
        let kinds = if key == "top_k" {
            "'two_tower' or 'onnx'"
        } else {
            "'two_tower'"
        };
        assert_contains(
            &e,
            &[&format!(
                "[model] {key} is a key of kind = {kinds}, not of kind = 'mlp'"
            )],
        );
    }
    for line in ["layers = [\"fc1\"]", "output = \"none\""] {
        let key = line.split(' ').next().unwrap();
        let text = with(TWO_TOWER, "model", key, line);
        let e = error_at(job(&text), &text, line);
        let kinds = if key == "output" {
            "'mlp' or 'onnx'"
        } else {
            "'mlp'"
        };
        assert_contains(
            &e,
            &[&format!(
                "[model] {key} is a key of kind = {kinds}, not of kind = 'two_tower'"
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
        ModelSpec::Mlp(MlpSpec {
            layers: Some(vec!["fc1".into(), "fc2".into()]),
            output: OutputActivation::Softmax
        })
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
        ModelSpec::TwoTower(TwoTowerSpec {
            top_k: 100,
            max_history: 500,
            exclude_seen: true
        })
    );
    let text = with(TWO_TOWER, "model", "top_k", "top_k = 10_000");
    let text = with(&text, "model", "exclude_seen", "exclude_seen = false");
    assert_eq!(
        job(&text).unwrap().model.spec,
        ModelSpec::TwoTower(TwoTowerSpec {
            top_k: 10_000,
            max_history: 500,
            exclude_seen: false
        })
    );
}

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

#[test]
fn every_host_key_of_one_kind_belongs_to_a_kind_and_back() {
    let common = [
        "name",
        "kind",
        "slots",
        "device",
        "threads",
        "cost_per_hour",
        "password",
    ];
    let kinds: Vec<&[&str]> = super::fleet::HOST_KINDS.iter().map(|k| k.keys).collect();
    raw::assert_kind_table(
        "name = 'a'\nkind = 'ssh'",
        &common,
        |t: &raw::HostTable| t.kind_keys().into_iter().map(|(k, _)| k).collect(),
        &kinds,
        "[[host]]",
        "host kind",
    );
}

#[test]
fn output_sinks_resolve_with_defaults_and_their_url_kinds() {
    let text = format!(
        "{MLP}\n[[output.sink]]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n\n\
         [[output.sink]]\nkind = \"redis\"\nurl = \"rediss+cluster://cache.example:7000\"\n\
         prefix = \"churn\"\nencoding = \"binary\"\n"
    );
    let j = job(&text).unwrap();
    assert_eq!(
        j.output.sinks,
        [
            SinkSettings::Redis(RedisSettings {
                url: "redis://127.0.0.1:6379/0".into(),
                tls: false,
                cluster: false,
                prefix: DEFAULT_SINK_PREFIX.into(),
                encoding: RedisEncoding::Json,
            }),
            SinkSettings::Redis(RedisSettings {
                url: "rediss+cluster://cache.example:7000".into(),
                tls: true,
                cluster: true,
                prefix: "churn".into(),
                encoding: RedisEncoding::Binary,
            }),
        ]
    );
    assert!(job(MLP).unwrap().output.sinks.is_empty());
    let cluster_key = format!(
        "{MLP}\n[[output.sink]]\nkind = \"redis\"\nurl = \"redis://[::1]:7000\"\ncluster = true\n"
    );
    let SinkSettings::Redis(r) = &job(&cluster_key).unwrap().output.sinks[0];
    assert!(r.cluster && !r.tls);
}

#[test]
fn a_bad_sink_table_is_refused_at_its_line() {
    let sink = |body: &str| format!("{MLP}\n[[output.sink]]\n{body}\n");
    for (body, needle, parts) in [
        (
            "kind = \"kafka\"",
            "kind",
            &["kind = 'kafka'", "'redis'"][..],
        ),
        ("kind = \"redis\"", "kind", &["needs url"][..]),
        (
            "kind = \"redis\"\nurl = \"http://x:1\"",
            "url",
            &["scheme 'http'"][..],
        ),
        (
            "kind = \"redis\"\nurl = \"127.0.0.1:6379\"",
            "url",
            &["no scheme"][..],
        ),
        (
            "kind = \"redis\"\nurl = \"redis://:6379\"",
            "url",
            &["no host"][..],
        ),
        (
            "kind = \"redis\"\nurl = \"redis://h:99999\"",
            "url",
            &["port '99999'"][..],
        ),
        (
            "kind = \"redis\"\nurl = \"redis://h:1/zero\"",
            "url",
            &["database 'zero'"][..],
        ),
        (
            "kind = \"redis\"\nurl = \"redis://h\"\nprefix = \"\"",
            "prefix",
            &["prefix"][..],
        ),
        (
            "kind = \"redis\"\nurl = \"redis://h\"\nprefix = \"a b\"",
            "prefix",
            &["without spaces"][..],
        ),
        (
            "kind = \"redis\"\nurl = \"redis://h\"\nencoding = \"xml\"",
            "encoding",
            &["'json'"][..],
        ),
    ] {
        let text = sink(body);
        let needle = format!("\n{needle} =");
        let line = text[..text.rfind(&needle).unwrap() + 1].lines().count() + 1;
        let e = job(&text).expect_err(body);
        assert_eq!(e.line, Some(line), "{body}: {e}");
        assert_contains(&e, parts);
    }
    let e = job(&sink("kind = \"redis\"\nurl = \"redis://h\"\nttl = 5")).expect_err("unknown key");
    assert_contains(&e, &["ttl"]);
}

#[test]
fn onnx_takes_a_path_its_inputs_output_and_top_k() {
    let onnx = with(MLP, "model", "kind", "kind = \"onnx\"");
    let onnx = with(&onnx, "model", "weights", "");
    let e = job(&onnx).unwrap_err().to_string();
    assert!(
        e.contains("[model] has no path; kind = 'onnx' needs path"),
        "{e}"
    );

    let weights = with(&onnx, "model", "weights", "weights = \"m.onnx\"");
    let e = error_at(job(&weights), &weights, "weights = \"m.onnx\"");
    assert_contains(&e, &["[model] weights is not a key of kind = 'onnx'"]);

    let text = with(&onnx, "model", "path", "path = \"../models/churn.onnx\"");
    let text = with(&text, "model", "top_k", "top_k = 3");
    let text =
        format!("{text}\n[model.inputs]\ndense = [\"f0\", \"f1\"]\nids = [\"country\", \"f0\"]\n");
    let j = job(&text).unwrap();
    assert!(j.model.weights.ends_with("models/churn.onnx"));
    assert_eq!(j.model.spec.top_k(), Some(3));
    // The columns of [model.inputs] are the ones read, each once.
    assert_eq!(
        j.input.feature_columns,
        Some(vec!["f0".to_string(), "f1".into(), "country".into()])
    );

    let both = with(
        &text,
        "input",
        "feature_columns",
        "feature_columns = [\"f0\"]",
    );
    let e = error_at(job(&both), &both, "feature_columns = [\"f0\"]");
    assert_contains(
        &e,
        &["[input] feature_columns is set, but [model.inputs] names"],
    );
}
