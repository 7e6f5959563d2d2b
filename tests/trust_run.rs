//! What a run refuses to trust, through the real binary: workers that lie
//! about attempts or send malformed results, versions too small or too
//! different from live, invalid feature values, a `--resume` under changed
//! settings, malformed `Run` messages to a worker, and SIGTERM / SIGHUP.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, Float32Array, RecordBatch};
use arrow_schema::{Field, Schema};
use common::{HERD, JobShape, Scratch, text};
use herd::store::{Store, Value};

use herd::test_hooks::BAD_SLOT_ENV;

/// `herd ARGS` in the scratch folder with `env` set (and no other hooks).
fn herd_env(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(HERD);
    cmd.args(args)
        .current_dir(s.dir.path())
        .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
        .env_remove(herd::worker::FAULT_ENV)
        .env_remove(BAD_SLOT_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run herd")
}

/// Every (entity, value) of the live version.
fn live_contents(s: &Scratch) -> Vec<(Vec<u8>, Value)> {
    let store = Store::open_existing(&s.store()).unwrap();
    let live = store.live().unwrap().expect("a live version");
    let mut out = Vec::new();
    store
        .for_each(live, |k, v| {
            out.push((k.to_vec(), v.to_value()));
            true
        })
        .unwrap();
    out
}

fn report(s: &Scratch) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(s.path("report.json")).expect("report written"))
        .expect("report is JSON")
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["validation"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

/// A clean run's live contents for the default job shape (data generated
/// from the same seed, so every scratch of this shape has the same input).
fn clean_contents() -> Vec<(Vec<u8>, Value)> {
    let s = Scratch::new(&JobShape::default());
    let out = herd_env(&s, &["run", "job.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    live_contents(&s)
}

#[test]
fn a_worker_lying_about_attempts_loses_its_slot_and_the_run_goes_live_unharmed() {
    let clean = clean_contents();
    for fault in ["misroute", "forge", "progress", "invalid"] {
        let s = Scratch::new(&JobShape::default());
        let out = herd_env(
            &s,
            &["run", "job.toml", "--report", "report.json"],
            &[
                (BAD_SLOT_ENV, &format!("0:{fault}")),
                // The honest slot slowed, so the liar (whose worker may
                // load a little later) is sure to be handed some of the
                // 12 small chunks before the honest one has scored them all.
                (herd::run::TEST_SLOW_SLOT_ENV, "1:20"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{fault}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("local#0") && stderr.contains("protocol violation"),
            "{fault}: the violation is logged with the slot: {stderr}"
        );
        assert_eq!(
            live_contents(&s),
            clean,
            "{fault}: a lying worker's results reached the version"
        );
        // The liar finished nothing: its first lie ended it.
        let r = report(&s);
        let timeline = r["timeline"].as_array().unwrap();
        assert!(
            timeline.iter().any(|a| a["slot"] == 0),
            "{fault}: the liar ran nothing: {r}"
        );
        assert!(
            !timeline
                .iter()
                .any(|a| a["slot"] == 0 && a["state"] == "done"),
            "{fault}: an attempt of the liar finished: {r}"
        );
    }
}

#[test]
fn a_malformed_result_fails_only_its_attempt_and_is_retried_elsewhere() {
    let clean = clean_contents();
    for fault in ["extra", "overlong", "offsets", "drop"] {
        let s = Scratch::new(&JobShape::default());
        let out = herd_env(
            &s,
            &["run", "job.toml", "--report", "report.json"],
            &[
                (BAD_SLOT_ENV, &format!("0:{fault}")),
                // The honest slot slowed, so the liar (whose worker may
                // load a little later) is sure to be handed some of the
                // 12 small chunks before the honest one has scored them all.
                (herd::run::TEST_SLOW_SLOT_ENV, "1:20"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{fault}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("malformed result"),
            "{fault}: the refused result is logged: {stderr}"
        );
        let r = report(&s);
        assert!(r["retries"].as_u64().unwrap() >= 1, "{fault}: {r}");
        assert_eq!(live_contents(&s), clean, "{fault}");
    }
}

#[test]
fn min_rows_and_max_row_change_refuse_versions_and_the_report_states_the_sample() {
    let s = Scratch::new(&JobShape::default());
    let out = herd_env(&s, &["run", "job.toml", "--report", "report.json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&s);
    let spot = check(&r, "spot_check")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        spot.contains("a sample of 50 drawn uniformly from 600 entities"),
        "{spot}"
    );
    assert_eq!(check(&r, "rows")["passed"], true, "{r}");

    // A third of the rows against a live version of 600: refused.
    let job = std::fs::read_to_string(s.job()).unwrap();
    let small = job
        .replace("users.parquet", "small.parquet")
        .replace("users = 600", "users = 200")
        .replace("two_tower.safetensors", "small.safetensors");
    s.write("job.toml", &small);
    let out = herd_env(&s, &["run", "job.toml", "--report", "report.json"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let r = report(&s);
    let rows = check(&r, "rows");
    assert_eq!(rows["passed"], false, "{r}");
    assert!(
        rows["detail"]
            .as_str()
            .unwrap()
            .contains("max_row_change 0.5"),
        "{rows}"
    );
    assert_eq!(
        Store::open_existing(&s.store()).unwrap().live().unwrap(),
        Some(1)
    );

    // Raised by the user, the same change goes live.
    s.write(
        "job.toml",
        &small.replace("[validate]\n", "[validate]\nmax_row_change = 0.9\n"),
    );
    let out = herd_env(&s, &["run", "job.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // More rows wanted than the input has: never flips.
    s.write(
        "job.toml",
        &small.replace(
            "[validate]\n",
            "[validate]\nmax_row_change = 0.9\nmin_rows = 201\n",
        ),
    );
    let out = herd_env(&s, &["run", "job.toml", "--report", "report.json"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let rows = check(&report(&s), "rows").clone();
    assert!(
        rows["detail"]
            .as_str()
            .unwrap()
            .starts_with("200 rows (min_rows 201)"),
        "{rows}"
    );
}

#[test]
fn an_empty_input_never_replaces_a_live_version() {
    let s = Scratch::new(&JobShape::default());
    let out = herd_env(&s, &["run", "job.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The same columns, no rows.
    let batches = read_parquet(&s.path("data/users.parquet"));
    let empty = batches[0].slice(0, 0);
    write_parquet(&s.path("data/empty.parquet"), &[empty]);
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("users.parquet", "empty.parquet")
            .replace("[validate]\n", "[validate]\nmax_row_change = 1.0\n"),
    );
    let out = herd_env(&s, &["run", "job.toml", "--report", "report.json"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let rows = check(&report(&s), "rows").clone();
    assert_eq!(rows["passed"], false, "{rows}");
    assert!(
        rows["detail"]
            .as_str()
            .unwrap()
            .starts_with("0 rows (min_rows 1)"),
        "{rows}"
    );
    let store = Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.live().unwrap(), Some(1));
    assert_eq!(store.len(1).unwrap(), 600);
}

#[test]
fn with_exclude_seen_off_history_items_in_the_top_k_pass_the_gate() {
    // Few items, long histories: most top-K lists hold a seen item.
    let shape = JobShape {
        items: 60,
        ..Default::default()
    };
    let s = Scratch::new(&shape);
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("exclude_seen = true", "exclude_seen = false"),
    );
    let out = herd_env(&s, &["run", "job.toml", "--report", "report.json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The case the gate used to refuse is there: a seen item recommended.
    let batches = read_parquet(&s.path("data/users.parquet"));
    let histories = history_lists(&batches);
    let live = live_contents(&s);
    let seen_recommended = live.iter().any(|(key, value)| {
        let id = u64::from_be_bytes(key.as_slice().try_into().unwrap());
        let Value::TopK(pairs) = value else {
            return false;
        };
        pairs
            .iter()
            .any(|(item, _)| histories[id as usize].contains(&(*item as i64)))
    });
    assert!(seen_recommended, "no top-K list holds a seen item");
}

// ---- invalid feature values ----

/// The job's input with feature `f1` NaN at row 7, `f2` null at row 12 and
/// `f0` infinite at row 30.
fn plant_invalid_features(s: &Scratch) {
    let out = herd_env(
        s,
        &[
            "gen",
            "two-tower",
            "--out",
            "data",
            "--users",
            "600",
            "--items",
            "3000",
            "--dim",
            "16",
            "--features",
            "3",
            "--seed",
            "3",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let batches = read_parquet(&s.path("data/users.parquet"));
    let mut first = 0usize;
    let mut out_batches = Vec::new();
    for b in &batches {
        let n = b.num_rows();
        let schema = b.schema();
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let col = b.column(i).clone();
            let bad: Option<(usize, Option<f32>)> = match f.name().as_str() {
                "f1" => Some((7, Some(f32::NAN))),
                "f2" => Some((12, None)),
                "f0" => Some((30, Some(f32::INFINITY))),
                _ => None,
            };
            match bad {
                Some((row, value)) => {
                    let a = col.as_any().downcast_ref::<Float32Array>().unwrap();
                    let v: Float32Array = (0..n)
                        .map(|i| match first + i == row {
                            true => value,
                            false => Some(a.value(i)),
                        })
                        .collect();
                    fields.push(Field::new(f.name(), f.data_type().clone(), true));
                    columns.push(Arc::new(v));
                }
                None => {
                    fields.push(f.as_ref().clone());
                    columns.push(col);
                }
            }
        }
        out_batches.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap());
        first += n;
    }
    write_parquet(&s.path("data/users.parquet"), &out_batches);
}

#[test]
fn an_invalid_feature_stops_the_run_naming_file_column_and_row_and_leaves_no_version() {
    // Checked by whoever reads the chunk: the worker (auto, a local host)
    // or the coordinator's read thread.
    for read in ["auto", "coordinator"] {
        let s = Scratch::new(&JobShape::default());
        plant_invalid_features(&s);
        let job = std::fs::read_to_string(s.job()).unwrap();
        s.write(
            "job.toml",
            &job.replace("[input]\n", &format!("[input]\nread = \"{read}\"\n")),
        );
        let out = herd_env(&s, &["run", "job.toml"], &[]);
        assert_eq!(out.status.code(), Some(2), "{read}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The first invalid row of the input (7), and of its values the
        // first column, though column f0 holds one further down (row 30).
        assert!(
            stderr.contains("users.parquet: column 'f1', row 7: the feature is NaN"),
            "{read}: {stderr}"
        );
        assert!(stderr.contains("on_invalid"), "{read}: {stderr}");
        // The version begun for the run is dropped: none is left.
        if let Ok(store) = Store::open_existing(&s.store()) {
            assert!(store.versions().unwrap().is_empty(), "{read}");
        }
    }
}

#[test]
fn on_invalid_skip_leaves_the_entities_out_and_lists_them() {
    let s = Scratch::new(&JobShape::default());
    plant_invalid_features(&s);
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("[input]\n", "[input]\non_invalid = \"skip\"\n"),
    );
    let out = herd_env(&s, &["run", "job.toml", "--report", "report.json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&s);
    assert_eq!(r["skipped"], 3, "{r}");
    let listed: Vec<(u64, String, String)> = r["skipped_entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["column"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (7, "f1".into(), "NaN".into()),
            (12, "f2".into(), "null".into()),
            (30, "f0".into(), "inf".into())
        ]
    );
    let coverage = check(&r, "coverage");
    assert_eq!(coverage["passed"], true, "{coverage}");
    assert!(
        coverage["detail"]
            .as_str()
            .unwrap()
            .contains("597 of 597 distinct input entities")
            && coverage["detail"]
                .as_str()
                .unwrap()
                .contains("3 entities excluded"),
        "{coverage}"
    );
    let store = Store::open_existing(&s.store()).unwrap();
    let live = store.live().unwrap().unwrap();
    assert_eq!(store.len(live).unwrap(), 597);
    for id in [7u64, 12, 30] {
        assert!(
            store
                .get(&herd::model::EntityKey::Int(id), None, 0)
                .unwrap()
                .is_none(),
            "user {id} was skipped but has a prediction"
        );
    }
}

#[test]
fn on_invalid_missing_is_refused_for_a_model_kind_without_missing_values() {
    let s = Scratch::new(&JobShape::default());
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("[input]\n", "[input]\non_invalid = \"missing\"\n"),
    );
    let out = herd_env(&s, &["run", "job.toml"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("on_invalid") && stderr.contains("'two_tower'"),
        "{stderr}"
    );
}

/// A model whose scores overflow to infinity (huge weights) is the
/// model's fault, not a worker's: the scores are committed, the gate's
/// `finite` check fails (exit 3, nothing flipped), and no worker is blamed
/// for a malformed result.
#[test]
fn non_finite_scores_fail_the_finite_check_not_the_worker() {
    let s = Scratch::new(&JobShape::default());
    let out = herd_env(
        &s,
        &[
            "gen",
            "mlp",
            "--out",
            "data",
            "--users",
            "300",
            "--features",
            "4",
            "--seed",
            "2",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let weights = s.path("data/mlp.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let huge: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let data = t
                .data()
                .chunks(4)
                .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * 1e30).to_le_bytes())
                .collect();
            (name, t.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = huge
        .iter()
        .map(|(n, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data);
            (n.clone(), view.unwrap())
        })
        .collect();
    std::fs::write(&weights, safetensors::serialize(views, None).unwrap()).unwrap();
    s.write(
        "mlp.toml",
        r#"[job]
name = "overflow"
model_version = "m1"
hosts = "hosts.toml"

[input]
path = "data/entities.parquet"
id_column = "entity_id"

[model]
kind = "mlp"
weights = "data/mlp.safetensors"
output = "none"

[output]
store = "store"
"#,
    );
    let out = herd_env(&s, &["run", "mlp.toml", "--report", "report.json"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("malformed") && !stderr.contains("protocol violation"),
        "{stderr}"
    );
    let report = report(&s);
    let finite = check(&report, "finite");
    assert_eq!(finite["passed"], false, "{report}");
    assert!(
        finite["detail"].as_str().unwrap().contains("non-finite"),
        "{report}"
    );
    assert_eq!(report["flipped"], false, "{report}");
}

// ---- resume and signals ----

/// A run slowed down (one slot, 40x) so that it can be stopped mid-way.
fn slow_scratch() -> Scratch {
    let s = Scratch::new(&JobShape {
        slots: 1,
        ..Default::default()
    });
    // Data first, so the slow run spends its time scoring.
    let out = herd_env(
        &s,
        &[
            "gen",
            "two-tower",
            "--out",
            "data",
            "--users",
            "600",
            "--items",
            "3000",
            "--dim",
            "16",
            "--features",
            "3",
            "--seed",
            "3",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    s
}

fn spawn_slow(s: &Scratch, args: &[&str]) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(HERD)
        .arg("run")
        .arg("job.toml")
        .args(args)
        .current_dir(s.dir.path())
        .env(herd::run::TEST_SLOW_SLOT_ENV, "0:40")
        .env_remove(herd::worker::FAULT_ENV)
        .env_remove(BAD_SLOT_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start herd")
}

/// Waits until version 1 has a committed chunk.
fn wait_for_commit(s: &Scratch, child: &mut Child) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let committed = Store::open_existing(&s.store())
            .ok()
            .and_then(|st| st.committed_ranges(1).ok())
            .is_some_and(|r| !r.is_empty());
        if committed {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("no chunk committed within 60 s");
}

#[test]
fn sigterm_and_sighup_stop_cleanly_and_the_version_resumes() {
    let clean = clean_contents();
    for (signal, name) in [(libc_sigterm(), "SIGTERM"), (libc_sighup(), "SIGHUP")] {
        let s = slow_scratch();
        let mut child = spawn_slow(&s, &[]);
        wait_for_commit(&s, &mut child);
        send_signal(child.id(), signal);
        let out = wait_output(child, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(stderr.contains("--resume"), "{name}: {stderr}");
        let out = herd_env(&s, &["run", "job.toml", "--resume"], &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("resuming version 1"));
        assert_eq!(live_contents(&s), clean, "{name}");
    }
}

#[test]
fn resume_refuses_changed_settings_naming_them_and_nothing_to_resume_exits_2() {
    let s = slow_scratch();
    // Nothing begun yet.
    let out = herd_env(&s, &["run", "job.toml", "--resume"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to resume"),
        "{}",
        text(&out)
    );

    let mut child = spawn_slow(&s, &[]);
    wait_for_commit(&s, &mut child);
    send_signal(child.id(), libc_sigterm());
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let job = std::fs::read_to_string(s.job()).unwrap();
    for (changed, setting) in [
        (job.replace("top_k = 10", "top_k = 11"), "[model] top_k"),
        (
            job.replace(
                "feature_columns = [\"f0\", \"f1\", \"f2\"]",
                "feature_columns = [\"f1\", \"f0\", \"f2\"]",
            ),
            "[input] feature_columns",
        ),
        (
            job.replace("exclude_seen = true", "exclude_seen = false"),
            "[model] exclude_seen",
        ),
    ] {
        assert_ne!(changed, job, "{setting}: the job text did not change");
        s.write("job.toml", &changed);
        let out = herd_env(&s, &["run", "job.toml", "--resume"], &[]);
        assert_eq!(out.status.code(), Some(2), "{setting}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(setting) && stderr.contains("version 1"),
            "{setting}: {stderr}"
        );
    }
    // The input's content changed (one value), same path and settings.
    s.write("job.toml", &job);
    let users = s.path("data/users.parquet");
    let original = std::fs::read(&users).unwrap();
    let original_mtime = std::fs::metadata(&users).unwrap().modified().unwrap();
    let mut batches = read_parquet(&users);
    batches[0] = with_first_f0_moved(&batches[0]);
    write_parquet(&users, &batches);
    let out = herd_env(&s, &["run", "job.toml", "--resume"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("input file 'data/users.parquet'"),
        "{}",
        text(&out)
    );
    // The same bytes written again: a new modification time, refused too,
    // saying why.
    std::fs::write(&users, &original).unwrap();
    let out = herd_env(&s, &["run", "job.toml", "--resume"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("modification time") && stderr.contains("run without --resume"),
        "{stderr}"
    );
    // Bytes and modification time restored: the same input, resumed.
    set_mtime(&users, original_mtime);
    let out = herd_env(&s, &["run", "job.toml", "--resume"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `batch` with its first `f0` value moved by 1.
fn with_first_f0_moved(b: &RecordBatch) -> RecordBatch {
    let i = b.schema().index_of("f0").unwrap();
    let f0 = b.column(i).as_any().downcast_ref::<Float32Array>().unwrap();
    let mut values: Vec<f32> = f0.values().to_vec();
    values[0] += 1.0;
    let mut columns = b.columns().to_vec();
    columns[i] = Arc::new(Float32Array::from(values));
    RecordBatch::try_new(b.schema(), columns).unwrap()
}

fn set_mtime(path: &std::path::Path, when: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// A file rewritten with changed feature values but the same size and the
/// same Parquet footer (no compression, dictionary or statistics, so
/// nothing in the footer depends on the values) is a changed input:
/// `--resume` refuses it, naming the file, instead of finishing the
/// version with a mix of old and new predictions.
#[test]
fn resume_refuses_an_input_rewritten_with_the_same_size_and_footer() {
    let s = slow_scratch();
    let users = s.path("data/users.parquet");
    let batches = read_parquet(&users);
    write_parquet_plain(&users, &batches);
    let before = std::fs::read(&users).unwrap();

    let mut child = spawn_slow(&s, &[]);
    wait_for_commit(&s, &mut child);
    send_signal(child.id(), libc_sigterm());
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let mut changed = batches.clone();
    changed[0] = with_first_f0_moved(&changed[0]);
    write_parquet_plain(&users, &changed);
    let after = std::fs::read(&users).unwrap();
    assert_eq!(after.len(), before.len(), "the rewrite changed the size");
    assert_ne!(after, before, "the rewrite changed nothing");
    let footer = |b: &[u8]| {
        let n = u32::from_le_bytes(b[b.len() - 8..b.len() - 4].try_into().unwrap()) as usize;
        b[b.len() - 8 - n..].to_vec()
    };
    assert_eq!(
        footer(&after),
        footer(&before),
        "the rewrite changed the footer"
    );

    let out = herd_env(&s, &["run", "job.toml", "--resume"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input file 'data/users.parquet'") && stderr.contains("version 1"),
        "{stderr}"
    );
}

/// `batches` written with nothing in the footer that depends on the values.
fn write_parquet_plain(path: &std::path::Path, batches: &[RecordBatch]) {
    use parquet::basic::Compression;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .build();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

// ---- the worker and malformed Run messages ----

#[test]
fn a_worker_answers_malformed_runs_with_errors_and_keeps_serving() {
    use herd::model::{EntityIds, ModelSpec, Rows, TwoTowerSpec};
    use herd::proto::{self, FromWorker, ToWorker};
    let s = slow_scratch();
    let weights = s.path("data/two_tower.safetensors");
    let sha = {
        use sha2::Digest;
        herd::worker::hex(&sha2::Sha256::digest(std::fs::read(&weights).unwrap()))
    };
    let mut w = Command::new(HERD)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = w.stdin.take().unwrap();
    let mut from = w.stdout.take().unwrap();
    let mut send = |m: &ToWorker| to.write_all(&proto::encode(m).unwrap()).unwrap();
    let mut recv = || -> FromWorker {
        let mut h = [0u8; proto::HEADER_BYTES];
        from.read_exact(&mut h).unwrap();
        let mut body = vec![0u8; proto::body_len(h).unwrap()];
        from.read_exact(&mut body).unwrap();
        proto::decode(&body).unwrap()
    };
    assert!(matches!(recv(), FromWorker::Hello { .. }));
    send(&ToWorker::Load {
        spec: ModelSpec::TwoTower(TwoTowerSpec {
            top_k: 5,
            max_history: 50,
            exclude_seen: true,
        }),
        sha256: sha,
        path: weights.display().to_string(),
        num_features: 3,
        device: herd::config::Device::Cpu,
        threads: 1,
        input: None,
        needs_history: true,
    });
    assert!(matches!(recv(), FromWorker::Loaded { .. }), "load");
    let good = Rows {
        ids: EntityIds::Int(vec![1, 2]),
        num_features: 3,
        features: vec![0.5; 6],
        history_offsets: vec![0, 2, 3],
        history_items: vec![1, 2, 3],
    };
    let bad_rows = [
        (
            "short features",
            Rows {
                features: vec![0.5; 5],
                ..good.clone()
            },
        ),
        (
            "offsets past the items",
            Rows {
                history_offsets: vec![0, 2, 90],
                ..good.clone()
            },
        ),
        (
            "decreasing offsets",
            Rows {
                history_offsets: vec![0, 3, 1],
                ..good.clone()
            },
        ),
        (
            "missing offsets",
            Rows {
                history_offsets: vec![0, 3],
                ..good.clone()
            },
        ),
        (
            "other feature count",
            Rows {
                num_features: 2,
                features: vec![0.5; 4],
                ..good.clone()
            },
        ),
    ];
    for (attempt, (what, rows)) in bad_rows.into_iter().enumerate() {
        send(&ToWorker::Run {
            chunk: 0,
            attempt: attempt as u64,
            rows: herd::proto::ChunkRows::Rows(rows),
        });
        match recv() {
            FromWorker::Error {
                attempt: Some(a),
                message,
            } => {
                assert_eq!(a, attempt as u64, "{what}");
                assert!(message.contains("malformed rows"), "{what}: {message}");
            }
            other => panic!("{what}: expected an error, got {other:?}"),
        }
    }
    // Still serving: a good run gets its result.
    send(&ToWorker::Run {
        chunk: 0,
        attempt: 99,
        rows: herd::proto::ChunkRows::Rows(good),
    });
    let result = loop {
        match recv() {
            FromWorker::Progress { .. } => continue,
            other => break other,
        }
    };
    assert!(
        matches!(result, FromWorker::Result { attempt: 99, ref predictions, .. } if predictions.len() == 2),
        "{result:?}"
    );
    send(&ToWorker::Shutdown);
    let status = w.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the worker exits cleanly");
}

// ---- helpers ----

fn libc_sigterm() -> i32 {
    15
}

fn libc_sighup() -> i32 {
    1
}

fn send_signal(pid: u32, signal: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Waits for `child` to exit (killing it after `limit`) and collects its output.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the run did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn read_parquet(path: &std::path::Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn write_parquet(path: &std::path::Path, batches: &[RecordBatch]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

/// Every row's history item ids, in input order.
fn history_lists(batches: &[RecordBatch]) -> Vec<Vec<i64>> {
    use arrow_array::cast::AsArray;
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name("history").unwrap();
        let list = col
            .as_list_opt::<i32>()
            .map(|l| {
                (0..l.len())
                    .map(|i| ints(l.value(i).as_ref()))
                    .collect::<Vec<_>>()
            })
            .or_else(|| {
                col.as_list_opt::<i64>().map(|l| {
                    (0..l.len())
                        .map(|i| ints(l.value(i).as_ref()))
                        .collect::<Vec<_>>()
                })
            })
            .expect("a list column");
        out.extend(list);
    }
    out
}

fn ints(a: &dyn Array) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
    if let Some(p) = a.as_primitive_opt::<UInt32Type>() {
        p.values().iter().map(|&v| v as i64).collect()
    } else if let Some(p) = a.as_primitive_opt::<Int64Type>() {
        p.values().to_vec()
    } else if let Some(p) = a.as_primitive_opt::<Int32Type>() {
        p.values().iter().map(|&v| v as i64).collect()
    } else if let Some(p) = a.as_primitive_opt::<UInt64Type>() {
        p.values().iter().map(|&v| v as i64).collect()
    } else {
        panic!("history items of type {}", a.data_type())
    }
}
