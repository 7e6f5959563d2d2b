//! Versions, chunk commits, flip, rollback, gc, TTL, map growth and handle
//! use of the prediction store.

mod store_common;

use herd::model::{EntityIds, EntityKey, Predictions};
use herd::store::{DEFAULT_GRACE_SECS, Error, Retention, Status, Store, Value};
use store_common::*;

#[test]
fn second_commit_of_an_overlapping_range_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = new_version(&store, "job", 300);
    let (ids, first) = scores(0..100, 2, 1.0);
    assert!(store.commit_chunk(v, 0..100, &ids, &first, T0).unwrap());

    // The same chunk again (a backup attempt finishing second) ...
    let (ids, late) = scores(0..100, 2, 9.0);
    assert!(!store.commit_chunk(v, 0..100, &ids, &late, T0).unwrap());
    // ... and a split piece overlapping it.
    let (ids, piece) = scores(50..150, 2, 9.0);
    assert!(!store.commit_chunk(v, 50..150, &ids, &piece, T0).unwrap());
    // An adjacent range is a different chunk.
    let (ids, next) = scores(100..200, 2, 2.0);
    assert!(store.commit_chunk(v, 100..200, &ids, &next, T0).unwrap());

    assert_eq!(store.committed_ranges(v).unwrap(), vec![0..100, 100..200]);
    assert_eq!(store.len(v).unwrap(), 200);
    assert_eq!(store.record(v).unwrap().committed_rows, 200);
    let p = store
        .get(&EntityKey::Int(60), Some(v), T0)
        .unwrap()
        .unwrap();
    assert_eq!(
        p.value,
        Value::Scores(vec![1.0, 1.0]),
        "the first finisher's values stay"
    );
}

#[test]
fn resume_finds_the_building_version_and_its_committed_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = new_version(&store, "nightly", 300);
    let (ids, preds) = scores(100..200, 1, 0.5);
    store.commit_chunk(v, 100..200, &ids, &preds, T0).unwrap();
    drop(store);

    let store = Store::open_existing(dir.path()).unwrap();
    let found = store
        .find_resumable("nightly", "nightly-fp")
        .unwrap()
        .unwrap();
    assert_eq!(found.version, v);
    assert_eq!(found.status, Status::Building);
    assert_eq!(store.committed_ranges(v).unwrap(), vec![100..200]);
    assert!(
        store
            .find_resumable("nightly", "other-fp")
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_resumable("other", "nightly-fp")
            .unwrap()
            .is_none()
    );
}

#[test]
fn flip_moves_readers_and_rollback_returns_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = EntityKey::Int(7);
    assert_eq!(
        store.get(&key, None, T0).unwrap(),
        None,
        "no live version yet"
    );

    let v1 = build_scores_version(&store, "job", 10, 10, 1, 1.0);
    let v2 = build_scores_version(&store, "job", 10, 10, 1, 2.0);
    store.flip(v1).unwrap();
    assert_eq!(
        store.get(&key, None, T0).unwrap().unwrap().value,
        Value::Scores(vec![1.0])
    );
    store.flip(v2).unwrap();
    assert_eq!(store.live().unwrap(), Some(v2));
    assert_eq!(store.record(v1).unwrap().status, Status::Retired);
    assert_eq!(store.record(v2).unwrap().status, Status::Live);
    let p = store.get(&key, None, T0).unwrap().unwrap();
    assert_eq!((p.version, p.value), (v2, Value::Scores(vec![2.0])));

    // Rollback to the retired version.
    store.flip(v1).unwrap();
    assert_eq!(store.live().unwrap(), Some(v1));
    assert_eq!(store.previous_live().unwrap(), Some(v2));
    assert_eq!(
        store.get(&key, None, T0).unwrap().unwrap().value,
        Value::Scores(vec![1.0])
    );
    // An explicit version still reads the other one.
    assert_eq!(
        store.get(&key, Some(v2), T0).unwrap().unwrap().value,
        Value::Scores(vec![2.0])
    );

    let versions: Vec<u64> = store
        .versions()
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, vec![v2, v1], "newest first");
}

#[test]
fn building_and_failed_versions_cannot_go_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = new_version(&store, "job", 10);
    let err = store.flip(v).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadStatus {
                status: Status::Building,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("v{v} is building")),
        "{err}"
    );
    store
        .update_record(v, |r| r.status = Status::Failed)
        .unwrap();
    assert!(store.flip(v).is_err());
    assert_eq!(store.live().unwrap(), None);
    let err = store.flip(99).unwrap_err();
    assert!(err.to_string().contains("no version 99"), "{err}");
    // A record update cannot make a version live behind flip's back.
    let err = store
        .update_record(v, |r| r.status = Status::Live)
        .unwrap_err();
    assert!(err.to_string().contains("use flip"), "{err}");
}

#[test]
fn chunks_go_only_to_building_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = build_scores_version(&store, "job", 10, 10, 1, 1.0);
    let (ids, preds) = scores(10..20, 1, 1.0);
    let err = store.commit_chunk(v, 10..20, &ids, &preds, T0).unwrap_err();
    assert!(
        err.to_string()
            .contains("only a building version takes chunks"),
        "{err}"
    );
}

#[test]
fn gc_never_drops_live_previous_live_or_building_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut vs = Vec::new();
    for i in 0..6 {
        vs.push(build_scores_version(&store, "job", 20, 10, 1, i as f32));
    }
    // v1 live then v2 live: v1 is previous-live; then roll back to v1 so v2
    // is previous: both old, both must survive.
    store.flip(vs[0]).unwrap();
    store.flip(vs[1]).unwrap();
    store.flip(vs[0]).unwrap();
    let building = new_version(&store, "job", 20);
    let failed = new_version(&store, "job", 20);
    store
        .update_record(failed, |r| r.status = Status::Failed)
        .unwrap();

    // Measured an hour after the versions were made: all within the grace.
    let gc = |keep| {
        store
            .gc_with(Retention {
                keep,
                grace_secs: DEFAULT_GRACE_SECS,
                now: T0 + 3600,
            })
            .unwrap()
    };
    let dropped = gc(1);
    assert_eq!(dropped, vec![vs[2], vs[3], vs[4], vs[5]]);
    let left: Vec<u64> = store
        .versions()
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(left, vec![failed, building, vs[1], vs[0]]);
    assert_eq!(
        store
            .get(&EntityKey::Int(3), None, T0)
            .unwrap()
            .unwrap()
            .version,
        vs[0]
    );
    assert_eq!(store.len(vs[1]).unwrap(), 20);
    for v in &dropped {
        assert!(matches!(store.len(*v), Err(Error::NoSuchVersion { .. })));
        assert!(store.get(&EntityKey::Int(3), Some(*v), T0).is_err());
    }
    // A second gc with keep = 0 drops the failed version and nothing it must keep.
    assert_eq!(gc(0), vec![failed]);
    assert_eq!(gc(0), Vec::<u64>::new());
    // Past the grace period, with no coordinator running, an abandoned
    // building version goes too; live and previous still stay.
    let later = Retention {
        keep: 0,
        grace_secs: DEFAULT_GRACE_SECS,
        now: T0 + DEFAULT_GRACE_SECS + 3600,
    };
    assert_eq!(store.gc_with(later).unwrap(), vec![building]);
    assert_eq!(store.live().unwrap(), Some(vs[0]));
    assert_eq!(store.len(vs[1]).unwrap(), 20);
}

#[test]
fn value_older_than_its_ttl_reads_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = store
        .begin_version(herd::store::NewVersion {
            job: "job".into(),
            model_version: "mv-1".into(),
            model_kind: "mlp".into(),
            rows: 1,
            ttl_secs: 100,
            fingerprint: "fp".into(),
            created: T0,
            hosts: vec![],
        })
        .unwrap();
    let (ids, preds) = scores(0..1, 1, 0.25);
    store.commit_chunk(v, 0..1, &ids, &preds, T0).unwrap();
    let key = EntityKey::Int(0);
    let fresh = store.get(&key, Some(v), T0 + 100).unwrap().unwrap();
    assert!(!fresh.stale);
    assert_eq!(
        (fresh.timestamp, fresh.ttl, fresh.model_version.as_str()),
        (T0, 100, "mv-1")
    );
    assert!(store.get(&key, Some(v), T0 + 101).unwrap().unwrap().stale);
}

#[test]
fn get_json_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = new_version(&store, "cands", 2);
    let (ids, preds) = top_k(41..43, &[(17, 3.21), (5, 1.5)]);
    store.commit_chunk(v, 0..2, &ids, &preds, T0).unwrap();
    let json = store
        .get(&EntityKey::Int(42), Some(v), T0)
        .unwrap()
        .unwrap()
        .to_json();
    assert_eq!(
        json,
        serde_json::json!({"id": "42", "version": v, "model_version": "cands-model",
            "timestamp": T0, "ttl": 604800, "stale": false,
            "top_k": [{"item": 17, "score": 3.21}, {"item": 5, "score": 1.5}]})
    );
    let v2 = new_version(&store, "churn", 1);
    let (ids, preds) = scores(42..43, 1, 0.83);
    store.commit_chunk(v2, 0..1, &ids, &preds, T0).unwrap();
    let json = store
        .get(&EntityKey::Int(42), Some(v2), T0)
        .unwrap()
        .unwrap()
        .to_json();
    assert_eq!(json["scores"], serde_json::json!([0.83]));
    assert!(json.get("top_k").is_none());
}

#[test]
fn string_ids_round_trip_and_unsorted_chunks_store_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = new_version(&store, "job", 3);
    let ids = EntityIds::Str(vec!["zed".into(), "amy".into(), "bob".into()]);
    let preds = Predictions::Scores {
        width: 1,
        values: vec![3.0, 1.0, 2.0],
    };
    assert!(store.commit_chunk(v, 0..3, &ids, &preds, T0).unwrap());
    for (id, want) in [("zed", 3.0), ("amy", 1.0), ("bob", 2.0)] {
        let p = store
            .get(&EntityKey::Str(id.into()), Some(v), T0)
            .unwrap()
            .unwrap();
        assert_eq!((p.id.as_str(), p.value), (id, Value::Scores(vec![want])));
    }
    let mut keys = Vec::new();
    store
        .for_each(v, |k, _| {
            keys.push(String::from_utf8(k.to_vec()).unwrap());
            true
        })
        .unwrap();
    assert_eq!(keys, ["amy", "bob", "zed"]);
}

#[test]
fn mismatched_chunk_is_refused_with_its_rows_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = new_version(&store, "job", 10);
    let (ids, preds) = scores(0..5, 1, 1.0);
    let err = store.commit_chunk(v, 0..6, &ids, &preds, T0).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("chunk rows 0..6") && msg.contains("5 ids"),
        "{msg}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(store.committed_ranges(v).unwrap().is_empty());
}

#[test]
fn open_existing_names_a_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Store::open_existing(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no store at {}: run a job that writes there first, or pass --store DIR",
            missing.display()
        )
    );
    assert!(!missing.exists(), "a failed open creates nothing");
}

#[test]
fn store_outgrows_a_tiny_map() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_map_size(dir.path(), 256 * 1024).unwrap();
    let start_size = store.map_size();
    let pairs: Vec<(u32, f32)> = (0..100).map(|i| (i, 100.0 - i as f32)).collect();
    let v = new_version(&store, "big", 20_000);
    for c in 0..20u64 {
        let (ids, preds) = top_k(c * 1000..(c + 1) * 1000, &pairs);
        assert!(
            store
                .commit_chunk(v, c * 1000..(c + 1) * 1000, &ids, &preds, T0)
                .unwrap()
        );
    }
    assert!(
        store.map_size() >= 16 * 1024 * 1024,
        "grew from {start_size} to {}",
        store.map_size()
    );
    assert_eq!(store.len(v).unwrap(), 20_000);
    let p = store
        .get(&EntityKey::Int(19_999), Some(v), T0)
        .unwrap()
        .unwrap();
    assert_eq!(p.value, Value::TopK(pairs));
}

#[test]
fn reads_keep_working_after_hundreds_of_versions_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path()).unwrap();
    // A second handle in the same process shares the environment.
    let reader = Store::open_existing(dir.path()).unwrap();
    let key = EntityKey::Int(3);
    for i in 0..600u32 {
        let v = build_scores_version(&writer, "job", 5, 5, 1, i as f32);
        writer.flip(v).unwrap();
        writer.gc(2).unwrap();
        let seen = reader
            .with_value(&key, |got| got.map(|(lv, val)| (lv, val.score(0))))
            .unwrap();
        assert_eq!(seen, Some((v, i as f32)), "after version {v}");
    }
    assert_eq!(writer.versions().unwrap().len(), 2);
}

#[test]
fn record_update_survives_map_growth() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_map_size(dir.path(), 64 * 1024).unwrap();
    let v = new_version(&store, "job", 1);
    let start = store.map_size();
    // A report large enough that writing it needs a bigger map.
    let big = "x".repeat(4 * start);
    store
        .update_record(v, |r| {
            r.hosts = vec![big.clone()];
            r.duration_s = Some(1.5);
        })
        .unwrap();
    assert!(store.map_size() > start);
    let rec = store.record(v).unwrap();
    assert_eq!((rec.hosts[0].len(), rec.duration_s), (big.len(), Some(1.5)));
}

#[test]
fn a_run_flips_only_if_the_live_version_is_still_the_one_it_checked_against() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = build_scores_version(&store, "job", 10, 10, 1, 1.0);
    store.flip(v1).unwrap();
    let v2 = build_scores_version(&store, "job", 10, 10, 1, 2.0);
    store.flip(v2).unwrap();
    let v3 = build_scores_version(&store, "job", 10, 10, 1, 3.0);
    // The run began with v2 live; an operator rolled back to v1 meanwhile.
    store.flip(v1).unwrap();
    let err = store.flip_from(Some(v2), v3).unwrap_err();
    assert!(matches!(err, Error::LiveMoved { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("it was v2, it is v1 now") && text.contains("herd store flip --to 3"),
        "{text}"
    );
    assert_eq!(store.live().unwrap(), Some(v1), "the rollback stands");
    assert_eq!(store.record(v3).unwrap().status, Status::Validated);
    store.flip_from(Some(v1), v3).unwrap();
    assert_eq!(store.live().unwrap(), Some(v3));
}

#[test]
fn an_empty_or_overlong_id_is_not_found_rather_than_an_lmdb_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = build_scores_version(&store, "job", 10, 10, 1, 1.0);
    store.flip(v).unwrap();
    for id in [String::new(), "x".repeat(600)] {
        let key = EntityKey::Str(id.clone());
        assert_eq!(
            store.get(&key, None, T0).unwrap(),
            None,
            "{} bytes",
            id.len()
        );
        assert_eq!(
            store.get(&key, Some(v), T0).unwrap(),
            None,
            "{} bytes",
            id.len()
        );
    }
}
