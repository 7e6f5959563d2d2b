//! Jobs on a real Slurm cluster (tests/slurmd: munged, slurmctld and slurmd
//! on loopback) beside the local host: the store ends up the same as a
//! local-only run's; a step cancelled mid-run, or the whole allocation, still
//! gives a complete version; an allocation that never starts fails its host
//! after start_timeout with Slurm's reason; a bad partition is named with
//! Slurm's words; and after every run no allocation is left in the queue.

mod common;
mod slurmd;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{JobShape, Scratch, text};
use herd::model::EntityKey;
use slurmd::Cluster;

/// One at a time: each test runs its own cluster and a multi-process job,
/// and side by side on a 2-core machine they would slow each other down.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long an allocation may stay in the queue after herd exits.
const JOBS_GONE_WITHIN: Duration = Duration::from_secs(10);

/// Long enough (a few seconds here) for a cancel to land mid-run.
fn shape() -> JobShape {
    JobShape {
        users: 8000,
        items: 20000,
        dim: 32,
        slots: 1,
        ..Default::default()
    }
}

/// hosts.toml: `local` (one slot) when asked, then the slurm host `cl`
/// with `extra` keys, its node cache in the cluster's folder.
fn fleet(c: &Cluster, local: bool, slots: u32, extra: &str) -> String {
    let mut t = String::new();
    if local {
        t.push_str("[[host]]\nname = \"local\"\nkind = \"local\"\nslots = 1\ndevice = \"cpu\"\nthreads = 1\n\n");
    }
    t.push_str(&format!(
        "[[host]]\nname = \"cl\"\nkind = \"slurm\"\nslots = {slots}\npartition = \"batch\"\ntime = \"10\"\n\
         start_timeout = \"30s\"\nnode_cache = \"{}\"\ndevice = \"cpu\"\ncost_per_hour = 1.0\n{extra}\n",
        c.dir.path().join("node").display()
    ));
    t
}

fn generate(s: &Scratch, shape: &JobShape) {
    let n = |v: u64| v.to_string();
    let out = s.herd(&[
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

/// `herd run` of `s`'s job against cluster `c`, `slow` slowing one slot.
fn start_run(c: &Cluster, s: &Scratch, slow: Option<&str>) -> Child {
    let mut cmd = Command::new(common::HERD);
    cmd.args([
        "run",
        s.job().to_str().unwrap(),
        "--report",
        s.path("report.json").to_str().unwrap(),
    ])
    .current_dir(s.dir.path())
    .env("SLURM_CONF", &c.conf)
    .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(v) = slow {
        cmd.env(herd::run::TEST_SLOW_SLOT_ENV, v);
    }
    cmd.spawn().expect("start herd run")
}

fn finish(s: &Scratch, child: Child) -> (serde_json::Value, String) {
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = serde_json::from_slice(&std::fs::read(s.path("report.json")).unwrap()).unwrap();
    (r, text(&out))
}

fn host<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {r}"))
}

fn assert_no_jobs_left(c: &Cluster) {
    let left = c.jobs_gone_within(JOBS_GONE_WITHIN);
    assert!(left.is_empty(), "allocations left in squeue: {left:?}");
}

/// A local-only run of the same job, for comparison.
fn local_store(shape: &JobShape) -> Scratch {
    let alone = Scratch::new(shape);
    generate(&alone, shape);
    alone.write(
        "hosts.toml",
        "[[host]]\nname = \"local\"\nkind = \"local\"\nslots = 2\ndevice = \"cpu\"\nthreads = 1\n",
    );
    let out = alone.herd(&["run", alone.job().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    alone
}

/// Every entity's stored value in the live version of `a` equals `b`'s.
fn assert_same_store(a: &Path, b: &Path, ids: u64) {
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

/// Waits for a `herd worker` started from the node cache under `c` that has
/// used CPU beyond loading its model (so it is scoring).
fn busy_step_worker(c: &Cluster, limit: Duration) -> u32 {
    let cache = c.dir.path().join("node");
    let until = Instant::now() + limit;
    while Instant::now() < until {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe.starts_with(&cache) && common::cpu_ticks(pid) > 5 {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no busy worker step within {limit:?}: {}", c.logs());
}

fn check(c: &Cluster, hosts: &Path) -> Output {
    c.command(common::HERD)
        .args(["hosts", "check", "--hosts", hosts.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn a_job_on_a_slurm_host_and_a_local_host_stores_what_a_local_run_stores() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    generate(&s, &shape);
    s.write("hosts.toml", &fleet(&c, true, 2, ""));
    // The local slot runs 10x slower, so the slurm steps, which start after
    // the allocation and the sbcast of the binary, get chunks too.
    let t = Instant::now();
    let (r, out) = finish(&s, start_run(&c, &s, Some("0:10")));
    let cold = t.elapsed();
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(host(&r, "cl")["chunks"].as_u64().unwrap() > 0, "{r}");
    assert!(host(&r, "local")["chunks"].as_u64().unwrap() > 0, "{r}");
    let binary = std::fs::metadata(common::HERD).unwrap().len();
    let weights = std::fs::metadata(s.path("data/two_tower.safetensors"))
        .unwrap()
        .len();
    assert_eq!(host(&r, "cl")["shipped_bytes"], binary + weights, "{r}");
    assert!(
        out.contains("cl: slurm job") && out.contains("on herdnode"),
        "{out}"
    );
    assert_no_jobs_left(&c);
    let alone = local_store(&shape);
    assert_same_store(&s.store(), &alone.store(), shape.users);

    // A second run finds both files in the node cache.
    let t = Instant::now();
    let (r, out) = finish(&s, start_run(&c, &s, Some("0:10")));
    let cached = t.elapsed();
    assert_eq!(r["flipped"], true, "{r}");
    eprintln!(
        "slurm + local run ({} users): cold {:.2} s, cached {:.2} s; {}",
        shape.users,
        cold.as_secs_f64(),
        cached.as_secs_f64(),
        out.lines()
            .find(|l| l.contains("cl: slurm job"))
            .unwrap_or("")
    );
    assert_eq!(host(&r, "cl")["shipped_bytes"], 0, "{r}");
    assert!(
        out.contains("nothing shipped (cached on the nodes)"),
        "{out}"
    );
    assert_no_jobs_left(&c);
}

#[test]
fn a_step_cancelled_mid_run_is_restarted_and_the_version_is_complete() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    generate(&s, &shape);
    s.write("hosts.toml", &fleet(&c, false, 2, ""));
    let child = start_run(&c, &s, Some("0:4"));
    busy_step_worker(&c, Duration::from_secs(40));
    let steps = c.steps();
    assert!(!steps.is_empty(), "no worker step: {}", c.logs());
    let cancel = c.command("scancel").arg(&steps[0]).output().unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    let (r, out) = finish(&s, child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(
        out.contains("step of slurm job"),
        "the step's end went unnoticed: {out}"
    );
    assert!(out.contains("restarting the worker"), "{out}");
    assert_no_jobs_left(&c);
    let alone = local_store(&shape);
    assert_same_store(&s.store(), &alone.store(), shape.users);
}

#[test]
fn the_allocation_cancelled_mid_run_loses_the_host_and_the_local_host_finishes() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    generate(&s, &shape);
    s.write("hosts.toml", &fleet(&c, true, 2, ""));
    let child = start_run(&c, &s, Some("0:10"));
    busy_step_worker(&c, Duration::from_secs(40));
    let jobs = c.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let cancel = c.command("scancel").arg(&jobs[0]).output().unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    let (r, out) = finish(&s, child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(
        out.contains(&format!("slurm allocation {} ended", jobs[0])),
        "the allocation's end went unnoticed: {out}"
    );
    assert!(out.contains("host cl: lost"), "{out}");
    assert_no_jobs_left(&c);
    let alone = local_store(&shape);
    assert_same_store(&s.store(), &alone.store(), shape.users);
}

#[test]
fn with_requeue_a_cancelled_allocation_is_replaced_and_its_slots_rejoin() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    generate(&s, &shape);
    s.write("hosts.toml", &fleet(&c, true, 2, "requeue = true"));
    let child = start_run(&c, &s, Some("0:10"));
    busy_step_worker(&c, Duration::from_secs(40));
    let first = c.jobs();
    assert_eq!(first.len(), 1, "{first:?}");
    let cancel = c.command("scancel").arg(&first[0]).output().unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    // A new allocation, and worker steps in it.
    let until = Instant::now() + Duration::from_secs(30);
    let rejoined = loop {
        let steps: Vec<String> = c
            .steps()
            .into_iter()
            .filter(|s| !s.starts_with(&format!("{}.", first[0])))
            .collect();
        if !steps.is_empty() {
            break steps;
        }
        assert!(
            Instant::now() < until,
            "no step of a new allocation: {}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (r, out) = finish(&s, child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(!out.contains("host cl: lost"), "{out}");
    assert!(!rejoined.is_empty());
    assert_no_jobs_left(&c);
    let alone = local_store(&shape);
    assert_same_store(&s.store(), &alone.store(), shape.users);
}

#[test]
fn an_allocation_that_never_starts_fails_its_host_after_start_timeout_with_slurms_reason() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    generate(&s, &shape);
    // Held back an hour: pending with Slurm's reason BeginTime. The local
    // slot is slowed so the run outlasts the start_timeout.
    let hosts = fleet(&c, true, 2, "extra_args = [\"--begin=now+3600\"]")
        .replace("start_timeout = \"30s\"", "start_timeout = \"3s\"");
    s.write("hosts.toml", &hosts);
    let t = Instant::now();
    let (r, out) = finish(&s, start_run(&c, &s, Some("0:6")));
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(host(&r, "cl")["chunks"], 0, "{r}");
    assert!(
        out.contains("host cl: queued: PENDING (BeginTime)"),
        "{out}"
    );
    assert!(
        out.contains(
            "did not start within 3 s (start_timeout) and was cancelled; Slurm's reason: BeginTime"
        ),
        "{out}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(40),
        "took {:?}",
        t.elapsed()
    );
    assert_no_jobs_left(&c);
}

#[test]
fn a_bad_partition_is_refused_naming_the_host_and_what_slurm_said() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts.toml");
    std::fs::write(
        &hosts,
        fleet(&c, false, 1, "").replace("partition = \"batch\"", "partition = \"nope\""),
    )
    .unwrap();
    let out = check(&c, &hosts);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("host 'cl': Slurm refused the allocation")
            && all.contains("Invalid partition name specified"),
        "{all}"
    );
    assert_no_jobs_left(&c);
}

#[test]
fn hosts_check_on_a_slurm_host_prints_node_device_and_queue_wait_and_cancels() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts.toml");
    std::fs::write(&hosts, fleet(&c, false, 1, "")).unwrap();
    let out = check(&c, &hosts);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("cl ")).expect(&all);
    for want in ["yes", "slurm job", "cpu"] {
        assert!(row.contains(want), "row lacks '{want}': {all}");
    }
    assert!(
        stdout.contains("on node herdnode, queued ") && stdout.contains(" s\n"),
        "{all}"
    );
    assert_no_jobs_left(&c);
}

#[test]
fn no_allocation_outlives_a_killed_coordinator() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    generate(&s, &shape);
    s.write("hosts.toml", &fleet(&c, false, 2, ""));
    let mut child = start_run(&c, &s, Some("0:8"));
    busy_step_worker(&c, Duration::from_secs(40));
    assert_eq!(c.jobs().len(), 1);
    // No chance to cancel anything: the allocation ends because the pipe
    // that holds it closes with the process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    assert_no_jobs_left(&c);
}
