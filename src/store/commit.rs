//! Chunk commits: a chunk's predictions, encoded in key order into buffers
//! kept between commits, and its commit marker go into ONE write
//! transaction, refused when a committed range overlaps (the first finisher
//! wins).

use std::ops::Range;

use heed::PutFlags;
use heed::types::DecodeIgnore;

use super::keys::{chunk_key, chunk_prefix, parse_chunk_key};
use super::value::ValueKind;
use super::{Error, MAX_SCRATCH_BYTES, Result, Status, Store, value};
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
/// of a repeated id wins.
fn key_order(ids: &EntityIds) -> Vec<usize> {
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
    order
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
        let order = key_order(ids);
        let kind = match preds {
            Predictions::Scores { .. } => ValueKind::Scores,
            Predictions::TopK { .. } => ValueKind::TopK,
        };
        let payload = match preds {
            Predictions::Scores { values, .. } => 4 * values.len(),
            Predictions::TopK { items, .. } => 8 * items.len(),
        };
        out.values
            .reserve(order.len() * value::HEADER_LEN + payload);
        out.key_spans.reserve(order.len());
        out.spans.reserve(order.len());
        for i in order {
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
        // The encode buffers of the previous commit, reused so that a commit
        // does not allocate (and fault in) a chunk's worth of fresh memory.
        let mut chunk = self
            .inner
            .scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let outcome =
            self.commit_encoded(version, rows, left_out, ids, preds, timestamp, &mut chunk);
        if chunk.bytes() <= MAX_SCRATCH_BYTES {
            *self.inner.scratch.lock().unwrap_or_else(|p| p.into_inner()) = Some(chunk);
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_encoded(
        &self,
        version: u64,
        rows: Range<u64>,
        left_out: u64,
        ids: &EntityIds,
        preds: &Predictions,
        timestamp: u64,
        chunk: &mut EncodedChunk,
    ) -> Result<bool> {
        self.encode_chunk(version, &rows, left_out, ids, preds, timestamp, chunk)?;
        let what = format!(
            "commit chunk rows {}..{} of v{version}",
            rows.start, rows.end
        );
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
                for span in &chunk.spans {
                    chunk.values[span.start + 12..span.start + 16].copy_from_slice(&ttl);
                }
                ttl_set = true;
            }
            // Markers never overlap one another, so sorted by start they are
            // sorted by end too: only the last one starting before `rows.end`
            // can overlap `rows`.
            let prefix = chunk_prefix(version);
            let bound = format!("{prefix}{:016x}", rows.end);
            let before = self
                .inner
                .meta
                .remap_data_type::<DecodeIgnore>()
                .get_lower_than(txn, bound.as_bytes())
                .map_err(|e| self.lmdb(&what, e))?;
            if let Some((key, ())) = before
                && let Some(r) = parse_chunk_key(key, &prefix)
                && r.end > rows.start
            {
                return Ok(false);
            }
            let last = db
                .remap_data_type::<DecodeIgnore>()
                .last(txn)
                .map_err(|e| self.lmdb(&what, e))?
                .map(|(k, ())| k.to_vec());
            let append = match (&last, chunk.entries().next()) {
                (Some(last), Some((first, _))) => first > last.as_slice(),
                _ => true,
            };
            let flags = if append {
                PutFlags::APPEND
            } else {
                PutFlags::empty()
            };
            for (key, value) in chunk.entries() {
                db.put_with_flags(txn, flags, key, value)
                    .map_err(|e| self.lmdb(&what, e))?;
            }
            self.inner
                .meta
                .put(txn, &chunk_key(version, &rows), &[])
                .map_err(|e| self.lmdb(&what, e))?;
            rec.committed_rows += rows.end - rows.start;
            self.put_record(txn, &rec)?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityKey;
    use crate::store::{NewVersion, Value};

    fn new_version(store: &Store, rows: u64) -> u64 {
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
        assert_eq!(key_order(&EntityIds::Int(vec![5, 3, 5, 1, 3])), [3, 4, 2]);
        let names = ["bob", "amy", "bob", "al"].map(String::from).to_vec();
        assert_eq!(key_order(&EntityIds::Str(names)), [3, 1, 2]);
        // Big-endian bytes: 256 sorts after 1 although its first byte is 0.
        assert_eq!(key_order(&EntityIds::Int(vec![256, 1])), [1, 0]);
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
}
