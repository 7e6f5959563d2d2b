//! Chunk commits off the coordinator's loop: a thread of their own writes
//! each chunk's predictions and its marker, so the loop goes on launching
//! the next chunks and receiving results while the store writes. The queue
//! holds at most [`COMMIT_QUEUE_CHUNKS`] chunks: when the store falls
//! behind, the loop waits instead of holding more results in memory.
//!
//! The chunks waiting when the thread is ready share one LMDB write
//! transaction (one sync to disk), up to [`COMMIT_BATCH_CHUNKS`] chunks and
//! [`COMMIT_BATCH_BYTES`] of predictions; each keeps its own marker beside
//! its rows. Many small chunks (many slots, short chunks) then cost a few
//! commits instead of one each.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::model::{EntityIds, Predictions};
use crate::store::validate::{ChunkScan, scan_chunk};
use crate::store::{ChunkCommit, Store};

/// Chunks waiting for their commit at most; the loop blocks beyond it.
pub const COMMIT_QUEUE_CHUNKS: usize = 4;
/// Chunks written in one store transaction at most.
pub const COMMIT_BATCH_CHUNKS: usize = 16;
/// Prediction bytes (scores, or top-K items and scores) written in one store
/// transaction at most, beyond its first chunk: a transaction's dirty pages
/// stay far below LMDB's limit, and the thread's memory bounded.
pub const COMMIT_BATCH_BYTES: u64 = 64 << 20;

/// One chunk to commit.
struct Commit {
    version: u64,
    rows: Range<u64>,
    left_out: u64,
    ids: EntityIds,
    preds: Predictions,
    timestamp: u64,
}

enum Job {
    Commit(Commit),
    /// Answered once every commit queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

pub(super) struct Committer {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The first commit that failed, as the store said it.
    failed: Arc<Mutex<Option<String>>>,
    /// The gate's pass over each chunk written, read right after its
    /// commit (see [`ScanAfter`]).
    scans: Arc<Mutex<Vec<ChunkScan>>>,
    /// Commits queued and not yet taken by the thread.
    waiting: Arc<AtomicUsize>,
}

/// Whether the commit thread reads each chunk's key range again right
/// after writing it, for the gate ([`scan_chunk`]): where every input id
/// strictly ascends in input order, no other chunk writes in a chunk's
/// range, and the gate's pass after the last result reads only the keys
/// outside those ranges (on a 1M-row mlp run it was 23-36 ms of the run's
/// tail). The reads are the same; they move to the commit thread, beside
/// the scoring. A chunk is read only while no other commit waits: where
/// the commits are what the run waits for (many workers, short chunks),
/// its range is left to the gate, which reads on several threads.
#[derive(Clone, Copy, Debug)]
pub(super) struct ScanAfter {
    /// The model's K, for the check of a top-K value's shape.
    pub top_k: Option<usize>,
}

impl Committer {
    pub fn start(store: Store, scan: Option<ScanAfter>) -> Committer {
        let (tx, rx) = sync_channel::<Job>(COMMIT_QUEUE_CHUNKS);
        let failed = Arc::new(Mutex::new(None));
        let slot = failed.clone();
        let scans = Arc::new(Mutex::new(Vec::new()));
        let scanned = scans.clone();
        let waiting = Arc::new(AtomicUsize::new(0));
        let queued = waiting.clone();
        let thread = std::thread::Builder::new()
            .name("herd-commit".into())
            .spawn(move || commit_loop(&store, &rx, &slot, scan, &scanned, &queued))
            .expect("cannot start the commit thread");
        Committer {
            tx: Some(tx),
            thread: Some(thread),
            failed,
            scans,
            waiting,
        }
    }

    /// Queues the commit of `rows` (`left_out` of them skipped by
    /// `on_invalid`); waits while the queue is full.
    pub fn commit(
        &self,
        version: u64,
        rows: Range<u64>,
        left_out: u64,
        ids: EntityIds,
        preds: Predictions,
        timestamp: u64,
    ) -> Result<(), String> {
        self.check()?;
        let job = Job::Commit(Commit {
            version,
            rows,
            left_out,
            ids,
            preds,
            timestamp,
        });
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.send(job)
    }

    /// Waits until every queued commit is written; the first failure, if any.
    pub fn flush(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Job::Flush(tx))?;
        let _ = rx.recv();
        self.check()
    }

    /// The passes over the chunks written so far (call after
    /// [`Committer::flush`]).
    pub fn take_scans(&self) -> Vec<ChunkScan> {
        std::mem::take(&mut *self.scans.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The first commit that failed so far.
    pub fn check(&self) -> Result<(), String> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn send(&self, job: Job) -> Result<(), String> {
        let tx = self.tx.as_ref().expect("sender lives until drop");
        tx.send(job)
            .map_err(|_| "the commit thread is gone".to_string())?;
        Ok(())
    }
}

impl Drop for Committer {
    /// Writes what is queued, then ends the thread.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn commit_loop(
    store: &Store,
    rx: &Receiver<Job>,
    failed: &Mutex<Option<String>>,
    scan: Option<ScanAfter>,
    scans: &Mutex<Vec<ChunkScan>>,
    waiting: &AtomicUsize,
) {
    let taken = |job: Job| {
        if let Job::Commit(_) = job {
            waiting.fetch_sub(1, Ordering::Relaxed);
        }
        job
    };
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| rx.recv().ok().map(taken)) else {
            return;
        };
        let mut batch = match job {
            Job::Flush(ack) => {
                let _ = ack.send(());
                continue;
            }
            Job::Commit(c) => vec![c],
        };
        // What else is waiting, up to the batch's limits; a flush waits
        // for the batch before it.
        let mut bytes = batch[0].preds.byte_size();
        while batch.len() < COMMIT_BATCH_CHUNKS && bytes < COMMIT_BATCH_BYTES {
            match rx.try_recv().map(taken) {
                Ok(Job::Commit(c)) if bytes + c.preds.byte_size() <= COMMIT_BATCH_BYTES => {
                    bytes += c.preds.byte_size();
                    batch.push(c);
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let written = write(store, &batch, failed);
        if let Some(ScanAfter { top_k }) = scan {
            for (c, fresh) in batch.iter().zip(written) {
                // A chunk not read here is read by the gate.
                let idle =
                    waiting.load(Ordering::Relaxed) == 0 && !matches!(next, Some(Job::Commit(_)));
                if fresh
                    && idle
                    && let Ok(Some(s)) = scan_chunk(store, c.version, &c.ids, top_k)
                {
                    scans.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }
            }
        }
    }
}

/// Writes `batch` in one transaction, unless a commit failed before;
/// which of its chunks were written (not refused as committed already).
fn write(store: &Store, batch: &[Commit], failed: &Mutex<Option<String>>) -> Vec<bool> {
    let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_some() {
        return Vec::new(); // after a failure, nothing more is written
    }
    drop(slot);
    let chunks: Vec<ChunkCommit<'_>> = batch
        .iter()
        .map(|c| ChunkCommit {
            rows: c.rows.clone(),
            left_out: c.left_out,
            ids: &c.ids,
            preds: &c.preds,
        })
        .collect();
    let (version, timestamp) = (batch[0].version, batch[batch.len() - 1].timestamp);
    match store.commit_chunks(version, &chunks, timestamp) {
        Ok(written) => written,
        Err(e) => {
            let (first, last) = (&batch[0].rows, &batch[batch.len() - 1].rows);
            slot = failed.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some(format!("store: rows {}..{}: {e}", first.start, last.end));
            Vec::new()
        }
    }
}
