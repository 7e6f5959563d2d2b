//! The reducer's figures, the headless lines and the Chrome trace, from the
//! fixed run in `ui_fixtures`.

mod ui_fixtures;

use std::collections::BTreeSet;
use std::time::Duration;

use herd::run::{Event, Report};
use herd::ui::state::{LOG_LINES, Outcome, RunState};
use herd::ui::{Headless, trace_json};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::Value;
use ui_fixtures::*;

fn state_of(events: &[Event]) -> RunState {
    let mut state = RunState::new();
    for e in events {
        state.apply(e);
    }
    state
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// ---- reducer ----

#[test]
fn rows_per_s_is_recent_not_whole_run() {
    let state = state_of(&mid_run());
    // Snapshots at 50 s (40,000 rows) and 60 s (45,000): the last 10 s.
    let rate = state.rows_per_s().expect("a rate");
    assert!(close(rate, (45_000.0 - 40_000.0) / 10.0), "{rate}");
    assert!(
        !close(rate, 45_000.0 / 60.0),
        "must not be the whole-run average"
    );
}

#[test]
fn rows_per_s_from_a_single_snapshot_is_rows_over_elapsed() {
    let state = state_of(&[started(), Event::Progress(snapshot(10, 7_500))]);
    assert!(close(state.rows_per_s().expect("a rate"), 750.0));
    assert_eq!(state_of(&[started()]).rows_per_s(), None);
}

/// While a run goes on the coordinator publishes only what changed: a
/// `Changes` replaces the attempts and hosts it names, adds new ones, and
/// leaves the others as the state held them.
#[test]
fn changes_update_only_the_attempts_and_hosts_they_name() {
    let mut state = state_of(&mid_run());
    let before = state.snapshot.attempts.clone();
    let mut changes = snapshot(61, 46_000);
    let mut moved = changes
        .attempts
        .iter()
        .find(|a| a.attempt == 13)
        .expect("attempt 13")
        .clone();
    moved.rows_done += 100;
    let mut fresh = moved.clone();
    fresh.attempt = 19;
    fresh.chunk = 16;
    changes.attempts = vec![moved.clone(), fresh.clone()];
    let mut lost = changes.hosts[1].clone();
    lost.lost = true;
    changes.hosts = vec![lost];
    state.apply(&Event::Changes(changes));
    let after = &state.snapshot.attempts;
    assert_eq!(after.len(), before.len() + 1);
    for a in after {
        match a.attempt {
            13 => assert_eq!(a, &moved),
            19 => assert_eq!(a, &fresh),
            _ => assert!(before.contains(a), "attempt {} changed: {a:?}", a.attempt),
        }
    }
    let hosts: Vec<bool> = state.snapshot.hosts.iter().map(|h| h.lost).collect();
    assert_eq!(hosts, [false, true, true], "host 1 lost, host 2 as it was");
    assert_eq!(state.snapshot.rows_done, 46_000);
    assert_eq!(state.snapshot.now, secs(61));
}

#[test]
fn rows_per_s_window_slides() {
    let mut state = state_of(&[started()]);
    // 100 rows/s for 30 s, then 1,000 rows/s for 20 s.
    let mut rows = 0;
    for t in 1..=50u64 {
        rows += if t <= 30 { 100 } else { 1_000 };
        state.apply(&Event::Progress(snapshot(t, rows)));
    }
    assert!(close(state.rows_per_s().expect("a rate"), 1_000.0));
}

#[test]
fn eta_prefers_the_scheduler_then_the_rate() {
    let state = state_of(&mid_run());
    assert_eq!(state.eta(), Some(secs(44)));
    let mut events = mid_run();
    if let Some(Event::Progress(s)) = events.last_mut() {
        s.eta = None;
    }
    let state = state_of(&events);
    // 55,000 rows left at 500 rows/s.
    assert_eq!(state.eta(), Some(secs(110)));
    assert_eq!(state_of(&finished(true)).eta(), Some(Duration::ZERO));
}

#[test]
fn cost_counts_each_host_until_it_stops() {
    let state = state_of(&mid_run());
    // local is free; gpu1 ($2.50/h) ran 60 s; gpu2 ($1.20/h) was lost at 22 s.
    let so_far = 2.5 * 60.0 / 3600.0 + 1.2 * 22.0 / 3600.0;
    assert!(
        close(state.cost_so_far(), so_far),
        "{}",
        state.cost_so_far()
    );
    // Projected: only gpu1 keeps costing, for the 44 s ETA.
    let projected = so_far + 2.5 * 44.0 / 3600.0;
    assert!(close(state.cost_projected().expect("projected"), projected));
}

#[test]
fn cost_after_the_run_is_the_reports() {
    let state = state_of(&finished(true));
    assert!(close(state.cost_so_far(), report(true).cost));
}

#[test]
fn log_is_a_bounded_ring() {
    let mut state = state_of(&[started()]);
    for i in 0..LOG_LINES + 5 {
        state.apply(&log(i as u64, "run", &format!("line {i}")));
    }
    assert_eq!(state.log.len(), LOG_LINES);
    assert_eq!(state.log.front().map(|l| l.text.as_str()), Some("line 5"));
    assert_eq!(
        state.log.back().map(|l| l.text.clone()),
        Some(format!("line {}", LOG_LINES + 4))
    );
}

#[test]
fn started_begins_a_new_run() {
    let mut state = state_of(&finished(true));
    state.apply(&started());
    assert!(state.running());
    assert_eq!(state.rows_done(), 0);
    // The old run's log is gone; the new one begins with its start line.
    let log: Vec<&str> = state.log.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("started nightly"), "{log:?}");
    assert_eq!(state.outcome(), None);
}

#[test]
fn lanes_one_per_slot_named_host_and_index() {
    let state = state_of(&mid_run());
    let lanes = state.lanes();
    let labels: Vec<&str> = lanes.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(labels, ["local#0", "local#1", "gpu1#0", "gpu1#1", "gpu2#0"]);
    let total: usize = lanes.iter().map(|l| l.attempts.len()).sum();
    assert_eq!(total, state.snapshot.attempts.len());
    for lane in &lanes {
        assert!(lane.attempts.windows(2).all(|w| w[0].start <= w[1].start));
        assert!(lane.attempts.iter().all(|a| a.slot == lane.slot));
    }
}

#[test]
fn hosts_take_backend_adapter_and_state() {
    let state = state_of(&mid_run());
    let gpu1 = &state.hosts[1];
    assert_eq!(gpu1.device(), "vulkan NVIDIA H200");
    assert_eq!(gpu1.state_text(), "running");
    assert_eq!(state.hosts[2].state_text(), "lost: ssh: connection reset");
    assert_eq!(state.hosts[2].stopped_at, Some(secs(22)));
}

#[test]
fn selectable_puts_stragglers_first() {
    let state = state_of(&mid_run());
    let chunks: Vec<u64> = state.selectable().iter().map(|a| a.chunk).collect();
    // Chunk 9 runs twice (straggler and backup) but is listed once.
    assert_eq!(chunks, [9, 12, 15]);
}

#[test]
fn outcome_says_why_nothing_flipped() {
    assert_eq!(
        state_of(&finished(true)).outcome(),
        Some(Outcome::Flipped {
            version: 7,
            previous: Some(6)
        })
    );
    match state_of(&finished(false)).outcome() {
        Some(Outcome::NotFlipped { version: 7, why }) => {
            assert!(
                why.contains("'drift'") && why.contains("0.97 > 0.9"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut events = finished(false);
    events.pop();
    events.push(Event::Finished(Box::new(Report {
        error: Some("chunk 9 failed 4 times (max_attempts = 4)".into()),
        ..report(false)
    })));
    match state_of(&events).outcome() {
        Some(Outcome::NotFlipped { why, .. }) => {
            assert!(why.starts_with("chunk 9 failed"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

// ---- headless ----

fn feed(headless: &mut Headless, events: &[Event]) -> Vec<String> {
    events.iter().flat_map(|e| headless.on_event(e)).collect()
}

/// The snapshot at 60 s, moved to `now` with the same counts.
fn at(now_ms: u64) -> Event {
    let mut s = snapshot(60, 45_000);
    s.now = Duration::from_millis(now_ms);
    Event::Progress(s)
}

#[test]
fn headless_started_and_hosts() {
    let mut h = Headless::new(false);
    let lines = feed(&mut h, &mid_run()[..4]);
    assert_eq!(
        lines[0],
        "started nightly (model two_tower): building v7, 100,000 rows in 40 chunks on 3 hosts (local, gpu1, gpu2); live version: v6"
    );
    assert_eq!(lines[2], "host gpu1: running on vulkan NVIDIA H200");
    let lost = feed(&mut h, &mid_run()[4..]);
    assert!(
        lost.contains(&"host gpu2: lost: ssh: connection reset".to_string()),
        "{lost:?}"
    );
}

#[test]
fn headless_plain_progress_at_most_every_two_seconds() {
    let mut h = Headless::new(false);
    feed(&mut h, &mid_run());
    let count = |h: &mut Headless, ms: u64| h.on_event(&at(ms)).len();
    assert_eq!(count(&mut h, 61_000), 0, "1 s after the last line");
    assert_eq!(count(&mut h, 61_900), 0);
    assert_eq!(count(&mut h, 62_000), 1, "2 s after the last line");
    assert_eq!(count(&mut h, 63_000), 0);
}

#[test]
fn headless_plain_progress_on_every_state_change() {
    let mut h = Headless::new(false);
    feed(&mut h, &mid_run());
    let Event::Progress(mut s) = at(60_500) else {
        unreachable!()
    };
    s.backups += 1;
    let lines = h.on_event(&Event::Progress(s.clone()));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("2 backups"), "{lines:?}");
    s.now = Duration::from_millis(60_700);
    s.paused = true;
    let lines = h.on_event(&Event::Progress(s));
    assert_eq!(lines[0], "paused: no new attempts start");
    assert!(lines[1].ends_with(", PAUSED"), "{lines:?}");
}

#[test]
fn headless_and_tui_show_the_same_numbers() {
    let mut h = Headless::new(false);
    let lines = feed(&mut h, &mid_run());
    let progress = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("progress "))
        .expect("a progress line");
    assert_eq!(
        progress,
        "progress 45,000/100,000 rows (45.0%), 500 rows/s, ETA 44s, 1 backup, 1 split, cost $0.049 (projected $0.080)"
    );
    let app = app_with(mid_run());
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    terminal.draw(|f| app.draw(f)).expect("draw");
    let frame = terminal.backend().to_string();
    for figure in [
        "45,000 / 100,000 rows",
        "45.0%",
        "500 rows/s",
        "ETA 44s",
        "cost $0.049",
        "$0.080 projected",
    ] {
        assert!(frame.contains(figure), "TUI lacks '{figure}':\n{frame}");
    }
}

#[test]
fn headless_tty_redraws_one_bar() {
    let mut h = Headless::new(true);
    let lines = feed(&mut h, &mid_run());
    let bars: Vec<&String> = lines.iter().filter(|l| l.starts_with('\r')).collect();
    assert!(bars.len() >= 4, "every snapshot redraws the bar: {lines:?}");
    let last = bars.last().expect("a bar");
    assert!(
        last.starts_with("\r[###########-------------] 45,000/100,000 rows"),
        "{last:?}"
    );
    let mut out = Vec::new();
    h.write(&mut out, &[last.to_string(), "host gpu1: done".into()])
        .expect("write");
    let out = String::from_utf8(out).expect("utf8");
    assert!(out.starts_with("\r\x1b[2K[####"), "{out:?}");
    assert!(!out.contains("rows\n"), "the bar has no newline: {out:?}");
    assert!(out.contains("\r\x1b[2Khost gpu1: done\n"), "{out:?}");
}

#[test]
fn headless_validation_and_final_summary() {
    let mut h = Headless::new(false);
    let lines = feed(&mut h, &finished(false));
    let at = lines
        .iter()
        .position(|l| l == "validation FAILED")
        .expect("verdict line");
    assert_eq!(
        lines[at + 1],
        "  ok   coverage: 100,000 of 100,000 entities"
    );
    assert_eq!(
        lines[at + 4],
        "  FAIL drift: top-k churn 0.97 > 0.9 (e.g. user 17, user 4242)"
    );
    assert_eq!(
        lines.last().expect("summary"),
        "finished nightly: v7 NOT flipped: validation check 'drift' failed: top-k churn 0.97 > 0.9; \
         100,000 rows, 40 chunks, 43 attempts (1 backup, 1 split, 1 retry) in 1m38s, cost $0.076"
    );
    let mut h = Headless::new(false);
    let lines = feed(&mut h, &finished(true));
    let last = lines.last().expect("summary");
    assert!(
        last.starts_with("finished nightly: v7 is live (was v6); 100,000 rows"),
        "{last}"
    );
}

// ---- trace ----

fn trace_of(events: &[Event]) -> (Value, usize) {
    let state = state_of(events);
    let value = trace_json(&started(), &state.snapshot);
    let text = serde_json::to_string(&value).expect("serialise");
    (
        serde_json::from_str(&text).expect("the trace parses"),
        state.snapshot.attempts.len(),
    )
}

fn trace_events(trace: &Value) -> &Vec<Value> {
    trace["traceEvents"].as_array().expect("traceEvents array")
}

#[test]
fn trace_has_one_complete_event_per_attempt() {
    let (trace, attempts) = trace_of(&mid_run());
    let xs: Vec<&Value> = trace_events(&trace)
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    assert_eq!(xs.len(), attempts);
    let chunk4 = xs
        .iter()
        .find(|e| e["args"]["attempt"] == 5)
        .expect("attempt 5");
    assert_eq!(chunk4["ts"], 12_000_000);
    assert_eq!(chunk4["dur"], 13_000_000);
    assert_eq!(chunk4["args"]["chunk"], 4);
    assert_eq!(chunk4["args"]["rows"], CHUNK_ROWS);
    assert_eq!(chunk4["args"]["state"], "done");
    // A running attempt lasts until the snapshot's now (60 s).
    let running = xs
        .iter()
        .find(|e| e["args"]["attempt"] == 10)
        .expect("attempt 10");
    assert_eq!(running["dur"], 30_000_000);
    assert_eq!(running["args"]["state"], "running");
    let backup = xs
        .iter()
        .find(|e| e["args"]["attempt"] == 15)
        .expect("attempt 15");
    assert_eq!(backup["args"]["backup"], true);
    let split = xs
        .iter()
        .find(|e| e["args"]["attempt"] == 6)
        .expect("attempt 6");
    assert_eq!(split["args"]["split"], true);
}

#[test]
fn trace_has_one_named_track_per_slot() {
    let (trace, _) = trace_of(&finished(true));
    let events = trace_events(&trace);
    let threads: Vec<(u64, u64, String)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            (
                e["pid"].as_u64().expect("pid"),
                e["tid"].as_u64().expect("tid"),
                e["args"]["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = threads.iter().map(|t| t.2.as_str()).collect();
    assert_eq!(names, ["local#0", "local#1", "gpu1#0", "gpu1#1", "gpu2#0"]);
    let processes: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().expect("pid"),
                e["args"]["name"].as_str().expect("name"),
            )
        })
        .collect();
    assert_eq!(processes, [(0, "local"), (1, "gpu1"), (2, "gpu2")]);
    let tracks: BTreeSet<(u64, u64)> = threads.iter().map(|t| (t.0, t.1)).collect();
    for x in events.iter().filter(|e| e["ph"] == "X") {
        let track = (
            x["pid"].as_u64().expect("pid"),
            x["tid"].as_u64().expect("tid"),
        );
        assert!(tracks.contains(&track), "attempt on an unnamed track: {x}");
    }
    let states: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["args"]["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, BTreeSet::from(["cancelled", "done", "failed"]));
}
