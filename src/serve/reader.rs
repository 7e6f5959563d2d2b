//! Keys to answers: the key shapes `herd serve` understands, and lookups of
//! many keys in one read transaction.
//!
//! Key shapes (RESP keys; an HTTP id is always a literal entity id, its
//! version given apart):
//! - `ID`: the live version's prediction for entity `ID`;
//! - `vN:ID`: version `N`'s prediction;
//! - `{prefix}:live`: the live version number, as a Redis sink's pointer;
//! - `{prefix}:vN:ID`: version `N`'s prediction, as a Redis sink's key;
//! - `{prefix}:ID`: the live version's prediction, for clients that put a
//!   namespace before their keys (redis-benchmark's `key:NNN`).
//!
//! So over RESP a string id that itself looks like `vN:...` or
//! `{prefix}:...` is shadowed by these shapes: such an id is read over HTTP
//! (or under another `--prefix`).
//! An `ID` of decimal digits is looked up as an integer id first, then as a
//! string id (as `herd store get` does).

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::store::json::{self, IdRef};
use crate::store::{self, Snapshot, Store, ValueRef};

use super::held::{self, Held, Unheld};
use super::{MAX_VALUE_BYTES, now_secs};

/// A parsed key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// The live pointer (`{prefix}:live`).
    Live,
    /// An entity's prediction, of a version or of the live one.
    Entity { version: Option<u64>, id: &'a [u8] },
}

/// `vN:rest` -> (N, rest).
fn versioned(key: &[u8]) -> Option<(u64, &[u8])> {
    let rest = key.strip_prefix(b"v")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let digits = &rest[..colon];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, &rest[colon + 1..]))
}

/// Reads a key in the shapes above; `prefix` is the Redis sink's prefix.
pub fn parse_key<'a>(key: &'a [u8], prefix: &[u8]) -> Key<'a> {
    if !prefix.is_empty()
        && let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix(b":"))
    {
        if rest == b"live" {
            return Key::Live;
        }
        return match versioned(rest) {
            Some((version, id)) => Key::Entity {
                version: Some(version),
                id,
            },
            None => Key::Entity {
                version: None,
                id: rest,
            },
        };
    }
    match versioned(key) {
        Some((version, id)) => Key::Entity {
            version: Some(version),
            id,
        },
        None => Key::Entity {
            version: None,
            id: key,
        },
    }
}

/// The longest key LMDB takes (its default `MDB_MAXKEYSIZE`): a longer id
/// cannot be stored, so it is missing.
const MAX_ID_BYTES: usize = 511;

/// An id of decimal digits that fits a u64.
fn int_id(id: &[u8]) -> Option<u64> {
    if id.is_empty() || id.len() > 20 || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(id).ok()?.parse().ok()
}

/// Why a request could not be answered at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("the values asked for exceed {} MiB; ask for fewer keys", MAX_VALUE_BYTES >> 20)]
    TooLarge,
    /// A request named a version the store does not hold.
    #[error("no version {0} in the store")]
    NoVersion(u64),
}

/// The answer for one key.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// No prediction: no live version, or no such entity in the version.
    Missing,
    /// The key names a version the store does not hold.
    NoVersion,
    /// The live pointer (`None`: nothing is live).
    Live(Option<u64>),
    Hit(Hit),
}

/// A prediction found, its bytes copied out of the read transaction.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub version: u64,
    int_id: Option<u64>,
    /// The id's bytes (string ids) in the batch's buffer.
    id: Range<usize>,
    /// The stored value's bytes in the batch's buffer.
    value: Range<usize>,
    /// The model version as a JSON string literal.
    model: Arc<str>,
}

/// A connection keeps a batch buffer of at most this capacity between
/// requests.
const KEEP_BATCH_BYTES: usize = 16 << 10;

/// The answers of one request, read in one transaction.
#[derive(Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    pub answers: Vec<Answer>,
    /// The version read as live, when a key needed it.
    pub live: Option<u64>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.answers.clear();
        self.live = None;
    }

    /// Frees the buffers when a large request left them big.
    pub fn shrink(&mut self) {
        if self.bytes.capacity() > KEEP_BATCH_BYTES {
            self.bytes = Vec::new();
        }
        if self.answers.capacity() > 64 {
            self.answers = Vec::new();
        }
    }

    fn value(&self, hit: &Hit) -> ValueRef<'_> {
        ValueRef::parse(&self.bytes[hit.value.clone()])
            .expect("checked when it was read from the store")
    }

    /// Appends answer `i`'s prediction JSON; `false` (nothing written) when
    /// it is not a prediction.
    pub fn write_json(&self, i: usize, now: u64, out: &mut Vec<u8>) -> bool {
        let Some(Answer::Hit(hit)) = self.answers.get(i) else {
            return false;
        };
        let id = match hit.int_id {
            Some(n) => IdRef::Int(n),
            None => IdRef::Str(&self.bytes[hit.id.clone()]),
        };
        json::write_prediction(
            out,
            json::Fields {
                id,
                version: hit.version,
                model_version_json: &hit.model,
                now,
            },
            self.value(hit),
        );
        true
    }

    /// Seconds until answer `i` goes stale (0 when it is stale already).
    pub fn ttl_left(&self, i: usize, now: u64) -> Option<u64> {
        let Some(Answer::Hit(hit)) = self.answers.get(i) else {
            return None;
        };
        let v = self.value(hit);
        let until = u64::from(v.timestamp()).saturating_add(u64::from(v.ttl()));
        Some(until.saturating_sub(now))
    }
}

/// The most model names kept (one per version; cleared when full).
const MODEL_CACHE: usize = 1024;

/// How often [`super::watch_store`] looks whether the store's path names another
/// `data.mdb` than the one open.
pub(crate) const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Opens the store when it exists and answers keys from it.
pub(crate) struct Reader {
    dir: PathBuf,
    prefix: Vec<u8>,
    /// The store open now; `None` until it exists, and again once its
    /// `data.mdb` is gone from the path.
    store: RwLock<Option<Store>>,
    /// JSON string literals of model versions, by the version whose record
    /// names them. Version numbers are never reused within a store, so
    /// entries stay true until the store is replaced (then it is cleared).
    models: RwLock<HashMap<u32, Arc<str>>>,
    /// The live version's replies, rendered (`--preload`).
    held: RwLock<Option<Held>>,
    /// The version last found not to be holdable, so it is tried (and
    /// logged) once.
    unheld: Mutex<Option<(Option<store::FileId>, u64)>>,
}

impl Reader {
    pub fn new(dir: PathBuf, prefix: Vec<u8>) -> Reader {
        Reader {
            dir,
            prefix,
            store: RwLock::new(None),
            models: RwLock::new(HashMap::new()),
            held: RwLock::new(None),
            unheld: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The store, opened on first use; "no store at DIR" until it exists.
    pub fn store(&self) -> Result<Store, store::Error> {
        if let Some(s) = self
            .store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(s.clone());
        }
        let opened = Store::open_read_only(&self.dir)?;
        let mut slot = self.store.write().unwrap_or_else(|p| p.into_inner());
        Ok(slot.get_or_insert(opened).clone())
    }

    /// Looks once whether the store's path still names the `data.mdb` open
    /// (symbolic links followed): a store moved away, deleted or replaced
    /// (`mv`, `rm -rf`, `ln -sfn` of a link given as `--store`) is let go,
    /// and the one now there, if any, opened. Returns whether it changed.
    pub fn check_store(&self) -> bool {
        let open = self
            .store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Store::file_id);
        let Some(open) = open else {
            // Nothing open: the next request opens what is there.
            return false;
        };
        let now = store::data_file_id(&self.dir);
        if now == open {
            return false;
        }
        let replacement = now.and_then(|_| Store::open_read_only(&self.dir).ok());
        *self.store.write().unwrap_or_else(|p| p.into_inner()) = replacement;
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.models
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        true
    }

    /// Parses a RESP key in the shapes above.
    pub fn key<'a>(&self, raw: &'a [u8]) -> Key<'a> {
        parse_key(raw, &self.prefix)
    }

    /// Answers `keys` in one read transaction, into `batch` (cleared first).
    pub fn read<'k>(
        &self,
        keys: impl IntoIterator<Item = Key<'k>>,
        batch: &mut Batch,
    ) -> Result<(), ReadError> {
        self.read_checked(None, keys, batch)
    }

    /// Answers the literal entity ids `ids` of `version` (the live one when
    /// `None`) in one read transaction; [`ReadError::NoVersion`] when the
    /// store does not hold `version`, however many ids there are.
    pub fn read_ids<'k>(
        &self,
        version: Option<u64>,
        ids: impl IntoIterator<Item = &'k [u8]>,
        batch: &mut Batch,
    ) -> Result<(), ReadError> {
        let keys = ids.into_iter().map(|id| Key::Entity { version, id });
        self.read_checked(version, keys, batch)
    }

    fn read_checked<'k>(
        &self,
        must_exist: Option<u64>,
        keys: impl IntoIterator<Item = Key<'k>>,
        batch: &mut Batch,
    ) -> Result<(), ReadError> {
        batch.clear();
        let store = self.store()?;
        let mut failure = None;
        store.snapshot(|snap| {
            if let Some(v) = must_exist
                && snap.find_record(v)?.is_none()
            {
                failure = Some(ReadError::NoVersion(v));
                return Ok(());
            }
            for key in keys {
                match self.answer(snap, key, batch) {
                    Ok(a) => batch.answers.push(a),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            Ok(())
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn live(&self, snap: &Snapshot<'_, '_>, batch: &mut Batch) -> Result<Option<u64>, ReadError> {
        if batch.live.is_none() {
            batch.live = snap.live()?;
        }
        Ok(batch.live)
    }

    fn answer(
        &self,
        snap: &Snapshot<'_, '_>,
        key: Key<'_>,
        batch: &mut Batch,
    ) -> Result<Answer, ReadError> {
        let (version, id) = match key {
            Key::Live => return Ok(Answer::Live(self.live(snap, batch)?)),
            Key::Entity {
                version: Some(v),
                id,
            } => (v, id),
            Key::Entity { version: None, id } => match self.live(snap, batch)? {
                Some(v) => (v, id),
                None => return Ok(Answer::Missing),
            },
        };
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Ok(Answer::Missing);
        }
        let as_int = int_id(id);
        let mut found = None;
        if let Some(n) = as_int {
            found = snap
                .value_by_bytes(version, &n.to_be_bytes())?
                .map(|v| (v, Some(n)));
        }
        if found.is_none() {
            found = snap.value_by_bytes(version, id)?.map(|v| (v, None));
        }
        let Some((value, int_id)) = found else {
            if snap.find_record(version)?.is_none() {
                return Ok(Answer::NoVersion);
            }
            return Ok(Answer::Missing);
        };
        let raw = value.as_bytes();
        if batch.bytes.len() + raw.len() + id.len() > MAX_VALUE_BYTES {
            return Err(ReadError::TooLarge);
        }
        let model = self.model(snap, version, value.model_ref())?;
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(raw);
        let value_range = start..batch.bytes.len();
        let id_range = if int_id.is_none() {
            let at = batch.bytes.len();
            batch.bytes.extend_from_slice(id);
            at..batch.bytes.len()
        } else {
            0..0
        };
        Ok(Answer::Hit(Hit {
            version,
            int_id,
            id: id_range,
            value: value_range,
            model,
        }))
    }

    /// The model version of a value (its `model_ref`'s record; the read
    /// version's when that record is gone, as `herd store get` does).
    pub(super) fn model(
        &self,
        snap: &Snapshot<'_, '_>,
        version: u64,
        model_ref: u32,
    ) -> Result<Arc<str>, store::Error> {
        let cached = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&model_ref)
            .cloned();
        if let Some(m) = cached {
            return Ok(m);
        }
        let (record, cacheable) = match snap.find_record(u64::from(model_ref))? {
            Some(r) => (r, true),
            None => (snap.record(version)?, false),
        };
        let mut text = Vec::new();
        json::write_str(&mut text, &record.model_version);
        let model: Arc<str> = String::from_utf8_lossy(&text).into();
        if cacheable {
            let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
            if models.len() >= MODEL_CACHE {
                models.clear();
            }
            models.insert(model_ref, model.clone());
        }
        Ok(model)
    }

    /// Answers a read of one entity from the held replies of the live
    /// version, when they answer it exactly as the store would: `write` is
    /// given the reply's JSON and `Ok(true)` returned. `Ok(false)`: read it
    /// from the store.
    pub fn read_held(
        &self,
        key: Key<'_>,
        now: u64,
        write: impl FnOnce(&[u8]),
    ) -> Result<bool, ReadError> {
        let guard = self.held.read().unwrap_or_else(|p| p.into_inner());
        let Some(held) = guard.as_ref() else {
            return Ok(false);
        };
        let Key::Entity { version, id } = key else {
            return Ok(false);
        };
        if version.is_some_and(|v| v != held.version) || id.is_empty() || id.len() > MAX_ID_BYTES {
            return Ok(false);
        }
        let store = self.store()?;
        if store.file_id() != held.file {
            return Ok(false);
        }
        // Unless nothing was committed since the live pointer was last seen
        // naming the held version, read it (in a transaction of its own).
        if store.last_txn_id() != held.verified.load(Ordering::Acquire) {
            let (live, txn) = store.snapshot(|s| Ok((s.live()?, s.txn_id())))?;
            if live != Some(held.version) {
                return Ok(false);
            }
            held.verified.store(txn, Ordering::Release);
        }
        match held.get(id, int_id(id), now) {
            Some(json) => {
                write(json);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// What is held now: (version, entities, bytes).
    pub fn held(&self) -> Option<(u64, usize, usize)> {
        let guard = self.held.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .map(|h| (h.version, h.len(), h.total_bytes()))
    }

    /// The version `--preload` should render now: the live one of the store
    /// open now, unless it is held already or was found not to be holdable.
    /// With nothing live, what is held is dropped.
    pub(super) fn to_hold(&self) -> Option<(Store, u64)> {
        let live = self.store().and_then(|s| Ok((s.live()?, s)));
        let Ok((Some(version), store)) = live else {
            *self.held.write().unwrap_or_else(|p| p.into_inner()) = None;
            return None;
        };
        let file = store.file_id();
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        if held
            .as_ref()
            .is_some_and(|h| h.file == file && h.version == version)
        {
            return None;
        }
        let unheld = self.unheld.lock().unwrap_or_else(|p| p.into_inner());
        (*unheld != Some((file, version))).then_some((store, version))
    }

    /// Renders `version` of `store` into memory, dropping what is held first
    /// (two versions are never held at once).
    pub(super) fn hold(&self, store: &Store, version: u64, limit: usize) {
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = None;
        let started = Instant::now();
        let mut model_of =
            |snap: &Snapshot<'_, '_>, v: u64, model_ref: u32| self.model(snap, v, model_ref);
        match held::build(store, version, limit, now_secs(), &mut model_of) {
            Ok(h) => {
                eprintln!("{}", held::held_line(&h, started));
                *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some(h);
            }
            // Tried again at the next check.
            Err(Unheld::NotLive) => {}
            Err(why) => {
                eprintln!("herd serve: v{version} is served from the store, not preloaded: {why}");
                *self.unheld.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((store.file_id(), version));
            }
        }
    }

    /// The live version and its row count, for INFO and /metrics.
    pub fn live_rows(&self) -> Result<Option<(u64, u64)>, store::Error> {
        let store = self.store()?;
        store.snapshot(|snap| match snap.live()? {
            None => Ok(None),
            Some(v) => Ok(Some((v, snap.record(v)?.committed_rows))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shapes() {
        let p = b"pred".as_slice();
        assert_eq!(
            parse_key(b"42", p),
            Key::Entity {
                version: None,
                id: b"42"
            }
        );
        assert_eq!(
            parse_key(b"v7:42", p),
            Key::Entity {
                version: Some(7),
                id: b"42"
            }
        );
        assert_eq!(parse_key(b"pred:live", p), Key::Live);
        // `{prefix}:{id}` is the live version's `{id}`.
        assert_eq!(
            parse_key(b"pred:42", p),
            Key::Entity {
                version: None,
                id: b"42"
            }
        );
        assert_eq!(
            parse_key(b"pred:v12:user:9", p),
            Key::Entity {
                version: Some(12),
                id: b"user:9"
            }
        );
        // Not a version: kept whole as an id.
        for id in [
            &b"v:42"[..],
            b"vx:1",
            b"v7",
            b"other:live",
            b"v99999999999999999999:1",
        ] {
            assert_eq!(
                parse_key(id, p),
                Key::Entity { version: None, id },
                "{}",
                String::from_utf8_lossy(id)
            );
        }
        // No prefix configured: `live` is an ordinary id.
        assert_eq!(
            parse_key(b":live", b""),
            Key::Entity {
                version: None,
                id: b":live"
            }
        );
    }

    #[test]
    fn integer_ids_are_decimal_digits_that_fit() {
        assert_eq!(int_id(b"0042"), Some(42));
        assert_eq!(int_id(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(int_id(b"18446744073709551616"), None);
        assert_eq!(int_id(b"-1"), None);
        assert_eq!(int_id(b"4 2"), None);
        assert_eq!(int_id(b""), None);
    }
}

/// Where a GET's microseconds go, piece by piece, on a real store:
/// `HERD_PIECES_STORE=DIR cargo test --release --lib serve::reader::pieces
/// -- --ignored --nocapture` (DIR: a store of integer ids 0..1M, as
/// `bench/serve.sh --keep DIR` leaves in DIR/store). Prints nanoseconds per
/// operation over 200,000 random keys, two rounds (the first maps the
/// store's pages).
#[cfg(test)]
mod pieces {
    use super::*;

    /// Nanoseconds per call of `f`, in this thread's CPU time (so that other
    /// processes on a shared machine do not count).
    fn per_op(label: &str, n: usize, mut f: impl FnMut(usize)) -> f64 {
        let cpu = || crate::bench::thread_cpu().as_secs_f64() * 1e9;
        let started = cpu();
        for i in 0..n {
            f(i);
        }
        let ns = (cpu() - started) / n as f64;
        eprintln!("{label:<44} {ns:>9.0} ns");
        ns
    }

    #[test]
    #[ignore = "needs HERD_PIECES_STORE=DIR, a store of ids 0..1M"]
    fn pieces() {
        let dir: PathBuf = std::env::var("HERD_PIECES_STORE")
            .expect("HERD_PIECES_STORE=DIR (a store of integer ids 0..1M)")
            .into();
        let reader = Reader::new(dir, b"key".to_vec());
        let store = reader.store().unwrap();
        let n = 200_000;
        let mut rng = crate::splitmix::SplitMix64(0x9e37_79b9_7f4a_7c15);
        let ids: Vec<u64> = (0..n).map(|_| rng.in_range(0..1_000_000)).collect();
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| format!("key:{id:012}").into_bytes())
            .collect();
        for _ in 0..2 {
            per_op("read transaction: begin + abort", n, |_| {
                store.snapshot(|_| Ok(())).unwrap();
            });
            per_op("  + the live pointer", n, |_| {
                store.snapshot(|s| s.live()).unwrap();
            });
            per_op("  + the value (database open, lookup)", n, |i| {
                store
                    .snapshot(|s| {
                        let v = s.live()?.unwrap();
                        Ok(s.value_by_bytes(v, &ids[i].to_be_bytes())?.is_some())
                    })
                    .unwrap();
            });
            let mut batch = Batch::default();
            let read = per_op("Reader::read of one key (all of the above)", n, |i| {
                reader.read([reader.key(&keys[i])], &mut batch).unwrap();
            });
            let mut out = Vec::new();
            let both = per_op("  + Batch::write_json", n, |i| {
                reader.read([reader.key(&keys[i])], &mut batch).unwrap();
                out.clear();
                batch.write_json(0, 1, &mut out);
            });
            eprintln!(
                "{:<44} {:>9.0} ns",
                "the JSON alone (100 pairs)",
                both - read
            );
        }
    }
}
