//! Jobs on a real Slurm cluster (tests/slurmd: munged, slurmctld and slurmd
//! on loopback) beside the local host, and beside a local and an ssh host
//! (tests/sshd) in one run: the store ends up the same as a local-only
//! run's; a step cancelled mid-run, or the whole allocation, still
//! gives a complete version; an allocation that never starts fails its host
//! after start_timeout with Slurm's reason; a bad partition is named with
//! Slurm's words; and after every run no allocation is left in the queue.

mod common;
mod slurmd;
mod sshd;

use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::fleet::{
    LOCAL_ONE_SLOT, assert_same_store, assert_stores_what_a_local_run_stores, busy_worker_under,
    host,
};
use common::{JobShape, Scratch, text};
use slurmd::Cluster;

/// One at a time: each test runs its own cluster and a multi-process job,
/// and side by side on a 2-core machine they would slow each other down.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long an allocation may stay in the queue after herd exits.
const JOBS_GONE_WITHIN: Duration = Duration::from_secs(10);

/// A job long enough for a fault to land mid-run: a slowed worker's chunk
/// takes well over the 50 ms of CPU by which `busy_step_worker` knows it is
/// scoring (the slowdown itself sleeps).
fn shape() -> JobShape {
    JobShape {
        users: 8000,
        items: 100_000,
        dim: 32,
        slots: 1,
        ..Default::default()
    }
}

/// hosts.toml: `local` (one slot) when asked, then the slurm host `cl`
/// with `extra` keys.
fn fleet(c: &Cluster, local: bool, slots: u32, extra: &str) -> String {
    let local = if local { LOCAL_ONE_SLOT } else { "" };
    format!("{local}{}", c.host_toml("cl", slots, extra))
}

/// `herd run` of `s`'s job against cluster `c`, `slow` slowing one slot.
fn start_run(c: &Cluster, s: &Scratch, slow: Option<&str>) -> Child {
    start_run_with(c, s, slow, None)
}

/// As [`start_run`], with `together` (a [`Scratch::barrier`]) set too.
fn start_run_with(
    c: &Cluster,
    s: &Scratch,
    slow: Option<&str>,
    together: Option<(&str, String)>,
) -> Child {
    let mut env = vec![("SLURM_CONF", c.conf.display().to_string())];
    env.extend(together);
    s.start_run(slow, &env)
}

fn assert_no_jobs_left(c: &Cluster) {
    let left = c.jobs_gone_within(JOBS_GONE_WITHIN);
    assert!(left.is_empty(), "allocations left in squeue: {left:?}");
}

/// Waits for a `herd worker` started from the node cache under `c` that has
/// used CPU beyond loading its model (so it is scoring).
fn busy_step_worker(c: &Cluster, limit: Duration) -> u32 {
    busy_worker_under(&c.node_cache(), limit)
        .unwrap_or_else(|| panic!("no busy worker step within {limit:?}: {}", c.logs()))
}

/// The `JOB.STEP` id of the Slurm step process `pid` runs in, from the
/// variables srun gives its tasks.
fn step_of(pid: u32) -> String {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let var = |name: &str| {
        let prefix = format!("{name}=");
        env.split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("worker {pid} has no {name} in its environment"))
    };
    format!("{}.{}", var("SLURM_JOB_ID"), var("SLURM_STEP_ID"))
}

fn check(c: &Cluster, hosts: &Path) -> Output {
    c.command(common::HERD)
        .args(["hosts", "check", "--hosts", hosts.to_str().unwrap()])
        .output()
        .unwrap()
}

/// The same job on a local, an ssh (tests/sshd) and a slurm host in one
/// run: every host commits chunks, the store is a local-only run's, and a
/// second run finds every file in the caches.
#[test]
fn one_run_across_local_ssh_and_slurm_hosts_stores_what_a_local_run_stores() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let servers = sshd::Servers::start(1);
    let shape = shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write(
        "hosts.toml",
        &format!(
            "{LOCAL_ONE_SLOT}{}{}",
            servers.hosts_toml(1),
            c.host_toml("cl", 1, "")
        ),
    );
    // Every worker waits for the other two before it says hello, so the
    // remote hosts, which start after they are set up and the binary is
    // shipped, get chunks too however long that takes; the local slot runs
    // 4x slower so it does not take most of them.
    let t = Instant::now();
    let together = s.barrier("cold", 3);
    let (r, out) = s.finish(start_run_with(&c, &s, Some("0:4"), Some(together)));
    let cold = t.elapsed();
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    for name in ["local", "ssh0", "cl"] {
        let chunks = host(&r, name)["chunks"].as_u64().unwrap();
        assert!(chunks > 0, "{name} committed no chunk: {r}\n{out}");
    }
    let binary = std::fs::metadata(common::HERD).unwrap().len();
    let weights = std::fs::metadata(s.path("data/two_tower.safetensors"))
        .unwrap()
        .len();
    for name in ["ssh0", "cl"] {
        assert_eq!(host(&r, name)["shipped_bytes"], binary + weights, "{r}");
    }
    assert!(
        out.contains("cl: slurm job") && out.contains("on herdnode"),
        "{out}"
    );
    assert_no_jobs_left(&c);
    let left = servers.servers[0].workers_gone_within(JOBS_GONE_WITHIN);
    assert!(left.is_empty(), "herd workers left on ssh0: {left:?}");
    assert_stores_what_a_local_run_stores(&s.store(), &shape);

    // A second run finds both files in the node cache and the ssh cache.
    let t = Instant::now();
    let together = s.barrier("cached", 3);
    let (r, out) = s.finish(start_run_with(&c, &s, Some("0:4"), Some(together)));
    let cached = t.elapsed();
    assert_eq!(r["flipped"], true, "{r}");
    eprintln!(
        "local + ssh + slurm run ({} users): cold {:.2} s, cached {:.2} s; {}",
        shape.users,
        cold.as_secs_f64(),
        cached.as_secs_f64(),
        out.lines()
            .find(|l| l.contains("cl: slurm job"))
            .unwrap_or("")
    );
    for name in ["ssh0", "cl"] {
        assert_eq!(host(&r, name)["shipped_bytes"], 0, "{r}");
    }
    assert!(
        out.contains("nothing shipped (cached on the nodes)"),
        "{out}"
    );
    assert_no_jobs_left(&c);
}

/// An ONNX model whose weights lie in a file beside it (external data,
/// tests/fixtures/onnx): both files go to the node by sbcast, side by side
/// in one folder of the node cache, each checked by sha256 there; the
/// store equals a local-only run's, and a second run sends nothing.
#[test]
fn an_onnx_model_with_external_data_ships_by_sbcast_beside_its_data() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let files = ["external_weights.onnx", "external_weights.onnx.data"];
    const ROWS: u64 = 2000;
    let scratch = |hosts: &str| {
        let s = Scratch::new(&JobShape::default());
        let out = s.herd(&[
            "gen",
            "mlp",
            "--out",
            "data",
            "--rows",
            &ROWS.to_string(),
            "--features",
            "20",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        std::fs::create_dir_all(s.path("model")).unwrap();
        for f in files {
            std::fs::copy(fixtures.join(f), s.path("model").join(f)).unwrap();
        }
        let columns: Vec<String> = (0..20).map(|j| format!("\"f{j}\"")).collect();
        s.write(
            "job.toml",
            &format!(
                "[job]\nname = \"onnx-external\"\nmodel_version = \"1\"\nhosts = \"hosts.toml\"\n\n\
                 [input]\npath = \"data/entities.parquet\"\nid_column = \"entity_id\"\n\
                 feature_columns = [{}]\n\n\
                 [model]\nkind = \"onnx\"\npath = \"model/external_weights.onnx\"\n\n\
                 [output]\nstore = \"store\"\n",
                columns.join(", ")
            ),
        );
        s.write("hosts.toml", hosts);
        s
    };
    let s = scratch(&c.host_toml("cl", 1, ""));
    let (r, out) = s.finish(start_run(&c, &s, None));
    assert_eq!(r["rows"], ROWS, "{r}");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let want: u64 =
        size(Path::new(common::HERD)) + files.iter().map(|f| size(&fixtures.join(f))).sum::<u64>();
    assert_eq!(host(&r, "cl")["shipped_bytes"], want, "{r}\n{out}");
    // One folder holds the model and its data, byte for byte the job's.
    let models = std::fs::read_dir(c.node_cache())
        .unwrap()
        .map(|e| e.unwrap().path().join("models"))
        .find(|p| p.is_dir())
        .expect("a models folder in the node cache");
    let folders: Vec<_> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    for f in files {
        assert_eq!(
            std::fs::read(folders[0].join(f)).unwrap(),
            std::fs::read(fixtures.join(f)).unwrap(),
            "{f}"
        );
    }
    let alone = scratch(LOCAL_ONE_SLOT);
    let local = alone.herd(&["run", "job.toml"]);
    assert_eq!(local.status.code(), Some(0), "{}", text(&local));
    assert_same_store(&s.store(), &alone.store(), ROWS);
    // Again: every file is in the node cache, nothing is sent.
    let (r, out) = s.finish(start_run(&c, &s, None));
    assert_eq!(host(&r, "cl")["shipped_bytes"], 0, "{r}\n{out}");
    assert_no_jobs_left(&c);
}

/// One slurm host whose two slots span two nodes (`--nodes=2`; two slurmd
/// here, each with a node cache only it sees): the binary and the model go
/// to both by sbcast, a worker runs on each, and the store is a local-only
/// run's.
#[test]
fn a_slurm_host_spanning_two_nodes_ships_to_both_and_runs_a_worker_on_each() {
    let _serial = one_at_a_time();
    let c = Cluster::start_nodes(2);
    let shape = shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write(
        "hosts.toml",
        &c.host_toml("cl", 2, "extra_args = [\"--nodes=2\"]"),
    );
    let child = start_run(&c, &s, None);
    let until = Instant::now() + Duration::from_secs(40);
    let mut nodes = std::collections::BTreeSet::new();
    while nodes.len() < 2 && Instant::now() < until {
        // Worker steps run on one node each (the probe and the checks
        // after sbcast run on both at once).
        let single = c.steps_on().into_iter().map(|(_, node)| node);
        nodes.extend(single.filter(|n| !n.contains([',', '['])));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (r, out) = s.finish(child);
    assert_eq!(nodes.len(), 2, "worker steps ran on {nodes:?}: {out}");
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    let binary = std::fs::metadata(common::HERD).unwrap().len();
    let weights = std::fs::metadata(s.path("data/two_tower.safetensors"))
        .unwrap()
        .len();
    assert_eq!(
        host(&r, "cl")["shipped_bytes"],
        2 * (binary + weights),
        "{r}\n{out}"
    );
    // Each node's own cache holds the binary.
    for i in 0..2 {
        let shipped: Vec<u64> = std::fs::read_dir(c.node_local(i))
            .unwrap()
            .flat_map(|user| std::fs::read_dir(user.unwrap().path().join("bin")).unwrap())
            .map(|b| {
                std::fs::metadata(b.unwrap().path().join("herd"))
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(shipped, [binary], "node {}", c.nodes()[i]);
    }
    assert_no_jobs_left(&c);
    assert_stores_what_a_local_run_stores(&s.store(), &shape);
}

#[test]
fn a_step_cancelled_mid_run_is_restarted_and_the_version_is_complete() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write("hosts.toml", &fleet(&c, false, 2, ""));
    let child = start_run(&c, &s, Some("0:4"));
    // The step of the worker that is scoring: another step's worker may
    // still be loading its model, and a worker that never came up is not
    // restarted (its host is lost instead).
    let pid = busy_step_worker(&c, Duration::from_secs(40));
    let step = step_of(pid);
    let steps = c.steps();
    assert!(
        steps.contains(&step),
        "step {step} not among {steps:?}: {}",
        c.logs()
    );
    c.scancel(&step);
    let (r, out) = s.finish(child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(
        out.contains("step of slurm job"),
        "the step's end went unnoticed: {out}"
    );
    assert!(out.contains("restarting the worker"), "{out}");
    assert_no_jobs_left(&c);
    assert_stores_what_a_local_run_stores(&s.store(), &shape);
}

#[test]
fn the_allocation_cancelled_mid_run_loses_the_host_and_the_local_host_finishes() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write("hosts.toml", &fleet(&c, true, 2, ""));
    let child = start_run(&c, &s, Some("0:10"));
    busy_step_worker(&c, Duration::from_secs(40));
    let jobs = c.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    c.scancel(&jobs[0]);
    let (r, out) = s.finish(child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(
        out.contains(&format!("slurm allocation {} ended", jobs[0])),
        "the allocation's end went unnoticed: {out}"
    );
    assert!(out.contains("host cl: lost"), "{out}");
    assert_no_jobs_left(&c);
    assert_stores_what_a_local_run_stores(&s.store(), &shape);
}

#[test]
fn with_requeue_a_cancelled_allocation_is_replaced_and_its_slots_rejoin() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write("hosts.toml", &fleet(&c, true, 2, "requeue = true"));
    let child = start_run(&c, &s, Some("0:10"));
    busy_step_worker(&c, Duration::from_secs(40));
    let first = c.jobs();
    assert_eq!(first.len(), 1, "{first:?}");
    c.scancel(&first[0]);
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
    let (r, out) = s.finish(child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(!out.contains("host cl: lost"), "{out}");
    assert!(!rejoined.is_empty());
    // The host row shows the wait for the new allocation, then the host
    // running again once a worker in it has loaded the model.
    let requeued = format!(
        "host cl: queued: REQUEUED (slurm allocation {} ended)",
        first[0]
    );
    let at = out
        .find(&requeued)
        .unwrap_or_else(|| panic!("no '{requeued}': {out}"));
    assert!(
        out[at..].contains("host cl: running on cpu"),
        "the host is not shown running again: {out}"
    );
    assert_no_jobs_left(&c);
    assert_stores_what_a_local_run_stores(&s.store(), &shape);
}

#[test]
fn an_allocation_that_never_starts_fails_its_host_after_start_timeout_with_slurms_reason() {
    let _serial = one_at_a_time();
    let c = Cluster::start();
    let shape = shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    // Held back an hour: pending with Slurm's reason BeginTime. The local
    // slot is slowed so the run outlasts the start_timeout.
    let hosts = fleet(&c, true, 2, "extra_args = [\"--begin=now+3600\"]")
        .replace("start_timeout = \"30s\"", "start_timeout = \"3s\"");
    s.write("hosts.toml", &hosts);
    let t = Instant::now();
    let (r, out) = s.finish(start_run(&c, &s, Some("0:6")));
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
    // The run ends with the local slot's work, not with the allocation
    // held back an hour: a bound far below that hour and far above the
    // slowed local run (20-43 s on the two-core machines the suite runs on).
    assert!(
        t.elapsed() < Duration::from_secs(180),
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
    s.generate(&shape);
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
