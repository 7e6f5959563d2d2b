//! `herd bench compute`: rows/s and GFLOP/s of each backend on both reference
//! workloads at realistic sizes, beside the stock-stack baseline and this
//! machine's physical ceiling, as ratios. A benchmark prints a table; it
//! never passes or fails.
//!
//! The baseline figures come from `bench/baseline.py` (onnxruntime on the
//! same shapes); `bench/compare.sh` runs both in one session. When no
//! baseline file is given, the figures measured on this kind of machine
//! (2 threads) are shown instead, marked as such.

use std::time::Instant;

use crate::config::Device;
use crate::model::{Dense, EntityIds, Mlp, Model, OutputActivation, Rows, TwoTower};

/// onnxruntime 1.32, 2 threads, measured on the project's 2-core machine.
pub const ONNXRUNTIME_MLP_ROWS_PER_S: f64 = 567_000.0;
pub const ONNXRUNTIME_TWO_TOWER_USERS_PER_S: f64 = 4_900.0;

/// The sizes the issue names.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub mlp_rows: usize,
    pub mlp_features: usize,
    pub mlp_hidden: usize,
    pub users: usize,
    pub items: usize,
    pub dim: usize,
    pub top_k: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            mlp_rows: 1_000_000,
            mlp_features: 64,
            mlp_hidden: 256,
            users: 20_000,
            items: 100_000,
            dim: 64,
            top_k: 100,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ComputeRow {
    pub model: String,
    pub backend: String,
    pub adapter: String,
    pub rows: usize,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub gflops: f64,
    pub baseline_rows_per_s: f64,
    pub baseline: String,
    pub ratio: f64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

fn dense(rng: &mut Rng, name: &str, in_dim: usize, out_dim: usize) -> Dense {
    let scale = 1.0 / (in_dim as f32).sqrt();
    Dense {
        name: name.into(),
        in_dim,
        out_dim,
        weight: (0..in_dim * out_dim).map(|_| rng.uniform(scale)).collect(),
        bias: (0..out_dim).map(|_| rng.uniform(scale)).collect(),
    }
}

/// The mlp workload: F -> hidden -> hidden -> 1, sigmoid.
pub fn mlp_workload(s: &Sizes) -> (Model, Rows) {
    let mut rng = Rng(1);
    let model = Model::Mlp(Mlp {
        layers: vec![
            dense(&mut rng, "0", s.mlp_features, s.mlp_hidden),
            dense(&mut rng, "2", s.mlp_hidden, s.mlp_hidden),
            dense(&mut rng, "4", s.mlp_hidden, 1),
        ],
        output: OutputActivation::Sigmoid,
    });
    let rows = Rows {
        ids: EntityIds::Int((0..s.mlp_rows as u64).collect()),
        num_features: s.mlp_features,
        features: (0..s.mlp_rows * s.mlp_features)
            .map(|_| rng.uniform(1.0))
            .collect(),
        history_offsets: vec![],
        history_items: vec![],
    };
    (model, rows)
}

/// The two_tower workload: histories of 5-60 items (1 in 20 users: 500+),
/// 4 features, tower (dim+4) -> 128 -> dim, top K excluding seen items.
pub fn two_tower_workload(s: &Sizes) -> (Model, Rows) {
    let mut rng = Rng(2);
    let features = 4;
    let model = Model::TwoTower(TwoTower {
        dim: s.dim,
        item_embeddings: (0..s.items * s.dim).map(|_| rng.uniform(0.5)).collect(),
        item_ids: (0..s.items as u32).collect(),
        tower: vec![
            dense(&mut rng, "user_tower.0", s.dim + features, 128),
            dense(&mut rng, "user_tower.2", 128, s.dim),
        ],
        num_features: features,
        top_k: s.top_k,
        max_history: 500,
        exclude_seen: true,
    });
    let mut offsets = vec![0u32];
    let mut items = Vec::new();
    for u in 0..s.users {
        let len = if u % 20 == 0 {
            500 + rng.next() % 1500
        } else {
            5 + rng.next() % 56
        };
        for _ in 0..len {
            items.push((rng.next() % s.items as u64) as u32);
        }
        offsets.push(items.len() as u32);
    }
    let rows = Rows {
        ids: EntityIds::Int((0..s.users as u64).collect()),
        num_features: features,
        features: (0..s.users * features).map(|_| rng.uniform(1.0)).collect(),
        history_offsets: offsets,
        history_items: items,
    };
    (model, rows)
}

fn flops(model: &Model, rows: &Rows) -> f64 {
    (0..rows.len())
        .map(|i| 2.0 * model.entity_cost(rows.history_of(i).len()) as f64)
        .sum()
}

/// Runs every backend this machine has on both workloads. `baseline`:
/// (mlp rows/s, two_tower users/s, label) from `bench/baseline.py`.
pub fn compute(
    sizes: &Sizes,
    threads: usize,
    baseline: Option<(f64, f64, String)>,
) -> Vec<ComputeRow> {
    let (base_mlp, base_tt, label) = baseline.unwrap_or((
        ONNXRUNTIME_MLP_ROWS_PER_S,
        ONNXRUNTIME_TWO_TOWER_USERS_PER_S,
        "onnxruntime, 2 threads (measured earlier on this kind of machine)".to_string(),
    ));
    let workloads = [
        ("mlp", mlp_workload(sizes), base_mlp),
        ("two_tower", two_tower_workload(sizes), base_tt),
    ];
    let gpu = crate::gpu::choose(Device::Gpu).ok().flatten();
    let mut out = Vec::new();
    for (name, (model, rows), base) in &workloads {
        let total_flops = flops(model, rows);
        let t = Instant::now();
        let preds = crate::worker::predict_cpu(model, rows, threads);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(preds.len(), rows.len());
        out.push(row(
            name,
            "cpu",
            &format!("native, {threads} threads"),
            rows.len(),
            secs,
            total_flops,
            *base,
            &label,
        ));
        if let Some(g) = &gpu {
            if let Ok(gm) = crate::gpu::GpuModel::new(g, model) {
                // Warm-up on a slice (pipelines, first upload), then the whole set.
                let _ = gm.predict(g, &rows.slice(0..rows.len().min(256)));
                let t = Instant::now();
                if gm.predict(g, rows).is_ok() {
                    let secs = t.elapsed().as_secs_f64();
                    out.push(row(
                        name,
                        "gpu",
                        &g.info.name,
                        rows.len(),
                        secs,
                        total_flops,
                        *base,
                        &label,
                    ));
                }
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn row(
    model: &str,
    backend: &str,
    adapter: &str,
    n: usize,
    secs: f64,
    flops: f64,
    base: f64,
    label: &str,
) -> ComputeRow {
    let rps = n as f64 / secs;
    ComputeRow {
        model: model.into(),
        backend: backend.into(),
        adapter: adapter.into(),
        rows: n,
        seconds: secs,
        rows_per_s: rps,
        gflops: flops / secs / 1e9,
        baseline_rows_per_s: base,
        baseline: label.into(),
        ratio: rps / base,
    }
}

/// The rows as an aligned table.
pub fn table(rows: &[ComputeRow]) -> String {
    let mut s = format!(
        "{:<10} {:<8} {:<30} {:>9} {:>8} {:>12} {:>8} {:>14} {:>8}\n",
        "model", "backend", "adapter", "rows", "s", "rows/s", "GFLOP/s", "baseline/s", "ratio"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<10} {:<8} {:<30} {:>9} {:>8.2} {:>12.0} {:>8.1} {:>14.0} {:>7.2}x\n",
            r.model,
            r.backend,
            r.adapter,
            r.rows,
            r.seconds,
            r.rows_per_s,
            r.gflops,
            r.baseline_rows_per_s,
            r.ratio
        ));
    }
    if let Some(r) = rows.first() {
        s.push_str(&format!(
            "baseline: {}\nratio = herd rows/s over baseline rows/s (higher is better)\n",
            r.baseline
        ));
    }
    s
}
