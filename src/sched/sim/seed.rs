//! The job herd was built for, as a scenario: 500 million entities on 1,250
//! hosts of 8 slots, two chunks per slot, sized for 90 minutes; 5% of the
//! entities, in one contiguous run, cost 20x; 5% of the hosts are 5x slower;
//! 1% are lost halfway through the bound. `scale` N divides the entities,
//! hosts and chunks by N (at least 4 hosts, and at least one slow and one
//! lost host), so tests run the same shape at 1/100.
//!
//! No per-entity cost is stored: [`SeedCosts`] computes a row's cost from its
//! number (a uniform 5,000..15,000 from 32 bits of a seeded generator, 20x in
//! the heavy run), and the scenario's [`CostIndex`] keeps block sums only.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::{Scenario, SimHost, SplitMix64, bench_policy, lower_bound};
use crate::plan::{CostIndex, RowCosts};
use crate::sched::Policy;

/// Entities of the seed job.
pub const SEED_ENTITIES: u64 = 500_000_000;
/// Hosts of the seed fleet, and slots on each.
pub const SEED_HOSTS: u64 = 1_250;
pub const SEED_SLOTS_PER_HOST: u32 = 8;
/// Planned chunks per slot: two (20,000 chunks on 10,000 slots, 45 minutes
/// each). With one, a 5x slower slot is mid-way through a 28-minute batch
/// (1/16 of its chunk, which it finishes before it reads a stop) when the
/// others run dry, and that batch alone ends 1.2x past the bound.
pub const SEED_CHUNKS_PER_SLOT: u64 = 2;
/// The makespan the job is sized for on healthy hosts.
pub const SEED_NOMINAL: Duration = Duration::from_secs(90 * 60);
/// Cost of a heavy entity over a light one, and the heavy share (1 in 20).
pub const HEAVY_FACTOR: u64 = 20;
pub const HEAVY_SHARE: u64 = 20;
/// A slow host's speed divisor; slow hosts are 1 in 20, lost ones 1 in 100.
pub const SLOW_FACTOR: f64 = 5.0;
pub const SLOW_SHARE: u64 = 20;
pub const LOST_SHARE: u64 = 100;
/// Fewest hosts at any scale.
pub const MIN_HOSTS: u64 = 4;
/// The generator's seed.
pub const SEED: u64 = 17;

/// Per-row costs of the seed job, computed on demand.
#[derive(Clone, Debug)]
pub struct SeedCosts {
    pub rows: u64,
    pub seed: u64,
    /// The contiguous run of heavy entities.
    pub heavy: Range<u64>,
}

impl SeedCosts {
    /// The seed job's costs at 1/`scale` of its entities.
    pub fn new(scale: u64) -> SeedCosts {
        let rows = SEED_ENTITIES / scale.max(1);
        let run = rows / HEAVY_SHARE;
        let at = SplitMix64(SEED).in_range(0..rows - run + 1);
        SeedCosts {
            rows,
            seed: SEED,
            heavy: at..at + run,
        }
    }
}

impl RowCosts for SeedCosts {
    fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows `2k` and `2k + 1` take the low and high halves of the
    /// generator's output `k`.
    fn fill(&self, start: u64, out: &mut [u64]) {
        let mut word = SplitMix64::nth(self.seed, start / 2);
        for (i, cost) in out.iter_mut().enumerate() {
            let row = start + i as u64;
            let draw = if row % 2 == 0 {
                word = SplitMix64::nth(self.seed, row / 2);
                word & 0xFFFF_FFFF
            } else {
                word >> 32
            };
            let base = 5_000 + ((draw * 10_000) >> 32);
            *cost = if self.heavy.contains(&row) {
                base * HEAVY_FACTOR
            } else {
                base
            };
        }
    }
}

/// How the lost hosts go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// The driver hears of it (a dropped connection): `HostLost`.
    Reported,
    /// They fall silent (a hung machine behind an open connection).
    Silent,
}

/// The seed job's cost index at 1/`scale`: one pass over every entity.
pub fn seed_costs(scale: u64) -> CostIndex {
    CostIndex::from_source(Arc::new(SeedCosts::new(scale)))
}

/// The seed scenario over `costs` (from [`seed_costs`] at the same scale),
/// named `seed` or `seed-silent`, and the policy of the benchmark with the
/// seed's chunk size.
pub fn seed_scenario(costs: &CostIndex, scale: u64, loss: Loss) -> (Scenario, Policy) {
    let hosts_n = (SEED_HOSTS / scale.max(1)).max(MIN_HOSTS);
    let slots = hosts_n * u64::from(SEED_SLOTS_PER_HOST);
    let speed = costs.total() as f64 / (slots as f64 * SEED_NOMINAL.as_secs_f64());
    let mut hosts: Vec<SimHost> = (0..hosts_n)
        .map(|_| SimHost::new(speed, SEED_SLOTS_PER_HOST))
        .collect();
    // A seeded shuffle picks the slow hosts, then the lost ones.
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    let mut rng = SplitMix64(SEED ^ 0x5eed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.in_range(0..i as u64 + 1) as usize);
    }
    let slow = (hosts_n / SLOW_SHARE).max(1) as usize;
    let lost = (hosts_n / LOST_SHARE).max(1) as usize;
    for &h in &order[..slow] {
        hosts[h].speed = speed / SLOW_FACTOR;
    }
    let halfway = lower_bound(costs, &hosts) / 2;
    for &h in &order[slow..slow + lost] {
        match loss {
            Loss::Reported => hosts[h].lost_at = Some(halfway),
            Loss::Silent => hosts[h].silent_at = Some(halfway),
        }
    }
    let chunks = slots * SEED_CHUNKS_PER_SLOT;
    let policy = Policy {
        target_chunk_cost: (costs.total() / chunks).max(1),
        ..bench_policy()
    };
    let name = match loss {
        Loss::Reported => "seed",
        Loss::Silent => "seed-silent",
    };
    let scenario = Scenario {
        name,
        costs: costs.clone(),
        hosts,
    };
    (scenario, policy)
}
