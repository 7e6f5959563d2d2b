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
//! Files: `keys.rs` (the layout below), `lmdb.rs` (the safe layer over the
//! released LMDB 0.9 C library, lock-compatible with other languages'
//! bindings), `txn.rs` (transactions, the gate, map growth), `versions.rs` (a version's life: begin, records, flip, gc),
//! `commit.rs` (chunk commits), `read.rs` (the reader API), `validate.rs`
//! (the gate), `sink.rs` (outputs beside LMDB), `value.rs` (the value
//! layout).
//!
//! Layout: one LMDB environment with named databases.
//! - `meta`: `live` and `previous` (u64 big-endian: the live version and the
//!   one live before it), `next` (the next version number; numbers are never
//!   reused), `format` (u32 big-endian, [`STORE_FORMAT`]) and
//!   `format/written_by` (the herd that set it), `version/{N}` (a JSON
//!   [`VersionRecord`]) and
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
mod decimal;
pub mod export;
pub mod json;
mod keys;
mod listing;
mod lmdb;
mod lock;
mod read;
mod report;
pub mod sink;
mod txn;
pub mod validate;
pub mod value;
mod versions;
mod warm;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock, Weak};

use lmdb::{Dbi, Env, EnvOptions, MdbError, Txn};
use serde::{Deserialize, Serialize};

use commit::EncodedChunk;

use crate::model::EntityIds;

pub use commit::ChunkCommit;
pub use keys::version_db;
pub use listing::versions_json;
pub use lock::{LOCK_FILE, RunLock};
pub use read::Prediction;
pub(crate) use read::json_f32;
pub use report::{Check, ValidationReport};
pub(crate) use txn::Snapshot;
pub use value::{Value, ValueKind, ValueRef};
pub use versions::{DEFAULT_GRACE_SECS, Retention};

/// The map size a new store starts with. The file is sparse, so this costs
/// address space, not disk; the map grows past it when full.
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// A store keeps the encode buffers of its last chunk commit for the next one
/// when they hold at most this many bytes in all (a 100k-row top-100 chunk
/// needs about 82 MB); the rest are freed.
pub const MAX_SCRATCH_BYTES: usize = 128 << 20;

const META_DB: &str = "meta";
/// The store format this build writes and reads (meta `format`, u32
/// big-endian). A store marked with a newer one is refused.
pub const STORE_FORMAT: u32 = 1;
/// What meta `format/written_by` says for stores this build marks.
const WRITTEN_BY: &str = concat!("herd ", env!("CARGO_PKG_VERSION"));
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
        source: MdbError,
    },
    #[error("store {} is in use by another herd run ({holder}); wait for it to finish or stop it", path.display())]
    Busy { path: PathBuf, holder: String },
    #[error("store {} has format {format}, written by {written_by}; this herd ({}) reads format {STORE_FORMAT} and older: use a newer herd", path.display(), env!("CARGO_PKG_VERSION"))]
    NewerFormat {
        path: PathBuf,
        format: u32,
        written_by: String,
    },
    #[error(
        "store {}: data.mdb is {have} bytes but its pages reach {need}: the file was cut \
         short or is being overwritten (restore the store from a copy taken with `cp` while \
         no run writes, or `mdb_copy`)",
        path.display()
    )]
    Truncated { path: PathBuf, have: u64, need: u64 },
    #[error(
        "store {} is a file, not a directory: a store is a directory holding data.mdb \
         and lock.mdb (give the directory, or a new path for a new store)",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is an LMDB environment of another program (it holds data but no herd 'meta' \
         database); herd leaves it untouched: give --store or [output] store a directory of \
         its own",
        path.display()
    )]
    NotAStore { path: PathBuf },
    #[error("store {}: no version {version} (see `herd store versions`)", path.display())]
    NoSuchVersion { path: PathBuf, version: u64 },
    #[error("store {}: v{version} is {status}: {what}", path.display())]
    BadStatus {
        path: PathBuf,
        version: u64,
        status: Status,
        what: String,
    },
    #[error(
        "store {}: the live version changed while v{version} was built and validated \
         (it was {}, it is {} now, moved by `herd store flip` or another run): v{version} \
         was checked against the old one and is left validated but not live; flip to it \
         with `herd store flip --to {version}` if it should be live",
        path.display(),
        shown_version(*expected),
        shown_version(*found)
    )]
    LiveMoved {
        path: PathBuf,
        version: u64,
        expected: Option<u64>,
        found: Option<u64>,
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
            Error::Lmdb { source, .. } if source.is_map_full()
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

/// `v3`, or `none`.
fn shown_version(v: Option<u64>) -> String {
    v.map(|v| format!("v{v}")).unwrap_or_else(|| "none".into())
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

struct Inner {
    dir: PathBuf,
    env: Env,
    meta: Dbi,
    /// The identity of the `data.mdb` opened.
    file: Option<FileId>,
    /// Opened with [`Store::open_read_only`].
    read_only: bool,
    /// Held shared by every transaction of this process and exclusively while
    /// the map is resized (LMDB requires no live transaction then).
    gate: RwLock<()>,
    /// Encode buffers kept between chunk commits (see [`MAX_SCRATCH_BYTES`]).
    scratch: Mutex<Vec<EncodedChunk>>,
    /// Run locks ([`RunLock`]) this process holds on this store.
    run_locks: AtomicUsize,
}

/// Stores open in this process, by canonical directory and the identity of
/// its `data.mdb`: LMDB must not open one environment twice in a process,
/// and a map resize must see every transaction of the process, so opening a
/// store again shares the first one. A directory whose `data.mdb` is now
/// another file (the store was replaced) is another store.
static OPEN: Mutex<Vec<OpenStore>> = Mutex::new(Vec::new());

/// An entry of [`OPEN`]: canonical directory, `data.mdb` identity, store.
type OpenStore = (PathBuf, Option<FileId>, Weak<Inner>);

/// The identity of a file: its device and inode.
pub type FileId = (u64, u64);

/// The identity of `dir/data.mdb`, symbolic links followed; `None` when it
/// does not exist (or on systems without inodes).
pub fn data_file_id(dir: &Path) -> Option<FileId> {
    file_id(&std::fs::metadata(dir.join("data.mdb")).ok()?)
}

/// The identity of the file `meta` describes (`None` on systems without
/// inodes).
fn file_id(meta: &std::fs::Metadata) -> Option<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

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

/// Below this many free bytes, an I/O error while writing the store is
/// reported as a full disk.
const NEARLY_FULL_BYTES: u64 = 1 << 20;

/// Bytes an unprivileged writer may still use on the file system of `dir`
/// (`u64::MAX` when unknown).
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return u64::MAX;
    };
    // SAFETY: statvfs is plain data, filled by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; `st` is a valid out pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return u64::MAX;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
}

/// A store is a directory: a file at its path is named as such (not "no
/// store", not "File exists").
fn refuse_a_file(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// A store to open must exist: "no store at DIR" (or, for a file there,
/// that it is a file).
fn must_exist(dir: &Path) -> Result<()> {
    if dir.join("data.mdb").is_file() {
        return Ok(());
    }
    refuse_a_file(dir)?;
    Err(Error::NoStore {
        path: dir.to_path_buf(),
    })
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
        must_exist(dir)?;
        Store::open_with_map_size(dir, DEFAULT_MAP_SIZE)
    }

    /// Opens an existing store to read it only (`herd store get`,
    /// `versions`, `export`, `herd serve`): LMDB's `MDB_RDONLY`, so nothing
    /// is written to the store's files, and a store on a read-only mount
    /// (where LMDB also does without its lock file) can be read. Shares a
    /// store this process has open already, in either mode.
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        Store::open_read_only_with_map_size(dir, DEFAULT_MAP_SIZE)
    }

    /// [`Store::open_read_only`] with a chosen initial map size (rounded up
    /// to 64 KiB; a store whose map grew past it is mapped whole).
    pub fn open_read_only_with_map_size(dir: &Path, map_size: usize) -> Result<Store> {
        must_exist(dir)?;
        Store::open_mode(dir, map_size, true)
    }

    /// [`Store::open`] with a chosen initial map size (rounded up to 64 KiB).
    /// A store already open in this process is shared, whatever the size.
    pub fn open_with_map_size(dir: &Path, map_size: usize) -> Result<Store> {
        Store::open_mode(dir, map_size, false)
    }

    fn open_mode(dir: &Path, map_size: usize, read_only: bool) -> Result<Store> {
        let io = |context: &str, source| Error::Io {
            path: dir.to_path_buf(),
            context: context.to_string(),
            source,
        };
        refuse_a_file(dir)?;
        if !read_only {
            std::fs::create_dir_all(dir).map_err(|e| io("create the store directory", e))?;
        }
        let canonical = dir
            .canonicalize()
            .map_err(|e| io("resolve the store directory", e))?;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, _, w)| w.strong_count() > 0);
        let file = data_file_id(&canonical);
        if let Some(inner) = open
            .iter()
            .find(|(p, f, _)| *p == canonical && *f == file)
            .and_then(|(_, _, w)| w.upgrade())
        {
            if inner.read_only && !read_only {
                return Err(io(
                    "open for writing",
                    std::io::Error::other("this process has it open read-only"),
                ));
            }
            return Ok(Store { inner });
        }
        let lmdb = |context: &str, e| lmdb_error(dir, context, e);
        // NO_META_SYNC keeps the store intact on a system crash but may undo
        // the last commits: chunk commits are redone by `--resume`, and the
        // commits readers rely on (begin, flip, gc) are synced explicitly.
        let options = EnvOptions {
            map_size: round_map_size(map_size),
            max_dbs: MAX_DBS,
            no_meta_sync: true,
            read_only,
        };
        let env = Env::open(&canonical, &options).map_err(|e| match e.0 {
            libc::EROFS if !read_only => lmdb(
                "open for writing (it is on a read-only file system; `herd store get`, \
                 `versions`, `export` and `herd serve` read it there)",
                e,
            ),
            _ => lmdb("open", e),
        })?;
        // Pages past the end of a cut-short file would fault (SIGBUS) when
        // read: a truncated or half-copied data.mdb is refused here.
        let data = std::fs::metadata(canonical.join("data.mdb"))
            .map_err(|e| io("read the size of data.mdb", e))?;
        let (have, need) = (data.len(), env.pages_end());
        if have < need {
            return Err(Error::Truncated {
                path: dir.to_path_buf(),
                have,
                need,
            });
        }
        // Reader slots of processes that died inside a read transaction pin
        // old pages (the file only grows) until someone clears them.
        env.reader_check()
            .map_err(|e| lmdb("clear the reader slots of dead processes", e))?;
        let meta = match read_only {
            true => read_meta(&env, dir)?,
            false => write_meta(&env, dir)?,
        };
        // The file as opened (a fresh store's did not exist at the lookup).
        let file = file_id(&data);
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            env,
            meta,
            file,
            read_only,
            gate: RwLock::new(()),
            scratch: Mutex::new(Vec::new()),
            run_locks: AtomicUsize::new(0),
        });
        open.push((canonical, file, Arc::downgrade(&inner)));
        Ok(Store { inner })
    }
}

fn lmdb_error(dir: &Path, context: &str, source: MdbError) -> Error {
    Error::Lmdb {
        path: dir.to_path_buf(),
        context: context.to_string(),
        source,
    }
}

/// The format a store's meta database records, checked: `Ok` when this
/// herd reads it.
fn check_format(txn: &Txn<'_>, meta: Dbi, dir: &Path) -> Result<Option<u32>> {
    let lmdb = |context: &str, e| lmdb_error(dir, context, e);
    let format = txn
        .get(meta, keys::KEY_FORMAT)
        .map_err(|e| lmdb("read the store format", e))?
        .map(|b| b.try_into().map(u32::from_be_bytes));
    match format {
        None => Ok(None),
        Some(Ok(f)) if f <= STORE_FORMAT => Ok(Some(f)),
        Some(found) => {
            let written_by = txn
                .get(meta, keys::KEY_WRITTEN_BY)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| "an unknown herd".into());
            Err(Error::NewerFormat {
                path: dir.to_path_buf(),
                format: found.unwrap_or(u32::MAX),
                written_by,
            })
        }
    }
}

/// The meta database of a store opened read-only (in a read transaction
/// committed so that its handle stays open).
fn read_meta(env: &Env, dir: &Path) -> Result<Dbi> {
    let lmdb = |context: &str, e| lmdb_error(dir, context, e);
    let txn = env.read_txn().map_err(|e| lmdb("open", e))?;
    let _opener = env.opener();
    let Some(meta) = txn
        .open_db(META_DB, false)
        .map_err(|e| lmdb("open the meta database", e))?
    else {
        return Err(match env.main_entries() {
            0 => Error::NoStore {
                path: dir.to_path_buf(),
            },
            _ => Error::NotAStore {
                path: dir.to_path_buf(),
            },
        });
    };
    check_format(&txn, meta, dir)?;
    txn.commit()
        .map_err(|e| lmdb("open the meta database", e))?;
    Ok(meta)
}

/// The meta database of a store opened to write: created, with the store
/// format, in a new store.
fn write_meta(env: &Env, dir: &Path) -> Result<Dbi> {
    let lmdb = |context: &str, e| lmdb_error(dir, context, e);
    let mut wtxn = env.write_txn().map_err(|e| lmdb("open", e))?;
    let _opener = env.opener();
    let found = wtxn
        .open_db(META_DB, false)
        .map_err(|e| lmdb("open the meta database", e))?;
    if found.is_none() && env.main_entries() > 0 {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
        });
    }
    let meta = wtxn
        .open_db(META_DB, true)
        .map_err(|e| lmdb("create the meta database", e))?
        .expect("a database opened with MDB_CREATE exists");
    if check_format(&wtxn, meta, dir)?.is_none() {
        wtxn.put(meta, keys::KEY_FORMAT, &STORE_FORMAT.to_be_bytes(), false)
            .and_then(|()| wtxn.put(meta, keys::KEY_WRITTEN_BY, WRITTEN_BY.as_bytes(), false))
            .map_err(|e| lmdb("mark the store format", e))?;
    }
    wtxn.commit()
        .map_err(|e| lmdb("create the meta database", e))?;
    Ok(meta)
}

impl Store {
    /// The identity of the `data.mdb` this store opened (see
    /// [`data_file_id`]).
    pub fn file_id(&self) -> Option<FileId> {
        self.inner.file
    }

    /// The directory this store was opened from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.inner.env.map_size()
    }

    fn lmdb(&self, context: impl Into<String>, source: MdbError) -> Error {
        // LMDB reports a write the device cut short as EIO: with (almost) no
        // space left, that is a full disk.
        let source = if source.0 == libc::EIO && free_bytes(&self.inner.dir) < NEARLY_FULL_BYTES {
            MdbError(libc::ENOSPC)
        } else {
            source
        };
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

    pub(crate) fn corrupt(&self, version: u64, detail: String) -> Error {
        Error::Corrupt {
            path: self.inner.dir.clone(),
            version,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_data_file_is_refused_before_any_page_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole");
        {
            let store = Store::open(&whole).unwrap();
            // Enough rows that the file spans many pages.
            let v = store
                .begin_version(NewVersion {
                    job: "j".into(),
                    model_version: "m".into(),
                    model_kind: "mlp".into(),
                    rows: 5000,
                    ttl_secs: 60,
                    fingerprint: "f".into(),
                    created: 0,
                    hosts: Vec::new(),
                })
                .unwrap();
            let ids = crate::model::EntityIds::Int((0..5000).collect());
            let preds = crate::model::Predictions::Scores {
                width: 4,
                values: vec![0.5; 20000],
            };
            assert!(store.commit_chunk(v, 0..5000, &ids, &preds, 0).unwrap());
        }
        let cut = dir.path().join("cut");
        std::fs::create_dir(&cut).unwrap();
        let bytes = std::fs::read(whole.join("data.mdb")).unwrap();
        std::fs::write(cut.join("data.mdb"), &bytes[..bytes.len() / 2]).unwrap();
        for open in [Store::open_existing, Store::open_read_only] {
            let Err(err) = open(&cut) else {
                panic!("a cut-short store was opened")
            };
            assert!(matches!(err, Error::Truncated { .. }), "{err}");
            assert!(err.to_string().contains("cut short"), "{err}");
        }
    }

    #[test]
    fn a_store_open_read_only_in_this_process_is_not_opened_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(Store::open(&path).unwrap());
        let read_only = Store::open_read_only(&path).unwrap();
        assert_eq!(read_only.live().unwrap(), None);
        let Err(err) = Store::open(&path) else {
            panic!("a store open read-only was opened to write")
        };
        assert!(err.to_string().contains("open read-only"), "{err}");
        drop(read_only);
        Store::open(&path).unwrap();
    }

    #[test]
    fn a_file_where_the_store_should_be_is_named_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        std::fs::write(&file, "x").unwrap();
        for open in [Store::open, Store::open_existing, Store::open_read_only] {
            let Err(err) = open(&file) else {
                panic!("a file was opened as a store")
            };
            assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn another_programs_lmdb_environment_is_refused_and_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let options = EnvOptions {
                map_size: 1 << 20,
                max_dbs: 4,
                no_meta_sync: false,
                read_only: false,
            };
            let env = Env::open(dir.path(), &options).unwrap();
            let mut txn = env.write_txn().unwrap();
            let db = txn.open_db("userdb", true).unwrap().unwrap();
            txn.put(db, b"userkey", b"v", false).unwrap();
            txn.commit().unwrap();
        }
        let before = std::fs::read(dir.path().join("data.mdb")).unwrap();
        for open in [Store::open_existing, Store::open_read_only] {
            let Err(err) = open(dir.path()) else {
                panic!("a foreign environment was opened")
            };
            assert!(matches!(err, Error::NotAStore { .. }), "{err}");
            assert_eq!(std::fs::read(dir.path().join("data.mdb")).unwrap(), before);
        }
    }
}
