pub type Result<T> = std::result::Result<T, Error>;
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct Error;
pub struct Dataset;
pub struct Index {
    pub ids: crate::model::EntityIds,
    pub history_lens: Vec<u32>,
}
impl Dataset {
    pub fn open(_: &crate::config::Input, _: bool) -> Result<Dataset> {
        unimplemented!()
    }
    pub fn path(&self) -> &std::path::Path {
        unimplemented!()
    }
    pub fn num_rows(&self) -> u64 {
        unimplemented!()
    }
    pub fn num_features(&self) -> usize {
        unimplemented!()
    }
    pub fn scan_index(&self) -> Result<Index> {
        unimplemented!()
    }
    pub fn read_rows(&self, _: std::ops::Range<u64>) -> Result<crate::model::Rows> {
        unimplemented!()
    }
}
pub mod synth {
    use std::path::{Path, PathBuf};
    pub enum GenKind {
        TwoTower,
        Mlp,
    }
    pub struct GenOptions {
        pub kind: GenKind,
        pub users: u64,
        pub items: u32,
        pub dim: usize,
        pub features: usize,
        pub hidden: usize,
        pub seed: u64,
        pub row_group_rows: usize,
    }
    impl GenOptions {
        pub fn defaults(_: GenKind) -> GenOptions {
            unimplemented!()
        }
    }
    pub struct GenSummary {
        pub rows: u64,
        pub data: PathBuf,
        pub weights: PathBuf,
        pub data_bytes: u64,
        pub weights_bytes: u64,
    }
    pub fn generate(_: &GenOptions, _: &Path, _: &Path) -> super::Result<GenSummary> {
        unimplemented!()
    }
}
