//! A version's life: begun (`building`), its committed chunks found for
//! `--resume`, its record updated, validated or failed, flipped live (the old
//! live one retired), rolled back, and dropped by gc (never the live version
//! or the one before it).

use std::ops::Range;

use super::keys::{
    KEY_LIVE, KEY_NEXT, KEY_PREVIOUS, KEY_SINKS, chunk_key, version_db, version_key,
};
use super::lmdb::Txn;
use super::{Error, NewVersion, Result, Status, Store, VersionRecord};

/// Most sink pointers a store remembers ([`Store::note_sinks`]).
pub const MAX_NOTED_SINKS: usize = 16;

/// How long gc leaves a `building` or `failed` version alone (a crashed run
/// may still be resumed) unless told otherwise: one day.
pub const DEFAULT_GRACE_SECS: u64 = 24 * 3600;

/// What may be dropped: never the live version or the one live before it;
/// a `building` one only when `building_ok` (no coordinator may own it).
fn droppable(
    rec: &VersionRecord,
    live: Option<u64>,
    previous: Option<u64>,
    building_ok: bool,
) -> bool {
    let status_ok = match rec.status {
        Status::Retired | Status::Failed | Status::Validated => true,
        Status::Building => building_ok,
        Status::Live => false,
    };
    status_ok && Some(rec.version) != live && Some(rec.version) != previous
}

/// What `gc` drops besides the versions beyond the newest `keep`.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Versions kept, newest first (finished ones beyond it are dropped).
    pub keep: usize,
    /// `building` and `failed` versions older than this are dropped whatever
    /// `keep` says (a `building` one only when no coordinator is running).
    pub grace_secs: u64,
    /// Unix seconds, against which ages are measured.
    pub now: u64,
}

impl Retention {
    /// `keep` versions and the default grace period, measured from now.
    pub fn now(keep: usize) -> Retention {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Retention {
            keep,
            grace_secs: DEFAULT_GRACE_SECS,
            now,
        }
    }
}

impl Store {
    /// Starts a version in status `Building` and returns its number.
    pub fn begin_version(&self, v: NewVersion) -> Result<u64> {
        // `next`, or past every recorded version if a crash undid `next`
        // but not a record: a number is never used twice.
        let version = self.read(|txn| {
            let next = self.get_u64(txn, KEY_NEXT)?.unwrap_or(1);
            let newest = self.records_in(txn)?.first().map_or(0, |r| r.version);
            Ok(next.max(newest + 1))
        })?;
        let version = self.write_version("begin a version", version, true, |txn, db| {
            let next = self.get_u64(txn, KEY_NEXT)?.unwrap_or(1);
            if next > version {
                return Err(self.invalid(
                    version,
                    format!("another process began version {next} at the same time; try again"),
                ));
            }
            if self.get_record(txn, version)?.is_some() || txn.last(db).ok().flatten().is_some() {
                return Err(self.invalid(
                    version,
                    "already exists: a new version never overwrites one".into(),
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
        })?;
        // Synced: after a system crash the number stays taken.
        self.sync(&format!("begin v{version}"))?;
        Ok(version)
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

    /// Remembers `pointers` (each a sink's pointer, as [`Sink::pointer`]
    /// names it) beside those remembered before, at most
    /// [`MAX_NOTED_SINKS`], the newest kept.
    ///
    /// [`Sink::pointer`]: crate::store::sink::Sink::pointer
    pub fn note_sinks(&self, pointers: &[String]) -> Result<()> {
        let mut all = self.sinks()?;
        all.retain(|p| !pointers.contains(p));
        all.extend(pointers.iter().cloned());
        let skip = all.len().saturating_sub(MAX_NOTED_SINKS);
        let json = serde_json::to_vec(&all[skip..]).expect("a list of strings serialises");
        self.write("note the run's sinks", |txn| {
            txn.put(self.inner.meta, KEY_SINKS, &json, false)
                .map_err(|e| self.lmdb("write meta 'sinks'", e))
        })
    }

    /// The sink pointers runs of this store pushed to ([`Store::note_sinks`]).
    pub fn sinks(&self) -> Result<Vec<String>> {
        self.read(|txn| {
            let bytes = txn
                .get(self.inner.meta, KEY_SINKS)
                .map_err(|e| self.lmdb("read meta 'sinks'", e))?;
            Ok(bytes
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default())
        })
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
        self.flip_checked(to, None)
    }

    /// [`Store::flip`], if the live version is still `expected` (the one a
    /// run validated `to` against); else [`Error::LiveMoved`] and nothing
    /// changes.
    pub fn flip_from(&self, expected: Option<u64>, to: u64) -> Result<()> {
        self.flip_checked(to, Some(expected))
    }

    fn flip_checked(&self, to: u64, expected: Option<Option<u64>>) -> Result<()> {
        self.write(&format!("flip to v{to}"), |txn| {
            let mut rec = self.must_record(txn, to)?;
            let old = self.get_u64(txn, KEY_LIVE)?;
            if let Some(expected) = expected
                && old != expected
            {
                return Err(Error::LiveMoved {
                    path: self.inner.dir.clone(),
                    version: to,
                    expected,
                    found: old,
                });
            }
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

    /// Drops versions beyond the newest `keep` (only `retired`, `failed` and
    /// `validated` ones) and, at any age rank, `building` and `failed`
    /// versions older than the default grace period; never the live
    /// version or the one live before it. See [`Store::gc_with`].
    pub fn gc(&self, keep: usize) -> Result<Vec<u64>> {
        self.gc_with(Retention::now(keep))
    }

    /// Drops what `r` says may go and returns the dropped versions,
    /// ascending. A `building` version is dropped only while no other
    /// coordinator runs on this store (the run lock is held meanwhile). Each
    /// version goes in one write transaction: its record, its chunk markers
    /// and its database `v{N}`.
    pub fn gc_with(&self, r: Retention) -> Result<Vec<u64>> {
        let guard = self.no_other_coordinator()?;
        let building_ok = guard.is_some();
        let candidates = self.read(|txn| {
            let live = self.get_u64(txn, KEY_LIVE)?;
            let previous = self.get_u64(txn, KEY_PREVIOUS)?;
            self.gc_candidates(txn, &r, live, previous, building_ok)
        })?;
        let mut dropped = Vec::new();
        for v in candidates {
            if self.drop_version(v, building_ok)? {
                dropped.push(v);
            }
        }
        dropped.sort_unstable();
        if !dropped.is_empty() {
            self.sync("gc")?;
        }
        drop(guard);
        Ok(dropped)
    }

    /// The versions `r` lets go in `txn`'s store, newest first, were
    /// `live` the live version and `previous` the one live before it.
    pub(super) fn gc_candidates(
        &self,
        txn: &Txn<'_>,
        r: &Retention,
        live: Option<u64>,
        previous: Option<u64>,
        building_ok: bool,
    ) -> Result<Vec<u64>> {
        Ok(self
            .records_in(txn)?
            .into_iter()
            .enumerate()
            .filter(|(rank, rec)| {
                let old = r.now.saturating_sub(rec.created) > r.grace_secs;
                match rec.status {
                    Status::Building => old && building_ok,
                    Status::Failed => old || *rank >= r.keep,
                    _ => *rank >= r.keep,
                }
            })
            .filter(|(_, rec)| droppable(rec, live, previous, building_ok))
            .map(|(_, rec)| rec.version)
            .collect())
    }

    /// `herd store drop N`: drops version `v` now, whatever its age. Refuses
    /// the live version, the one live before it, and a `building` one while
    /// another coordinator runs on this store.
    pub fn drop_one(&self, v: u64) -> Result<()> {
        let rec = self.record(v)?;
        let (live, previous) = (self.live()?, self.previous_live()?);
        let refuse = |what: String| Error::BadStatus {
            path: self.inner.dir.clone(),
            version: v,
            status: rec.status,
            what,
        };
        if Some(v) == live {
            return Err(refuse(
                "the live version is never dropped (flip to another first)".into(),
            ));
        }
        if Some(v) == previous {
            return Err(refuse(
                "the version live before the live one is kept for a rollback".into(),
            ));
        }
        let guard = self.no_other_coordinator()?;
        if rec.status == Status::Building && guard.is_none() {
            let holder = self.run_lock_holder()?.unwrap_or_default();
            return Err(refuse(format!(
                "a coordinator is running on this store ({holder}) and may be building it"
            )));
        }
        if !self.drop_version(v, true)? {
            return Err(refuse("it changed while being dropped; try again".into()));
        }
        self.sync(&format!("drop v{v}"))?;
        drop(guard);
        Ok(())
    }

    /// Drops version `v` if it is still droppable. Holds the gate exclusively:
    /// dropping a database closes its handle for the whole process, so no
    /// other transaction of this process may be using it.
    fn drop_version(&self, v: u64, building_ok: bool) -> Result<bool> {
        let what = format!("gc: drop v{v}");
        let _all = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut txn = match self.inner.env.write_txn() {
            Ok(txn) => txn,
            Err(e) if e.is_map_resized() => {
                // SAFETY: the gate is held exclusively: no transaction of
                // this process is alive.
                unsafe { self.inner.env.set_map_size(0) }.map_err(|e| self.lmdb(&what, e))?;
                self.inner
                    .env
                    .write_txn()
                    .map_err(|e| self.lmdb(format!("{what}: begin a write transaction"), e))?
            }
            Err(e) => return Err(self.lmdb(format!("{what}: begin a write transaction"), e)),
        };
        let _opener = self.inner.env.opener();
        let live = self.get_u64(&txn, KEY_LIVE)?;
        let previous = self.get_u64(&txn, KEY_PREVIOUS)?;
        match self.get_record(&txn, v)? {
            Some(rec) if droppable(&rec, live, previous, building_ok) => {}
            _ => return Ok(false),
        }
        for r in self.ranges_in(&txn, v)? {
            txn.delete(self.inner.meta, &chunk_key(v, &r))
                .map_err(|e| self.lmdb(format!("{what}: chunk markers"), e))?;
        }
        txn.delete(self.inner.meta, &version_key(v))
            .map_err(|e| self.lmdb(format!("{what}: record"), e))?;
        let name = version_db(v);
        if let Some(db) = txn
            .open_db(&name, false)
            .map_err(|e| self.lmdb(format!("{what}: open {name}"), e))?
        {
            // SAFETY: the gate is held exclusively, so no other transaction
            // of this process uses this handle.
            unsafe { txn.drop_db(db) }.map_err(|e| self.lmdb(format!("{what}: drop {name}"), e))?;
        }
        txn.commit()
            .map_err(|e| self.lmdb(format!("{what}: commit"), e))?;
        Ok(true)
    }
}
