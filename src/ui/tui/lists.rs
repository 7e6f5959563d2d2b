//! The lists the keys and the mouse move in (jobs, hosts, timeline lanes,
//! log, versions): what each shows under its `/` filter, the cursor moves
//! (arrows, PgUp/PgDn/Home/End/g/G, `n`/`N`), and clicks and the wheel,
//! mapped onto rows through the areas the last frame drew ([`Hits`]).

use ratatui::crossterm::event::{KeyCode, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::{Action, App, Focus, Overlay, Screen};
use crate::sched::ChunkId;
use crate::ui::state::{Lane, LogLine};

/// Rows one PgUp/PgDn moves.
pub const PAGE: usize = 10;

/// Rows one turn of the mouse wheel moves.
pub const WHEEL: usize = 3;

/// A list that `/` filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Jobs,
    Hosts,
    /// The timeline's lanes (a lane matches by its label or a chunk of it).
    Lanes,
    Log,
    Versions,
}

/// The filters, one a list, and the one being typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    jobs: String,
    hosts: String,
    lanes: String,
    log: String,
    versions: String,
    /// The list whose filter the keys type into.
    pub editing: Option<List>,
}

impl Filters {
    /// The filter of `list` (empty: none).
    pub fn get(&self, list: List) -> &str {
        match list {
            List::Jobs => &self.jobs,
            List::Hosts => &self.hosts,
            List::Lanes => &self.lanes,
            List::Log => &self.log,
            List::Versions => &self.versions,
        }
    }

    fn get_mut(&mut self, list: List) -> &mut String {
        match list {
            List::Jobs => &mut self.jobs,
            List::Hosts => &mut self.hosts,
            List::Lanes => &mut self.lanes,
            List::Log => &mut self.log,
            List::Versions => &mut self.versions,
        }
    }
}

/// Whether `text` holds `needle`, ignoring case; an empty needle matches.
pub fn matches(text: &str, needle: &str) -> bool {
    needle.is_empty() || text.to_lowercase().contains(&needle.to_lowercase())
}

/// Where the last frame drew a list's rows: row `i` of `area` shows item
/// `offset + i`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub list: List,
    pub area: Rect,
    pub offset: usize,
}

/// What the last frame drew that keys and the mouse need to know.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hits {
    /// The lists on screen.
    pub lists: Vec<Hit>,
    /// How far the open window can scroll.
    pub detail_max: usize,
    /// How many timeline lanes fit.
    pub lane_rows: usize,
}

impl App {
    /// The list that `/`, `n`/`N` and the page keys act on now.
    pub fn active_list(&self) -> Option<List> {
        match (self.screen, self.overlay) {
            (_, Some(_)) => None,
            (Screen::Picker, None) => Some(List::Jobs),
            (Screen::Store, None) => Some(List::Versions),
            (Screen::Run, None) => Some(match self.focus {
                Focus::Timeline => List::Lanes,
                Focus::Hosts => List::Hosts,
                Focus::Log => List::Log,
            }),
        }
    }

    /// The filter of `list` (empty: none).
    pub fn filter(&self, list: List) -> &str {
        self.filters.get(list)
    }

    /// Indices of the jobs the filter lets through.
    pub fn visible_jobs(&self) -> Vec<usize> {
        let f = self.filter(List::Jobs);
        (0..self.jobs.len())
            .filter(|&i| {
                let j = &self.jobs[i];
                let text = format!(
                    "{} {} {} {}",
                    j.name,
                    j.model,
                    j.hosts.join(" "),
                    j.path.display()
                );
                matches(&text, f)
            })
            .collect()
    }

    /// Indices of the hosts the filter lets through.
    pub fn visible_hosts(&self) -> Vec<usize> {
        let f = self.filter(List::Hosts);
        (0..self.run.hosts.len())
            .filter(|&i| {
                let h = &self.run.hosts[i];
                matches(&format!("{} {} {}", h.name, h.device(), h.state_text()), f)
            })
            .collect()
    }

    /// The timeline's lanes the filter lets through: by label (`gpu1#0`),
    /// or by a chunk that ran there (`chunk 9`).
    pub fn visible_lanes(&self) -> Vec<Lane<'_>> {
        let f = self.filter(List::Lanes);
        self.run
            .lanes()
            .into_iter()
            .filter(|l| {
                let chunks: Vec<String> = l
                    .attempts
                    .iter()
                    .map(|a| format!("chunk {}", a.chunk))
                    .collect();
                matches(&format!("{} {}", l.label, chunks.join(" ")), f)
            })
            .collect()
    }

    /// The log lines the filter lets through, oldest first.
    pub fn visible_log(&self) -> Vec<&LogLine> {
        let f = self.filter(List::Log);
        if f.is_empty() {
            return self.run.log.iter().collect();
        }
        self.run
            .log
            .iter()
            .filter(|l| matches(&format!("{}: {}", l.source, l.text), f))
            .collect()
    }

    /// Indices of the store's versions the filter lets through.
    pub fn visible_versions(&self) -> Vec<usize> {
        let f = self.filter(List::Versions);
        let Some(store) = &self.run.store else {
            return Vec::new();
        };
        (0..store.versions.len())
            .filter(|&i| {
                let v = &store.versions[i];
                matches(
                    &format!("v{} {} {} {}", v.version, v.status, v.model_version, v.job),
                    f,
                )
            })
            .collect()
    }

    /// How many rows `list` shows under its filter, and has in all.
    pub fn counts(&self, list: List) -> (usize, usize) {
        match list {
            List::Jobs => (self.visible_jobs().len(), self.jobs.len()),
            List::Hosts => (self.visible_hosts().len(), self.run.hosts.len()),
            List::Lanes => (self.visible_lanes().len(), self.run.lanes().len()),
            List::Log => (self.visible_log().len(), self.run.log.len()),
            List::Versions => (
                self.visible_versions().len(),
                self.run.store.as_ref().map_or(0, |s| s.versions.len()),
            ),
        }
    }

    /// `/text: 3 of 40 ` for a pane's title when `list` is filtered.
    pub fn filter_title(&self, list: List) -> String {
        let f = self.filter(list);
        if f.is_empty() && self.filters.editing != Some(list) {
            return String::new();
        }
        let (shown, all) = self.counts(list);
        format!("/{f}: {shown} of {all} ")
    }

    /// The cursor of `list`: the selected row among those shown (the log's
    /// is how far back from the newest shown line it is scrolled).
    fn cursor(&self, list: List) -> usize {
        match list {
            List::Jobs => self.job_selected,
            List::Hosts => self.host_selected,
            List::Lanes => self.lane_scroll,
            List::Log => self.log_scroll,
            List::Versions => self.version_selected,
        }
    }

    pub(super) fn set_cursor(&mut self, list: List, at: usize) {
        let max = self.counts(list).0.saturating_sub(1);
        let at = at.min(max);
        match list {
            List::Jobs => self.job_selected = at,
            List::Hosts => self.host_selected = at,
            List::Lanes => self.lane_scroll = at,
            List::Log => self.log_scroll = at,
            List::Versions => self.version_selected = at,
        }
    }

    /// `/`: starts typing a filter for the active list.
    pub(super) fn start_filter(&mut self) {
        match self.active_list() {
            Some(list) => {
                self.filters.editing = Some(list);
                self.set_cursor(list, 0);
            }
            None => self.say("nothing here to filter"),
        }
    }

    /// A key while a filter is typed: text, Backspace, Enter keeps it, Esc
    /// clears it. `None` hands the key on (it also ends the typing).
    pub(super) fn filter_key(&mut self, code: KeyCode) -> Option<Option<Action>> {
        let list = self.filters.editing?;
        match code {
            KeyCode::Char(c) => {
                self.filters.get_mut(list).push(c);
                self.set_cursor(list, 0);
            }
            KeyCode::Backspace => {
                self.filters.get_mut(list).pop();
                self.set_cursor(list, 0);
            }
            KeyCode::Enter => {
                self.filters.editing = None;
                let (shown, _) = self.counts(list);
                if shown == 0 {
                    self.say(format!("no row matches /{}", self.filter(list)));
                }
            }
            KeyCode::Esc => {
                self.filters.editing = None;
                self.filters.get_mut(list).clear();
                self.set_cursor(list, 0);
            }
            _ => {
                self.filters.editing = None;
                return None;
            }
        }
        Some(None)
    }

    /// Esc on a filtered list clears its filter (and does nothing else);
    /// true when it did.
    pub(super) fn clear_filter(&mut self) -> bool {
        match self.active_list() {
            Some(list) if !self.filter(list).is_empty() => {
                self.filters.get_mut(list).clear();
                self.set_cursor(list, 0);
                true
            }
            _ => false,
        }
    }

    /// `n` (forward) or `N` (back): the next row that matches the active
    /// list's filter, wrapping at the ends. In the log forward is newer.
    pub(super) fn next_match(&mut self, forward: bool) {
        let Some(list) = self.active_list() else {
            return;
        };
        let f = self.filter(list).to_string();
        if f.is_empty() {
            self.say("no filter: / types one, then n and N step through the matches");
            return;
        }
        let (shown, _) = self.counts(list);
        if shown == 0 {
            self.say(format!("no row matches /{f}"));
            return;
        }
        let at = self.cursor(list);
        let down = forward != (list == List::Log);
        let next = if down {
            (at + 1) % shown
        } else {
            (at + shown - 1) % shown
        };
        self.set_cursor(list, next);
        if list == List::Lanes {
            self.select_in_lane(next);
        }
    }

    /// PgUp/PgDn/Home/End/g/G on the active list. In the log, up is back in
    /// time: Home/g go to the oldest line, End/G follow the tail.
    pub(super) fn page(&mut self, code: KeyCode) {
        let Some(list) = self.active_list() else {
            return;
        };
        let max = self.counts(list).0.saturating_sub(1);
        let code = if list == List::Log {
            match code {
                KeyCode::PageUp => KeyCode::PageDown,
                KeyCode::PageDown => KeyCode::PageUp,
                KeyCode::Home | KeyCode::Char('g') => KeyCode::End,
                _ => KeyCode::Home,
            }
        } else {
            code
        };
        let at = page_key(code, self.cursor(list), max).unwrap_or(0);
        self.set_cursor(list, at);
    }

    /// Moves the active list's cursor `step` rows (down is positive; in
    /// the log, down is newer).
    pub(super) fn step(&mut self, list: List, step: i64) {
        let max = self.counts(list).0.saturating_sub(1);
        let step = if list == List::Log { -step } else { step };
        self.set_cursor(list, step_index(self.cursor(list), step, max));
    }

    /// Selects the running chunk of the `at`th lane shown, if it has one.
    fn select_in_lane(&mut self, at: usize) {
        let chunk: Option<ChunkId> = self.visible_lanes().get(at).and_then(|l| {
            l.attempts
                .iter()
                .rev()
                .find(|a| a.state == crate::sched::AttemptState::Running)
                .map(|a| a.chunk)
        });
        if chunk.is_some() {
            self.chunk_selected = chunk;
        }
    }

    /// A click selects the row under it (and focuses its pane); the wheel
    /// scrolls the list under the pointer, or the open window.
    pub fn handle_mouse(&mut self, ev: MouseEvent) -> Option<Action> {
        let at = Position::new(ev.column, ev.row);
        let wheel: i64 = match ev.kind {
            MouseEventKind::ScrollUp => -(WHEEL as i64),
            MouseEventKind::ScrollDown => WHEEL as i64,
            MouseEventKind::Down(MouseButton::Left) => 0,
            _ => return None,
        };
        if let Some(overlay) = self.overlay {
            if matches!(
                overlay,
                Overlay::HostDetail(_) | Overlay::VersionDetail(_) | Overlay::Help
            ) {
                let max = self.hits.borrow().detail_max;
                self.detail_scroll = step_index(self.detail_scroll, wheel, max);
            }
            return None;
        }
        let hit = self.hits.borrow().lists.iter().copied().find(|h| {
            // A pane's border and header count as the pane for the wheel.
            let pane = Rect {
                y: h.area.y.saturating_sub(2),
                height: h.area.height + 3,
                ..h.area
            };
            pane.contains(at)
        })?;
        self.message = None;
        match hit.list {
            List::Hosts => self.focus = Focus::Hosts,
            List::Lanes => self.focus = Focus::Timeline,
            List::Log => self.focus = Focus::Log,
            List::Jobs | List::Versions => {}
        }
        if wheel != 0 {
            self.step(hit.list, wheel);
        } else if hit.area.contains(at) && hit.list != List::Log {
            let row = hit.offset + usize::from(at.y - hit.area.y);
            if row < self.counts(hit.list).0 {
                if hit.list == List::Lanes {
                    self.select_in_lane(row);
                } else {
                    self.set_cursor(hit.list, row);
                }
            }
        }
        None
    }
}

/// Where PgUp/PgDn/Home/End/g/G move a cursor at `at` in `0..=max`
/// (Home and g go to 0); `None` for other keys.
pub(super) fn page_key(code: KeyCode, at: usize, max: usize) -> Option<usize> {
    match code {
        KeyCode::PageUp => Some(at.saturating_sub(PAGE)),
        KeyCode::PageDown => Some((at + PAGE).min(max)),
        KeyCode::Home | KeyCode::Char('g') => Some(0),
        KeyCode::End | KeyCode::Char('G') => Some(max),
        _ => None,
    }
}

pub(super) fn step_index(at: usize, step: i64, max: usize) -> usize {
    (at as i64).saturating_add(step).clamp(0, max as i64) as usize
}
