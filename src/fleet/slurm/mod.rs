//! Slurm hosts: one allocation per host (`salloc`, argument vectors only),
//! the worker binary and the model shipped to its nodes (`sbcast`, or a
//! shared path), one worker per slot as a job step (`srun --jobid J
//! --ntasks=1 --exact --unbuffered`) whose stdin and stdout carry the same
//! framed protocol as a local or SSH worker. No port is opened.
//!
//! [`SlurmHost`] returns at once and runs the allocation in the background:
//! submit, wait in the queue (Slurm's state and reason on [`HostLink::pending`]),
//! ship, then watch it until it ends. A step that ends is that slot's worker
//! exiting (the coordinator retries its attempt and starts a replacement
//! step); the allocation ending is the host lost, unless `requeue = true`,
//! which asks for a new allocation that waiting steps then start in.
//!
//! Must not: leave an allocation behind. [`HostLink::close`] (the end of a
//! run, a failure, an interrupt) and dropping the host cancel it, and the
//! allocation is held by a pipe only this process writes (see [`alloc`]).

mod alloc;
pub mod command;
mod ship;
mod step;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Ship, SlurmHost};

use super::ssh::human_bytes;
use super::{BoxFuture, HostLink, ModelFile, Setup, Spawned};

pub use alloc::PENDING_POLL;

/// Where a host's allocation stands.
#[derive(Clone)]
pub enum Stage {
    /// Submitting, queued, or shipping.
    Waiting,
    Ready(Arc<Ready>),
    /// For good: refused, timed out, ended without requeue, or closed.
    Failed(String),
}

/// A started allocation with its files in place.
pub struct Ready {
    pub job: String,
    pub binary: String,
    pub binary_sha: String,
    pub model: Option<String>,
}

/// What a host has done so far, for `herd hosts check` and the run log.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub job: Option<String>,
    pub nodes: String,
    pub queued: Option<Duration>,
    pub shipped_bytes: u64,
    pub sent_files: u32,
    pub cached_files: u32,
    /// Allocations asked for again after one ended (`requeue = true`).
    pub requeues: u32,
    pub error: Option<String>,
}

struct Shared {
    /// The current allocation's id, once Slurm gave one: what to cancel.
    job: Mutex<Option<String>>,
    status: Mutex<Status>,
    closed: std::sync::atomic::AtomicBool,
}

/// One Slurm host: its allocation (once up) and its slots' steps.
pub struct SlurmHostLink {
    name: String,
    cfg: SlurmHost,
    stage: watch::Receiver<Stage>,
    pending: watch::Receiver<Option<String>>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts host `name`'s allocation in the background, for `slots` workers
/// loading `model` (none for a probe). Must be called inside a tokio runtime.
pub fn start(
    name: &str,
    slots: u32,
    cfg: &SlurmHost,
    model: Option<ModelFile>,
) -> Result<SlurmHostLink, String> {
    let binary = super::local::worker_exe()
        .map_err(|e| format!("host '{name}': cannot find the worker binary: {e}"))?;
    let (stage_tx, stage) = watch::channel(Stage::Waiting);
    let (pending_tx, pending) = watch::channel(None);
    let shared = Arc::new(Shared {
        job: Mutex::new(None),
        status: Mutex::new(Status::default()),
        closed: Default::default(),
    });
    let life = Life {
        name: name.to_string(),
        slots,
        cfg: cfg.clone(),
        binary,
        model,
        shared: shared.clone(),
        stage: stage_tx,
        pending: pending_tx,
    };
    let task = tokio::spawn(life.run());
    Ok(SlurmHostLink {
        name: name.to_string(),
        cfg: cfg.clone(),
        stage,
        pending,
        shared,
        task,
    })
}

/// The background side of a host: its allocations, one after another.
struct Life {
    name: String,
    slots: u32,
    cfg: SlurmHost,
    binary: PathBuf,
    model: Option<ModelFile>,
    shared: Arc<Shared>,
    stage: watch::Sender<Stage>,
    pending: watch::Sender<Option<String>>,
}

impl Life {
    async fn run(self) {
        let why = loop {
            let _ = self.stage.send(Stage::Waiting);
            let (mut allocation, ready) = match self.set_up().await {
                Ok(up) => up,
                Err(e) => break e,
            };
            let job = allocation.job.clone();
            let _ = self.stage.send(Stage::Ready(Arc::new(ready)));
            let how = allocation.ended().await;
            let ended = format!("slurm allocation {job} ended: {how}");
            if !self.cfg.requeue || self.closed() {
                break ended;
            }
            lock(&self.shared.status).requeues += 1;
            // Queued again: shown until the new allocation's own state
            // (PENDING with Slurm's reason) or its start replaces it.
            let _ = self
                .pending
                .send(Some(format!("REQUEUED (slurm allocation {job} ended)")));
        };
        let why = format!("host '{}': {why}", self.name);
        lock(&self.shared.status).error.get_or_insert(why.clone());
        let _ = self.stage.send(Stage::Failed(why));
    }

    fn closed(&self) -> bool {
        self.shared.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Submits an allocation, waits for it and ships to its nodes.
    async fn set_up(&self) -> Result<(alloc::Allocation, Ready), String> {
        if self.closed() {
            return Err("closed".into());
        }
        let a = alloc::submit(
            &self.name,
            self.slots,
            &self.cfg,
            &self.pending,
            &self.shared.job,
        )
        .await?;
        {
            let mut st = lock(&self.shared.status);
            st.job = Some(a.job.clone());
            st.nodes = a.nodes.clone();
            st.queued = Some(a.queued);
        }
        let shipped = match ship::ship(
            &a.job,
            a.node_count,
            &self.cfg,
            &self.binary,
            self.model.as_ref(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                alloc::cancel(&a.job).await;
                return Err(format!("slurm job {}: {e}", a.job));
            }
        };
        {
            let mut st = lock(&self.shared.status);
            st.shipped_bytes += shipped.bytes;
            st.sent_files += shipped.sent_files;
            st.cached_files += shipped.cached_files;
        }
        let ready = Ready {
            job: a.job.clone(),
            binary: shipped.binary,
            binary_sha: shipped.binary_sha,
            model: shipped.model,
        };
        Ok((a, ready))
    }
}

/// Waits until the allocation is up, or failed for good.
async fn wait_ready(stage: &mut watch::Receiver<Stage>) -> Result<Arc<Ready>, String> {
    loop {
        match &*stage.borrow_and_update() {
            Stage::Ready(r) => return Ok(r.clone()),
            Stage::Failed(e) => return Err(e.clone()),
            Stage::Waiting => {}
        }
        if stage.changed().await.is_err() {
            return Err("the host's allocation was abandoned".into());
        }
    }
}

impl SlurmHostLink {
    pub fn status(&self) -> Status {
        lock(&self.shared.status).clone()
    }

    /// Cancels the allocation (pending or running) and stops asking for
    /// new ones. Idempotent.
    pub fn close(&self) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
        if let Some(job) = lock(&self.shared.job).take() {
            alloc::cancel_now(&job);
        }
    }

    /// One line on the allocation and what shipping did.
    fn describe(&self) -> String {
        let st = self.status();
        let shipped = match (self.cfg.ship, st.sent_files) {
            (Ship::Shared, _) => "files used from the shared path".to_string(),
            (_, 0) => "nothing shipped (cached on the nodes)".to_string(),
            (_, n) => format!(
                "sbcast {} in {n} file{} ({} cached)",
                human_bytes(st.shipped_bytes),
                if n == 1 { "" } else { "s" },
                st.cached_files
            ),
        };
        format!(
            "slurm job {} on {}: queued {:.1} s; {shipped}",
            st.job.as_deref().unwrap_or("-"),
            st.nodes,
            st.queued.unwrap_or_default().as_secs_f64()
        )
    }
}

impl Drop for SlurmHostLink {
    fn drop(&mut self) {
        self.close();
    }
}

impl HostLink for SlurmHostLink {
    fn start_worker(&self, env: &[(String, String)]) -> Result<Spawned, String> {
        Ok(step::spawn(&self.name, &self.cfg, self.stage.clone(), env))
    }

    fn model_path(&self) -> Option<String> {
        match &*self.stage.borrow() {
            Stage::Ready(r) => r.model.clone(),
            _ => None,
        }
    }

    fn shipped_bytes(&self) -> u64 {
        self.status().shipped_bytes
    }

    fn ready(&self) -> BoxFuture<'_, Result<Option<String>, String>> {
        Box::pin(async move {
            wait_ready(&mut self.stage.clone()).await?;
            Ok(Some(self.describe()))
        })
    }

    fn setup(&self) -> Setup {
        let st = self.status();
        Setup {
            transport: match &st.job {
                Some(j) => format!("slurm job {j}"),
                None => "slurm".into(),
            },
            shipped: match (self.cfg.ship, st.sent_files, st.cached_files) {
                (Ship::Shared, _, _) => "shared".into(),
                (_, 0, 0) => "-".into(),
                (_, 0, _) => "cached".into(),
                _ => human_bytes(st.shipped_bytes),
            },
            detail: st.job.as_ref().map(|j| {
                format!(
                    "slurm job {j} on node {}, queued {:.1} s",
                    st.nodes,
                    st.queued.unwrap_or_default().as_secs_f64()
                )
            }),
            error: st.error,
            ..Setup::none()
        }
    }

    fn pending(&self) -> Option<watch::Receiver<Option<String>>> {
        Some(self.pending.clone())
    }

    fn close(&self) {
        SlurmHostLink::close(self);
    }
}
