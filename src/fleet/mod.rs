//! Transports to workers: local child processes and SSH exec channels.
//!
//! Whatever the transport, a started worker is a [`Spawned`]: its stdin,
//! stdout and stderr byte streams, a future that resolves when the process is
//! gone, and a way to kill it. [`attach`] turns that into a [`WorkerLink`]
//! (frames out) plus [`FleetEvent`]s (frames in, stderr lines, exit) on one
//! channel, so the coordinator treats every worker the same.

pub mod check;
pub mod local;
pub mod ssh;

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::proto::{self, FromWorker, ToWorker};
use crate::sched::SlotId;

/// A worker process just started by a transport.
pub struct Spawned {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
    /// Resolves with how the process ended ("exited with status 1",
    /// "killed by signal 9", "connection lost").
    pub exit: Pin<Box<dyn Future<Output = String> + Send>>,
    /// Sending on this kills the process (dropping it does too).
    pub kill: oneshot::Sender<()>,
}

/// What a worker did, tagged with its slot.
#[derive(Debug)]
pub enum FleetEvent {
    Message {
        slot: SlotId,
        msg: FromWorker,
    },
    Stderr {
        slot: SlotId,
        line: String,
    },
    /// The worker is gone; later messages from it are impossible.
    Exited {
        slot: SlotId,
        reason: String,
    },
}

/// The coordinator's handle on one worker.
pub struct WorkerLink {
    pub slot: SlotId,
    frames: mpsc::UnboundedSender<Vec<u8>>,
    kill: Option<oneshot::Sender<()>>,
}

impl WorkerLink {
    /// Queues `msg` for the worker. An error means the worker is gone (its
    /// `Exited` event is on the way).
    pub fn send(&self, msg: &ToWorker) -> Result<(), String> {
        let frame = proto::encode(msg).map_err(|e| e.to_string())?;
        self.frames
            .send(frame)
            .map_err(|_| format!("worker slot {} is gone", self.slot.0))
    }

    /// Kills the worker process.
    pub fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

/// Wires a started worker to `events` and returns the handle to send to it.
pub fn attach(
    slot: SlotId,
    spawned: Spawned,
    events: mpsc::UnboundedSender<FleetEvent>,
) -> WorkerLink {
    let Spawned {
        mut stdin,
        mut stdout,
        stderr,
        exit,
        kill,
    } = spawned;
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            if stdin.write_all(&frame).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    let ev = events.clone();
    tokio::spawn(async move {
        let reason = loop {
            match read_frame(&mut stdout).await {
                Ok(Some(msg)) => {
                    if ev.send(FleetEvent::Message { slot, msg }).is_err() {
                        return;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(format!("sent a bad frame: {e}")),
            }
        };
        if let Some(reason) = reason {
            let _ = ev.send(FleetEvent::Exited { slot, reason });
        }
    });
    let ev = events.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if ev.send(FleetEvent::Stderr { slot, line }).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let reason = exit.await;
        let _ = events.send(FleetEvent::Exited { slot, reason });
    });
    WorkerLink {
        slot,
        frames: frames_tx,
        kill: Some(kill),
    }
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(input: &mut R) -> Result<Option<FromWorker>, String> {
    let mut header = [0u8; proto::HEADER_BYTES];
    match input.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = proto::body_len(header).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    input
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("stream ended inside a frame: {e}"))?;
    proto::decode(&body).map(Some).map_err(|e| e.to_string())
}
