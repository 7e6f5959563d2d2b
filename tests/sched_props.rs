//! Rules that must hold whatever the costs, slot speeds, host losses,
//! failures and policy: every row is committed exactly once, and the run ends
//! within its step bound.

use std::ops::Range;
use std::time::Duration;

use herd::plan::{chunks_by_cost, chunks_by_rows, split_rest};
use herd::sched::Policy;
use herd::sched::sim::{self, Scenario, SimHost};
use proptest::prelude::*;

fn assert_tiles(mut ranges: Vec<Range<u64>>, rows: Range<u64>) -> Result<(), TestCaseError> {
    ranges.sort_by_key(|r| r.start);
    let mut at = rows.start;
    for r in &ranges {
        prop_assert_eq!(r.start, at, "gap or overlap in {:?}", ranges);
        prop_assert!(r.end > r.start, "empty range in {:?}", ranges);
        at = r.end;
    }
    prop_assert_eq!(at, rows.end, "{:?} does not reach {}", ranges, rows.end);
    Ok(())
}

fn costs() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![8 => 0u64..1_000, 1 => 10_000u64..50_000, 1 => Just(0u64)],
        1..150,
    )
}

fn host() -> impl Strategy<Value = SimHost> {
    (
        1_000.0f64..100_000.0,
        1u32..4,
        prop::option::weighted(0.3, 0u64..20_000),
        prop_oneof![3 => Just(0u32), 1 => 1u32..3],
    )
        .prop_map(|(speed, slots, lost_ms, fail_attempts)| SimHost {
            speed,
            slots,
            lost_at: lost_ms.map(Duration::from_millis),
            fail_attempts,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (any::<[bool; 4]>(), 0u64..20_000).prop_map(|(b, target)| Policy {
        pull: b[0],
        cost_aware: b[1],
        split_running: b[2],
        speculation: b[3],
        max_attempts: 1_000,
        target_chunk_cost: target,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_row_is_committed_exactly_once(
        costs in costs(),
        mut hosts in prop::collection::vec(host(), 1..5),
        survivor in any::<prop::sample::Index>(),
        policy in policy(),
    ) {
        let keep = survivor.index(hosts.len());
        hosts[keep].lost_at = None;
        let scenario = Scenario { name: "prop", costs, hosts };
        let outcome = sim::run(&scenario, &policy, 200_000);
        prop_assert_eq!(&outcome.failed, &None);
        assert_tiles(outcome.commits.clone(), 0..scenario.costs.len() as u64)?;
        prop_assert!(outcome.makespan >= Duration::ZERO);
    }

    #[test]
    fn chunks_by_cost_tile_the_rows_left(
        costs in costs(),
        target in 0u64..20_000,
        done in prop::collection::vec((0u64..160, 0u64..20), 0..4),
    ) {
        let done: Vec<Range<u64>> = done.into_iter().map(|(s, l)| s..s + l).collect();
        let chunks = chunks_by_cost(&costs, target, &done);
        let n = costs.len() as u64;
        let rest = herd::plan::normalize(&done, n);
        assert_tiles(chunks.iter().cloned().chain(rest.iter().cloned()).collect(), 0..n)?;
        for c in &chunks {
            let cost: u64 = costs[c.start as usize..c.end as usize].iter().sum();
            let last = costs[c.end as usize - 1];
            // Only the last row may take a chunk past its target, and a
            // chunk under target ends at a gap, the end, or before a big row.
            prop_assert!(cost - last < target.max(1) || c.end - c.start == 1, "{:?} costs {}", c, cost);
        }
        let by_rows = chunks_by_rows(n, 5, &done);
        assert_tiles(by_rows.into_iter().chain(rest).collect(), 0..n)?;
    }

    #[test]
    fn split_rest_tiles_the_rest(
        costs in costs(),
        at in 0u64..200,
        parts in 0usize..10,
    ) {
        let n = costs.len() as u64;
        let split_at = at.min(n);
        let pieces = split_rest(&costs, 0..n, split_at, parts);
        prop_assert!(pieces.len() <= parts.max(1));
        if split_at < n {
            assert_tiles(pieces, split_at..n)?;
        } else {
            prop_assert!(pieces.is_empty());
        }
    }
}

#[test]
fn a_host_that_fails_everything_fails_the_chunk_after_max_attempts() {
    let scenario = Scenario {
        name: "faulty",
        costs: vec![100; 40],
        hosts: vec![SimHost {
            fail_attempts: u32::MAX,
            ..SimHost::new(10_000.0, 1)
        }],
    };
    let policy = Policy {
        pull: true,
        cost_aware: true,
        split_running: true,
        speculation: true,
        max_attempts: 3,
        target_chunk_cost: 1_000,
    };
    let outcome = sim::run(&scenario, &policy, 10_000);
    let error = outcome.failed.expect("the run failed");
    assert!(error.contains("chunk 0 (rows 0..10)"), "{error}");
    assert!(error.contains("failed 3 attempts"), "{error}");
    assert!(error.contains("simulated failure on host 0"), "{error}");
    assert_eq!(outcome.attempts, 3);
    assert!(outcome.commits.is_empty());
}

#[test]
fn a_faulty_host_beside_a_good_one_only_costs_retries() {
    let scenario = Scenario {
        name: "faulty-and-good",
        costs: vec![100; 40],
        hosts: vec![
            SimHost {
                fail_attempts: u32::MAX,
                ..SimHost::new(10_000.0, 2)
            },
            SimHost::new(10_000.0, 1),
        ],
    };
    let policy = Policy {
        pull: true,
        cost_aware: true,
        split_running: false,
        speculation: false,
        max_attempts: 2,
        target_chunk_cost: 1_000,
    };
    let outcome = sim::run(&scenario, &policy, 10_000);
    assert_eq!(outcome.failed, None);
    let mut commits = outcome.commits.clone();
    commits.sort_by_key(|r| r.start);
    assert_eq!(
        commits,
        (0..4).map(|i| i * 10..i * 10 + 10).collect::<Vec<_>>()
    );
}
