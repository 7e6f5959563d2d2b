//! Drawing: every page and overlay, from the [`App`] alone. No IO. The run
//! page (header, hosts, timeline, stragglers, log, result) is in `run.rs`.
//!
//! Meaning never rests on colour only: attempts have glyphs (see
//! [`glyph_legend`]), the verdict has words, the focused pane a thick border;
//! with `colors` off (NO_COLOR) nothing else changes.

mod run;

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Borders, Cell, Clear, Gauge, Paragraph, Row, Table, TableState, Wrap,
};

use super::{App, Focus, Overlay, Screen};
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
        match self.screen {
            Screen::Picker => self.draw_picker(frame, area, &theme),
            Screen::Run => self.draw_run(frame, area, &theme),
            Screen::Store => self.draw_store(frame, area, &theme),
        }
        match self.overlay {
            Some(Overlay::Help) => draw_help(frame, area, &theme),
            Some(Overlay::ConfirmQuit) => draw_confirm(
                frame,
                area,
                &theme,
                " quit? ",
                vec![
                    "A run is in progress. Quit and stop it?".into(),
                    "Committed chunks are kept: `herd run JOB --resume` finishes it.".into(),
                ],
                "[y] quit   [n] keep watching",
            ),
            Some(Overlay::ConfirmCancel) => draw_confirm(
                frame,
                area,
                &theme,
                " cancel run? ",
                vec![
                    "Cancel the run? Running attempts stop; nothing is flipped.".into(),
                    "Committed chunks are kept: `herd run JOB --resume` finishes it.".into(),
                ],
                "[y] cancel the run   [n] keep running",
            ),
            Some(Overlay::ConfirmFlip(version)) => {
                let live = self.store.as_ref().and_then(|s| s.live);
                let text = match live {
                    Some(l) if version < l => {
                        format!("Roll back: make v{version} live instead of v{l}?")
                    }
                    Some(l) => format!("Flip: make v{version} live instead of v{l}?"),
                    None => format!("Flip: make v{version} live (no version is live now)?"),
                };
                draw_confirm(
                    frame,
                    area,
                    &theme,
                    " flip? ",
                    vec![
                        text,
                        "Readers switch at once; the old version is kept.".into(),
                    ],
                    "[y] flip   [n] back",
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
        let block = theme.block(" herd: pick a job ", true);
        if self.jobs.is_empty() {
            frame.render_widget(
                Paragraph::new("No job files found (looked for jobs/*.toml).").block(block),
                main,
            );
        } else {
            let rows = self.jobs.iter().map(|j| {
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
            let table = Table::new(
                rows,
                [
                    Constraint::Fill(2),
                    Constraint::Length(10),
                    Constraint::Length(10),
                    Constraint::Fill(2),
                    Constraint::Fill(3),
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
        }
        let detail_text: Vec<Line> = match self.jobs.get(self.job_selected) {
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
            footer_line(
                theme,
                &[
                    ("↑↓", "select"),
                    ("Enter", "start"),
                    ("v", "store"),
                    ("?", "help"),
                    ("q", "quit"),
                ],
            ),
            footer,
        );
    }

    fn draw_store(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let [main, footer] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
        let Some(store) = &self.store else {
            frame.render_widget(
                Paragraph::new("Reading the store...").block(theme.block(" store ", true)),
                main,
            );
            return;
        };
        let title = format!(
            " store: versions (live {}) ",
            store.live.map_or("none".to_string(), |v| format!("v{v}"))
        );
        if store.versions.is_empty() {
            frame.render_widget(
                Paragraph::new("The store has no versions yet.").block(theme.block(title, true)),
                main,
            );
        } else {
            let rows = store.versions.iter().map(|v| {
                let live = store.live == Some(v.version);
                let row = Row::new(vec![
                    format!("{}v{}", if live { "* " } else { "  " }, v.version),
                    v.status.clone(),
                    fmt_count(v.rows),
                    v.model_version.clone(),
                    fmt_unix(v.created),
                ]);
                match v.status.as_str() {
                    "live" => row.style(theme.fg(Color::Green)),
                    "failed" => row.style(theme.fg(Color::Red)),
                    "building" => row.style(theme.fg(Color::Yellow)),
                    _ => row,
                }
            });
            let table = Table::new(
                rows,
                [
                    Constraint::Length(8),
                    Constraint::Length(10),
                    Constraint::Length(12),
                    Constraint::Fill(1),
                    Constraint::Length(16),
                ],
            )
            .header(
                Row::new(["version", "status", "rows", "model", "created (UTC)"])
                    .style(Style::new().add_modifier(Modifier::BOLD)),
            )
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ")
            .block(theme.block(title, true));
            let mut state = TableState::new().with_selected(Some(self.version_selected));
            frame.render_stateful_widget(table, main, &mut state);
        }
        frame.render_widget(
            footer_line(
                theme,
                &[
                    ("↑↓", "select"),
                    ("Enter", "flip/rollback"),
                    ("r", "refresh"),
                    ("Esc", "back"),
                    ("?", "help"),
                ],
            ),
            footer,
        );
    }
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

fn draw_help(frame: &mut Frame, area: Rect, theme: &Theme) {
    let keys = [
        ("?", "this help (Esc closes)"),
        ("q", "quit (asks while a run goes)"),
        ("p", "pause / resume new attempts"),
        ("c", "cancel the run (asks)"),
        ("s", "backup attempt of the selected chunk"),
        ("←→ ↑↓", "select a running chunk / scroll"),
        ("Tab", "focus: timeline, hosts, log"),
        ("v", "store versions; Enter flips"),
        ("Esc", "back"),
    ];
    let mut lines: Vec<Line> = keys
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:>7}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "timeline",
        Style::new().add_modifier(Modifier::BOLD),
    ));
    for (g, _, what) in glyph_legend() {
        lines.push(Line::from(format!("{g:>7}  {what}")));
    }
    lines.push(Line::from(
        "colour: green as fast as peers, yellow 1.5x, red 3x slower",
    ));
    let popup = centered(area, 62, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(theme.block(" help ", true)),
        popup,
    );
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
    let width = lines.iter().map(|l| l.width() as u16).max().unwrap_or(0) + 4;
    let popup = centered(area, width, lines.len() as u16 + 2);
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
