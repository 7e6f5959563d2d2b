//! What a person sees of a run: the terminal UI ([`tui`]), plain lines for
//! headless runs ([`headless`]) and a Chrome trace of the attempts ([`trace`]).
//!
//! Everything here is a function of the coordinator's [`crate::run::Event`]s,
//! folded by one reducer ([`state::RunState`]), so the TUI and the headless
//! lines show the same numbers. This room must not drive the run: it reads
//! events and hands back [`tui::Action`]s; it reads no job files, hosts or
//! store itself (the caller passes summaries in) and it never reads the clock
//! to compute a figure (elapsed time is the snapshots' `now`). Only the TUI
//! driver touches the terminal.

pub mod headless;
pub mod state;
pub mod trace;
pub mod tui;

pub use headless::Headless;
pub use state::RunState;
pub use trace::trace_json;
pub use tui::{Action, App, JobSummary, StoreSummary, UiInput, VersionRow, run_tui};

use std::time::Duration;

/// A duration as the UI prints it: `4.2s`, `42s`, `3m07s`, `2h05m`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1}s")
    } else if s < 60.0 {
        format!("{}s", s as u64)
    } else if s < 3600.0 {
        let s = s as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = s as u64 / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate of rows per second: `950`, `12.3k`, `1.25M`.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() || r < 0.0 {
        "-".to_string()
    } else if r < 1000.0 {
        format!("{r:.0}")
    } else if r < 1_000_000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{:.2}M", r / 1_000_000.0)
    }
}

/// A cost in dollars: cents from a dollar up, tenths of a cent below.
pub fn fmt_cost(c: f64) -> String {
    if c >= 0.995 || c == 0.0 {
        format!("${c:.2}")
    } else {
        format!("${c:.3}")
    }
}

/// `1 backup`, `2 backups`.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", fmt_count(n), if n == 1 { one } else { many })
}

/// The finished run in one line, as both the TUI and the headless output
/// print it: `100,000 rows, 40 chunks, 43 attempts (1 backup, 1 split,
/// 0 retries) in 1m38s, cost $0.076`.
pub fn run_summary(report: &crate::run::Report) -> String {
    let duration = if report.duration_s.is_finite() {
        Duration::from_secs_f64(report.duration_s.max(0.0))
    } else {
        Duration::ZERO
    };
    format!(
        "{}, {}, {} ({}, {}, {}) in {}, cost {}",
        counted(report.rows, "row", "rows"),
        counted(report.chunks, "chunk", "chunks"),
        counted(report.attempts, "attempt", "attempts"),
        counted(report.backups, "backup", "backups"),
        counted(report.splits, "split", "splits"),
        counted(report.retries, "retry", "retries"),
        fmt_duration(duration),
        fmt_cost(report.cost),
    )
}

/// A unix timestamp as a UTC date and time: `2026-11-28 04:00`.
pub fn fmt_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_every_scale() {
        assert_eq!(fmt_duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(fmt_duration(Duration::from_secs(42)), "42s");
        assert_eq!(fmt_duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(fmt_duration(Duration::from_secs(7500)), "2h05m");
    }

    #[test]
    fn counts_rates_and_costs() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(950.4), "950");
        assert_eq!(fmt_rate(12_345.0), "12.3k");
        assert_eq!(fmt_rate(f64::NAN), "-");
        assert_eq!(fmt_cost(0.0), "$0.00");
        assert_eq!(fmt_cost(0.0125), "$0.013");
        assert_eq!(fmt_cost(2.5), "$2.50");
    }

    #[test]
    fn unix_times_are_utc_dates() {
        assert_eq!(fmt_unix(0), "1970-01-01 00:00");
        assert_eq!(fmt_unix(1_764_388_800), "2025-11-29 04:00");
        assert_eq!(fmt_unix(951_782_400), "2000-02-29 00:00");
    }
}
