//! `herd bench store`: merge throughput and point-read latency of the store on
//! a synthetic top-100 version, printed beside the targets (a table of
//! figures, not a pass/fail test).
//!
//! It writes a throwaway store under the system temp directory and removes it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use super::{NewVersion, Result, Status, Store};
use crate::model::{EntityIds, EntityKey, Predictions};

/// Entities of the benchmark version.
pub const ENTITIES: u64 = 1_000_000;
/// Rows per committed chunk: merge is measured once with each size (every
/// commit is one write transaction and one flush to disk).
pub const CHUNK_ROWS: [u64; 2] = [10_000, 100_000];
/// Pairs per value (816-byte values).
pub const TOP_K: usize = 100;
/// Timed lookups per reader thread.
pub const LOOKUPS: usize = 200_000;

const TARGET_MERGE: f64 = 300_000.0;
const TARGET_P99_US: f64 = 20.0;

/// Runs the benchmark at full size; returns the table (or JSON rows).
pub fn run(json: bool) -> Result<String> {
    run_sized(ENTITIES, LOOKUPS, json)
}

/// A small deterministic generator (xorshift64*), so every run reads the same keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct Row {
    metric: String,
    value: f64,
    unit: &'static str,
    target: String,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Reads `lookups` random keys of `0..entities` through `Store::with_value`;
/// returns each lookup's latency in nanoseconds.
fn read_latencies(store: &Store, entities: u64, lookups: usize, seed: u64) -> Result<Vec<u64>> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(lookups);
    let mut sink = 0.0f32;
    for _ in 0..lookups {
        let key = EntityKey::Int(rng.next() % entities);
        let t = Instant::now();
        let s = store.with_value(&key, |v| v.map_or(f32::NAN, |(_, v)| v.score(0)))?;
        out.push(t.elapsed().as_nanos() as u64);
        sink += s;
    }
    std::hint::black_box(sink);
    Ok(out)
}

fn temp_store_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("herd-bench-store-{}-{nanos}", std::process::id()))
}

/// The benchmark with a chosen size (the full run uses [`ENTITIES`] and
/// [`LOOKUPS`]).
pub fn run_sized(entities: u64, lookups: usize, json: bool) -> Result<String> {
    let dir = temp_store_dir();
    let result = measure(&dir, entities, lookups);
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"metric": r.metric, "value": r.value, "unit": r.unit, "target": r.target})
            })
            .collect();
        return Ok(serde_json::Value::Array(list).to_string());
    }
    let mut out = format!(
        "store: {entities} entities, top-{TOP_K} values ({} bytes)\n",
        16 + 8 * TOP_K
    );
    let _ = writeln!(
        out,
        "{:<32} {:>14} {:<10} target",
        "metric", "value", "unit"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<32} {:>14.2} {:<10} {}",
            r.metric, r.value, r.unit, r.target
        );
    }
    Ok(out)
}

/// Commits `entities` rows of top-K values to a new version, `chunk` rows per
/// commit, in ascending key order; returns the version and the seconds spent
/// inside `commit_chunk`.
fn merge(store: &Store, entities: u64, chunk: u64) -> Result<(u64, f64)> {
    let version = store.begin_version(NewVersion {
        job: "bench".into(),
        model_version: "bench".into(),
        model_kind: "two_tower".into(),
        rows: entities,
        ttl_secs: 7 * 86_400,
        fingerprint: "bench".into(),
        created: 0,
        hosts: Vec::new(),
    })?;
    let chunk = chunk.min(entities.max(1)) as usize;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut offsets = Vec::with_capacity(chunk + 1);
    let mut items = Vec::with_capacity(chunk * TOP_K);
    let mut scores = Vec::with_capacity(chunk * TOP_K);
    offsets.push(0u32);
    for _ in 0..chunk {
        for j in 0..TOP_K {
            items.push((rng.next() % 1_000_000) as u32);
            scores.push(10.0 - j as f32 * 0.01);
        }
        offsets.push(items.len() as u32);
    }
    let template = Predictions::TopK {
        offsets,
        items,
        scores,
    };
    let mut secs = 0.0f64;
    let mut start = 0u64;
    while start < entities {
        let end = (start + chunk as u64).min(entities);
        let ids = EntityIds::Int((start..end).collect());
        let mut preds = template.clone();
        preds.truncate((end - start) as usize);
        let t = Instant::now();
        store.commit_chunk(version, start..end, &ids, &preds, 1_764_388_800)?;
        secs += t.elapsed().as_secs_f64();
        start = end;
    }
    store.update_record(version, |r| r.status = Status::Validated)?;
    Ok((version, secs))
}

fn measure(dir: &std::path::Path, entities: u64, lookups: usize) -> Result<Vec<Row>> {
    let store = Store::open(dir)?;
    let value_bytes = (16 + 8 * TOP_K) as f64 * entities as f64;
    let mut rows = Vec::new();
    for chunk in CHUNK_ROWS {
        let (v, secs) = merge(&store, entities, chunk)?;
        let secs = secs.max(1e-9);
        rows.push(Row {
            metric: format!("merge, {chunk}-row chunks"),
            value: entities as f64 / secs,
            unit: "entities/s",
            target: format!(">= {TARGET_MERGE}"),
        });
        rows.push(Row {
            metric: format!("merge, {chunk}-row chunks"),
            value: value_bytes / secs / 1e6,
            unit: "MB/s",
            target: "-".into(),
        });
        store.flip(v)?;
    }

    let mut one = read_latencies(&store, entities, lookups, 1)?;
    one.sort_unstable();
    let mut two = std::thread::scope(|s| -> Result<Vec<u64>> {
        let a = s.spawn(|| read_latencies(&store, entities, lookups, 2));
        let b = s.spawn(|| read_latencies(&store, entities, lookups, 3));
        let mut all = a.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        all.extend(b.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?);
        Ok(all)
    })?;
    two.sort_unstable();

    let p99_target = format!("<= {TARGET_P99_US}");
    for (threads, lat) in [(1, &one), (2, &two)] {
        let label = if threads == 1 {
            "1 thread"
        } else {
            "2 threads"
        };
        for (name, p) in [("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999)] {
            rows.push(Row {
                metric: format!("read {name}, {label}"),
                value: percentile(lat, p),
                unit: "us",
                target: if name == "p99" {
                    p99_target.clone()
                } else {
                    "-".into()
                },
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_prints_every_row_with_its_target() {
        let table = run_sized(25_000, 2_000, false).unwrap();
        for metric in [
            "merge, 10000-row chunks",
            "merge, 100000-row chunks",
            "read p99, 1 thread",
            "read p99.9, 2 threads",
        ] {
            assert!(table.contains(metric), "{table}");
        }
        assert!(
            table.contains(">= 300000") && table.contains("<= 20"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&run_sized(5_000, 500, true).unwrap()).unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 10);
        assert!(
            rows.iter()
                .all(|r| r["value"].as_f64().is_some_and(|v| v > 0.0))
        );
    }
}
