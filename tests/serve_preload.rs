//! `herd serve --preload`: the live version's replies held in memory answer
//! exactly what the store answers, for every key shape, across flips, TTLs
//! running out and the store being replaced; a version that does not fit
//! is served from the store.

mod serve_common;
mod store_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd::model::{EntityIds, Predictions};
use herd::store::Store;
use serve_common::*;
use store_common::{new_version, top_k};

const ENTITIES: u64 = 500;

/// Top-3 lists of `ids` that depend on the id and `seed`, committed with
/// timestamp `at`, validated and flipped live.
fn publish_top_k(store: &Store, ids: EntityIds, seed: u32, at: u64) -> u64 {
    let v = new_version(store, "preload", ids.len() as u64);
    let mut offsets = vec![0u32];
    let (mut items, mut scores) = (Vec::new(), Vec::new());
    for i in 0..ids.len() as u32 {
        for k in 0..3u32 {
            items.push(i * 10 + k + seed);
            scores.push(1.0 / (k as f32 + 1.0) + seed as f32 + i as f32 * 1e-3);
        }
        offsets.push(items.len() as u32);
    }
    let preds = Predictions::TopK {
        offsets,
        items,
        scores,
    };
    publish(store, v, &ids, &preds, at);
    v
}

fn int_ids() -> EntityIds {
    EntityIds::Int((0..ENTITIES).collect())
}

/// The value of `field` in the server's INFO.
fn info(c: &mut RespClient, field: &str) -> String {
    let text = c.call(&["INFO"]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO: {text}"))
        .to_string()
}

/// Waits (up to 20 s) until INFO says version `v` is preloaded.
fn until_preloaded(c: &mut RespClient, v: u64) {
    let started = Instant::now();
    while info(c, "preloaded_version") != v.to_string() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "v{v} was not preloaded within 20 s: INFO preloaded_version:{}",
            info(c, "preloaded_version")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `GET key` answers, as bytes (nil: `None`).
fn get(c: &mut RespClient, key: &str) -> Option<Vec<u8>> {
    match c.call(&["GET", key]) {
        Resp::Bulk(b) => Some(b),
        Resp::Nil => None,
        other => panic!("GET {key}: {other:?}"),
    }
}

/// Every key shape answered by a preloading server and by one that reads
/// the store are the same bytes, over RESP and over HTTP.
fn same_answers(store: &Path, keys: &[String], http_ids: &[&str]) {
    let plain = Server::start(store, None, &[]);
    let held = Server::start(store, None, &["--preload", "64"]);
    let (mut p, mut h) = (
        RespClient::connect(plain.resp),
        RespClient::connect(held.resp),
    );
    let live: u64 = info(&mut p, "live_version").parse().unwrap();
    until_preloaded(&mut h, live);
    for key in keys {
        assert_eq!(get(&mut h, key), get(&mut p, key), "GET {key}");
    }
    let (mut ph, mut hh) = (
        HttpClient::connect(plain.http),
        HttpClient::connect(held.http),
    );
    for id in http_ids {
        for path in [
            format!("/v1/predictions/{id}"),
            format!("/v1/predictions/{id}?version={live}"),
            format!("/v1/predictions/{id}?version=1"),
        ] {
            let (a, b) = (hh.get(&path), ph.get(&path));
            assert_eq!((a.status, &a.body), (b.status, &b.body), "GET {path}");
        }
    }
}

#[test]
fn preloaded_integer_ids_answer_what_the_store_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    publish_top_k(&store, int_ids(), 0, now());
    assert_eq!(publish_top_k(&store, int_ids(), 7, now()), 2);
    let mut keys: Vec<String> = (0..ENTITIES + 3)
        .step_by(7)
        .map(|i| i.to_string())
        .collect();
    keys.extend(
        [
            "0042",
            "pred:42",
            "v2:42",
            "pred:v2:42",
            "v1:42",
            "pred:v1:42",
            "v9:42",
            "pred:live",
            "abc",
            "18446744073709551615",
            "99999999999999999999",
            "",
        ]
        .map(String::from),
    );
    same_answers(&path, &keys, &["42", "0042", "4999", "abc"]);
    // And both are `herd store get --json`.
    let server = Server::start(&path, None, &["--preload", "64"]);
    let mut c = RespClient::connect(server.resp);
    until_preloaded(&mut c, 2);
    for id in ["0", "42", "499"] {
        assert_eq!(
            String::from_utf8(get(&mut c, id).unwrap()).unwrap(),
            store_get_json(&path, id, None)
        );
    }
    let entities: u64 = info(&mut c, "preloaded_predictions").parse().unwrap();
    assert_eq!(entities, ENTITIES);
    assert!(info(&mut c, "preloaded_bytes").parse::<u64>().unwrap() > 0);
}

#[test]
fn preloaded_string_ids_answer_what_the_store_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    let mut ids: Vec<String> = (0..ENTITIES).map(|i| format!("user:{i}")).collect();
    // Digits, an id that looks like a version, a quote, non-ASCII, and an
    // 8-byte id whose bytes are the big-endian key of the integer 42 (which
    // the store finds before the id "42" when asked for 42).
    ids.extend(["123", "42", "0042", "v1:x", "say \"hi\"", "é/ü"].map(String::from));
    ids.push(String::from_utf8(42u64.to_be_bytes().to_vec()).unwrap());
    ids.sort();
    let mut keys = ids.clone();
    keys.extend(["42", "missing", "pred:user:7"].map(String::from));
    publish_top_k(&store, EntityIds::Str(ids), 3, now());
    same_answers(&path, &keys, &["user:7", "123", "42", "%C3%A9%2F%C3%BC"]);
}

#[test]
fn a_flip_is_served_from_the_next_request_then_preloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    publish_top_k(&store, int_ids(), 0, now());
    let server = Server::start(&path, None, &["--preload", "64"]);
    let mut c = RespClient::connect(server.resp);
    until_preloaded(&mut c, 1);
    for seed in 1..=3u32 {
        let v = new_version(&store, "preload", ENTITIES);
        let (ids, preds) = top_k(0..ENTITIES, &[(seed * 1000, seed as f32)]);
        commit_validated(&store, v, &ids, &preds, now());
        // Flipped by another process, while the old version is held.
        flip_by_cli(&path, v);
        let got: serde_json::Value = serde_json::from_slice(&get(&mut c, "5").unwrap()).unwrap();
        assert_eq!(got["version"], v, "the first read after the flip to v{v}");
        assert_eq!(got["top_k"][0]["item"], seed * 1000);
        until_preloaded(&mut c, v);
        assert_eq!(
            String::from_utf8(get(&mut c, "5").unwrap()).unwrap(),
            store_get_json(&path, "5", None)
        );
    }
    // A rollback too; and an explicit version that is not live any more
    // is read from the store.
    store.flip(2).unwrap();
    let got: serde_json::Value = serde_json::from_slice(&get(&mut c, "5").unwrap()).unwrap();
    assert_eq!(got["version"], 2);
    assert_eq!(
        String::from_utf8(get(&mut c, "v4:5").unwrap()).unwrap(),
        store_get_json(&path, "5", Some(4))
    );
}

#[test]
fn a_held_reply_whose_ttl_ran_out_is_read_stale_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    // The versions' TTL is a week: this one runs out 6 s from now.
    let ttl = 604_800;
    let expires = now() + 6;
    publish_top_k(&store, int_ids(), 0, expires - ttl);
    let server = Server::start(&path, None, &["--preload", "64"]);
    let mut c = RespClient::connect(server.resp);
    until_preloaded(&mut c, 1);
    assert!(
        now() < expires,
        "preloading 500 predictions took more than 6 s"
    );
    let fresh: serde_json::Value = serde_json::from_slice(&get(&mut c, "9").unwrap()).unwrap();
    // (The second may have turned since.)
    assert!(fresh["stale"] == false || now() > expires, "{fresh}");
    while now() <= expires + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let stale = String::from_utf8(get(&mut c, "9").unwrap()).unwrap();
    assert!(stale.contains("\"stale\":true"), "{stale}");
    assert_eq!(stale, store_get_json(&path, "9", None));
}

#[test]
fn a_version_past_the_memory_given_is_served_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    publish_top_k(&store, int_ids(), 0, now());
    // 1 MiB cannot hold the first 1 MiB block of replies and the index.
    let server = Server::start(&path, None, &["--preload", "1"]);
    let mut c = RespClient::connect(server.resp);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(info(&mut c, "preloaded_version"), "none");
    assert_eq!(
        String::from_utf8(get(&mut c, "42").unwrap()).unwrap(),
        store_get_json(&path, "42", None)
    );
}

#[test]
fn a_store_replaced_while_preloaded_is_never_answered_from_the_old_replies() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores, each with v1 live, of other values.
    let make = |name: &str, seed: u32| -> PathBuf {
        let p = dir.path().join(name);
        assert_eq!(
            publish_top_k(&Store::open(&p).unwrap(), int_ids(), seed, now()),
            1
        );
        p
    };
    let (green, blue) = (make("green", 0), make("blue", 50));
    let cur = dir.path().join("cur");
    std::os::unix::fs::symlink("green", &cur).unwrap();
    let server = Server::start(&cur, None, &["--preload", "64"]);
    let mut c = RespClient::connect(server.resp);
    until_preloaded(&mut c, 1);
    let green_7 = store_get_json(&green, "7", None);
    let blue_7 = store_get_json(&blue, "7", None);
    assert_ne!(green_7, blue_7);
    assert_eq!(
        String::from_utf8(get(&mut c, "7").unwrap()).unwrap(),
        green_7
    );

    let tmp = dir.path().join("cur.new");
    std::os::unix::fs::symlink("blue", &tmp).unwrap();
    std::fs::rename(&tmp, &cur).unwrap();
    // Once blue is answered, green is never answered again.
    let started = Instant::now();
    let mut switched = false;
    while started.elapsed() < Duration::from_secs(6) {
        let got = String::from_utf8(get(&mut c, "7").unwrap()).unwrap();
        if got == blue_7 {
            switched = true;
        } else {
            assert!(!switched, "green's reply after blue's");
            assert_eq!(got, green_7);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(switched, "blue was not served within 6 s");
    until_preloaded(&mut c, 1);
    assert_eq!(
        String::from_utf8(get(&mut c, "7").unwrap()).unwrap(),
        blue_7
    );
}
