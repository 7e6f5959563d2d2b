//! First finisher wins, for any order of attempts: whatever ranges attempts
//! (originals, split pieces, backups) try to commit, an attempt is accepted
//! exactly when it overlaps no accepted one, and every row holds the value of
//! the accepted attempt that covers it.

mod store_common;

use herd::model::EntityKey;
use herd::store::{Store, Value};
use proptest::prelude::*;
use store_common::*;

const ROWS: u64 = 64;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_row_is_committed_once_by_the_first_finisher(
        attempts in prop::collection::vec((0..ROWS, 1..24u64), 1..16)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v = new_version(&store, "prop", ROWS);
        let mut owner: Vec<Option<usize>> = vec![None; ROWS as usize];
        for (n, &(start, len)) in attempts.iter().enumerate() {
            let end = (start + len).min(ROWS);
            let free = (start..end).all(|r| owner[r as usize].is_none());
            let (ids, preds) = scores(start..end, 1, n as f32);
            let accepted = store.commit_chunk(v, start..end, &ids, &preds, T0).unwrap();
            prop_assert_eq!(accepted, free, "attempt {} on rows {}..{}", n, start, end);
            if accepted {
                for r in start..end {
                    owner[r as usize] = Some(n);
                }
            }
        }
        let committed: u64 = store.committed_ranges(v).unwrap().iter().map(|r| r.end - r.start).sum();
        prop_assert_eq!(committed, owner.iter().filter(|o| o.is_some()).count() as u64);
        prop_assert_eq!(store.len(v).unwrap(), committed);
        for (r, o) in owner.iter().enumerate() {
            let got = store.get(&EntityKey::Int(r as u64), Some(v), T0).unwrap().map(|p| p.value);
            prop_assert_eq!(got, o.map(|n| Value::Scores(vec![n as f32])), "row {}", r);
        }
    }
}
