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
//! Layout: one LMDB environment with two named databases.
//! - `meta`: `live` and `previous` (u64 big-endian: the live version and the
//!   one live before it), `next` (the next version number; numbers are never
//!   reused), `version/{N}` (a JSON [`VersionRecord`]) and
//!   `chunk/{N}/{start:016x}-{end:016x}` (empty values: row ranges of
//!   committed chunks).
//! - `predictions`: key = version (u64 big-endian) followed by the entity key
//!   bytes ([`EntityKey::to_bytes`]); value = the layout of [`value`].
//!
//! All versions share the `predictions` database rather than one database
//! each: LMDB never frees a handle slot that a process opened (heed cannot
//! close one), so a long-lived reader would run out of slots after `max_dbs`
//! versions, and every transaction pays for each handle the process holds.
//! With two databases a reader works after any number of versions.
//!
//! A store grows its map on `MDB_MAP_FULL` and adopts a size grown by another
//! process on `MDB_MAP_RESIZED`; a process-wide gate keeps every transaction of
//! this process out of the way while it does.

mod report;
pub mod bench;
pub mod validate;
pub mod value;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use heed::types::{Bytes, DecodeIgnore};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, MdbError, PutFlags, RoTxn, RwTxn, WithoutTls};
use serde::{Deserialize, Serialize};

use crate::model::{EntityIds, EntityKey, Predictions};

pub use report::{Check, ValidationReport};
pub use value::{Value, ValueKind, ValueRef};

/// The map size a new store starts with. The file is sparse, so this costs
/// address space, not disk; the map grows past it when full.
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// Rows deleted per write transaction when gc drops a version, so that
/// dropping a large version never builds one huge transaction.
pub const GC_BATCH_ROWS: usize = 20_000;

const META_DB: &str = "meta";
const PREDICTIONS_DB: &str = "predictions";
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
/// f32 (`3.21`, not `3.2100000381469727`); non-finite values become `null`.
fn json_f32(x: f32) -> serde_json::Value {
    x.to_string()
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
    preds: Database<'static, Bytes, Bytes>,
    /// Held shared by every transaction of this process and exclusively while
    /// the map is resized (LMDB requires no live transaction then).
    gate: RwLock<()>,
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
        f.debug_struct("Store").field("dir", &self.inner.dir).finish()
    }
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn version_key(version: u64) -> Vec<u8> {
    format!("{VERSION_PREFIX}{version}").into_bytes()
}

fn chunk_prefix(version: u64) -> String {
    format!("chunk/{version}/")
}

fn chunk_key(version: u64, rows: &Range<u64>) -> Vec<u8> {
    format!("{}{:016x}-{:016x}", chunk_prefix(version), rows.start, rows.end).into_bytes()
}

fn parse_chunk_key(key: &[u8], prefix: &str) -> Option<Range<u64>> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (a, b) = rest.split_once('-')?;
    Some(u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?)
}

fn round_map_size(bytes: usize) -> usize {
    bytes.max(MAP_GRANULE).div_ceil(MAP_GRANULE) * MAP_GRANULE
}

/// The entity keys and encoded values of one chunk, sorted by key, one entry
/// per distinct key (the last row of a repeated id wins).
struct EncodedChunk {
    keys: Vec<Vec<u8>>,
    values: Vec<u8>,
    spans: Vec<Range<usize>>,
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
            return Err(Error::NoStore { path: dir.to_path_buf() });
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
        options.map_size(round_map_size(map_size)).max_dbs(4);
        // SAFETY: the store files are only ever touched through LMDB, by this
        // process (one Env per directory, see `OPEN`) and other herd processes.
        let env = unsafe { options.open(&canonical) }.map_err(|e| lmdb("open", e))?;
        let wtxn = env.write_txn().map_err(|e| lmdb("open", e))?;
        let (meta, preds) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                let meta = dbo.create_database::<Bytes, Bytes>(wtxn, Some(META_DB))?;
                let preds = dbo.create_database::<Bytes, Bytes>(wtxn, Some(PREDICTIONS_DB))?;
                Ok(CommitOrAbort::<_, ()>::Commit((meta, preds)))
            })
            .map_err(|e| lmdb("create the meta and predictions databases", e))?
            .unwrap_commit();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            env,
            meta,
            preds,
            gate: RwLock::new(()),
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

    /// Runs `f` in one read transaction.
    fn read<R>(&self, f: impl FnOnce(&RoTxn<'_, WithoutTls>) -> Result<R>) -> Result<R> {
        loop {
            let gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
            match self.inner.env.read_txn() {
                Ok(txn) => return f(&txn),
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    drop(gate);
                    self.resize(None)?;
                }
                Err(e) => return Err(self.lmdb("begin a read transaction", e)),
            }
        }
    }

    /// Runs `f` in one write transaction and commits it; on `MDB_MAP_FULL` the
    /// transaction is dropped, the map doubled and `f` run again.
    fn write<R>(&self, what: &str, mut f: impl FnMut(&mut RwTxn<'_>) -> Result<R>) -> Result<R> {
        loop {
            let gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
            let mut txn = match self.inner.env.write_txn() {
                Ok(txn) => txn,
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    drop(gate);
                    self.resize(None)?;
                    continue;
                }
                Err(e) => return Err(self.lmdb(format!("{what}: begin a write transaction"), e)),
            };
            let outcome = f(&mut txn).and_then(|r| {
                txn.commit()
                    .map(|()| r)
                    .map_err(|e| self.lmdb(format!("{what}: commit"), e))
            });
            match outcome {
                Err(e) if e.is_map_full() => {
                    drop(gate);
                    self.resize(Some(self.map_size().saturating_mul(2)))?;
                }
                other => return other,
            }
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
            Some(b) => be_u64(b)
                .map(Some)
                .ok_or_else(|| self.corrupt(0, format!("meta '{name}' is {} bytes, not 8", b.len()))),
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
        self.write("begin a version", |txn| {
            let version = self.get_u64(txn, KEY_NEXT)?.unwrap_or(1);
            if v.ttl_secs > u64::from(u32::MAX) {
                return Err(self.invalid(
                    version,
                    format!("ttl {} s does not fit the value header (max {} s)", v.ttl_secs, u32::MAX),
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
            };
            self.put_record(txn, &rec)?;
            self.put_u64(txn, KEY_NEXT, version + 1)?;
            Ok(version)
        })
    }

    /// The newest `Building` version of `job` with this fingerprint.
    pub fn find_resumable(&self, job: &str, fingerprint: &str) -> Result<Option<VersionRecord>> {
        Ok(self.versions()?.into_iter().find(|r| {
            r.status == Status::Building && r.job == job && r.fingerprint == fingerprint
        }))
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
            let (key, ()) = item.map_err(|e| self.lmdb(format!("list chunk markers of v{version}"), e))?;
            let range = parse_chunk_key(key, &prefix).ok_or_else(|| {
                self.corrupt(version, format!("chunk marker '{}'", String::from_utf8_lossy(key)))
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
    ) -> Result<EncodedChunk> {
        let n = ids.len();
        let what = format!("chunk rows {}..{}", rows.start, rows.end);
        if rows.is_empty() {
            return Err(self.invalid(version, format!("{what}: empty row range")));
        }
        if (rows.end - rows.start) != n as u64 || preds.len() != n {
            return Err(self.invalid(
                version,
                format!("{what}: {} rows, but {n} ids and {} predictions", rows.end - rows.start, preds.len()),
            ));
        }
        let timestamp = u32::try_from(timestamp).map_err(|_| {
            self.invalid(version, format!("timestamp {timestamp} does not fit the value header (u32)"))
        })?;
        let model_ref = u32::try_from(version).map_err(|_| {
            self.invalid(version, "version number does not fit the value header (u32)".into())
        })?;
        let max_key = self.inner.env.max_key_size() - 8;
        let count_of = |i: usize| -> usize {
            match preds {
                Predictions::Scores { width, .. } => *width,
                Predictions::TopK { offsets, .. } => (offsets[i + 1] - offsets[i]) as usize,
            }
        };
        match preds {
            Predictions::Scores { width, values } => {
                if values.len() != width * n {
                    return Err(self.invalid(
                        version,
                        format!("{what}: {} scores for {n} rows of width {width}", values.len()),
                    ));
                }
            }
            Predictions::TopK { offsets, items, scores } => {
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
        let mut order: Vec<(Vec<u8>, usize)> = (0..n).map(|i| (ids.key(i).to_bytes(), i)).collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        order.dedup_by(|later, earlier| later.0 == earlier.0);
        let mut out = EncodedChunk {
            keys: Vec::with_capacity(order.len()),
            values: Vec::new(),
            spans: Vec::with_capacity(order.len()),
        };
        for (entity, i) in order {
            if entity.len() > max_key || entity.is_empty() {
                return Err(self.invalid(
                    version,
                    format!("{what}: entity id '{}' is {} bytes; ids must be 1..={max_key} bytes", ids.key(i), entity.len()),
                ));
            }
            let count = count_of(i);
            if count > value::MAX_COUNT {
                return Err(self.invalid(
                    version,
                    format!("{what}: entity '{}' has {count} scores; a value holds at most {}", ids.key(i), value::MAX_COUNT),
                ));
            }
            let start = out.values.len();
            let kind = match preds {
                Predictions::Scores { .. } => ValueKind::Scores,
                Predictions::TopK { .. } => ValueKind::TopK,
            };
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
            match preds {
                Predictions::Scores { width, values } => {
                    for s in &values[i * width..(i + 1) * width] {
                        out.values.extend_from_slice(&s.to_le_bytes());
                    }
                }
                Predictions::TopK { offsets, items, scores } => {
                    for j in offsets[i] as usize..offsets[i + 1] as usize {
                        out.values.extend_from_slice(&items[j].to_le_bytes());
                        out.values.extend_from_slice(&scores[j].to_le_bytes());
                    }
                }
            }
            let mut key = version.to_be_bytes().to_vec();
            key.extend_from_slice(&entity);
            out.keys.push(key);
            out.spans.push(start..out.values.len());
        }
        Ok(out)
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
        let mut chunk = self.encode_chunk(version, &rows, ids, preds, timestamp)?;
        let what = format!("commit chunk rows {}..{} of v{version}", rows.start, rows.end);
        let mut ttl_set = false;
        self.write(&what, |txn| {
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
            let last = self
                .inner
                .preds
                .remap_data_type::<DecodeIgnore>()
                .last(txn)
                .map_err(|e| self.lmdb(&what, e))?
                .map(|(k, ())| k.to_vec());
            let append = match (&last, chunk.keys.first()) {
                (Some(last), Some(first)) => first.as_slice() > last.as_slice(),
                _ => true,
            };
            let flags = if append { PutFlags::APPEND } else { PutFlags::empty() };
            for (key, span) in chunk.keys.iter().zip(&chunk.spans) {
                self.inner
                    .preds
                    .put_with_flags(txn, flags, key, &chunk.values[span.clone()])
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

    /// The record of `version`.
    pub fn record(&self, version: u64) -> Result<VersionRecord> {
        self.read(|txn| self.must_record(txn, version))
    }

    /// Changes the record of `version` in one write transaction. The version
    /// number cannot change, and a version goes live or leaves live only
    /// through [`Store::flip`].
    pub fn update_record(&self, version: u64, f: impl FnOnce(&mut VersionRecord)) -> Result<()> {
        let mut f = Some(f);
        self.write(&format!("update the record of v{version}"), |txn| {
            let mut rec = self.must_record(txn, version)?;
            let before = rec.status;
            if let Some(f) = f.take() {
                f(&mut rec);
            }
            rec.version = version;
            if (before == Status::Live) != (rec.status == Status::Live) {
                return Err(Error::BadStatus {
                    path: self.inner.dir.clone(),
                    version,
                    status: before,
                    what: format!("cannot set status {} by a record update; use flip", rec.status),
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
                self.corrupt(0, format!("record '{}' is not valid JSON: {e}", String::from_utf8_lossy(key)))
            })?;
            out.push(rec);
        }
        out.sort_by(|a, b| b.version.cmp(&a.version));
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
        })
    }

    /// Drops versions beyond the newest `keep`: only `Retired`, `Failed` and
    /// `Validated` ones, never the live version or the one live before it,
    /// never a `Building` one. Returns the dropped versions, ascending. The
    /// records go in one transaction; the predictions follow in batches of
    /// [`GC_BATCH_ROWS`] (a crash between leaves rows with no record, which the
    /// next gc removes).
    pub fn gc(&self, keep: usize) -> Result<Vec<u64>> {
        let mut dropped = self.write("gc", |txn| {
            let live = self.get_u64(txn, KEY_LIVE)?;
            let previous = self.get_u64(txn, KEY_PREVIOUS)?;
            let mut dropped = Vec::new();
            for rec in self.records_in(txn)?.into_iter().skip(keep) {
                let v = rec.version;
                let droppable = matches!(rec.status, Status::Retired | Status::Failed | Status::Validated);
                if !droppable || Some(v) == live || Some(v) == previous {
                    continue;
                }
                for r in self.ranges_in(txn, v)? {
                    self.inner
                        .meta
                        .delete(txn, &chunk_key(v, &r))
                        .map_err(|e| self.lmdb(format!("gc: drop chunk markers of v{v}"), e))?;
                }
                self.inner
                    .meta
                    .delete(txn, &version_key(v))
                    .map_err(|e| self.lmdb(format!("gc: drop the record of v{v}"), e))?;
                dropped.push(v);
            }
            Ok(dropped)
        })?;
        dropped.sort_unstable();
        self.sweep_orphan_rows()?;
        Ok(dropped)
    }

    /// Deletes prediction rows whose version has no record.
    fn sweep_orphan_rows(&self) -> Result<()> {
        let mut from = 0u64;
        loop {
            let step = self.write("gc: drop predictions", |txn| {
                let Some((key, ())) = self
                    .inner
                    .preds
                    .remap_data_type::<DecodeIgnore>()
                    .get_greater_than_or_equal_to(txn, &from.to_be_bytes())
                    .map_err(|e| self.lmdb("gc: find predictions", e))?
                else {
                    return Ok(None);
                };
                let v = key.get(..8).and_then(be_u64).ok_or_else(|| {
                    self.corrupt(0, format!("prediction key of {} bytes has no version prefix", key.len()))
                })?;
                if self.get_record(txn, v)?.is_some() {
                    return Ok(Some(v.checked_add(1)));
                }
                let prefix = v.to_be_bytes();
                let mut iter = self
                    .inner
                    .preds
                    .remap_data_type::<DecodeIgnore>()
                    .prefix_iter_mut(txn, &prefix)
                    .map_err(|e| self.lmdb(format!("gc: drop predictions of v{v}"), e))?;
                let mut n = 0;
                while n < GC_BATCH_ROWS {
                    match iter.next() {
                        None => break,
                        Some(Err(e)) => return Err(self.lmdb(format!("gc: drop predictions of v{v}"), e)),
                        Some(Ok(_)) => {
                            // SAFETY: no reference into the database is kept
                            // across this deletion.
                            unsafe { iter.del_current() }
                                .map_err(|e| self.lmdb(format!("gc: drop predictions of v{v}"), e))?;
                            n += 1;
                        }
                    }
                }
                Ok(Some(Some(v)))
            })?;
            match step {
                None | Some(None) => return Ok(()),
                Some(Some(next)) => from = next,
            }
        }
    }

    /// Reads the live pointer (or uses `version`) and the value of `key` in ONE
    /// read transaction. `now` (unix seconds) decides `stale`. `Ok(None)`: no
    /// live version, or no prediction for `key`.
    pub fn get(&self, key: &EntityKey, version: Option<u64>, now: u64) -> Result<Option<Prediction>> {
        self.read(|txn| {
            let v = match version {
                Some(v) => v,
                None => match self.get_u64(txn, KEY_LIVE)? {
                    Some(v) => v,
                    None => return Ok(None),
                },
            };
            let rec = self.must_record(txn, v)?;
            let Some(value) = self.value_in(txn, v, key)? else {
                return Ok(None);
            };
            let model_version = if u64::from(value.model_ref()) == v {
                rec.model_version
            } else {
                self.get_record(txn, u64::from(value.model_ref()))?
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

    fn value_in<'t>(&self, txn: &'t RoTxn<'_>, version: u64, key: &EntityKey) -> Result<Option<ValueRef<'t>>> {
        let mut buf = [0u8; 16];
        let owned;
        let full: &[u8] = match key {
            EntityKey::Int(i) => {
                buf[..8].copy_from_slice(&version.to_be_bytes());
                buf[8..].copy_from_slice(&i.to_be_bytes());
                &buf
            }
            EntityKey::Str(s) => {
                let mut k = version.to_be_bytes().to_vec();
                k.extend_from_slice(s.as_bytes());
                owned = k;
                &owned
            }
        };
        self.value_at(txn, version, full)
    }

    fn value_at<'t>(&self, txn: &'t RoTxn<'_>, version: u64, full_key: &[u8]) -> Result<Option<ValueRef<'t>>> {
        let Some(bytes) = self
            .inner
            .preds
            .get(txn, full_key)
            .map_err(|e| self.lmdb(format!("read a prediction of v{version}"), e))?
        else {
            return Ok(None);
        };
        ValueRef::parse(bytes).map(Some).map_err(|detail| {
            self.corrupt(version, format!("entity '{}': {detail}", String::from_utf8_lossy(&full_key[8..])))
        })
    }

    /// Zero-copy access for hot readers: calls `f` inside one read transaction
    /// with the live version and the value view of `key`, or with `None` when
    /// there is no live version or no prediction for `key`.
    pub fn with_value<R>(&self, key: &EntityKey, f: impl FnOnce(Option<(u64, ValueRef<'_>)>) -> R) -> Result<R> {
        self.read(|txn| {
            let Some(v) = self.get_u64(txn, KEY_LIVE)? else {
                return Ok(f(None));
            };
            Ok(f(self.value_in(txn, v, key)?.map(|value| (v, value))))
        })
    }

    /// Calls `f` with every (entity key bytes, value) of `version` in key order,
    /// inside one read transaction; stops when `f` returns `false`.
    pub fn for_each(&self, version: u64, mut f: impl FnMut(&[u8], ValueRef<'_>) -> bool) -> Result<()> {
        self.read(|txn| {
            self.must_record(txn, version)?;
            self.scan(txn, version, |k, v| Ok(f(k, v)))
        })
    }

    fn scan(
        &self,
        txn: &RoTxn<'_>,
        version: u64,
        mut f: impl FnMut(&[u8], ValueRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        let ctx = || format!("scan the predictions of v{version}");
        let iter = self
            .inner
            .preds
            .prefix_iter(txn, &version.to_be_bytes())
            .map_err(|e| self.lmdb(ctx(), e))?;
        for item in iter {
            let (key, bytes) = item.map_err(|e| self.lmdb(ctx(), e))?;
            let entity = &key[8..];
            let value = ValueRef::parse(bytes).map_err(|detail| {
                self.corrupt(version, format!("entity '{}': {detail}", String::from_utf8_lossy(entity)))
            })?;
            if !f(entity, value)? {
                break;
            }
        }
        Ok(())
    }

    /// Number of stored predictions of `version`.
    pub fn len(&self, version: u64) -> Result<u64> {
        self.read(|txn| {
            self.must_record(txn, version)?;
            let iter = self
                .inner
                .preds
                .remap_data_type::<DecodeIgnore>()
                .prefix_iter(txn, &version.to_be_bytes())
                .map_err(|e| self.lmdb(format!("count the predictions of v{version}"), e))?;
            let mut n = 0;
            for item in iter {
                item.map_err(|e| self.lmdb(format!("count the predictions of v{version}"), e))?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Runs `f` with a consistent view of the whole store (one read
    /// transaction), for checks that read many values.
    pub(crate) fn snapshot<R>(&self, f: impl FnOnce(&Snapshot<'_, '_>) -> Result<R>) -> Result<R> {
        self.read(|txn| f(&Snapshot { store: self, txn }))
    }
}

/// A consistent view of the store inside one read transaction.
pub(crate) struct Snapshot<'s, 't> {
    store: &'s Store,
    txn: &'s RoTxn<'t, WithoutTls>,
}

impl Snapshot<'_, '_> {
    pub(crate) fn record(&self, version: u64) -> Result<VersionRecord> {
        self.store.must_record(self.txn, version)
    }

    pub(crate) fn value(&self, version: u64, key: &EntityKey) -> Result<Option<ValueRef<'_>>> {
        self.store.value_in(self.txn, version, key)
    }

    pub(crate) fn value_by_bytes(&self, version: u64, entity: &[u8]) -> Result<Option<ValueRef<'_>>> {
        let mut full = version.to_be_bytes().to_vec();
        full.extend_from_slice(entity);
        self.store.value_at(self.txn, version, &full)
    }

    pub(crate) fn scan(
        &self,
        version: u64,
        f: impl FnMut(&[u8], ValueRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        self.store.scan(self.txn, version, f)
    }
}
