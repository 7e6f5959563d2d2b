//! The Redis sink through the real binary, into a real redis-server started
//! here on loopback: `herd run` with `[[output.sink]] kind = "redis"` pushes
//! the validated version as `{prefix}:v{N}:{id}` (the JSON `herd store get
//! --json` prints, with the time left as expiry), then flips `{prefix}:live`;
//! readers going through the pointer during later runs never miss a key nor
//! read a version other than the one the pointer named; retention unlinks
//! the dropped version's keys; a push the server refuses fails the run
//! naming the sink, moves neither pointer and unlinks what it had written;
//! an unreachable sink fails the run before any work; a cluster sink spreads
//! a version over the primaries and retention cleans every one; `herd
//! serve` answers the same key shapes.

mod common;
mod serve_common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{JobShape, Scratch, text};
use herd::store::Store;
use serve_common::{Resp, RespClient};

/// A redis-server on an ephemeral loopback port, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        RedisServer::spawn(
            &std::env::temp_dir(),
            |port| vec!["--port".into(), port.to_string()],
            &[],
        )
    }

    /// `redis-server` with `args(port)` on a free loopback port, run in `dir`;
    /// ready once the server answering on the port is this child (its `INFO`
    /// process_id, asked with `redis-cli {cli} -p PORT`). Tests run in
    /// parallel, so a port picked free can be taken before the server binds
    /// it: then another port is tried, five in all.
    fn spawn(dir: &Path, args: impl Fn(u16) -> Vec<String>, cli: &[&str]) -> RedisServer {
        serve_common::require_redis_tools();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(args(port))
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no"])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start redis-server (apt-get install -y redis-server)");
            let mut server = RedisServer { child, port };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if server.child.try_wait().unwrap().is_some() {
                    break;
                }
                let info = Command::new("redis-cli")
                    .args(cli)
                    .args(["-p", &port.to_string(), "info", "server"])
                    .current_dir(dir)
                    .output()
                    .expect("run redis-cli");
                let info = String::from_utf8_lossy(&info.stdout).to_string();
                match info
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("process_id:"))
                {
                    Some(pid) if pid == server.child.id().to_string() => return server,
                    Some(_) => break,
                    None => {}
                }
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("redis-server found each of five free ports taken before it bound them");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(5))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free when asked.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a port")
        .port()
}

/// The job of `shape` with one Redis sink and `keep_versions = 2`.
fn job_with_sink(shape: &JobShape, url: &str) -> Scratch {
    let s = Scratch::new(shape);
    let job = std::fs::read_to_string(s.job()).unwrap();
    let job = job.replace("keep_versions = 5", "keep_versions = 2").replace(
        "[validate]",
        &format!("[[output.sink]]\nkind = \"redis\"\nurl = \"{url}\"\nprefix = \"pred\"\n\n[validate]"),
    );
    s.write("job.toml", &job);
    s
}

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).expect("GET")
}

fn keys(c: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(c).expect("KEYS");
    keys.sort();
    keys
}

#[test]
fn runs_push_to_redis_and_flip_its_pointer_readers_never_see_half_a_version() {
    let redis_server = RedisServer::start();
    let shape = JobShape {
        users: 300,
        ..JobShape::default()
    };
    let s = job_with_sink(&shape, &redis_server.url());
    let mut c = redis_server.conn().unwrap();

    let out = s.herd(&["run", "job.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pushed version 1 to redis {}", redis_server.url())),
        "{}",
        text(&out)
    );
    assert_eq!(get(&mut c, "pred:live").as_deref(), Some("1"));
    assert_eq!(keys(&mut c, "pred:v1:*").len(), shape.users as usize);
    for id in ["0", "42", "299"] {
        let want = serve_common::store_get_json(&s.store(), id, Some(1));
        assert_eq!(get(&mut c, &format!("pred:v1:{id}")), Some(want), "id {id}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("pred:v1:{id}"))
            .query(&mut c)
            .unwrap();
        assert!(ttl > 7 * 86_400 - 600 && ttl <= 7 * 86_400, "ttl {ttl}");
    }
    assert_eq!(get(&mut c, "pred:v1:300"), None);

    // `herd serve` answers the key shapes the sink writes with the same bytes.
    let serve = serve_common::Server::start(&s.store(), None, &["--prefix", "pred"]);
    let mut rc = RespClient::connect(serve.resp);
    assert_eq!(rc.call(&["GET", "pred:live"]), Resp::Bulk(b"1".to_vec()));
    assert_eq!(
        rc.call(&["GET", "pred:v1:42"]),
        Resp::Bulk(get(&mut c, "pred:v1:42").unwrap().into_bytes())
    );
    drop(serve);

    // Readers go through the pointer while two more runs push and flip.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let mut c = redis_server.conn().unwrap();
        std::thread::spawn(move || {
            let (mut reads, mut bad) = (0u64, Vec::new());
            let mut versions = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let live = get(&mut c, "pred:live").expect("pointer gone");
                let id = reads % 300;
                match get(&mut c, &format!("pred:v{live}:{id}")) {
                    Some(json) => {
                        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                        if v["version"].as_u64() != live.parse().ok() {
                            bad.push(format!("pointer {live}, value {json}"));
                        }
                    }
                    None => bad.push(format!("pointer {live}, no key for id {id}")),
                }
                versions.insert(live);
                reads += 1;
            }
            (reads, bad, versions)
        })
    };
    for version in [2, 3] {
        let out = s.herd(&["run", "job.toml"]);
        assert!(out.status.success(), "run {version}: {}", text(&out));
        assert_eq!(get(&mut c, "pred:live"), Some(version.to_string()));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (reads, bad, versions) = reader.join().unwrap();
    assert!(
        bad.is_empty(),
        "{} of {reads} reads were wrong: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        versions.contains("3") && reads > 100,
        "{reads} reads of {versions:?}"
    );

    // keep_versions = 2: LMDB dropped version 1, and so did the sink.
    assert!(keys(&mut c, "pred:v1:*").is_empty());
    assert_eq!(keys(&mut c, "pred:v2:*").len(), shape.users as usize);
    assert_eq!(keys(&mut c, "pred:v3:*").len(), shape.users as usize);

    // A server that refuses writes (out of memory) fails the push: exit 1
    // naming the sink, and neither pointer moves.
    let used: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 20_000)
        .query(&mut c)
        .unwrap();
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("sink redis {}", redis_server.url())) && stderr.contains("OOM"),
        "{}",
        text(&out)
    );
    assert_eq!(get(&mut c, "pred:live").as_deref(), Some("3"));
    let store = Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.live().unwrap(), Some(3));
    drop(store);
    // Nothing of the failed version is left for its expiry to clean.
    assert!(keys(&mut c, "pred:v4:*").is_empty(), "{}", text(&out));
    assert_eq!(keys(&mut c, "pred:v3:*").len(), shape.users as usize);

    // A rollback by hand moves LMDB only, and says which pointer it left.
    let out = s.herd(&["store", "flip", "--to", "2", "--store", "store"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "note: runs of this store also push to redis {}, pointer pred:live",
            redis_server.url()
        )),
        "{}",
        text(&out)
    );
    assert_eq!(get(&mut c, "pred:live").as_deref(), Some("3"));
}

#[test]
fn a_push_refused_halfway_removes_the_keys_it_wrote_and_moves_no_pointer() {
    let redis_server = RedisServer::start();
    let shape = JobShape {
        users: 300,
        ..JobShape::default()
    };
    let s = job_with_sink(&shape, &redis_server.url());
    let mut c = redis_server.conn().unwrap();
    let out = s.herd(&["run", "job.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(get(&mut c, "pred:live").as_deref(), Some("1"));

    // A Redis user that may write the pointer and the keys of ids 0-99 only:
    // the server takes the first 100 keys of the next version, then refuses.
    let mut acl = redis::cmd("ACL");
    for arg in [
        "SETUSER",
        "partial",
        "on",
        ">s3cret",
        "+@all",
        "~pred:live",
        "~pred:v?",
        "~pred:v*:?",
        "~pred:v*:??",
    ] {
        acl.arg(arg);
    }
    let () = acl.query(&mut c).unwrap();
    let url = format!("redis://partial:s3cret@127.0.0.1:{}/0", redis_server.port);
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write("job.toml", &job.replace(&redis_server.url(), &url));
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = format!(
        "sink redis redis://partial:***@127.0.0.1:{}/0",
        redis_server.port
    );
    assert!(stderr.contains(&shown), "{}", text(&out));
    assert!(!stderr.contains("s3cret"), "{}", text(&out));
    assert!(stderr.contains("key 100 of the version"), "{}", text(&out));
    assert!(
        stderr.contains("removed the 100 keys of version 2"),
        "{}",
        text(&out)
    );
    // Neither pointer moved, and nothing of version 2 is left.
    assert_eq!(get(&mut c, "pred:live").as_deref(), Some("1"));
    let store = Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.live().unwrap(), Some(1));
    drop(store);
    assert!(keys(&mut c, "pred:v2:*").is_empty());
    assert_eq!(keys(&mut c, "pred:v1:*").len(), shape.users as usize);
}

#[test]
fn a_second_store_on_the_same_prefix_is_refused_and_the_first_keeps_its_keys() {
    let redis_server = RedisServer::start();
    let shape = JobShape {
        users: 200,
        ..JobShape::default()
    };
    let first = job_with_sink(&shape, &redis_server.url());
    let mut c = redis_server.conn().unwrap();
    let out = first.herd(&["run", "job.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let before: Vec<Option<String>> = (0..shape.users)
        .map(|id| get(&mut c, &format!("pred:v1:{id}")))
        .collect();

    // Another store (its own version 1), the same server and prefix.
    let second = job_with_sink(&shape, &redis_server.url());
    let job = std::fs::read_to_string(second.job()).unwrap();
    second.write("job.toml", &job.replace("tt-test-1", "tt-test-2"));
    let out = second.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pred:live already names version 1, and this push is version 1")
            && stderr.contains("nothing was written"),
        "{}",
        text(&out)
    );
    let store = Store::open_existing(&second.store()).unwrap();
    assert_eq!(store.live().unwrap(), None);
    drop(store);
    let after: Vec<Option<String>> = (0..shape.users)
        .map(|id| get(&mut c, &format!("pred:v1:{id}")))
        .collect();
    assert_eq!(after, before, "the first store's keys changed");
    assert!(after.iter().all(Option::is_some));
    assert_eq!(get(&mut c, "pred:live").as_deref(), Some("1"));

    // Without the pointer (the first store never flipped it, say), the
    // first store's claim on version 1 still refuses a third store's.
    let () = redis::cmd("DEL").arg("pred:live").query(&mut c).unwrap();
    let third = job_with_sink(&shape, &redis_server.url());
    let job = std::fs::read_to_string(third.job()).unwrap();
    third.write("job.toml", &job.replace("tt-test-1", "tt-test-3"));
    let out = third.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("pred:v1 says the keys of version 1 belong to"),
        "{}",
        text(&out)
    );
    let again: Vec<Option<String>> = (0..shape.users)
        .map(|id| get(&mut c, &format!("pred:v1:{id}")))
        .collect();
    assert_eq!(again, before, "the first store's keys changed");
}

#[test]
fn an_unreachable_sink_fails_the_run_before_any_work() {
    // A port nothing listens on: bound, then released.
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let s = job_with_sink(&JobShape::default(), &url);
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("sink redis {url}")),
        "{}",
        text(&out)
    );
    assert!(
        !s.store().exists()
            || Store::open_existing(&s.store())
                .unwrap()
                .versions()
                .unwrap()
                .is_empty(),
        "a version was begun: {}",
        text(&out)
    );
}

/// Runs `openssl ARGS` in `dir`, failing the test with the install hint.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_rediss_url_pushes_over_tls_checking_the_server_certificate() {
    serve_common::require_redis_tools();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=herd test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let tls = ["--tls", "--cacert", "ca.pem"];
    let server = RedisServer::spawn(
        dir,
        |port| {
            let mut args = vec!["--port".to_string(), "0".into()];
            args.extend(["--tls-port".into(), port.to_string()]);
            args.extend(
                [
                    "--tls-cert-file",
                    "server.pem",
                    "--tls-key-file",
                    "server.key",
                ]
                .map(String::from),
            );
            args.extend(
                ["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"].map(String::from),
            );
            args
        },
        &tls,
    );
    let port = server.port;
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(tls)
            .args(["-p", &port.to_string()])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    let url = format!("rediss://localhost:{port}/0");
    let s = job_with_sink(
        &JobShape {
            users: 50,
            ..JobShape::default()
        },
        &url,
    );
    let run = |trust: Option<&std::path::Path>| {
        let mut cmd = Command::new(common::HERD);
        cmd.args(["run", "job.toml"]).current_dir(s.dir.path());
        match trust {
            // rustls-native-certs reads the roots to trust from SSL_CERT_FILE.
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env("SSL_CERT_FILE", dir.join("server.key")),
        };
        cmd.output().unwrap()
    };
    // A server whose certificate the client cannot verify is refused.
    let out = run(None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("sink redis {url}")),
        "{}",
        text(&out)
    );
    let out = run(Some(&dir.join("ca.pem")));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(cli(&["get", "pred:live"]), "1");
    assert_eq!(
        cli(&["get", "pred:v1:7"]),
        serve_common::store_get_json(&s.store(), "7", Some(1))
    );
    drop(server);
}

#[test]
fn binary_encoding_writes_the_stored_value_bytes() {
    let redis_server = RedisServer::start();
    let s = job_with_sink(
        &JobShape {
            users: 50,
            ..JobShape::default()
        },
        &redis_server.url(),
    );
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace(
            "prefix = \"pred\"",
            "prefix = \"pred\"\nencoding = \"binary\"",
        ),
    );
    let out = s.herd(&["run", "job.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut c = redis_server.conn().unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg("pred:v1:7").query(&mut c).unwrap();
    let store = Store::open_existing(&s.store()).unwrap();
    let want = store
        .with_value(&herd::model::EntityKey::Int(7), |v| {
            v.map(|(_, value)| value.as_bytes().to_vec())
        })
        .unwrap()
        .expect("entity 7 is in the store");
    assert_eq!(got, want);
    // A top-10 value: the 16-byte header, then 10 (item, score) pairs.
    assert_eq!(got.len(), 16 + 10 * 8);
}

/// A Redis Cluster of three primaries on loopback, made with
/// `redis-cli --cluster create`; every node killed when dropped.
struct RedisCluster {
    nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    fn start() -> RedisCluster {
        serve_common::require_redis_tools();
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::spawn(
                    dir.path(),
                    |port| {
                        let bus = free_port().to_string();
                        let conf = format!("nodes-{port}.conf");
                        let mut args = vec!["--port".to_string(), port.to_string()];
                        args.extend(["--cluster-enabled".into(), "yes".into()]);
                        args.extend(["--cluster-port".into(), bus]);
                        args.extend(["--cluster-config-file".into(), conf]);
                        args
                    },
                    &[],
                )
            })
            .collect();
        let cli = |port: u16, args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(args)
                .output()
                .expect("run redis-cli");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            text(&out)
        );
        for n in &nodes {
            while !cli(n.port, &["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes, _dir: dir }
    }

    fn client(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(RedisServer::url).collect();
        redis::cluster::ClusterClient::new(urls)
            .and_then(|c| c.get_connection())
            .expect("connect to the cluster")
    }

    /// Keys matching `pattern` on each node, in node order.
    fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| keys(&mut n.conn().unwrap(), pattern).len())
            .collect()
    }
}

#[test]
fn a_cluster_sink_spreads_a_version_over_the_nodes_and_retention_cleans_every_node() {
    let cluster = RedisCluster::start();
    let shape = JobShape {
        users: 300,
        ..JobShape::default()
    };
    let url = format!("redis://127.0.0.1:{}/0", cluster.nodes[0].port);
    let s = job_with_sink(&shape, &url);
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace("prefix = \"pred\"", "prefix = \"pred\"\ncluster = true"),
    );
    let mut c = cluster.client();
    let out = s.herd(&["run", "job.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    // Through the cluster client (which follows MOVED): the pointer, then
    // the version's keys, each on the node its slot lives on.
    let live: String = redis::cmd("GET").arg("pred:live").query(&mut c).unwrap();
    assert_eq!(live, "1");
    for id in ["0", "42", "299"] {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("pred:v1:{id}"))
            .query(&mut c)
            .unwrap();
        let want = serve_common::store_get_json(&s.store(), id, Some(1));
        assert_eq!(got, Some(want), "id {id}");
    }
    let per_node = cluster.keys_per_node("pred:v1:*");
    assert_eq!(per_node.iter().sum::<usize>(), shape.users as usize);
    assert!(
        per_node.iter().all(|&n| n > 0),
        "every primary holds part of the version: {per_node:?}"
    );

    // keep_versions = 2: the third run drops version 1 on every node.
    for version in [2, 3] {
        let out = s.herd(&["run", "job.toml"]);
        assert!(out.status.success(), "run {version}: {}", text(&out));
    }
    let live: String = redis::cmd("GET").arg("pred:live").query(&mut c).unwrap();
    assert_eq!(live, "3");
    assert_eq!(cluster.keys_per_node("pred:v1:*"), vec![0, 0, 0]);
    for v in [2, 3] {
        let n: usize = cluster.keys_per_node(&format!("pred:v{v}:*")).iter().sum();
        assert_eq!(n, shape.users as usize, "version {v}");
    }
}
