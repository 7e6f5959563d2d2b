//! The straggler benchmark's claims, on simulated time. The clock is virtual
//! and the scenarios are seeded, so these are deterministic, not timed.

use herd::sched::sim;

#[test]
fn full_policy_is_within_15_percent_of_the_bound_in_every_scenario() {
    let rows = sim::bench();
    let table = sim::bench_table(&rows);
    let full: Vec<_> = rows.iter().filter(|r| r.policy == "full").collect();
    assert_eq!(full.len(), 4, "{table}");
    for row in full {
        assert!(
            row.makespan_over_bound <= 1.15,
            "{} under full: {:.3}x the bound\n{table}",
            row.scenario,
            row.makespan_over_bound
        );
        assert!(
            row.makespan_over_bound >= 1.0,
            "beat the lower bound?\n{table}"
        );
    }
}

#[test]
fn static_partition_is_at_least_twice_the_bound_on_heavy_tail() {
    let rows = sim::bench();
    let row = rows
        .iter()
        .find(|r| r.scenario == "heavy-tail" && r.policy == "static")
        .expect("heavy-tail/static row");
    assert!(
        row.makespan_over_bound >= 2.0,
        "static on heavy-tail: {:.3}x\n{}",
        row.makespan_over_bound,
        sim::bench_table(&rows)
    );
}

#[test]
fn every_policy_commits_every_row_once_in_every_scenario() {
    for seed in [1, 2, 3] {
        for scenario in sim::scenarios(seed) {
            for (name, policy) in sim::policies(&sim::bench_policy()) {
                let outcome = sim::run(&scenario, &policy, sim::BENCH_MAX_STEPS);
                assert_eq!(outcome.failed, None, "{}/{name}", scenario.name);
                let mut commits = outcome.commits.clone();
                commits.sort_by_key(|r| r.start);
                let mut at = 0;
                for r in &commits {
                    assert_eq!(r.start, at, "{}/{name}: gap or overlap", scenario.name);
                    at = r.end;
                }
                assert_eq!(at, scenario.costs.rows(), "{}/{name}", scenario.name);
            }
        }
    }
}

#[test]
fn bench_table_is_aligned_with_one_line_per_run() {
    let rows = sim::bench();
    let table = sim::bench_table(&rows);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), rows.len() + 1);
    assert!(lines[0].starts_with("scenario"));
    let column = lines[0]
        .find("makespan/bound")
        .expect("header names the ratio");
    for line in &lines[1..] {
        let cell_end = column + "makespan/bound".len();
        assert!(line.len() >= cell_end, "short line {line:?}");
        assert!(
            line[column..cell_end].trim().parse::<f64>().is_ok(),
            "{line:?}"
        );
    }
}
