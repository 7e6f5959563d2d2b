//! Transports to workers: local child processes, SSH exec channels and
//! Slurm job steps.
//!
//! The seam is [`HostLink`]: [`start`] turns a host's settings into one,
//! whatever its kind, and it hands out workers for the host's slots, says
//! where the model weights are on that machine and what setting it up did.
//! A host kind is a module here implementing it plus one arm in [`start`];
//! the command a worker runs is built by [`WorkerCommand`], which a kind
//! that needs a launcher wraps.
//!
//! Whatever the kind, a started worker is a [`Spawned`]: its stdin, stdout
//! and stderr byte streams, a future that resolves when the process is gone,
//! and a way to kill it. [`attach`] turns that into a [`WorkerLink`] (frames
//! out) plus [`FleetEvent`]s (frames in, stderr lines, exit) on one channel,
//! so the coordinator treats every worker the same.

pub mod cache;
pub mod check;
mod command;
pub mod local;
pub mod quote;
pub mod slurm;
pub mod ssh;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Host, Transport};
use crate::proto::{self, FromWorker, ToWorker};
use crate::sched::SlotId;

pub use command::WorkerCommand;

/// A boxed future, as [`HostLink`] methods return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The model weights a host's workers load: the job's file and its sha256
/// (lower-case hex), and the files beside it that loading it reads too.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    pub path: PathBuf,
    pub sha256: String,
    /// Read from the model's folder by the names the model gives them (an
    /// ONNX model's external data); a host that gets the model shipped gets
    /// these too, side by side in the same layout.
    pub companions: Vec<Companion>,
}

impl ModelFile {
    /// A model file that reads no other file.
    pub fn alone(path: impl Into<PathBuf>, sha256: impl Into<String>) -> ModelFile {
        ModelFile {
            path: path.into(),
            sha256: sha256.into(),
            companions: Vec::new(),
        }
    }
}

/// A file a model reads beside it: the name the model gives it (a path
/// relative to the model's folder), its local copy and its sha256.
#[derive(Clone, Debug, PartialEq)]
pub struct Companion {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
}

/// The coordinator's handle on one host, whatever its kind: starts the
/// workers of its slots and says what setting the host up did.
pub trait HostLink: Send + Sync {
    /// Starts one worker, with `env` added to its environment. Returns at
    /// once; a kind that sets its host up first hands out a worker whose
    /// streams come alive when the host is ready (or whose exit says why it
    /// never will). An error means no worker could be started at all.
    fn start_worker(&self, env: &[(String, String)]) -> Result<Spawned, String>;

    /// Where the workers find the model weights on the host, once it is set
    /// up; `None` before that, or when no model was given.
    fn model_path(&self) -> Option<String>;

    /// Bytes shipped to the host so far (0 when it needs nothing shipped).
    fn shipped_bytes(&self) -> u64;

    /// Waits until the host is set up: a line on how that went (for the run
    /// log), `None` when there was nothing to set up, or why it failed.
    fn ready(&self) -> BoxFuture<'_, Result<Option<String>, String>>;

    /// What `herd hosts check` shows about the host's setup so far.
    fn setup(&self) -> Setup;

    /// For a kind whose setup waits in a batch queue: `Some(state and
    /// reason)` while it waits (`PENDING (Priority)`), `None` otherwise.
    fn pending(&self) -> Option<watch::Receiver<Option<String>>> {
        None
    }

    /// Gives back what the host holds outside this process (a batch
    /// allocation), ending its workers; called when the run ends, fails or
    /// is interrupted. Idempotent.
    fn close(&self) {}
}

/// How a host was reached and set up, as `herd hosts check` shows it (`-`
/// where a step does not apply).
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    /// `local`, `ssh ADDRESS`.
    pub transport: String,
    pub host_key: String,
    pub auth: String,
    /// What was shipped: a size, `cached` or `-`.
    pub shipped: String,
    /// More about where the workers run (a batch job's node and queue
    /// wait), shown under the host's row.
    pub detail: Option<String>,
    /// Why setting up failed, when it did.
    pub error: Option<String>,
}

impl Setup {
    /// Nothing set up, nothing failed.
    pub fn none() -> Setup {
        Setup {
            transport: "-".into(),
            host_key: "-".into(),
            auth: "-".into(),
            shipped: "-".into(),
            detail: None,
            error: None,
        }
    }
}

/// Starts setting up `host` (of any kind) for workers that load `model` (none
/// for a probe): the one place that knows every host kind. Must be called
/// inside a tokio runtime; returns at once.
pub fn start(host: &Host, model: Option<ModelFile>) -> Result<Arc<dyn HostLink>, String> {
    match &host.transport {
        Transport::Local => Ok(Arc::new(local::LocalHost::new(model.as_ref()))),
        Transport::Ssh(s) => Ok(Arc::new(ssh::start(&host.name, s, model)?)),
        Transport::Slurm(s) => Ok(Arc::new(slurm::start(&host.name, host.slots, s, model)?)),
    }
}

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

/// Buffer of each in-process pipe between a transport's task and the
/// coordinator.
const PIPE_BYTES: usize = 256 << 10;

/// The transport's ends of a worker's stdin, stdout and stderr, for a kind
/// whose task pumps them to the real process (an SSH channel, an srun).
pub struct Pipes {
    pub stdin: DuplexStream,
    pub stdout: DuplexStream,
    pub stderr: DuplexStream,
}

impl Spawned {
    /// A worker that `task` runs in the background: it gets the transport's
    /// ends of the streams and the kill signal, and returns how the worker
    /// ended. Returns at once. Should the task stop without saying, the
    /// worker's exit reads "ended: the `kind` task for host 'NAME' stopped".
    pub fn driven<F>(
        kind: &str,
        host: &str,
        task: impl FnOnce(Pipes, oneshot::Receiver<()>) -> F,
    ) -> Spawned
    where
        F: Future<Output = String> + Send + 'static,
    {
        let (stdin_user, stdin) = tokio::io::duplex(PIPE_BYTES);
        let (stdout, stdout_user) = tokio::io::duplex(PIPE_BYTES);
        let (stderr, stderr_user) = tokio::io::duplex(PIPE_BYTES);
        let (kill, kill_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = oneshot::channel::<String>();
        let run = task(
            Pipes {
                stdin,
                stdout,
                stderr,
            },
            kill_rx,
        );
        tokio::spawn(async move {
            let _ = exit_tx.send(run.await);
        });
        let gone = format!("ended: the {kind} task for host '{host}' stopped");
        Spawned {
            stdin: Box::new(stdin_user),
            stdout: Box::new(stdout_user),
            stderr: Box::new(stderr_user),
            exit: Box::pin(async move { exit_rx.await.unwrap_or(gone) }),
            kill,
        }
    }
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
        self.send_frame(frame)
    }

    /// Queues a frame already encoded ([`proto::encode`]) for the worker.
    pub fn send_frame(&self, frame: Vec<u8>) -> Result<(), String> {
        self.frames
            .send(frame)
            .map_err(|_| format!("worker slot {} is gone", self.slot.0))
    }

    /// A link to no process: its frames go to `frames` (one channel may
    /// serve many links). For benchmarks that play the workers themselves.
    pub fn in_memory(slot: SlotId, frames: mpsc::UnboundedSender<Vec<u8>>) -> WorkerLink {
        WorkerLink {
            slot,
            frames,
            kill: None,
        }
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
