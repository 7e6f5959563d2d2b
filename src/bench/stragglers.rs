//! `herd bench stragglers --scale seed|N`: the seed job (`sched::sim::seed`)
//! in the simulated cluster, at full size or at 1/N, under each policy and
//! with both driver timings, timed on the wall clock and with the process's
//! peak memory. The table shows the scheduler's own cost at the seed's size
//! beside its floor measured in the same run: `index_s`, one pass over every
//! entity to build the cost index, which any planner pays.
//!
//! Peak memory is the process's high-water mark (`VmHWM`), reset before each
//! row through `/proc/self/clear_refs` where the kernel allows it (so a row's
//! peak starts from what the process holds then, the cost index included).

use std::time::Instant;

use serde::Serialize;

use crate::bench::{load_average, thread_cpu};
use crate::sched::Policy;
use crate::sched::sim::seed::{Loss, seed_costs, seed_scenario};
use crate::sched::sim::{self, Timing};

/// Step bound per run: far above what a run needs (about 20 events per
/// chunk, and a timeout per check interval for up to this many times the
/// bound: the static partition ends 45x past it at the seed's size), so
/// only a livelock reaches it.
const STEPS_PER_SLOT: usize = 1_000;
const MAX_OVER_BOUND: f64 = 200.0;

#[derive(Clone, Debug, Serialize)]
pub struct ScaleRow {
    pub scenario: String,
    pub policy: String,
    /// `ideal` or `real` (`sim::Timing`).
    pub timing: String,
    pub entities: u64,
    pub slots: u64,
    /// Chunks at the end (planned and made by splits).
    pub chunks: u64,
    pub makespan_over_bound: f64,
    pub makespan_s: f64,
    pub bound_s: f64,
    pub attempts: u64,
    pub backups: u64,
    pub splits: u64,
    /// Work from backups and splits past the total cost, over the total.
    pub extra_work_fraction: f64,
    /// Work lost with lost and silent hosts, over the total.
    pub lost_work_fraction: f64,
    /// Wall time of the simulation: planning, scheduling, the cluster.
    pub sim_wall_s: f64,
    /// CPU time of the same (the simulation runs on one thread): the wall
    /// time it would take on an idle core.
    pub sim_cpu_s: f64,
    /// Wall time to build the cost index (once per scale, shared by rows).
    pub index_s: f64,
    /// Bytes the cost index holds.
    pub index_bytes: u64,
    /// Peak resident memory of the process during the row.
    pub peak_rss_bytes: u64,
    /// Events and timeouts handled.
    pub steps: u64,
    /// The machine's load average when the row ended.
    pub load_average: Option<f64>,
}

/// Resets the process's memory high-water mark; false where the kernel
/// does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident memory in bytes (0 where unknown).
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The runs of the benchmark at 1/`scale`: with lost hosts reported, every
/// policy under the ideal driver and the full policy under the real one;
/// with them silent, `full` under both (the others never end: nothing but a
/// backup finishes a chunk whose attempt stopped reporting).
fn runs() -> Vec<(Loss, &'static str, &'static str)> {
    let mut runs: Vec<(Loss, &str, &str)> = sim::policies(&sim::bench_policy())
        .into_iter()
        .map(|(name, _)| (Loss::Reported, name, "ideal"))
        .collect();
    runs.push((Loss::Reported, "full", "real"));
    runs.push((Loss::Silent, "full", "ideal"));
    runs.push((Loss::Silent, "full", "real"));
    runs
}

/// Every run at 1/`scale` of the seed job (1: full size).
pub fn scale(scale: u64) -> Vec<ScaleRow> {
    reset_peak_rss();
    let started = Instant::now();
    let costs = seed_costs(scale);
    let index_s = started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for (loss, policy_name, timing_name) in runs() {
        let (scenario, base) = seed_scenario(&costs, scale, loss);
        let policy: Policy = sim::policies(&base)
            .into_iter()
            .find(|(name, _)| *name == policy_name)
            .map(|(_, p)| p)
            .expect("a stock policy");
        let timing = match timing_name {
            "real" => Timing::real(),
            _ => Timing::ideal(),
        };
        let slots: u64 = scenario.hosts.iter().map(|h| u64::from(h.slots)).sum();
        let bound = sim::lower_bound(&scenario.costs, &scenario.hosts).as_secs_f64();
        let checks = MAX_OVER_BOUND * bound / crate::sched::CHECK_INTERVAL.as_secs_f64();
        let max_steps = STEPS_PER_SLOT * slots as usize + checks as usize;
        reset_peak_rss();
        let (started, cpu) = (Instant::now(), thread_cpu());
        let outcome = sim::run_timed(&scenario, &policy, max_steps, &timing);
        let sim_wall_s = started.elapsed().as_secs_f64();
        let sim_cpu_s = thread_cpu().saturating_sub(cpu).as_secs_f64();
        rows.push(ScaleRow {
            scenario: scenario.name.to_string(),
            policy: policy_name.to_string(),
            timing: timing_name.to_string(),
            entities: costs.rows(),
            slots,
            chunks: outcome.chunks,
            makespan_over_bound: outcome.over_bound(),
            makespan_s: outcome.makespan.as_secs_f64(),
            bound_s: outcome.lower_bound.as_secs_f64(),
            attempts: outcome.attempts,
            backups: outcome.backups,
            splits: outcome.splits,
            extra_work_fraction: outcome.extra_work_fraction(),
            lost_work_fraction: outcome.lost_work_fraction(),
            sim_wall_s,
            sim_cpu_s,
            index_s,
            index_bytes: costs.index_bytes() as u64,
            peak_rss_bytes: peak_rss_bytes(),
            steps: outcome.steps,
            load_average: load_average(),
        });
    }
    rows
}

/// The rows as an aligned text table, with what they ran on.
pub fn table(rows: &[ScaleRow]) -> String {
    let header = [
        "scenario",
        "policy",
        "timing",
        "over_bound",
        "makespan_s",
        "bound_s",
        "chunks",
        "attempts",
        "backups",
        "splits",
        "extra_work",
        "lost_work",
        "sim_wall_s",
        "sim_cpu_s",
        "peak_rss_MiB",
        "load",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.scenario.clone(),
                r.policy.clone(),
                r.timing.clone(),
                format!("{:.3}", r.makespan_over_bound),
                format!("{:.0}", r.makespan_s),
                format!("{:.0}", r.bound_s),
                r.chunks.to_string(),
                r.attempts.to_string(),
                r.backups.to_string(),
                r.splits.to_string(),
                format!("{:.3}%", 100.0 * r.extra_work_fraction),
                format!("{:.3}%", 100.0 * r.lost_work_fraction),
                format!("{:.2}", r.sim_wall_s),
                format!("{:.2}", r.sim_cpu_s),
                format!("{:.0}", r.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
                r.load_average.map_or("-".into(), |l| format!("{l:.1}")),
            ]
        })
        .collect();
    let mut out = crate::table::render(&header, &cells, 3);
    if let Some(r) = rows.first() {
        out.push_str(&format!(
            "{} entities, {} slots; floor: building the cost index (one pass over every entity) took {:.2} s and holds {:.1} MiB\n",
            r.entities,
            r.slots,
            r.index_s,
            r.index_bytes as f64 / (1024.0 * 1024.0)
        ));
    }
    out
}
