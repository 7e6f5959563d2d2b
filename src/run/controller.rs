//! What carries out the terminal UI's wishes: starts runs (one at a time),
//! forwards their events, pauses, cancels, flips; and the summaries of job
//! files and of the store that the UI shows. The UI itself only turns keys
//! into [`Action`]s and draws [`UiInput`]s, so this is the part that acts,
//! and it is driven by channels: tests drive it without a terminal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};

use tokio::runtime::Runtime;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::model::EntityKey;
use crate::store::{Prediction, Store};
use crate::ui::tui::{Action, JobSummary, Lookup, StoreSummary, UiInput, VersionRow};

use super::{Control, Event, Options, load_fleet, load_job};

/// One line of the job picker: what the job runs, on what, over how many rows.
pub fn job_summary(path: &Path, hosts: Option<&Path>) -> JobSummary {
    let mut summary = JobSummary {
        path: path.to_path_buf(),
        name: path.display().to_string(),
        model: String::new(),
        rows: None,
        hosts: Vec::new(),
        error: None,
    };
    let job = match load_job(path) {
        Ok(j) => j,
        Err(e) => {
            summary.error = Some(e.to_string());
            return summary;
        }
    };
    summary.name = job.name.clone();
    summary.model = job.model.spec.kind_name().to_string();
    let fleet_path = hosts
        .map(Path::to_path_buf)
        .unwrap_or_else(|| job.hosts.clone());
    match load_fleet(&fleet_path) {
        Ok(f) => summary.hosts = f.hosts.iter().map(|h| h.name.clone()).collect(),
        Err(e) => summary.error = Some(e.to_string()),
    }
    if let Ok(ds) = crate::data::Dataset::open(&job.input, job.model.spec.reads_history()) {
        summary.rows = Some(ds.num_rows());
    } else if let Some(g) = &job.generate {
        summary.rows = Some(g.users);
    }
    summary
}

/// The versions of the store in `dir`, or `None` when there is no store.
pub fn store_summary(dir: &Path) -> Option<StoreSummary> {
    let store = Store::open_existing(dir).ok()?;
    let live = store.live().ok()?;
    let versions = store
        .versions()
        .ok()?
        .into_iter()
        .map(|r| VersionRow {
            version: r.version,
            status: r.status.to_string(),
            rows: r.committed_rows,
            model_version: r.model_version,
            created: r.created,
            job: r.job,
            model_kind: r.model_kind,
            rows_expected: r.rows,
            validation: r.validation,
            hosts: r.hosts,
            duration_s: r.duration_s,
        })
        .collect();
    Some(StoreSummary { live, versions })
}

/// The store of the first job that names one (for the store view before a run).
pub fn jobs_store(paths: &[PathBuf]) -> Option<PathBuf> {
    paths
        .iter()
        .find_map(|p| load_job(p).ok().map(|j| j.output.store))
}

/// How the controller's session ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    /// The exit code of the last run (0 when none ran).
    pub code: i32,
    /// What became of a run that was still going at the quit, for the user
    /// to read once the terminal is back: cancelled and resumable, or
    /// finished (flipped or refused) because it was past its last chunk.
    pub quit_note: Option<String>,
}

/// Carries out `actions` until [`Action::Quit`] or until the UI goes away,
/// feeding `inputs` back; runs use the fleet file `hosts` when given.
/// A run still going at the end is cancelled and waited for; what became
/// of it is in [`Ended::quit_note`].
pub fn control(
    actions: Receiver<Action>,
    inputs: Sender<UiInput>,
    hosts: Option<PathBuf>,
    store_dir: Option<PathBuf>,
) -> Ended {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Ended {
                code: 1,
                quit_note: Some(format!("cannot start the async runtime: {e}")),
            };
        }
    };
    let mut c = Controller {
        rt,
        inputs,
        hosts,
        store_dir,
        controls: None,
        running: None,
        over: Arc::new(AtomicBool::new(false)),
        code: 0,
    };
    c.send_store();
    c.rt.spawn(end_on_signals(c.inputs.clone()));
    while let Ok(action) = actions.recv() {
        c.reap();
        if action == Action::Quit {
            break;
        }
        c.on_action(action);
    }
    c.stop()
}

/// Tells the UI to leave when the process is asked to end. Once a run has
/// started, its own handlers catch SIGTERM and SIGHUP (to stop resumably)
/// for the rest of the process's life, so without this a `kill` after a run
/// would be swallowed and the UI would stay.
async fn end_on_signals(inputs: Sender<UiInput>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    let why = tokio::select! {
        _ = term.recv() => "terminated (SIGTERM)",
        _ = hup.recv() => "hung up (SIGHUP)",
    };
    let _ = inputs.send(UiInput::Terminate(why.to_string()));
}

/// A run's result as the controller keeps it.
type RunResult = Result<super::Report, super::Error>;

struct Controller {
    rt: Runtime,
    inputs: Sender<UiInput>,
    hosts: Option<PathBuf>,
    store_dir: Option<PathBuf>,
    /// The running job's controls, while one runs.
    controls: Option<UnboundedSender<Control>>,
    running: Option<JoinHandle<RunResult>>,
    /// Set once the running job's last event went to the UI: from then on
    /// it is over, even if its task has a moment left to end.
    over: Arc<AtomicBool>,
    /// The exit code of the last run that ended.
    code: i32,
}

impl Controller {
    fn send_store(&self) {
        if let Some(s) = self.store_dir.as_deref().and_then(store_summary) {
            let _ = self.inputs.send(UiInput::Store(s));
        }
    }

    /// Collects the exit code of a run that ended (waiting for its task
    /// when its last event was already shown).
    fn reap(&mut self) {
        let over = self.over.load(Ordering::SeqCst);
        if self
            .running
            .as_ref()
            .is_some_and(|h| over || h.is_finished())
        {
            let handle = self.running.take().expect("checked");
            self.code = exit_code(&self.rt.block_on(handle));
            self.controls = None;
        }
    }

    fn control(&self, ctl: Control) {
        if let Some(c) = &self.controls {
            let _ = c.send(ctl);
        }
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::Start(path) => self.start(path),
            Action::Pause(on) => self.control(Control::Pause(on)),
            Action::Backup(chunk) => self.control(Control::Backup(chunk)),
            Action::Cancel => self.control(Control::Cancel),
            Action::Flip(version) => self.flip(version),
            Action::RefreshStore => self.send_store(),
            Action::Lookup { version, id } => self.lookup(version, id),
            Action::Quit => {}
        }
    }

    /// Starts the job in `path` unless a run is going; its events go to the
    /// UI, and the store's versions after it ends.
    fn start(&mut self, path: PathBuf) {
        if self.running.is_some() {
            return;
        }
        if let Ok(job) = load_job(&path) {
            self.store_dir = Some(job.output.store);
        }
        let (ev_tx, mut ev_rx) = unbounded_channel::<Event>();
        let (ctl_tx, ctl_rx) = unbounded_channel();
        self.controls = Some(ctl_tx);
        let opts = Options {
            job: path,
            hosts: self.hosts.clone(),
            ..Options::default()
        };
        let fwd = self.inputs.clone();
        let ended = self.inputs.clone();
        let dir = self.store_dir.clone();
        self.over = Arc::new(AtomicBool::new(false));
        let over = self.over.clone();
        self.running = Some(self.rt.spawn(async move {
            let forward = tokio::spawn(async move {
                while let Some(ev) = ev_rx.recv().await {
                    let finished = matches!(ev, Event::Finished(_));
                    let started = matches!(ev, Event::Started { .. });
                    if finished {
                        // Over before the UI can see it: an action sent in
                        // answer to this event finds the run reapable.
                        over.store(true, Ordering::SeqCst);
                    }
                    let _ = fwd.send(UiInput::Run(ev));
                    // The new version is in the store from the start on.
                    if (started || finished)
                        && let Some(s) = dir.as_deref().and_then(store_summary)
                    {
                        let _ = fwd.send(UiInput::Store(s));
                    }
                }
            });
            let result = super::run(opts, ev_tx, ctl_rx).await;
            let _ = forward.await;
            let _ = ended.send(UiInput::RunEnded {
                code: match &result {
                    Ok(_) => 0,
                    Err(e) => e.exit_code(),
                },
                why: result.as_ref().err().map(ToString::to_string),
            });
            result
        }));
    }

    /// Makes `version` live (forward or back) and says how it went, in the
    /// log and in the status line. Not while a run goes: its own flip must
    /// not meet this one.
    fn flip(&self, version: u64) {
        let text = match &self.store_dir {
            _ if self.running.is_some() => {
                format!("flip to v{version} refused: a run is going; flip after it ends")
            }
            None => format!("flip to v{version} refused: no store is known yet"),
            Some(dir) => match Store::open_existing(dir).and_then(|s| s.flip(version)) {
                Ok(()) => format!("v{version} is live ({})", dir.display()),
                Err(e) => format!("flip to v{version} refused: {e}"),
            },
        };
        let _ = self.inputs.send(UiInput::Run(Event::Log {
            at: std::time::Duration::ZERO,
            source: "store".into(),
            text: text.clone(),
        }));
        let _ = self.inputs.send(UiInput::Notice(text));
        self.send_store();
    }

    /// Looks `id` up in `version` on a blocking thread of the runtime, so a
    /// slow disk holds up neither the UI nor the run's controls; the answer
    /// goes to the UI as [`UiInput::Lookup`].
    fn lookup(&self, version: u64, id: String) {
        let inputs = self.inputs.clone();
        let dir = self.store_dir.clone();
        self.rt.spawn_blocking(move || {
            let answer = match dir {
                None => Err("no store is known yet".to_string()),
                Some(dir) => lookup(&dir, version, &id).map_err(|e| e.to_string()),
            };
            let _ = inputs.send(UiInput::Lookup(Lookup {
                version,
                id,
                answer,
            }));
        });
    }

    /// Leaving: a run still going is cancelled and waited for. The cancel
    /// reaches the run only while it schedules chunks; once its last chunk
    /// committed it validates and flips regardless, so the note says what
    /// the run did, read from its result, never what was hoped.
    fn stop(mut self) -> Ended {
        let Some(h) = self.running.take() else {
            return Ended {
                code: self.code,
                quit_note: None,
            };
        };
        self.control(Control::Cancel);
        let result = self.rt.block_on(h);
        let code = exit_code(&result);
        let note = match result {
            Ok(Ok(report)) if report.flipped => format!(
                "the run was past its last chunk when you quit: version {} passed validation and is live",
                report.version
            ),
            Ok(Ok(report)) => format!("the run finished: version {} (not flipped)", report.version),
            Ok(Err(e)) => format!("the run stopped: {e}"),
            Err(e) => format!("the run's task failed: {e}"),
        };
        Ended {
            code,
            quit_note: Some(note),
        }
    }
}

/// Entity `id` of `version` in the store in `dir`: as an integer id first
/// (when it reads as one), then as a string id, as `herd store get` does.
pub fn lookup(
    dir: &Path,
    version: u64,
    id: &str,
) -> Result<Option<Prediction>, crate::store::Error> {
    let store = Store::open_existing(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Ok(n) = id.parse::<u64>()
        && let Some(p) = store.get(&EntityKey::Int(n), Some(version), now)?
    {
        return Ok(Some(p));
    }
    store.get(&EntityKey::Str(id.to_string()), Some(version), now)
}

fn exit_code(result: &Result<RunResult, tokio::task::JoinError>) -> i32 {
    match result {
        Ok(Ok(_)) => 0,
        Ok(Err(e)) => e.exit_code(),
        Err(_) => 1,
    }
}
