//! Shared by the integration tests: a scratch folder holding a fleet, a job
//! that generates its own small data, and the real `herd` binary.
#![allow(dead_code)]

pub mod fleet;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// A scratch folder with `hosts.toml` and `job.toml`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

pub struct JobShape {
    pub users: u64,
    pub items: u32,
    pub dim: usize,
    pub features: usize,
    pub top_k: usize,
    pub max_history: usize,
    pub slots: u32,
    pub seed: u64,
}

impl Default for JobShape {
    fn default() -> Self {
        JobShape {
            users: 600,
            items: 3000,
            dim: 16,
            features: 3,
            top_k: 10,
            max_history: 50,
            slots: 2,
            seed: 3,
        }
    }
}

impl Scratch {
    pub fn new(shape: &JobShape) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Scratch { dir };
        s.write(
            "hosts.toml",
            &format!(
                "[[host]]\nname = \"local\"\nkind = \"local\"\nslots = {}\ndevice = \"cpu\"\ncost_per_hour = 0.5\n",
                shape.slots
            ),
        );
        let features: Vec<String> = (0..shape.features).map(|i| format!("\"f{i}\"")).collect();
        s.write(
            "job.toml",
            &format!(
                r#"[job]
name = "test-candidates"
model_version = "tt-test-1"
hosts = "hosts.toml"

[input]
path = "data/users.parquet"
id_column = "user_id"
history_column = "history"
feature_columns = [{features}]

[model]
kind = "two_tower"
weights = "data/two_tower.safetensors"
top_k = {top_k}
max_history = {max_history}
exclude_seen = true

[output]
store = "store"
ttl = "7d"
keep_versions = 5

[validate]
spot_check = 50

[generate]
kind = "two-tower"
users = {users}
items = {items}
dim = {dim}
features = {nf}
seed = {seed}
"#,
                features = features.join(", "),
                top_k = shape.top_k,
                max_history = shape.max_history,
                users = shape.users,
                items = shape.items,
                dim = shape.dim,
                nf = shape.features,
                seed = shape.seed,
            ),
        );
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    pub fn job(&self) -> PathBuf {
        self.path("job.toml")
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// Runs `herd ARGS` in the scratch folder.
    pub fn herd(&self, args: &[&str]) -> Output {
        herd_in(self.dir.path(), args)
    }
}

pub fn herd_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(HERD)
        .args(args)
        .current_dir(dir)
        .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
        .output()
        .expect("run herd")
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Pids of the `herd worker` processes whose parent is `parent`.
pub fn workers_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid: Option<u32> = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && cmd.split(|&b| b == 0).any(|a| a == b"worker") {
            out.push(pid);
        }
    }
    out
}

/// Clock ticks of user CPU time process `pid` has used (0 once it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(11))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The pid of a `herd worker` child of `parent` that has started scoring (it
/// has used CPU beyond loading the model).
pub fn wait_for_busy_worker(parent: u32, limit: std::time::Duration) -> u32 {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if let Some(pid) = workers_of(parent).into_iter().find(|&p| cpu_ticks(p) > 5) {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no busy worker process under pid {parent} within {limit:?}");
}
