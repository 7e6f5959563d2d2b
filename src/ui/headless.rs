//! Headless output: the run's figures as lines of text, for `herd --run` and
//! for logs. [`Headless::on_event`] is pure (it returns lines and prints
//! nothing); [`Headless::write`] is the one place that writes them.
//!
//! Off a tty, a progress line is emitted at most every [`PLAIN_INTERVAL`] of
//! run time, plus whenever something changes state (pause, a new backup,
//! split or failure, a lost host). On a tty every snapshot gives a progress
//! bar line that starts with `'\r'`: it is meant to overwrite the previous
//! one, which [`Headless::write`] does.

use std::io::{self, Write};
use std::time::Duration;

use crate::run::{Event, HostState};
use crate::ui::state::{Outcome, RunState};
use crate::ui::{counted, fmt_cost, fmt_count, fmt_duration, fmt_rate, run_summary};

/// Least run time between two plain progress lines.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Width of the tty progress bar, in cells.
pub const BAR_WIDTH: usize = 24;

/// Turns events into lines; keeps its own [`RunState`].
#[derive(Debug)]
pub struct Headless {
    tty: bool,
    state: RunState,
    last_line_at: Option<Duration>,
    last_marks: Marks,
    bar_shown: bool,
}

/// The counts whose change is worth a line of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Marks {
    paused: bool,
    backups: u64,
    splits: u64,
    failures: u64,
    lost: usize,
}

impl Headless {
    pub fn new(tty: bool) -> Headless {
        Headless {
            tty,
            state: RunState::new(),
            last_line_at: None,
            last_marks: Marks::default(),
            bar_shown: false,
        }
    }

    /// The state built from the events seen so far.
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// The lines this event produces (none for most snapshots off a tty).
    pub fn on_event(&mut self, event: &Event) -> Vec<String> {
        self.state.apply(event);
        let s = &self.state;
        match event {
            Event::Started {
                job,
                model,
                version,
                rows_total,
                chunks_total,
                hosts,
                live_version,
                resumed,
            } => {
                self.last_line_at = None;
                self.last_marks = Marks::default();
                let live = live_version.map_or("none".to_string(), |v| format!("v{v}"));
                let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                vec![format!(
                    "started {job} (model {model}): {} v{version}, {} rows in {} chunks on {} host{} ({}); live version: {live}",
                    if *resumed { "resuming" } else { "building" },
                    fmt_count(*rows_total),
                    fmt_count(*chunks_total),
                    hosts.len(),
                    if hosts.len() == 1 { "" } else { "s" },
                    names.join(", "),
                )]
            }
            Event::Host { host, state, .. } => {
                let name = s.host_name(*host);
                let what = match s.hosts.iter().find(|h| h.host == *host) {
                    Some(row) if *state == HostState::Running => {
                        format!("running on {}", row.device())
                    }
                    Some(row) => row.state_text(),
                    None => format!("{state:?}"),
                };
                self.plain(format!("host {name}: {what}"))
            }
            Event::Log { at, source, text } => {
                self.plain(format!("[{}] {source}: {text}", fmt_duration(*at)))
            }
            Event::Progress(snapshot) | Event::Changes(snapshot) => {
                let marks = self.marks();
                let mut lines = Vec::new();
                if marks.paused != self.last_marks.paused {
                    lines.extend(
                        self.plain(
                            if marks.paused {
                                "paused: no new attempts start"
                            } else {
                                "resumed"
                            }
                            .to_string(),
                        ),
                    );
                }
                if self.tty {
                    lines.push(format!("\r{}", self.bar_line()));
                    self.bar_shown = true;
                } else {
                    let due = self
                        .last_line_at
                        .is_none_or(|t| snapshot.now.saturating_sub(t) >= PLAIN_INTERVAL);
                    if due || marks != self.last_marks {
                        lines.push(self.progress_line());
                        self.last_line_at = Some(snapshot.now);
                    }
                }
                self.last_marks = marks;
                lines
            }
            Event::Validated(report) => {
                let mut lines = self.plain(format!(
                    "validation {}",
                    if report.passed { "passed" } else { "FAILED" }
                ));
                for c in &report.checks {
                    let mut line = format!(
                        "  {} {}: {}",
                        if c.passed { "ok  " } else { "FAIL" },
                        c.name,
                        c.detail
                    );
                    if !c.examples.is_empty() {
                        line.push_str(&format!(" (e.g. {})", c.examples.join(", ")));
                    }
                    lines.push(line);
                }
                lines
            }
            Event::Finished(report) => {
                let verdict = match s.outcome() {
                    Some(Outcome::Flipped { version, previous }) => format!(
                        "v{version} is live{}",
                        previous.map_or(String::new(), |p| format!(" (was v{p})"))
                    ),
                    Some(Outcome::NotFlipped { version, why }) => {
                        format!("v{version} NOT flipped: {why}")
                    }
                    None => String::new(),
                };
                let summary = format!(
                    "finished {}: {verdict}; {}",
                    report.job,
                    run_summary(report)
                );
                self.plain(summary)
            }
        }
    }

    /// Writes `lines` as [`Headless::on_event`] returned them: on a tty the
    /// progress bar (a line starting with `'\r'`) overwrites itself and other
    /// lines print above it; off a tty each line is printed whole.
    pub fn write(&self, out: &mut dyn Write, lines: &[String]) -> io::Result<()> {
        for line in lines {
            if let Some(bar) = line.strip_prefix('\r') {
                write!(out, "\r\x1b[2K{bar}")?;
            } else if self.tty {
                writeln!(out, "\r\x1b[2K{line}")?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()
    }

    /// One ordinary line; on a tty it also redraws the bar beneath it.
    fn plain(&mut self, line: String) -> Vec<String> {
        if self.tty && self.bar_shown && self.state.running() {
            vec![line, format!("\r{}", self.bar_line())]
        } else {
            vec![line]
        }
    }

    fn marks(&self) -> Marks {
        let snap = &self.state.snapshot;
        Marks {
            paused: snap.paused,
            backups: snap.backups,
            splits: snap.splits,
            failures: snap.hosts.iter().map(|h| h.failures).sum(),
            lost: snap.hosts.iter().filter(|h| h.lost).count(),
        }
    }

    /// `progress 45,000/100,000 rows (45.0%), 1.2k rows/s, ETA 44s, 2 backups, 1 split, cost $0.013 (projected $0.020)`
    pub fn progress_line(&self) -> String {
        format!("progress {}", self.figures())
    }

    fn bar_line(&self) -> String {
        let filled = (self.state.fraction() * BAR_WIDTH as f64).round() as usize;
        format!(
            "[{}{}] {}",
            "#".repeat(filled.min(BAR_WIDTH)),
            "-".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)),
            self.figures()
        )
    }

    fn figures(&self) -> String {
        let s = &self.state;
        let snap = &s.snapshot;
        let mut out = format!(
            "{}/{} rows ({:.1}%), {} rows/s, ETA {}, {}, {}, cost {}",
            fmt_count(s.rows_done()),
            fmt_count(s.rows_total()),
            s.fraction() * 100.0,
            s.rows_per_s().map_or("-".to_string(), fmt_rate),
            s.eta().map_or("-".to_string(), fmt_duration),
            counted(snap.backups, "backup", "backups"),
            counted(snap.splits, "split", "splits"),
            fmt_cost(s.cost_so_far()),
        );
        if let Some(p) = s.cost_projected() {
            out.push_str(&format!(" (projected {})", fmt_cost(p)));
        }
        if snap.paused {
            out.push_str(", PAUSED");
        }
        out
    }
}
