//! Rules that must hold whatever the costs, slot speeds, host losses,
//! silent hosts, failures and policy: every row is committed exactly once,
//! the run ends within its step bound, and after every event the scheduler's
//! indexes (the ordered sets and counters that spare it a scan of every slot,
//! chunk and attempt) equal what a full scan gives. The cost index answers
//! as the plain prefix sums do, whatever its block size.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use herd::plan::{CostIndex, chunks_by_rows};
use herd::sched::Policy;
use herd::sched::sim::{self, Scenario, SimHost, Timing};
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
        prop::option::weighted(0.2, 0u64..20_000),
    )
        .prop_map(
            |(speed, slots, lost_ms, fail_attempts, silent_ms)| SimHost {
                speed,
                slots,
                lost_at: lost_ms.map(Duration::from_millis),
                fail_attempts,
                silent_at: silent_ms.map(Duration::from_millis),
            },
        )
}

/// The chunking rule itself, row by row, to compare the index's with.
fn greedy_chunks(costs: &[u64], target: u64, done: &[Range<u64>]) -> Vec<Range<u64>> {
    let target = target.max(1);
    let mut chunks = Vec::new();
    for gap in herd::plan::gaps(costs.len() as u64, done) {
        let (mut start, mut acc) = (gap.start, 0u64);
        for row in gap.clone() {
            let cost = costs[row as usize];
            if cost > target && row > start {
                chunks.push(start..row);
                (start, acc) = (row, 0);
            }
            acc = acc.saturating_add(cost);
            if acc >= target {
                chunks.push(start..row + 1);
                (start, acc) = (row + 1, 0);
            }
        }
        if start < gap.end {
            chunks.push(start..gap.end);
        }
    }
    chunks
}

fn index(costs: &[u64], block: u64) -> CostIndex {
    CostIndex::with_block(Arc::new(costs.to_vec()), block)
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
    fn every_row_is_committed_exactly_once_and_the_indexes_hold(
        costs in costs(),
        mut hosts in prop::collection::vec(host(), 1..5),
        survivor in any::<prop::sample::Index>(),
        policy in policy(),
        real in any::<bool>(),
    ) {
        let keep = survivor.index(hosts.len());
        hosts[keep].lost_at = None;
        hosts[keep].silent_at = None;
        if !policy.speculation {
            // Only a backup finishes a chunk whose attempt fell silent.
            for h in &mut hosts {
                h.silent_at = None;
            }
        }
        let scenario = Scenario { name: "prop", costs: costs.into(), hosts };
        let timing = if real { Timing::real() } else { Timing::ideal() };
        let outcome = sim::run_checked(&scenario, &policy, 200_000, &timing);
        prop_assert_eq!(&outcome.failed, &None);
        assert_tiles(outcome.commits.clone(), 0..scenario.costs.rows())?;
        prop_assert!(outcome.makespan >= Duration::ZERO);
    }

    #[test]
    fn the_cost_index_answers_as_prefix_sums_do(
        costs in costs(),
        block in 1u64..10,
        a in 0u64..160,
        b in 0u64..160,
        goal in 0u64..100_000,
    ) {
        let index = index(&costs, block);
        let n = costs.len() as u64;
        let prefix: Vec<u64> = std::iter::once(0)
            .chain(costs.iter().scan(0u64, |acc, &c| { *acc += c; Some(*acc) }))
            .collect();
        let (start, end) = (a.min(b).min(n), a.max(b).min(n));
        prop_assert_eq!(index.cost(start..end), prefix[end as usize] - prefix[start as usize]);
        prop_assert_eq!(index.total(), prefix[n as usize]);
        prop_assert_eq!(index.max_row_cost(), costs.iter().copied().max().unwrap_or(0));
        let reached = (start..=end)
            .find(|&r| prefix[r as usize] - prefix[start as usize] >= goal)
            .unwrap_or(end);
        prop_assert_eq!(index.row_reaching(start..end, goal), reached);
    }

    #[test]
    fn chunks_by_cost_tile_the_rows_left(
        costs in costs(),
        target in 0u64..20_000,
        done in prop::collection::vec((0u64..160, 0u64..20), 0..4),
        block in 1u64..10,
    ) {
        let done: Vec<Range<u64>> = done.into_iter().map(|(s, l)| s..s + l).collect();
        let chunks = index(&costs, block).chunks_by_cost(target, &done);
        prop_assert_eq!(&chunks, &greedy_chunks(&costs, target, &done));
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
    fn a_split_tiles_the_rest(
        costs in costs(),
        at in 0u64..200,
        parts in 0u64..10,
        block in 1u64..10,
    ) {
        let n = costs.len() as u64;
        let split_at = at.min(n);
        let pieces = index(&costs, block).split(split_at..n, parts);
        prop_assert!(pieces.len() as u64 <= parts.max(1));
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
        costs: vec![100; 40].into(),
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
        costs: vec![100; 40].into(),
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
