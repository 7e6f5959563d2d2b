//! A reader in another process does continuous lookups while this process
//! builds 50 versions, flipping to each and collecting garbage, on a store
//! whose map starts small and grows under the reader. Every value of version
//! `v` is `v` (scores, timestamp offset and model ref), so a lookup that mixed
//! two versions, missed an entity or failed is seen at once.
//!
//! The reader is this test executable run again on `reader_child` (ignored in
//! normal runs; it refuses to run without the parent's environment).

mod store_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd::model::EntityKey;
use herd::store::{Store, ValueKind};
use store_common::*;

const ENTITIES: u64 = 400;
const WIDTH: usize = 64;
const VERSIONS: u32 = 50;
const DIR_VAR: &str = "HERD_STORE_READER_DIR";
/// `write` or `read`: how the reader opens the store.
const MODE_VAR: &str = "HERD_STORE_READER_MODE";

fn wait_for(path: &Path, what: &str) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn writer_flips_never_show_a_mix_to_a_reader_process() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = Store::open_with_map_size(&store_dir, 256 * 1024).unwrap();
    let first_map = store.map_size();
    let v = build_scores_version(&store, "job", ENTITIES, 100, WIDTH, 1.0);
    assert_eq!(v, 1);
    store.flip(v).unwrap();

    // Two readers: one that opened the store to write (as `herd run`'s
    // processes do), one read-only (as `herd serve` and `herd store get`).
    let children: Vec<_> = ["write", "read"]
        .into_iter()
        .map(|mode| {
            let child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "reader_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DIR_VAR, dir.path())
                .env(MODE_VAR, mode)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            wait_for(
                &dir.path().join(format!("ready-{mode}")),
                "the reader's first lookup",
            );
            child
        })
        .collect();

    for marker in 2..=VERSIONS {
        let v = build_scores_version(&store, "job", ENTITIES, 100, WIDTH, marker as f32);
        assert_eq!(v, u64::from(marker));
        store.flip(v).unwrap();
        store.gc(3).unwrap();
    }
    std::fs::write(dir.path().join("stop"), b"").unwrap();

    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "reader failed:\n{stdout}");
        let line = BufReader::new(stdout.as_bytes())
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.find("READER ").map(|at| l[at..].to_string()))
            .unwrap_or_else(|| panic!("no READER line in:\n{stdout}"));
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        assert!(field("lookups=") >= 100, "{line}");
        assert!(
            field("versions_seen=") >= 2,
            "the reader saw no flip: {line}"
        );
    }
    assert!(store.map_size() > first_map, "the map never grew");
    let kept: Vec<u64> = store
        .versions()
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(
        kept,
        [50, 49, 48],
        "gc keeps the 3 newest, live and previous among them"
    );
}

/// The reader side of `writer_flips_never_show_a_mix_to_a_reader_process`.
#[test]
#[ignore = "child process of writer_flips_never_show_a_mix_to_a_reader_process"]
fn reader_child() {
    let dir = std::env::var_os(DIR_VAR)
        .map(std::path::PathBuf::from)
        .expect("reader_child runs only as the child of writer_flips_never_show_a_mix_to_a_reader_process");
    // The smallest map: the writer's growth reaches this process as MDB_MAP_RESIZED.
    let mode = std::env::var(MODE_VAR).unwrap_or_default();
    let store = match mode.as_str() {
        "read" => Store::open_read_only_with_map_size(&dir.join("store"), 64 * 1024),
        _ => Store::open_with_map_size(&dir.join("store"), 64 * 1024),
    }
    .unwrap();
    let stop = dir.join("stop");
    let mut lookups = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    loop {
        let done = stop.exists();
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = x % ENTITIES;
            let got = store
                .with_value(&EntityKey::Int(id), |found| {
                    let (v, value) = found.ok_or_else(|| format!("entity {id} missing"))?;
                    let want = v as f32;
                    if value.kind() != ValueKind::Scores || value.count() != WIDTH {
                        return Err(format!("entity {id} in v{v}: wrong shape"));
                    }
                    if value.model_ref() as u64 != v || u64::from(value.timestamp()) != T0 + v {
                        return Err(format!(
                            "entity {id}: header of v{} read through live v{v}",
                            value.model_ref()
                        ));
                    }
                    if let Some(s) = value.scores().find(|&s| s != want) {
                        return Err(format!("entity {id}: score {s} read through live v{v}"));
                    }
                    Ok(v)
                })
                .unwrap_or_else(|e| Err(format!("lookup error: {e}")));
            let got = if lookups % 10 == 0 {
                got.and_then(|v| {
                    // The owned path too: pointer, record and value in one read.
                    let p = store
                        .get(&EntityKey::Int(id), None, T0)
                        .map_err(|e| format!("get error: {e}"))?
                        .ok_or_else(|| format!("entity {id} missing from get"))?;
                    let want = herd::store::Value::Scores(vec![p.version as f32; WIDTH]);
                    if p.value != want
                        || p.timestamp != T0 + p.version
                        || p.model_version != "job-model"
                    {
                        return Err(format!(
                            "entity {id}: get mixed v{} with other data",
                            p.version
                        ));
                    }
                    Ok(v.max(p.version))
                })
            } else {
                got
            };
            match got {
                Ok(v) => {
                    seen.insert(v);
                }
                Err(why) => panic!("after {lookups} good lookups: {why}"),
            }
            lookups += 1;
        }
        if lookups == 200 {
            std::fs::write(dir.join(format!("ready-{mode}")), b"").unwrap();
        }
        if done {
            break;
        }
    }
    println!("READER lookups={lookups} versions_seen={}", seen.len());
}
