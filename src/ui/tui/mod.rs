//! The terminal UI: an [`App`] that holds what is shown (the run's
//! [`RunState`], the job list, the store's versions, focus and selection),
//! turns keys into [`Action`]s for the caller, and draws itself from that
//! state alone ([`App::draw`], no IO). [`run_tui`] is the thin driver that
//! owns the terminal.
//!
//! It must not act on the run, the store or the files itself: every wish of
//! the user leaves as an [`Action`], and every fact arrives as a [`UiInput`].

mod driver;
mod view;

use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::run::Event;
use crate::sched::ChunkId;
use crate::ui::state::RunState;
pub use crate::ui::state::{StoreSummary, VersionRow};

pub use driver::{FRAME_INTERVAL, KEY_POLL, MESSAGE_TTL, run_tui};
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
    ConfirmQuit,
    ConfirmCancel,
    ConfirmFlip(u64),
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
    /// Hosts table rows scrolled past.
    pub hosts_scroll: usize,
    /// Log lines scrolled back from the newest (0: follow the tail).
    pub log_scroll: usize,
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
            hosts_scroll: 0,
            log_scroll: 0,
            quit: false,
            back: Screen::Picker,
        }
    }

    pub fn apply(&mut self, input: UiInput) {
        match input {
            UiInput::Run(event) => {
                let starting = matches!(event, Event::Started { .. });
                self.run.apply(&event);
                if starting {
                    self.starting = None;
                    self.screen = Screen::Run;
                    self.back = Screen::Run;
                    self.chunk_selected = None;
                    self.log_scroll = 0;
                    self.hosts_scroll = 0;
                }
                if matches!(event, Event::Log { .. }) && self.log_scroll > 0 {
                    self.log_scroll = (self.log_scroll + 1).min(self.run.log.len());
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
            UiInput::Jobs(jobs) => {
                self.job_selected = self.job_selected.min(jobs.len().saturating_sub(1));
                self.jobs = jobs;
            }
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
        if let Some(overlay) = self.overlay {
            return self.overlay_key(overlay, key.code);
        }
        match key.code {
            KeyCode::Char('?') => {
                self.overlay = Some(Overlay::Help);
                None
            }
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

    fn overlay_key(&mut self, overlay: Overlay, code: KeyCode) -> Option<Action> {
        // Only an explicit `y` confirms: Enter, pressed once too often,
        // must never flip, cancel or quit.
        let yes = matches!(code, KeyCode::Char('y') | KeyCode::Char('Y'));
        let no = matches!(code, KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc);
        match overlay {
            Overlay::HostDetail(_) => {
                if no || matches!(code, KeyCode::Enter | KeyCode::Char('q')) {
                    self.overlay = None;
                }
                None
            }
            Overlay::Help => {
                if no
                    || matches!(
                        code,
                        KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter
                    )
                {
                    self.overlay = None;
                }
                None
            }
            _ if no => {
                self.overlay = None;
                None
            }
            _ if !yes => {
                self.say("press y to go ahead, n or Esc to leave it");
                None
            }
            Overlay::ConfirmQuit => {
                self.overlay = None;
                self.quit = true;
                Some(Action::Quit)
            }
            Overlay::ConfirmCancel => {
                self.overlay = None;
                Some(Action::Cancel)
            }
            Overlay::ConfirmFlip(version) => {
                self.overlay = None;
                Some(Action::Flip(version))
            }
        }
    }

    fn picker_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Up | KeyCode::Char('k') => {
                self.job_selected = self.job_selected.saturating_sub(1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.job_selected + 1 < self.jobs.len() {
                    self.job_selected += 1;
                }
                None
            }
            code if page_key(code, self.job_selected, 0).is_some() => {
                let max = self.jobs.len().saturating_sub(1);
                self.job_selected = page_key(code, self.job_selected, max).unwrap_or(0);
                None
            }
            KeyCode::Enter => {
                let job = self.jobs.get(self.job_selected)?;
                if job.error.is_some() {
                    self.say("this job cannot start: its config has an error (shown below)");
                    return None;
                }
                if self.busy() {
                    self.say("a run is going: one run at a time");
                    return None;
                }
                self.starting = Some(job.path.clone());
                Some(Action::Start(job.path.clone()))
            }
            KeyCode::Esc if self.run.started() => {
                self.screen = Screen::Run;
                None
            }
            _ => None,
        }
    }

    fn run_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Char('p' | 'c' | 's') if !self.run.running() => {
                self.say("no run is going");
                None
            }
            KeyCode::Char('p') => {
                let pause = !self.run.snapshot.paused;
                self.say(if pause {
                    "pausing: no new attempts start; running ones finish"
                } else {
                    "resuming"
                });
                Some(Action::Pause(pause))
            }
            KeyCode::Char('c') => {
                self.overlay = Some(Overlay::ConfirmCancel);
                None
            }
            KeyCode::Char('s') => self.backup(),
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Timeline => Focus::Hosts,
                    Focus::Hosts => Focus::Log,
                    Focus::Log => Focus::Timeline,
                };
                None
            }
            KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Timeline => Focus::Log,
                    Focus::Hosts => Focus::Timeline,
                    Focus::Log => Focus::Hosts,
                };
                None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_in_focus(-1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_in_focus(1);
                None
            }
            KeyCode::Left | KeyCode::Right => {
                self.move_selection(if code == KeyCode::Left { -1 } else { 1 });
                None
            }
            code if page_key(code, 0, 0).is_some() => {
                self.page_in_focus(code);
                None
            }
            KeyCode::Enter if self.focus == Focus::Hosts => {
                if self.hosts_scroll < self.run.hosts.len() {
                    self.overlay = Some(Overlay::HostDetail(self.hosts_scroll));
                }
                None
            }
            KeyCode::Esc if self.run.finished() && !self.jobs.is_empty() => {
                self.screen = Screen::Picker;
                None
            }
            _ => None,
        }
    }

    /// `s`: a backup of the selected running chunk, saying what happens.
    fn backup(&mut self) -> Option<Action> {
        let selectable = self.run.selectable();
        let Some(chunk) = self
            .chunk_selected
            .filter(|c| selectable.iter().any(|a| a.chunk == *c))
        else {
            self.say("no running chunk is selected (←→ selects one)");
            return None;
        };
        let free: u32 = self
            .run
            .hosts
            .iter()
            .filter_map(|h| h.view.as_ref())
            .filter(|v| !v.lost)
            .map(|v| v.slots.saturating_sub(v.busy))
            .sum();
        self.say(if free == 0 {
            format!(
                "backup of chunk {chunk} queued: every slot is busy; it starts on the next free one"
            )
        } else {
            format!("backup of chunk {chunk} asked for")
        });
        Some(Action::Backup(chunk))
    }

    fn move_in_focus(&mut self, step: i64) {
        match self.focus {
            Focus::Timeline => self.move_selection(step),
            Focus::Hosts => {
                let max = self.run.hosts.len().saturating_sub(1);
                self.hosts_scroll = step_index(self.hosts_scroll, step, max);
            }
            // Up goes back in time: scrolling grows.
            Focus::Log => {
                let max = self.run.log.len().saturating_sub(1);
                self.log_scroll = step_index(self.log_scroll, -step, max);
            }
        }
    }

    /// PgUp/PgDn/Home/End/g/G in the focused pane. In the log, up is back
    /// in time: Home/g go to the oldest line, End/G follow the tail.
    fn page_in_focus(&mut self, code: KeyCode) {
        match self.focus {
            Focus::Log => {
                let max = self.run.log.len().saturating_sub(1);
                let back = match code {
                    KeyCode::PageUp => KeyCode::PageDown,
                    KeyCode::PageDown => KeyCode::PageUp,
                    KeyCode::Home | KeyCode::Char('g') => KeyCode::End,
                    _ => KeyCode::Home,
                };
                self.log_scroll = page_key(back, self.log_scroll, max).unwrap_or(0);
            }
            Focus::Hosts => {
                let max = self.run.hosts.len().saturating_sub(1);
                self.hosts_scroll = page_key(code, self.hosts_scroll, max).unwrap_or(0);
            }
            Focus::Timeline => {
                let chunks: Vec<ChunkId> = self.run.selectable().iter().map(|a| a.chunk).collect();
                let at = self
                    .chunk_selected
                    .and_then(|c| chunks.iter().position(|x| *x == c))
                    .unwrap_or(0);
                let next = page_key(code, at, chunks.len().saturating_sub(1)).unwrap_or(0);
                self.chunk_selected = chunks.get(next).copied();
            }
        }
    }

    /// Moves the selection among running attempts (see
    /// [`RunState::selectable`]).
    fn move_selection(&mut self, step: i64) {
        let chunks: Vec<ChunkId> = self.run.selectable().iter().map(|a| a.chunk).collect();
        if chunks.is_empty() {
            self.chunk_selected = None;
            return;
        }
        let at = self
            .chunk_selected
            .and_then(|c| chunks.iter().position(|x| *x == c));
        let next = match at {
            Some(at) => step_index(at, step, chunks.len() - 1),
            None => 0,
        };
        self.chunk_selected = Some(chunks[next]);
    }

    fn store_key(&mut self, code: KeyCode) -> Option<Action> {
        let count = self.run.store.as_ref().map_or(0, |s| s.versions.len());
        match code {
            KeyCode::Up | KeyCode::Char('k') => {
                self.version_selected = self.version_selected.saturating_sub(1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.version_selected =
                    step_index(self.version_selected, 1, count.saturating_sub(1));
                None
            }
            code if page_key(code, 0, 0).is_some() => {
                self.version_selected =
                    page_key(code, self.version_selected, count.saturating_sub(1)).unwrap_or(0);
                None
            }
            KeyCode::Char('f') => {
                match self.flip_refusal() {
                    Some(why) => self.say(why),
                    None => {
                        let row = self.selected_version()?;
                        self.overlay = Some(Overlay::ConfirmFlip(row.version));
                    }
                }
                None
            }
            KeyCode::Enter => {
                self.say("Enter does not flip: f flips or rolls back (it asks first)");
                None
            }
            KeyCode::Char('r') => Some(Action::RefreshStore),
            KeyCode::Esc => {
                self.screen = if self.back == Screen::Store {
                    Screen::Picker
                } else {
                    self.back
                };
                None
            }
            _ => None,
        }
    }
}

impl App {
    /// The store view's selected row.
    pub fn selected_version(&self) -> Option<&VersionRow> {
        self.run.store.as_ref()?.versions.get(self.version_selected)
    }

    /// Why `f` on the selected version would do nothing or be refused by
    /// the store; `None` when the flip is offered.
    pub fn flip_refusal(&self) -> Option<String> {
        let Some(row) = self.selected_version() else {
            return Some("no version is selected".into());
        };
        if self.busy() {
            return Some("a run is going: flip or roll back after it ends".into());
        }
        if self.run.live() == Some(row.version) {
            return Some(format!("v{} is already live", row.version));
        }
        if !row.can_go_live() {
            return Some(format!(
                "v{} is {}: only a validated or retired version can go live",
                row.version, row.status
            ));
        }
        None
    }
}

/// Rows one PgUp/PgDn moves.
pub const PAGE: usize = 10;

/// Where PgUp/PgDn/Home/End/g/G move a cursor at `at` in `0..=max`
/// (Home and g go to 0); `None` for other keys.
fn page_key(code: KeyCode, at: usize, max: usize) -> Option<usize> {
    match code {
        KeyCode::PageUp => Some(at.saturating_sub(PAGE)),
        KeyCode::PageDown => Some((at + PAGE).min(max)),
        KeyCode::Home | KeyCode::Char('g') => Some(0),
        KeyCode::End | KeyCode::Char('G') => Some(max),
        _ => None,
    }
}

fn step_index(at: usize, step: i64, max: usize) -> usize {
    (at as i64 + step).clamp(0, max as i64) as usize
}
