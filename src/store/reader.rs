//! What a long-lived reader (`herd serve`, `herd store export`) asks inside
//! one read transaction: the live pointer and version records next to the
//! values, so that a request answering several keys, or the pointer and a
//! value, never sees two versions.

use super::{KEY_LIVE, Result, Snapshot, VersionRecord};

impl Snapshot<'_, '_> {
    /// The live version in this snapshot, if any.
    pub(crate) fn live(&self) -> Result<Option<u64>> {
        self.store.get_u64(self.txn, KEY_LIVE)
    }

    /// The record of `version`, `None` when there is no such version.
    pub(crate) fn find_record(&self, version: u64) -> Result<Option<VersionRecord>> {
        self.store.get_record(self.txn, version)
    }
}

impl Snapshot<'_, '_> {
    /// Every version's record, newest first.
    pub(crate) fn records(&self) -> Result<Vec<VersionRecord>> {
        self.store.records_in(self.txn)
    }
}
