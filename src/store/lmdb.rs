//! A small safe layer over the LMDB C library (released 0.9.x, lock format
//! version 1: the one Python's `lmdb`, Go's and Java's bindings and
//! distributions' liblmdb use, so their readers and herd share a store).
//!
//! Only what the store needs: an environment, transactions (aborted when
//! dropped), named databases, get/put/delete, cursors walking forwards or
//! backwards, and the reader table check. Every call that can fail returns
//! an [`MdbError`] carrying LMDB's code.
//!
//! Handles. A database handle (`Dbi`) opened in a transaction that commits
//! stays valid for the environment; one opened in a transaction that aborts
//! is closed with it. Only one transaction of a process may open databases
//! at a time (an LMDB rule): [`Env::opener`] is the lock that callers hold
//! for the whole life of such a transaction.

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use lmdb_sys as ffi;

/// An error code from LMDB: one of its own (`MDB_*`) or an errno.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MdbError(pub i32);

impl MdbError {
    pub fn is_map_full(self) -> bool {
        self.0 == ffi::MDB_MAP_FULL
    }

    pub fn is_map_resized(self) -> bool {
        self.0 == ffi::MDB_MAP_RESIZED
    }

    /// The device is out of space (or the user's quota is spent).
    pub fn is_disk_full(self) -> bool {
        self.0 == libc::ENOSPC || self.0 == libc::EDQUOT
    }

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            ffi::MDB_KEYEXIST => "MDB_KEYEXIST",
            ffi::MDB_NOTFOUND => "MDB_NOTFOUND",
            ffi::MDB_CORRUPTED => "MDB_CORRUPTED",
            ffi::MDB_PANIC => "MDB_PANIC",
            ffi::MDB_VERSION_MISMATCH => "MDB_VERSION_MISMATCH",
            ffi::MDB_INVALID => "MDB_INVALID",
            ffi::MDB_MAP_FULL => "MDB_MAP_FULL",
            ffi::MDB_DBS_FULL => "MDB_DBS_FULL",
            ffi::MDB_READERS_FULL => "MDB_READERS_FULL",
            ffi::MDB_TXN_FULL => "MDB_TXN_FULL",
            ffi::MDB_MAP_RESIZED => "MDB_MAP_RESIZED",
            ffi::MDB_INCOMPATIBLE => "MDB_INCOMPATIBLE",
            ffi::MDB_BAD_RSLOT => "MDB_BAD_RSLOT",
            ffi::MDB_BAD_TXN => "MDB_BAD_TXN",
            ffi::MDB_BAD_VALSIZE => "MDB_BAD_VALSIZE",
            ffi::MDB_BAD_DBI => "MDB_BAD_DBI",
            _ => return None,
        })
    }
}

impl fmt::Display for MdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_disk_full() {
            return f.write_str("disk full (no space left on the device)");
        }
        // SAFETY: mdb_strerror returns a static NUL-terminated string for
        // any code (LMDB's own, or strerror's).
        let text = unsafe { CStr::from_ptr(ffi::mdb_strerror(self.0)) }.to_string_lossy();
        match self.name() {
            Some(name) if !text.starts_with(name) => write!(f, "{name}: {text}"),
            _ => f.write_str(&text),
        }
    }
}

impl fmt::Debug for MdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MdbError({}, {self})", self.0)
    }
}

impl std::error::Error for MdbError {}

pub type MdbResult<T> = std::result::Result<T, MdbError>;

fn check(rc: libc::c_int) -> MdbResult<()> {
    if rc == 0 { Ok(()) } else { Err(MdbError(rc)) }
}

/// A database handle of one environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dbi(ffi::MDB_dbi);

/// An open LMDB environment.
pub struct Env {
    ptr: *mut ffi::MDB_env,
    opener: Mutex<()>,
}

// SAFETY: an MDB_env may be used from any thread; with MDB_NOTLS (always set
// by `Env::open`) read transactions are not tied to the thread that began
// them either.
unsafe impl Send for Env {}
// SAFETY: as above; LMDB serialises writers itself.
unsafe impl Sync for Env {}

/// The options [`Env::open`] takes.
pub struct EnvOptions {
    pub map_size: usize,
    pub max_dbs: u32,
    /// Skip the flush of meta pages at commit (`MDB_NOMETASYNC`).
    pub no_meta_sync: bool,
    /// Open for reading only (`MDB_RDONLY`): no write transaction, the data
    /// file opened read-only, and no lock file on a read-only file system.
    pub read_only: bool,
}

impl Env {
    /// Opens (creating if missing) the environment in directory `dir`, files
    /// mode 0600.
    pub fn open(dir: &Path, options: &EnvOptions) -> MdbResult<Env> {
        let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| MdbError(libc::EINVAL))?;
        let mut raw = ptr::null_mut();
        // SAFETY: plain FFI; `raw` is written on success.
        check(unsafe { ffi::mdb_env_create(&mut raw) })?;
        let env = Env {
            ptr: raw,
            opener: Mutex::new(()),
        };
        let mut flags = ffi::MDB_NOTLS;
        if options.no_meta_sync {
            flags |= ffi::MDB_NOMETASYNC;
        }
        if options.read_only {
            flags |= ffi::MDB_RDONLY;
        }
        // SAFETY: `env.ptr` is a fresh handle; `Drop` closes it on failure.
        unsafe {
            check(ffi::mdb_env_set_mapsize(env.ptr, options.map_size))?;
            check(ffi::mdb_env_set_maxdbs(env.ptr, options.max_dbs))?;
            check(ffi::mdb_env_open(env.ptr, path.as_ptr(), flags, 0o600))?;
        }
        Ok(env)
    }

    /// Clears the reader slots of processes that no longer exist; returns
    /// how many were cleared.
    pub fn reader_check(&self) -> MdbResult<u32> {
        let mut dead: libc::c_int = 0;
        // SAFETY: plain FFI on an open environment.
        check(unsafe { ffi::mdb_reader_check(self.ptr, &mut dead) })?;
        Ok(dead.max(0) as u32)
    }

    /// Sets the map size; 0 adopts the size another process set.
    ///
    /// # Safety
    /// No transaction of this process may be alive.
    pub unsafe fn set_map_size(&self, size: usize) -> MdbResult<()> {
        // SAFETY: the caller guarantees no live transaction.
        check(unsafe { ffi::mdb_env_set_mapsize(self.ptr, size) })
    }

    /// The current map size in bytes.
    pub fn map_size(&self) -> usize {
        // SAFETY: MDB_envinfo is plain data; mdb_env_info fills it.
        let mut info: ffi::MDB_envinfo = unsafe { std::mem::zeroed() };
        // SAFETY: plain FFI on an open environment.
        unsafe { ffi::mdb_env_info(self.ptr, &mut info) };
        info.me_mapsize
    }

    /// Bytes of the data file that its pages reach (the last page in use,
    /// as the meta page read at open says, plus one, times the page size).
    pub fn pages_end(&self) -> u64 {
        // SAFETY: MDB_envinfo and MDB_stat are plain data the calls fill.
        let (mut info, mut stat): (ffi::MDB_envinfo, ffi::MDB_stat) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: plain FFI on an open environment.
        unsafe {
            ffi::mdb_env_info(self.ptr, &mut info);
            ffi::mdb_env_stat(self.ptr, &mut stat);
        }
        (info.me_last_pgno as u64 + 1) * stat.ms_psize as u64
    }

    /// Entries of the main (unnamed) database: one per named database, or
    /// the keys of a program that writes there.
    pub fn main_entries(&self) -> u64 {
        // SAFETY: MDB_stat is plain data the call fills.
        let mut stat: ffi::MDB_stat = unsafe { std::mem::zeroed() };
        // SAFETY: plain FFI on an open environment.
        unsafe { ffi::mdb_env_stat(self.ptr, &mut stat) };
        stat.ms_entries as u64
    }

    /// The id of the last transaction committed to the environment, by
    /// any process, read from its meta page without a transaction.
    pub fn last_txn_id(&self) -> u64 {
        // SAFETY: MDB_envinfo is plain data the call fills.
        let mut info: ffi::MDB_envinfo = unsafe { std::mem::zeroed() };
        // SAFETY: plain FFI on an open environment.
        unsafe { ffi::mdb_env_info(self.ptr, &mut info) };
        info.me_last_txnid as u64
    }

    /// Flushes every commit to disk.
    pub fn force_sync(&self) -> MdbResult<()> {
        // SAFETY: plain FFI on an open environment.
        check(unsafe { ffi::mdb_env_sync(self.ptr, 1) })
    }

    /// The longest key LMDB accepts, in bytes.
    pub fn max_key_size(&self) -> usize {
        // SAFETY: plain FFI on an open environment.
        unsafe { ffi::mdb_env_get_maxkeysize(self.ptr) }.max(0) as usize
    }

    /// The lock a transaction that opens databases holds until it ends.
    pub fn opener(&self) -> MutexGuard<'_, ()> {
        self.opener.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read_txn(&self) -> MdbResult<Txn<'_>> {
        self.begin(ffi::MDB_RDONLY)
    }

    pub fn write_txn(&self) -> MdbResult<Txn<'_>> {
        self.begin(0)
    }

    fn begin(&self, flags: libc::c_uint) -> MdbResult<Txn<'_>> {
        let mut raw = ptr::null_mut();
        // SAFETY: plain FFI; `raw` is written on success.
        check(unsafe { ffi::mdb_txn_begin(self.ptr, ptr::null_mut(), flags, &mut raw) })?;
        Ok(Txn {
            ptr: raw,
            env: self,
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // SAFETY: every `Txn` borrows the `Env`, so none is alive.
        unsafe { ffi::mdb_env_close(self.ptr) }
    }
}

/// Bytes of LMDB's record of a named database (`MDB_db`) on a 64-bit build.
const MDB_DB_BYTES: usize = 48;

/// A named database's tree of pages ([`Txn::tree`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Levels of pages, leaves included: 0 for an empty database, 1 when
    /// the root is a leaf.
    pub depth: u16,
    pub branch_pages: u64,
    /// The root's page number: page `n` is bytes `n * page_size..` of the
    /// data file.
    pub root: u64,
    pub page_size: usize,
}

/// A transaction; aborted when dropped without [`Txn::commit`].
pub struct Txn<'e> {
    ptr: *mut ffi::MDB_txn,
    env: &'e Env,
}

fn val(bytes: &[u8]) -> ffi::MDB_val {
    ffi::MDB_val {
        mv_size: bytes.len(),
        mv_data: bytes.as_ptr() as *mut libc::c_void,
    }
}

/// # Safety
/// `v` must come from LMDB within a transaction that outlives `'t`.
unsafe fn slice<'t>(v: &ffi::MDB_val) -> &'t [u8] {
    if v.mv_size == 0 {
        return &[];
    }
    // SAFETY: LMDB hands out pointers into the map valid for the transaction.
    unsafe { std::slice::from_raw_parts(v.mv_data as *const u8, v.mv_size) }
}

impl<'e> Txn<'e> {
    /// The environment this transaction belongs to.
    /// The id of the transaction: for a read transaction, that of the
    /// last commit it sees.
    pub fn id(&self) -> u64 {
        // SAFETY: plain FFI on a live transaction.
        unsafe { ffi::mdb_txn_id(self.ptr) as u64 }
    }

    pub fn env(&self) -> &'e Env {
        self.env
    }

    /// Whether this transaction may use `db` without opening it: a handle
    /// a committed transaction of this process opened before this one
    /// began.
    pub fn knows(&self, db: Dbi) -> bool {
        let mut flags = 0;
        // SAFETY: plain FFI on a live transaction; LMDB checks the handle
        // against the transaction's table before reading anything.
        unsafe { ffi::mdb_dbi_flags(self.ptr, db.0, &mut flags) == 0 }
    }

    pub fn commit(mut self) -> MdbResult<()> {
        let txn = std::mem::replace(&mut self.ptr, ptr::null_mut());
        // SAFETY: `txn` is live; commit frees it whatever the outcome.
        check(unsafe { ffi::mdb_txn_commit(txn) })
    }

    /// Opens database `name`, creating it when `create` (write transactions
    /// only). `None` when it does not exist. The caller holds
    /// [`Env::opener`] for the life of this transaction.
    pub fn open_db(&self, name: &str, create: bool) -> MdbResult<Option<Dbi>> {
        let name = CString::new(name).map_err(|_| MdbError(libc::EINVAL))?;
        let mut dbi = 0;
        let flags = if create { ffi::MDB_CREATE } else { 0 };
        // SAFETY: plain FFI on a live transaction.
        match unsafe { ffi::mdb_dbi_open(self.ptr, name.as_ptr(), flags, &mut dbi) } {
            0 => Ok(Some(Dbi(dbi))),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(MdbError(rc)),
        }
    }

    pub fn get(&self, db: Dbi, key: &[u8]) -> MdbResult<Option<&[u8]>> {
        let mut k = val(key);
        let mut v = val(&[]);
        // SAFETY: plain FFI; LMDB does not write through the key pointer.
        match unsafe { ffi::mdb_get(self.ptr, db.0, &mut k, &mut v) } {
            // SAFETY: `v` points into the map, valid while `self` lives.
            0 => Ok(Some(unsafe { slice(&v) })),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(MdbError(rc)),
        }
    }

    /// Writes `key` = `value`; `append` asserts that `key` sorts after every
    /// key in the database (LMDB's fast path, `MDB_APPEND`).
    pub fn put(&mut self, db: Dbi, key: &[u8], value: &[u8], append: bool) -> MdbResult<()> {
        let mut k = val(key);
        let mut v = val(value);
        let flags = if append { ffi::MDB_APPEND } else { 0 };
        // SAFETY: plain FFI; LMDB copies key and value.
        check(unsafe { ffi::mdb_put(self.ptr, db.0, &mut k, &mut v, flags) })
    }

    /// Puts every entry of `entries` into `db` through one cursor. With
    /// `append` (keys ascending, each past the last one stored: LMDB's bulk
    /// load) the cursor stays at the end of the tree, so no put searches it
    /// from the root as [`Txn::put`] does; a key out of order fails with
    /// `MDB_KEYEXIST`.
    pub fn put_all<'a>(
        &mut self,
        db: Dbi,
        entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        append: bool,
    ) -> MdbResult<()> {
        let cursor = self.cursor(db)?;
        let flags = if append { ffi::MDB_APPEND } else { 0 };
        for (key, value) in entries {
            let (mut k, mut v) = (val(key), val(value));
            // SAFETY: plain FFI on a live cursor of this write transaction;
            // LMDB copies key and value.
            check(unsafe { ffi::mdb_cursor_put(cursor.ptr, &mut k, &mut v, flags) })?;
        }
        Ok(())
    }

    /// Deletes `key`; `false` when it was not there.
    pub fn delete(&mut self, db: Dbi, key: &[u8]) -> MdbResult<bool> {
        let mut k = val(key);
        // SAFETY: plain FFI.
        match unsafe { ffi::mdb_del(self.ptr, db.0, &mut k, ptr::null_mut()) } {
            0 => Ok(true),
            ffi::MDB_NOTFOUND => Ok(false),
            rc => Err(MdbError(rc)),
        }
    }

    /// Deletes database `db` and closes its handle for the whole process.
    ///
    /// # Safety
    /// No other transaction of this process may use `db`.
    pub unsafe fn drop_db(&mut self, db: Dbi) -> MdbResult<()> {
        // SAFETY: the caller guarantees nobody else uses the handle.
        check(unsafe { ffi::mdb_drop(self.ptr, db.0, 1) })
    }

    /// Where named database `name`'s tree lies in the data file, as LMDB
    /// records it in the main database (the `MDB_db` of LMDB 0.9 on a
    /// 64-bit build: depth at byte 6, branch pages at 8, root page at 40);
    /// `None` when there is no such database.
    pub fn tree(&self, name: &str) -> MdbResult<Option<Tree>> {
        let mut main = 0;
        // SAFETY: a null name asks for the main database's handle, which
        // opens nothing and changes no handle table.
        check(unsafe { ffi::mdb_dbi_open(self.ptr, ptr::null(), 0, &mut main) })?;
        let Some(rec) = self.get(Dbi(main), name.as_bytes())? else {
            return Ok(None);
        };
        if rec.len() != MDB_DB_BYTES || cfg!(not(target_pointer_width = "64")) {
            return Err(MdbError(ffi::MDB_CORRUPTED));
        }
        let word = |at: usize| u64::from_ne_bytes(rec[at..at + 8].try_into().expect("8 bytes"));
        // SAFETY: MDB_stat is plain data; mdb_stat fills it.
        let mut stat: ffi::MDB_stat = unsafe { std::mem::zeroed() };
        // SAFETY: plain FFI on a live transaction.
        check(unsafe { ffi::mdb_stat(self.ptr, main, &mut stat) })?;
        Ok(Some(Tree {
            depth: u16::from_ne_bytes([rec[6], rec[7]]),
            branch_pages: word(8),
            root: word(40),
            page_size: stat.ms_psize as usize,
        }))
    }

    /// The number of entries in `db`.
    pub fn entries(&self, db: Dbi) -> MdbResult<u64> {
        // SAFETY: MDB_stat is plain data; mdb_stat fills it.
        let mut stat: ffi::MDB_stat = unsafe { std::mem::zeroed() };
        // SAFETY: plain FFI on a live transaction.
        check(unsafe { ffi::mdb_stat(self.ptr, db.0, &mut stat) })?;
        Ok(stat.ms_entries as u64)
    }

    pub fn cursor(&self, db: Dbi) -> MdbResult<Cursor<'_>> {
        let mut raw = ptr::null_mut();
        // SAFETY: plain FFI; `raw` is written on success.
        check(unsafe { ffi::mdb_cursor_open(self.ptr, db.0, &mut raw) })?;
        Ok(Cursor {
            ptr: raw,
            _txn: PhantomData,
        })
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub fn prefix<'t>(&'t self, db: Dbi, prefix: &'t [u8]) -> MdbResult<Prefix<'t>> {
        Ok(Prefix {
            cursor: self.cursor(db)?,
            prefix,
            start: prefix,
            started: false,
        })
    }

    /// Every entry whose key is at least `start`, in key order.
    pub fn from<'t>(&'t self, db: Dbi, start: &'t [u8]) -> MdbResult<Prefix<'t>> {
        Ok(Prefix {
            cursor: self.cursor(db)?,
            prefix: &[],
            start,
            started: false,
        })
    }

    /// The last entry whose key sorts strictly before `bound`.
    pub fn last_before(&self, db: Dbi, bound: &[u8]) -> MdbResult<Option<(&[u8], &[u8])>> {
        let mut c = self.cursor(db)?;
        match c.seek(bound)? {
            Some(_) => c.step(ffi::MDB_PREV),
            None => c.step(ffi::MDB_LAST),
        }
    }

    /// The entry with the greatest key.
    pub fn last(&self, db: Dbi) -> MdbResult<Option<(&[u8], &[u8])>> {
        self.cursor(db)?.step(ffi::MDB_LAST)
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: a live transaction not yet committed.
            unsafe { ffi::mdb_txn_abort(self.ptr) }
        }
    }
}

/// A cursor over one database, closed when dropped.
pub struct Cursor<'t> {
    ptr: *mut ffi::MDB_cursor,
    _txn: PhantomData<&'t ()>,
}

impl<'t> Cursor<'t> {
    fn op(
        &mut self,
        key: Option<&[u8]>,
        op: ffi::MDB_cursor_op,
    ) -> MdbResult<Option<(&'t [u8], &'t [u8])>> {
        let mut k = val(key.unwrap_or(&[]));
        let mut v = val(&[]);
        // SAFETY: plain FFI on a live cursor.
        match unsafe { ffi::mdb_cursor_get(self.ptr, &mut k, &mut v, op) } {
            // SAFETY: both point into the map, valid for the transaction.
            0 => Ok(Some(unsafe { (slice(&k), slice(&v)) })),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(MdbError(rc)),
        }
    }

    fn step(&mut self, op: ffi::MDB_cursor_op) -> MdbResult<Option<(&'t [u8], &'t [u8])>> {
        self.op(None, op)
    }

    /// Moves to the first entry whose key is at least `key`.
    fn seek(&mut self, key: &[u8]) -> MdbResult<Option<(&'t [u8], &'t [u8])>> {
        self.op(Some(key), ffi::MDB_SET_RANGE)
    }
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        // SAFETY: a live cursor of a live transaction.
        unsafe { ffi::mdb_cursor_close(self.ptr) }
    }
}

/// Entries of a database whose key starts with a prefix, or all of them
/// (empty prefix), in key order, from the first key at least `start`.
pub struct Prefix<'t> {
    cursor: Cursor<'t>,
    prefix: &'t [u8],
    start: &'t [u8],
    started: bool,
}

impl<'t> Iterator for Prefix<'t> {
    type Item = MdbResult<(&'t [u8], &'t [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        let got = if self.started {
            self.cursor.step(ffi::MDB_NEXT)
        } else {
            self.started = true;
            if self.start.is_empty() {
                self.cursor.step(ffi::MDB_FIRST)
            } else {
                self.cursor.seek(self.start)
            }
        };
        match got {
            // (An empty prefix takes every key without a comparison.)
            Ok(Some((k, v))) if self.prefix.is_empty() || k.starts_with(self.prefix) => {
                Some(Ok((k, v)))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
