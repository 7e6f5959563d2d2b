//! Chunk commits: a chunk's predictions, encoded in key order into buffers
//! kept between commits, and its commit marker go into ONE write
//! transaction, refused when a committed range overlaps (the first finisher
//! wins). Several chunks may share a transaction ([`Store::commit_chunks`]),
//! each still with its own marker beside its rows.

use std::ops::Range;

use super::keys::{chunk_key, chunk_prefix, parse_chunk_key};
use super::lmdb::{Dbi, Txn};
use super::value::ValueKind;
use super::{Error, IdKind, MAX_SCRATCH_BYTES, Result, Status, Store, value};
use crate::model::{EntityIds, PredictionRow, Predictions};

/// The entity keys and encoded values of one chunk, sorted by key, one entry
/// per distinct key (the last row of a repeated id wins). Entry `e`'s key is
/// `keys[key_spans[e]]` and its value `values[spans[e]]`: four buffers per
/// chunk, none per entity.
#[derive(Default)]
pub(super) struct EncodedChunk {
    keys: Vec<u8>,
    key_spans: Vec<Range<usize>>,
    values: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl EncodedChunk {
    fn clear(&mut self) {
        self.keys.clear();
        self.key_spans.clear();
        self.values.clear();
        self.spans.clear();
    }

    fn bytes(&self) -> usize {
        self.keys.capacity() + self.values.capacity()
    }

    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.key_spans
            .iter()
            .zip(&self.spans)
            .map(|(k, v)| (&self.keys[k.clone()], &self.values[v.clone()]))
    }
}

/// Rows of `ids` in entity-key byte order, one per distinct key: the last row
/// of a repeated id wins. `None` when that is the rows' own order (their
/// keys strictly ascend, as in most inputs): no order is built and sorted
/// only to be found the same.
fn key_order(ids: &EntityIds) -> Option<Vec<usize>> {
    let ascend = match ids {
        EntityIds::Int(v) => v.windows(2).all(|w| w[0] < w[1]),
        EntityIds::Str(v) => v.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()),
    };
    if ascend {
        return None;
    }
    let mut order: Vec<usize> = (0..ids.len()).collect();
    match ids {
        // Big-endian keys sort like the numbers.
        EntityIds::Int(v) => {
            order.sort_unstable_by(|&a, &b| v[a].cmp(&v[b]).then(b.cmp(&a)));
            order.dedup_by(|later, earlier| v[*later] == v[*earlier]);
        }
        EntityIds::Str(v) => {
            order.sort_unstable_by(|&a, &b| v[a].as_bytes().cmp(v[b].as_bytes()).then(b.cmp(&a)));
            order.dedup_by(|later, earlier| v[*later] == v[*earlier]);
        }
    }
    Some(order)
}

impl Store {
    /// Refuses a chunk whose rows, ids and predictions do not line up
    /// (`left_out` rows of the range carry no prediction on purpose).
    fn check_chunk(
        &self,
        version: u64,
        what: &str,
        rows: &Range<u64>,
        left_out: u64,
        ids: &EntityIds,
        preds: &Predictions,
    ) -> Result<()> {
        let n = ids.len();
        if rows.is_empty() {
            return Err(self.invalid(version, format!("{what}: empty row range")));
        }
        if (rows.end - rows.start) != n as u64 + left_out || preds.len() != n {
            return Err(self.invalid(
                version,
                format!(
                    "{what}: {} rows ({left_out} left out), but {n} ids and {} predictions",
                    rows.end - rows.start,
                    preds.len()
                ),
            ));
        }
        match preds {
            Predictions::Scores { width, values } => {
                if values.len() != width * n {
                    return Err(self.invalid(
                        version,
                        format!(
                            "{what}: {} scores for {n} rows of width {width}",
                            values.len()
                        ),
                    ));
                }
            }
            Predictions::TopK {
                offsets,
                items,
                scores,
            } => {
                let ok = offsets.len() == n + 1
                    && offsets.windows(2).all(|w| w[0] <= w[1])
                    && items.len() == scores.len()
                    && offsets[n] as usize == items.len();
                if !ok {
                    return Err(self.invalid(
                        version,
                        format!(
                            "{what}: top-K offsets ({} for {n} rows) do not match {} items and {} scores",
                            offsets.len(),
                            items.len(),
                            scores.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_chunk(
        &self,
        version: u64,
        rows: &Range<u64>,
        left_out: u64,
        ids: &EntityIds,
        preds: &Predictions,
        timestamp: u64,
        out: &mut EncodedChunk,
    ) -> Result<()> {
        out.clear();
        let what = format!("chunk rows {}..{}", rows.start, rows.end);
        self.check_chunk(version, &what, rows, left_out, ids, preds)?;
        let timestamp = u32::try_from(timestamp).map_err(|_| {
            self.invalid(
                version,
                format!("timestamp {timestamp} does not fit the value header (u32)"),
            )
        })?;
        let model_ref = u32::try_from(version).map_err(|_| {
            self.invalid(
                version,
                "version number does not fit the value header (u32)".into(),
            )
        })?;
        let max_key = self.inner.env.max_key_size();
        let sorted = key_order(ids);
        let order = sorted.as_deref();
        let entries = order.map_or(ids.len(), <[usize]>::len);
        let kind = match preds {
            Predictions::Scores { .. } => ValueKind::Scores,
            Predictions::TopK { .. } => ValueKind::TopK,
        };
        let payload = match preds {
            Predictions::Scores { values, .. } => 4 * values.len(),
            Predictions::TopK { items, .. } => 8 * items.len(),
        };
        out.values.reserve(entries * value::HEADER_LEN + payload);
        out.key_spans.reserve(entries);
        out.spans.reserve(entries);
        for e in 0..entries {
            let i = order.map_or(e, |o| o[e]);
            let key_start = out.keys.len();
            match ids {
                EntityIds::Int(v) => out.keys.extend_from_slice(&v[i].to_be_bytes()),
                EntityIds::Str(v) => out.keys.extend_from_slice(v[i].as_bytes()),
            }
            let key_len = out.keys.len() - key_start;
            if key_len > max_key || key_len == 0 {
                return Err(self.invalid(
                    version,
                    format!(
                        "{what}: entity id '{}' is {key_len} bytes; ids must be 1..={max_key} bytes",
                        ids.key(i),
                    ),
                ));
            }
            let row = preds.row(i);
            let count = row.len();
            if count > value::MAX_COUNT {
                return Err(self.invalid(
                    version,
                    format!(
                        "{what}: entity '{}' has {count} scores; a value holds at most {}",
                        ids.key(i),
                        value::MAX_COUNT
                    ),
                ));
            }
            let start = out.values.len();
            value::write_header(
                &mut out.values,
                value::Header {
                    kind,
                    count: count as u16,
                    model_ref,
                    timestamp,
                    ttl: 0,
                },
            );
            match row {
                PredictionRow::Scores(scores) => {
                    for s in scores {
                        out.values.extend_from_slice(&s.to_le_bytes());
                    }
                }
                PredictionRow::TopK { items, scores } => {
                    for (item, score) in items.iter().zip(scores) {
                        out.values.extend_from_slice(&item.to_le_bytes());
                        out.values.extend_from_slice(&score.to_le_bytes());
                    }
                }
            }
            out.key_spans.push(key_start..out.keys.len());
            out.spans.push(start..out.values.len());
        }
        Ok(())
    }

    /// Writes the predictions of rows `rows` and their commit marker in ONE
    /// write transaction. Returns `false` and writes nothing when a committed
    /// chunk overlaps `rows` (the first finisher wins). Only `Building`
    /// versions take chunks.
    pub fn commit_chunk(
        &self,
        version: u64,
        rows: Range<u64>,
        ids: &EntityIds,
        preds: &Predictions,
        timestamp: u64,
    ) -> Result<bool> {
        self.commit_chunk_leaving_out(version, rows, 0, ids, preds, timestamp)
    }

    /// [`Store::commit_chunk`] for a range of which `left_out` rows have no
    /// prediction on purpose (`[input] on_invalid = "skip"`): `ids` and
    /// `preds` hold the other rows.
    pub fn commit_chunk_leaving_out(
        &self,
        version: u64,
        rows: Range<u64>,
        left_out: u64,
        ids: &EntityIds,
        preds: &Predictions,
        timestamp: u64,
    ) -> Result<bool> {
        let chunk = ChunkCommit {
            rows,
            left_out,
            ids,
            preds,
        };
        Ok(self.commit_chunks(version, &[chunk], timestamp)?[0])
    }

    /// Several chunks in ONE write transaction, each with its own marker and
    /// each refused alone (`false`, nothing of it written) when a committed
    /// range overlaps it; one commit (a sync to disk) for all of them. A
    /// chunk that fails its checks fails the call, and nothing is written.
    pub fn commit_chunks(
        &self,
        version: u64,
        chunks: &[ChunkCommit<'_>],
        timestamp: u64,
    ) -> Result<Vec<bool>> {
        // The encode buffers of earlier commits, reused so that a commit
        // does not allocate (and fault in) a chunk's worth of fresh memory.
        let mut pool =
            std::mem::take(&mut *self.inner.scratch.lock().unwrap_or_else(|p| p.into_inner()));
        let mut encoded = Vec::with_capacity(chunks.len());
        let mut outcome = Ok(Vec::new());
        for c in chunks {
            let mut buffers = pool.pop().unwrap_or_default();
            let r = self.encode_chunk(
                version,
                &c.rows,
                c.left_out,
                c.ids,
                c.preds,
                timestamp,
                &mut buffers,
            );
            encoded.push(buffers);
            if let Err(e) = r {
                outcome = Err(e);
                break;
            }
        }
        if outcome.is_ok() {
            outcome = self.write_chunks(version, chunks, &mut encoded);
        }
        let mut kept = 0;
        encoded.retain(|e| {
            kept += e.bytes();
            kept <= MAX_SCRATCH_BYTES
        });
        *self.inner.scratch.lock().unwrap_or_else(|p| p.into_inner()) = encoded;
        outcome
    }

    fn write_chunks(
        &self,
        version: u64,
        chunks: &[ChunkCommit<'_>],
        encoded: &mut [EncodedChunk],
    ) -> Result<Vec<bool>> {
        let (first, last) = (&chunks[0].rows, &chunks[chunks.len() - 1].rows);
        let what = match chunks.len() {
            1 => format!(
                "commit chunk rows {}..{} of v{version}",
                first.start, first.end
            ),
            n => format!(
                "commit {n} chunks, rows {}..{} to {}..{}, of v{version}",
                first.start, first.end, last.start, last.end
            ),
        };
        let mut ttl_set = false;
        self.write_version(&what, version, false, |txn, db| {
            let mut rec = self.must_record(txn, version)?;
            if rec.status != Status::Building {
                return Err(Error::BadStatus {
                    path: self.inner.dir.clone(),
                    version,
                    status: rec.status,
                    what: format!("only a building version takes chunks ({what})"),
                });
            }
            if !ttl_set {
                let ttl = (rec.ttl_secs as u32).to_le_bytes();
                for chunk in encoded.iter_mut() {
                    for span in &chunk.spans {
                        chunk.values[span.start + 12..span.start + 16].copy_from_slice(&ttl);
                    }
                }
                ttl_set = true;
            }
            let mut written = Vec::with_capacity(chunks.len());
            for (c, chunk) in chunks.iter().zip(encoded.iter()) {
                let fresh = self.write_chunk(txn, db, &what, version, &c.rows, chunk)?;
                if fresh {
                    rec.committed_rows += c.rows.end - c.rows.start;
                    rec.id_kind.get_or_insert(IdKind::of(c.ids));
                }
                written.push(fresh);
            }
            self.put_record(txn, &rec)?;
            Ok(written)
        })
    }

    /// One chunk's entries and marker into `txn`; `false` (nothing written)
    /// when a committed range overlaps `rows`.
    fn write_chunk(
        &self,
        txn: &mut Txn<'_>,
        db: Dbi,
        what: &str,
        version: u64,
        rows: &Range<u64>,
        chunk: &EncodedChunk,
    ) -> Result<bool> {
        // Markers never overlap one another, so sorted by start they are
        // sorted by end too: only the last one starting before `rows.end`
        // can overlap `rows`.
        let prefix = chunk_prefix(version);
        let bound = format!("{prefix}{:016x}", rows.end);
        let before = txn
            .last_before(self.inner.meta, bound.as_bytes())
            .map_err(|e| self.lmdb(what, e))?;
        if let Some((key, _)) = before
            && let Some(r) = parse_chunk_key(key, &prefix)
            && r.end > rows.start
        {
            return Ok(false);
        }
        let last = txn
            .last(db)
            .map_err(|e| self.lmdb(what, e))?
            .map(|(k, _)| k.to_vec());
        let append = match (&last, chunk.entries().next()) {
            (Some(last), Some((first, _))) => first > last.as_slice(),
            _ => true,
        };
        txn.put_all(db, chunk.entries(), append)
            .map_err(|e| self.lmdb(what, e))?;
        txn.put(self.inner.meta, &chunk_key(version, rows), &[], false)
            .map_err(|e| self.lmdb(what, e))?;
        Ok(true)
    }
}

/// One chunk of [`Store::commit_chunks`]: rows `rows` of the input, of which
/// `left_out` carry no prediction on purpose; `ids` and `preds` hold the
/// others.
pub struct ChunkCommit<'a> {
    pub rows: Range<u64>,
    pub left_out: u64,
    pub ids: &'a EntityIds,
    pub preds: &'a Predictions,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::EntityKey;
    use crate::store::{NewVersion, Value};

    /// A version begun for `rows` rows.
    pub(in crate::store) fn new_version(store: &Store, rows: u64) -> u64 {
        store
            .begin_version(NewVersion {
                job: "j".into(),
                model_version: "m".into(),
                model_kind: "mlp".into(),
                rows,
                ttl_secs: 60,
                fingerprint: "f".into(),
                created: 0,
                hosts: Vec::new(),
            })
            .unwrap()
    }

    fn scores_of(store: &Store, v: u64, key: EntityKey) -> Vec<f32> {
        match store.get(&key, Some(v), 0).unwrap().map(|p| p.value) {
            Some(Value::Scores(s)) => s,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn key_order_sorts_by_key_bytes_and_keeps_the_last_row_of_a_repeated_id() {
        let order = |ids| key_order(&ids).expect("out of order");
        assert_eq!(order(EntityIds::Int(vec![5, 3, 5, 1, 3])), [3, 4, 2]);
        let names = ["bob", "amy", "bob", "al"].map(String::from).to_vec();
        assert_eq!(order(EntityIds::Str(names)), [3, 1, 2]);
        // Big-endian bytes: 256 sorts after 1 although its first byte is 0.
        assert_eq!(order(EntityIds::Int(vec![256, 1])), [1, 0]);
        // Keys that strictly ascend are their own order; a repeat is not.
        assert_eq!(key_order(&EntityIds::Int(vec![1, 256, 257])), None);
        let names = ["al", "amy", "bob"].map(String::from).to_vec();
        assert_eq!(key_order(&EntityIds::Str(names)), None);
        assert_eq!(key_order(&EntityIds::Int(vec![1, 2, 2])), Some(vec![0, 2]));
    }

    #[test]
    fn a_repeated_id_in_a_chunk_stores_its_last_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v = new_version(&store, 4);
        let preds = Predictions::Scores {
            width: 1,
            values: vec![1.0, 2.0, 3.0, 4.0],
        };
        let ids = EntityIds::Int(vec![9, 7, 9, 8]);
        assert!(store.commit_chunk(v, 0..4, &ids, &preds, 1).unwrap());
        assert_eq!(store.len(v).unwrap(), 3);
        assert_eq!(scores_of(&store, v, EntityKey::Int(9)), [3.0]);
        assert_eq!(scores_of(&store, v, EntityKey::Int(7)), [2.0]);
    }

    #[test]
    fn reused_encode_buffers_carry_nothing_into_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v = new_version(&store, 13);
        let wide = Predictions::Scores {
            width: 3,
            values: (0..30).map(|x| x as f32).collect(),
        };
        let ids = EntityIds::Int((0..10).collect());
        assert!(store.commit_chunk(v, 0..10, &ids, &wide, 1).unwrap());
        // A smaller chunk of another width, in reverse key order, next.
        let narrow = Predictions::Scores {
            width: 1,
            values: vec![-1.0, -2.0, -3.0],
        };
        let ids = EntityIds::Int(vec![102, 101, 100]);
        assert!(store.commit_chunk(v, 10..13, &ids, &narrow, 1).unwrap());
        assert_eq!(store.len(v).unwrap(), 13);
        assert_eq!(scores_of(&store, v, EntityKey::Int(100)), [-3.0]);
        assert_eq!(scores_of(&store, v, EntityKey::Int(102)), [-1.0]);
        assert_eq!(scores_of(&store, v, EntityKey::Int(9)), [27.0, 28.0, 29.0]);
        assert_eq!(store.committed_ranges(v).unwrap(), [0..10, 10..13]);
    }

    /// Ids `ids` of rows `rows`, each scored `id + marker`.
    fn chunk_of(store: &Store, v: u64, rows: Range<u64>, ids: &[u64], marker: f32) -> bool {
        let preds = Predictions::Scores {
            width: 1,
            values: ids.iter().map(|&i| i as f32 + marker).collect(),
        };
        let ids = EntityIds::Int(ids.to_vec());
        store.commit_chunk(v, rows, &ids, &preds, 1).unwrap()
    }

    #[test]
    fn chunks_above_below_and_among_the_stored_keys_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v = new_version(&store, 40);
        // Above everything stored (appended), below it, among it (ordinary
        // puts), then above again, in a store whose keys are 8-byte
        // big-endian: 256 sorts after 255 although its last byte is 0.
        let above: Vec<u64> = (200..210).collect();
        let below: Vec<u64> = (0..10).rev().collect();
        let among: Vec<u64> = vec![150, 5_000, 100, 199, 210, 11];
        let last: Vec<u64> = (250..264).collect();
        assert!(chunk_of(&store, v, 0..10, &above, 0.5));
        assert!(chunk_of(&store, v, 10..20, &below, 0.25));
        assert!(chunk_of(&store, v, 20..26, &among, 0.75));
        assert!(chunk_of(&store, v, 26..40, &last, 0.125));
        assert_eq!(store.len(v).unwrap(), 40);
        for (ids, marker) in [
            (&above, 0.5),
            (&below, 0.25),
            (&among, 0.75),
            (&last, 0.125),
        ] {
            for &i in ids {
                assert_eq!(scores_of(&store, v, EntityKey::Int(i)), [i as f32 + marker]);
            }
        }
    }

    #[test]
    fn a_reopened_store_goes_on_appending_to_a_partial_version() {
        let dir = tempfile::tempdir().unwrap();
        let v = {
            let store = Store::open(dir.path()).unwrap();
            let v = new_version(&store, 30);
            assert!(chunk_of(
                &store,
                v,
                0..10,
                &(0..10).collect::<Vec<_>>(),
                1.0
            ));
            assert!(chunk_of(
                &store,
                v,
                20..30,
                &(20..30).collect::<Vec<_>>(),
                3.0
            ));
            v
        };
        // As `--resume` does: a new process opens the store and commits the
        // rows left, here keys both between (10..20) and after what is stored.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.committed_ranges(v).unwrap(), [0..10, 20..30]);
        assert!(chunk_of(
            &store,
            v,
            10..20,
            &(10..20).collect::<Vec<_>>(),
            2.0
        ));
        assert!(!chunk_of(
            &store,
            v,
            25..35,
            &(25..35).collect::<Vec<_>>(),
            9.0
        ));
        assert_eq!(store.len(v).unwrap(), 30);
        for i in 0..30u64 {
            let marker = 1.0 + (i / 10) as f32;
            assert_eq!(scores_of(&store, v, EntityKey::Int(i)), [i as f32 + marker]);
        }
    }

    #[test]
    fn chunks_sharing_a_transaction_keep_their_own_markers_and_overlaps_are_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v = new_version(&store, 9);
        let scores = |xs: &[f32]| Predictions::Scores {
            width: 1,
            values: xs.to_vec(),
        };
        let ids = EntityIds::Int(vec![1, 2, 3]);
        assert!(
            store
                .commit_chunk(v, 3..6, &ids, &scores(&[1.0, 2.0, 3.0]), 1)
                .unwrap()
        );
        let (a, b, c) = (
            EntityIds::Int(vec![10, 11, 12]),
            EntityIds::Int(vec![20, 21, 22]),
            EntityIds::Int(vec![30, 31, 32]),
        );
        let (pa, pb, pc) = (
            scores(&[4.0, 5.0, 6.0]),
            scores(&[7.0, 8.0, 9.0]),
            scores(&[0.5, 0.25, 0.125]),
        );
        let chunk = |rows, ids, preds| ChunkCommit {
            rows,
            left_out: 0,
            ids,
            preds,
        };
        let written = store
            .commit_chunks(
                v,
                &[
                    chunk(0..3, &a, &pa),
                    chunk(4..7, &b, &pb),
                    chunk(6..9, &c, &pc),
                ],
                2,
            )
            .unwrap();
        // 4..7 overlaps the committed 3..6: refused, the others written.
        assert_eq!(written, [true, false, true]);
        assert_eq!(store.committed_ranges(v).unwrap(), [0..3, 3..6, 6..9]);
        assert_eq!(store.len(v).unwrap(), 9);
        assert_eq!(scores_of(&store, v, EntityKey::Int(11)), [5.0]);
        assert_eq!(scores_of(&store, v, EntityKey::Int(32)), [0.125]);
        assert!(
            store
                .get(&EntityKey::Int(20), Some(v), 0)
                .unwrap()
                .is_none()
        );
        // A chunk that fails its checks fails the call: nothing is written.
        let short = scores(&[1.0]);
        let d = EntityIds::Int(vec![40, 41]);
        let e = EntityIds::Int(vec![50]);
        let pe = scores(&[2.0]);
        let refused =
            store.commit_chunks(v, &[chunk(9..10, &e, &pe), chunk(10..12, &d, &short)], 3);
        assert!(refused.is_err());
        assert_eq!(store.committed_ranges(v).unwrap(), [0..3, 3..6, 6..9]);
    }
}
