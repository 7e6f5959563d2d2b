//! Chunk reads off the coordinator's loop: for a worker that does not read
//! its own rows, a thread of its own reads the chunk from the input, zeroes
//! the rows `on_invalid = "skip"` leaves out, and encodes the `Run` frame;
//! the loop only hands the finished frame to the worker. Reads are done in
//! the order they were asked for, so a slot's frames keep their order.

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use tokio::sync::mpsc::UnboundedSender;

use crate::data::Dataset;
use crate::proto::{self, ChunkRows, ToWorker};
use crate::sched::{AttemptId, ChunkId};

/// A chunk to read for an attempt.
pub(super) struct ReadJob {
    pub attempt: AttemptId,
    pub chunk: ChunkId,
    pub rows: Range<u64>,
    /// Input rows in `rows` left out of the version: scored on zeros so
    /// that the worker sees only finite features.
    pub zeroed: Vec<u64>,
}

/// A read done: the attempt's `Run` frame and the bytes of its rows, or why
/// the rows could not be read.
pub(super) struct ReadDone {
    pub attempt: AttemptId,
    pub frame: Result<(Vec<u8>, u64), ReadError>,
}

pub(super) enum ReadError {
    /// Naming the chunk and rows.
    Failed(String),
    /// A null, NaN or infinite feature under `on_invalid = "error"`.
    Invalid(crate::data::Error),
}

pub(super) struct Reader {
    tx: Option<Sender<ReadJob>>,
    thread: Option<JoinHandle<()>>,
    /// Reads asked for and not yet taken back by the loop.
    pending: usize,
}

impl Reader {
    /// Starts the thread; finished reads go to `done`.
    pub fn start(dataset: Arc<Dataset>, done: UnboundedSender<ReadDone>) -> Reader {
        let (tx, rx) = channel::<ReadJob>();
        let thread = std::thread::Builder::new()
            .name("herd-read".into())
            .spawn(move || read_loop(&dataset, &rx, &done))
            .expect("cannot start the read thread");
        Reader {
            tx: Some(tx),
            thread: Some(thread),
            pending: 0,
        }
    }

    /// Queues a read; its [`ReadDone`] comes back on the channel.
    pub fn read(&mut self, job: ReadJob) -> Result<(), String> {
        let tx = self.tx.as_ref().expect("sender lives until drop");
        tx.send(job)
            .map_err(|_| "the read thread is gone".to_string())?;
        self.pending += 1;
        Ok(())
    }

    /// A read came back.
    pub fn taken(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Reads asked for whose [`ReadDone`] the loop has not taken yet.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

impl Drop for Reader {
    /// Ends the thread after the read it is doing.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(dataset: &Dataset, rx: &Receiver<ReadJob>, done: &UnboundedSender<ReadDone>) {
    while let Ok(job) = rx.recv() {
        let frame = read_frame(dataset, &job);
        let finished = ReadDone {
            attempt: job.attempt,
            frame,
        };
        if done.send(finished).is_err() {
            return; // the loop is gone
        }
    }
}

/// The `Run` frame of `job` and the bytes of its rows.
fn read_frame(dataset: &Dataset, job: &ReadJob) -> Result<(Vec<u8>, u64), ReadError> {
    let ReadJob {
        attempt,
        chunk,
        rows,
        zeroed,
    } = job;
    let mut batch = dataset.read_rows(rows.clone()).map_err(|e| {
        if e.invalid_feature().is_some() {
            return ReadError::Invalid(e);
        }
        ReadError::Failed(format!(
            "chunk {chunk} (rows {}..{}): cannot read input: {e}",
            rows.start, rows.end
        ))
    })?;
    let f = batch.num_features;
    for &row in zeroed {
        let i = (row - rows.start) as usize;
        batch.features[i * f..(i + 1) * f].fill(0.0);
    }
    let bytes = batch.byte_size();
    let run = ToWorker::Run {
        chunk: *chunk,
        attempt: *attempt,
        rows: ChunkRows::Rows(batch),
    };
    let frame =
        proto::encode(&run).map_err(|e| ReadError::Failed(format!("chunk {chunk}: {e}")))?;
    Ok((frame, bytes))
}
