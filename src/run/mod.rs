//! The coordinator: drives the scheduler with events from the fleet, writes
//! the store, publishes [`Event`]s for the UI.
//!
//! A thin async driver around the pure rooms, in the manner of quinn's
//! connection driver: all of a run's state lives in one [`Coordinator`]
//! value, and [`drive`] waits for the next event (a worker message or exit,
//! a timer, a control from the user, Ctrl-C, the publish tick) and hands it
//! to the coordinator's handler for that kind of event. `sched` decides;
//! the handlers carry out its commands (read rows, send them to a worker,
//! commit a result). At the end [`Coordinator::finish`] validates the
//! version, pushes it to any sinks, flips readers to it and keeps
//! `keep_versions`.

pub mod bench;
mod commit;
pub mod controller;
mod coordinator;
pub mod event;
mod finish;
mod messages;
mod prepare;
mod publish;
mod read;
mod report;
mod validation;
mod workers;

use std::path::PathBuf;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::fleet::FleetEvent;
use crate::sched::ChunkId;
use crate::store::sink::Sink;

use coordinator::{Coordinator, PUBLISH_EVERY};
use publish::Publisher;
use workers::Prestarted;

pub use event::{
    AttemptReport, Event, HostInfo, HostReport, HostState, Report, SkippedEntity, SlotReport,
};
pub use prepare::{Prepared, load_configs, load_fleet, load_job, prepare, prepare_loaded};
pub use workers::MAX_WORKER_RESTARTS;

/// A coordinator's heap is trimmed only above this
/// ([`crate::memory::keep_freed_memory`], called by `herd run` and the
/// terminal UI before they start a thread): the index scan's pages, the
/// spot check's spans and each chunk's results would otherwise come back
/// as fresh pages. A 1M-row mlp run: 39,000 page faults -> 33,000 (worker
/// included), the coordinator's peak memory +0-5 MiB.
pub const KEEP_TRIM_BYTES: i32 = 256 << 20;

pub use crate::test_hooks::BARRIER_ENV as TEST_BARRIER_ENV;
pub use crate::test_hooks::SLOW_SLOT_ENV as TEST_SLOW_SLOT_ENV;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line or configuration (exit 2).
    #[error("{0}")]
    Config(String),
    /// The run failed (exit 1); the live version is untouched.
    #[error("{0}")]
    Failed(String),
    /// Validation failed (exit 3); nothing was flipped.
    #[error("{}", validation_message(.0))]
    Validation(Box<Report>),
}

fn validation_message(r: &Report) -> String {
    match r.validation.first_failure() {
        Some(c) => format!(
            "validation of version {} failed: {}: {}; nothing was flipped (live stays {})",
            r.version,
            c.name,
            c.detail,
            r.live_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into())
        ),
        None => format!("validation of version {} failed", r.version),
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Failed(_) => 1,
            Error::Validation(_) => 3,
        }
    }
}

/// What the user asks of a running job (TUI keys).
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    Pause(bool),
    /// Stop now; the version stays resumable.
    Cancel,
    Backup(ChunkId),
}

/// What to run and where its output goes.
#[derive(Default)]
pub struct Options {
    pub job: PathBuf,
    /// A fleet file instead of the job's `hosts`.
    pub hosts: Option<PathBuf>,
    /// Finish the job's unfinished version.
    pub resume: bool,
    /// Outputs beside the LMDB store: each receives the validated version
    /// before the flip and is told of the flip after it.
    pub sinks: Vec<Box<dyn Sink>>,
}

/// Runs a job to the end: returns its report, or why it failed.
pub async fn run(
    mut opts: Options,
    events: mpsc::UnboundedSender<Event>,
    controls: mpsc::UnboundedReceiver<Control>,
) -> Result<Report, Error> {
    let out = Publisher::new(events);
    let (job, hosts) = (opts.job.clone(), opts.hosts.clone());
    let (job, fleet) = tokio::task::spawn_blocking(move || load_configs(&job, hosts.as_deref()))
        .await
        .map_err(|e| Error::Failed(format!("preparation panicked: {e}")))??;
    // Local workers start while the input's index is read (dropped, so
    // killed, when the preparation fails), and are sent the model to load
    // as soon as it is hashed.
    let prestarted = Prestarted::start(&fleet);
    let hosts = fleet.clone();
    let (plan_tx, plan_rx) = tokio::sync::oneshot::channel();
    let preparing = tokio::task::spawn_blocking(move || {
        prepare::prepare_loaded_then(job, fleet, |plan| {
            let _ = plan_tx.send(plan);
        })
    });
    let prestarted = match plan_rx.await {
        Ok(plan) => prestarted.load(&hosts, &plan).await,
        Err(_) => prestarted, // the model did not load: preparing failed
    };
    let p = preparing
        .await
        .map_err(|e| Error::Failed(format!("preparation panicked: {e}")))??;
    // The job's `[[output.sink]]` tables join the sinks the caller passed.
    let settings = p.job.output.sinks.clone();
    let opened = tokio::task::spawn_blocking(move || {
        settings
            .iter()
            .map(crate::store::sink::open)
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| Error::Failed(format!("opening sinks panicked: {e}")))?
    .map_err(|e| Error::Failed(e.to_string()))?;
    opts.sinks.extend(opened);
    let (fleet_tx, fleet_rx) = mpsc::unbounded_channel();
    let (reads_tx, reads_rx) = mpsc::unbounded_channel();
    let mut c = Coordinator::start(
        p,
        opts.job.clone(),
        opts.resume,
        out,
        fleet_tx,
        reads_tx,
        prestarted,
    )?;
    let outcome = drive(&mut c, fleet_rx, reads_rx, controls).await;
    c.finish(outcome, &mut opts.sinks)
}

/// The loop: carry out the scheduler's commands, then wait for the next
/// event (a worker's, a chunk read, a timer, the user's) and hand it to its
/// handler, until every row is committed or the
/// run cannot go on.
async fn drive(
    c: &mut Coordinator,
    mut fleet: mpsc::UnboundedReceiver<FleetEvent>,
    mut reads: mpsc::UnboundedReceiver<read::ReadDone>,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> Result<(), Error> {
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // SIGTERM (what `kill`, systemd and schedulers send) and SIGHUP (the
    // terminal went away) stop the run as Ctrl-C does: the version stays
    // resumable and the exit names `--resume`.
    let mut term = stop_signal(SignalKind::terminate())?;
    let mut hup = stop_signal(SignalKind::hangup())?;
    let mut controls_open = true;
    loop {
        c.run_commands()?;
        if c.done() {
            return Ok(());
        }
        let wake = c.wake_in();
        let timer = async {
            match wake {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(ev) = fleet.recv() => c.on_fleet_event(ev),
            Some(done) = reads.recv() => c.on_read(done)?,
            _ = timer => c.on_timeout(),
            ctl = controls.recv(), if controls_open => match ctl {
                Some(ctl) => c.on_control(ctl)?,
                None => controls_open = false,
            },
            _ = &mut ctrl_c => return Err(c.stopped("interrupted")),
            _ = term.recv() => return Err(c.stopped("terminated (SIGTERM)")),
            _ = hup.recv() => return Err(c.stopped("hung up (SIGHUP)")),
            _ = publish.tick() => c.publish(),
        }
    }
}

/// A stream of the signal `kind`, which then no longer ends the process.
fn stop_signal(kind: SignalKind) -> Result<Signal, Error> {
    signal(kind).map_err(|e| Error::Failed(format!("cannot listen for signal {kind:?}: {e}")))
}
