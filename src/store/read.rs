//! Reading predictions: one entity by key (the live pointer and the value in
//! one read transaction), zero-copy access for hot readers, a whole version
//! in key order, and the count of a version's predictions.

use super::keys::KEY_LIVE;
use super::txn::Snapshot;
use super::{Result, Store, Value, ValueRef, VersionRecord};
use crate::model::EntityKey;

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
/// pick, as [`super::json::write_f32`] writes it); non-finite values become `null`.
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

impl Store {
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
                Some(db) => snap
                    .txn
                    .entries(db)
                    .map_err(|e| self.lmdb(format!("count the predictions of v{version}"), e)),
            }
        })
    }

    /// Runs `f` with a consistent view of the whole store (one read
    /// transaction), for checks that read many values.
    pub(crate) fn snapshot<R>(&self, f: impl FnOnce(&Snapshot<'_, '_>) -> Result<R>) -> Result<R> {
        self.read_versions(f)
    }

    /// The id of the last transaction committed to the store (by any
    /// process), without a transaction.
    pub(crate) fn last_txn_id(&self) -> u64 {
        self.inner.env.last_txn_id()
    }
}

/// What a long-lived reader (`herd serve`, `herd store export`) asks inside
/// one read transaction: the live pointer and version records next to the
/// values, so that a request answering several keys, or the pointer and a
/// value, never sees two versions.
impl Snapshot<'_, '_> {
    /// The live version in this snapshot, if any.
    pub(crate) fn live(&self) -> Result<Option<u64>> {
        self.store.get_u64(self.txn, KEY_LIVE)
    }

    /// The id of the last commit this snapshot sees: while
    /// [`Store::last_txn_id`] still gives it, nothing has changed since.
    pub(crate) fn txn_id(&self) -> u64 {
        self.txn.id()
    }

    /// The record of `version`, `None` when there is no such version.
    pub(crate) fn find_record(&self, version: u64) -> Result<Option<VersionRecord>> {
        self.store.get_record(self.txn, version)
    }

    /// Every version's record, newest first.
    pub(crate) fn records(&self) -> Result<Vec<VersionRecord>> {
        self.store.records_in(self.txn)
    }
}
