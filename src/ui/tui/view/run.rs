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
        // Wrapped rows of the result; on a small screen it may take all
        // but the header, hosts and a 4-row timeline, so every check shows.
        let inner_w = usize::from(area.width.saturating_sub(2).max(1));
        let result_rows: usize = result_lines
            .iter()
            .map(|l| l.width().max(1).div_ceil(inner_w))
            .sum();
        // The log keeps at least `log_min` rows (none once a small screen
        // shows the verdict, unless the log has the focus); the timeline
        // takes what its lanes need of the rest, and the log everything
        // left over.
        let log_min: u16 = match (tall, run.finished(), self.focus == Focus::Log) {
            (true, _, _) => 10,
            (false, false, _) | (false, true, true) => 5,
            (false, true, false) => 0,
        };
        let focused_log = if run.finished() { log_min } else { 0 };
        let small_cap = area
            .height
            .saturating_sub(3 + host_rows + 3 + 4 + 1 + focused_log);
        let result_h = if result_lines.is_empty() {
            0
        } else {
            (result_rows as u16 + 2).min(if tall { 16 } else { small_cap.max(3) })
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
            draw_result(frame, result, theme, run, result_lines);
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
                    .block(theme.block(" stragglers · x peers: rows/s ÷ median slot's ", false)),
                side,
            );
        } else {
            self.draw_timeline(frame, timeline, theme, &straggler_lines);
            self.draw_log(frame, bottom, theme);
        }
        frame.render_widget(self.status_line(theme, &run_keys(run)), footer);
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let run = &self.run;
        let [top, gauge, figures] = Layout::vertical([Constraint::Length(1); 3]).areas(area);
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let (job, version, live) = match &run.header {
            Some(h) => (
                h.job.clone(),
                if run.finished() {
                    format!("v{}", h.version)
                } else {
                    format!(
                        "{} v{}",
                        if h.resumed { "resuming" } else { "building" },
                        h.version
                    )
                },
                version_word(run.live()),
            ),
            None => ("no run".to_string(), String::new(), "-".to_string()),
        };
        let model = run
            .header
            .as_ref()
            .map_or(String::new(), |h| format!("  model {}", h.model));
        let phase = if run.finished() {
            Span::styled("DONE ", bold)
        } else if run.snapshot.paused {
            Span::styled("PAUSED ", bold.patch(theme.fg(Color::Yellow)))
        } else if run.started() {
            Span::styled("RUNNING ", bold.patch(theme.fg(Color::Green)))
        } else {
            Span::raw("")
        };
        // Most wanted first: what is left of the line drops off the right
        // end of a narrow terminal.
        let line = Line::from(vec![
            phase,
            Span::styled(job, bold),
            Span::raw("  "),
            Span::raw(version),
            Span::raw(if run.finished() {
                String::new()
            } else if run.snapshot.paused {
                "  ETA paused".to_string()
            } else {
                format!("  ETA {}", run.eta().map_or("-".to_string(), fmt_duration))
            }),
            Span::raw(format!("  elapsed {}", fmt_duration(run.elapsed()))),
            Span::raw(format!("  live {live}")),
            Span::raw(model),
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
        let shown = self.visible_hosts();
        let rows = shown.iter().map(|&i| {
            let h = &self.run.hosts[i];
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
        let focused = self.focus == Focus::Hosts;
        let title = format!(" hosts {}", self.filter_title(List::Hosts));
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ")
            .block(theme.block(title, focused));
        // The selection shows while the pane has the focus; the rows stay
        // scrolled to it either way.
        let body_h = usize::from(area.height.saturating_sub(3)).max(1);
        let mut state = TableState::new()
            .with_offset(self.host_selected.saturating_sub(body_h - 1))
            .with_selected(focused.then_some(self.host_selected));
        frame.render_stateful_widget(table, area, &mut state);
        self.record_table(List::Hosts, area, state.offset());
    }

    /// The lanes (scrolled when more slots ran than fit, the range shown in
    /// the title), the time axis, and `below` them what a narrow screen
    /// has no side panel for.
    fn draw_timeline(&self, frame: &mut Frame, area: Rect, theme: &Theme, below: &[Line<'static>]) {
        let run = &self.run;
        let span = timeline_span(run);
        let lanes = self.visible_lanes();
        let inner = Block::new().borders(Borders::ALL).inner(area);
        let below_h = if below.is_empty() {
            0
        } else {
            (below.len() as u16).min(inner.height / 2).max(1)
        };
        let lanes_h = inner.height.saturating_sub(below_h);
        // Lanes that do not fit scroll; the axis needs a row of its own.
        let rows = usize::from(lanes_h);
        let (shown, top) = if lanes.len() > rows {
            (rows, self.lane_scroll.min(lanes.len() - rows))
        } else {
            (lanes.len(), 0)
        };
        let mut title = format!(
            " timeline 0s..{} {}",
            fmt_duration(span),
            self.filter_title(List::Lanes)
        );
        if shown < lanes.len() {
            title.push_str(&format!(
                "· lanes {}-{} of {} (PgUp/PgDn) ",
                top + 1,
                top + shown,
                lanes.len()
            ));
        }
        frame.render_widget(theme.block(title, self.focus == Focus::Timeline), area);
        if inner.height == 0 || inner.width < 4 {
            return;
        }
        {
            let mut hits = self.hits.borrow_mut();
            hits.lane_rows = shown.max(1);
            hits.lists.push(Hit {
                list: List::Lanes,
                area: Rect {
                    height: shown as u16,
                    ..inner
                },
                offset: top,
            });
        }
        let label_w = lanes
            .iter()
            .map(|l| l.label.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(4, 14) as u16;
        let bar_w = inner.width.saturating_sub(label_w + 1) as usize;
        let mut lines: Vec<Line> = Vec::new();
        if lanes.is_empty() {
            lines.push(Line::from(if run.lanes().is_empty() {
                "no attempts yet"
            } else {
                "no lane matches the filter (Esc clears it)"
            }));
        }
        for lane in lanes.iter().skip(top).take(shown) {
            let mut spans = vec![Span::raw(format!(
                "{:<w$} ",
                truncate(&lane.label, label_w as usize),
                w = label_w as usize
            ))];
            spans.extend(self.lane_bar(&lane.attempts, span, bar_w, theme));
            lines.push(Line::from(spans));
        }
        if !lanes.is_empty() && lines.len() < rows {
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
        let peers = |attempt: u64| {
            run.rate_vs_peers(attempt)
                .map_or("-".to_string(), |r| format!("{r:.1}x"))
        };
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
                    "{mark}! chunk {} on {slot}: ~{} left ({} peers)",
                    s.chunk,
                    fmt_duration(s.eta),
                    peers(s.attempt)
                ),
                theme.slowness(slowness),
            ));
        }
        let selected_other = self
            .chunk_selected
            .filter(|chunk| !stragglers.iter().any(|s| s.chunk == *chunk))
            .and_then(|chunk| run.selectable().into_iter().find(|a| a.chunk == chunk));
        if stragglers.is_empty() {
            lines.push(Line::from(if selected_other.is_some() {
                "no stragglers; selected:"
            } else {
                "no stragglers"
            }));
        }
        if let Some(a) = selected_other {
            lines.push(Line::from(format!(
                "> chunk {} on {}: {}/{} rows ({} peers)",
                a.chunk,
                where_(a),
                fmt_count(a.rows_done),
                fmt_count(a.rows.end.saturating_sub(a.rows.start)),
                peers(a.attempt)
            )));
        }
        if run.snapshot.paused {
            lines.insert(0, Line::from("PAUSED: no new attempts start"));
        }
        lines
    }

    fn draw_log(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let mut title = if self.log_scroll > 0 {
            format!(" log (back {} lines) ", self.log_scroll)
        } else {
            " log ".to_string()
        };
        title.push_str(&self.filter_title(List::Log));
        if self.run.log_dropped > 0 {
            title.push_str(&format!(
                "· last {} kept, {} older dropped ",
                fmt_count(crate::ui::state::LOG_LINES as u64),
                fmt_count(self.run.log_dropped)
            ));
        }
        let block = theme.block(title, self.focus == Focus::Log);
        let inner = block.inner(area);
        let (inner_h, inner_w) = (inner.height as usize, inner.width.max(1) as usize);
        let log = self.visible_log();
        let end = log.len().saturating_sub(self.log_scroll);
        // Long lines wrap: take lines from the newest back until the pane
        // is full, then scroll off what the oldest of them overflows.
        let mut rows = 0usize;
        let mut lines: Vec<Line> = Vec::new();
        for l in log[..end].iter().rev() {
            if rows >= inner_h {
                break;
            }
            let line = Line::from(vec![
                Span::styled(
                    format!("{:>6} {}: ", fmt_duration(l.at), l.source),
                    theme.fg(Color::DarkGray),
                ),
                Span::raw(l.text.clone()),
            ]);
            rows += line.width().max(1).div_ceil(inner_w);
            lines.push(line);
        }
        lines.reverse();
        let overflow = rows.saturating_sub(inner_h) as u16;
        self.hits.borrow_mut().lists.push(Hit {
            list: List::Log,
            area: inner,
            offset: 0,
        });
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .scroll((overflow, 0))
                .block(block),
            area,
        );
    }
}

/// The run page's keys for the status line.
fn run_keys(run: &RunState) -> Vec<(&'static str, &'static str)> {
    if run.running() {
        vec![
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
            ("/", "filter"),
            ("v", "store"),
        ]
    } else {
        vec![
            ("?", "help"),
            ("q", "quit"),
            ("Tab", "focus"),
            ("/", "filter"),
            ("v", "store"),
            ("Esc", "jobs"),
        ]
    }
}

/// The result box: the verdict and the checks, framed in its colour.
fn draw_result(
    frame: &mut Frame,
    area: Rect,
    theme: &Theme,
    run: &RunState,
    lines: Vec<Line<'static>>,
) {
    let (title, style) = match run.outcome() {
        Some(Outcome::Flipped { .. }) => (" result: flipped ", theme.fg(Color::Green)),
        Some(Outcome::NotFlipped { .. }) => (" result: not flipped ", theme.fg(Color::Red)),
        None => (" validation ", theme.fg(Color::Yellow)),
    };
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::new()
                .borders(Borders::ALL)
                .border_style(style)
                .title(title),
        ),
        area,
    );
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

/// Tick marks under the lanes: `|0s    |15s   |30s`, at round times (a
/// step from [`AXIS_STEPS_S`]) at least 10 cells apart, so no two labels
/// read the same at any run length.
pub fn time_axis(span: Duration, width: usize) -> String {
    let mut axis = vec![' '; width];
    let span_s = span.as_secs_f64().max(1e-3);
    let per_cell = span_s / width.max(1) as f64;
    let step = AXIS_STEPS_S
        .iter()
        .copied()
        .find(|s| s / per_cell >= 10.0)
        .unwrap_or(span_s);
    let mut k = 0u32;
    loop {
        let at = step * f64::from(k);
        let col = (at / per_cell).round() as usize;
        let label = format!("|{}", fmt_duration(Duration::from_secs_f64(at)));
        if col + label.chars().count() > width {
            break;
        }
        for (i, ch) in label.chars().enumerate() {
            axis[col + i] = ch;
        }
        k += 1;
    }
    axis.into_iter().collect()
}

/// Tick steps of the time axis, in seconds.
const AXIS_STEPS_S: [f64; 20] = [
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
    3600.0, 7200.0, 14_400.0, 43_200.0, 86_400.0,
];

/// The validation checks and the verdict, once there are any.
fn result_lines(run: &RunState, theme: &Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    match run.outcome() {
        Some(Outcome::Flipped { version, previous }) if run.live() == Some(version) => {
            lines.push(Line::styled(
                format!(
                    "FLIPPED: v{version} is live{}",
                    previous.map_or(String::new(), |p| format!(
                        " (was v{p}; `herd store flip --to {p}` rolls back)"
                    ))
                ),
                theme.fg(Color::Green).add_modifier(Modifier::BOLD),
            ))
        }
        // Flipped, then the live version moved on (a rollback since).
        Some(Outcome::Flipped { version, .. }) => lines.push(Line::styled(
            format!(
                "FLIPPED: v{version} went live; {} is live now",
                version_word(run.live())
            ),
            theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )),
        Some(Outcome::NotFlipped { version, why }) => lines.push(Line::styled(
            format!(
                "NOT FLIPPED: v{version} is not live ({} is): {why}",
                version_word(run.live())
            ),
            theme.fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None if run.validation.is_some() => {
            lines.push(Line::from("validated; waiting for the flip"))
        }
        None => {}
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
    // The summary last: the checks matter more on a small screen.
    if let Some(r) = &run.report {
        lines.push(Line::from(run_summary(r)));
    }
    lines
}
