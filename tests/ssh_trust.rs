//! The SSH trust chain through `herd hosts check` against real OpenSSH
//! servers (tests/sshd): a host key known_hosts marks `@revoked`, a private
//! key others may read, a cache folder others may write or that is a
//! symbolic link, and a ProxyJump in ~/.ssh/config are each refused with a
//! message saying why, where a careless client would carry on.

mod common;
mod sshd;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::text;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn host_toml(server: &sshd::Server, key: &Path, known_hosts: &Path) -> String {
    format!(
        "[[host]]\nname = \"{}\"\nkind = \"ssh\"\naddress = \"{}\"\nuser = \"root\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nslots = 1\ndevice = \"cpu\"\nthreads = 1\n",
        server.name,
        server.address(),
        key.display(),
        known_hosts.display(),
    )
}

fn check(dir: &Path, toml: &str) -> Output {
    let hosts = dir.join("hosts.toml");
    std::fs::write(&hosts, toml).unwrap();
    common::herd_in(dir, &["hosts", "check", "--hosts", hosts.to_str().unwrap()])
}

fn refused(out: &Output, wants: &[&str]) {
    let all = text(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the host was not refused: {all}"
    );
    for want in wants {
        assert!(all.contains(want), "the refusal lacks '{want}': {all}");
    }
}

#[test]
fn revoked_keys_open_private_keys_and_unsafe_cache_folders_are_refused() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let servers = sshd::Servers::start(1);
    let server = &servers.servers[0];
    let dir = tempfile::tempdir().unwrap();

    // The baseline: this host passes.
    let ok = check(
        dir.path(),
        &host_toml(server, &servers.user_key, &servers.known_hosts),
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));

    // Its host key revoked by a line of known_hosts (the line trusting it stays).
    let known = std::fs::read_to_string(&servers.known_hosts).unwrap();
    let host_key = std::fs::read_to_string(&server.host_key_pub).unwrap();
    let revoked = dir.path().join("known_hosts_revoked");
    std::fs::write(&revoked, format!("{known}@revoked * {}", host_key.trim())).unwrap();
    let out = check(dir.path(), &host_toml(server, &servers.user_key, &revoked));
    refused(&out, &["REVOKED", "@revoked"]);

    // A private key others may read.
    let open_key = dir.path().join("id_open");
    std::fs::copy(&servers.user_key, &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(
        dir.path(),
        &host_toml(server, &open_key, &servers.known_hosts),
    );
    refused(&out, &["permissions 0644", "too open", "chmod 600"]);

    // A cache folder on the host that others may write, then one that is a
    // symbolic link to such a folder.
    let toml = host_toml(server, &servers.user_key, &servers.known_hosts);
    let cache = server.cache();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(&check(dir.path(), &toml), &["writable by other users"]);
    std::fs::remove_dir_all(&cache).unwrap();
    let shared = server.home.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&shared, &cache).unwrap();
    refused(&check(dir.path(), &toml), &["is a symbolic link"]);
    std::fs::remove_file(&cache).unwrap();
    let again = check(dir.path(), &toml);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a new cache folder is private");
}

#[test]
fn a_proxy_jump_in_ssh_config_is_refused_not_bypassed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/config"),
        "Host inner\n  HostName 127.0.0.1\n  ProxyJump bastion.example\n",
    )
    .unwrap();
    let hosts = dir.path().join("hosts.toml");
    std::fs::write(
        &hosts,
        "[[host]]\nname = \"gpu1\"\nkind = \"ssh\"\naddress = \"inner\"\nuser = \"root\"\nslots = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::HERD)
        .args(["hosts", "check", "--hosts", hosts.to_str().unwrap()])
        .current_dir(dir.path())
        .env("HOME", &home)
        .output()
        .unwrap();
    refused(
        &out,
        &[
            "gpu1",
            "ProxyJump bastion.example",
            "does not support jump hosts",
        ],
    );
}

/// User plus system CPU ticks of process `pid` (0 when it is gone).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_dropped_connection_is_set_up_again_and_the_host_keeps_working() {
    use std::time::{Duration, Instant};
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let servers = sshd::Servers::start(1);
    let server = &servers.servers[0];
    let shape = common::JobShape {
        users: 12000,
        items: 20000,
        dim: 32,
        slots: 1,
        ..Default::default()
    };
    let s = common::Scratch::new(&shape);
    let generated = s.herd(&[
        "gen",
        "two-tower",
        "--out",
        "data",
        "--users",
        "12000",
        "--items",
        "20000",
        "--dim",
        "32",
        "--features",
        "3",
        "--seed",
        "3",
    ]);
    assert!(generated.status.success(), "{}", text(&generated));
    // The ssh host alone: without a reconnect the run has no host left.
    s.write(
        "hosts.toml",
        &host_toml(server, &servers.user_key, &servers.known_hosts)
            .replace("slots = 1", "slots = 2"),
    );
    // One slot is slowed so the run outlasts the drop.
    let mut child = std::process::Command::new(common::HERD)
        .args(["run", "job.toml"])
        .current_dir(s.dir.path())
        .env(herd::run::TEST_SLOW_SLOT_ENV, "0:4")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let first = loop {
        // A worker that has used CPU beyond starting up: it is scoring.
        if let Some(pid) = server.workers().into_iter().find(|&p| cpu_ticks(p) >= 3) {
            break pid;
        }
        assert!(
            Instant::now() < until,
            "no worker started on {}",
            server.name
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The worker's parent is the sshd session of herd's connection: killing
    // it drops the connection while the server stays up.
    let session = parent_of(first).expect("the worker's parent");
    // SAFETY: signals a process of the test's own sshd.
    unsafe { libc::kill(session as i32, libc::SIGKILL) };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if server
            .workers()
            .iter()
            .any(|&p| p != first && parent_of(p).is_some_and(|pp| pp != session))
        {
            break;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no worker came back on {} after the connection dropped: {}",
                server.name,
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let store = herd::store::Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.len(1).unwrap(), shape.users);
}
