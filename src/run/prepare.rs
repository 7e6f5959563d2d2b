//! Everything a run needs before the first worker starts: the job and fleet
//! files, the input's index, the model (loaded here too, for the spot check
//! and to refuse a bad model before any host is touched) and per-row costs.
//! Every failure here is the user's input: exit code 2, naming the file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{self, Fleet, Job};
use crate::data::{self, Dataset, Index};
use crate::model::Model;
use crate::worker::hex;

use super::Error;

pub struct Prepared {
    pub job: Job,
    pub fleet: Fleet,
    pub dataset: Dataset,
    pub index: Index,
    pub model: Model,
    pub weights_sha256: String,
    /// Multiply-adds of every input row.
    pub costs: Vec<u64>,
    /// Identity of (job, model, input) for `--resume`.
    pub fingerprint: String,
    /// What preparing did that the user should hear of (generated data).
    pub notes: Vec<String>,
}

/// Reads and checks a job file.
pub fn load_job(path: &Path) -> Result<Job, Error> {
    let text = read_config(path)?;
    config::parse_job(&text, path).map_err(|e| Error::Config(e.to_string()))
}

/// Reads and checks a fleet file.
pub fn load_fleet(path: &Path) -> Result<Fleet, Error> {
    let text = read_config(path)?;
    config::parse_fleet(&text, path).map_err(|e| Error::Config(e.to_string()))
}

fn read_config(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))
}

/// Loads the job, its fleet (or `hosts` instead), makes the demo data when the
/// job says how and it is missing, opens the input and the model.
pub fn prepare(job_path: &Path, hosts: Option<&Path>) -> Result<Prepared, Error> {
    let job = load_job(job_path)?;
    let fleet_path: PathBuf = hosts
        .map(Path::to_path_buf)
        .unwrap_or_else(|| job.hosts.clone());
    let fleet = load_fleet(&fleet_path)?;
    let notes: Vec<String> = generate_if_missing(&job)?.into_iter().collect();
    let job_file = job.file.display().to_string();
    if !job.input.path.exists() {
        return Err(Error::Config(format!(
            "{job_file}: [input] path '{}' does not exist (generate it with `herd gen`, or fix the path; it is relative to the job file)",
            job.input.path.display()
        )));
    }
    if !job.model.weights.exists() {
        return Err(Error::Config(format!(
            "{job_file}: [model] weights '{}' does not exist (paths are relative to the job file)",
            job.model.weights.display()
        )));
    }
    let dataset = Dataset::open(&job.input, job.model.spec.reads_history())
        .map_err(|e| Error::Config(format!("{job_file}: [input] {e}")))?;
    let bytes = std::fs::read(&job.model.weights).map_err(|e| {
        Error::Config(format!(
            "{job_file}: [model] weights '{}': {e}",
            job.model.weights.display()
        ))
    })?;
    let weights_sha256 = hex(&Sha256::digest(&bytes));
    let model_error = |e: String| {
        Error::Config(format!(
            "{job_file}: [model] '{}': {e}",
            job.model.weights.display()
        ))
    };
    let companions = crate::worker::read_companions(&job.model.spec, &bytes, &job.model.weights)
        .map_err(model_error)?;
    let model = Model::load(&job.model.spec, &bytes, &companions, dataset.num_features())
        .map_err(|e| model_error(e.to_string()))?;
    drop(bytes);
    // Null features reach a model that defines missing values (trees) as
    // NaN; other models refuse them, naming the row.
    let mut dataset = dataset;
    dataset.set_nulls_missing(model.defines_missing());
    // The fingerprint sees the companion files too (workers check the
    // model file's hash).
    let mut model_identity = weights_sha256.clone();
    for (name, data) in &companions {
        model_identity.push_str(&format!(" {name}:{}", hex(&Sha256::digest(data))));
    }
    let index = dataset
        .scan_index()
        .map_err(|e| Error::Config(format!("{job_file}: [input] {e}")))?;
    check_unique_ids(&index, &job)?;
    let costs: Vec<u64> = if index.history_lens.is_empty() {
        vec![model.entity_cost(0); index.ids.len()]
    } else {
        index
            .history_lens
            .iter()
            .map(|&h| model.entity_cost(h as usize))
            .collect()
    };
    let fingerprint = fingerprint(&job, &model_identity, &dataset);
    Ok(Prepared {
        job,
        fleet,
        dataset,
        index,
        model,
        weights_sha256,
        costs,
        fingerprint,
        notes,
    })
}

/// Makes the job's data and model from its `[generate]` table when either is
/// missing; says what it made.
fn generate_if_missing(job: &Job) -> Result<Option<String>, Error> {
    let Some(g) = &job.generate else {
        return Ok(None);
    };
    if job.input.path.exists() && job.model.weights.exists() {
        return Ok(None);
    }
    let kind = match g.kind {
        config::GenerateKind::TwoTower => data::r#gen::GenKind::TwoTower,
        config::GenerateKind::Mlp => data::r#gen::GenKind::Mlp,
    };
    let mut opts = data::r#gen::GenOptions::defaults(kind);
    opts.users = g.users;
    opts.items = g.items;
    opts.dim = g.dim;
    opts.features = g.features;
    opts.seed = g.seed;
    data::r#gen::generate(&opts, &job.input.path, &job.model.weights)
        .map_err(|e| Error::Failed(format!("{}: [generate]: {e}", job.file.display())))?;
    Ok(Some(format!(
        "generated {} ({} rows) and {} from [generate] in {}",
        job.input.path.display(),
        g.users,
        job.model.weights.display(),
        job.file.display()
    )))
}

fn check_unique_ids(index: &Index, job: &Job) -> Result<(), Error> {
    use crate::model::EntityIds;
    let dup = match &index.ids {
        EntityIds::Int(v) => first_duplicate(v),
        EntityIds::Str(v) => first_duplicate(v),
    };
    match dup {
        None => Ok(()),
        Some((a, b)) => Err(Error::Config(format!(
            "{}: [input] '{}': id '{}' appears at rows {a} and {b}; every entity needs exactly one row",
            job.file.display(),
            job.input.path.display(),
            index.ids.key(a),
        ))),
    }
}

fn first_duplicate<T: std::hash::Hash + Eq>(ids: &[T]) -> Option<(usize, usize)> {
    let mut seen = std::collections::HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if let Some(first) = seen.insert(id, i) {
            return Some((first, i));
        }
    }
    None
}

fn fingerprint(job: &Job, weights_sha256: &str, dataset: &Dataset) -> String {
    let meta = std::fs::metadata(dataset.path()).ok();
    let (len, mtime) = meta
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (m.len(), t)
        })
        .unwrap_or((0, 0));
    let mut h = Sha256::new();
    h.update(job.name.as_bytes());
    h.update([0]);
    h.update(job.model_version.as_bytes());
    h.update([0]);
    h.update(format!("{:?}", job.model.spec).as_bytes());
    h.update(weights_sha256.as_bytes());
    h.update(dataset.path().display().to_string().as_bytes());
    h.update(len.to_le_bytes());
    h.update(mtime.to_le_bytes());
    hex(&h.finalize())[..16].to_string()
}
