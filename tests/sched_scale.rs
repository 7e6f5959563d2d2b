//! The seed job (500M entities, 10,000 slots) at 1/100 of its size: 5M
//! entities on 12 hosts of 8 slots, one chunk per slot, 5% of the entities
//! 20x costlier in one run, a host 5x slower, one lost halfway (or silent).
//! The claims of `herd bench stragglers --scale seed` at a size CI runs in
//! seconds; the clock is virtual and the scenario seeded, so these are
//! deterministic, not timed. The last test runs the coordinator's benchmark
//! at 1/100 of the seed's slots for what it checks, not for its timings.

use std::process::Command;

use herd::sched::sim::seed::{Loss, SEED_ENTITIES, seed_costs, seed_scenario};
use herd::sched::sim::{self, Outcome, Timing};

const SCALE: u64 = 100;
const MAX_OVER_BOUND: f64 = 1.10;
const MAX_EXTRA_WORK: f64 = 0.05;
const MAX_STEPS: usize = 1_000_000;

fn run(loss: Loss, timing: &Timing) -> (Outcome, String) {
    let costs = seed_costs(SCALE);
    let (scenario, policy) = seed_scenario(&costs, SCALE, loss);
    let outcome = sim::run_timed(&scenario, &policy, MAX_STEPS, timing);
    let mut commits = outcome.commits.clone();
    commits.sort_by_key(|r| r.start);
    let mut at = 0;
    for r in &commits {
        assert_eq!(r.start, at, "{}: gap or overlap at row {at}", scenario.name);
        at = r.end;
    }
    assert_eq!(at, costs.rows(), "{}", scenario.name);
    let label = format!(
        "{} under {timing:?}: {:.3}x the bound ({:.0} s / {:.0} s), {} attempts, {} backups, {} splits, extra work {:.2}%, lost {:.2}%",
        scenario.name,
        outcome.over_bound(),
        outcome.makespan.as_secs_f64(),
        outcome.lower_bound.as_secs_f64(),
        outcome.attempts,
        outcome.backups,
        outcome.splits,
        100.0 * outcome.extra_work_fraction(),
        100.0 * outcome.lost_work_fraction(),
    );
    println!("{label}");
    (outcome, label)
}

#[test]
fn the_seed_job_at_one_hundredth_ends_within_10_percent_of_the_bound() {
    assert_eq!(seed_costs(SCALE).rows(), SEED_ENTITIES / SCALE);
    for timing in [Timing::ideal(), Timing::real()] {
        for loss in [Loss::Reported, Loss::Silent] {
            let (outcome, label) = run(loss, &timing);
            assert_eq!(outcome.failed, None, "{label}");
            assert!(outcome.over_bound() <= MAX_OVER_BOUND, "{label}");
            assert!(outcome.over_bound() >= 1.0, "beat the bound? {label}");
            assert!(outcome.extra_work_fraction() <= MAX_EXTRA_WORK, "{label}");
            // The slow host's chunks can only be spread by splitting.
            assert!(outcome.splits >= 1, "{label}");
        }
    }
}

/// Splitting serves the slow host; a backup is what a host that stopped
/// reporting needs (the rows its attempts keep would never come). With the
/// loss reported there is nothing to back up.
#[test]
fn backups_go_to_silent_hosts_and_splits_to_slow_ones() {
    let (reported, label) = run(Loss::Reported, &Timing::ideal());
    assert_eq!(reported.backups, 0, "{label}");
    let (silent, label) = run(Loss::Silent, &Timing::ideal());
    // One host of 8 slots fell silent while running one chunk on each.
    assert!(silent.backups >= 8, "{label}");
    assert!(silent.lost_work_fraction() > 0.0, "{label}");
}

/// The command line's contract: `--scale N --json` gives rows with scenario
/// `seed`, and the fields `sim_wall_s`, `peak_rss_bytes` and
/// `extra_work_fraction`.
#[test]
fn bench_stragglers_scale_prints_the_seed_rows() {
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["bench", "stragglers", "--scale", "1000", "--json"])
        .output()
        .expect("run herd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = rows.as_array().expect("a list of rows");
    let seed: Vec<_> = rows.iter().filter(|r| r["scenario"] == "seed").collect();
    assert_eq!(seed.len(), 6, "{rows:?}");
    for row in &seed {
        assert!(row["sim_wall_s"].as_f64().is_some_and(|s| s > 0.0), "{row}");
        assert!(
            row["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0),
            "{row}"
        );
        assert!(row["extra_work_fraction"].as_f64().is_some(), "{row}");
        assert_eq!(row["entities"], SEED_ENTITIES / 1000, "{row}");
    }
    let full = seed
        .iter()
        .find(|r| r["policy"] == "full" && r["timing"] == "ideal")
        .expect("the full policy's row");
    assert!(
        full["makespan_over_bound"]
            .as_f64()
            .is_some_and(|r| r >= 1.0)
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["bench", "stragglers", "--scale", "half"])
        .output()
        .expect("run herd");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("'half' is neither `seed` nor a whole number"),
        "{err}"
    );
}

/// `herd bench coordinator --scale 100 --json`: the real coordinator runs a
/// job to its end on in-memory workers at the baseline's 80 slots and at
/// 1/100 of the seed's 10,000, every worker saying hello and loaded and
/// every chunk ending with a result, and the rows say what that cost.
#[test]
fn bench_coordinator_runs_a_job_to_its_end_on_in_memory_workers() {
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["bench", "coordinator", "--scale", "100", "--json"])
        .output()
        .expect("run herd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = rows.as_array().expect("a list of rows");
    let slots: Vec<u64> = rows.iter().filter_map(|r| r["slots"].as_u64()).collect();
    // 1/100 of 10,000 slots, in whole hosts of 8.
    assert_eq!(slots, [80, 104], "{rows:?}");
    for row in rows {
        let n = |k: &str| row[k].as_u64().unwrap_or_else(|| panic!("{k} in {row}"));
        let f = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
        assert!(n("chunks") >= 2 * n("slots"), "{row}");
        assert!(n("attempts") >= n("chunks"), "{row}");
        assert!(
            n("messages") >= 2 * n("slots") + n("chunks"),
            "a hello and a loaded per slot, a result per chunk: {row}"
        );
        assert!(f("messages_per_cpu_s") > 0.0, "{row}");
        assert!(f("progress_us") > 0.0 && f("result_us") > 0.0, "{row}");
        assert!((0.0..1.0).contains(&f("busy_at_seed")), "{row}");
    }
}
