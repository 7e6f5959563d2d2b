//! Chunk commits off the coordinator's loop: a thread of their own writes
//! each chunk's predictions and its marker (one LMDB write transaction per
//! chunk, as before), so the loop goes on launching the next chunks and
//! receiving results while the store writes. The queue holds at most
//! [`COMMIT_QUEUE_CHUNKS`] chunks: when the store falls behind, the loop
//! waits instead of holding more results in memory.

use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::model::{EntityIds, Predictions};
use crate::store::Store;

/// Chunks waiting for their commit at most; the loop blocks beyond it.
pub(super) const COMMIT_QUEUE_CHUNKS: usize = 2;

enum Job {
    Commit {
        version: u64,
        rows: Range<u64>,
        left_out: u64,
        ids: EntityIds,
        preds: Predictions,
        timestamp: u64,
    },
    /// Answered once every commit queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

pub(super) struct Committer {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The first commit that failed, as the store said it.
    failed: Arc<Mutex<Option<String>>>,
}

impl Committer {
    pub fn start(store: Store) -> Committer {
        let (tx, rx) = sync_channel::<Job>(COMMIT_QUEUE_CHUNKS);
        let failed = Arc::new(Mutex::new(None));
        let slot = failed.clone();
        let thread = std::thread::Builder::new()
            .name("herd-commit".into())
            .spawn(move || commit_loop(&store, &rx, &slot))
            .expect("cannot start the commit thread");
        Committer {
            tx: Some(tx),
            thread: Some(thread),
            failed,
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
        let job = Job::Commit {
            version,
            rows,
            left_out,
            ids,
            preds,
            timestamp,
        };
        self.send(job)
    }

    /// Waits until every queued commit is written; the first failure, if any.
    pub fn flush(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Job::Flush(tx))?;
        let _ = rx.recv();
        self.check()
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

fn commit_loop(store: &Store, rx: &Receiver<Job>, failed: &Mutex<Option<String>>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Flush(ack) => {
                let _ = ack.send(());
            }
            Job::Commit {
                version,
                rows,
                left_out,
                ids,
                preds,
                timestamp,
            } => {
                let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_some() {
                    continue; // after a failure, nothing more is written
                }
                drop(slot);
                let outcome = store.commit_chunk_leaving_out(
                    version,
                    rows.clone(),
                    left_out,
                    &ids,
                    &preds,
                    timestamp,
                );
                if let Err(e) = outcome {
                    slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                    *slot = Some(format!("store: rows {}..{}: {e}", rows.start, rows.end));
                }
            }
        }
    }
}
