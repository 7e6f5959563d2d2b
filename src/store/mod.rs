//! The LMDB prediction store: versions, chunk commits, validation, flip, gc and
//! the reader API. (Being written.)

mod report;

pub use report::{Check, ValidationReport};
// STUB
use crate::model::{EntityIds, EntityKey, Predictions};
use std::path::Path;
pub type Result<T> = std::result::Result<T, Error>;
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct Error;
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Building,
    Validated,
    Live,
    Retired,
    Failed,
}
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub job: String,
    pub model_version: String,
    pub model_kind: String,
    pub created: u64,
    pub rows: u64,
    pub committed_rows: u64,
    pub status: Status,
    pub ttl_secs: u64,
    pub fingerprint: String,
    pub validation: Option<ValidationReport>,
    pub hosts: Vec<String>,
    pub duration_s: Option<f64>,
}
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
pub enum Value {
    Scores(Vec<f32>),
    TopK(Vec<(u32, f32)>),
}
pub struct Prediction {
    pub id: String,
    pub version: u64,
    pub model_version: String,
    pub timestamp: u64,
    pub ttl: u64,
    pub stale: bool,
    pub value: Value,
}
impl Prediction {
    pub fn to_json(&self) -> serde_json::Value {
        unimplemented!()
    }
}
pub struct Store;
impl Store {
    pub fn open(_: &Path) -> Result<Store> {
        unimplemented!()
    }
    pub fn open_existing(_: &Path) -> Result<Store> {
        unimplemented!()
    }
    pub fn begin_version(&self, _: NewVersion) -> Result<u64> {
        unimplemented!()
    }
    pub fn find_resumable(&self, _: &str, _: &str) -> Result<Option<VersionRecord>> {
        unimplemented!()
    }
    pub fn committed_ranges(&self, _: u64) -> Result<Vec<std::ops::Range<u64>>> {
        unimplemented!()
    }
    pub fn commit_chunk(
        &self,
        _: u64,
        _: std::ops::Range<u64>,
        _: &EntityIds,
        _: &Predictions,
        _: u64,
    ) -> Result<bool> {
        unimplemented!()
    }
    pub fn record(&self, _: u64) -> Result<VersionRecord> {
        unimplemented!()
    }
    pub fn update_record(&self, _: u64, _: impl FnOnce(&mut VersionRecord)) -> Result<()> {
        unimplemented!()
    }
    pub fn live(&self) -> Result<Option<u64>> {
        unimplemented!()
    }
    pub fn versions(&self) -> Result<Vec<VersionRecord>> {
        unimplemented!()
    }
    pub fn flip(&self, _: u64) -> Result<()> {
        unimplemented!()
    }
    pub fn gc(&self, _: usize) -> Result<Vec<u64>> {
        unimplemented!()
    }
    pub fn get(&self, _: &EntityKey, _: Option<u64>, _: u64) -> Result<Option<Prediction>> {
        unimplemented!()
    }
    pub fn len(&self, _: u64) -> Result<u64> {
        unimplemented!()
    }
}
pub mod validate {
    use crate::model::{EntityIds, EntityKey};
    pub struct ValidationPlan {
        pub ids: EntityIds,
        pub top_k: Option<usize>,
        pub sample: Vec<SampleRow>,
        pub tolerance: f32,
        pub cfg: crate::config::Validate,
    }
    pub struct SampleRow {
        pub key: EntityKey,
        pub history: Vec<u32>,
        pub expected: super::Value,
    }
    pub fn validate(
        _: &super::Store,
        _: u64,
        _: Option<u64>,
        _: &ValidationPlan,
    ) -> super::Result<super::ValidationReport> {
        unimplemented!()
    }
}
pub mod bench {
    pub fn run(_: bool) -> super::Result<String> {
        unimplemented!()
    }
}
