//! The run page: header, hosts table, timeline lanes, stragglers, log and
//! the verdict at the end.

use super::*;

impl App {
    pub(super) fn draw_run(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let run = &self.run;
        let tall = area.height >= TALL;
        let wide = area.width >= WIDE;
        let host_rows = run.hosts.len().clamp(1, if tall { 10 } else { 3 }) as u16;
        let result_lines = result_lines(run, theme);
        let result_h = if result_lines.is_empty() {
            0
        } else {
            (result_lines.len() as u16 + 2).min(if tall { 16 } else { 9 })
        };
        // The log keeps at least `log_min` rows (none once a small screen
        // shows the verdict); the timeline takes what its lanes need of the
        // rest, and the log everything left over.
        let log_min: u16 = match (tall, run.finished()) {
            (true, _) => 10,
            (false, false) => 5,
            (false, true) => 0,
        };
        let straggler_lines = self.straggler_lines(theme);
        let lanes = run.lanes().len() as u16;
        let wanted = lanes.max(1)
            + u16::from(lanes > 0)
            + if wide {
                0
            } else {
                straggler_lines.len() as u16
            }
            + 2;
        let room = area
            .height
            .saturating_sub(3 + host_rows + 3 + result_h + 1 + log_min);
        let timeline_h = wanted.min(room).max(4);
        let [header, hosts, result, timeline, bottom, footer] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(host_rows + 3),
            Constraint::Length(result_h),
            Constraint::Length(timeline_h),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);

        self.draw_header(frame, header, theme);
        self.draw_hosts(frame, hosts, theme, wide);
        if result_h > 0 {
            let (title, style) = match run.outcome() {
                Some(Outcome::Flipped { .. }) => (" result: flipped ", theme.fg(Color::Green)),
                Some(Outcome::NotFlipped { .. }) => (" result: not flipped ", theme.fg(Color::Red)),
                None => (" validation ", theme.fg(Color::Yellow)),
            };
            frame.render_widget(
                Paragraph::new(result_lines)
                    .wrap(Wrap { trim: false })
                    .block(
                        Block::new()
                            .borders(Borders::ALL)
                            .border_style(style)
                            .title(title),
                    ),
                result,
            );
        }
        if wide {
            self.draw_timeline(frame, timeline, theme, &[]);
            let [log, side] =
                Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                    .areas(bottom);
            self.draw_log(frame, log, theme);
            let mut side_lines = straggler_lines;
            side_lines.push(Line::from(""));
            side_lines.push(Line::styled(
                glyph_legend()
                    .iter()
                    .map(|(glyph, short, _)| {
                        format!("{}\u{a0}{short}", glyph.replace(' ', "\u{a0}"))
                    })
                    .collect::<Vec<_>>()
                    .join("  "),
                theme.fg(Color::DarkGray),
            ));
            frame.render_widget(
                Paragraph::new(side_lines)
                    .wrap(Wrap { trim: true })
                    .block(theme.block(" stragglers ", false)),
                side,
            );
        } else {
            self.draw_timeline(frame, timeline, theme, &straggler_lines);
            self.draw_log(frame, bottom, theme);
        }
        let keys: &[(&str, &str)] = if run.running() {
            &[
                ("?", "help"),
                ("q", "quit"),
                (
                    "p",
                    if run.snapshot.paused {
                        "resume"
                    } else {
                        "pause"
                    },
                ),
                ("c", "cancel"),
                ("s", "backup"),
                ("←→", "select"),
                ("Tab", "focus"),
                ("v", "store"),
            ]
        } else {
            &[
                ("?", "help"),
                ("q", "quit"),
                ("v", "store"),
                ("Esc", "jobs"),
            ]
        };
        frame.render_widget(footer_line(theme, keys), footer);
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let run = &self.run;
        let [top, gauge, figures] = Layout::vertical([Constraint::Length(1); 3]).areas(area);
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let (job, version, live) = match &run.header {
            Some(h) => (
                format!("{} ({})", h.job, h.model),
                format!(
                    "{} v{}",
                    if h.resumed { "resuming" } else { "building" },
                    h.version
                ),
                h.live_version
                    .map_or("none".to_string(), |v| format!("v{v}")),
            ),
            None => ("no run".to_string(), String::new(), "-".to_string()),
        };
        let phase = if run.finished() {
            Span::styled(" DONE ", bold)
        } else if run.snapshot.paused {
            Span::styled(" PAUSED ", bold.patch(theme.fg(Color::Yellow)))
        } else if run.started() {
            Span::styled(" RUNNING ", bold.patch(theme.fg(Color::Green)))
        } else {
            Span::raw(" ")
        };
        let line = Line::from(vec![
            Span::styled("herd ", bold),
            Span::styled(job, bold),
            Span::raw("  "),
            Span::raw(version),
            Span::raw(format!("  live {live}")),
            Span::raw(format!("  elapsed {}", fmt_duration(run.elapsed()))),
            Span::raw(if run.finished() {
                String::new()
            } else {
                format!("  ETA {}", run.eta().map_or("-".to_string(), fmt_duration))
            }),
            phase,
        ]);
        frame.render_widget(Paragraph::new(line), top);
        let label = format!(
            "{} / {} rows  {:.1}%",
            fmt_count(run.rows_done()),
            fmt_count(run.rows_total()),
            run.fraction() * 100.0
        );
        frame.render_widget(
            Gauge::default()
                .ratio(run.fraction())
                .label(Span::styled(label, bold))
                .use_unicode(true)
                .gauge_style(theme.fg(Color::Green)),
            gauge,
        );
        let snap = &run.snapshot;
        let mut spans = vec![
            Span::raw(format!(
                "{} rows/s",
                run.rows_per_s().map_or("-".to_string(), fmt_rate)
            )),
            Span::raw(format!("  cost {}", fmt_cost(run.cost_so_far()))),
        ];
        if let Some(p) = run.cost_projected().filter(|_| run.running()) {
            spans.push(Span::raw(format!(" → {} projected", fmt_cost(p))));
        }
        spans.push(Span::raw(format!(
            "  chunks {}/{}  backups {}  splits {}",
            fmt_count(snap.chunks_done),
            fmt_count(
                snap.chunks_total
                    .max(run.header.as_ref().map_or(0, |h| h.chunks_total))
            ),
            snap.backups,
            snap.splits
        )));
        frame.render_widget(Paragraph::new(Line::from(spans)), figures);
    }

    fn draw_hosts(&self, frame: &mut Frame, area: Rect, theme: &Theme, wide: bool) {
        let rows = self.run.hosts.iter().skip(self.hosts_scroll).map(|h| {
            let v = h.view.as_ref();
            let style = match h.state {
                HostState::Lost(_) => theme.fg(Color::Red),
                HostState::Running => Style::new(),
                HostState::Done => theme.fg(Color::DarkGray),
                _ => theme.fg(Color::Yellow),
            };
            let mut cells = vec![
                h.name.clone(),
                h.device(),
                format!(
                    "{}/{}",
                    v.map_or(0, |v| v.busy),
                    h.slots.max(v.map_or(0, |v| v.slots))
                ),
                v.map_or("-".to_string(), |v| fmt_rate(v.rows_per_s)),
                v.map_or("0".to_string(), |v| fmt_count(v.chunks_done)),
                v.map_or("0".to_string(), |v| v.failures.to_string()),
            ];
            if wide {
                cells.push(v.map_or("0".to_string(), |v| fmt_count(v.rows_done)));
                cells.push(if h.cost_per_hour > 0.0 {
                    format!("{}/h", fmt_cost(h.cost_per_hour))
                } else {
                    "-".to_string()
                });
            }
            cells.push(h.state_text());
            Row::new(cells).style(style)
        });
        let mut widths = vec![
            Constraint::Length(10),
            Constraint::Fill(1),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(4),
        ];
        let mut header = vec!["host", "device", "slots", "rows/s", "chunks", "fail"];
        if wide {
            widths.extend([Constraint::Length(11), Constraint::Length(9)]);
            header.extend(["rows", "cost"]);
        }
        widths.push(Constraint::Fill(1));
        header.push("state");
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
            .block(theme.block(" hosts ", self.focus == Focus::Hosts));
        frame.render_widget(table, area);
    }

    fn draw_timeline(&self, frame: &mut Frame, area: Rect, theme: &Theme, below: &[Line<'static>]) {
        let run = &self.run;
        let span = timeline_span(run);
        let title = format!(" timeline 0s..{} ", fmt_duration(span));
        let block = theme.block(title, self.focus == Focus::Timeline);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.height == 0 || inner.width < 4 {
            return;
        }
        let lanes = run.lanes();
        let below_h = if below.is_empty() {
            0
        } else {
            (below.len() as u16).min(inner.height / 2).max(1)
        };
        let lanes_h = inner.height - below_h;
        let label_w = lanes
            .iter()
            .map(|l| l.label.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(4, 14) as u16;
        let bar_w = inner.width.saturating_sub(label_w + 1) as usize;
        let mut lines: Vec<Line> = Vec::new();
        if lanes.is_empty() {
            lines.push(Line::from("no attempts yet"));
        }
        let shown = if lanes.len() > lanes_h as usize {
            lanes_h.saturating_sub(1) as usize
        } else {
            lanes.len()
        };
        for lane in lanes.iter().take(shown) {
            let mut spans = vec![Span::raw(format!(
                "{:<w$} ",
                truncate(&lane.label, label_w as usize),
                w = label_w as usize
            ))];
            spans.extend(self.lane_bar(&lane.attempts, span, bar_w, theme));
            lines.push(Line::from(spans));
        }
        if shown < lanes.len() {
            lines.push(Line::from(format!("+{} more slots", lanes.len() - shown)));
        } else if !lanes.is_empty() && lines.len() < lanes_h as usize {
            lines.push(Line::styled(
                format!("{:w$} {}", "", time_axis(span, bar_w), w = label_w as usize),
                theme.fg(Color::DarkGray),
            ));
        }
        frame.render_widget(
            Paragraph::new(lines),
            Rect {
                height: lanes_h,
                ..inner
            },
        );
        if below_h > 0 {
            frame.render_widget(
                Paragraph::new(below.to_vec()),
                Rect {
                    y: inner.y + lanes_h,
                    height: below_h,
                    ..inner
                },
            );
        }
    }

    /// One lane's cells: each attempt a run of glyphs over its time span.
    fn lane_bar(
        &self,
        attempts: &[&AttemptView],
        span: Duration,
        width: usize,
        theme: &Theme,
    ) -> Vec<Span<'static>> {
        let mut cells: Vec<(char, Style)> = vec![(' ', Style::new()); width];
        if width == 0 {
            return Vec::new();
        }
        let col = |t: Duration| -> usize {
            let f = t.as_secs_f64() / span.as_secs_f64().max(1e-9);
            ((f * width as f64).floor() as usize).min(width)
        };
        let now = self.run.snapshot.now;
        let mut finished = 0usize;
        for a in attempts {
            let end = a.end.unwrap_or(now).max(a.start);
            let c0 = col(a.start).min(width - 1);
            let c1 = col(end).clamp(c0 + 1, width);
            let straggler = a.state == AttemptState::Running && self.run.is_straggler(a.attempt);
            let glyph = match a.state {
                AttemptState::Failed => 'x',
                AttemptState::Cancelled => '-',
                _ if a.backup => '≡',
                _ if a.split => '/',
                AttemptState::Running => '▒',
                AttemptState::Done => {
                    finished += 1;
                    if finished % 2 == 1 { '█' } else { '▓' }
                }
            };
            let mut style = match a.state {
                AttemptState::Failed => theme.fg(Color::Red),
                AttemptState::Cancelled => theme.fg(Color::DarkGray),
                _ => theme.slowness(a.slowness),
            };
            if Some(a.chunk) == self.chunk_selected && a.state == AttemptState::Running {
                style = style.add_modifier(Modifier::REVERSED);
            }
            for cell in &mut cells[c0..c1] {
                *cell = (glyph, style);
            }
            if straggler {
                cells[c1 - 1] = ('!', style.add_modifier(Modifier::BOLD));
            }
        }
        // Merge runs of equal style into spans.
        let mut spans = Vec::new();
        let mut text = String::new();
        let mut current = cells[0].1;
        for (ch, style) in cells {
            if style != current {
                spans.push(Span::styled(std::mem::take(&mut text), current));
                current = style;
            }
            text.push(ch);
        }
        spans.push(Span::styled(text, current));
        spans
    }

    /// Current stragglers with their time left, the selection marked.
    fn straggler_lines(&self, theme: &Theme) -> Vec<Line<'static>> {
        let run = &self.run;
        if !run.running() {
            return Vec::new();
        }
        let labels = run.slot_labels();
        let where_ = |a: &AttemptView| {
            labels
                .get(&a.slot)
                .map_or("?".to_string(), |(_, l)| l.clone())
        };
        let mut lines = Vec::new();
        let stragglers = run.stragglers();
        if stragglers.is_empty() {
            lines.push(Line::from("no stragglers"));
        }
        for s in stragglers {
            let mark = if Some(s.chunk) == self.chunk_selected {
                "> "
            } else {
                "  "
            };
            let (slot, slowness) = run
                .attempt(s.attempt)
                .map_or(("?".to_string(), f64::NAN), |a| (where_(a), a.slowness));
            lines.push(Line::styled(
                format!(
                    "{mark}! chunk {} on {slot}: ~{} left ({:.1}x peers)",
                    s.chunk,
                    fmt_duration(s.eta),
                    slowness
                ),
                theme.slowness(slowness),
            ));
        }
        let selected_other = self
            .chunk_selected
            .filter(|chunk| !stragglers.iter().any(|s| s.chunk == *chunk))
            .and_then(|chunk| run.selectable().into_iter().find(|a| a.chunk == chunk));
        if let Some(a) = selected_other {
            lines.push(Line::from(format!(
                "> chunk {} on {}: {}/{} rows ({:.1}x peers)",
                a.chunk,
                where_(a),
                fmt_count(a.rows_done),
                fmt_count(a.rows.end.saturating_sub(a.rows.start)),
                a.slowness
            )));
        }
        lines
    }

    fn draw_log(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let title = if self.log_scroll > 0 {
            format!(" log (back {} lines) ", self.log_scroll)
        } else {
            " log ".to_string()
        };
        let block = theme.block(title, self.focus == Focus::Log);
        let inner_h = block.inner(area).height as usize;
        let log = &self.run.log;
        let end = log.len().saturating_sub(self.log_scroll);
        let start = end.saturating_sub(inner_h);
        let lines: Vec<Line> = log
            .range(start..end)
            .map(|l| {
                Line::from(vec![
                    Span::styled(
                        format!("{:>6} {}: ", fmt_duration(l.at), l.source),
                        theme.fg(Color::DarkGray),
                    ),
                    Span::raw(l.text.clone()),
                ])
            })
            .collect();
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }
}

/// The whole run's span on the timeline: up to now, or the last end.
fn timeline_span(run: &RunState) -> Duration {
    let last_end = run
        .snapshot
        .attempts
        .iter()
        .filter_map(|a| a.end)
        .max()
        .unwrap_or_default();
    run.snapshot.now.max(last_end).max(Duration::from_millis(1))
}

/// Tick marks under the lanes: `|0s    |15s   |30s`, one every 12 or more
/// cells.
fn time_axis(span: Duration, width: usize) -> String {
    let mut axis = vec![' '; width];
    let step = (width / 8).max(12);
    let mut col = 0;
    while col + 4 <= width {
        let at = span.mul_f64(col as f64 / width as f64);
        let label = format!("|{}", fmt_duration(at));
        for (i, ch) in label.chars().enumerate().take(width - col) {
            axis[col + i] = ch;
        }
        col += step;
    }
    axis.into_iter().collect()
}

/// The validation checks and the verdict, once there are any.
fn result_lines(run: &RunState, theme: &Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    match run.outcome() {
        Some(Outcome::Flipped { version, previous }) => lines.push(Line::styled(
            format!(
                "FLIPPED: v{version} is live{}",
                previous.map_or(String::new(), |p| format!(
                    " (was v{p}; `herd store flip --to {p}` rolls back)"
                ))
            ),
            theme.fg(Color::Green).add_modifier(Modifier::BOLD),
        )),
        Some(Outcome::NotFlipped { version, why }) => lines.push(Line::styled(
            format!("NOT FLIPPED: v{version} is not live: {why}"),
            theme.fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None if run.validation.is_some() => {
            lines.push(Line::from("validated; waiting for the flip"))
        }
        None => {}
    }
    if let Some(r) = &run.report {
        lines.push(Line::from(run_summary(r)));
    }
    if let Some(v) = &run.validation {
        // Failed checks first: they are what a small screen must show.
        let failed = v.checks.iter().filter(|c| !c.passed);
        for c in failed.chain(v.checks.iter().filter(|c| c.passed)) {
            let mut text = format!(
                "{} {}: {}",
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
    lines
}
