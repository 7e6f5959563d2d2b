//! `herd serve` over the Redis protocol, driven by real clients: redis-cli,
//! redis-py (RESP2 and RESP3, with AUTH) and a raw client, against stores
//! built here; and flips by another process during a read load.

mod serve_common;
mod store_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herd::model::{EntityIds, Predictions};
use herd::store::Store;
use serve_common::*;
use store_common::{new_version, scores};

const ENTITIES: u64 = 1000;

/// A version of `ENTITIES` integer ids whose top-3 lists depend on the id
/// and `seed`, committed with the current time, validated and flipped live.
fn live_top_k(store: &Store, seed: u32) -> u64 {
    let v = new_version(store, "serve", ENTITIES);
    let ids: Vec<u64> = (0..ENTITIES).collect();
    let mut offsets = vec![0u32];
    let (mut items, mut scores) = (Vec::new(), Vec::new());
    for &id in &ids {
        for k in 0..3u32 {
            items.push(id as u32 * 10 + k + seed);
            scores.push(1.0 / (k as f32 + 1.0) + seed as f32);
        }
        offsets.push(items.len() as u32);
    }
    let preds = Predictions::TopK {
        offsets,
        items,
        scores,
    };
    publish(store, v, &EntityIds::Int(ids), &preds, now());
    v
}

/// A store with v1 and v2 (live), both top-3 of ids 0..1000.
fn two_versions(dir: &Path) -> PathBuf {
    let path = dir.join("store");
    let store = Store::open(&path).unwrap();
    assert_eq!(live_top_k(&store, 0), 1);
    assert_eq!(live_top_k(&store, 5), 2);
    path
}

fn redis_cli(server: &Server, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.resp.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn redis_cli_reads_what_store_get_prints() {
    require_redis_tools();
    let dir = tempfile::tempdir().unwrap();
    let store = two_versions(dir.path());
    let server = Server::start(&store, None, &[]);

    assert_eq!(
        redis_cli(&server, &["GET", "42"]),
        store_get_json(&store, "42", None)
    );
    assert_eq!(
        redis_cli(&server, &["GET", "v1:42"]),
        store_get_json(&store, "42", Some(1))
    );
    assert_eq!(
        redis_cli(&server, &["GET", "pred:v1:42"]),
        store_get_json(&store, "42", Some(1))
    );
    assert_eq!(redis_cli(&server, &["GET", "pred:live"]), "2");
    // Missing: nil (redis-cli prints an empty line when not on a terminal).
    assert_eq!(redis_cli(&server, &["GET", "999999"]), "");
    assert_eq!(redis_cli(&server, &["GET", "v77:1"]), "");
    let mget = redis_cli(&server, &["MGET", "1", "999999", "v1:2"]);
    let lines: Vec<&str> = mget.lines().collect();
    assert_eq!(lines.len(), 3, "{mget}");
    assert_eq!(lines[0], store_get_json(&store, "1", None));
    assert_eq!(lines[1], "");
    assert_eq!(lines[2], store_get_json(&store, "2", Some(1)));
    assert_eq!(redis_cli(&server, &["EXISTS", "1", "2", "999999"]), "2");
    let ttl: i64 = redis_cli(&server, &["TTL", "42"]).parse().unwrap();
    assert!((604_790..=604_800).contains(&ttl), "TTL {ttl}");
    assert_eq!(redis_cli(&server, &["TTL", "999999"]), "-2");
    assert_eq!(redis_cli(&server, &["TTL", "pred:live"]), "-1");
    assert_eq!(redis_cli(&server, &["PING"]), "PONG");
    assert_eq!(redis_cli(&server, &["DBSIZE"]), ENTITIES.to_string());
    let info = redis_cli(&server, &["INFO"]);
    assert!(info.contains("live_version:2"), "{info}");
    assert!(info.contains(&format!("rows:{ENTITIES}")), "{info}");
    assert!(info.contains("uptime_in_seconds:"), "{info}");
    let unknown = redis_cli(&server, &["FLY", "away"]);
    assert!(
        unknown.starts_with("ERR unknown command 'FLY', with args beginning with: 'away'"),
        "{unknown}"
    );
    assert!(redis_cli(&server, &["SET", "a", "b"]).starts_with("READONLY"));
    assert_eq!(redis_cli(&server, &["SELECT", "0"]), "OK");
    assert!(redis_cli(&server, &["SELECT", "1"]).starts_with("ERR DB index"));
    // RESP3 through redis-cli -3 (it sends HELLO 3 first).
    let out = Command::new("redis-cli")
        .args([
            "-3",
            "-h",
            "127.0.0.1",
            "-p",
            &server.resp.port().to_string(),
        ])
        .args(["GET", "7"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        store_get_json(&store, "7", None)
    );
}

#[test]
fn raw_resp3_hello_switches_nil_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_versions(dir.path());
    let server = Server::start(&store, None, &[]);
    let mut c = RespClient::connect(server.resp);
    assert_eq!(c.call(&["GET", "nope"]), Resp::Nil);
    let Resp::Map(hello) = c.call(&["HELLO", "3", "SETNAME", "t"]) else {
        panic!("HELLO 3 answers a map");
    };
    assert!(hello.contains(&(Resp::Bulk(b"proto".to_vec()), Resp::Int(3))));
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), Resp::Bulk(b"t".to_vec()));
    // RESP3 nil is '_', which the client reads as Nil too; check the bytes.
    c.send(&[b"GET", b"nope"]);
    let mut raw = [0u8; 3];
    std::io::Read::read_exact(c.stream(), &mut raw).unwrap();
    assert_eq!(&raw, b"_\r\n");
    assert_eq!(
        c.call(&["HELLO", "4"]),
        Resp::Error("NOPROTO unsupported protocol version".into())
    );
    // With no password set, as Redis: the default user takes any password
    // when named, and a lone password is an error.
    assert_eq!(
        c.call(&["AUTH", "default", "anything"]),
        Resp::Simple("OK".into())
    );
    assert!(
        matches!(c.call(&["AUTH", "anything"]), Resp::Error(e) if e.contains("without any password configured"))
    );
    assert_eq!(
        c.call(&["DBSIZE", "x"]),
        Resp::Error("ERR wrong number of arguments for 'dbsize' command".into())
    );
    // The help an unknown subcommand's error points to exists.
    for (cmd, line) in [
        ("CLIENT", "SETNAME <name>"),
        ("COMMAND", "DOCS [<command-name> ...]"),
    ] {
        let Resp::Error(e) = c.call(&[cmd, "NOPE"]) else {
            panic!("{cmd} NOPE is an error");
        };
        assert!(e.ends_with(&format!("Try {cmd} HELP.")), "{e}");
        let Resp::Array(help) = c.call(&[cmd, "help"]) else {
            panic!("{cmd} HELP answers a list");
        };
        assert!(help.contains(&Resp::Simple(line.into())), "{cmd}: {help:?}");
    }
    // Pipelined: three commands in one write, three replies in order.
    c.send(&[b"PING"]);
    c.send(&[b"ECHO", b"hi"]);
    c.send(&[b"EXISTS", b"1"]);
    assert_eq!(c.read(), Resp::Simple("PONG".into()));
    assert_eq!(c.read(), Resp::Bulk(b"hi".to_vec()));
    assert_eq!(c.read(), Resp::Int(1));
    assert_eq!(c.call(&["QUIT"]), Resp::Simple("OK".into()));
    assert!(c.try_read().is_err(), "QUIT closes the connection");
}

/// A server of [`two_versions`] in `dir`, a client, and its reply to
/// `GET 42` (a prediction).
fn serving_42(dir: &Path) -> (Server, RespClient, Resp) {
    let store = two_versions(dir);
    let server = Server::start(&store, None, &[]);
    let mut c = RespClient::connect(server.resp);
    let want = c.call(&["GET", "42"]);
    assert!(matches!(want, Resp::Bulk(_)), "{want:?}");
    (server, c, want)
}

/// The server reads what a socket holds and then waits for the poller
/// without reading again; bytes that come later, mid-command or as the next
/// burst of pipelined commands, must still wake it at once (not at the 10 s
/// request timeout).
#[test]
fn commands_split_across_writes_are_answered_when_they_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c, want) = serving_42(dir.path());
    let get = b"*2\r\n$3\r\nGET\r\n$2\r\n42\r\n";
    for cut in [1, 4, 13, get.len() - 1] {
        let started = Instant::now();
        c.stream().write_all(&get[..cut]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.stream().write_all(&get[cut..]).unwrap();
        assert_eq!(c.read(), want, "cut at byte {cut}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "cut at byte {cut}: {took:?}");
    }
    for _ in 0..20 {
        c.stream().write_all(&get.repeat(3)).unwrap();
        for _ in 0..3 {
            assert_eq!(c.read(), want);
        }
    }
}

/// Inline commands (telnet, `nc`) are split as Redis splits them: quotes
/// and escapes undone; an unclosed quote ends the connection with Redis's
/// error.
#[test]
fn inline_commands_take_quotes_and_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c, want) = serving_42(dir.path());
    for line in [
        &b"GET 42\r\n"[..],
        b"GET \"42\"\r\n",
        b"get '42'\n",
        b"GET \"4\\x32\"\r\n",
    ] {
        c.stream().write_all(line).unwrap();
        assert_eq!(c.read(), want, "{}", String::from_utf8_lossy(line));
    }
    c.stream().write_all(b"GET \"42\r\n").unwrap();
    assert_eq!(
        c.read(),
        Resp::Error("ERR Protocol error: unbalanced quotes in request".into())
    );
    assert!(c.try_read().is_err(), "the connection is closed after it");
}

const REDIS_PY: &str = r#"
import json, sys, redis
port, password, live, rows = int(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
for proto in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=port, password=password, protocol=proto)
    assert r.ping()
    got = json.loads(r.get("42"))
    assert got["id"] == "42" and got["version"] == live, got
    assert len(got["top_k"]) == 3, got
    assert r.get("999999") is None
    many = r.mget(["1", "999999", "v1:1"])
    assert json.loads(many[0])["version"] == live and many[1] is None, many
    assert json.loads(many[2])["version"] == 1, many
    assert r.exists("1", "2", "999999") == 2
    assert 0 < r.ttl("42") <= 604800
    assert r.ttl("999999") == -2
    assert r.get("pred:live") == str(live).encode()
    assert r.dbsize() == rows
    info = r.info()
    assert info["live_version"] == live and info["rows"] == rows, info
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.get(str(i))
    assert [json.loads(x)["id"] for x in pipe.execute()] == [str(i) for i in range(50)]
    r.close()
    print("redis-py ok protocol", proto)
"#;

fn run_redis_py(server: &Server, password: &str) -> std::process::Output {
    Command::new("python3")
        .args([
            "-c",
            REDIS_PY,
            &server.resp.port().to_string(),
            password,
            "2",
            &ENTITIES.to_string(),
        ])
        .output()
        .expect("run python3")
}

#[test]
fn redis_py_reads_over_resp2_and_resp3() {
    require_redis_py();
    let dir = tempfile::tempdir().unwrap();
    let store = two_versions(dir.path());
    let server = Server::start(&store, None, &[]);
    let out = run_redis_py(&server, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("protocol 2") && stdout.contains("protocol 3"));
}

#[test]
fn a_password_is_required_from_every_client_when_set() {
    require_redis_py();
    let dir = tempfile::tempdir().unwrap();
    let store = two_versions(dir.path());
    let server = Server::start(&store, Some("s3cret"), &[]);
    let mut c = RespClient::connect(server.resp);
    assert_eq!(
        c.call(&["GET", "1"]),
        Resp::Error("NOAUTH Authentication required.".into())
    );
    assert!(matches!(c.call(&["HELLO", "3"]), Resp::Error(e) if e.starts_with("NOAUTH")));
    assert!(matches!(c.call(&["AUTH", "wrong"]), Resp::Error(e) if e.starts_with("WRONGPASS")));
    assert_eq!(c.call(&["AUTH", "s3cret"]), Resp::Simple("OK".into()));
    assert!(matches!(c.call(&["GET", "1"]), Resp::Bulk(_)));
    // redis-py authenticates with AUTH (RESP2) and HELLO 3 AUTH (RESP3).
    let out = run_redis_py(&server, "s3cret");
    assert!(
        out.status.success(),
        "redis-py with a password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_redis_py(&server, "wrong");
    assert!(!out.status.success(), "a wrong password must fail");
    // HTTP: bearer token, except /healthz.
    let mut h = HttpClient::connect(server.http);
    assert_eq!(h.get("/v1/predictions/1").status, 401);
    assert_eq!(h.get("/healthz").status, 200);
    let mut h = HttpClient::connect(server.http).with_bearer("s3cret");
    assert_eq!(h.get("/v1/predictions/1").status, 200);
    let mut h = HttpClient::connect(server.http).with_bearer("s3cre");
    assert_eq!(h.get("/metrics").status, 401);
    // The scheme's name is case-insensitive (RFC 7235).
    let mut raw = std::net::TcpStream::connect(server.http).unwrap();
    raw.write_all(b"GET /v1/predictions/1 HTTP/1.1\r\nhost: x\r\nauthorization: bearer s3cret\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut raw, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// `herd serve` of a store that does not exist, on free loopback ports,
/// with `args`, when they are refused: its standard error, after checking
/// the exit code 2 of a bad command line.
fn refused_serve(args: &[&str]) -> String {
    let out = Command::new(HERD)
        .args(["serve", "--store", "nowhere"])
        .args(args)
        .args(["--resp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_thread_count_past_the_limit_is_refused() {
    for threads in ["20000", "0"] {
        let err = refused_serve(&["--threads", threads]);
        assert!(
            err.contains(&format!("--threads {threads}")) && err.contains("1 to 1024"),
            "{err}"
        );
    }
}

#[test]
fn a_prefix_that_an_id_or_a_version_could_shadow_is_refused() {
    for prefix in ["", "v2", "v10"] {
        let err = refused_serve(&["--prefix", prefix]);
        assert!(err.contains(&format!("--prefix '{prefix}'")), "{err}");
    }
}

#[test]
fn a_non_loopback_address_without_a_password_is_refused() {
    let out = Command::new(HERD)
        .args(["serve", "--store", "nowhere", "--resp", "0.0.0.0:0"])
        .env_remove("HERD_SERVE_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--resp 0.0.0.0:0") && err.contains("HERD_SERVE_PASSWORD"),
        "{err}"
    );
}

#[test]
fn a_store_that_does_not_exist_yet_is_an_error_then_served_once_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later");
    let mut server = Server::start(&path, None, &[]);
    let mut c = RespClient::connect(server.resp);
    match c.call(&["GET", "1"]) {
        Resp::Error(e) => assert!(e.contains("no store at") && e.contains("later"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let mut h = HttpClient::connect(server.http);
    let r = h.get("/v1/predictions/1");
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("no store at"));
    assert_eq!(h.get("/healthz").status, 503);
    // A run creates the store; the same connections now get answers.
    let store = Store::open(&path).unwrap();
    live_top_k(&store, 0);
    assert!(matches!(c.call(&["GET", "1"]), Resp::Bulk(_)));
    assert_eq!(h.get("/v1/predictions/1").status, 200);
    assert_eq!(h.get("/healthz").status, 200);
    assert!(server.alive());
}

/// Versions whose every score equals the version number: a reply whose
/// scores differ from its `version` field, or an MGET whose replies have
/// different versions, mixed two versions.
#[test]
fn flips_by_another_process_during_a_read_load_never_mix_versions() {
    const ENTITIES: u64 = 300;
    const VERSIONS: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    let build = |marker: u64| {
        let v = new_version(&store, "flip", ENTITIES);
        let (ids, preds) = scores(0..ENTITIES, 8, marker as f32);
        commit_validated(&store, v, &ids, &preds, now());
        v
    };
    store.flip(build(1)).unwrap();
    let server = Server::start(&path, None, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for t in 0..3u64 {
        let (stop, reads, addr) = (stop.clone(), reads.clone(), server.resp);
        readers.push(std::thread::spawn(move || -> Result<u64, String> {
            let mut c = RespClient::connect(addr);
            let mut seen_versions = std::collections::BTreeSet::new();
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                i = (i * 7 + 13) % ENTITIES;
                let keys: Vec<String> = (0..4)
                    .map(|k| ((i + k * 31) % ENTITIES).to_string())
                    .collect();
                let mut args = vec!["MGET"];
                args.extend(keys.iter().map(String::as_str));
                let Resp::Array(items) = c.call(&args) else {
                    return Err("MGET did not answer an array".into());
                };
                let mut versions = Vec::new();
                for item in items {
                    let Resp::Bulk(b) = item else {
                        return Err(format!("MGET item missing: {item:?}"));
                    };
                    let v: serde_json::Value =
                        serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                    let version = v["version"].as_u64().unwrap();
                    for s in v["scores"].as_array().unwrap() {
                        if s.as_f64() != Some(version as f64) {
                            return Err(format!(
                                "mixed read: version {version} with scores {}",
                                v["scores"]
                            ));
                        }
                    }
                    versions.push(version);
                }
                if versions.windows(2).any(|w| w[0] != w[1]) {
                    return Err(format!("one MGET saw versions {versions:?}"));
                }
                seen_versions.insert(versions[0]);
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(seen_versions.len() as u64)
        }));
    }
    // An HTTP reader too.
    let http_reader = {
        let (stop, addr) = (stop.clone(), server.http);
        std::thread::spawn(move || -> Result<u64, String> {
            let mut h = HttpClient::connect(addr);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = h.request(
                    "POST",
                    "/v1/predictions:batchGet",
                    Some(r#"{"ids": [1, "2", 299]}"#),
                );
                if r.status != 200 {
                    return Err(format!("batchGet answered {}", r.status));
                }
                let preds = r.json()["predictions"].as_array().unwrap().clone();
                let versions: Vec<u64> = preds
                    .iter()
                    .map(|p| p["version"].as_u64().unwrap())
                    .collect();
                if versions.windows(2).any(|w| w[0] != w[1]) {
                    return Err(format!("one batchGet saw versions {versions:?}"));
                }
                n += 1;
            }
            Ok(n)
        })
    };

    let mut check = RespClient::connect(server.resp);
    let started = Instant::now();
    for marker in 2..=VERSIONS {
        let v = build(marker);
        assert_eq!(v, marker);
        // Flip in another process: the CLI.
        flip_by_cli(&path, v);
        // Served from the very next request.
        let Resp::Bulk(b) = check.call(&["GET", "5"]) else {
            panic!("GET 5")
        };
        let got: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(got["version"], v, "the next request after the flip to v{v}");
        if marker % 5 == 0 {
            store.gc(3).unwrap();
        }
    }
    // A rollback is served at once too.
    store.flip(VERSIONS - 1).unwrap();
    assert_eq!(
        check.call(&["GET", "pred:live"]),
        Resp::Bulk((VERSIONS - 1).to_string().into_bytes())
    );
    stop.store(true, Ordering::Relaxed);
    let mut distinct = 0;
    for r in readers {
        distinct = distinct.max(r.join().unwrap().unwrap_or_else(|e| panic!("{e}")));
    }
    let http_reads = http_reader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let total = reads.load(Ordering::Relaxed);
    eprintln!(
        "{total} MGETs and {http_reads} batchGets over {} flips in {:.1} s, readers saw up to {distinct} versions",
        VERSIONS - 1,
        started.elapsed().as_secs_f64()
    );
    assert!(total > 100, "too few reads to mean anything: {total}");
    assert!(
        distinct > 2,
        "the readers should have seen several versions, saw {distinct}"
    );
}

/// Polls `/healthz` until `want(status, body)` or 10 s pass.
fn healthz_until(server: &Server, what: &str, want: impl Fn(u16, &serde_json::Value) -> bool) {
    let started = Instant::now();
    loop {
        let r = HttpClient::connect(server.http).get("/healthz");
        let body = r.json();
        if want(r.status, &body) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: /healthz still {} {body}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_store_replaced_or_deleted_while_served_is_reopened_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores: green with v1 live, blue with v2 live (other values).
    let green = dir.path().join("green");
    assert_eq!(live_top_k(&Store::open(&green).unwrap(), 0), 1);
    let blue = two_versions(&dir.path().join("b"));
    std::fs::rename(&blue, dir.path().join("blue")).unwrap();
    let blue = dir.path().join("blue");
    let cur = dir.path().join("cur");
    std::os::unix::fs::symlink("green", &cur).unwrap();
    let server = Server::start(&cur, None, &[]);
    let mut c = RespClient::connect(server.resp);
    assert_eq!(
        c.call(&["GET", "7"]).text(),
        store_get_json(&green, "7", None)
    );

    // The link swapped atomically to blue.
    let tmp = dir.path().join("cur.new");
    std::os::unix::fs::symlink("blue", &tmp).unwrap();
    std::fs::rename(&tmp, &cur).unwrap();
    healthz_until(&server, "after the link moved to blue", |s, b| {
        s == 200 && b["live"] == 2
    });
    assert_eq!(
        c.call(&["GET", "7"]).text(),
        store_get_json(&blue, "7", None)
    );

    // Deleted: unhealthy, and reads are errors.
    std::fs::remove_dir_all(&blue).unwrap();
    healthz_until(&server, "after blue was deleted", |s, _| s == 503);
    let Resp::Error(e) = c.call(&["GET", "7"]) else {
        panic!("a read of a deleted store is an error")
    };
    assert!(e.contains("no store"), "{e}");
    let info = c.call(&["INFO"]).text();
    assert!(info.contains("\r\nstore:no store at "), "{info}");

    // Another store moved into its place is served.
    std::fs::rename(&green, &blue).unwrap();
    healthz_until(&server, "after green moved to blue", |s, b| {
        s == 200 && b["live"] == 1
    });
    assert_eq!(
        c.call(&["GET", "7"]).text(),
        store_get_json(&blue, "7", None)
    );
}
