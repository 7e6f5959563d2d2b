//! The keys of the `meta` database and the names of version databases.

use std::ops::Range;

pub(super) const KEY_LIVE: &[u8] = b"live";
pub(super) const KEY_PREVIOUS: &[u8] = b"previous";
pub(super) const KEY_NEXT: &[u8] = b"next";
pub(super) const KEY_FORMAT: &[u8] = b"format";
/// JSON list of the pointers of the sinks runs pushed to (`redis
/// redis://host:6379/0, pointer pred:live`), for `herd store flip` to name.
pub(super) const KEY_SINKS: &[u8] = b"sinks";
pub(super) const KEY_WRITTEN_BY: &[u8] = b"format/written_by";
pub(super) const VERSION_PREFIX: &str = "version/";

pub(super) fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The name of the database holding `version`'s predictions.
pub fn version_db(version: u64) -> String {
    format!("v{version}")
}

pub(super) fn version_key(version: u64) -> Vec<u8> {
    format!("{VERSION_PREFIX}{version}").into_bytes()
}

pub(super) fn chunk_prefix(version: u64) -> String {
    format!("chunk/{version}/")
}

pub(super) fn chunk_key(version: u64, rows: &Range<u64>) -> Vec<u8> {
    format!(
        "{}{:016x}-{:016x}",
        chunk_prefix(version),
        rows.start,
        rows.end
    )
    .into_bytes()
}

pub(super) fn parse_chunk_key(key: &[u8], prefix: &str) -> Option<Range<u64>> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (a, b) = rest.split_once('-')?;
    Some(u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?)
}
