//! `herd bench compute`: rows/s and GFLOP/s of each backend on the reference
//! workloads (mlp, two_tower, and a gbdt tree ensemble) at realistic sizes, beside the stock-stack baseline and this
//! machine's physical ceiling, as ratios. A benchmark prints a table; it
//! never passes or fails.
//!
//! The baseline is `bench/baseline.py` (onnxruntime on the same files),
//! measured in the same run: given as a result file (`--baseline`, what
//! `bench/compare.sh` does), or else run here on files generated for it
//! ([`measure_baseline`]). Without Python and onnxruntime there is no
//! ratio, and the table says why; a ratio is never made up from a figure
//! measured elsewhere.

pub mod stragglers;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub mod gpu;

use anyhow::{Context, bail};

use crate::config::{Device, Input};
use crate::data::Dataset;
use crate::model::{
    Dense, EntityIds, Mlp, MlpSpec, Model, ModelSpec, OutputActivation, Rows, TwoTower,
    TwoTowerSpec,
};

/// CPU time of the calling thread: what a benchmark on a shared machine
/// reports beside wall time (the wall clock also counts other processes).
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The load average over the last minute (`None` where unknown): printed
/// beside timings measured on a shared machine.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The Python baseline (`bench/baseline.py`: onnxruntime + numpy + lmdb),
/// found in the source tree this binary was built from.
pub const BASELINE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/baseline.py");

/// What the baseline imports.
const BASELINE_IMPORTS: &str = "import numpy, pyarrow, safetensors, onnx, onnxruntime, lmdb";

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
    /// The tree workload: rows, features, trees, branching levels.
    pub gbdt_rows: usize,
    pub gbdt_features: usize,
    pub gbdt_trees: usize,
    pub gbdt_depth: usize,
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
            gbdt_rows: 1_000_000,
            gbdt_features: 100,
            gbdt_trees: 500,
            gbdt_depth: 8,
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

use crate::splitmix::SplitMix64 as Rng;

/// Uniform in [-scale, scale).
fn uniform(rng: &mut Rng, scale: f32) -> f32 {
    rng.signed_unit() * scale
}

fn dense(rng: &mut Rng, name: &str, in_dim: usize, out_dim: usize) -> Dense {
    let scale = 1.0 / (in_dim as f32).sqrt();
    Dense {
        name: name.into(),
        in_dim,
        out_dim,
        weight: (0..in_dim * out_dim).map(|_| uniform(rng, scale)).collect(),
        bias: (0..out_dim).map(|_| uniform(rng, scale)).collect(),
        packed: Default::default(),
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
            .map(|_| uniform(&mut rng, 1.0))
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
        item_embeddings: (0..s.items * s.dim)
            .map(|_| uniform(&mut rng, 0.5))
            .collect(),
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
            500 + rng.next_u64() % 1500
        } else {
            5 + rng.next_u64() % 56
        };
        for _ in 0..len {
            items.push((rng.next_u64() % s.items as u64) as u32);
        }
        offsets.push(items.len() as u32);
    }
    let rows = Rows {
        ids: EntityIds::Int((0..s.users as u64).collect()),
        num_features: features,
        features: (0..s.users * features)
            .map(|_| uniform(&mut rng, 1.0))
            .collect(),
        history_offsets: offsets,
        history_items: items,
    };
    (model, rows)
}

/// The tree workload: `herd gen gbdt`'s model and feature values (2%
/// missing), generated in memory.
pub fn gbdt_workload(s: &Sizes) -> (crate::model::trees::Ensemble, Vec<f32>) {
    use crate::data::r#gen::{GenKind, GenOptions, gbdt_attrs};
    let mut opts = GenOptions::defaults(GenKind::Gbdt);
    opts.features = s.gbdt_features;
    opts.trees = s.gbdt_trees;
    opts.depth = s.gbdt_depth;
    let ensemble = crate::model::trees::Ensemble::from_v3(&gbdt_attrs(&opts), true)
        .expect("herd gen gbdt writes a valid ensemble");
    let mut rng = Rng(3);
    let x = (0..s.gbdt_rows * s.gbdt_features)
        .map(|_| {
            let v = uniform(&mut rng, 1.0);
            if rng.next_u64() % 50 == 0 {
                f32::NAN
            } else {
                v
            }
        })
        .collect();
    (ensemble, x)
}

/// Scores `x` on `threads` threads (contiguous row ranges, as the worker
/// splits a batch) with `compiled`; returns the probabilities.
pub fn score_trees(
    ensemble: &crate::model::trees::Ensemble,
    compiled: &crate::model::trees::fast::Compiled,
    x: &[f32],
    width: usize,
    threads: usize,
) -> Vec<f32> {
    let rows = x.len() / width;
    let per = rows.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = x
            .chunks(per * width)
            .map(|part| {
                scope.spawn(move || {
                    compiled
                        .score(ensemble, part, part.len() / width, width)
                        .scores
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("a scoring thread panicked"))
            .collect()
    })
}

/// Times each tree layout on `x` (best of `repeat` passes) and, when there
/// is one, the GPU's tree kernel.
#[allow(clippy::too_many_arguments)]
fn time_trees(
    ensemble: &crate::model::trees::Ensemble,
    x: &[f32],
    width: usize,
    threads: usize,
    repeat: usize,
    gpu: Option<&crate::gpu::Gpu>,
    base: f64,
    label: &str,
) -> Vec<ComputeRow> {
    use crate::model::trees::fast::{Compiled, Layout, isa_name};
    let rows = x.len() / width;
    let visits = ensemble.cost_per_row() as f64 * rows as f64;
    let mut out = Vec::new();
    for layout in [Layout::Auto, Layout::General] {
        let compiled = Compiled::with_layout(ensemble, layout);
        let mut best = f64::INFINITY;
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let scores = score_trees(ensemble, &compiled, x, width, threads);
            best = best.min(t.elapsed().as_secs_f64());
            assert_eq!(scores.len(), rows * ensemble.n_targets);
        }
        let adapter = match compiled.name() {
            "perfect" => format!("trees perfect/{}, {threads} thr", isa_name()),
            other => format!("trees {other}, {threads} thr"),
        };
        // GFLOP/s column: node visits per second, in billions.
        out.push(row(
            "gbdt", "cpu", &adapter, rows, best, visits, base, label,
        ));
    }
    let Some(g) = gpu else { return out };
    let Ok(trees) = crate::gpu::GpuTrees::new(g, ensemble) else {
        return out;
    };
    // Warm-up on a slice (pipeline, first upload), then the whole set.
    let _ = trees.score(g, &x[..width * rows.min(256)], rows.min(256), width);
    let t = Instant::now();
    if trees.score(g, x, rows, width).is_ok() {
        let secs = t.elapsed().as_secs_f64();
        out.push(row(
            "gbdt",
            "gpu",
            &g.info.name,
            rows,
            secs,
            visits,
            base,
            label,
        ));
    }
    out
}

fn flops(model: &Model, rows: &Rows) -> f64 {
    (0..rows.len())
        .map(|i| 2.0 * model.entity_cost(rows.history_of(i).len()) as f64)
        .sum()
}

/// The table's name for the mlp workload exported to ONNX.
pub const MLP_ONNX: &str = "mlp.onnx";

/// The built-in mlp exported as PyTorch does (a Gemm with transB = 1 per
/// Linear layer, Relu between, the output activation last) and loaded as
/// `kind = "onnx"` loads a file; `None` for a model that is not an mlp.
pub fn mlp_as_onnx(model: &Model, num_features: usize) -> Option<Model> {
    let Model::Mlp(mlp) = model else {
        return None;
    };
    let bytes = crate::model::onnx::write::mlp_to_onnx(mlp);
    let spec = ModelSpec::Onnx(crate::model::onnx::OnnxSpec {
        output: None,
        top_k: None,
        inputs: Vec::new(),
    });
    let model = Model::load(&spec, &bytes, &Default::default(), num_features)
        .expect("the mlp's own export loads");
    Some(model)
}

/// Runs every backend this machine has on both workloads, with no baseline
/// (`why`: the reason, shown where the ratio would be).
pub fn compute(sizes: &Sizes, threads: usize, why: &str) -> Vec<ComputeRow> {
    let label = format!("none ({why})");
    let workloads = [
        ("mlp", mlp_workload(sizes)),
        ("two_tower", two_tower_workload(sizes)),
    ];
    let gpu = crate::gpu::choose(Device::Gpu).ok().flatten();
    let mut out = Vec::new();
    for (name, (model, rows)) in &workloads {
        out.extend(time_backends(
            name,
            model,
            rows,
            threads,
            1,
            gpu.as_ref(),
            f64::NAN,
            &label,
        ));
        if let Some(onnx) = mlp_as_onnx(model, rows.num_features) {
            out.extend(time_backends(
                MLP_ONNX,
                &onnx,
                rows,
                threads,
                1,
                gpu.as_ref(),
                f64::NAN,
                &label,
            ));
        }
    }
    let (ensemble, x) = gbdt_workload(sizes);
    out.extend(time_trees(
        &ensemble,
        &x,
        sizes.gbdt_features,
        threads,
        1,
        gpu.as_ref(),
        f64::NAN,
        &label,
    ));
    out
}

/// Runs `bench/baseline.py` (onnxruntime, `threads` threads, best of
/// `repeat`) on the three workloads at `sizes`, on files generated into `dir`,
/// and returns its results for [`compute_on_files`]. `Err`: why there is no
/// baseline (no Python, no onnxruntime, no script), for the table.
pub fn measure_baseline(
    sizes: &Sizes,
    threads: usize,
    repeat: usize,
    dir: &Path,
) -> Result<Vec<Baseline>, String> {
    use crate::data::{GenKind, GenOptions, generate};
    let script = Path::new(BASELINE_SCRIPT);
    if !script.is_file() {
        return Err(format!("{} is not here", script.display()));
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let imports = std::process::Command::new(&python)
        .args(["-c", BASELINE_IMPORTS])
        .output();
    match imports {
        Ok(o) if o.status.success() => {}
        Ok(_) => {
            return Err(format!(
                "{python} lacks the baseline's packages: {python} -m pip install -r {}",
                script.with_file_name("requirements.txt").display()
            ));
        }
        Err(e) => return Err(format!("cannot run {python}: {e}")),
    }
    let mut out = Vec::new();
    let workloads = [
        (GenKind::Mlp, "mlp"),
        (GenKind::TwoTower, "two-tower"),
        (GenKind::Gbdt, "gbdt"),
    ];
    for (kind, name) in workloads {
        let mut opts = GenOptions::defaults(kind);
        let (data, weights) = match kind {
            GenKind::Mlp => {
                opts.users = sizes.mlp_rows as u64;
                opts.features = sizes.mlp_features;
                opts.hidden = sizes.mlp_hidden;
                ("entities.parquet", "mlp.safetensors")
            }
            GenKind::TwoTower => {
                opts.users = sizes.users as u64;
                opts.items = sizes.items as u32;
                opts.dim = sizes.dim;
                ("users.parquet", "two_tower.safetensors")
            }
            GenKind::Gbdt => {
                opts.users = sizes.gbdt_rows as u64;
                opts.features = sizes.gbdt_features;
                opts.trees = sizes.gbdt_trees;
                opts.depth = sizes.gbdt_depth;
                ("entities.parquet", "gbdt.onnx")
            }
        };
        let files = dir.join(name);
        generate(&opts, &files.join(data), &files.join(weights))
            .map_err(|e| format!("generating the {name} files: {e}"))?;
        let json = dir.join(format!("baseline-{name}.json"));
        let mut cmd = std::process::Command::new(&python);
        cmd.arg(script)
            .arg(name)
            .arg("--data")
            .arg(&files)
            .arg("--out")
            .arg(dir.join(format!("lmdb-{name}")))
            .args(["--engine", "onnxruntime"])
            .args(["--threads", &threads.to_string()])
            .args(["--repeat", &repeat.to_string()])
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::null());
        if kind == GenKind::TwoTower {
            cmd.args(["--top-k", &sizes.top_k.to_string(), "--exclude-seen"]);
        }
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        if !status.success() {
            return Err(format!("{} {name} failed ({status})", script.display()));
        }
        out.extend(read_baselines(&json).map_err(|e| format!("{e:#}"))?);
    }
    Ok(out)
}

/// Times the native path with `threads` threads (best of `repeat` passes)
/// and, when there is one, the GPU path on `rows`.
#[allow(clippy::too_many_arguments)]
fn time_backends(
    name: &str,
    model: &Model,
    rows: &Rows,
    threads: usize,
    repeat: usize,
    gpu: Option<&crate::gpu::Gpu>,
    base: f64,
    label: &str,
) -> Vec<ComputeRow> {
    let total_flops = flops(model, rows);
    let mut out = Vec::new();
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let preds = crate::worker::predict_cpu(model, rows, threads)
            .expect("the benchmark models score every row");
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(preds.len(), rows.len());
    }
    out.push(row(
        name,
        "cpu",
        &format!(
            "native {}, {threads} threads",
            crate::model::simd_level().name()
        ),
        rows.len(),
        best,
        total_flops,
        base,
        label,
    ));
    if let Some(g) = gpu {
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
                    base,
                    label,
                ));
            }
        }
    }
    out
}

/// One result object of `bench/baseline.py` (the fields this benchmark reads;
/// the file has more).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Baseline {
    /// `mlp` or `two_tower`.
    pub model: String,
    /// `onnxruntime` or `numpy`.
    pub engine: String,
    pub engine_version: String,
    pub threads: usize,
    pub rows: usize,
    /// The Parquet file and the safetensors file it scored.
    pub data: PathBuf,
    pub weights: PathBuf,
    pub top_k: usize,
    pub max_history: usize,
    pub exclude_seen: bool,
    /// Its model compute time (best of `repeat` passes), without reading,
    /// graph building or writing.
    pub compute_s: f64,
    #[serde(default = "one")]
    pub repeat: usize,
}

fn one() -> usize {
    1
}

/// Reads a baseline file: one result object or a list of them.
pub fn read_baselines(path: &Path) -> anyhow::Result<Vec<Baseline>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read baseline file {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON (write it with bench/baseline.py --json)",
            path.display()
        )
    })?;
    let list = match value {
        serde_json::Value::Array(v) => v,
        v => vec![v],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).with_context(|| {
                format!(
                    "{}: entry {i} is not a bench/baseline.py result",
                    path.display()
                )
            })
        })
        .collect()
}

/// Times herd's native path (and the GPU path, when there is one) on the
/// very files each baseline scored, with its thread count and repeat count,
/// so the ratio compares model compute on identical inputs.
pub fn compute_on_files(baselines: &[Baseline]) -> anyhow::Result<Vec<ComputeRow>> {
    let gpu = crate::gpu::choose(Device::Gpu).ok().flatten();
    let mut out = Vec::new();
    for b in baselines {
        if b.model == "gbdt" {
            out.extend(gbdt_on_files(b, gpu.as_ref())?);
            continue;
        }
        let (spec, id_column, history_column) = match b.model.as_str() {
            "mlp" => (
                ModelSpec::Mlp(MlpSpec {
                    layers: None,
                    output: OutputActivation::Sigmoid,
                }),
                "entity_id",
                None,
            ),
            "two_tower" => (
                ModelSpec::TwoTower(TwoTowerSpec {
                    top_k: b.top_k,
                    max_history: b.max_history,
                    exclude_seen: b.exclude_seen,
                }),
                "user_id",
                Some("history".to_string()),
            ),
            other => bail!("baseline model '{other}' is not mlp, two_tower or gbdt"),
        };
        let input = Input {
            path: crate::config::Location::Local(b.data.clone()),
            read: crate::config::ReadMode::Auto,
            storage: Default::default(),
            id_column: id_column.into(),
            history_column: history_column.clone(),
            feature_columns: None,
            on_invalid: crate::config::OnInvalid::Error,
        };
        let data = Dataset::open(&input, history_column.is_some())
            .with_context(|| format!("baseline input {}", b.data.display()))?;
        let rows = data
            .read_rows(0..data.num_rows())
            .with_context(|| format!("reading {}", b.data.display()))?;
        if rows.len() != b.rows {
            bail!(
                "{} has {} rows but the baseline scored {}: rerun bench/baseline.py on it",
                b.data.display(),
                rows.len(),
                b.rows
            );
        }
        let bytes = std::fs::read(&b.weights)
            .with_context(|| format!("cannot read weights {}", b.weights.display()))?;
        let model = Model::from_safetensors(&spec, &bytes, rows.num_features)
            .with_context(|| format!("weights {}", b.weights.display()))?;
        let label = format!(
            "{} {}, {} threads, same files, best of {}",
            b.engine,
            b.engine_version,
            b.threads,
            b.repeat.max(1)
        );
        out.extend(time_backends(
            &b.model,
            &model,
            &rows,
            b.threads,
            b.repeat,
            gpu.as_ref(),
            b.rows as f64 / b.compute_s,
            &label,
        ));
        // The same network from an ONNX file, against the same baseline.
        if let Some(onnx) = mlp_as_onnx(&model, rows.num_features) {
            out.extend(time_backends(
                MLP_ONNX,
                &onnx,
                &rows,
                b.threads,
                b.repeat,
                gpu.as_ref(),
                b.rows as f64 / b.compute_s,
                &label,
            ));
        }
    }
    Ok(out)
}

/// The gbdt baseline's files: the Parquet features and the ONNX model's
/// tree ensemble, timed on herd's tree layouts.
fn gbdt_on_files(b: &Baseline, gpu: Option<&crate::gpu::Gpu>) -> anyhow::Result<Vec<ComputeRow>> {
    use crate::model::onnx::{OnnxFile, ml};
    use crate::model::trees::Ensemble;
    let input = Input {
        path: crate::config::Location::Local(b.data.clone()),
        read: crate::config::ReadMode::Auto,
        storage: Default::default(),
        id_column: "entity_id".into(),
        history_column: None,
        feature_columns: None,
        on_invalid: crate::config::OnInvalid::Missing,
    };
    let data = Dataset::open(&input, false)
        .with_context(|| format!("baseline input {}", b.data.display()))?;
    let rows = data
        .read_rows(0..data.num_rows())
        .with_context(|| format!("reading {}", b.data.display()))?;
    if rows.len() != b.rows {
        bail!(
            "{} has {} rows but the baseline scored {}: rerun bench/baseline.py on it",
            b.data.display(),
            rows.len(),
            b.rows
        );
    }
    let bytes = std::fs::read(&b.weights)
        .with_context(|| format!("cannot read model {}", b.weights.display()))?;
    let file = OnnxFile::parse(&bytes).with_context(|| format!("model {}", b.weights.display()))?;
    let node = file
        .proto()
        .graph
        .as_ref()
        .and_then(|g| {
            g.node
                .iter()
                .find(|n| n.op_type.starts_with("TreeEnsemble"))
        })
        .with_context(|| format!("{} has no tree ensemble node", b.weights.display()))?;
    let attrs = ml::attrs(node, &Default::default())
        .with_context(|| format!("model {}", b.weights.display()))?;
    let ensemble = Ensemble::from_v3(&attrs, node.op_type == "TreeEnsembleClassifier")
        .with_context(|| format!("model {}", b.weights.display()))?;
    let label = format!(
        "{} {}, {} threads, same files, best of {}",
        b.engine,
        b.engine_version,
        b.threads,
        b.repeat.max(1)
    );
    Ok(time_trees(
        &ensemble,
        &rows.features,
        rows.num_features,
        b.threads,
        b.repeat,
        gpu,
        b.rows as f64 / b.compute_s,
        &label,
    ))
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
            "{:<10} {:<8} {:<30} {:>9} {:>8.2} {:>12.0} {:>8.1} {:>14} {:>8}\n",
            r.model,
            r.backend,
            r.adapter,
            r.rows,
            r.seconds,
            r.rows_per_s,
            r.gflops,
            if r.baseline_rows_per_s.is_finite() {
                format!("{:.0}", r.baseline_rows_per_s)
            } else {
                "-".into()
            },
            if r.ratio.is_finite() {
                format!("{:.2}x", r.ratio)
            } else {
                "-".into()
            },
        ));
    }
    if let Some(r) = rows.first() {
        s.push_str(&format!(
            "baseline: {}\nratio = herd rows/s over baseline rows/s (higher is better)\n",
            r.baseline
        ));
    }
    for r in rows.iter().filter(|r| r.model == MLP_ONNX) {
        if let Some(m) = rows
            .iter()
            .find(|m| m.model == "mlp" && m.backend == r.backend)
        {
            s.push_str(&format!(
                "{MLP_ONNX} (the mlp exported to ONNX) on {}: {:.2}x the built-in mlp's rows/s\n",
                r.backend,
                r.rows_per_s / m.rows_per_s
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests;
