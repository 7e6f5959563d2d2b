//! The store page (its versions, the live one starred) and the version
//! detail window: the validation report, the job, counts, when it was
//! made, and a prediction lookup by entity id.

use super::*;
use crate::store::Value;
use crate::ui::tui::{List, Lookup};

impl App {
    pub(super) fn draw_store(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let [main, footer] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
        let Some(store) = &self.run.store else {
            frame.render_widget(
                Paragraph::new("Reading the store...").block(theme.block(" store ", true)),
                main,
            );
            return;
        };
        let live_now = self.run.live();
        let title = format!(
            " store: versions (live {}) {}",
            version_word(live_now),
            self.filter_title(List::Versions)
        );
        let shown = self.visible_versions();
        if store.versions.is_empty() || shown.is_empty() {
            let text = if store.versions.is_empty() {
                "The store has no versions yet."
            } else {
                "No version matches the filter (Esc clears it)."
            };
            frame.render_widget(Paragraph::new(text).block(theme.block(title, true)), main);
        } else {
            let rows = shown.iter().map(|&i| {
                let v = &store.versions[i];
                let live = live_now == Some(v.version);
                let row = Row::new(vec![
                    format!("{}v{}", if live { "* " } else { "  " }, v.version),
                    v.status.clone(),
                    fmt_count(v.rows),
                    v.model_version.clone(),
                    if v.created == 0 {
                        "-".to_string()
                    } else {
                        fmt_unix(v.created)
                    },
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
            self.record_table(List::Versions, main, state.offset());
        }
        // Only what the store would accept is offered.
        let flip = match (self.flip_refusal(), self.selected_version(), live_now) {
            (None, Some(row), Some(l)) if row.version < l => Some("roll back"),
            (None, _, _) => Some("flip"),
            (Some(_), _, _) => None,
        };
        let mut keys = vec![("↑↓", "select"), ("Enter", "open")];
        if let Some(verb) = flip {
            keys.push(("f", verb));
        }
        keys.extend([
            ("/", "filter"),
            ("r", "refresh"),
            ("Esc", "back"),
            ("?", "help"),
        ]);
        frame.render_widget(self.status_line(theme, &keys), footer);
    }

    /// One version in a window over the store page.
    pub(super) fn draw_version_detail(
        &self,
        frame: &mut Frame,
        area: Rect,
        theme: &Theme,
        version: u64,
    ) {
        let Some(row) = self.run.version_row(version) else {
            return;
        };
        let mut lines = version_lines(row, self.run.live(), theme);
        lines.push(Line::from(""));
        lines.extend(self.lookup_lines(version, theme));
        let popup = centered(area, area.width.saturating_sub(4), area.height - 2);
        let keys = match self.flip_refusal_for(version) {
            None => " i look up · f flip · Esc closes ",
            Some(_) => " i look up · Esc closes ",
        };
        self.draw_window(frame, popup, theme, format!(" v{version} "), keys, lines);
    }

    /// The lookup line (the id being typed) and the last answer.
    fn lookup_lines(&self, version: u64, theme: &Theme) -> Vec<Line<'static>> {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let lookup = &self.lookup;
        let cursor = if lookup.editing { "▏" } else { "" };
        let hint = if lookup.editing {
            "  (Enter looks up, Esc stops typing)"
        } else {
            "  (i types an id)"
        };
        let mut lines = vec![Line::from(vec![
            Span::styled("look up id: ", bold),
            Span::raw(format!("{}{cursor}", lookup.input)),
            Span::styled(hint, theme.fg(Color::DarkGray)),
        ])];
        match &lookup.answer {
            _ if lookup.pending => lines.push(Line::from(format!(
                "looking up '{}' in v{version}...",
                lookup.input
            ))),
            None => {}
            Some(Lookup {
                id,
                answer: Ok(None),
                ..
            }) => lines.push(Line::styled(
                format!("NOT FOUND: v{version} has no prediction for id '{id}'"),
                theme.fg(Color::Red).add_modifier(Modifier::BOLD),
            )),
            Some(Lookup {
                id,
                answer: Err(why),
                ..
            }) => lines.push(Line::styled(
                format!("lookup of '{id}' failed: {why}"),
                theme.fg(Color::Red).add_modifier(Modifier::BOLD),
            )),
            Some(Lookup {
                answer: Ok(Some(p)),
                ..
            }) => {
                lines.push(Line::styled(
                    format!(
                        "FOUND: id {} in v{}  model {}  timestamp {}  ttl {}s{}",
                        p.id,
                        p.version,
                        p.model_version,
                        fmt_unix(p.timestamp),
                        p.ttl,
                        if p.stale { "  STALE" } else { "" }
                    ),
                    theme.fg(Color::Green).add_modifier(Modifier::BOLD),
                ));
                match &p.value {
                    Value::Scores(s) => lines.push(Line::from(format!(
                        "scores: {}",
                        s.iter()
                            .map(|x| format!("{x:.5}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                    Value::TopK(pairs) => {
                        for (rank, (item, score)) in pairs.iter().enumerate() {
                            lines.push(Line::from(format!(
                                "{:>4}. item {item:<10} {score:.5}",
                                rank + 1
                            )));
                        }
                    }
                }
            }
        }
        lines
    }
}

/// What the store says of one version: status, job, counts, created,
/// then the validation report, check by check.
fn version_lines(row: &VersionRow, live: Option<u64>, theme: &Theme) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let status = if live == Some(row.version) && row.status != "live" {
        format!("{} (live)", row.status)
    } else {
        row.status.clone()
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("v{}  ", row.version), bold),
            Span::raw(format!("status {status}  job {}", or_dash(&row.job))),
        ]),
        Line::from(format!(
            "model {} ({})",
            or_dash(&row.model_version),
            or_dash(&row.model_kind)
        )),
        Line::from(format!(
            "rows {} committed of {} expected",
            fmt_count(row.rows),
            if row.rows_expected == 0 {
                "?".to_string()
            } else {
                fmt_count(row.rows_expected)
            }
        )),
        Line::from(format!(
            "created {} UTC{}",
            if row.created == 0 {
                "-".to_string()
            } else {
                fmt_unix(row.created)
            },
            row.duration_s
                .filter(|d| d.is_finite() && *d >= 0.0)
                .map_or(String::new(), |d| format!(
                    "  took {}",
                    fmt_duration(Duration::from_secs_f64(d))
                ))
        )),
        Line::from(format!(
            "hosts {}",
            if row.hosts.is_empty() {
                "-".to_string()
            } else {
                row.hosts.join(", ")
            }
        )),
        Line::from(""),
    ];
    match &row.validation {
        None => lines.push(Line::from("validation: none yet (the gate has not run)")),
        Some(v) => {
            let failed = v.checks.iter().filter(|c| !c.passed).count();
            lines.push(Line::styled(
                if v.passed {
                    format!("validation: passed ({} checks)", v.checks.len())
                } else {
                    format!("validation: FAILED ({failed} of {} checks)", v.checks.len())
                },
                bold.patch(theme.fg(if v.passed { Color::Green } else { Color::Red })),
            ));
            for c in &v.checks {
                let mut text = format!(
                    "  {} {}: {}",
                    if c.passed { "ok  " } else { "FAIL" },
                    c.name,
                    c.detail
                );
                if !c.examples.is_empty() {
                    text.push_str(&format!(" (e.g. {})", c.examples.join(", ")));
                }
                lines.push(Line::styled(
                    text,
                    theme.fg(if c.passed { Color::Green } else { Color::Red }),
                ));
            }
        }
    }
    lines
}
