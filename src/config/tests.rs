//! Resolving job and fleet files: every rule, default and message.
use super::source::beside;
use super::*;
use crate::model::{MlpSpec, ModelSpec, OutputActivation, TwoTowerSpec};
use std::path::{Path, PathBuf};

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
            seed: 42,
            trees: 500,
            depth: 8,
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
            "[generate] kind = 'two_tower' is not a data set kind; expected 'two-tower', 'mlp' or 'gbdt'",
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
                    worker_binary: None,
                    reconnect_window_secs: DEFAULT_RECONNECT_WINDOW_SECS
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
    let Transport::Ssh(s) = fleet(&ssh(extra)).unwrap().hosts.remove(0).transport else {
        panic!("expected an ssh host");
    };
    s
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
        &["host 'a': kind = 'remote' is not a host kind; expected 'local', 'ssh' or 'slurm'"],
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
    let Transport::Ssh(s) = &fleet(text).unwrap().hosts[0].transport else {
        panic!("expected ssh");
    };
    assert_eq!(s.address, "[::1]:22");
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
fn ssh_reconnect_window_defaults_to_30_s_and_takes_a_duration() {
    assert_eq!(
        one_ssh("").reconnect_window_secs,
        DEFAULT_RECONNECT_WINDOW_SECS
    );
    assert_eq!(DEFAULT_RECONNECT_WINDOW_SECS, 30);
    assert_eq!(
        one_ssh("reconnect_window = \"2m\"").reconnect_window_secs,
        120
    );
    let text = ssh("reconnect_window = \"x5\"");
    let e = error_at(fleet(&text), &text, "reconnect_window");
    assert_contains(&e, &["host 'a': reconnect_window = 'x5' is not a duration"]);
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
