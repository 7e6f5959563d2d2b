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

use crate::store::Store;
use crate::ui::tui::{Action, JobSummary, StoreSummary, UiInput, VersionRow};

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

/// Carries out `actions` until [`Action::Quit`] or until the UI goes away,
/// feeding `inputs` back; runs use the fleet file `hosts` when given.
/// Returns the exit code of the last run (0 when none ran); a run still
/// going at the end is cancelled (its version stays resumable).
pub fn control(
    actions: Receiver<Action>,
    inputs: Sender<UiInput>,
    hosts: Option<PathBuf>,
    store_dir: Option<PathBuf>,
) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return 1,
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
    while let Ok(action) = actions.recv() {
        c.reap();
        if action == Action::Quit {
            break;
        }
        c.on_action(action);
    }
    c.stop()
}

struct Controller {
    rt: Runtime,
    inputs: Sender<UiInput>,
    hosts: Option<PathBuf>,
    store_dir: Option<PathBuf>,
    /// The running job's controls, while one runs.
    controls: Option<UnboundedSender<Control>>,
    running: Option<JoinHandle<i32>>,
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
            self.code = self.rt.block_on(handle).unwrap_or(1);
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
        let dir = self.store_dir.clone();
        self.over = Arc::new(AtomicBool::new(false));
        let over = self.over.clone();
        self.running = Some(self.rt.spawn(async move {
            let forward = tokio::spawn(async move {
                while let Some(ev) = ev_rx.recv().await {
                    let finished = matches!(ev, Event::Finished(_));
                    if finished {
                        // Over before the UI can see it: an action sent in
                        // answer to this event finds the run reapable.
                        over.store(true, Ordering::SeqCst);
                    }
                    let _ = fwd.send(UiInput::Run(ev));
                    if finished && let Some(s) = dir.as_deref().and_then(store_summary) {
                        let _ = fwd.send(UiInput::Store(s));
                    }
                }
            });
            let result = super::run(opts, ev_tx, ctl_rx).await;
            let _ = forward.await;
            match result {
                Ok(_) => 0,
                Err(e) => e.exit_code(),
            }
        }));
    }

    /// Makes `version` live (forward or back) and says how it went in the log.
    fn flip(&self, version: u64) {
        if let Some(dir) = &self.store_dir {
            let text = match Store::open_existing(dir).and_then(|s| s.flip(version)) {
                Ok(()) => format!("flipped {} to version {version}", dir.display()),
                Err(e) => format!("flip to version {version} refused: {e}"),
            };
            let _ = self.inputs.send(UiInput::Run(Event::Log {
                at: std::time::Duration::ZERO,
                source: "store".into(),
                text,
            }));
        }
        self.send_store();
    }

    /// Leaving: a run still going is cancelled, and waited for.
    fn stop(mut self) -> i32 {
        if let Some(h) = self.running.take() {
            self.control(Control::Cancel);
            self.code = self.rt.block_on(h).unwrap_or(1);
        }
        self.code
    }
}
