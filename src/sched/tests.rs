//! The scheduler under the timing of real runs: progress every 1/16 of a
//! chunk, a few milliseconds to launch, and news that reaches it in bursts
//! when the coordinator was busy reading rows or writing the store.

use std::time::Duration;

use super::sim::{self, Scenario, SimHost, Timing};
use super::{Command, Input, Policy, Scheduler, SlotId};

fn full_policy(target_chunk_cost: u64) -> Policy {
    Policy {
        pull: true,
        cost_aware: true,
        split_running: true,
        speculation: true,
        max_attempts: 4,
        target_chunk_cost,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn launched(scheduler: &mut Scheduler) -> Vec<u64> {
    std::iter::from_fn(|| scheduler.poll_command())
        .filter_map(|c| match c {
            Command::Launch { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect()
}

/// Two slots of 1e6 cost/s; rows cost 1 000. Slot 0 runs rows 0..2400
/// (2.4 s), slot 1 rows 2400..3200 (0.8 s). Slot 0 reports every 150 rows,
/// but its reports due at 0.45, 0.6 and 0.75 s reach the scheduler together
/// at 0.75 s, microseconds apart. When slot 1 finishes at 0.8 s, slot 0 has
/// about 1.6 s left, so the rest of its chunk is split in half: at the row
/// where both slots end together (about row 1600).
#[test]
fn a_burst_of_reports_does_not_hide_a_chunk_worth_splitting() {
    let mut scheduler = Scheduler::new(full_policy(2_400_000), vec![1_000; 3_200], &[]);
    for slot in 0..2 {
        scheduler.handle(
            Duration::ZERO,
            Input::SlotUp {
                slot: SlotId(slot),
                host: slot,
            },
        );
    }
    let attempts = launched(&mut scheduler);
    assert_eq!(attempts.len(), 2);
    let (long, short) = (attempts[0], attempts[1]);
    let mut news: Vec<(Duration, Input)> = Vec::new();
    for k in 1..=5u64 {
        let due = secs(0.15 * k as f64);
        let at = if (3..=5).contains(&k) {
            secs(0.75) + Duration::from_micros(k)
        } else {
            due
        };
        news.push((
            at,
            Input::Progress {
                attempt: long,
                rows_done: 150 * k,
            },
        ));
    }
    for k in 1..8u64 {
        news.push((
            secs(0.1 * k as f64),
            Input::Progress {
                attempt: short,
                rows_done: 100 * k,
            },
        ));
    }
    news.sort_by_key(|(at, _)| *at);
    for (at, input) in news {
        scheduler.handle(at, input);
        assert_eq!(launched(&mut scheduler), Vec::<u64>::new(), "at {at:?}");
    }
    scheduler.handle(secs(0.8), Input::Finished { attempt: short });
    let commands: Vec<Command> = std::iter::from_fn(|| scheduler.poll_command()).collect();
    let stop = commands.iter().find_map(|c| match c {
        Command::StopAt { attempt, row } if *attempt == long => Some(*row),
        _ => None,
    });
    let Some(row) = stop else {
        panic!("no split when slot 1 went idle: {commands:?}");
    };
    assert!(
        (1_500..=1_700).contains(&row),
        "split at row {row}: {commands:?}"
    );
    assert!(
        commands.iter().any(|c| matches!(
            c,
            Command::Launch { slot: SlotId(1), rows, backup: false, .. } if rows.start == row && rows.end == 2_400
        )),
        "the rest did not go to slot 1: {commands:?}"
    );
}

/// Chunks that finish within [`super::MIN_RATE_SPAN`] of their first report
/// still give their slot a speed (over the whole attempt), so the run has an
/// estimate.
#[test]
fn a_chunk_faster_than_the_rate_span_still_measures_its_slot() {
    let mut scheduler = Scheduler::new(full_policy(100_000), vec![1_000; 200], &[]);
    scheduler.handle(
        Duration::ZERO,
        Input::SlotUp {
            slot: SlotId(0),
            host: 0,
        },
    );
    let attempt = launched(&mut scheduler)[0];
    for (us, rows_done) in [(500, 50), (1_000, 100)] {
        scheduler.handle(
            Duration::from_micros(us),
            Input::Progress { attempt, rows_done },
        );
    }
    assert_eq!(scheduler.snapshot(Duration::from_micros(1_000)).eta, None);
    scheduler.handle(Duration::from_micros(1_000), Input::Finished { attempt });
    assert_eq!(launched(&mut scheduler).len(), 1, "the second chunk");
    // 100 000 cost in 1 ms: the other 100 000 take about 1 ms.
    let eta = scheduler.snapshot(Duration::from_micros(1_000)).eta;
    let eta = eta
        .expect("an estimate after the first chunk")
        .as_secs_f64();
    assert!((0.0009..=0.0011).contains(&eta), "eta {eta} s");
}

/// The stock scenarios under a driver busy for milliseconds per launch and
/// commit: the full policy stays within the benchmark's 15% of the bound,
/// and every row is committed exactly once.
#[test]
fn real_timing_keeps_the_full_policy_within_15_percent_of_the_bound() {
    for timing in [Timing::real(), loaded()] {
        println!(
            "{timing:?}\n{}",
            sim::bench_table(&sim::bench_timed(&timing))
        );
        for seed in [1, 2, 3] {
            for scenario in sim::scenarios(seed) {
                let outcome = sim::run_timed(
                    &scenario,
                    &sim::bench_policy(),
                    sim::BENCH_MAX_STEPS,
                    &timing,
                );
                assert_eq!(outcome.failed, None, "{}", scenario.name);
                assert_tiles(&outcome.commits, scenario.costs.rows(), scenario.name);
                let ratio = outcome.makespan.as_secs_f64() / outcome.lower_bound.as_secs_f64();
                assert!(
                    ratio <= 1.15,
                    "{} (seed {seed}) under {timing:?}: {ratio:.3}x the bound",
                    scenario.name
                );
            }
        }
    }
}

/// A coordinator on a loaded machine: three times the usual driver delays.
fn loaded() -> Timing {
    let real = Timing::real();
    Timing {
        start_latency: real.start_latency * 3,
        launch_busy: real.launch_busy * 3,
        commit_busy: real.commit_busy * 3,
        ..real
    }
}

/// The shape of `tests/stragglers.rs` in the simulator: three slots, one 5x
/// slower, 24 000 equal rows in 18 chunks.
#[test]
fn one_slot_of_three_slowed_5x_stays_within_15_percent_of_the_bound() {
    let scenario = Scenario {
        name: "one-of-three-slow",
        costs: vec![1_000; 24_000].into(),
        hosts: vec![
            SimHost::new(1_000_000.0 / 5.0, 1),
            SimHost::new(1_000_000.0, 1),
            SimHost::new(1_000_000.0, 1),
        ],
    };
    for timing in [Timing::ideal(), Timing::real(), loaded()] {
        let outcome = sim::run_timed(&scenario, &full_policy(24_000_000 / 18), 100_000, &timing);
        assert_eq!(outcome.failed, None);
        assert_tiles(&outcome.commits, 24_000, scenario.name);
        let ratio = outcome.makespan.as_secs_f64() / outcome.lower_bound.as_secs_f64();
        println!(
            "{timing:?}: {ratio:.3} ({} splits, {} backups)",
            outcome.splits, outcome.backups
        );
        assert!(ratio <= 1.15, "{timing:?}: {ratio:.3}x the bound");
        assert!(
            outcome.splits + outcome.backups >= 1,
            "{timing:?}: {outcome:?}"
        );
    }
}

fn assert_tiles(commits: &[std::ops::Range<u64>], rows: u64, name: &str) {
    let mut commits = commits.to_vec();
    commits.sort_by_key(|r| r.start);
    let mut at = 0;
    for r in &commits {
        assert_eq!(r.start, at, "{name}: gap or overlap at row {at}");
        at = r.end;
    }
    assert_eq!(at, rows, "{name}");
}

/// `upcoming` names the chunks a slot that comes free would take, in the
/// order it takes them: never one running, done or waiting for a retry.
#[test]
fn upcoming_lists_the_chunks_not_handed_out_in_the_order_a_free_slot_takes_them() {
    let mut scheduler = Scheduler::new(full_policy(1_000_000), vec![1_000; 8_000], &[]);
    scheduler.handle(
        Duration::ZERO,
        Input::SlotUp {
            slot: SlotId(0),
            host: 0,
        },
    );
    let launches = |scheduler: &mut Scheduler| -> Vec<(u64, u64, std::ops::Range<u64>)> {
        std::iter::from_fn(|| scheduler.poll_command())
            .filter_map(|c| match c {
                Command::Launch {
                    attempt,
                    chunk,
                    rows,
                    ..
                } => Some((attempt, chunk, rows)),
                _ => None,
            })
            .collect()
    };
    let first = launches(&mut scheduler);
    assert_eq!(first.len(), 1, "{first:?}");
    let upcoming: Vec<_> = scheduler.upcoming().collect();
    assert!(upcoming.len() >= 2, "{upcoming:?}");
    assert!(upcoming.iter().all(|(chunk, _)| *chunk != first[0].1));
    // In order, and between them every row the first chunk left.
    let mut rows: Vec<_> = upcoming.iter().map(|(_, r)| r.clone()).collect();
    rows.push(first[0].2.clone());
    rows.sort_by_key(|r| r.start);
    assert_eq!(rows[0].start, 0);
    assert!(rows.windows(2).all(|w| w[0].end == w[1].start));
    assert_eq!(rows.last().unwrap().end, 8_000);

    // The slot comes free: it takes the first of them.
    scheduler.handle(
        secs(1.0),
        Input::Finished {
            attempt: first[0].0,
        },
    );
    let second = launches(&mut scheduler);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!((second[0].1, second[0].2.clone()), upcoming[0]);
    assert_eq!(scheduler.upcoming().collect::<Vec<_>>(), upcoming[1..]);

    // Its attempt fails: the chunk is retried (at once, on the slot that is
    // free) and never listed.
    scheduler.handle(
        secs(1.1),
        Input::Failed {
            attempt: second[0].0,
            error: "worker gone".into(),
        },
    );
    let retried = launches(&mut scheduler);
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert_eq!(retried[0].1, second[0].1);
    assert_eq!(scheduler.upcoming().collect::<Vec<_>>(), upcoming[1..]);
}
