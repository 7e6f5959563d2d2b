//! What each key does on each page and in each window. [`App::handle_key`]
//! (mod.rs) routes a key here after the filter being typed and the keys
//! every page shares; the lists' cursor moves are in lists.rs.

use ratatui::crossterm::event::KeyCode;

use super::lists::{List, page_key, step_index};
use super::{Action, App, Focus, Overlay, Screen, VersionRow};
use crate::sched::ChunkId;

impl App {
    /// `?`: the help of what is shown (a detail window, else the page).
    pub(super) fn open_help(&mut self) {
        self.help_return = self
            .overlay
            .filter(|o| matches!(o, Overlay::HostDetail(_) | Overlay::VersionDetail(_)));
        self.overlay = Some(Overlay::Help);
        self.detail_scroll = 0;
    }

    /// The window the help was opened over, if any (else it is the page's).
    pub fn help_over(&self) -> Option<Overlay> {
        self.help_return
    }

    pub(super) fn overlay_key(&mut self, overlay: Overlay, code: KeyCode) -> Option<Action> {
        // Only an explicit `y` confirms: Enter, pressed once too often,
        // must never flip, cancel or quit.
        let yes = matches!(code, KeyCode::Char('y') | KeyCode::Char('Y'));
        let no = matches!(code, KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc);
        match overlay {
            Overlay::HostDetail(_) => {
                if code == KeyCode::Char('?') {
                    self.open_help();
                } else if no || matches!(code, KeyCode::Enter | KeyCode::Char('q')) {
                    self.overlay = None;
                } else {
                    self.scroll_detail(code);
                }
                None
            }
            Overlay::VersionDetail(version) => self.version_detail_key(version, code),
            Overlay::Help => {
                if no
                    || matches!(
                        code,
                        KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter
                    )
                {
                    self.overlay = self.help_return.take();
                    self.detail_scroll = 0;
                } else {
                    self.scroll_detail(code);
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

    /// ↑↓ and the page keys in a window taller than the screen.
    fn scroll_detail(&mut self, code: KeyCode) {
        let max = self.hits.borrow().detail_max;
        self.detail_scroll = match code {
            KeyCode::Up | KeyCode::Char('k') => step_index(self.detail_scroll, -1, max),
            KeyCode::Down | KeyCode::Char('j') => step_index(self.detail_scroll, 1, max),
            code => match page_key(code, self.detail_scroll, max) {
                Some(at) => at,
                None => return,
            },
        };
    }

    /// The version detail: `i` or `/` (or Enter) types an id, Enter looks
    /// it up; `f` flips to this version (asking first); Esc closes.
    fn version_detail_key(&mut self, version: u64, code: KeyCode) -> Option<Action> {
        if self.lookup.editing {
            match code {
                KeyCode::Char(c) => self.lookup.input.push(c),
                KeyCode::Backspace => {
                    self.lookup.input.pop();
                }
                KeyCode::Enter => {
                    let id = self.lookup.input.trim().to_string();
                    if id.is_empty() {
                        self.say("type an entity id, then Enter");
                        return None;
                    }
                    self.lookup.input = id.clone();
                    self.lookup.editing = false;
                    self.lookup.pending = true;
                    self.lookup.answer = None;
                    return Some(Action::Lookup { version, id });
                }
                KeyCode::Esc => self.lookup.editing = false,
                code => {
                    self.lookup.editing = false;
                    self.scroll_detail(code);
                }
            }
            return None;
        }
        match code {
            KeyCode::Char('i' | '/') | KeyCode::Enter => self.lookup.editing = true,
            KeyCode::Char('?') => self.open_help(),
            KeyCode::Char('f') => match self.flip_refusal_for(version) {
                Some(why) => self.say(why),
                None => self.overlay = Some(Overlay::ConfirmFlip(version)),
            },
            KeyCode::Esc | KeyCode::Char('q') => self.overlay = None,
            code => self.scroll_detail(code),
        }
        None
    }

    pub(super) fn picker_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Up | KeyCode::Char('k') => self.step(List::Jobs, -1),
            KeyCode::Down | KeyCode::Char('j') => self.step(List::Jobs, 1),
            code if page_key(code, 0, 0).is_some() => self.page(code),
            KeyCode::Enter => {
                let at = *self.visible_jobs().get(self.job_selected)?;
                let job = &self.jobs[at];
                if job.error.is_some() {
                    self.say("this job cannot start: its config has an error (shown below)");
                    return None;
                }
                if self.busy() {
                    self.say("a run is going: one run at a time");
                    return None;
                }
                let path = job.path.clone();
                self.starting = Some(path.clone());
                return Some(Action::Start(path));
            }
            KeyCode::Esc if self.run.started() => self.screen = Screen::Run,
            _ => {}
        }
        None
    }

    pub(super) fn run_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Char('p' | 'c' | 's') if !self.run.running() => {
                self.say("no run is going");
            }
            KeyCode::Char('p') => {
                let pause = !self.run.snapshot.paused;
                self.say(if pause {
                    "pausing: no new attempts start; running ones finish"
                } else {
                    "resuming"
                });
                return Some(Action::Pause(pause));
            }
            KeyCode::Char('c') => self.overlay = Some(Overlay::ConfirmCancel),
            KeyCode::Char('s') => return self.backup(),
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Timeline => Focus::Hosts,
                    Focus::Hosts => Focus::Log,
                    Focus::Log => Focus::Timeline,
                };
            }
            KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Timeline => Focus::Log,
                    Focus::Hosts => Focus::Timeline,
                    Focus::Log => Focus::Hosts,
                };
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_in_focus(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_in_focus(1),
            KeyCode::Left | KeyCode::Right => {
                self.move_selection(if code == KeyCode::Left { -1 } else { 1 });
            }
            code if page_key(code, 0, 0).is_some() => self.page(code),
            KeyCode::Enter if self.focus == Focus::Hosts => {
                if let Some(&at) = self.visible_hosts().get(self.host_selected) {
                    self.overlay = Some(Overlay::HostDetail(at));
                    self.detail_scroll = 0;
                }
            }
            KeyCode::Esc if self.run.finished() && !self.jobs.is_empty() => {
                self.screen = Screen::Picker;
            }
            _ => {}
        }
        None
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

    /// ↑↓ in the focused pane. In the timeline they move the selection
    /// among running chunks (the lanes follow it), and scroll the lanes
    /// once none runs.
    fn move_in_focus(&mut self, step: i64) {
        match self.focus {
            Focus::Timeline if !self.run.selectable().is_empty() => self.move_selection(step),
            Focus::Timeline => self.step(List::Lanes, step),
            Focus::Hosts => self.step(List::Hosts, step),
            Focus::Log => self.step(List::Log, step),
        }
    }

    /// Moves the selection among running attempts (see
    /// [`crate::ui::state::RunState::selectable`]), scrolling the lanes to
    /// show it.
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
        self.follow_selection();
    }

    /// Scrolls the lanes so the selected chunk's lane is on screen (as tall
    /// as the last frame drew them).
    fn follow_selection(&mut self) {
        let rows = self.hits.borrow().lane_rows;
        let Some(chunk) = self.chunk_selected else {
            return;
        };
        let lane = self.visible_lanes().iter().position(|l| {
            l.attempts
                .iter()
                .any(|a| a.chunk == chunk && a.state == crate::sched::AttemptState::Running)
        });
        if let Some(lane) = lane.filter(|_| rows > 0) {
            if lane < self.lane_scroll {
                self.lane_scroll = lane;
            } else if lane >= self.lane_scroll + rows {
                self.lane_scroll = lane + 1 - rows;
            }
        }
    }

    pub(super) fn store_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Up | KeyCode::Char('k') => self.step(List::Versions, -1),
            KeyCode::Down | KeyCode::Char('j') => self.step(List::Versions, 1),
            code if page_key(code, 0, 0).is_some() => self.page(code),
            KeyCode::Char('f') => match self.flip_refusal() {
                Some(why) => self.say(why),
                None => {
                    let row = self.selected_version()?;
                    self.overlay = Some(Overlay::ConfirmFlip(row.version));
                }
            },
            // Enter opens the version; it never flips.
            KeyCode::Enter => {
                let version = self.selected_version()?.version;
                self.overlay = Some(Overlay::VersionDetail(version));
                self.detail_scroll = 0;
                self.lookup.editing = false;
                self.lookup.pending = false;
                self.lookup.answer = None;
            }
            KeyCode::Char('r') => return Some(Action::RefreshStore),
            KeyCode::Esc => {
                self.screen = if self.back == Screen::Store {
                    Screen::Picker
                } else {
                    self.back
                };
            }
            _ => {}
        }
        None
    }

    /// The store view's selected row (among those its filter shows).
    pub fn selected_version(&self) -> Option<&VersionRow> {
        let at = *self.visible_versions().get(self.version_selected)?;
        self.run.store.as_ref()?.versions.get(at)
    }

    /// Why `f` on the selected version would do nothing or be refused by
    /// the store; `None` when the flip is offered.
    pub fn flip_refusal(&self) -> Option<String> {
        match self.selected_version() {
            Some(row) => self.flip_refusal_for(row.version),
            None => Some("no version is selected".into()),
        }
    }

    /// Why flipping to `version` would do nothing or be refused.
    pub fn flip_refusal_for(&self, version: u64) -> Option<String> {
        let Some(row) = self.run.version_row(version) else {
            return Some(format!("v{version} is not in the store"));
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
