//! Job and fleet configuration: `jobs/*.toml` and `hosts.toml`.
//!
//! Two stages, as ripgrep does with its flags: [`raw`] mirrors the TOML exactly
//! (unknown keys are errors) and only checks what serde can; [`resolve`] checks
//! rules across fields, turns relative paths into paths relative to the file
//! that names them, and produces the settings the rest of herd uses.
//!
//! Pure: callers hand in the file's text and its path; nothing here touches
//! the file system (whether a named file exists is checked by the caller).

pub mod location;
pub mod raw;
pub mod resolve;

use std::path::PathBuf;

use crate::model::ModelSpec;

pub use location::{Location, Storage};
pub use resolve::{parse_fleet, parse_job, parse_ttl};

pub type Result<T> = std::result::Result<T, Error>;

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), location(*line, *column))]
pub struct Error {
    pub file: PathBuf,
    /// 1-based line and column of the offending value, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// The machines a job runs on (`hosts.toml`).
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    pub file: PathBuf,
    pub hosts: Vec<Host>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub name: String,
    pub transport: Transport,
    /// Worker processes on this host.
    pub slots: u32,
    pub device: Device,
    /// CPU threads each worker may use on the native CPU path; `None`: the
    /// host's cores divided by its slots.
    pub threads: Option<u32>,
    /// For the cost figure; 0 when not set.
    pub cost_per_hour: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Transport {
    /// Workers are child processes of the coordinator.
    Local,
    Ssh(SshHost),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SshHost {
    /// `host:port`, `host`, or an alias from ~/.ssh/config.
    pub address: String,
    pub user: Option<String>,
    /// Identity file; `None`: the ssh agent (or ~/.ssh/config's IdentityFile).
    pub identity: Option<PathBuf>,
    /// known_hosts file; `None`: ~/.ssh/known_hosts (or ~/.ssh/config's).
    pub known_hosts: Option<PathBuf>,
    pub trust: Trust,
    /// A worker binary for another architecture; `None`: ship herd itself.
    pub worker_binary: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Only keys already in known_hosts (the default).
    Strict,
    /// Learn an unknown key on first use; a changed key is still refused.
    AcceptNew,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Device {
    /// A real GPU adapter when there is one, else the native CPU path.
    Auto,
    /// A real GPU adapter, or an error naming the host.
    Gpu,
    /// wgpu on a CPU-type adapter (lavapipe): for testing the shaders.
    WgpuCpu,
    /// The native CPU path.
    Cpu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Gpu => "gpu",
            Device::WgpuCpu => "wgpu-cpu",
            Device::Cpu => "cpu",
        }
    }
}

/// A job file, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub file: PathBuf,
    pub name: String,
    pub model_version: String,
    /// The fleet file, relative paths already joined to the job's folder.
    pub hosts: PathBuf,
    pub input: Input,
    pub model: Model,
    pub partition: Partition,
    pub stragglers: Stragglers,
    pub output: Output,
    pub validate: Validate,
    /// `[generate]`: the synthetic data this job's input and weights are made
    /// from when they do not exist yet (the demo job of a fresh clone).
    pub generate: Option<Generate>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// A file, folder or glob here, or an object-store URL.
    pub path: Location,
    /// `[input.storage]`; used by URL inputs only.
    pub storage: Storage,
    pub id_column: String,
    /// Required for two_tower; absent for mlp.
    pub history_column: Option<String>,
    /// `None`: every column but the id and history columns, in file order.
    pub feature_columns: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub spec: ModelSpec,
    pub weights: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Multiply-adds per chunk; `None`: about 1-2 s of one slot's work.
    pub target_chunk_cost: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stragglers {
    pub speculation: bool,
    pub split_running: bool,
    /// Attempts per chunk before the run fails (at least 1).
    pub max_attempts: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub store: PathBuf,
    /// Seconds a prediction stays fresh.
    pub ttl_secs: u64,
    pub keep_versions: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Validate {
    /// Fraction of input entities that must have a prediction.
    pub min_coverage: f64,
    pub max_non_finite: u64,
    /// Entities re-scored on the CPU reference and compared.
    pub spot_check: u64,
    /// Refuse to flip when the top-K churn against the live version is above
    /// this (two_tower); `None`: no drift check.
    pub max_topk_churn: Option<f64>,
    /// Refuse to flip when the mean score moved more than this against the
    /// live version; `None`: no check.
    pub max_mean_shift: Option<f64>,
}

/// A synthetic data set (`herd gen`'s settings) named by a job.
#[derive(Clone, Debug, PartialEq)]
pub struct Generate {
    pub kind: GenerateKind,
    pub users: u64,
    pub items: u32,
    pub dim: usize,
    pub features: usize,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerateKind {
    TwoTower,
    Mlp,
}
