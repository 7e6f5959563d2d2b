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
//! Files: `keys.rs` (the layout below), `txn.rs` (transactions, the gate,
//! map growth), `versions.rs` (a version's life: begin, records, flip, gc),
//! `commit.rs` (chunk commits), `read.rs` (the reader API), `validate.rs`
//! (the gate), `sink.rs` (outputs beside LMDB), `value.rs` (the value
//! layout).
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
mod commit;
mod keys;
mod read;
mod report;
pub mod sink;
mod txn;
pub mod validate;
pub mod value;
mod versions;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, MdbError, WithoutTls};
use serde::{Deserialize, Serialize};

use commit::EncodedChunk;

pub use keys::version_db;
pub use read::Prediction;
pub use report::{Check, ValidationReport};
pub(crate) use txn::Snapshot;
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

fn round_map_size(bytes: usize) -> usize {
    bytes.max(MAP_GRANULE).div_ceil(MAP_GRANULE) * MAP_GRANULE
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
}
