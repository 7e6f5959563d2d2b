//! A version pushed over [`LANES`] connections side by side.
//!
//! The scan (one read transaction, one thread) only copies each entity's key
//! and value bytes into a batch; a lane thread turns a whole batch into
//! `SET {prefix}:v{N}:{id} VALUE EX secs` commands (formatting the JSON is
//! nearly all the work), writes them in one go on its own connection and
//! reads the replies, while the other lanes format theirs. Every reply must
//! be `OK`; the first that is not stops every lane.
//!
//! Memory is bounded: at most [`MAX_BATCHES`] batches of [`BATCH_ENTRIES`]
//! entities or [`BATCH_BYTES`] bytes exist (the scan waits for a lane to hand
//! one back), and each lane holds one batch's commands (about 3.4 MB of JSON
//! for 1,024 top-100 values).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redis::Value as Reply;

use crate::config::RedisEncoding;
use crate::store::json::{self, IdRef};
use crate::store::{IdKind, ValueRef};

/// Connections one push writes over at once.
pub const LANES: usize = 4;
/// Entities one batch (one pipelined write) holds at most.
pub const BATCH_ENTRIES: usize = 1_024;
/// Key and value bytes one batch holds at most (a batch closes past this).
pub const BATCH_BYTES: usize = 4 << 20;
/// Batches in existence at most: one being filled, one queued and one being
/// written per lane.
pub const MAX_BATCHES: usize = 2 * LANES + 1;

/// Entities as the scan copied them out of the store.
#[derive(Default)]
pub(super) struct Batch {
    /// Index in the version of the first entity (for messages).
    first: u64,
    /// Key bytes then value bytes of every entity, back to back.
    data: Vec<u8>,
    /// Where each entity's key and value end in `data`.
    ends: Vec<(usize, usize)>,
}

impl Batch {
    fn clear(&mut self, first: u64) {
        self.first = first;
        self.data.clear();
        self.ends.clear();
    }

    fn full(&self) -> bool {
        self.ends.len() >= BATCH_ENTRIES || self.data.len() >= BATCH_BYTES
    }
}

/// How a lane writes an entity: everything that is the same for the whole
/// version.
pub(super) struct Encoder {
    /// `{prefix}:v{N}:`
    pub key_prefix: Vec<u8>,
    pub version: u64,
    pub id_kind: Option<IdKind>,
    pub encoding: RedisEncoding,
    /// The model version as a JSON string literal.
    pub model_version_json: String,
    /// Unix seconds: decides `stale` and the expiry.
    pub now: u64,
}

/// Reused buffers of one lane.
#[derive(Default)]
struct Scratch {
    commands: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Encoder {
    /// The entity id of a key, as the version's id kind reads it.
    pub fn id<'k>(&self, key: &'k [u8]) -> Result<IdRef<'k>, String> {
        match self.id_kind {
            Some(IdKind::Int) => match <[u8; 8]>::try_from(key) {
                Ok(b) => Ok(IdRef::Int(u64::from_be_bytes(b))),
                Err(_) => Err(format!("an integer id of {} bytes", key.len())),
            },
            // A version of string ids, or one recorded before the id kind
            // was: its key bytes are the id.
            Some(IdKind::String) | None => Ok(IdRef::Str(key)),
        }
    }

    /// `{prefix}:v{N}:{id}` into `out`.
    pub fn key(&self, id: IdRef<'_>, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.key_prefix);
        id.write_text(out);
    }

    /// The value as this sink stores it, into `out`; returns the expiry.
    pub fn value(&self, id: IdRef<'_>, value: ValueRef<'_>, out: &mut Vec<u8>) -> u64 {
        out.clear();
        match self.encoding {
            RedisEncoding::Json => json::write_prediction(
                out,
                json::Fields {
                    id,
                    version: self.version,
                    model_version_json: &self.model_version_json,
                    now: self.now,
                },
                value,
            ),
            RedisEncoding::Binary => out.extend_from_slice(value.as_bytes()),
        }
        expiry(
            u64::from(value.timestamp()),
            u64::from(value.ttl()),
            self.now,
        )
    }

    /// The `SET ... EX` commands of `batch` into `s.commands`.
    fn commands(&self, batch: &Batch, s: &mut Scratch) -> Result<(), String> {
        s.commands.clear();
        let mut start = 0;
        for (i, &(key_end, value_end)) in batch.ends.iter().enumerate() {
            let key = &batch.data[start..key_end];
            let value = ValueRef::parse(&batch.data[key_end..value_end])
                .map_err(|e| format!("key {} of the version: {e}", batch.first + i as u64))?;
            start = value_end;
            let id = self.id(key)?;
            self.key(id, &mut s.key);
            let ex = self.value(id, value, &mut s.value);
            let ex = itoa::Buffer::new().format(ex).to_owned();
            write_command(
                &mut s.commands,
                &[b"SET", &s.key, &s.value, b"EX", ex.as_bytes()],
            );
        }
        Ok(())
    }
}

/// Seconds a prediction written at `timestamp` with `ttl` has left at `now`;
/// at least 1 (Redis refuses an expiry of 0), so a prediction already stale
/// is gone from the sink within a second, as it is stale in the store.
pub(super) fn expiry(timestamp: u64, ttl: u64, now: u64) -> u64 {
    timestamp.saturating_add(ttl).saturating_sub(now).max(1)
}

/// Appends one command in the Redis protocol: `*N`, then each argument as a
/// bulk string.
pub(super) fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// What the lanes share: the count of acknowledged keys and the first failure.
#[derive(Default)]
struct Shared {
    acknowledged: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, message: String) {
        let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(message);
        self.failed.store(true, Ordering::SeqCst);
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The push of one version under way.
pub(super) struct Lanes {
    queue: Option<SyncSender<Batch>>,
    returned: Receiver<Batch>,
    made: usize,
    current: Batch,
    put: u64,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// Starts one lane thread per connection.
    pub fn start(connections: Vec<redis::Connection>, encoder: Arc<Encoder>) -> Lanes {
        let (queue, queued) = sync_channel::<Batch>(connections.len());
        let queued = Arc::new(Mutex::new(queued));
        let (give_back, returned) = sync_channel::<Batch>(MAX_BATCHES);
        let shared = Arc::new(Shared::default());
        let threads = connections
            .into_iter()
            .map(|conn| {
                let (queued, give_back) = (queued.clone(), give_back.clone());
                let (encoder, shared) = (encoder.clone(), shared.clone());
                std::thread::spawn(move || lane(conn, &queued, &give_back, &encoder, &shared))
            })
            .collect();
        Lanes {
            queue: Some(queue),
            returned,
            made: 1,
            current: Batch::default(),
            put: 0,
            shared,
            threads,
        }
    }

    /// Copies one entity into the batch being filled; hands the batch to the
    /// lanes when full. Fails once any lane failed.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.current.data.extend_from_slice(key);
        let key_end = self.current.data.len();
        self.current.data.extend_from_slice(value);
        self.current.ends.push((key_end, self.current.data.len()));
        self.put += 1;
        if self.current.full() {
            self.send()?;
        }
        Ok(())
    }

    /// Hands the batch being filled to the lanes and takes an empty one.
    fn send(&mut self) -> Result<(), String> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(self.failure());
        }
        let next = match self.returned.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.made < MAX_BATCHES => {
                self.made += 1;
                Some(Batch::default())
            }
            Err(_) => None,
        };
        let queue = self.queue.as_ref().ok_or("the push has ended")?;
        let full = std::mem::take(&mut self.current);
        if queue.send(full).is_err() {
            return Err(self.failure());
        }
        self.current = match next {
            Some(b) => b,
            // Every batch is out: wait for a lane to finish one.
            None => self.returned.recv().map_err(|_| self.failure())?,
        };
        self.current.clear(self.put);
        Ok(())
    }

    fn failure(&self) -> String {
        self.shared
            .failure()
            .unwrap_or_else(|| "the connections to the server stopped".into())
    }

    /// Sends the last batch, waits for every lane, and returns the count of
    /// acknowledged keys.
    pub fn finish(mut self) -> Result<u64, String> {
        if !self.current.ends.is_empty() {
            self.send()?;
        }
        self.stop();
        match self.shared.failure() {
            Some(e) => Err(e),
            None => Ok(self.shared.acknowledged.load(Ordering::SeqCst)),
        }
    }

    /// Stops the lanes after the batches they are writing; nothing more
    /// reaches the server once this returns.
    pub fn abort(mut self) {
        self.shared.failed.store(true, Ordering::SeqCst);
        self.stop();
    }

    fn stop(&mut self) {
        self.queue = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.shared.fail("a connection's thread panicked".into());
            }
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shared.failed.store(true, Ordering::SeqCst);
        self.stop();
    }
}

/// One lane: formats and writes batches until the queue closes; after a
/// failure (its own or another lane's) it only hands batches back.
fn lane(
    mut conn: redis::Connection,
    queued: &Mutex<Receiver<Batch>>,
    give_back: &SyncSender<Batch>,
    encoder: &Encoder,
    shared: &Shared,
) {
    let mut scratch = Scratch::default();
    loop {
        let next = queued.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = next else {
            return;
        };
        if !shared.failed.load(Ordering::SeqCst)
            && let Err(e) = write_batch(&mut conn, &batch, encoder, &mut scratch, shared)
        {
            shared.fail(e);
        }
        let _ = give_back.try_send(batch);
    }
}

/// Writes one batch's commands and reads their replies; every one must be `OK`.
fn write_batch(
    conn: &mut redis::Connection,
    batch: &Batch,
    encoder: &Encoder,
    scratch: &mut Scratch,
    shared: &Shared,
) -> Result<(), String> {
    encoder.commands(batch, scratch)?;
    conn.send_packed_command(&scratch.commands)
        .map_err(|e| format!("sending keys {}.. of the version failed: {e}", batch.first))?;
    for i in 0..batch.ends.len() {
        let n = batch.first + i as u64;
        match conn.recv_response() {
            Ok(Reply::Okay) => {
                shared.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => return Err(format!("key {n} of the version was refused: {other:?}")),
            Err(e) => return Err(format!("key {n} of the version: {e}")),
        }
    }
    Ok(())
}
