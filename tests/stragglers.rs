//! Issue 5 on real processes: a skewed two_tower job on three local worker
//! slots, one of them slowed 5x by the test-only `HERD_TEST_SLOW_SLOT`, ends
//! within 1.3x of the lower bound computed from the slots' measured speeds,
//! and its report names the splits and backups that got it there.
//!
//! Lower bound, from the report and the job's own cost model:
//!
//! ```text
//! bound = max( total_cost / sum_s(cost_per_s[s]),
//!              max_row_cost / max_s(cost_per_s[s]) )
//! ```
//!
//! where `total_cost` and `max_row_cost` are the job's per-entity costs
//! (multiply-adds, from `herd::run::prepare`) and `cost_per_s[s]` is slot
//! `s`'s measured speed (`slots[].cost_per_s`: the cost of the rows it
//! computed over its busy time). No schedule on those slots can finish the
//! work sooner: the first term is every slot busy from the first launch to
//! the end, the second the costliest entity alone on the fastest slot.
//!
//! The job is planned in two chunks per slot, so the chunk the slowed slot
//! takes first would alone take about twice the bound: pulling chunks cannot
//! hide the straggler, only splitting it or backing it up can. The test checks
//! that from the report too (the planned chunk's cost over the slowed slot's
//! measured speed ends past 1.3x the bound).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{HERD, JobShape, Scratch, text};
use herd::run::{AttemptReport, Report};

/// The issue's claim: makespan within this factor of the lower bound.
const MAX_OVER_BOUND: f64 = 1.3;
/// The slowed slot and its factor (`SLOT:FACTOR`).
const SLOW_SLOT: u32 = 0;
const SLOW_FACTOR: f64 = 5.0;
/// The slowed slot must measure at least this many times slower than the
/// fastest slot, or the run did not exercise a straggler at all (5x nominal;
/// the margin is for CPU contention among the three workers).
const MIN_MEASURED_SLOWDOWN: f64 = 2.5;
/// Planned chunks per slot (the default plans at least 6).
const CHUNKS_PER_SLOT: u64 = 2;

/// About 3-5 s of scoring on three slots in the test profile: two_tower cost
/// is dominated by items x dim per user; 5% of the users have heavy histories
/// (300-4000 items, all pooled with `max_history = 4000`).
fn skewed_shape() -> JobShape {
    JobShape {
        users: 36_000,
        items: 50_000,
        dim: 64,
        features: 3,
        top_k: 10,
        max_history: 4_000,
        slots: 3,
        seed: 11,
    }
}

#[test]
fn a_run_with_a_slot_slowed_5x_ends_within_1_3x_of_the_measured_bound() {
    let shape = skewed_shape();
    let s = Scratch::new(&shape);
    // Items x dim per user is nearly all of a user's cost.
    let target_chunk_cost =
        shape.users * u64::from(shape.items) * shape.dim as u64 / (CHUNKS_PER_SLOT * 3);
    let job = std::fs::read_to_string(s.job()).expect("job.toml");
    s.write(
        "job.toml",
        &format!("{job}\n[partition]\ntarget_chunk_cost = {target_chunk_cost}\n"),
    );
    let out = Command::new(HERD)
        .args(["run", "job.toml", "--report", "report.json"])
        .current_dir(s.dir.path())
        .env(
            herd::run::TEST_SLOW_SLOT_ENV,
            format!("{SLOW_SLOT}:{SLOW_FACTOR}"),
        )
        .output()
        .expect("run herd");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bytes = std::fs::read(s.path("report.json")).expect("the run wrote its report");
    let report: Report = serde_json::from_slice(&bytes).expect("report.json is a run report");
    let table = timeline_table(&report);

    // The job's own costs, as the coordinator planned them.
    let prepared = herd::run::prepare(&s.job(), None).expect("prepare the job again");
    let total_cost = prepared.costs.total();
    let max_row_cost = prepared.costs.max_row_cost();
    assert_eq!(report.rows, prepared.costs.rows(), "{table}");

    // Measured speeds: every slot worked, and the slowed one is a straggler.
    assert_eq!(report.slots.len(), 3, "{table}");
    let speed = |slot: u32| {
        report
            .slots
            .iter()
            .find(|r| r.slot == slot)
            .map(|r| r.cost_per_s)
            .unwrap_or_else(|| panic!("no slot {slot} in the report\n{table}"))
    };
    let speeds: Vec<f64> = report.slots.iter().map(|r| r.cost_per_s).collect();
    assert!(speeds.iter().all(|&v| v > 0.0), "a slot never ran\n{table}");
    let fastest = speeds.iter().copied().fold(0.0, f64::max);
    assert!(
        speed(SLOW_SLOT) * MIN_MEASURED_SLOWDOWN <= fastest,
        "slot {SLOW_SLOT} was not slowed: {:.3e} vs the fastest {fastest:.3e} cost/s\n{table}",
        speed(SLOW_SLOT)
    );

    let capacity: f64 = speeds.iter().sum();
    let bound = (total_cost as f64 / capacity).max(max_row_cost as f64 / fastest);
    let ratio = report.scoring_s / bound;
    println!(
        "scoring {:.3} s, bound {bound:.3} s, ratio {ratio:.3}; {} backups, {} splits\n{table}",
        report.scoring_s, report.backups, report.splits
    );
    assert!(
        ratio <= MAX_OVER_BOUND,
        "makespan {:.3} s is {ratio:.3}x the bound {bound:.3} s (want <= {MAX_OVER_BOUND})\n{table}",
        report.scoring_s
    );
    // Unhelped, the slowed slot's planned chunks would end past the claim.
    let index = prepared.costs.clone();
    let plan = index.chunks_by_cost(target_chunk_cost, &[]);
    let first_launch = report
        .timeline
        .iter()
        .map(|a| a.start_s)
        .fold(f64::INFINITY, f64::min);
    let unhelped = report
        .timeline
        .iter()
        .filter(|a| a.slot == SLOW_SLOT && !a.backup && (a.chunk as usize) < plan.len())
        .map(|a| {
            let planned = plan[a.chunk as usize].clone();
            a.start_s - first_launch + index.cost(planned) as f64 / speed(SLOW_SLOT)
        })
        .fold(0.0, f64::max);
    assert!(
        unhelped > MAX_OVER_BOUND * bound,
        "the slowed slot's chunks alone would end at {unhelped:.3} s, within {MAX_OVER_BOUND}x the bound {bound:.3} s: the run does not need splits or backups\n{table}"
    );
    assert!(
        ratio >= 0.95,
        "makespan {:.3} s beats the bound {bound:.3} s by more than measurement noise: the bound or the report is wrong\n{table}",
        report.scoring_s
    );

    // The report lists what beat the straggler, and its counts agree.
    let backups = report.timeline.iter().filter(|a| a.backup).count() as u64;
    let split: Vec<&AttemptReport> = report.timeline.iter().filter(|a| a.split).collect();
    assert_eq!(report.backups, backups, "backup count vs timeline\n{table}");
    assert!(
        backups + split.len() as u64 >= 1,
        "no split and no backup in the timeline\n{table}"
    );
    assert_eq!(
        report.splits == 0,
        split.is_empty(),
        "split count {} vs {} split attempts\n{table}",
        report.splits,
        split.len()
    );
    assert!(
        report.splits >= split.len() as u64,
        "{} splits but {} split attempts (an attempt can be split more than once, never less)\n{table}",
        report.splits,
        split.len()
    );
    assert_eq!(report.attempts, report.timeline.len() as u64, "{table}");
    for a in &split {
        // The rest of a split chunk went to new attempts launched no
        // earlier than the split attempt, starting where it stopped.
        assert!(
            report
                .timeline
                .iter()
                .any(|b| b.chunk != a.chunk && b.rows[0] == a.rows[1] && b.start_s >= a.start_s),
            "attempt {} was split at row {} but no attempt took the rows after it\n{table}",
            a.attempt,
            a.rows[1]
        );
    }

    // Exactly one finished attempt per chunk, and those tile the input.
    let mut done: Vec<&AttemptReport> = report
        .timeline
        .iter()
        .filter(|a| a.state == "done")
        .collect();
    let chunks: BTreeSet<u64> = done.iter().map(|a| a.chunk).collect();
    assert_eq!(chunks.len(), done.len(), "a chunk finished twice\n{table}");
    assert_eq!(report.chunks, done.len() as u64, "{table}");
    done.sort_by_key(|a| a.rows[0]);
    let mut at = 0;
    for a in &done {
        assert_eq!(a.rows[0], at, "gap or overlap at row {at}\n{table}");
        assert_eq!(a.rows_done, a.rows[1] - a.rows[0], "{table}");
        at = a.rows[1];
    }
    assert_eq!(at, report.rows, "{table}");
    assert!(report.flipped, "{table}");
}

/// The slots' speeds and every attempt, one line each, for failure messages.
fn timeline_table(report: &Report) -> String {
    let mut out = String::from("slot  cost_per_s  busy_s  rows\n");
    for s in &report.slots {
        out.push_str(&format!(
            "{:>4}  {:>10.3e}  {:>6.3}  {:>5}\n",
            s.slot, s.cost_per_s, s.busy_s, s.rows
        ));
    }
    out.push_str(
        "attempt  chunk  slot  start_s   end_s  rows           done  state      backup  split\n",
    );
    for a in &report.timeline {
        out.push_str(&format!(
            "{:>7}  {:>5}  {:>4}  {:>7.3}  {:>6}  {:>6}..{:<6}  {:>5}  {:<9}  {:<6}  {}\n",
            a.attempt,
            a.chunk,
            a.slot,
            a.start_s,
            a.end_s.map_or("-".to_string(), |e| format!("{e:.3}")),
            a.rows[0],
            a.rows[1],
            a.rows_done,
            a.state,
            a.backup,
            a.split
        ));
    }
    out
}
