//! A version's life: begun (`building`), its committed chunks found for
//! `--resume`, its record updated, validated or failed, flipped live (the old
//! live one retired), rolled back, and dropped by gc (never the live version
//! or the one before it).

use std::ops::Range;

use heed::types::Bytes;
use heed::{CommitOrAbort, MdbError};

use super::keys::{KEY_LIVE, KEY_NEXT, KEY_PREVIOUS, chunk_key, version_db, version_key};
use super::txn::{Committed, InTxn};
use super::{Error, NewVersion, Result, Status, Store, VersionRecord};

/// gc may drop a version that is finished and neither live nor the one live
/// before it.
fn droppable(rec: &VersionRecord, live: Option<u64>, previous: Option<u64>) -> bool {
    matches!(
        rec.status,
        Status::Retired | Status::Failed | Status::Validated
    ) && Some(rec.version) != live
        && Some(rec.version) != previous
}

impl Store {
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

    /// Row ranges of the committed chunks of `version`, ascending.
    pub fn committed_ranges(&self, version: u64) -> Result<Vec<Range<u64>>> {
        self.read(|txn| {
            self.must_record(txn, version)?;
            self.ranges_in(txn, version)
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
}
