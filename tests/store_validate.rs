//! The validation gate: a clean version passes; each planted fault fails the
//! check that names it, and only that check.

mod store_common;

use std::borrow::Cow;

use herd::config::Validate;
use herd::model::{EntityIds, EntityKey, Predictions};
use herd::store::validate::{SampleRow, ValidationPlan, scan_chunk, validate};
use herd::store::{Store, ValidationReport, Value};
use store_common::*;

const N: u64 = 50;

fn cfg() -> Validate {
    Validate {
        min_coverage: 1.0,
        max_non_finite: 0,
        spot_check: 3,
        max_topk_churn: Some(0.5),
        max_mean_shift: Some(0.1),
        min_rows: 1,
        max_row_change: 0.5,
    }
}

/// Entity `e`'s reference top-3: items e, e+1, e+2 (never 0..3, which is
/// every entity's history), scores descending.
fn reference(e: u64) -> Vec<(u32, f32)> {
    (0..3u32)
        .map(|j| (e as u32 + 10 + j, 3.0 - j as f32))
        .collect()
}

/// Commits entities `0..N` with their reference top-3, passing each row to
/// `plant` first.
fn top_k_version(store: &Store, plant: impl Fn(u64, &mut Vec<(u32, f32)>)) -> u64 {
    let v = new_version(store, "cands", N);
    let preds = top_k_preds(0..N, &plant);
    assert!(
        store
            .commit_chunk(v, 0..N, &EntityIds::Int((0..N).collect()), &preds, T0)
            .unwrap()
    );
    v
}

/// Changes a row's reference top-3 before it is stored.
type Plant<'a> = &'a dyn Fn(u64, &mut Vec<(u32, f32)>);

/// Entities `rows`' reference top-3, each passed to `plant` first.
fn top_k_preds(rows: std::ops::Range<u64>, plant: Plant<'_>) -> Predictions {
    let mut offsets = vec![0u32];
    let (mut items, mut scores) = (Vec::new(), Vec::new());
    for e in rows {
        let mut row = reference(e);
        plant(e, &mut row);
        for (i, s) in row {
            items.push(i);
            scores.push(s);
        }
        offsets.push(items.len() as u32);
    }
    Predictions::TopK {
        offsets,
        items,
        scores,
    }
}

fn plan(ids: impl Iterator<Item = u64>) -> ValidationPlan<'static> {
    ValidationPlan {
        ids: Cow::Owned(EntityIds::Int(ids.collect())),
        top_k: Some(3),
        sample: [4u64, 20, 33]
            .iter()
            .map(|&e| SampleRow {
                key: EntityKey::Int(e),
                history: vec![0, 1, 2],
                expected: Value::TopK(reference(e)),
            })
            .collect(),
        tolerance: 1e-4,
        excluded: 0,
        scanned: Vec::new(),
        cfg: cfg(),
    }
}

fn failed_checks(report: &ValidationReport) -> Vec<&str> {
    report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn clean_version_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let live = top_k_version(&store, |_, _| {});
    let v = top_k_version(&store, |_, _| {});
    let report = validate(&store, v, Some(live), &plan(0..N)).unwrap();
    assert!(report.passed, "{report:#?}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "coverage",
            "finite",
            "rows",
            "topk_well_formed",
            "spot_check",
            "drift"
        ]
    );
}

#[test]
fn planted_nan_fails_finite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |e, row| {
        if e == 7 {
            row[2].1 = f32::NAN;
        }
    });
    let report = validate(&store, v, None, &plan(0..N)).unwrap();
    assert!(!report.passed);
    assert_eq!(failed_checks(&report), ["finite"]);
    let check = report.first_failure().unwrap();
    assert!(check.detail.starts_with("1 non-finite"), "{}", check.detail);
    assert_eq!(check.examples, ["7: score[2] = NaN"]);
}

#[test]
fn missing_entity_fails_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |_, _| {});
    // The input had one more entity than the version stored.
    let report = validate(&store, v, None, &plan(0..N + 1)).unwrap();
    assert_eq!(failed_checks(&report), ["coverage"]);
    let check = report.first_failure().unwrap();
    assert!(
        check
            .detail
            .starts_with(&format!("{N} of {} distinct", N + 1)),
        "{}",
        check.detail
    );
    assert_eq!(check.examples, [format!("missing: {N}")]);

    // A lower min_coverage accepts the gap.
    let mut lenient = plan(0..N + 1);
    lenient.cfg.min_coverage = 0.9;
    assert!(validate(&store, v, None, &lenient).unwrap().passed);
}

#[test]
fn stored_entity_not_in_the_input_fails_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |_, _| {});
    let report = validate(&store, v, None, &plan(0..N - 1)).unwrap();
    assert_eq!(failed_checks(&report), ["coverage"]);
    assert!(
        report.checks[0]
            .detail
            .contains("1 stored entries are not input entities")
    );
}

#[test]
fn stored_entities_between_and_before_input_entities_fail_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |_, _| {});
    // The input lacks 0 (before its first key), 17 and 30 (between its keys),
    // and has 1000, which was never stored; unsorted, with a repeat.
    let mut ids: Vec<u64> = (1..N).filter(|e| ![17, 30].contains(e)).rev().collect();
    ids.extend([1000, 5]);
    let report = validate(&store, v, None, &plan(ids.into_iter())).unwrap();
    assert_eq!(failed_checks(&report), ["coverage"]);
    let check = &report.checks[0];
    assert!(
        check
            .detail
            .starts_with(&format!("{} of {} distinct", N - 3, N - 2)),
        "{}",
        check.detail
    );
    assert!(
        check
            .detail
            .contains("3 stored entries are not input entities"),
        "{}",
        check.detail
    );
    assert_eq!(
        check.examples,
        [
            "not in the input: 0",
            "not in the input: 17",
            "not in the input: 30",
            "missing: 1000"
        ]
    );
}

#[test]
fn unsorted_top_k_fails_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |e, row| {
        if e == 9 {
            row.swap(0, 1);
        }
    });
    let report = validate(&store, v, None, &plan(0..N)).unwrap();
    assert_eq!(failed_checks(&report), ["topk_well_formed"]);
    assert_eq!(
        report.first_failure().unwrap().examples,
        ["9: not sorted: score[0] = 2 < score[1] = 3"]
    );
}

#[test]
fn duplicate_item_fails_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |e, row| {
        if e == 11 {
            row[1].0 = row[0].0;
        }
    });
    let report = validate(&store, v, None, &plan(0..N)).unwrap();
    assert_eq!(failed_checks(&report), ["topk_well_formed"]);
    assert_eq!(
        report.first_failure().unwrap().examples,
        ["11: item 21 appears twice"]
    );
}

#[test]
fn seen_item_in_a_sample_row_fails_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |_, _| {});
    let mut p = plan(0..N);
    p.sample[0].history.push(14); // entity 4's first item
    let report = validate(&store, v, None, &p).unwrap();
    assert_eq!(failed_checks(&report), ["topk_well_formed"]);
    assert_eq!(
        report.first_failure().unwrap().examples,
        ["4: item 14 is in the entity's history"]
    );
}

#[test]
fn spot_check_mismatch_fails_spot_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = top_k_version(&store, |e, row| {
        if e == 20 {
            row[1].1 = 1.5; // still sorted and unique: only the rescore sees it
        }
    });
    let report = validate(&store, v, None, &plan(0..N)).unwrap();
    assert_eq!(failed_checks(&report), ["spot_check"]);
    let check = report.first_failure().unwrap();
    assert!(check.detail.starts_with("2 of 3"), "{}", check.detail);
    assert!(
        check.examples[0].starts_with("20: position 1: score 1.5"),
        "{:?}",
        check.examples
    );
}

#[test]
fn churn_against_live_over_threshold_fails_drift() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let live = top_k_version(&store, |_, row| {
        for (j, pair) in row.iter_mut().enumerate() {
            pair.0 = 1000 + j as u32; // every entity: different items than now
        }
    });
    let v = top_k_version(&store, |_, _| {});
    let report = validate(&store, v, Some(live), &plan(0..N)).unwrap();
    assert_eq!(failed_checks(&report), ["drift"]);
    let detail = &report.first_failure().unwrap().detail;
    assert!(
        detail.contains("mean top-K churn 1.0000 (max_topk_churn 0.5)"),
        "{detail}"
    );
    // Without a live version there is nothing to drift from.
    assert!(validate(&store, v, None, &plan(0..N)).unwrap().passed);
}

#[test]
fn score_shift_against_live_over_threshold_fails_drift() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let live = build_scores_version(&store, "churn", 30, 10, 2, 0.2);
    let v = build_scores_version(&store, "churn", 30, 10, 2, 0.7);
    let p = scores_plan(30, 0.7);
    let report = validate(&store, v, Some(live), &p).unwrap();
    assert_eq!(failed_checks(&report), ["drift"]);
    assert!(
        report
            .first_failure()
            .unwrap()
            .detail
            .contains("mean score shift 0.5")
    );
}

#[test]
fn a_drift_threshold_with_no_entity_in_both_versions_fails_instead_of_passing_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The live version holds other entities (as when the id column or its
    // type changed between runs).
    let live = new_version(&store, "churn", 30);
    let (ids, preds) = scores(1000..1030, 2, 0.2);
    assert!(store.commit_chunk(live, 0..30, &ids, &preds, T0).unwrap());
    let v = build_scores_version(&store, "churn", 30, 10, 2, 0.2);
    let p = scores_plan(30, 0.2);
    let report = validate(&store, v, Some(live), &p).unwrap();
    assert_eq!(failed_checks(&report), ["drift"]);
    let detail = &report.first_failure().unwrap().detail;
    assert!(
        detail.contains("0 entities in both")
            && detail.contains("max_mean_shift cannot be checked: no entity of v2 is in live v1"),
        "{detail}"
    );
}

/// The plan of a scores version of `rows` entities (ids 0..rows) whose
/// spot check expects entity 5 to score `expected` twice.
fn scores_plan(rows: u64, expected: f32) -> ValidationPlan<'static> {
    ValidationPlan {
        ids: Cow::Owned(EntityIds::Int((0..rows).collect())),
        top_k: None,
        sample: vec![SampleRow {
            key: EntityKey::Int(5),
            history: vec![],
            expected: Value::Scores(vec![expected, expected]),
        }],
        tolerance: 1e-5,
        excluded: 0,
        scanned: Vec::new(),
        cfg: cfg(),
    }
}

/// A version large enough to be read in key ranges on several threads: what
/// each range found adds up, and the examples come in key order, as one
/// pass would give them.
#[test]
fn a_large_version_is_checked_whole_across_its_key_ranges() {
    const M: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The input: the even ids below 2M. Stored: all of them but 300002,
    // and the odd ids 1 and 360001; ids 4 and 399980 score NaN.
    let mut stored: Vec<u64> = (0..M).map(|i| 2 * i).filter(|&e| e != 300_002).collect();
    stored.extend([1, 360_001]);
    stored.sort_unstable();
    let v = new_version(&store, "large", M);
    for (k, part) in stored.chunks(50_000).enumerate() {
        let values: Vec<f32> = part
            .iter()
            .map(|&e| {
                if e == 4 || e == 399_980 {
                    f32::NAN
                } else {
                    0.5
                }
            })
            .collect();
        let preds = Predictions::Scores { width: 1, values };
        let start = (k * 50_000) as u64;
        let rows = start..start + part.len() as u64;
        let ids = EntityIds::Int(part.to_vec());
        assert!(store.commit_chunk(v, rows, &ids, &preds, T0).unwrap());
    }
    let mut p = scores_plan(0, 0.5);
    p.ids = Cow::Owned(EntityIds::Int((0..M).map(|i| 2 * i).collect()));
    p.sample.clear();
    p.cfg.spot_check = 0;
    let report = validate(&store, v, None, &p).unwrap();
    assert_eq!(failed_checks(&report), ["coverage", "finite"]);
    let (coverage, finite, rows) = (&report.checks[0], &report.checks[1], &report.checks[2]);
    assert!(
        coverage
            .detail
            .starts_with(&format!("{} of {M} distinct", M - 1))
            && coverage
                .detail
                .contains("2 stored entries are not input entities"),
        "{}",
        coverage.detail
    );
    assert_eq!(
        coverage.examples,
        [
            "not in the input: 1",
            "not in the input: 360001",
            "missing: 300002"
        ]
    );
    assert!(
        finite.detail.starts_with("2 non-finite"),
        "{}",
        finite.detail
    );
    assert_eq!(
        finite.examples,
        ["4: score[0] = NaN", "399980: score[0] = NaN"]
    );
    assert!(
        rows.detail.starts_with(&format!("{} rows", M + 1)),
        "{}",
        rows.detail
    );
}

/// The gate reads again only the keys outside the chunks read right after
/// their commits, and reports what a pass over the whole version reports:
/// a non-finite score and a malformed value inside chunks it did not read
/// again, and entries that are not input entities both inside a chunk's
/// range and between and after the chunks' ranges.
#[test]
fn a_gate_that_takes_the_chunks_read_after_their_commits_reports_what_a_whole_pass_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = new_version(&store, "cands", N);
    // Input ids 0, 10, 20, ..., 490: room for keys that are not input
    // entities between them.
    let id = |e: u64| e * 10;
    let commit = |rows: std::ops::Range<u64>, ids: Vec<u64>, plant: Plant<'_>| {
        let preds = top_k_preds(rows.clone(), plant);
        let ids = EntityIds::Int(ids);
        assert!(store.commit_chunk(v, rows, &ids, &preds, T0).unwrap());
        ids
    };
    let faults = |e: u64, row: &mut Vec<(u32, f32)>| match e {
        7 => row[1].1 = f32::NAN,
        33 => row.swap(0, 2),
        _ => {}
    };
    let chunks = [0..20, 20..40, 40..N];
    let mut scans = Vec::new();
    for (k, rows) in chunks.iter().enumerate() {
        let ids = commit(rows.clone(), rows.clone().map(id).collect(), &faults);
        if k == 1 {
            // A stray entry inside the second chunk's range, written
            // before its pass read the range.
            commit(N + 1..N + 2, vec![id(25) + 5], &|_, _| {});
        }
        // The last chunk is left to the gate.
        if k < 2 {
            scans.push(scan_chunk(&store, v, &ids, Some(3)).unwrap().unwrap());
        }
    }
    // Strays between the first two chunks' ranges and after the last one.
    commit(N + 2..N + 3, vec![id(19) + 5], &|_, _| {});
    commit(N + 3..N + 4, vec![id(N) + 5], &|_, _| {});
    let whole = validate(&store, v, None, &plan((0..N).map(id))).unwrap();
    let mut taking = plan((0..N).map(id));
    taking.scanned = scans.clone();
    let report = validate(&store, v, None, &taking).unwrap();
    assert_eq!(report, whole);
    // (The spot check's sample names entities 4, 20 and 33, not input ids
    // here, and fails in both.)
    assert_eq!(
        failed_checks(&report),
        ["coverage", "finite", "topk_well_formed", "spot_check"],
        "{report:#?}"
    );
    let coverage = &report.checks[0];
    assert!(
        coverage
            .detail
            .contains("3 stored entries are not input entities"),
        "{coverage:?}"
    );
    let finite = &report.checks[1];
    assert!(finite.detail.starts_with("1 non-finite"), "{finite:?}");
    // Ids that do not ascend in input order: the chunks' passes cannot
    // stand for their ranges, and the gate reads the whole version.
    let mut shuffled: Vec<u64> = (0..N).map(id).collect();
    shuffled.swap(0, 1);
    let whole = validate(&store, v, None, &plan(shuffled.iter().copied())).unwrap();
    let mut taking = plan(shuffled.into_iter());
    taking.scanned = scans;
    assert_eq!(validate(&store, v, None, &taking).unwrap(), whole);
}
