//! `herd bench ...`: the benchmark tables.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use herd::config::Device;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum BenchWhat {
    Compute,
    Stragglers,
    Store,
    /// The coordinator's handlers fed worker messages for 10,000 in-memory
    /// slots (1/N of them with --scale N), beside a fleet of 80.
    Coordinator,
    /// The WGSL kernels on this machine's GPU, as fractions of its peaks.
    Gpu,
    /// The Redis sink's push of a store's live version (--store, --url,
    /// --prefix, --encoding), timed; no pointer is flipped.
    Sink,
}

/// Options of `herd bench sink`.
#[derive(Args, Debug)]
pub(super) struct SinkBenchArgs {
    /// sink: the store whose live version is pushed.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// sink: the Redis server (`redis://host:port/db`).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// sink: keys `{prefix}:v{N}:{id}`.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// sink: `json` or `binary`.
    #[arg(long, value_enum, default_value = "json")]
    encoding: BenchEncoding,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum BenchEncoding {
    Json,
    Binary,
}

/// `herd bench sink`: pushes the live version as a run's sink would, timed.
fn bench_sink(args: SinkBenchArgs) -> Result<i32> {
    use herd::config::{RedisEncoding, RedisSettings};
    use herd::store::sink::{self, redis::RedisSink};
    let (Some(dir), Some(url)) = (args.store, args.url) else {
        bail!("herd bench sink needs --store DIR and --url redis://host:port/db");
    };
    let store = herd::store::Store::open_read_only(&dir)?;
    let Some(version) = store.live()? else {
        bail!("store {}: no live version to push", dir.display());
    };
    let encoding = match args.encoding {
        BenchEncoding::Json => RedisEncoding::Json,
        BenchEncoding::Binary => RedisEncoding::Binary,
    };
    let settings = RedisSettings {
        tls: url.starts_with("rediss://"),
        url,
        cluster: false,
        prefix: args.prefix,
        encoding,
    };
    let mut redis = RedisSink::open(settings).map_err(|e| anyhow::anyhow!("sink: {e}"))?;
    let started = std::time::Instant::now();
    let put = sink::push(&store, version, &mut redis)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "redis sink, {:?} encoding, {} connections: {put} predictions of version {version} \
         in {seconds:.2} s ({:.0}/s)",
        args.encoding,
        herd::store::sink::redis::LANES,
        put as f64 / seconds.max(1e-9)
    );
    Ok(0)
}

/// Options of `herd bench gpu`.
#[derive(Args, Debug)]
pub(super) struct GpuBenchArgs {
    /// gpu: the card's fp32 peak in GFLOP/s (a multiply-add counts two).
    #[arg(long, value_name = "GFLOPS")]
    peak_gflops: Option<f64>,
    /// gpu: the card's memory bandwidth in GB/s.
    #[arg(long, value_name = "GBPS")]
    peak_gbps: Option<f64>,
    /// gpu: also time the other kernel shapes.
    #[arg(long)]
    variants: bool,
    /// gpu: fraction of the reference sizes (1M mlp rows; 20k users x 100k items).
    #[arg(long, default_value_t = 1.0)]
    fraction: f64,
    /// gpu: the adapter (`wgpu-cpu` tries the benchmark on a software adapter).
    #[arg(long, value_enum, default_value = "gpu")]
    device: BenchDevice,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum BenchDevice {
    Gpu,
    WgpuCpu,
}

fn bench_gpu(json: bool, args: GpuBenchArgs) -> Result<i32> {
    let options = herd::bench::gpu::Options {
        device: match args.device {
            BenchDevice::Gpu => Device::Gpu,
            BenchDevice::WgpuCpu => Device::WgpuCpu,
        },
        fraction: args.fraction,
        peaks: herd::bench::gpu::Peaks {
            gflops: args.peak_gflops,
            gbytes_per_s: args.peak_gbps,
        },
        variants: args.variants,
    };
    let report = herd::bench::gpu::run(options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", herd::bench::gpu::table(&report));
    }
    Ok(0)
}

/// `--scale`: `seed` (full size, 1) or a divisor N >= 1.
pub(super) fn parse_scale(text: &str) -> std::result::Result<u64, String> {
    if text == "seed" {
        return Ok(1);
    }
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "'{text}' is neither `seed` nor a whole number N >= 1 (1/N of the seed job)"
        )),
    }
}

/// `herd bench compute` without `--baseline`: the Python baseline runs here,
/// on files generated for it in a scratch folder, and herd is timed on the
/// same files; without it, herd alone and the reason there is no ratio.
fn compute_with_measured_baseline(threads: usize) -> Result<Vec<herd::bench::ComputeRow>> {
    let sizes = herd::bench::Sizes::default();
    let dir = std::env::temp_dir().join(format!("herd-bench-compute-{}", std::process::id()));
    eprintln!(
        "measuring the baseline ({}) on files in {}",
        herd::bench::BASELINE_SCRIPT,
        dir.display()
    );
    let measured = herd::bench::measure_baseline(&sizes, threads, 3, &dir);
    let rows = match measured {
        Ok(baselines) => herd::bench::compute_on_files(&baselines),
        Err(why) => {
            eprintln!("no baseline, so no ratio: {why}");
            Ok(herd::bench::compute(&sizes, threads, &why))
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

pub(super) fn bench(
    what: BenchWhat,
    json: bool,
    baseline: Option<PathBuf>,
    scale: Option<u64>,
    gpu: GpuBenchArgs,
    sink: SinkBenchArgs,
) -> Result<i32> {
    if baseline.is_some() && !matches!(what, BenchWhat::Compute) {
        bail!("--baseline belongs to `herd bench compute` (a bench/baseline.py result)");
    }
    if scale.is_some() && !matches!(what, BenchWhat::Stragglers | BenchWhat::Coordinator) {
        bail!(
            "--scale belongs to `herd bench stragglers` and `herd bench coordinator` (the seed job at 1/N)"
        );
    }
    match (what, scale) {
        (BenchWhat::Stragglers, Some(scale)) => {
            let rows = herd::bench::stragglers::scale(scale);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", herd::bench::stragglers::table(&rows));
            }
        }
        (BenchWhat::Stragglers, None) => {
            let rows = herd::sched::sim::bench();
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "scenario": r.scenario, "policy": r.policy,
                            "makespan_over_bound": r.makespan_over_bound,
                            "makespan_s": r.makespan_s, "bound_s": r.bound_s,
                            "attempts": r.attempts, "backups": r.backups, "splits": r.splits,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", herd::sched::sim::bench_table(&rows));
            }
        }
        (BenchWhat::Store, _) => println!("{}", herd::store::bench::run(json)?),
        (BenchWhat::Gpu, _) => return bench_gpu(json, gpu),
        (BenchWhat::Sink, _) => return bench_sink(sink),
        (BenchWhat::Coordinator, scale) => {
            use herd::run::bench::{BASELINE_SLOTS, SEED_SLOTS};
            let slots = (SEED_SLOTS / scale.unwrap_or(1) as u32).max(BASELINE_SLOTS);
            let rows =
                herd::run::bench::coordinator(&[BASELINE_SLOTS, slots], &std::env::temp_dir())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", herd::run::bench::table(&rows));
            }
        }
        (BenchWhat::Compute, _) => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let rows = match baseline {
                Some(file) => herd::bench::compute_on_files(&herd::bench::read_baselines(&file)?)?,
                None => compute_with_measured_baseline(threads)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", herd::bench::table(&rows));
                // The native rows ran with the limit this process timed.
                if herd::model::simd_level() == herd::model::SimdLevel::Avx512 {
                    println!(
                        "native: relu layers with at most {}/16 of a block's inputs non-zero \
                         run on the sparse kernel (the limit timed on this CPU)",
                        herd::model::sparse_limit()
                    );
                }
            }
        }
    }
    Ok(0)
}
