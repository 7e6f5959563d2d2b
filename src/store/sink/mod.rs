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

pub mod redis;

use super::{Store, ValueRef, VersionRecord};
use crate::config::SinkSettings;

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

    /// Names the pointer that moves the sink's readers, for `herd store
    /// flip` to say it did not move it (`redis redis://host:6379/0, pointer
    /// pred:live`).
    fn pointer(&self) -> String {
        self.name()
    }

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

    /// The push of the version begun last failed: the sink drops what of it
    /// arrived, so a failed push leaves nothing behind for its expiry to
    /// clean. Returns how many entries went.
    fn abandon(&mut self) -> Result<u64, String> {
        Ok(0)
    }

    /// Retention dropped `versions` from LMDB: the sink drops them too.
    /// Returns how many entries went.
    fn retire(&mut self, versions: &[u64]) -> Result<u64, String> {
        let _ = versions;
        Ok(0)
    }
}

/// The sink of one `[[output.sink]]` table, its `kind` picking the module.
/// Opening checks the sink answers, so a wrong address fails a run before it
/// starts.
pub fn open(settings: &SinkSettings) -> Result<Box<dyn Sink>, Error> {
    match settings {
        SinkSettings::Redis(s) => redis::RedisSink::open(s.clone())
            .map(|sink| Box::new(sink) as Box<dyn Sink>)
            .map_err(|message| Error {
                sink: format!("redis {}", redis::shown_url(&s.url)),
                message,
            }),
    }
}

/// Streams `version` of `store` into `sink`: `begin`, every `put` in key
/// order, `end`. Stops at the first error, after the sink dropped what of
/// the version it had taken (the message says whether it could); returns
/// how many were put.
pub fn push(store: &Store, version: u64, sink: &mut dyn Sink) -> Result<u64, Error> {
    let record = store.record(version).map_err(|e| Error {
        sink: sink.name(),
        message: e.to_string(),
    })?;
    let pushed = stream(store, &record, sink);
    pushed.map_err(|message| {
        let cleanup = match sink.abandon() {
            Ok(0) => String::new(),
            Ok(n) => format!(" (removed the {n} keys of version {version} it had written)"),
            Err(e) => format!(
                " (the keys of version {version} it had written are left until their \
                 expiry or the next retention: {e})"
            ),
        };
        Error {
            sink: sink.name(),
            message: format!("{message}{cleanup}"),
        }
    })
}

fn stream(store: &Store, record: &VersionRecord, sink: &mut dyn Sink) -> Result<u64, String> {
    sink.begin(record)?;
    let mut refused = None;
    let mut put = 0;
    store
        .for_each(record.version, |key, value| match sink.put(key, value) {
            Ok(()) => {
                put += 1;
                true
            }
            Err(e) => {
                refused = Some(e);
                false
            }
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = refused {
        return Err(e);
    }
    sink.end()?;
    Ok(put)
}

/// Tells `sink` that `version` is live.
pub fn flip(version: u64, sink: &mut dyn Sink) -> Result<(), Error> {
    sink.flip(version).map_err(|message| Error {
        sink: sink.name(),
        message,
    })
}

/// Tells `sink` that retention dropped `versions`.
pub fn retire(versions: &[u64], sink: &mut dyn Sink) -> Result<u64, Error> {
    sink.retire(versions).map_err(|message| Error {
        sink: sink.name(),
        message,
    })
}
