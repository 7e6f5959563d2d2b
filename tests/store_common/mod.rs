//! Builders shared by the store tests.
#![allow(dead_code)]

use std::ops::Range;

use herd::model::{EntityIds, Predictions};
use herd::store::{NewVersion, Status, Store};

pub const T0: u64 = 1_764_388_800;

pub fn new_version(store: &Store, job: &str, rows: u64) -> u64 {
    store
        .begin_version(NewVersion {
            job: job.into(),
            model_version: format!("{job}-model"),
            model_kind: "two_tower".into(),
            rows,
            ttl_secs: 604_800,
            fingerprint: format!("{job}-fp"),
            created: T0,
            hosts: vec!["local".into()],
        })
        .unwrap()
}

/// Integer ids `rows` with `width` scores each, all equal to `marker`.
pub fn scores(rows: Range<u64>, width: usize, marker: f32) -> (EntityIds, Predictions) {
    let n = (rows.end - rows.start) as usize;
    (
        EntityIds::Int(rows.collect()),
        Predictions::Scores {
            width,
            values: vec![marker; n * width],
        },
    )
}

/// Integer ids `rows`, each with the top-K list `pairs`.
pub fn top_k(rows: Range<u64>, pairs: &[(u32, f32)]) -> (EntityIds, Predictions) {
    let n = (rows.end - rows.start) as usize;
    let mut offsets = vec![0u32];
    let mut items = Vec::new();
    let mut scores = Vec::new();
    for _ in 0..n {
        for &(i, s) in pairs {
            items.push(i);
            scores.push(s);
        }
        offsets.push(items.len() as u32);
    }
    (
        EntityIds::Int(rows.collect()),
        Predictions::TopK {
            offsets,
            items,
            scores,
        },
    )
}

/// Commits `chunk` rows at a time of `entities` rows whose `width` scores all
/// equal `marker`, then marks the version validated.
pub fn build_scores_version(
    store: &Store,
    job: &str,
    entities: u64,
    chunk: u64,
    width: usize,
    marker: f32,
) -> u64 {
    let v = new_version(store, job, entities);
    let mut start = 0;
    while start < entities {
        let end = (start + chunk).min(entities);
        let (ids, preds) = scores(start..end, width, marker);
        assert!(
            store
                .commit_chunk(v, start..end, &ids, &preds, T0 + v)
                .unwrap()
        );
        start = end;
    }
    store
        .update_record(v, |r| r.status = Status::Validated)
        .unwrap();
    v
}
