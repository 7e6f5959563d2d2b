//! Jobs across three real OpenSSH hosts (tests/sshd) plus the local host:
//! the store ends up the same as a local-only run's, a second run ships
//! nothing, workers and whole hosts dying mid-run still give a complete
//! version, and no worker process is left behind on any host.

mod common;
mod sshd;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{
    LOCAL_ONE_SLOT, assert_stores_what_a_local_run_stores, busy_worker_under, host,
};
use common::{JobShape, Scratch, text};

/// The tests here run one at a time: each starts real sshd's and a
/// multi-host job, and on a 2-core machine running them side by side makes
/// hosts slow to come up for reasons that have nothing to do with herd.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a host's workers may linger after a run ends.
const WORKERS_GONE_WITHIN: Duration = Duration::from_secs(10);

/// A job long enough (a few seconds on the test machine) for hosts to come
/// up, and for a kill to land mid-run: a slowed worker's first chunk takes
/// well over the 50 ms of CPU by which `busy_worker` knows it is scoring
/// (the slowdown itself sleeps).
fn big_shape() -> JobShape {
    JobShape {
        users: 12000,
        items: 100_000,
        dim: 32,
        slots: 1,
        ..Default::default()
    }
}

/// hosts.toml: `local` (one slot) when asked, then one ssh host per server.
fn fleet_toml(servers: &sshd::Servers, local: bool, slots: u32) -> String {
    let local = if local { LOCAL_ONE_SLOT } else { "" };
    format!("{local}{}", servers.hosts_toml(slots))
}

fn assert_no_workers_left(servers: &sshd::Servers) {
    for s in &servers.servers {
        let left = s.workers_gone_within(WORKERS_GONE_WITHIN);
        assert!(left.is_empty(), "herd workers left on {}: {left:?}", s.name);
    }
}

/// Waits for a busy `herd worker` of `server`: one that has used CPU beyond
/// starting up (reading its model), so it is scoring. A run that ends first
/// fails the test with its output.
fn busy_worker(server: &sshd::Server, run: &mut Child, limit: Duration) -> u32 {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(pid) = busy_worker_under(&server.home, Duration::from_millis(100)) {
            return pid;
        }
        if run.try_wait().unwrap().is_some() {
            let mut out = String::new();
            if let Some(mut e) = run.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut out);
            }
            panic!(
                "the run ended before a worker on {} was busy:\n{out}",
                server.name
            );
        }
    }
    panic!("no busy worker on {} within {limit:?}", server.name)
}

#[test]
fn a_job_runs_on_three_ssh_hosts_and_local_stores_what_a_local_run_stores_and_ships_once() {
    let _serial = one_at_a_time();
    let servers = sshd::Servers::start(3);
    let shape = big_shape();
    let fleet = Scratch::new(&shape);
    fleet.generate(&shape);
    fleet.write("hosts.toml", &fleet_toml(&servers, true, 1));

    // Cold: binary and model go to every host. Every worker waits for the
    // other three before it says hello, so the remote hosts, which start
    // later, get chunks too however long shipping takes; the local slot
    // (slot 0) runs 4x slower so it does not take most of them.
    let t = Instant::now();
    let together = fleet.barrier("cold", 4);
    let (r, _) = fleet.finish(fleet.start_run(Some("0:4"), &[together]));
    let cold = t.elapsed();
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    let binary = std::fs::metadata(common::HERD).unwrap().len();
    let weights = std::fs::metadata(fleet.path("data/two_tower.safetensors"))
        .unwrap()
        .len();
    for name in ["ssh0", "ssh1", "ssh2"] {
        let h = host(&r, name);
        assert!(
            h["chunks"].as_u64().unwrap() > 0,
            "{name} committed no chunk: {r}"
        );
    }
    // The slowed local slot may lose what it runs to a backup on a faster
    // host (that is what backups are for); it must still have been given
    // work.
    assert!(
        host(&r, "local")["attempts"].as_u64().unwrap() > 0,
        "local ran no attempt: {r}"
    );
    assert_eq!(host(&r, "local")["shipped_bytes"], 0, "{r}");
    for s in &servers.servers {
        assert_eq!(
            host(&r, &s.name)["shipped_bytes"].as_u64().unwrap(),
            binary + weights,
            "{}: {r}",
            s.name
        );
        assert!(s.cache().join("models").read_dir().unwrap().count() == 1);
    }
    assert_no_workers_left(&servers);

    assert_stores_what_a_local_run_stores(&fleet.store(), &shape);

    // Cached: nothing is shipped.
    let t = Instant::now();
    let together = fleet.barrier("cached", 4);
    let (r, _) = fleet.finish(fleet.start_run(Some("0:4"), &[together]));
    let cached = t.elapsed();
    assert_eq!(r["flipped"], true, "{r}");
    for s in &servers.servers {
        assert_eq!(host(&r, &s.name)["shipped_bytes"], 0, "{}: {r}", s.name);
    }
    assert_no_workers_left(&servers);
    eprintln!(
        "ssh fleet run ({} users): cold {:.2} s, cached {:.2} s",
        shape.users,
        cold.as_secs_f64(),
        cached.as_secs_f64()
    );
}

#[test]
fn a_remote_worker_killed_mid_run_still_gives_a_complete_version() {
    let _serial = one_at_a_time();
    let servers = sshd::Servers::start(3);
    let shape = big_shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write("hosts.toml", &fleet_toml(&servers, false, 1));
    // Slot 0 (ssh0's) runs 4x slower: it is busy long enough to be killed.
    // The workers start together, so ssh0 gets work however late it is up.
    let mut child = s.start_run(Some("0:4"), &[s.barrier("run", 3)]);
    let victim = busy_worker(&servers.servers[0], &mut child, Duration::from_secs(60));
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let (r, _) = s.finish(child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(
        host(&r, "ssh0")["failures"].as_u64().unwrap() >= 1,
        "the kill went unnoticed: {r}"
    );
    let store = herd::store::Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.len(1).unwrap(), shape.users);
    assert_no_workers_left(&servers);
}

#[test]
fn a_host_that_dies_mid_run_still_gives_a_complete_version() {
    let _serial = one_at_a_time();
    let mut servers = sshd::Servers::start(3);
    let shape = big_shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write("hosts.toml", &fleet_toml(&servers, false, 1));
    let mut child = s.start_run(Some("1:4"), &[s.barrier("run", 3)]);
    busy_worker(&servers.servers[1], &mut child, Duration::from_secs(60));
    // sshd, its sessions and the workers under them all die at once.
    servers.servers[1].kill_all();
    let t = Instant::now();
    let (r, _) = s.finish(child);
    assert_eq!(r["rows"], shape.users, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(
        host(&r, "ssh1")["failures"].as_u64().unwrap() >= 1,
        "the loss went unnoticed: {r}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    let store = herd::store::Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.len(1).unwrap(), shape.users);
    assert_no_workers_left(&servers);
}

#[test]
fn with_every_host_unreachable_the_run_fails_and_the_live_version_stays() {
    let _serial = one_at_a_time();
    let servers = sshd::Servers::start(1);
    let shape = JobShape::default();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    // A live version from a local run first.
    let out = s.herd(&["run", s.job().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dead = std::net::TcpListener::bind("127.0.0.9:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let empty_known_hosts = s.path("empty_known_hosts");
    s.write(
        "hosts.toml",
        &format!(
            "[[host]]\nname = \"gone\"\nkind = \"ssh\"\naddress = \"127.0.0.9:{dead}\"\nuser = \"root\"\nidentity = \"{key}\"\nknown_hosts = \"{kh}\"\nslots = 2\n\n\
             [[host]]\nname = \"stranger\"\nkind = \"ssh\"\naddress = \"{addr}\"\nuser = \"root\"\nidentity = \"{key}\"\nknown_hosts = \"{ekh}\"\nslots = 1\n",
            key = servers.user_key.display(),
            kh = servers.known_hosts.display(),
            ekh = empty_known_hosts.display(),
            addr = servers.servers[0].address(),
        ),
    );
    let out = s.herd(&["run", s.job().to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("no worker is left"), "{all}");
    assert!(
        all.contains(&format!("cannot connect to 127.0.0.9:{dead}")),
        "{all}"
    );
    assert!(
        all.contains("unknown host key") && all.contains(&servers.servers[0].fingerprint()),
        "{all}"
    );
    let store = herd::store::Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.live().unwrap(), Some(1));
}

#[test]
fn hosts_check_prints_key_auth_shipping_and_backend_for_each_host() {
    let _serial = one_at_a_time();
    let servers = sshd::Servers::start(2);
    let dir = tempfile::tempdir().unwrap();
    let empty_known_hosts = dir.path().join("empty_known_hosts");
    let mut toml = fleet_toml(&servers, false, 1);
    toml = toml.replacen(
        &format!("known_hosts = \"{}\"", servers.known_hosts.display()),
        &format!("known_hosts = \"{}\"", empty_known_hosts.display()),
        1,
    );
    let hosts = dir.path().join("hosts.toml");
    std::fs::write(&hosts, toml).unwrap();
    let out = common::herd_in(
        dir.path(),
        &["hosts", "check", "--hosts", hosts.to_str().unwrap()],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "one host is refused: {all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {all}"))
            .to_string()
    };
    let ok = line("ssh1");
    for want in ["yes", "known", "key ssh-ed25519", "cpu"] {
        assert!(ok.contains(want), "ssh1 row lacks '{want}': {all}");
    }
    assert!(ok.contains(" MB ") || ok.contains("cached"), "{all}");
    let refused = line("ssh0");
    assert!(
        refused.contains("NO") && refused.contains("UNKNOWN"),
        "{all}"
    );
    assert!(stdout.contains(&servers.servers[0].fingerprint()), "{all}");
    assert!(stdout.contains("ssh-keyscan -p"), "{all}");
    // A second check ships nothing.
    let out = common::herd_in(
        dir.path(),
        &["hosts", "check", "--hosts", hosts.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let again = stdout.lines().find(|l| l.starts_with("ssh1 ")).unwrap();
    assert!(again.contains("cached"), "{stdout}");
    assert_no_workers_left(&servers);
}

#[test]
fn remote_workers_exit_when_the_coordinator_is_killed() {
    let _serial = one_at_a_time();
    let servers = sshd::Servers::start(2);
    let shape = big_shape();
    let s = Scratch::new(&shape);
    s.generate(&shape);
    s.write("hosts.toml", &fleet_toml(&servers, false, 1));
    // Both slots run slowly, so the job is still going when it is killed.
    let mut child = s.start_run(Some("0:8"), &[s.barrier("run", 2)]);
    busy_worker(&servers.servers[0], &mut child, Duration::from_secs(60));
    assert!(!servers.servers[0].workers().is_empty());
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    // The connection closes with the coordinator; sshd ends the session and
    // the worker sees the end of its input.
    assert_no_workers_left(&servers);
}

/// An `ssh-agent` child holding one key; killed on drop.
struct Agent {
    child: Child,
    socket: std::path::PathBuf,
}

impl Agent {
    fn start(dir: &Path, key: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent runs (apt-get install -y openssh-client)");
        let until = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < until, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let added = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(added.status.success(), "ssh-add: {added:?}");
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_ssh_config_alias_and_the_agent_are_enough_to_reach_a_host() {
    let _serial = one_at_a_time();
    let servers = sshd::Servers::start(1);
    let srv = &servers.servers[0];
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(
        home.path().join(".ssh/config"),
        format!(
            "Host herd-test-alias\n  HostName {}\n  Port {}\n  User root\n  UserKnownHostsFile {}\n",
            srv.ip,
            srv.port,
            servers.known_hosts.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(home.path(), &servers.user_key);
    // No user, identity or known_hosts here: ~/.ssh/config and the agent
    // supply them.
    let hosts = home.path().join("hosts.toml");
    std::fs::write(
        &hosts,
        "[[host]]\nname = \"aliased\"\nkind = \"ssh\"\naddress = \"herd-test-alias\"\nslots = 1\ndevice = \"cpu\"\n",
    )
    .unwrap();
    let out = Command::new(common::HERD)
        .args(["hosts", "check", "--hosts", hosts.to_str().unwrap()])
        .env("HOME", home.path())
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("USER", "nobody-here")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("aliased ")).unwrap();
    for want in ["yes", "known", "agent", "cpu"] {
        assert!(row.contains(want), "row lacks '{want}': {all}");
    }
    drop(agent);
    assert_no_workers_left(&servers);
}
