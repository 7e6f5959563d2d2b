//! Drawing: every page and overlay, from the [`App`] alone. No IO. The run
//! page (header, hosts, timeline, stragglers, log, result) is in `run.rs`.
//!
//! Meaning never rests on colour only: attempts have glyphs (see
//! [`glyph_legend`]), the verdict has words, the focused pane a thick border;
//! with `colors` off (NO_COLOR) nothing else changes.

mod help;
mod host;
mod run;
mod store;

pub use run::time_axis;

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Borders, Cell, Clear, Gauge, Paragraph, Row, Table, TableState, Wrap,
};

use super::{App, Focus, Hit, List, Overlay, Screen, VersionRow};
use crate::run::HostState;
use crate::sched::{AttemptState, AttemptView};
use crate::ui::state::{Outcome, RunState};
use crate::ui::{fmt_cost, fmt_count, fmt_duration, fmt_rate, fmt_unix, run_summary};

/// Below this width the UI draws only a "terminal too small" line.
pub const MIN_WIDTH: u16 = 60;
/// Below this height the UI draws only a "terminal too small" line.
pub const MIN_HEIGHT: u16 = 16;
/// From this width on, the log and the stragglers sit side by side.
const WIDE: u16 = 120;
/// From this height on, panes grow.
const TALL: u16 = 36;

/// Slowness (time left over the peers' median) from which a bar turns
/// yellow, and red.
const SLOW: f64 = 1.5;
const VERY_SLOW: f64 = 3.0;

/// The timeline's glyphs: (glyph, short name, what it marks), as the help
/// overlay and the legend list them.
pub fn glyph_legend() -> [(&'static str, &'static str, &'static str); 8] {
    [
        ("█ ▓", "done", "finished attempts (alternating)"),
        ("▒", "running", "running"),
        ("!", "straggler", "running straggler (its last cell)"),
        ("≡", "backup", "backup attempt"),
        ("/", "split", "attempt whose chunk was split"),
        ("-", "cancelled", "cancelled"),
        ("x", "failed", "failed"),
        (">", "selected", "selected chunk (s: backup)"),
    ]
}

struct Theme {
    colors: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.colors {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn slowness(&self, slowness: f64) -> Style {
        self.fg(if slowness >= VERY_SLOW {
            Color::Red
        } else if slowness >= SLOW {
            Color::Yellow
        } else {
            Color::Green
        })
    }

    fn block<'a>(&self, title: impl Into<Line<'a>>, focused: bool) -> Block<'a> {
        let block = Block::new().borders(Borders::ALL).title(title);
        if focused {
            block
                .border_type(BorderType::Thick)
                .border_style(self.fg(Color::Cyan))
        } else {
            block.border_style(self.fg(Color::DarkGray))
        }
    }
}

impl App {
    /// Draws the whole screen.
    pub fn draw(&self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            let msg = format!(
                "too small {}x{}, need {MIN_WIDTH}x{MIN_HEIGHT}",
                area.width, area.height
            );
            frame.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
            return;
        }
        let theme = Theme {
            colors: self.colors,
        };
        *self.hits.borrow_mut() = Default::default();
        match self.screen {
            Screen::Picker => self.draw_picker(frame, area, &theme),
            Screen::Run => self.draw_run(frame, area, &theme),
            Screen::Store => self.draw_store(frame, area, &theme),
        }
        match self.overlay {
            Some(Overlay::Help) => self.draw_help(frame, area, &theme),
            Some(Overlay::VersionDetail(v)) => self.draw_version_detail(frame, area, &theme, v),
            Some(Overlay::HostDetail(at)) => self.draw_host_detail(frame, area, &theme, at),
            Some(Overlay::ConfirmQuit) => {
                let mut text = vec![format!("Quit while {}?", self.run_in_words())];
                text.push(
                    "It is cancelled and stays resumable (`herd run JOB --resume`); \
                     past its last chunk it validates and flips instead. herd prints \
                     which happened."
                        .into(),
                );
                draw_confirm(
                    frame,
                    area,
                    &theme,
                    " quit? ",
                    text,
                    "[y] quit   [n/Esc] keep watching",
                )
            }
            Some(Overlay::ConfirmCancel) => draw_confirm(
                frame,
                area,
                &theme,
                " cancel run? ",
                vec![
                    format!("Cancel {}?", self.run_in_words()),
                    format!(
                        "Running attempts stop; nothing is flipped (live stays {}). \
                         Committed rows are kept: `herd run JOB --resume` finishes it.",
                        version_word(self.run.live())
                    ),
                ],
                "[y] cancel the run   [n/Esc] keep running",
            ),
            Some(Overlay::ConfirmFlip(version)) => {
                let live = self.run.live();
                let rows = |v: u64| {
                    self.run.version_row(v).map_or(String::new(), |r| {
                        format!(" ({}, {} rows)", r.status, fmt_count(r.rows))
                    })
                };
                let (title, verb, text) = match live {
                    Some(l) if version < l => (
                        " roll back? ",
                        "roll back",
                        format!(
                            "Roll back: make v{version}{} live instead of v{l}{}?",
                            rows(version),
                            rows(l)
                        ),
                    ),
                    Some(l) => (
                        " flip? ",
                        "flip",
                        format!(
                            "Flip: make v{version}{} live instead of v{l}{}?",
                            rows(version),
                            rows(l)
                        ),
                    ),
                    None => (
                        " flip? ",
                        "flip",
                        format!(
                            "Flip: make v{version}{} live (no version is live now)?",
                            rows(version)
                        ),
                    ),
                };
                draw_confirm(
                    frame,
                    area,
                    &theme,
                    title,
                    vec![
                        text,
                        "Readers switch at once; the old version is kept.".into(),
                    ],
                    &format!("[y] {verb}   [n/Esc] back"),
                )
            }
            None => {}
        }
    }

    fn draw_picker(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let [main, detail, footer] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(4),
            Constraint::Length(1),
        ])
        .areas(area);
        let block = theme.block(
            format!(" herd: pick a job {}", self.filter_title(List::Jobs)),
            true,
        );
        let shown = self.visible_jobs();
        if self.jobs.is_empty() || shown.is_empty() {
            let text = if self.jobs.is_empty() {
                "No job files found (looked for jobs/*.toml)."
            } else {
                "No job matches the filter (Esc clears it)."
            };
            frame.render_widget(Paragraph::new(text).block(block), main);
        } else {
            let rows = shown.iter().map(|&i| {
                let j = &self.jobs[i];
                let row = Row::new(vec![
                    Cell::from(j.name.clone()),
                    Cell::from(j.model.clone()),
                    Cell::from(j.rows.map_or("?".to_string(), fmt_count)),
                    Cell::from(j.hosts.join(", ")),
                    Cell::from(if j.error.is_some() {
                        "config error".to_string()
                    } else {
                        j.path.display().to_string()
                    }),
                ]);
                if j.error.is_some() {
                    row.style(theme.fg(Color::Red))
                } else {
                    row
                }
            });
            // The job's name is what one picks by: it gets its width; the
            // hosts and the file share what is left.
            let name_w = self
                .jobs
                .iter()
                .map(|j| j.name.chars().count())
                .max()
                .unwrap_or(0)
                .clamp(4, 32) as u16;
            let table = Table::new(
                rows,
                [
                    Constraint::Length(name_w),
                    Constraint::Length(10),
                    Constraint::Length(9),
                    Constraint::Fill(1),
                    Constraint::Fill(1),
                ],
            )
            .header(
                Row::new(["job", "model", "rows", "hosts", "file"])
                    .style(Style::new().add_modifier(Modifier::BOLD)),
            )
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ")
            .block(block);
            let mut state = TableState::new().with_selected(Some(self.job_selected));
            frame.render_stateful_widget(table, main, &mut state);
            self.record_table(List::Jobs, main, state.offset());
        }
        let selected = shown.get(self.job_selected).map(|&i| &self.jobs[i]);
        let detail_text: Vec<Line> = match selected {
            Some(job) => {
                let mut lines = vec![Line::from(format!("file: {}", job.path.display()))];
                match &job.error {
                    Some(e) => lines.push(Line::styled(
                        format!("cannot start: {e}"),
                        theme.fg(Color::Red),
                    )),
                    None => lines.push(Line::from("Enter starts this job.")),
                }
                lines
            }
            None => vec![],
        };
        frame.render_widget(
            Paragraph::new(detail_text)
                .wrap(Wrap { trim: true })
                .block(Block::new().borders(Borders::TOP)),
            detail,
        );
        frame.render_widget(
            self.status_line(
                theme,
                &[
                    ("↑↓", "select"),
                    ("Enter", "start"),
                    ("/", "filter"),
                    ("v", "store"),
                    ("?", "help"),
                    ("q", "quit"),
                ],
            ),
            footer,
        );
    }

    /// The run for a question: `the run of v7 (45,500 of 100,000 rows
    /// done)`, or the job still starting.
    fn run_in_words(&self) -> String {
        match &self.run.header {
            Some(h) if self.run.running() => format!(
                "the run of v{} ({} of {} rows done)",
                h.version,
                fmt_count(self.run.rows_done()),
                fmt_count(self.run.rows_total())
            ),
            _ => match &self.starting {
                Some(path) => format!("{} is starting", path.display()),
                None => "no run is going".into(),
            },
        }
    }

    /// The status line: the filter being typed, else the message when
    /// there is one, else the keys.
    fn status_line(&self, theme: &Theme, keys: &[(&str, &str)]) -> Paragraph<'static> {
        if let Some(list) = self.filters.editing {
            let (shown, all) = self.counts(list);
            return Paragraph::new(Line::from(vec![
                Span::styled(
                    format!("/{}▏", self.filter(list)),
                    theme.fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(
                    "  {shown} of {all} match · Enter keeps · Esc clears"
                )),
            ]));
        }
        match &self.message {
            Some(text) => Paragraph::new(Line::styled(
                format!("» {text}"),
                theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            )),
            None => footer_line(theme, keys),
        }
    }

    /// Notes where a table's rows were drawn, for the mouse.
    fn record_table(&self, list: List, table: Rect, offset: usize) {
        let inner = Rect {
            x: table.x + 1,
            y: table.y + 1,
            width: table.width.saturating_sub(2),
            height: table.height.saturating_sub(2),
        };
        // Below the header row.
        let body = Rect {
            y: inner.y + 1,
            height: inner.height.saturating_sub(1),
            ..inner
        };
        self.hits.borrow_mut().lists.push(Hit {
            list,
            area: body,
            offset,
        });
    }

    /// A window over the page: `lines` wrapped in `popup`, scrolled by
    /// `detail_scroll`, its keys on the bottom border and, when it is taller
    /// than the screen, which rows show.
    fn draw_window(
        &self,
        frame: &mut Frame,
        popup: Rect,
        theme: &Theme,
        title: String,
        keys: &str,
        lines: Vec<Line<'static>>,
    ) {
        let inner_w = usize::from(popup.width.saturating_sub(2).max(1));
        let inner_h = usize::from(popup.height.saturating_sub(2));
        let rows: usize = lines
            .iter()
            .map(|l| l.width().max(1).div_ceil(inner_w))
            .sum();
        let max = rows.saturating_sub(inner_h);
        self.hits.borrow_mut().detail_max = max;
        let at = self.detail_scroll.min(max);
        let mut block = theme
            .block(title, true)
            .title_bottom(Line::from(keys.to_string()).right_aligned());
        if max > 0 {
            block = block.title_bottom(format!(
                " rows {}-{} of {rows} (↑↓ PgUp PgDn) ",
                at + 1,
                (at + inner_h).min(rows)
            ));
        }
        frame.render_widget(Clear, popup);
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .scroll((at as u16, 0))
                .block(block),
            popup,
        );
    }
}

/// `v7`, or `none`.
fn version_word(v: Option<u64>) -> String {
    v.map_or("none".to_string(), |v| format!("v{v}"))
}

fn footer_line(theme: &Theme, keys: &[(&str, &str)]) -> Paragraph<'static> {
    let mut spans = Vec::new();
    for (key, what) in keys {
        spans.push(Span::styled(
            key.to_string(),
            theme.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    Paragraph::new(Line::from(spans))
}

fn draw_confirm(
    frame: &mut Frame,
    area: Rect,
    theme: &Theme,
    title: &str,
    text: Vec<String>,
    keys: &str,
) {
    let mut lines: Vec<Line> = text.into_iter().map(Line::from).collect();
    lines.push(Line::from(""));
    lines.push(Line::styled(
        keys.to_string(),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let width = (lines.iter().map(|l| l.width() as u16).max().unwrap_or(0) + 4).min(area.width);
    // Wrapped lines take more rows; one spare row for word breaks.
    let inner = usize::from(width.saturating_sub(2).max(1));
    let rows: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let popup = centered(area, width, rows as u16 + 3);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(theme.block(title.to_string(), true)),
        popup,
    );
}

/// A `width` x `height` rectangle in the middle of `area`, shrunk to fit.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
