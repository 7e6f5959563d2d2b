//! Transaction plumbing: every read and write of the store goes through
//! here, holding the process-wide gate shared (a map resize holds it
//! exclusively), growing the map on `MDB_MAP_FULL` and adopting a size
//! another process set; version databases are opened inside the transaction
//! that uses them, and read transactions end without a commit so their
//! handles give their slots back.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{MutexGuard, RwLockReadGuard};

use super::keys::{VERSION_PREFIX, be_u64, chunk_prefix, parse_chunk_key, version_db, version_key};
use super::lmdb::{Dbi, Env, MdbResult, Txn};
use super::{Result, Store, ValueRef, VersionRecord, round_map_size};
use crate::model::EntityKey;

impl Store {
    /// Resizes the map with no transaction of this process alive: to
    /// `new_size`, or to the size another process set when `None`.
    pub(super) fn resize(&self, new_size: Option<usize>) -> Result<()> {
        let _all = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        let size = match new_size {
            Some(want) if want <= self.map_size() => return Ok(()),
            Some(want) => round_map_size(want),
            None => 0,
        };
        // SAFETY: every transaction of this process holds `gate` shared; we
        // hold it exclusively, so none is alive.
        unsafe { self.inner.env.set_map_size(size) }.map_err(|e| self.lmdb("resize the map", e))
    }

    /// Flushes every commit so far to disk (chunk commits skip the metadata
    /// flush, see `open_with_map_size`).
    pub(super) fn sync(&self, what: &str) -> Result<()> {
        let _gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
        self.inner
            .env
            .force_sync()
            .map_err(|e| self.lmdb(format!("{what}: sync to disk"), e))
    }

    /// Begins a transaction with `begin`, holding the gate shared for as long
    /// as the caller keeps the guard; adopts a map size another process set.
    pub(super) fn begin<'s, T>(
        &'s self,
        what: &str,
        begin: impl Fn(&'s Env) -> MdbResult<T>,
    ) -> Result<(RwLockReadGuard<'s, ()>, T)> {
        loop {
            let gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
            match begin(&self.inner.env) {
                Ok(txn) => return Ok((gate, txn)),
                Err(e) if e.is_map_resized() => {
                    drop(gate);
                    self.resize(None)?;
                }
                Err(e) => return Err(self.lmdb(format!("{what}: begin a transaction"), e)),
            }
        }
    }

    /// Runs `attempt` (one whole write transaction) again after doubling the
    /// map each time it fails with `MDB_MAP_FULL`.
    pub(super) fn grow_on_full<R>(&self, mut attempt: impl FnMut() -> Result<R>) -> Result<R> {
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
    pub(super) fn read<R>(&self, f: impl FnOnce(&Txn<'_>) -> Result<R>) -> Result<R> {
        let (_gate, txn) = self.begin("read", |env| env.read_txn())?;
        f(&txn)
    }

    /// Runs `f` in one write transaction and commits it; on `MDB_MAP_FULL` the
    /// transaction is dropped, the map doubled and `f` run again.
    pub(super) fn write<R>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Txn<'_>) -> Result<R>,
    ) -> Result<R> {
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
    pub(super) fn write_version<R>(
        &self,
        what: &str,
        version: u64,
        create: bool,
        mut f: impl FnMut(&mut Txn<'_>, Dbi) -> Result<R>,
    ) -> Result<R> {
        let name = version_db(version);
        self.grow_on_full(|| {
            let (_gate, mut txn) = self.begin(what, |env| env.write_txn())?;
            // Declared after the transaction: released once it has ended.
            let _opener = self.inner.env.opener();
            let db = txn
                .open_db(&name, create)
                .map_err(|e| self.lmdb(format!("{what}: open database {name}"), e))?
                .ok_or_else(|| self.corrupt(version, format!("database {name} is missing")))?;
            let r = f(&mut txn, db)?;
            txn.commit()
                .map_err(|e| self.lmdb(format!("{what}: commit"), e))?;
            Ok(r)
        })
    }

    /// Runs `f` in one read transaction in which version databases can be
    /// opened ([`Snapshot::db`]). The transaction ends without a commit, so
    /// the handles it opened give their slots back.
    pub(super) fn read_versions<R>(
        &self,
        f: impl FnOnce(&Snapshot<'_, '_>) -> Result<R>,
    ) -> Result<R> {
        // Declared before the transaction: a database opener's lock taken
        // during it is released only after it has ended.
        let opener = RefCell::new(None);
        let (_gate, txn) = self.begin("read", |env| env.read_txn())?;
        let snap = Snapshot {
            store: self,
            txn: &txn,
            opener: &opener,
            dbs: Default::default(),
        };
        f(&snap)
    }

    pub(super) fn get_record(&self, txn: &Txn<'_>, version: u64) -> Result<Option<VersionRecord>> {
        let Some(bytes) = txn
            .get(self.inner.meta, &version_key(version))
            .map_err(|e| self.lmdb(format!("read the record of v{version}"), e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| self.corrupt(version, format!("record is not valid JSON: {e}")))
    }

    pub(super) fn must_record(&self, txn: &Txn<'_>, version: u64) -> Result<VersionRecord> {
        self.get_record(txn, version)?
            .ok_or_else(|| self.no_such(version))
    }

    pub(super) fn put_record(&self, txn: &mut Txn<'_>, rec: &VersionRecord) -> Result<()> {
        let json = serde_json::to_vec(rec)
            .map_err(|e| self.corrupt(rec.version, format!("record does not serialise: {e}")))?;
        txn.put(self.inner.meta, &version_key(rec.version), &json, false)
            .map_err(|e| self.lmdb(format!("write the record of v{}", rec.version), e))
    }

    pub(super) fn get_u64(&self, txn: &Txn<'_>, key: &[u8]) -> Result<Option<u64>> {
        let name = String::from_utf8_lossy(key);
        match txn
            .get(self.inner.meta, key)
            .map_err(|e| self.lmdb(format!("read meta '{name}'"), e))?
        {
            None => Ok(None),
            Some(b) => be_u64(b).map(Some).ok_or_else(|| {
                self.corrupt(0, format!("meta '{name}' is {} bytes, not 8", b.len()))
            }),
        }
    }

    pub(super) fn put_u64(&self, txn: &mut Txn<'_>, key: &[u8], v: u64) -> Result<()> {
        txn.put(self.inner.meta, key, &v.to_be_bytes(), false)
            .map_err(|e| self.lmdb(format!("write meta '{}'", String::from_utf8_lossy(key)), e))
    }

    pub(super) fn ranges_in(&self, txn: &Txn<'_>, version: u64) -> Result<Vec<Range<u64>>> {
        let prefix = chunk_prefix(version);
        let iter = txn
            .prefix(self.inner.meta, prefix.as_bytes())
            .map_err(|e| self.lmdb(format!("list chunk markers of v{version}"), e))?;
        let mut out = Vec::new();
        for item in iter {
            let (key, _) =
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

    pub(super) fn records_in(&self, txn: &Txn<'_>) -> Result<Vec<VersionRecord>> {
        let iter = txn
            .prefix(self.inner.meta, VERSION_PREFIX.as_bytes())
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
}

/// A consistent view of the store inside one read transaction, opening
/// version databases as it needs them (each at most once).
pub(crate) struct Snapshot<'s, 't> {
    pub(super) store: &'s Store,
    pub(super) txn: &'s Txn<'t>,
    /// The database opener's lock, taken when the first database is opened.
    opener: &'s RefCell<Option<MutexGuard<'t, ()>>>,
    dbs: RefCell<BTreeMap<u64, Option<Dbi>>>,
}

impl<'t> Snapshot<'_, 't> {
    /// The database of `version`, `None` when it has none (dropped by gc).
    pub(super) fn db(&self, version: u64) -> Result<Option<Dbi>> {
        if let Some(db) = self.dbs.borrow().get(&version) {
            return Ok(*db);
        }
        let mut opener = self.opener.borrow_mut();
        if opener.is_none() {
            *opener = Some(self.txn.env().opener());
        }
        let name = version_db(version);
        let db = self
            .txn
            .open_db(&name, false)
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
        // No stored key is empty or longer than LMDB's keys (ids are refused
        // before commit): such an id is simply not there.
        if entity.is_empty() || entity.len() > self.store.inner.env.max_key_size() {
            return Ok(None);
        }
        let Some(bytes) = self.txn.get(db, entity).map_err(|e| {
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
        f: impl FnMut(&[u8], ValueRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        self.scan_from(version, &[], f)
    }

    /// `version`'s entries in `states.len()` key ranges split at `bounds`
    /// (ascending; range `i` holds the keys from `bounds[i - 1]` on, below
    /// `bounds[i]`), each passed to `f` with the range's state. The first
    /// range is read on this thread, the others each on a thread of its
    /// own in a read transaction that sees the very commit this one sees.
    /// A range no such transaction can read (the version's database was
    /// opened by this transaction alone, a commit came between, no thread
    /// could start) is read here after the others, so the states end the
    /// same however the ranges were read.
    pub(crate) fn scan_ranges<S: Send>(
        &self,
        version: u64,
        bounds: &[Vec<u8>],
        states: &mut [S],
        f: impl Fn(&mut S, &[u8], ValueRef<'_>) -> Result<()> + Sync,
    ) -> Result<()> {
        assert_eq!(states.len(), bounds.len() + 1, "one state a range");
        let Some(db) = self.db(version)? else {
            return Ok(());
        };
        let store = self.store;
        let read = |txn: &Txn<'_>, state: &mut S, i: usize| -> Result<()> {
            let start = if i == 0 { &[][..] } else { &bounds[i - 1][..] };
            let end = bounds.get(i).map(Vec::as_slice);
            scan_txn(store, txn, db, version, (start, end), |entity, value| {
                f(state, entity, value).map(|()| true)
            })
        };
        let (env, id) = (self.txn.env(), self.txn.id());
        let (first, others) = states.split_first_mut().expect("one range at least");
        let left = std::thread::scope(|s| -> Result<Vec<usize>> {
            let threads: Vec<_> = others
                .iter_mut()
                .enumerate()
                .map(|(k, state)| {
                    // This transaction holds the store's gate shared, so
                    // no map resize can come before the others end.
                    std::thread::Builder::new()
                        .name("herd-scan".into())
                        .spawn_scoped(s, move || -> Result<bool> {
                            let Ok(txn) = env.read_txn() else {
                                return Ok(false);
                            };
                            if txn.id() != id || !txn.knows(db) {
                                return Ok(false);
                            }
                            read(&txn, state, k + 1).map(|()| true)
                        })
                })
                .collect();
            let here = read(self.txn, first, 0);
            let mut left = Vec::new();
            for (k, thread) in threads.into_iter().enumerate() {
                match thread.map(|t| t.join()) {
                    Ok(Ok(Ok(true))) => {}
                    Ok(Ok(Ok(false))) | Err(_) => left.push(k + 1),
                    Ok(Ok(Err(e))) => return Err(e),
                    Ok(Err(panic)) => std::panic::resume_unwind(panic),
                }
            }
            here.map(|()| left)
        })?;
        for i in left {
            read(self.txn, &mut states[i], i)?;
        }
        Ok(())
    }

    /// The number of predictions `version` holds (0 without a database).
    pub(crate) fn entries(&self, version: u64) -> Result<u64> {
        let Some(db) = self.db(version)? else {
            return Ok(0);
        };
        self.txn.entries(db).map_err(|e| {
            self.store
                .lmdb(format!("count the predictions of v{version}"), e)
        })
    }

    /// [`Snapshot::scan`] from the first entity whose key is at least
    /// `start`.
    pub(crate) fn scan_from(
        &self,
        version: u64,
        start: &[u8],
        f: impl FnMut(&[u8], ValueRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        let Some(db) = self.db(version)? else {
            return Ok(());
        };
        scan_txn(self.store, self.txn, db, version, (start, None), f)
    }

    /// Every entity of `version` whose key is at least `start` and below
    /// `end` (when given), in key order, each passed to `f`.
    pub(crate) fn scan_between(
        &self,
        version: u64,
        (start, end): (&[u8], Option<&[u8]>),
        mut f: impl FnMut(&[u8], ValueRef<'_>),
    ) -> Result<()> {
        let Some(db) = self.db(version)? else {
            return Ok(());
        };
        scan_txn(self.store, self.txn, db, version, (start, end), |k, v| {
            f(k, v);
            Ok(true)
        })
    }
}

/// `version`'s entries in `db` with keys from `keys.0` on, below `keys.1`
/// when it is given, in key order, each parsed and passed to `f`
/// until it says `false`, in `txn`.
fn scan_txn(
    store: &Store,
    txn: &Txn<'_>,
    db: Dbi,
    version: u64,
    keys: (&[u8], Option<&[u8]>),
    mut f: impl FnMut(&[u8], ValueRef<'_>) -> Result<bool>,
) -> Result<()> {
    let ctx = || format!("scan the predictions of v{version}");
    for item in txn.from(db, keys.0).map_err(|e| store.lmdb(ctx(), e))? {
        let (entity, bytes) = item.map_err(|e| store.lmdb(ctx(), e))?;
        if keys.1.is_some_and(|end| entity >= end) {
            break;
        }
        let value = ValueRef::parse(bytes).map_err(|detail| {
            store.corrupt(
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
