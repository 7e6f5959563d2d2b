//! `herd bench gpu`: the WGSL kernels on this machine's GPU, as fractions of
//! the card's own ceilings.
//!
//! For each workload it times the kernels alone (inputs already on the
//! device, nothing read back; `GpuModel::time_kernels`) and a whole
//! `predict` (inputs from host memory, results back to it), and splits the
//! kernels' device time by kernel when the adapter has timestamp queries.
//! wgpu cannot tell a card's peak rates, so they are given on the command
//! line (`scripts/gpu-check.sh` reads them off the card and measures the
//! vendor library's matrix product beside this benchmark in the same run);
//! without them the fractions are left out. `--variants` also times the
//! other kernel shapes, to show why the default is the default.

use std::time::Instant;

use anyhow::{Context, bail};

use super::{Sizes, flops, mlp_workload, two_tower_workload};
use crate::config::Device;
use crate::gpu::{Gpu, GpuModel, KernelConfig, TileLimits};
use crate::model::{Dense, Mlp, Model, OutputActivation, Rows};

/// The card's ceilings, when known.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Peaks {
    /// fp32 multiply-add rate, counting a multiply-add as two operations.
    pub gflops: Option<f64>,
    /// Memory bandwidth, bytes read plus written.
    pub gbytes_per_s: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuRow {
    pub workload: String,
    /// `kernels` or `end to end`.
    pub measure: String,
    pub config: String,
    pub rows: usize,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub gflops: f64,
    pub fraction_of_fp32_peak: Option<f64>,
    /// Device time by kernel, in seconds (kernel rows only).
    pub kernels: Vec<(String, f64)>,
    /// The pooling kernel's bytes over its device time, and that as a
    /// fraction of the card's bandwidth (two_tower kernel rows only).
    pub pool_gbytes_per_s: Option<f64>,
    pub pool_fraction_of_bandwidth: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuReport {
    pub adapter: String,
    pub driver: String,
    pub backend: String,
    pub peaks: Peaks,
    pub rows: Vec<GpuRow>,
}

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The adapter to run on (`gpu`, or `wgpu-cpu` to try this benchmark on
    /// a software adapter at a small `fraction`).
    pub device: Device,
    /// Fraction of the reference sizes (1.0: 1M mlp rows, 20k users x 100k
    /// items).
    pub fraction: f64,
    pub peaks: Peaks,
    pub variants: bool,
}

/// Runs the benchmark; fails when `options.device` finds no adapter.
pub fn run(options: Options) -> anyhow::Result<GpuReport> {
    if !(options.fraction > 0.0 && options.fraction <= 1.0) {
        bail!("--fraction must be in (0, 1], got {}", options.fraction);
    }
    let gpu = crate::gpu::choose(options.device)?
        .with_context(|| format!("no adapter for device {:?}", options.device))?;
    let full = Sizes::default();
    let scaled = |n: usize| ((n as f64 * options.fraction).round() as usize).max(1);
    let sizes = Sizes {
        mlp_rows: scaled(full.mlp_rows),
        users: scaled(full.users),
        items: scaled(full.items).max(full.top_k),
        ..full
    };
    let default = KernelConfig::for_limits(&gpu.limits);
    let mut rows = Vec::new();

    let (dense_model, dense_rows) = dense_workload(&sizes);
    let (mlp_model, mlp_rows) = mlp_workload(&sizes);
    let (tt_model, tt_rows) = two_tower_workload(&sizes);
    let workloads = [
        ("dense 256->256", &dense_model, &dense_rows),
        ("mlp", &mlp_model, &mlp_rows),
        ("two_tower", &tt_model, &tt_rows),
    ];
    for (name, model, input) in workloads {
        let gm = GpuModel::with_config(&gpu, model, TileLimits::of(&gpu.limits), default)?;
        rows.push(end_to_end(&gpu, &gm, name, model, input, options.peaks)?);
        rows.push(kernels(&gpu, &gm, name, model, input, options.peaks)?);
        if options.variants {
            for config in variants(default, matches!(model, Model::TwoTower(_))) {
                // A shape the adapter rejects is reported, not fatal: the
                // other shapes are still worth their numbers.
                let timed = GpuModel::with_config(&gpu, model, TileLimits::of(&gpu.limits), config)
                    .map_err(anyhow::Error::from)
                    .and_then(|gm| kernels(&gpu, &gm, name, model, input, options.peaks));
                match timed {
                    Ok(r) => rows.push(r),
                    Err(e) => eprintln!("{name} with {}: {e:#}", describe(config)),
                }
            }
        }
    }
    Ok(GpuReport {
        adapter: gpu.info.name.clone(),
        driver: format!("{} {}", gpu.info.driver, gpu.info.driver_info),
        backend: format!("{:?}", gpu.info.backend),
        peaks: options.peaks,
        rows,
    })
}

/// One dense layer 256 -> 256 over the mlp's rows: the matrix kernel alone.
fn dense_workload(s: &Sizes) -> (Model, Rows) {
    let (model, mut rows) = mlp_workload(s);
    let Model::Mlp(m) = model else {
        unreachable!("mlp_workload gives an mlp")
    };
    let hidden = m.layers[1].clone();
    let f = hidden.in_dim;
    // Deterministic inputs of the layer's width.
    rows.num_features = f;
    rows.features = (0..rows.len() * f)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let model = Model::Mlp(Mlp {
        layers: vec![Dense {
            name: "dense".into(),
            ..hidden
        }],
        output: OutputActivation::None,
    });
    (model, rows)
}

/// Other shapes worth comparing with `default`.
fn variants(default: KernelConfig, two_tower: bool) -> Vec<KernelConfig> {
    let mut out = Vec::new();
    for bk in [8u32, 16, 32] {
        for prefetch in [true, false] {
            let c = KernelConfig {
                dense_bk: bk,
                prefetch,
                ..default
            };
            if c != default && c.dense_bk <= default.dense_bk {
                out.push(c);
            }
        }
    }
    out.push(KernelConfig {
        loop_bounding: !default.loop_bounding,
        ..default
    });
    if two_tower {
        for slack in [1u32, 2, 8] {
            out.push(KernelConfig {
                round_slack: slack,
                ..default
            });
        }
        for first in [4u32, 8] {
            out.push(KernelConfig {
                first_round_kp: first,
                ..default
            });
        }
    }
    out
}

fn describe(c: KernelConfig) -> String {
    format!(
        "bk{} {} buf{} slack{} first{}{}",
        c.dense_bk,
        if c.prefetch { "pf" } else { "direct" },
        c.topk_buf,
        c.round_slack,
        c.first_round_kp,
        if c.loop_bounding { "" } else { " nobound" }
    )
}

fn end_to_end(
    gpu: &Gpu,
    gm: &GpuModel,
    name: &str,
    model: &Model,
    rows: &Rows,
    peaks: Peaks,
) -> anyhow::Result<GpuRow> {
    // Warm-up: pipelines, first allocations.
    gm.predict(gpu, &rows.slice(0..rows.len().min(1024)))?;
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        let out = gm.predict(gpu, rows)?;
        best = best.min(t.elapsed().as_secs_f64());
        if out.len() != rows.len() {
            bail!("{name}: {} predictions for {} rows", out.len(), rows.len());
        }
    }
    Ok(row(
        name,
        "end to end",
        gm,
        model,
        rows,
        best,
        peaks,
        Vec::new(),
    ))
}

fn kernels(
    gpu: &Gpu,
    gm: &GpuModel,
    name: &str,
    model: &Model,
    rows: &Rows,
    peaks: Peaks,
) -> anyhow::Result<GpuRow> {
    let timing = gm.time_kernels(gpu, rows, 5)?;
    let by_kernel: Vec<(String, f64)> = timing
        .by_kernel
        .iter()
        .map(|(k, d)| (k.to_string(), d.as_secs_f64()))
        .collect();
    let mut r = row(
        name,
        "kernels",
        gm,
        model,
        rows,
        timing.per_pass.as_secs_f64(),
        peaks,
        by_kernel,
    );
    if let Model::TwoTower(t) = model {
        let pool_s = r
            .kernels
            .iter()
            .find(|(k, _)| k == "pool")
            .map(|(_, s)| *s)
            .filter(|s| *s > 0.0);
        if let Some(secs) = pool_s {
            // Each pooled history row's embedding is read once, each pooled
            // vector (and the features) written once.
            let pooled: usize = (0..rows.len())
                .map(|u| rows.history_of(u).len().min(t.max_history))
                .sum();
            let stride = t.dim + t.num_features;
            let bytes = (pooled * t.dim * 4 + pooled * 4 + rows.len() * stride * 8) as f64;
            let gbps = bytes / secs / 1e9;
            r.pool_gbytes_per_s = Some(gbps);
            r.pool_fraction_of_bandwidth = peaks.gbytes_per_s.map(|p| gbps / p);
        }
    }
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
fn row(
    name: &str,
    measure: &str,
    gm: &GpuModel,
    model: &Model,
    rows: &Rows,
    seconds: f64,
    peaks: Peaks,
    kernels: Vec<(String, f64)>,
) -> GpuRow {
    let gflops = flops(model, rows) / seconds / 1e9;
    GpuRow {
        workload: name.into(),
        measure: measure.into(),
        config: describe(gm.config()),
        rows: rows.len(),
        seconds,
        rows_per_s: rows.len() as f64 / seconds,
        gflops,
        fraction_of_fp32_peak: peaks.gflops.map(|p| gflops / p),
        kernels,
        pool_gbytes_per_s: None,
        pool_fraction_of_bandwidth: None,
    }
}

/// The report as a table, kernels split below each kernel row.
pub fn table(r: &GpuReport) -> String {
    let mut s = format!(
        "adapter: {} ({}, driver {})\npeaks: {}, {}\n",
        r.adapter,
        r.backend,
        r.driver,
        r.peaks
            .gflops
            .map_or("fp32 peak not given".into(), |g| format!(
                "fp32 {:.1} TFLOP/s",
                g / 1e3
            )),
        r.peaks
            .gbytes_per_s
            .map_or("bandwidth not given".into(), |g| format!(
                "memory {g:.0} GB/s"
            )),
    );
    s.push_str(&format!(
        "{:<15} {:<10} {:<30} {:>9} {:>9} {:>12} {:>9} {:>7}\n",
        "workload", "measure", "kernel shapes", "rows", "ms", "rows/s", "GFLOP/s", "% peak"
    ));
    for row in &r.rows {
        s.push_str(&format!(
            "{:<15} {:<10} {:<30} {:>9} {:>9.2} {:>12.0} {:>9.0} {:>7}\n",
            row.workload,
            row.measure,
            row.config,
            row.rows,
            row.seconds * 1e3,
            row.rows_per_s,
            row.gflops,
            row.fraction_of_fp32_peak
                .map_or("-".into(), |f| format!("{:.1}%", f * 100.0)),
        ));
        if !row.kernels.is_empty() {
            let parts: Vec<String> = row
                .kernels
                .iter()
                .map(|(k, secs)| format!("{k} {:.2} ms", secs * 1e3))
                .collect();
            s.push_str(&format!("    device time: {}\n", parts.join(", ")));
        }
        if let Some(g) = row.pool_gbytes_per_s {
            s.push_str(&format!(
                "    pool: {g:.0} GB/s{}\n",
                row.pool_fraction_of_bandwidth
                    .map_or(String::new(), |f| format!(
                        " ({:.1}% of bandwidth)",
                        f * 100.0
                    ))
            ));
        }
    }
    s.push_str(
        "kernels: inputs already on the device, nothing read back, mean of 5 passes; \
         end to end: GpuModel::predict from host memory, best of 2\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityIds;

    #[test]
    fn variants_differ_from_the_default_and_fit_its_workgroup_memory() {
        let default = KernelConfig {
            dense_bk: 16,
            prefetch: true,
            topk_buf: 2048,
            round_slack: 4,
            first_round_kp: 0,
            loop_bounding: true,
        };
        let v = variants(default, true);
        assert!(!v.contains(&default));
        assert!(v.iter().all(|c| c.dense_bk <= 16));
        assert_eq!(v.iter().filter(|c| c.round_slack != 4).count(), 3);
        assert_eq!(v.iter().filter(|c| c.first_round_kp != 0).count(), 2);
        assert_eq!(v.iter().filter(|c| !c.loop_bounding).count(), 1);
        assert_eq!(variants(default, false).len(), 4);
    }

    #[test]
    fn dense_workload_is_one_square_layer_over_the_mlp_rows() {
        let s = Sizes {
            mlp_rows: 10,
            ..Sizes::default()
        };
        let (m, rows) = dense_workload(&s);
        let Model::Mlp(m) = m else { panic!() };
        assert_eq!(m.layers.len(), 1);
        assert_eq!((m.layers[0].in_dim, m.layers[0].out_dim), (256, 256));
        assert_eq!(rows.len(), 10);
        assert_eq!(rows.features.len(), 10 * 256);
        assert!(matches!(rows.ids, EntityIds::Int(_)));
    }
}
