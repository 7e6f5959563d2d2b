//! The validation gate through the real binary: a good version goes live, then
//! a run whose workers plant one fault (the test-only `HERD_TEST_WORKER_FAULT`)
//! or whose model drifted exits 3, names the failed check in its report, keeps
//! the live version and records the new one as failed.
//!
//! A missing entity cannot come out of the binary: the coordinator writes one
//! value per input row and fails the run (exit 1) when a worker returns fewer
//! rows than it was sent. `a_short_worker_result_fails_the_run...` pins that;
//! the `coverage` check itself is covered in `tests/store_validate.rs`.

mod common;

use std::process::{Command, Output};

use common::{HERD, JobShape, Scratch, json, text};
use herd::model::EntityKey;
use herd::worker::FAULT_ENV;

/// Runs `herd ARGS` in the scratch folder with the workers' fault set to `fault`.
fn herd_with_fault(s: &Scratch, fault: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(HERD);
    cmd.args(args)
        .current_dir(s.dir.path())
        .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
        .env_remove(FAULT_ENV);
    if let Some(fault) = fault {
        cmd.env(FAULT_ENV, fault);
    }
    cmd.output().expect("run herd")
}

fn versions(s: &Scratch) -> serde_json::Value {
    json(&s.herd(&["store", "versions", "--json", "--store", "store"]))
}

fn status_of(versions: &serde_json::Value, version: u64) -> String {
    versions["versions"]
        .as_array()
        .expect("versions list")
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("no version {version}: {versions}"))["status"]
        .as_str()
        .expect("status")
        .to_string()
}

/// A scratch job whose first version is live.
fn with_live_version() -> Scratch {
    let s = Scratch::new(&JobShape::default());
    let out = herd_with_fault(&s, None, &["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(versions(&s)["live"], 1);
    s
}

/// Every entity's live value, by id.
fn live_values(s: &Scratch) -> Vec<(u64, herd::store::Value)> {
    let store = herd::store::Store::open_existing(&s.store()).unwrap();
    (0..JobShape::default().users)
        .map(|id| {
            let p = store
                .get(&EntityKey::Int(id), None, 0)
                .unwrap()
                .unwrap_or_else(|| panic!("user {id} has no live prediction"));
            (id, p.value)
        })
        .collect()
}

/// Runs the job again with `fault` planted and asserts the gate refused it:
/// exit 3, `check` failed in the report and named on stderr, live still 1
/// with the same values, version 2 failed.
fn assert_gate_refuses(s: &Scratch, fault: Option<&str>, check: &str) -> serde_json::Value {
    let before = live_values(s);
    let out = herd_with_fault(s, fault, &["run", "job.toml", "--report", "report.json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(check),
        "stderr does not name {check}: {stderr}"
    );
    assert!(stderr.contains("nothing was flipped"), "{stderr}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("report.json")).expect("report written"))
            .expect("report is JSON");
    assert_eq!(report["version"], 2, "{report}");
    assert_eq!(report["flipped"], false, "{report}");
    assert_eq!(report["validation"]["passed"], false, "{report}");
    let checks = report["validation"]["checks"].as_array().expect("checks");
    let failed = checks
        .iter()
        .find(|c| c["name"] == check)
        .unwrap_or_else(|| panic!("no check {check} in the report: {report}"));
    assert_eq!(failed["passed"], false, "{report}");

    let v = versions(s);
    assert_eq!(v["live"], 1, "{v}");
    assert_eq!(status_of(&v, 1), "live", "{v}");
    assert_eq!(status_of(&v, 2), "failed", "{v}");
    assert_eq!(
        live_values(s),
        before,
        "readers see different values after a refused version"
    );
    report
}

fn passed(report: &serde_json::Value, check: &str) -> bool {
    report["validation"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == check)
        .unwrap_or_else(|| panic!("no check {check}: {report}"))["passed"]
        == true
}

#[test]
fn a_planted_nan_fails_the_finite_check_and_keeps_live() {
    let s = with_live_version();
    // Each attempt's NaNs (one per row, chunks of about 50 rows) stay within
    // what the coordinator accepts from one attempt; the version's 600 do not.
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("[validate]\n", "[validate]\nmax_non_finite = 100\n"),
    );
    let report = assert_gate_refuses(&s, Some("nan"), "finite");
    assert!(passed(&report, "coverage"), "{report}");
    let finite = report["validation"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "finite")
        .unwrap();
    assert!(
        finite["detail"]
            .as_str()
            .unwrap()
            .starts_with("600 non-finite"),
        "one NaN per user expected: {finite}"
    );
}

#[test]
fn shifted_scores_fail_the_spot_check_and_keep_live() {
    let s = with_live_version();
    let report = assert_gate_refuses(&s, Some("perturb"), "spot_check");
    for ok in ["coverage", "finite", "topk_well_formed"] {
        assert!(passed(&report, ok), "{ok} should pass: {report}");
    }
}

#[test]
fn an_unsorted_top_k_fails_topk_well_formed_and_keeps_live() {
    let s = with_live_version();
    let report = assert_gate_refuses(&s, Some("unsort"), "topk_well_formed");
    assert!(passed(&report, "coverage"), "{report}");
    assert!(passed(&report, "finite"), "{report}");
}

#[test]
fn a_different_model_over_max_topk_churn_fails_drift_and_keeps_live() {
    let s = with_live_version();
    let other = s.path("other");
    let out = s.herd(&[
        "gen",
        "two-tower",
        "--out",
        other.to_str().unwrap(),
        "--users",
        "600",
        "--items",
        "3000",
        "--dim",
        "16",
        "--features",
        "3",
        "--seed",
        "1234",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::copy(
        other.join("two_tower.safetensors"),
        s.path("data/two_tower.safetensors"),
    )
    .unwrap();
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("[validate]\n", "[validate]\nmax_topk_churn = 0.5\n"),
    );
    let report = assert_gate_refuses(&s, None, "drift");
    for ok in ["coverage", "finite", "topk_well_formed", "spot_check"] {
        assert!(passed(&report, ok), "{ok} should pass: {report}");
    }
}

#[test]
fn the_same_model_within_max_topk_churn_passes_drift_and_flips() {
    let s = with_live_version();
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("[validate]\n", "[validate]\nmax_topk_churn = 0.5\n"),
    );
    let out = herd_with_fault(&s, None, &["run", "job.toml", "--report", "report.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("report.json")).unwrap()).unwrap();
    assert!(passed(&report, "drift"), "{report}");
    assert_eq!(versions(&s)["live"], 2);
}

#[test]
fn a_short_worker_result_fails_the_run_naming_the_chunk_and_keeps_live() {
    let s = with_live_version();
    let before = live_values(&s);
    let out = herd_with_fault(&s, Some("drop"), &["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chunk"), "{stderr}");
    assert!(stderr.contains("predictions"), "{stderr}");
    let v = versions(&s);
    assert_eq!(v["live"], 1, "{v}");
    assert_ne!(status_of(&v, 2), "live", "{v}");
    assert_eq!(live_values(&s), before);
}
