//! The SSH transport against real OpenSSH servers (see tests/sshd): host
//! keys, authentication, shipping into the content-addressed cache, workers
//! on exec channels, and no worker left behind.

mod sshd;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd::config::{Device, SshHost, Trust};
use herd::fleet::ModelFile;
use herd::fleet::ssh::{Error, HostSession, Payload};
use herd::fleet::{FleetEvent, attach};
use herd::proto::{FromWorker, ToWorker};
use herd::sched::SlotId;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

const HERD: &str = env!("CARGO_BIN_EXE_herd");

fn host(s: &sshd::Server, servers: &sshd::Servers) -> SshHost {
    SshHost {
        address: s.address(),
        user: Some("root".into()),
        identity: Some(servers.user_key.clone()),
        known_hosts: Some(servers.known_hosts.clone()),
        trust: Trust::Strict,
        worker_binary: None,
        reconnect_window_secs: 30,
    }
}

fn payload() -> Payload {
    Payload {
        binary: PathBuf::from(HERD),
        model: None,
    }
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a worker on `session`, waits for its hello, probes the CPU
/// backend, and returns what it said; the worker is then shut down.
async fn probe(session: &HostSession) -> Result<(String, u32), String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let link = attach(SlotId(0), session.spawn(&[]), tx);
    let mut pid = 0;
    let mut stderr = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = rx.recv().await {
            match ev {
                FleetEvent::Message {
                    msg: FromWorker::Hello { pid: p, .. },
                    ..
                } => {
                    pid = p;
                    link.send(&ToWorker::Probe {
                        device: Device::Cpu,
                        threads: 1,
                    })?;
                }
                FleetEvent::Message {
                    msg: FromWorker::Loaded { backend, .. },
                    ..
                } => return Ok(backend),
                FleetEvent::Message { msg, .. } => return Err(format!("unexpected {msg:?}")),
                FleetEvent::Stderr { line, .. } => stderr.push(line),
                FleetEvent::Exited { reason, .. } => {
                    return Err(format!("{reason}; stderr: {}", stderr.join(" | ")));
                }
            }
        }
        Err("events closed".to_string())
    })
    .await
    .map_err(|_| "no answer in 30s".to_string())??;
    let _ = link.send(&ToWorker::Shutdown);
    Ok((answer, pid))
}

#[test]
fn three_hosts_connect_ship_once_and_run_workers_that_leave_no_process_behind() {
    let servers = sshd::Servers::start(3);
    let rt = runtime();
    let size = std::fs::metadata(HERD).unwrap().len();
    let sha = sha256_hex(Path::new(HERD));
    rt.block_on(async {
        // Cold: every host gets the binary, concurrently.
        let t = Instant::now();
        let sessions: Vec<HostSession> = servers
            .servers
            .iter()
            .map(|s| HostSession::start(&s.name, &host(s, &servers), payload()))
            .collect();
        for s in &sessions {
            s.ready().await.unwrap_or_else(|e| panic!("{e}"));
        }
        let cold = t.elapsed();
        let cold_steps = steps(&sessions);
        let mut starts = Vec::new();
        for (s, srv) in sessions.iter().zip(&servers.servers) {
            let st = s.status();
            assert_eq!(st.shipped_bytes, size, "{st:?}");
            assert_eq!((st.uploaded_files, st.cached_files), (1, 0));
            assert_eq!(st.host_key, "known");
            assert_eq!(st.auth, "key ssh-ed25519");
            let remote = srv.cache().join("bin").join(&sha).join("herd");
            assert_eq!(sha256_hex(&remote), sha, "the shipped binary is intact");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&remote).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
            // No temporary upload is left next to it.
            let names: Vec<_> = std::fs::read_dir(remote.parent().unwrap()).unwrap().flatten().collect();
            assert_eq!(names.len(), 1, "{names:?}");
            let t = Instant::now();
            let (backend, pid) = probe(s).await.unwrap_or_else(|e| panic!("{}: {e}", srv.name));
            starts.push(t.elapsed());
            assert_eq!(backend, "cpu");
            assert!(srv.workers().contains(&pid) || srv.workers().is_empty());
        }
        drop(sessions);
        // Cached: nothing is shipped the second time.
        let t = Instant::now();
        let sessions: Vec<HostSession> = servers
            .servers
            .iter()
            .map(|s| HostSession::start(&s.name, &host(s, &servers), payload()))
            .collect();
        for s in &sessions {
            s.ready().await.unwrap_or_else(|e| panic!("{e}"));
        }
        let cached = t.elapsed();
        let cached_steps = steps(&sessions);
        for s in &sessions {
            let st = s.status();
            assert_eq!(st.shipped_bytes, 0, "{st:?}");
            assert_eq!((st.uploaded_files, st.cached_files), (0, 1));
        }
        // Several workers on one connection at once.
        let mut pids = Vec::new();
        let mut links = Vec::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for slot in 0..3 {
            links.push(attach(SlotId(slot), sessions[0].spawn(&[]), tx.clone()));
        }
        while pids.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
                Ok(Some(FleetEvent::Message {
                    msg: FromWorker::Hello { pid, .. },
                    ..
                })) => pids.push(pid),
                Ok(Some(FleetEvent::Stderr { .. })) => {}
                other => panic!("expected hellos, got {other:?}"),
            }
        }
        let mut on_host = servers.servers[0].workers();
        on_host.sort();
        pids.sort();
        assert_eq!(on_host, pids, "the three workers run on host ssh0");
        // A kill ends the remote process.
        links[0].kill();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(FleetEvent::Exited { slot, reason })) => {
                    assert_eq!(slot, SlotId(0));
                    assert!(reason.contains("killed") || reason.contains("exited"), "{reason}");
                    break;
                }
                Ok(Some(_)) => {}
                other => panic!(
                    "expected the killed worker to exit, got {other:?}; workers on ssh0: {:?} (was {pids:?})",
                    servers.servers[0].workers()
                ),
            }
        }
        drop(links);
        drop(sessions);
        let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
        eprintln!(
            "three hosts, all ready: cold {} ms ({size} bytes to each; per host {cold_steps}), cached {} ms (per host {cached_steps}); worker start to Loaded: {} ms",
            ms(cold),
            ms(cached),
            starts.iter().map(|d| ms(*d)).collect::<Vec<_>>().join("/"),
        );
    });
    drop(rt);
    for s in &servers.servers {
        let left = s.workers_gone_within(Duration::from_secs(10));
        assert!(left.is_empty(), "workers left on {}: {left:?}", s.name);
    }
}

/// Per host `connect/ship` milliseconds.
fn steps(sessions: &[HostSession]) -> String {
    sessions
        .iter()
        .map(|s| {
            let st = s.status();
            let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN);
            format!("{:.0}/{:.0}", ms(st.connect_time), ms(st.ship_time))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn setup_error(servers: &sshd::Servers, h: SshHost) -> (Error, herd::fleet::ssh::HostStatus) {
    runtime().block_on(async {
        let s = HostSession::start("h", &h, payload());
        let e = s.ready().await.expect_err("setup must fail");
        let _ = servers;
        (e, s.status())
    })
}

#[test]
fn an_unknown_host_key_is_refused_with_its_fingerprint_and_how_to_trust_it() {
    let servers = sshd::Servers::start(1);
    let s = &servers.servers[0];
    let empty = servers.dir.path().join("empty_known_hosts");
    let mut h = host(s, &servers);
    h.known_hosts = Some(empty.clone());
    let (e, st) = setup_error(&servers, h);
    let msg = e.to_string();
    assert!(matches!(e, Error::HostKey { .. }), "{msg}");
    assert!(msg.contains(&s.fingerprint()), "{msg}");
    assert!(
        msg.contains(&format!(
            "ssh-keyscan -p {} {} >> {}",
            s.port,
            s.ip,
            empty.display()
        )),
        "{msg}"
    );
    assert_eq!(st.host_key, "UNKNOWN");
    assert!(!empty.exists(), "nothing is learned without accept-new");
}

#[test]
fn accept_new_learns_an_unknown_key_once() {
    let servers = sshd::Servers::start(1);
    let s = &servers.servers[0];
    let fresh = servers.dir.path().join("fresh_known_hosts");
    let mut h = host(s, &servers);
    h.known_hosts = Some(fresh.clone());
    h.trust = Trust::AcceptNew;
    runtime().block_on(async {
        let session = HostSession::start("h", &h, payload());
        session.ready().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(session.status().host_key, "learned");
        let again = HostSession::start("h", &h, payload());
        again.ready().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.status().host_key, "known");
    });
    let text = std::fs::read_to_string(&fresh).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with(&format!("[{}]:{} ssh-ed25519 ", s.ip, s.port)),
        "{text}"
    );
}

#[test]
fn a_changed_host_key_is_refused_even_with_accept_new() {
    let servers = sshd::Servers::start(2);
    let (a, b) = (&servers.servers[0], &servers.servers[1]);
    // known_hosts says server a has server b's key.
    let forged = servers.dir.path().join("forged_known_hosts");
    let b_key = std::fs::read_to_string(&b.host_key_pub).unwrap();
    let mut words = b_key.split_whitespace();
    std::fs::write(
        &forged,
        format!(
            "[{}]:{} {} {}\n",
            a.ip,
            a.port,
            words.next().unwrap(),
            words.next().unwrap()
        ),
    )
    .unwrap();
    let mut h = host(a, &servers);
    h.known_hosts = Some(forged.clone());
    h.trust = Trust::AcceptNew;
    let (e, st) = setup_error(&servers, h);
    let msg = e.to_string();
    assert!(msg.contains("HOST KEY CHANGED"), "{msg}");
    assert!(msg.contains(&a.fingerprint()), "{msg}");
    assert!(msg.contains("line 1"), "{msg}");
    assert_eq!(st.host_key, "CHANGED");
    assert_eq!(std::fs::read_to_string(&forged).unwrap().lines().count(), 1);
}

#[test]
fn a_key_the_server_does_not_accept_gives_a_clear_auth_error() {
    let servers = sshd::Servers::start(1);
    let s = &servers.servers[0];
    let mut h = host(s, &servers);
    h.identity = Some(servers.stranger_key.clone());
    let (e, st) = setup_error(&servers, h);
    let msg = e.to_string();
    assert!(matches!(e, Error::Auth { .. }), "{msg}");
    assert!(msg.contains("authentication as 'root'"), "{msg}");
    assert!(
        msg.contains(&servers.stranger_key.display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("refused") && msg.contains("SHA256:"), "{msg}");
    assert_eq!(st.auth, "FAILED");
    assert_eq!(st.host_key, "known");
}

#[test]
fn a_missing_identity_file_is_named() {
    let servers = sshd::Servers::start(1);
    let mut h = host(&servers.servers[0], &servers);
    h.identity = Some(servers.dir.path().join("no_such_key"));
    let (e, _) = setup_error(&servers, h);
    let msg = e.to_string();
    assert!(
        msg.contains("no_such_key") && msg.contains("identity"),
        "{msg}"
    );
}

#[test]
fn an_unreachable_host_fails_fast_with_its_address() {
    let servers = sshd::Servers::start(1);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.9:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut h = host(&servers.servers[0], &servers);
    h.address = format!("127.0.0.9:{port}");
    let t = Instant::now();
    let (e, _) = setup_error(&servers, h);
    let msg = e.to_string();
    assert!(matches!(e, Error::Connect { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.9:{port}")), "{msg}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn model_weights_ship_once_to_a_content_addressed_path() {
    let servers = sshd::Servers::start(1);
    let s = &servers.servers[0];
    let weights = servers.dir.path().join("w.safetensors");
    // Over one upload piece, with a quote in the name.
    let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&weights, &bytes).unwrap();
    let quoted = servers.dir.path().join("it's w.safetensors");
    std::fs::copy(&weights, &quoted).unwrap();
    let sha = sha256_hex(&weights);
    let p = Payload {
        binary: PathBuf::from(HERD),
        model: Some(ModelFile::alone(quoted, sha.clone())),
    };
    runtime().block_on(async {
        let session = HostSession::start("h", &host(s, &servers), p.clone());
        session.ready().await.unwrap_or_else(|e| panic!("{e}"));
        let remote = session.model_path().expect("a model path");
        assert_eq!(
            PathBuf::from(&remote),
            s.cache().join("models").join(format!("{sha}.safetensors"))
        );
        assert_eq!(std::fs::read(&remote).unwrap(), bytes);
        let first = session.status().shipped_bytes;
        assert!(first >= bytes.len() as u64);
        let again = HostSession::start("h", &host(s, &servers), p.clone());
        again.ready().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.status().shipped_bytes, 0);
        assert_eq!(again.status().cached_files, 2);
        // A wrong hash is caught on the remote side, and nothing is moved
        // into place.
        let bad = Payload {
            binary: PathBuf::from(HERD),
            model: Some(ModelFile::alone(weights.clone(), "0".repeat(64))),
        };
        let e = HostSession::start("h", &host(s, &servers), bad)
            .ready()
            .await
            .expect_err("hash mismatch");
        assert!(e.to_string().contains("expected 000"), "{e}");
        assert!(
            !s.cache()
                .join("models")
                .join(format!("{}.safetensors", "0".repeat(64)))
                .exists()
        );
    });
}

#[test]
fn an_rsa_identity_file_authenticates() {
    let servers = sshd::Servers::start(1);
    let mut h = host(&servers.servers[0], &servers);
    h.identity = Some(servers.user_rsa_key.clone());
    runtime().block_on(async {
        let s = HostSession::start("h", &h, payload());
        s.ready().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.status().auth, "key ssh-rsa");
        let (code, out, _) = s.run_command("printf %s \"$HOME\"").await.unwrap();
        assert_eq!(code, Some(0));
        assert_eq!(PathBuf::from(out), servers.servers[0].home);
    });
}
