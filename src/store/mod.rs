//! The LMDB prediction store: versions, chunk commits, validation, flip, gc and
//! the reader API.
//!
//! This room exists so that a night's predictions land exactly once, are
//! checked before anyone reads them, and reach readers in one atomic step. It
//! owns every byte under the store directory; no other room opens LMDB. It
//! must not decide *when* to flip or what passes (the coordinator and the
//! validation plan do), and it never keeps a read transaction open between
//! calls.
//!
//! Layout: one LMDB environment with named databases.
//! - `meta`: `live` and `previous` (u64 big-endian: the live version and the
//!   one live before it), `next` (the next version number; numbers are never
//!   reused), `version/{N}` (a JSON [`VersionRecord`]) and
//!   `chunk/{N}/{start:016x}-{end:016x}` (empty values: row ranges of
//!   committed chunks).
//! - `v{N}`, one per version: key = the entity key bytes
//!   ([`EntityKey::to_bytes`]: u64 big-endian for integer ids, UTF-8 for
//!   strings); value = the layout of [`value`].
//!
//! Database handles. LMDB keeps a slot for every database a process opened
//! and committed, until the environment closes, and every transaction pays
//! for each slot. So readers open a version's database inside their read
//! transaction and end it without committing, which gives the slot back: a
//! long-lived reader uses one slot however many versions come and go. A
//! writer keeps a slot for each version it created or wrote (gc frees it);
//! [`MAX_DBS`] bounds how many one process may hold at once.
//!
//! A store grows its map on `MDB_MAP_FULL` and adopts a size grown by another
//! process on `MDB_MAP_RESIZED`; a process-wide gate keeps every transaction of
//! this process out of the way while it does.

pub mod bench;
pub mod export;
pub mod json;
mod listing;
mod reader;
mod report;
pub mod validate;
pub mod value;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};

use heed::types::{Bytes, DecodeIgnore};
use heed::{
    CommitOrAbort, Database, DatabaseOpener, Env, EnvFlags, EnvOpenOptions, MdbError, OnCommit,
    PutFlags, RoTxn, RwTxn, WithoutTls,
};
use serde::{Deserialize, Serialize};

use crate::model::{EntityIds, EntityKey, PredictionRow, Predictions};

pub use listing::versions_json;
pub use report::{Check, ValidationReport};
pub use value::{Value, ValueKind, ValueRef};

/// The map size a new store starts with. The file is sparse, so this costs
/// address space, not disk; the map grows past it when full.
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// A store keeps the encode buffers of its last chunk commit for the next one
/// when they hold at most this many bytes (a 100k-row top-100 chunk needs
/// about 82 MB); larger ones are freed.
pub const MAX_SCRATCH_BYTES: usize = 128 << 20;

const META_DB: &str = "meta";
/// Database handle slots of one process: `meta` plus the versions this
/// process created, wrote or validated and has not dropped. A process that
/// keeps more versions than this open at once gets an LMDB error naming
/// `MDB_DBS_FULL`; readers never hold more than one.
pub const MAX_DBS: u32 = 128;
const KEY_LIVE: &[u8] = b"live";
const KEY_PREVIOUS: &[u8] = b"previous";
const KEY_NEXT: &[u8] = b"next";
const VERSION_PREFIX: &str = "version/";
/// Map sizes are rounded up to this (a multiple of every common page size).
const MAP_GRANULE: usize = 64 * 1024;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no store at {}: run a job that writes there first, or pass --store DIR", path.display())]
    NoStore { path: PathBuf },
    #[error("store {}: {context}: {source}", path.display())]
    Io {
        path: PathBuf,
        context: String,
        source: std::io::Error,
    },
    #[error("store {}: {context}: {source}", path.display())]
    Lmdb {
        path: PathBuf,
        context: String,
        source: heed::Error,
    },
    #[error("store {}: no version {version} (see `herd store versions`)", path.display())]
    NoSuchVersion { path: PathBuf, version: u64 },
    #[error("store {}: v{version} is {status}: {what}", path.display())]
    BadStatus {
        path: PathBuf,
        version: u64,
        status: Status,
        what: String,
    },
    #[error("store {}: v{version}: {detail}", path.display())]
    Invalid {
        path: PathBuf,
        version: u64,
        detail: String,
    },
    #[error("store {}: v{version}: corrupt data: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        version: u64,
        detail: String,
    },
}

impl Error {
    fn is_map_full(&self) -> bool {
        matches!(
            self,
            Error::Lmdb {
                source: heed::Error::Mdb(MdbError::MapFull),
                ..
            }
        )
    }
}

/// Where a version is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Chunks are being committed.
    Building,
    /// Passed the gate; may go live.
    Validated,
    /// What readers see.
    Live,
    /// Was live; a rollback may bring it back.
    Retired,
    /// Failed the gate or the run; never goes live.
    Failed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Building => "building",
            Status::Validated => "validated",
            Status::Live => "live",
            Status::Retired => "retired",
            Status::Failed => "failed",
        })
    }
}

/// What `meta` records about one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub job: String,
    pub model_version: String,
    pub model_kind: String,
    /// Unix seconds.
    pub created: u64,
    /// Expected input rows.
    pub rows: u64,
    /// Rows of committed chunks so far.
    pub committed_rows: u64,
    pub status: Status,
    pub ttl_secs: u64,
    /// Input + model + job identity, for `--resume`.
    pub fingerprint: String,
    #[serde(default)]
    pub validation: Option<ValidationReport>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Whether entity keys are integer or string ids; set by the first chunk
    /// commit (absent in versions written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_kind: Option<IdKind>,
}

/// The type of a version's entity ids, which its key bytes alone cannot tell
/// (an 8-byte string id looks like a big-endian integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    Int,
    String,
}

impl IdKind {
    pub fn of(ids: &EntityIds) -> IdKind {
        match ids {
            EntityIds::Int(_) => IdKind::Int,
            EntityIds::Str(_) => IdKind::String,
        }
    }
}

/// What the coordinator knows when it starts a version.
#[derive(Clone, Debug, PartialEq)]
pub struct NewVersion {
    pub job: String,
    pub model_version: String,
    pub model_kind: String,
    pub rows: u64,
    pub ttl_secs: u64,
    pub fingerprint: String,
    pub created: u64,
    pub hosts: Vec<String>,
}

/// One entity's prediction as `herd store get` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub id: String,
    pub version: u64,
    pub model_version: String,
    pub timestamp: u64,
    pub ttl: u64,
    /// `timestamp + ttl` is in the past.
    pub stale: bool,
    pub value: Value,
}

/// A float as JSON shows it: the shortest decimal that reads back as the same
/// f32 (`3.21`, not `3.2100000381469727`; of two equally short ones, zmij's
/// pick, as [`json::write_f32`] writes it); non-finite values become `null`.
pub(crate) fn json_f32(x: f32) -> serde_json::Value {
    if !x.is_finite() {
        return serde_json::Value::Null;
    }
    zmij::Buffer::new()
        .format_finite(x)
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

impl Prediction {
    /// The `herd store get --json` shape: `{"id", "version", "model_version",
    /// "timestamp", "ttl", "stale", "top_k": [{"item", "score"}]}` for top-K
    /// values, `"scores": [..]` instead of `top_k` for scores.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("version".into(), self.version.into());
        m.insert("model_version".into(), self.model_version.clone().into());
        m.insert("timestamp".into(), self.timestamp.into());
        m.insert("ttl".into(), self.ttl.into());
        m.insert("stale".into(), self.stale.into());
        match &self.value {
            Value::TopK(pairs) => {
                let list = pairs
                    .iter()
                    .map(|&(item, score)| serde_json::json!({"item": item, "score": json_f32(score)}))
                    .collect();
                m.insert("top_k".into(), serde_json::Value::Array(list));
            }
            Value::Scores(scores) => {
                let list = scores.iter().map(|&s| json_f32(s)).collect();
                m.insert("scores".into(), serde_json::Value::Array(list));
            }
        }
        serde_json::Value::Object(m)
    }
}

struct Inner {
    dir: PathBuf,
    env: Env<WithoutTls>,
    meta: Database<'static, Bytes, Bytes>,
    /// Held shared by every transaction of this process and exclusively while
    /// the map is resized (LMDB requires no live transaction then).
    gate: RwLock<()>,
    /// Encode buffers kept between chunk commits (see [`MAX_SCRATCH_BYTES`]).
    scratch: Mutex<Option<EncodedChunk>>,
}

/// Stores open in this process, by canonical directory: heed refuses to open
/// one environment twice, and a map resize must see every transaction of the
/// process, so opening a store again shares the first one.
static OPEN: Mutex<Vec<(PathBuf, Weak<Inner>)>> = Mutex::new(Vec::new());

/// An open prediction store. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The name of the database holding `version`'s predictions.
pub fn version_db(version: u64) -> String {
    format!("v{version}")
}

/// A value that heed hands back unchanged once its transaction commits.
struct Committed<R>(R);

impl<R> OnCommit for Committed<R> {
    type Committed = R;
    fn on_commit(self, _token: &heed::CommitToken) -> R {
        self.0
    }
}

/// An error inside heed's database-opening closures: ours, or heed's own
/// (its commit).
enum InTxn {
    Store(Error),
    Heed(heed::Error),
}

impl From<heed::Error> for InTxn {
    fn from(e: heed::Error) -> Self {
        InTxn::Heed(e)
    }
}

impl From<Error> for InTxn {
    fn from(e: Error) -> Self {
        InTxn::Store(e)
    }
}

fn version_key(version: u64) -> Vec<u8> {
    format!("{VERSION_PREFIX}{version}").into_bytes()
}

fn chunk_prefix(version: u64) -> String {
    format!("chunk/{version}/")
}

fn chunk_key(version: u64, rows: &Range<u64>) -> Vec<u8> {
    format!(
        "{}{:016x}-{:016x}",
        chunk_prefix(version),
        rows.start,
        rows.end
    )
    .into_bytes()
}

fn parse_chunk_key(key: &[u8], prefix: &str) -> Option<Range<u64>> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (a, b) = rest.split_once('-')?;
    Some(u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?)
}

/// gc may drop a version that is finished and neither live nor the one live
/// before it.
fn droppable(rec: &VersionRecord, live: Option<u64>, previous: Option<u64>) -> bool {
    matches!(
        rec.status,
        Status::Retired | Status::Failed | Status::Validated
    ) && Some(rec.version) != live
        && Some(rec.version) != previous
}

fn round_map_size(bytes: usize) -> usize {
    bytes.max(MAP_GRANULE).div_ceil(MAP_GRANULE) * MAP_GRANULE
}

/// The entity keys and encoded values of one chunk, sorted by key, one entry
/// per distinct key (the last row of a repeated id wins). Entry `e`'s key is
/// `keys[key_spans[e]]` and its value `values[spans[e]]`: four buffers per
/// chunk, none per entity.
#[derive(Default)]
struct EncodedChunk {
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
    /// Opens the store in `dir`, creating the directory and the store if
    /// missing, with a [`DEFAULT_MAP_SIZE`] map.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_map_size(dir, DEFAULT_MAP_SIZE)
    }

    /// Opens the store in `dir`; it must exist. The error says "no store at DIR".
    pub fn open_existing(dir: &Path) -> Result<Store> {
        if !dir.join("data.mdb").is_file() {
            return Err(Error::NoStore {
                path: dir.to_path_buf(),
            });
        }
        Store::open_with_map_size(dir, DEFAULT_MAP_SIZE)
    }

    /// [`Store::open`] with a chosen initial map size (rounded up to 64 KiB).
    /// A store already open in this process is shared, whatever the size.
    pub fn open_with_map_size(dir: &Path, map_size: usize) -> Result<Store> {
        let io = |context: &str, source| Error::Io {
            path: dir.to_path_buf(),
            context: context.to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create the store directory", e))?;
        let canonical = dir
            .canonicalize()
            .map_err(|e| io("resolve the store directory", e))?;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(inner) = open
            .iter()
            .find(|(p, _)| *p == canonical)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(Store { inner });
        }
        let lmdb = |context: &str, source| Error::Lmdb {
            path: dir.to_path_buf(),
            context: context.to_string(),
            source,
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(round_map_size(map_size)).max_dbs(MAX_DBS);
        // NO_META_SYNC keeps the store intact on a system crash but may undo
        // the last commits: chunk commits are redone by `--resume`, and the
        // commits readers rely on (flip, gc) are synced explicitly.
        // SAFETY: a documented LMDB flag; it only changes when meta pages
        // are flushed.
        unsafe { options.flags(EnvFlags::NO_META_SYNC) };
        // SAFETY: the store files are only ever touched through LMDB, by this
        // process (one Env per directory, see `OPEN`) and other herd processes.
        let env = unsafe { options.open(&canonical) }.map_err(|e| lmdb("open", e))?;
        let wtxn = env.write_txn().map_err(|e| lmdb("open", e))?;
        let meta = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                let meta = dbo.create_database::<Bytes, Bytes>(wtxn, Some(META_DB))?;
                Ok(CommitOrAbort::<_, ()>::Commit(meta))
            })
            .map_err(|e| lmdb("create the meta database", e))?
            .unwrap_commit();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            env,
            meta,
            gate: RwLock::new(()),
            scratch: Mutex::new(None),
        });
        open.push((canonical, Arc::downgrade(&inner)));
        Ok(Store { inner })
    }

    /// The directory this store was opened from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.inner.env.info().map_size
    }

    fn lmdb(&self, context: impl Into<String>, source: heed::Error) -> Error {
        Error::Lmdb {
            path: self.inner.dir.clone(),
            context: context.into(),
            source,
        }
    }

    fn no_such(&self, version: u64) -> Error {
        Error::NoSuchVersion {
            path: self.inner.dir.clone(),
            version,
        }
    }

    fn invalid(&self, version: u64, detail: String) -> Error {
        Error::Invalid {
            path: self.inner.dir.clone(),
            version,
            detail,
        }
    }

    fn corrupt(&self, version: u64, detail: String) -> Error {
        Error::Corrupt {
            path: self.inner.dir.clone(),
            version,
            detail,
        }
    }

    /// Resizes the map with no transaction of this process alive: to
    /// `new_size`, or to the size another process set when `None`.
    fn resize(&self, new_size: Option<usize>) -> Result<()> {
        let _all = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        let size = match new_size {
            Some(want) if want <= self.map_size() => return Ok(()),
            Some(want) => round_map_size(want),
            None => 0,
        };
        // SAFETY: every transaction of this process holds `gate` shared; we
        // hold it exclusively, so none is alive.
        unsafe { self.inner.env.resize(size) }.map_err(|e| self.lmdb("resize the map", e))
    }

    /// Flushes every commit so far to disk (chunk commits skip the metadata
    /// flush, see `open_with_map_size`).
    fn sync(&self, what: &str) -> Result<()> {
        let _gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
        self.inner
            .env
            .force_sync()
            .map_err(|e| self.lmdb(format!("{what}: sync to disk"), e))
    }

    /// Begins a transaction with `begin`, holding the gate shared for as long
    /// as the caller keeps the guard; adopts a map size another process set.
    fn begin<'s, T>(
        &'s self,
        what: &str,
        begin: impl Fn(&'s Env<WithoutTls>) -> heed::Result<T>,
    ) -> Result<(RwLockReadGuard<'s, ()>, T)> {
        loop {
            let gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
            match begin(&self.inner.env) {
                Ok(txn) => return Ok((gate, txn)),
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    drop(gate);
                    self.resize(None)?;
                }
                Err(e) => return Err(self.lmdb(format!("{what}: begin a transaction"), e)),
            }
        }
    }

    /// Runs `attempt` (one whole write transaction) again after doubling the
    /// map each time it fails with `MDB_MAP_FULL`.
    fn grow_on_full<R>(&self, mut attempt: impl FnMut() -> Result<R>) -> Result<R> {
        loop {
            match attempt() {
                Err(e) if e.is_map_full() => {
                    self.resize(Some(self.map_size().saturating_mul(2)))?
                }
                other => return other,
            }
        }
    }

    /// Runs `f` in one read transaction.
    fn read<R>(&self, f: impl FnOnce(&RoTxn<'_, WithoutTls>) -> Result<R>) -> Result<R> {
        let (_gate, txn) = self.begin("read", |env| env.read_txn())?;
        f(&txn)
    }

    /// Runs `f` in one write transaction and commits it; on `MDB_MAP_FULL` the
    /// transaction is dropped, the map doubled and `f` run again.
    fn write<R>(&self, what: &str, mut f: impl FnMut(&mut RwTxn<'_>) -> Result<R>) -> Result<R> {
        self.grow_on_full(|| {
            let (_gate, mut txn) = self.begin(what, |env| env.write_txn())?;
            let r = f(&mut txn)?;
            txn.commit()
                .map_err(|e| self.lmdb(format!("{what}: commit"), e))?;
            Ok(r)
        })
    }

    /// [`Store::write`] with the database of `version` (created when
    /// `create`, else it must exist) open in the same transaction.
    fn write_version<R>(
        &self,
        what: &str,
        version: u64,
        create: bool,
        mut f: impl for<'e> FnMut(&mut RwTxn<'e>, Database<'e, Bytes, Bytes>) -> Result<R>,
    ) -> Result<R> {
        let name = version_db(version);
        self.grow_on_full(|| {
            let (_gate, txn) = self.begin(what, |env| env.write_txn())?;
            let outcome = self.inner.env.create_databases_and_commit(
                txn,
                |dbo, txn| -> std::result::Result<_, InTxn> {
                    let db = if create {
                        dbo.create_database::<Bytes, Bytes>(txn, Some(&name))
                            .map_err(|e| self.lmdb(format!("{what}: create database {name}"), e))?
                    } else {
                        dbo.open_database::<Bytes, Bytes>(txn, Some(&name))
                            .map_err(|e| self.lmdb(format!("{what}: open database {name}"), e))?
                            .ok_or_else(|| {
                                self.corrupt(version, format!("database {name} is missing"))
                            })?
                    };
                    let r = f(txn, db)?;
                    Ok(CommitOrAbort::<_, ()>::Commit(Committed(r)))
                },
            );
            match outcome {
                Ok(c) => Ok(c.unwrap_commit()),
                Err(InTxn::Store(e)) => Err(e),
                Err(InTxn::Heed(e)) => Err(self.lmdb(format!("{what}: commit"), e)),
            }
        })
    }

    /// Runs `f` in one read transaction in which version databases can be
    /// opened ([`Snapshot::db`]). The transaction ends without a commit, so
    /// the handles it opened give their slots back.
    fn read_versions<R>(&self, f: impl FnOnce(&Snapshot<'_, '_>) -> Result<R>) -> Result<R> {
        let (_gate, txn) = self.begin("read", |env| env.read_txn())?;
        let outcome = self.inner.env.open_databases_and_commit(
            txn,
            |dbo, txn| -> std::result::Result<_, InTxn> {
                let snap = Snapshot {
                    store: self,
                    txn,
                    opener: dbo,
                    dbs: Default::default(),
                };
                let r = f(&snap)?;
                Ok(CommitOrAbort::<(), _>::Abort(r))
            },
        );
        match outcome {
            Ok(CommitOrAbort::Abort(r)) => Ok(r),
            Ok(CommitOrAbort::Commit(())) => unreachable!("read transactions are never committed"),
            Err(InTxn::Store(e)) => Err(e),
            Err(InTxn::Heed(e)) => Err(self.lmdb("read transaction", e)),
        }
    }

    fn get_record(&self, txn: &RoTxn<'_>, version: u64) -> Result<Option<VersionRecord>> {
        let Some(bytes) = self
            .inner
            .meta
            .get(txn, &version_key(version))
            .map_err(|e| self.lmdb(format!("read the record of v{version}"), e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| self.corrupt(version, format!("record is not valid JSON: {e}")))
    }

    fn must_record(&self, txn: &RoTxn<'_>, version: u64) -> Result<VersionRecord> {
        self.get_record(txn, version)?
            .ok_or_else(|| self.no_such(version))
    }

    fn put_record(&self, txn: &mut RwTxn<'_>, rec: &VersionRecord) -> Result<()> {
        let json = serde_json::to_vec(rec)
            .map_err(|e| self.corrupt(rec.version, format!("record does not serialise: {e}")))?;
        self.inner
            .meta
            .put(txn, &version_key(rec.version), &json)
            .map_err(|e| self.lmdb(format!("write the record of v{}", rec.version), e))
    }

    fn get_u64(&self, txn: &RoTxn<'_>, key: &[u8]) -> Result<Option<u64>> {
        let name = String::from_utf8_lossy(key);
        match self
            .inner
            .meta
            .get(txn, key)
            .map_err(|e| self.lmdb(format!("read meta '{name}'"), e))?
        {
            None => Ok(None),
            Some(b) => be_u64(b).map(Some).ok_or_else(|| {
                self.corrupt(0, format!("meta '{name}' is {} bytes, not 8", b.len()))
            }),
        }
    }

    fn put_u64(&self, txn: &mut RwTxn<'_>, key: &[u8], v: u64) -> Result<()> {
        self.inner
            .meta
            .put(txn, key, &v.to_be_bytes())
            .map_err(|e| self.lmdb(format!("write meta '{}'", String::from_utf8_lossy(key)), e))
    }

    /// Starts a version in status `Building` and returns its number.
    pub fn begin_version(&self, v: NewVersion) -> Result<u64> {
        let version = self.read(|txn| Ok(self.get_u64(txn, KEY_NEXT)?.unwrap_or(1)))?;
        self.write_version("begin a version", version, true, |txn, _db| {
            let next = self.get_u64(txn, KEY_NEXT)?.unwrap_or(1);
            if next != version {
                return Err(self.invalid(
                    version,
                    format!("another process began version {next} at the same time; try again"),
                ));
            }
            if v.ttl_secs > u64::from(u32::MAX) {
                return Err(self.invalid(
                    version,
                    format!(
                        "ttl {} s does not fit the value header (max {} s)",
                        v.ttl_secs,
                        u32::MAX
                    ),
                ));
            }
            let rec = VersionRecord {
                version,
                job: v.job.clone(),
                model_version: v.model_version.clone(),
                model_kind: v.model_kind.clone(),
                created: v.created,
                rows: v.rows,
                committed_rows: 0,
                status: Status::Building,
                ttl_secs: v.ttl_secs,
                fingerprint: v.fingerprint.clone(),
                validation: None,
                hosts: v.hosts.clone(),
                duration_s: None,
                id_kind: None,
            };
            self.put_record(txn, &rec)?;
            self.put_u64(txn, KEY_NEXT, version + 1)?;
            Ok(version)
        })
    }

    /// The newest `Building` version of `job` with this fingerprint.
    pub fn find_resumable(&self, job: &str, fingerprint: &str) -> Result<Option<VersionRecord>> {
        Ok(self
            .versions()?
            .into_iter()
            .find(|r| r.status == Status::Building && r.job == job && r.fingerprint == fingerprint))
    }

    fn ranges_in(&self, txn: &RoTxn<'_>, version: u64) -> Result<Vec<Range<u64>>> {
        let prefix = chunk_prefix(version);
        let iter = self
            .inner
            .meta
            .remap_data_type::<DecodeIgnore>()
            .prefix_iter(txn, prefix.as_bytes())
            .map_err(|e| self.lmdb(format!("list chunk markers of v{version}"), e))?;
        let mut out = Vec::new();
        for item in iter {
            let (key, ()) =
                item.map_err(|e| self.lmdb(format!("list chunk markers of v{version}"), e))?;
            let range = parse_chunk_key(key, &prefix).ok_or_else(|| {
                self.corrupt(
                    version,
                    format!("chunk marker '{}'", String::from_utf8_lossy(key)),
                )
            })?;
            out.push(range);
        }
        Ok(out)
    }

    /// Row ranges of the committed chunks of `version`, ascending.
    pub fn committed_ranges(&self, version: u64) -> Result<Vec<Range<u64>>> {
        self.read(|txn| {
            self.must_record(txn, version)?;
            self.ranges_in(txn, version)
        })
    }

    fn encode_chunk(
        &self,
        version: u64,
        rows: &Range<u64>,
        ids: &EntityIds,
        preds: &Predictions,
        timestamp: u64,
        out: &mut EncodedChunk,
    ) -> Result<()> {
        out.clear();
        let n = ids.len();
        let what = format!("chunk rows {}..{}", rows.start, rows.end);
        if rows.is_empty() {
            return Err(self.invalid(version, format!("{what}: empty row range")));
        }
        if (rows.end - rows.start) != n as u64 || preds.len() != n {
            return Err(self.invalid(
                version,
                format!(
                    "{what}: {} rows, but {n} ids and {} predictions",
                    rows.end - rows.start,
                    preds.len()
                ),
            ));
        }
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
        // The encode buffers of the previous commit, reused so that a commit
        // does not allocate (and fault in) a chunk's worth of fresh memory.
        let mut chunk = self
            .inner
            .scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let outcome = self.commit_encoded(version, rows, ids, preds, timestamp, &mut chunk);
        if chunk.bytes() <= MAX_SCRATCH_BYTES {
            *self.inner.scratch.lock().unwrap_or_else(|p| p.into_inner()) = Some(chunk);
        }
        outcome
    }

    fn commit_encoded(
        &self,
        version: u64,
        rows: Range<u64>,
        ids: &EntityIds,
        preds: &Predictions,
        timestamp: u64,
        chunk: &mut EncodedChunk,
    ) -> Result<bool> {
        self.encode_chunk(version, &rows, ids, preds, timestamp, chunk)?;
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
            rec.id_kind.get_or_insert(IdKind::of(ids));
            self.put_record(txn, &rec)?;
            Ok(true)
        })
    }

    /// The record of `version`.
    pub fn record(&self, version: u64) -> Result<VersionRecord> {
        self.read(|txn| self.must_record(txn, version))
    }

    /// Changes the record of `version` in one write transaction. The version
    /// number cannot change, and a version goes live or leaves live only
    /// through [`Store::flip`].
    pub fn update_record(&self, version: u64, f: impl FnOnce(&mut VersionRecord)) -> Result<()> {
        let mut f = Some(f);
        // `f` runs once; a transaction retried after growing the map writes
        // the record it produced.
        let mut updated: Option<VersionRecord> = None;
        self.write(&format!("update the record of v{version}"), |txn| {
            let current = self.must_record(txn, version)?;
            let before = current.status;
            let mut rec = match (updated.take(), f.take()) {
                (Some(rec), _) => rec,
                (None, Some(f)) => {
                    let mut rec = current;
                    f(&mut rec);
                    rec
                }
                (None, None) => current,
            };
            updated = Some(rec.clone());
            rec.version = version;
            if (before == Status::Live) != (rec.status == Status::Live) {
                return Err(Error::BadStatus {
                    path: self.inner.dir.clone(),
                    version,
                    status: before,
                    what: format!(
                        "cannot set status {} by a record update; use flip",
                        rec.status
                    ),
                });
            }
            self.put_record(txn, &rec)
        })
    }

    /// The live version, if any.
    pub fn live(&self) -> Result<Option<u64>> {
        self.read(|txn| self.get_u64(txn, KEY_LIVE))
    }

    /// The version that was live before the live one, if any.
    pub fn previous_live(&self) -> Result<Option<u64>> {
        self.read(|txn| self.get_u64(txn, KEY_PREVIOUS))
    }

    fn records_in(&self, txn: &RoTxn<'_>) -> Result<Vec<VersionRecord>> {
        let iter = self
            .inner
            .meta
            .prefix_iter(txn, VERSION_PREFIX.as_bytes())
            .map_err(|e| self.lmdb("list versions", e))?;
        let mut out = Vec::new();
        for item in iter {
            let (key, bytes) = item.map_err(|e| self.lmdb("list versions", e))?;
            let rec: VersionRecord = serde_json::from_slice(bytes).map_err(|e| {
                self.corrupt(
                    0,
                    format!(
                        "record '{}' is not valid JSON: {e}",
                        String::from_utf8_lossy(key)
                    ),
                )
            })?;
            out.push(rec);
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.version));
        Ok(out)
    }

    /// Every version's record, newest first.
    pub fn versions(&self) -> Result<Vec<VersionRecord>> {
        self.read(|txn| self.records_in(txn))
    }

    /// Moves the live pointer to `to` in one write transaction: the old live
    /// version becomes `Retired`, `to` becomes `Live`. Only `Validated`
    /// versions (roll forward) and `Retired` ones (roll back) may go live;
    /// flipping to the live version changes nothing.
    pub fn flip(&self, to: u64) -> Result<()> {
        self.write(&format!("flip to v{to}"), |txn| {
            let mut rec = self.must_record(txn, to)?;
            let old = self.get_u64(txn, KEY_LIVE)?;
            if old == Some(to) {
                return Ok(());
            }
            if !matches!(rec.status, Status::Validated | Status::Retired) {
                return Err(Error::BadStatus {
                    path: self.inner.dir.clone(),
                    version: to,
                    status: rec.status,
                    what: "only a validated or retired version can go live".into(),
                });
            }
            if let Some(old) = old {
                if let Some(mut prev) = self.get_record(txn, old)? {
                    prev.status = Status::Retired;
                    self.put_record(txn, &prev)?;
                }
                self.put_u64(txn, KEY_PREVIOUS, old)?;
            }
            rec.status = Status::Live;
            self.put_record(txn, &rec)?;
            self.put_u64(txn, KEY_LIVE, to)
        })?;
        self.sync(&format!("flip to v{to}"))
    }

    /// Drops versions beyond the newest `keep`: only `Retired`, `Failed` and
    /// `Validated` ones, never the live version or the one live before it,
    /// never a `Building` one. Returns the dropped versions, ascending. Each
    /// version goes in one write transaction: its record, its chunk markers
    /// and its database `v{N}`.
    pub fn gc(&self, keep: usize) -> Result<Vec<u64>> {
        let candidates = self.read(|txn| {
            let live = self.get_u64(txn, KEY_LIVE)?;
            let previous = self.get_u64(txn, KEY_PREVIOUS)?;
            Ok(self
                .records_in(txn)?
                .into_iter()
                .skip(keep)
                .filter(|r| droppable(r, live, previous))
                .map(|r| r.version)
                .collect::<Vec<u64>>())
        })?;
        let mut dropped = Vec::new();
        for v in candidates {
            if self.drop_version(v)? {
                dropped.push(v);
            }
        }
        dropped.sort_unstable();
        if !dropped.is_empty() {
            self.sync("gc")?;
        }
        Ok(dropped)
    }

    /// Drops version `v` if it is still droppable. Holds the gate exclusively:
    /// dropping a database closes its handle for the whole process, so no
    /// other transaction of this process may be using it.
    fn drop_version(&self, v: u64) -> Result<bool> {
        let what = format!("gc: drop v{v}");
        let _all = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        let txn = match self.inner.env.write_txn() {
            Ok(txn) => txn,
            Err(heed::Error::Mdb(MdbError::MapResized)) => {
                // SAFETY: the gate is held exclusively: no transaction of
                // this process is alive.
                unsafe { self.inner.env.resize(0) }.map_err(|e| self.lmdb(&what, e))?;
                self.inner
                    .env
                    .write_txn()
                    .map_err(|e| self.lmdb(format!("{what}: begin a write transaction"), e))?
            }
            Err(e) => return Err(self.lmdb(format!("{what}: begin a write transaction"), e)),
        };
        let outcome = self.inner.env.create_databases_and_commit(
            txn,
            |dbo, txn| -> std::result::Result<_, InTxn> {
                let live = self.get_u64(txn, KEY_LIVE)?;
                let previous = self.get_u64(txn, KEY_PREVIOUS)?;
                match self.get_record(txn, v)? {
                    Some(rec) if droppable(&rec, live, previous) => {}
                    _ => return Ok(CommitOrAbort::Abort(false)),
                }
                for r in self.ranges_in(txn, v)? {
                    self.inner
                        .meta
                        .delete(txn, &chunk_key(v, &r))
                        .map_err(|e| self.lmdb(format!("{what}: chunk markers"), e))?;
                }
                self.inner
                    .meta
                    .delete(txn, &version_key(v))
                    .map_err(|e| self.lmdb(format!("{what}: record"), e))?;
                let name = version_db(v);
                if let Some(db) = dbo
                    .open_database::<Bytes, Bytes>(txn, Some(&name))
                    .map_err(|e| self.lmdb(format!("{what}: open {name}"), e))?
                {
                    // SAFETY: the gate is held exclusively, so no other
                    // transaction of this process uses this handle.
                    unsafe { db.remove(txn) }
                        .map_err(|e| self.lmdb(format!("{what}: drop {name}"), e))?;
                }
                Ok(CommitOrAbort::Commit(Committed(true)))
            },
        );
        match outcome {
            Ok(CommitOrAbort::Commit(done)) => Ok(done),
            Ok(CommitOrAbort::Abort(done)) => Ok(done),
            Err(InTxn::Store(e)) => Err(e),
            Err(InTxn::Heed(e)) => Err(self.lmdb(format!("{what}: commit"), e)),
        }
    }

    /// Reads the live pointer (or uses `version`) and the value of `key` in ONE
    /// read transaction. `now` (unix seconds) decides `stale`. `Ok(None)`: no
    /// live version, or no prediction for `key`.
    pub fn get(
        &self,
        key: &EntityKey,
        version: Option<u64>,
        now: u64,
    ) -> Result<Option<Prediction>> {
        self.read_versions(|snap| {
            let v = match version {
                Some(v) => v,
                None => match self.get_u64(snap.txn, KEY_LIVE)? {
                    Some(v) => v,
                    None => return Ok(None),
                },
            };
            let rec = snap.record(v)?;
            let Some(value) = snap.value(v, key)? else {
                return Ok(None);
            };
            let model_version = if u64::from(value.model_ref()) == v {
                rec.model_version
            } else {
                self.get_record(snap.txn, u64::from(value.model_ref()))?
                    .map_or(rec.model_version, |r| r.model_version)
            };
            let timestamp = u64::from(value.timestamp());
            let ttl = u64::from(value.ttl());
            Ok(Some(Prediction {
                id: key.to_string(),
                version: v,
                model_version,
                timestamp,
                ttl,
                stale: timestamp.saturating_add(ttl) < now,
                value: value.to_value(),
            }))
        })
    }

    /// Zero-copy access for hot readers: calls `f` inside one read transaction
    /// with the live version and the value view of `key`, or with `None` when
    /// there is no live version or no prediction for `key`.
    pub fn with_value<R>(
        &self,
        key: &EntityKey,
        f: impl FnOnce(Option<(u64, ValueRef<'_>)>) -> R,
    ) -> Result<R> {
        self.read_versions(|snap| {
            let Some(v) = self.get_u64(snap.txn, KEY_LIVE)? else {
                return Ok(f(None));
            };
            Ok(f(snap.value(v, key)?.map(|value| (v, value))))
        })
    }

    /// Calls `f` with every (entity key bytes, value) of `version` in key order,
    /// inside one read transaction; stops when `f` returns `false`.
    pub fn for_each(
        &self,
        version: u64,
        mut f: impl FnMut(&[u8], ValueRef<'_>) -> bool,
    ) -> Result<()> {
        self.read_versions(|snap| {
            snap.record(version)?;
            snap.scan(version, |k, v| Ok(f(k, v)))
        })
    }

    /// Number of stored predictions of `version`.
    pub fn len(&self, version: u64) -> Result<u64> {
        self.read_versions(|snap| {
            snap.record(version)?;
            match snap.db(version)? {
                None => Ok(0),
                Some(db) => db
                    .len(snap.txn)
                    .map_err(|e| self.lmdb(format!("count the predictions of v{version}"), e)),
            }
        })
    }

    /// Runs `f` with a consistent view of the whole store (one read
    /// transaction), for checks that read many values.
    pub(crate) fn snapshot<R>(&self, f: impl FnOnce(&Snapshot<'_, '_>) -> Result<R>) -> Result<R> {
        self.read_versions(f)
    }
}

/// A consistent view of the store inside one read transaction, opening
/// version databases as it needs them (each at most once).
pub(crate) struct Snapshot<'s, 't> {
    store: &'s Store,
    txn: &'s RoTxn<'t, WithoutTls>,
    opener: &'s DatabaseOpener<'t, WithoutTls>,
    dbs: RefCell<BTreeMap<u64, Option<Database<'t, Bytes, Bytes>>>>,
}

impl<'t> Snapshot<'_, 't> {
    /// The database of `version`, `None` when it has none (dropped by gc).
    fn db(&self, version: u64) -> Result<Option<Database<'t, Bytes, Bytes>>> {
        if let Some(db) = self.dbs.borrow().get(&version) {
            return Ok(*db);
        }
        let name = version_db(version);
        let db = self
            .opener
            .open_database::<Bytes, Bytes>(self.txn, Some(&name))
            .map_err(|e| self.store.lmdb(format!("open database {name}"), e))?;
        self.dbs.borrow_mut().insert(version, db);
        Ok(db)
    }

    pub(crate) fn record(&self, version: u64) -> Result<VersionRecord> {
        self.store.must_record(self.txn, version)
    }

    pub(crate) fn value(&self, version: u64, key: &EntityKey) -> Result<Option<ValueRef<'_>>> {
        match key {
            EntityKey::Int(i) => self.value_by_bytes(version, &i.to_be_bytes()),
            EntityKey::Str(s) => self.value_by_bytes(version, s.as_bytes()),
        }
    }

    pub(crate) fn value_by_bytes(
        &self,
        version: u64,
        entity: &[u8],
    ) -> Result<Option<ValueRef<'_>>> {
        let Some(db) = self.db(version)? else {
            return Ok(None);
        };
        let Some(bytes) = db.get(self.txn, entity).map_err(|e| {
            self.store
                .lmdb(format!("read a prediction of v{version}"), e)
        })?
        else {
            return Ok(None);
        };
        ValueRef::parse(bytes).map(Some).map_err(|detail| {
            self.store.corrupt(
                version,
                format!("entity '{}': {detail}", String::from_utf8_lossy(entity)),
            )
        })
    }

    pub(crate) fn scan(
        &self,
        version: u64,
        mut f: impl FnMut(&[u8], ValueRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        let ctx = || format!("scan the predictions of v{version}");
        let Some(db) = self.db(version)? else {
            return Ok(());
        };
        let iter = db.iter(self.txn).map_err(|e| self.store.lmdb(ctx(), e))?;
        for item in iter {
            let (entity, bytes) = item.map_err(|e| self.store.lmdb(ctx(), e))?;
            let value = ValueRef::parse(bytes).map_err(|detail| {
                self.store.corrupt(
                    version,
                    format!("entity '{}': {detail}", String::from_utf8_lossy(entity)),
                )
            })?;
            if !f(entity, value)? {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
