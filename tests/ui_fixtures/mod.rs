//! A fixed run for the UI tests: three hosts (one lost), five slots, done,
//! running, split, backup, cancelled and failed attempts, one straggler.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use herd::run::{Event, HostInfo, HostReport, HostState, Report};
use herd::sched::{AttemptState, AttemptView, HostView, SlotId, Snapshot, Straggler};
use herd::store::{Check, ValidationReport};
use herd::ui::{Action, App, JobSummary, StoreSummary, UiInput, VersionRow};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;

pub const ROWS: u64 = 100_000;
pub const CHUNK_ROWS: u64 = 2_500;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn hosts() -> Vec<HostInfo> {
    vec![
        HostInfo {
            host: 0,
            name: "local".into(),
            slots: 2,
            cost_per_hour: 0.0,
        },
        HostInfo {
            host: 1,
            name: "gpu1".into(),
            slots: 2,
            cost_per_hour: 2.5,
        },
        HostInfo {
            host: 2,
            name: "gpu2".into(),
            slots: 1,
            cost_per_hour: 1.2,
        },
    ]
}

pub fn started() -> Event {
    Event::Started {
        job: "nightly".into(),
        model: "two_tower".into(),
        version: 7,
        rows_total: ROWS,
        chunks_total: 40,
        hosts: hosts(),
        live_version: Some(6),
        resumed: false,
    }
}

pub struct A {
    pub id: u64,
    pub chunk: u64,
    pub slot: u32,
    pub start: u64,
    pub end: Option<u64>,
    pub state: AttemptState,
    pub backup: bool,
    pub split: bool,
    pub slowness: f64,
}

pub fn a(id: u64, chunk: u64, slot: u32, start: u64, end: Option<u64>, state: AttemptState) -> A {
    A {
        id,
        chunk,
        slot,
        start,
        end,
        state,
        backup: false,
        split: false,
        slowness: 1.0,
    }
}

impl A {
    pub fn view(&self, now: u64) -> AttemptView {
        let rows = self.chunk * CHUNK_ROWS..(self.chunk + 1) * CHUNK_ROWS;
        let rows_done = match self.state {
            AttemptState::Done => CHUNK_ROWS,
            _ => CHUNK_ROWS * (now - self.start).min(10) / 20,
        };
        AttemptView {
            attempt: self.id,
            chunk: self.chunk,
            slot: SlotId(self.slot),
            host: self.slot / 2,
            start: secs(self.start),
            end: self.end.map(secs),
            rows,
            rows_done,
            state: self.state,
            backup: self.backup,
            split: self.split,
            slowness: self.slowness,
        }
    }
}

/// The attempts as they stand at 60 s.
pub fn attempts() -> Vec<A> {
    use AttemptState::*;
    vec![
        a(1, 0, 0, 0, Some(12), Done),
        a(5, 4, 0, 12, Some(25), Done),
        a(9, 8, 0, 25, Some(40), Done),
        A {
            slowness: 1.1,
            ..a(13, 12, 0, 40, None, Running)
        },
        a(2, 1, 1, 0, Some(14), Done),
        A {
            split: true,
            ..a(6, 5, 1, 14, Some(30), Done)
        },
        A {
            slowness: 3.4,
            ..a(10, 9, 1, 30, None, Running)
        },
        a(3, 2, 2, 0, Some(6), Done),
        a(7, 6, 2, 6, Some(12), Done),
        a(11, 10, 2, 12, Some(20), Done),
        a(14, 14, 2, 20, Some(28), Done),
        A {
            backup: true,
            slowness: 0.8,
            ..a(15, 9, 2, 45, None, Running)
        },
        a(4, 3, 3, 0, Some(7), Done),
        a(8, 7, 3, 7, Some(15), Done),
        a(18, 13, 3, 15, Some(18), Cancelled),
        A {
            slowness: 1.2,
            ..a(16, 15, 3, 50, None, Running)
        },
        a(12, 11, 4, 5, Some(22), Failed),
    ]
}

pub fn snapshot(now: u64, rows_done: u64) -> Snapshot {
    let attempts: Vec<AttemptView> = attempts()
        .iter()
        .filter(|a| a.start <= now)
        .map(|a| {
            let mut v = a.view(now);
            if v.end.is_some_and(|e| e > secs(now)) {
                v.end = None;
                v.state = AttemptState::Running;
            }
            v
        })
        .collect();
    Snapshot {
        now: secs(now),
        rows_total: ROWS,
        rows_done,
        cost_total: 4_000,
        cost_done: rows_done / 25,
        chunks_total: 40,
        chunks_done: rows_done / CHUNK_ROWS,
        hosts: vec![
            HostView {
                host: 0,
                slots: 2,
                busy: 2,
                rows_done: 22_500,
                chunks_done: 9,
                failures: 0,
                rows_per_s: 375.0,
                lost: false,
            },
            HostView {
                host: 1,
                slots: 2,
                busy: 2,
                rows_done: 20_000,
                chunks_done: 8,
                failures: 0,
                rows_per_s: 333.3,
                lost: false,
            },
            HostView {
                host: 2,
                slots: 1,
                busy: 0,
                rows_done: 2_500,
                chunks_done: 1,
                failures: 1,
                rows_per_s: 0.0,
                lost: now >= 22,
            },
        ],
        stragglers: if now >= 45 {
            vec![Straggler {
                chunk: 9,
                attempt: 10,
                eta: secs(38),
            }]
        } else {
            vec![]
        },
        eta: Some(secs(44)),
        paused: false,
        backups: if now >= 45 { 1 } else { 0 },
        splits: if now >= 30 { 1 } else { 0 },
        attempts,
    }
}

pub fn host_up(host: u32, backend: &str, adapter: &str) -> Event {
    Event::Host {
        host,
        state: HostState::Running,
        backend: Some(backend.into()),
        adapter: Some(adapter.into()),
    }
}

pub fn log(at: u64, source: &str, text: &str) -> Event {
    Event::Log {
        at: secs(at),
        source: source.into(),
        text: text.into(),
    }
}

/// Started, hosts up, gpu2 lost at 22 s, snapshots up to 60 s.
pub fn mid_run() -> Vec<Event> {
    vec![
        started(),
        host_up(0, "cpu", "8 threads"),
        host_up(1, "vulkan", "NVIDIA H200"),
        host_up(2, "vulkan", "NVIDIA L4"),
        log(1, "run", "shipped herd to gpu1, gpu2 (0 bytes: cached)"),
        Event::Progress(snapshot(10, 7_500)),
        log(21, "gpu2#0", "error: device lost"),
        Event::Progress(snapshot(22, 15_000)),
        Event::Host {
            host: 2,
            state: HostState::Lost("ssh: connection reset".into()),
            backend: None,
            adapter: None,
        },
        log(30, "run", "split chunk 5 at row 13750"),
        log(45, "run", "backup of chunk 9 on gpu1#0"),
        Event::Progress(snapshot(50, 40_000)),
        Event::Progress(snapshot(60, 45_000)),
    ]
}

pub fn checks(drift_ok: bool) -> ValidationReport {
    let check = |name: &str, passed: bool, detail: &str| Check {
        name: name.into(),
        passed,
        detail: detail.into(),
        examples: vec![],
    };
    let mut drift = check(
        "drift",
        drift_ok,
        if drift_ok {
            "top-k churn 0.12 <= 0.9"
        } else {
            "top-k churn 0.97 > 0.9"
        },
    );
    if !drift_ok {
        drift.examples = vec!["user 17".into(), "user 4242".into()];
    }
    let checks = vec![
        check("coverage", true, "100,000 of 100,000 entities"),
        check("finite", true, "0 non-finite scores"),
        check("spot_check", true, "500 rescored, max diff 2e-6"),
        drift,
    ];
    ValidationReport {
        passed: drift_ok,
        checks,
    }
}

pub fn report(flipped: bool) -> Report {
    Report {
        job: "nightly".into(),
        version: 7,
        flipped,
        rows: ROWS,
        chunks: 40,
        attempts: 43,
        backups: 1,
        splits: 1,
        retries: 1,
        duration_s: 98.5,
        cost: 0.0757,
        hosts: vec![HostReport {
            name: "local".into(),
            backend: "cpu".into(),
            ..Default::default()
        }],
        validation: checks(flipped),
        error: None,
        live_version: if flipped { Some(7) } else { Some(6) },
        ..Default::default()
    }
}

/// The whole run: mid-run, then done at 98.5 s, validated, finished.
pub fn finished(flipped: bool) -> Vec<Event> {
    let mut events = mid_run();
    let mut last = snapshot(98, ROWS);
    for a in &mut last.attempts {
        if a.state == AttemptState::Running {
            a.state = if a.attempt == 10 {
                AttemptState::Cancelled
            } else {
                AttemptState::Done
            };
            a.end = Some(secs(if a.attempt == 10 { 62 } else { 70 + a.attempt }));
        }
    }
    last.stragglers.clear();
    last.eta = Some(Duration::ZERO);
    events.push(Event::Progress(last));
    events.push(Event::Host {
        host: 0,
        state: HostState::Done,
        backend: None,
        adapter: None,
    });
    events.push(Event::Host {
        host: 1,
        state: HostState::Done,
        backend: None,
        adapter: None,
    });
    events.push(Event::Validated(checks(flipped)));
    events.push(Event::Finished(Box::new(report(flipped))));
    events
}

pub fn jobs() -> Vec<JobSummary> {
    vec![
        JobSummary {
            path: PathBuf::from("jobs/demo.toml"),
            name: "demo".into(),
            model: "mlp".into(),
            rows: Some(10_000),
            hosts: vec!["local".into()],
            error: None,
        },
        JobSummary {
            path: PathBuf::from("jobs/nightly.toml"),
            name: "nightly".into(),
            model: "two_tower".into(),
            rows: Some(ROWS),
            hosts: vec!["local".into(), "gpu1".into(), "gpu2".into()],
            error: None,
        },
        JobSummary {
            path: PathBuf::from("jobs/broken.toml"),
            name: "broken".into(),
            model: "?".into(),
            rows: None,
            hosts: vec![],
            error: Some(
                "jobs/broken.toml:4:1: unknown key 'modle', expected one of: job, input, model"
                    .into(),
            ),
        },
    ]
}

pub fn store() -> StoreSummary {
    let v = |version, status: &str, rows, created| VersionRow {
        version,
        status: status.into(),
        rows,
        model_version: "two-tower-2026-11-28".into(),
        created,
        job: "nightly".into(),
        model_kind: "two_tower".into(),
        rows_expected: 100_000,
        validation: match status {
            "building" => None,
            "failed" => Some(checks(false)),
            _ => Some(checks(true)),
        },
        hosts: vec!["local".into(), "gpu1".into(), "gpu2".into()],
        duration_s: Some(98.5),
    };
    StoreSummary {
        live: Some(6),
        versions: vec![
            v(7, "failed", 100_000, 1_764_392_400),
            v(6, "live", 100_000, 1_764_388_800),
            v(5, "retired", 99_000, 1_764_302_400),
        ],
    }
}

pub fn app_with(events: Vec<Event>) -> App {
    let mut app = App::new(jobs(), false);
    for e in events {
        app.apply(UiInput::Run(e));
    }
    app
}

/// The frame `app` draws on a `width` x `height` test terminal.
pub fn render(app: &App, width: u16, height: u16) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|f| app.draw(f)).expect("draw");
    terminal.backend().clone()
}

pub fn text(backend: &TestBackend) -> String {
    backend.to_string()
}

/// Presses `code` (no modifier); the user's wish, if any.
pub fn key(app: &mut App, code: KeyCode) -> Option<Action> {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn ch(app: &mut App, c: char) -> Option<Action> {
    key(app, KeyCode::Char(c))
}

/// How many cells of a frame have a colour (none, without colours).
pub fn coloured_cells(b: &TestBackend) -> usize {
    b.buffer()
        .content
        .iter()
        .filter(|c| c.fg != Color::Reset || c.bg != Color::Reset)
        .count()
}
