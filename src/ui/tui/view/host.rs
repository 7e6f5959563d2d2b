//! The host detail window: one host's device and state, its figures,
//! each slot's lane now, its failed attempts, and its log lines (its
//! workers' stderr), newest first.

use super::*;
use crate::ui::state::{HostRow, LogLine};

impl App {
    pub(super) fn draw_host_detail(&self, frame: &mut Frame, area: Rect, theme: &Theme, at: usize) {
        let Some(h) = self.run.hosts.get(at) else {
            return;
        };
        let mut lines = self.host_lines(h, theme);
        let log = self.host_log(h);
        if !log.is_empty() {
            lines.push(Line::from(""));
            lines.push(Line::styled(
                "log (newest first)",
                Style::new().add_modifier(Modifier::BOLD),
            ));
            lines.extend(log.iter().rev().map(|l| {
                Line::from(format!(
                    "{:>6} {}: {}",
                    fmt_duration(l.at),
                    l.source,
                    l.text
                ))
            }));
        }
        let width = area.width.saturating_sub(4);
        let inner_w = usize::from(width.saturating_sub(2).max(1));
        let rows: usize = lines
            .iter()
            .map(|l| l.width().max(1).div_ceil(inner_w))
            .sum();
        let height = (rows as u16 + 2).min(area.height.saturating_sub(2));
        self.draw_window(
            frame,
            centered(area, width, height),
            theme,
            format!(" host {} ", h.name),
            " Esc closes · ? help ",
            lines,
        );
    }

    /// The host's device, figures, lanes and failed attempts.
    fn host_lines(&self, h: &HostRow, theme: &Theme) -> Vec<Line<'static>> {
        let run = &self.run;
        let v = h.view.as_ref();
        let mut lines = vec![
            Line::from(format!(
                "device: {}   state: {}",
                h.device(),
                h.state_text()
            )),
            Line::from(format!(
                "slots {}/{} busy   rows/s {}   chunks {}   rows {}   failures {}   cost {}",
                v.map_or(0, |v| v.busy),
                h.slots.max(v.map_or(0, |v| v.slots)),
                v.map_or("-".to_string(), |v| fmt_rate(v.rows_per_s)),
                v.map_or(0, |v| v.chunks_done),
                fmt_count(v.map_or(0, |v| v.rows_done)),
                v.map_or(0, |v| v.failures),
                if h.cost_per_hour > 0.0 {
                    format!("{}/h", fmt_cost(h.cost_per_hour))
                } else {
                    "-".to_string()
                },
            )),
            Line::from(""),
        ];
        for lane in run.lanes().iter().filter(|l| l.host == h.host) {
            let now = lane
                .attempts
                .iter()
                .rev()
                .find(|a| a.state == AttemptState::Running)
                .map_or("idle".to_string(), |a| {
                    format!(
                        "chunk {} ({}/{} rows)",
                        a.chunk,
                        fmt_count(a.rows_done),
                        fmt_count(a.rows.end.saturating_sub(a.rows.start))
                    )
                });
            let done = lane
                .attempts
                .iter()
                .filter(|a| a.state == AttemptState::Done)
                .count();
            lines.push(Line::from(format!(
                "{}: {now}; {done} attempts done",
                lane.label
            )));
        }
        let failed: Vec<&AttemptView> = run
            .snapshot
            .attempts
            .iter()
            .filter(|a| a.host == h.host && a.state == AttemptState::Failed)
            .collect();
        if !failed.is_empty() {
            lines.push(Line::from(""));
            for a in failed {
                lines.push(Line::styled(
                    format!(
                        "failed: attempt {} of chunk {} at {}",
                        a.attempt,
                        a.chunk,
                        fmt_duration(a.end.unwrap_or(a.start))
                    ),
                    theme.fg(Color::Red),
                ));
            }
        }
        lines
    }

    /// The log lines of the host: its workers' (`name#n`) and the UI's own
    /// lines about it.
    fn host_log(&self, h: &HostRow) -> Vec<&LogLine> {
        let own = |l: &LogLine| {
            l.source
                .strip_prefix(h.name.as_str())
                .is_some_and(|r| r.starts_with('#'))
                || (l.source == "host" && l.text.starts_with(&format!("{}:", h.name)))
        };
        self.run.log.iter().filter(|l| own(l)).collect()
    }
}
