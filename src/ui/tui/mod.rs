//! The terminal UI: an [`App`] that holds what is shown (the run's
//! [`RunState`], the job list, the store's versions, focus and selection),
//! turns keys into [`Action`]s for the caller, and draws itself from that
//! state alone ([`App::draw`], no IO). [`run_tui`] is the thin driver that
//! owns the terminal.
//!
//! It must not act on the run, the store or the files itself: every wish of
//! the user leaves as an [`Action`], and every fact arrives as a [`UiInput`].

mod driver;
mod keys;
mod lists;
mod view;

use std::cell::RefCell;
use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::run::Event;
use crate::sched::ChunkId;
use crate::store::Prediction;
use crate::ui::state::RunState;
pub use crate::ui::state::{StoreSummary, VersionRow};

pub use driver::{FRAME_INTERVAL, KEY_POLL, MESSAGE_TTL, run_tui};
pub use lists::{Filters, Hit, Hits, List, PAGE, WHEEL, matches};
pub use view::{MIN_HEIGHT, MIN_WIDTH, time_axis};

/// A job file as the picker lists it (the caller reads the files).
#[derive(Clone, Debug, PartialEq)]
pub struct JobSummary {
    pub path: PathBuf,
    pub name: String,
    pub model: String,
    pub rows: Option<u64>,
    pub hosts: Vec<String>,
    /// Why the job cannot start (a config error), if it cannot.
    pub error: Option<String>,
}

/// What the user asked for; the caller carries it out.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start the job in this file.
    Start(PathBuf),
    /// Leave the UI (stopping the run, if one is going).
    Quit,
    /// Stop (true) or resume (false) handing out new attempts.
    Pause(bool),
    /// Cancel the run; committed chunks are kept for `--resume`.
    Cancel,
    /// Launch a backup attempt of this chunk.
    Backup(ChunkId),
    /// Make this version live (forward or back).
    Flip(u64),
    /// Send a fresh [`UiInput::Store`].
    RefreshStore,
    /// Look up entity `id` in `version` of the store; the answer comes back
    /// as [`UiInput::Lookup`].
    Lookup { version: u64, id: String },
}

/// The store's answer to [`Action::Lookup`].
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    pub version: u64,
    pub id: String,
    /// The prediction, `None` when the version has none for the id, or why
    /// the store could not be read.
    pub answer: Result<Option<Prediction>, String>,
}

/// What the caller feeds the UI.
#[derive(Clone, Debug, PartialEq)]
pub enum UiInput {
    Run(Event),
    Store(StoreSummary),
    Jobs(Vec<JobSummary>),
    /// A one-line answer to an action (a flip done or refused), shown in
    /// the status line.
    Notice(String),
    /// The run that the last [`Action::Start`] began is over (also when it
    /// failed before its `Started` event): its exit code, and why it
    /// failed, if it did.
    RunEnded {
        code: i32,
        why: Option<String>,
    },
    Lookup(Lookup),
    /// The process was asked to end (SIGTERM, SIGHUP): the UI leaves
    /// without asking; a run still going stops resumably.
    Terminate(String),
}

/// Which page is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Picker,
    Run,
    Store,
}

/// A window over the page that takes the keys until it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    Help,
    /// One host: its device, slots, failures and log lines (the row at the
    /// top of the hosts table when Enter was pressed there).
    HostDetail(usize),
    /// One version of the store: its validation report, job, counts, and a
    /// prediction lookup by id.
    VersionDetail(u64),
    ConfirmQuit,
    ConfirmCancel,
    ConfirmFlip(u64),
}

/// The version detail's lookup: the id being typed and the last answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LookupBox {
    pub input: String,
    /// Keys go into `input`.
    pub editing: bool,
    /// Asked, no answer yet.
    pub pending: bool,
    pub answer: Option<Lookup>,
}

/// The pane of the run view that the arrow keys move in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Timeline,
    Hosts,
    Log,
}

/// The TUI's whole state.
#[derive(Clone, Debug)]
pub struct App {
    /// Colours on; false when `NO_COLOR` is set (glyphs carry the meaning).
    pub colors: bool,
    pub screen: Screen,
    pub overlay: Option<Overlay>,
    pub focus: Focus,
    /// Every figure shown, the store's versions included.
    pub run: RunState,
    pub jobs: Vec<JobSummary>,
    pub job_selected: usize,
    pub version_selected: usize,
    /// The job asked to start whose `Started` event has not come yet.
    pub starting: Option<PathBuf>,
    /// A transient line in the status line: a refusal, a no-op, an answer.
    /// The next key clears it, and the driver after [`MESSAGE_TTL`].
    pub message: Option<String>,
    /// Counts the messages set, so the driver can tell a new one apart.
    pub message_seq: u64,
    /// The chunk whose running attempt `s` backs up.
    pub chunk_selected: Option<ChunkId>,
    /// The selected row of the hosts table (among those its filter shows).
    pub host_selected: usize,
    /// Timeline lanes scrolled past (among those its filter shows).
    pub lane_scroll: usize,
    /// Log lines scrolled back from the newest shown (0: follow the tail).
    pub log_scroll: usize,
    /// The `/` filters of the lists.
    pub filters: Filters,
    /// Rows the open window (help, host or version detail) is scrolled.
    pub detail_scroll: usize,
    /// The version detail's prediction lookup.
    pub lookup: LookupBox,
    /// Where the help returns to when it closes (a detail window).
    help_return: Option<Overlay>,
    /// Where the last frame drew each list, for the mouse.
    pub hits: RefCell<Hits>,
    /// Set once the user has quit; the driver then stops.
    pub quit: bool,
    /// Where Esc goes back to from the store view.
    back: Screen,
}

impl App {
    /// An app on the job picker; it switches to the run view when a run
    /// starts.
    pub fn new(jobs: Vec<JobSummary>, colors: bool) -> App {
        App {
            colors,
            screen: Screen::Picker,
            overlay: None,
            focus: Focus::Timeline,
            run: RunState::new(),
            jobs,
            job_selected: 0,
            version_selected: 0,
            starting: None,
            message: None,
            message_seq: 0,
            chunk_selected: None,
            host_selected: 0,
            lane_scroll: 0,
            log_scroll: 0,
            filters: Filters::default(),
            detail_scroll: 0,
            lookup: LookupBox::default(),
            help_return: None,
            hits: RefCell::new(Hits::default()),
            quit: false,
            back: Screen::Picker,
        }
    }

    pub fn apply(&mut self, input: UiInput) {
        match input {
            UiInput::Run(event) => {
                let starting = matches!(event, Event::Started { .. });
                let shown = (self.log_scroll > 0).then(|| self.visible_log().len());
                self.run.apply(&event);
                if starting {
                    self.starting = None;
                    self.screen = Screen::Run;
                    self.back = Screen::Run;
                    self.chunk_selected = None;
                    self.log_scroll = 0;
                    self.host_selected = 0;
                    self.lane_scroll = 0;
                } else if let Some(shown) = shown {
                    // Scrolled back, the view stays on the same lines.
                    let more = self.visible_log().len().saturating_sub(shown);
                    self.set_cursor(List::Log, self.log_scroll + more);
                }
                self.fix_selection();
            }
            UiInput::Store(store) => {
                if let Some(Overlay::ConfirmFlip(_)) = self.overlay {
                    self.overlay = None;
                }
                self.version_selected = self
                    .version_selected
                    .min(store.versions.len().saturating_sub(1));
                self.run.apply_store(store);
            }
            UiInput::Notice(text) => self.say(text),
            UiInput::RunEnded { why, .. } => {
                if self.starting.take().is_some()
                    && !self.run.started()
                    && let Some(why) = why
                {
                    self.say(format!("the run did not start: {why}"));
                }
            }
            UiInput::Lookup(found) => {
                let open = self.overlay == Some(Overlay::VersionDetail(found.version));
                if open && found.id == self.lookup.input {
                    self.lookup.pending = false;
                    self.lookup.answer = Some(found);
                }
            }
            UiInput::Jobs(jobs) => {
                self.job_selected = self.job_selected.min(jobs.len().saturating_sub(1));
                self.jobs = jobs;
            }
            UiInput::Terminate(_) => self.quit = true,
        }
    }

    /// Keeps the selection on a running attempt: the same chunk while it
    /// runs, else the worst straggler, else none.
    fn fix_selection(&mut self) {
        let selectable = self.run.selectable();
        let still = self
            .chunk_selected
            .is_some_and(|c| selectable.iter().any(|a| a.chunk == c));
        if !still {
            self.chunk_selected = selectable.first().map(|a| a.chunk);
        }
    }

    /// Shows `text` in the status line until the next key (or
    /// [`MESSAGE_TTL`]).
    pub fn say(&mut self, text: impl Into<String>) {
        self.message = Some(text.into());
        self.message_seq += 1;
    }

    /// A run is going, or was asked to start and has not said so yet.
    pub fn busy(&self) -> bool {
        self.run.running() || self.starting.is_some()
    }

    /// Turns a key press into an action for the caller, if it asks for one.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        self.message = None;
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return Some(Action::Quit);
        }
        if let Some(handled) = self.filter_key(key.code) {
            return handled;
        }
        if let Some(overlay) = self.overlay {
            return self.overlay_key(overlay, key.code);
        }
        match key.code {
            KeyCode::Char('?') => {
                self.open_help();
                None
            }
            KeyCode::Char('/') => {
                self.start_filter();
                None
            }
            KeyCode::Char(c @ ('n' | 'N')) => {
                self.next_match(c == 'n');
                None
            }
            KeyCode::Esc if self.clear_filter() => None,
            KeyCode::Char('q') => {
                if self.busy() {
                    self.overlay = Some(Overlay::ConfirmQuit);
                    None
                } else {
                    self.quit = true;
                    Some(Action::Quit)
                }
            }
            KeyCode::Char('v') if self.screen != Screen::Store => {
                self.back = self.screen;
                self.screen = Screen::Store;
                Some(Action::RefreshStore)
            }
            _ => match self.screen {
                Screen::Picker => self.picker_key(key.code),
                Screen::Run => self.run_key(key.code),
                Screen::Store => self.store_key(key.code),
            },
        }
    }
}
