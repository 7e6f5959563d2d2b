//! Outputs beside the LMDB store: a [`Sink`] is where a version goes once it
//! passed the gate (a key-value server, a file format), and is told of the
//! flip once LMDB made it.
//!
//! LMDB stays the record of versions: chunk commits, first finisher wins,
//! the gate and the flip all happen there. A sink only ever sees a whole
//! validated version, streamed to it in key order from one read
//! transaction (memory stays bounded by what the sink itself buffers), and
//! the order is fixed: push to every sink -> flip LMDB -> flip every sink.
//! A sink is one module in this folder (`sink/<name>.rs`, declared below)
//! implementing [`Sink`]; the coordinator takes a list of them
//! (`run::Options::sinks`) and pushes every validated version to each.

use super::{Store, ValueRef, VersionRecord};

/// A sink's failure, naming the sink.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct Error {
    pub sink: String,
    pub message: String,
}

/// An output that receives validated versions.
pub trait Sink: Send {
    /// Names the sink in messages (`redis redis://127.0.0.1:6379/0`).
    fn name(&self) -> String;

    /// A new version is coming: its record (number, job, model version,
    /// ttl). Readers of the sink must not see it yet.
    fn begin(&mut self, version: &VersionRecord) -> Result<(), String>;

    /// One prediction of the version, in key order: the entity key bytes
    /// (u64 big-endian for integer ids, UTF-8 for string ids) and the value
    /// as the store holds it. Borrowed for this call only.
    fn put(&mut self, key: &[u8], value: ValueRef<'_>) -> Result<(), String>;

    /// Every prediction was put: the version is complete in the sink, still
    /// not visible to its readers.
    fn end(&mut self) -> Result<(), String>;

    /// LMDB flipped readers to `version`: the sink moves its own readers.
    fn flip(&mut self, version: u64) -> Result<(), String>;
}

/// Streams `version` of `store` into `sink`: `begin`, every `put` in key
/// order, `end`. Stops at the first error.
pub fn push(store: &Store, version: u64, sink: &mut dyn Sink) -> Result<(), Error> {
    let fail = |message: String, sink: &dyn Sink| Error {
        sink: sink.name(),
        message,
    };
    let record = store
        .record(version)
        .map_err(|e| fail(e.to_string(), sink))?;
    sink.begin(&record).map_err(|e| fail(e, sink))?;
    let mut refused = None;
    store
        .for_each(version, |key, value| match sink.put(key, value) {
            Ok(()) => true,
            Err(e) => {
                refused = Some(e);
                false
            }
        })
        .map_err(|e| fail(e.to_string(), sink))?;
    if let Some(e) = refused {
        return Err(fail(e, sink));
    }
    sink.end().map_err(|e| fail(e, sink))
}

/// Tells `sink` that `version` is live.
pub fn flip(version: u64, sink: &mut dyn Sink) -> Result<(), Error> {
    sink.flip(version).map_err(|message| Error {
        sink: sink.name(),
        message,
    })
}
