//! Runs across several hosts (tests/ssh_fleet.rs, tests/slurm.rs): making
//! a job's data, starting `herd run` in the background and reading its
//! report, a local-only run of the same job, comparing two stores entity by
//! entity, and finding a busy worker process of one host.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd::model::EntityKey;

use super::{HERD, JobShape, Scratch, text};

/// A `local` host of one slot, one thread: the hosts.toml lines.
pub const LOCAL_ONE_SLOT: &str =
    "[[host]]\nname = \"local\"\nkind = \"local\"\nslots = 1\ndevice = \"cpu\"\nthreads = 1\n\n";

impl Scratch {
    /// Makes the job's data now (`herd gen two-tower` with `shape`), so
    /// runs are all scoring.
    pub fn generate(&self, shape: &JobShape) {
        let n = |v: u64| v.to_string();
        let out = self.herd(&[
            "gen",
            "two-tower",
            "--out",
            "data",
            "--users",
            &n(shape.users),
            "--items",
            &n(shape.items as u64),
            "--dim",
            &n(shape.dim as u64),
            "--features",
            &n(shape.features as u64),
            "--seed",
            &n(shape.seed),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// `herd run` of the job in the background, writing `report.json`,
    /// with `env` added (and `HERD_TEST_SLOW_SLOT` set to `slow` when given)
    /// and no other test hook set.
    pub fn start_run(&self, slow: Option<&str>, env: &[(&str, String)]) -> Child {
        let mut cmd = Command::new(HERD);
        cmd.args([
            "run",
            self.job().to_str().unwrap(),
            "--report",
            self.path("report.json").to_str().unwrap(),
        ])
        .current_dir(self.dir.path())
        .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
        .env_remove(herd::run::TEST_BARRIER_ENV)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(v) = slow {
            cmd.env(herd::run::TEST_SLOW_SLOT_ENV, v);
        }
        cmd.spawn().expect("start herd run")
    }

    /// The test hook that has a run's first `workers` workers all wait for
    /// each other before they say hello (a fresh folder `barrier-NAME`), so
    /// every host's workers start scoring together however long setting
    /// their host up took: pass it to [`Scratch::start_run`].
    pub fn barrier(&self, name: &str, workers: usize) -> (&'static str, String) {
        let dir = self.path(&format!("barrier-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        (
            herd::run::TEST_BARRIER_ENV,
            format!("{}:{workers}", dir.display()),
        )
    }

    /// Waits for a run from [`Scratch::start_run`], which must succeed:
    /// its report and its output.
    pub fn finish(&self, child: Child) -> (serde_json::Value, String) {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        (self.report(), text(&out))
    }

    /// `report.json` of the last run.
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("report.json")).expect("report written"))
            .expect("report is JSON")
    }
}

/// Host `name`'s entry in report `r`.
pub fn host<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {r}"))
}

/// The live version of store `store` equals what a local-only run (two
/// slots) of a job of `shape` stores, entity for entity.
pub fn assert_stores_what_a_local_run_stores(store: &Path, shape: &JobShape) {
    let alone = local_run(shape);
    assert_same_store(store, &alone.store(), shape.users);
}

/// A local-only run (two slots) of a job of `shape`, for comparison.
fn local_run(shape: &JobShape) -> Scratch {
    let alone = Scratch::new(shape);
    alone.generate(shape);
    alone.write(
        "hosts.toml",
        "[[host]]\nname = \"local\"\nkind = \"local\"\nslots = 2\ndevice = \"cpu\"\nthreads = 1\n",
    );
    let out = alone.herd(&["run", alone.job().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    alone
}

/// Every entity's stored value in the live version of store `a` equals
/// store `b`'s, and `a` holds `ids` of them.
pub fn assert_same_store(a: &Path, b: &Path, ids: u64) {
    let a = herd::store::Store::open_existing(a).unwrap();
    let b = herd::store::Store::open_existing(b).unwrap();
    assert_eq!(a.len(a.live().unwrap().unwrap()).unwrap(), ids);
    for id in 0..ids {
        let key = EntityKey::Int(id);
        let va = a.get(&key, None, 0).unwrap().map(|v| v.value);
        let vb = b.get(&key, None, 0).unwrap().map(|v| v.value);
        assert!(va.is_some(), "entity {id} missing");
        assert_eq!(va, vb, "entity {id} differs from the local-only run");
    }
}

/// Pids of the `herd worker` processes whose executable lies under `root`
/// (a host's cache folder), whoever their parent is.
pub fn workers_under(root: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if exe.starts_with(root) && cmdline.split(|b| *b == 0).any(|a| a == b"worker") {
            pids.push(pid);
        }
    }
    pids
}

/// Waits for a `herd worker` under `root` that has used CPU beyond starting
/// up (reading its model), so it is scoring.
pub fn busy_worker_under(root: &Path, limit: Duration) -> Option<u32> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(pid) = workers_under(root)
            .into_iter()
            .find(|&p| super::cpu_ticks(p) > 5)
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
