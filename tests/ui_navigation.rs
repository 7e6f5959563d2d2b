//! Finding one's way: `/` filters with `n`/`N`, the page keys in every
//! list and window, the mouse, scrolled timeline lanes, the version detail
//! with its lookup, and the help of each view; and snapshots of these views
//! at 80x24, 120x40, 200x50, with and without colour.

mod ui_fixtures;

use herd::run::{Event, HostInfo};
use herd::sched::{AttemptState, Snapshot};
use herd::store::{Prediction, Value};
use herd::ui::tui::{Focus, List, Lookup, Overlay, Screen};
use herd::ui::{Action, App, UiInput};
use insta::assert_snapshot;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ui_fixtures::*;

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        ch(app, c);
    }
}

fn mouse(app: &mut App, kind: MouseEventKind, column: u16, row: u16) -> Option<Action> {
    app.handle_mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

/// The row of the frame holding `what`.
fn row_of(frame: &str, what: &str) -> u16 {
    frame
        .lines()
        .position(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in\n{frame}")) as u16
}

/// The store page of a finished run, the store read.
fn store_app() -> App {
    let mut app = app_with(finished(false));
    ch(&mut app, 'v');
    app.apply(UiInput::Store(store()));
    app
}

/// A run on 15 hosts of two slots each, every slot running a chunk: more
/// lanes than any of the three sizes shows.
fn wide_fleet() -> App {
    let hosts: Vec<HostInfo> = (0..15)
        .map(|h| HostInfo {
            host: h,
            name: format!("node{h:02}"),
            slots: 2,
            cost_per_hour: 1.0,
        })
        .collect();
    let mut start = started();
    if let Event::Started { hosts: h, .. } = &mut start {
        *h = hosts;
    }
    let attempts = (0..30u64)
        .map(|i| a(i + 1, i, i as u32, 0, None, AttemptState::Running).view(20))
        .collect();
    let snapshot = Snapshot {
        now: secs(20),
        rows_total: ROWS,
        rows_done: 30_000,
        chunks_total: 40,
        attempts,
        ..Snapshot::default()
    };
    app_with(vec![start, Event::Progress(snapshot)])
}

fn prediction(id: &str) -> Prediction {
    Prediction {
        id: id.into(),
        version: 6,
        model_version: "two-tower-2026-11-28".into(),
        timestamp: 1_764_388_800,
        ttl: 86_400,
        stale: false,
        value: Value::TopK(vec![(17, 0.93125), (4, 0.5), (230, 0.25)]),
    }
}

#[test]
fn slash_filters_the_log_and_n_steps_through_the_matches() {
    let mut app = app_with(mid_run());
    for i in 0..30 {
        app.apply(UiInput::Run(log(61, "run", &format!("line {i}"))));
    }
    app.focus = Focus::Log;
    ch(&mut app, '/');
    assert_eq!(app.filters.editing, Some(List::Log));
    typed(&mut app, "gpu2");
    // q, n and ? are text while a filter is typed.
    assert!(!app.quit);
    let frame = text(&render(&app, 120, 40));
    assert!(frame.contains("/gpu2▏  4 of 39 match"), "{frame}");
    assert!(frame.contains("log /gpu2: 4 of 39"), "{frame}");
    assert!(
        frame.contains("gpu2: lost: ssh: connection reset"),
        "{frame}"
    );
    assert!(!frame.contains("line 29"), "an unmatched line:\n{frame}");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.filters.editing, None);
    assert_eq!(app.filter(List::Log), "gpu2");
    // N goes back to the older match, n forward again, wrapping.
    ch(&mut app, 'N');
    assert_eq!(app.log_scroll, 1);
    ch(&mut app, 'n');
    assert_eq!(app.log_scroll, 0);
    ch(&mut app, 'n');
    assert_eq!(app.log_scroll, 3, "n wraps to the oldest match");
    // Esc clears the filter and shows every line again.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.filter(List::Log), "");
    assert_eq!(app.screen, Screen::Run);
    assert!(text(&render(&app, 120, 40)).contains("line 29"));
    // n without a filter says what to do.
    ch(&mut app, 'n');
    assert!(app.message.as_deref().unwrap().contains("no filter"));
}

#[test]
fn filters_narrow_the_hosts_the_lanes_the_versions_and_the_jobs() {
    // Hosts: Enter opens the matched host, not the row at its old place.
    let mut app = app_with(mid_run());
    key(&mut app, KeyCode::Tab);
    ch(&mut app, '/');
    typed(&mut app, "lost");
    key(&mut app, KeyCode::Enter);
    let frame = text(&render(&app, 120, 40));
    assert!(frame.contains("hosts /lost: 1 of 3"), "{frame}");
    assert!(!frame.contains("gpu1       vulkan"), "{frame}");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay, Some(Overlay::HostDetail(2)));
    key(&mut app, KeyCode::Esc);

    // Lanes: by chunk or by slot.
    let mut app = app_with(mid_run());
    ch(&mut app, '/');
    typed(&mut app, "gpu1#");
    key(&mut app, KeyCode::Enter);
    let frame = text(&render(&app, 120, 40));
    assert!(
        frame.contains("timeline 0s..1m00s /gpu1#: 2 of 5"),
        "{frame}"
    );
    assert!(!frame.contains("local#0 "), "{frame}");
    ch(&mut app, 'n');
    assert_eq!(app.chunk_selected, Some(15), "n selects the lane's chunk");

    // Versions: the selection is among the rows shown; f acts on it.
    let mut app = store_app();
    ch(&mut app, '/');
    typed(&mut app, "retired");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.selected_version().map(|v| v.version), Some(5));
    assert_eq!(ch(&mut app, 'f'), None);
    assert_eq!(app.overlay, Some(Overlay::ConfirmFlip(5)));
    ch(&mut app, 'n');
    // A filter that matches nothing says so.
    ch(&mut app, '/');
    typed(&mut app, "zzz");
    key(&mut app, KeyCode::Enter);
    // `/` takes up the filter there is, to edit it.
    assert_eq!(app.message.as_deref(), Some("no row matches /retiredzzz"));
    assert!(text(&render(&app, 80, 24)).contains("No version matches the filter"));
    // Esc clears the filter first, then goes back.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Store);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Run);

    // Jobs.
    let mut app = App::new(jobs(), false);
    ch(&mut app, '/');
    typed(&mut app, "night");
    key(&mut app, KeyCode::Enter);
    assert!(matches!(
        key(&mut app, KeyCode::Enter),
        Some(Action::Start(p)) if p.ends_with("nightly.toml")
    ));
}

#[test]
fn page_keys_scroll_the_lanes_the_hosts_and_every_window() {
    let mut app = wide_fleet();
    let frame = text(&render(&app, 80, 24));
    assert!(frame.contains("lanes 1-"), "no position:\n{frame}");
    assert!(frame.contains("node00#0"), "{frame}");
    key(&mut app, KeyCode::End);
    let frame = text(&render(&app, 80, 24));
    assert!(frame.contains("of 30 (PgUp/PgDn)"), "{frame}");
    assert!(
        frame.contains("node14#1"),
        "End shows the last lane:\n{frame}"
    );
    assert!(!frame.contains("┃node00#0"), "{frame}");
    ch(&mut app, 'g');
    assert_eq!(app.lane_scroll, 0);
    key(&mut app, KeyCode::PageDown);
    assert_eq!(app.lane_scroll, herd::ui::tui::PAGE);
    // The selection moves the lanes with it.
    ch(&mut app, 'g');
    for _ in 0..29 {
        key(&mut app, KeyCode::Right);
    }
    assert_eq!(app.chunk_selected, Some(29));
    let frame = text(&render(&app, 80, 24));
    assert!(frame.contains("node14#1"), "selected lane hidden:\n{frame}");

    // Hosts: End selects the last row, g the first.
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::End);
    assert_eq!(app.host_selected, 14);
    assert!(text(&render(&app, 80, 24)).contains("> node14"));
    ch(&mut app, 'g');
    assert_eq!(app.host_selected, 0);

    // A window taller than the screen scrolls and says where it is.
    let mut app = app_with(mid_run());
    for i in 0..40 {
        app.apply(UiInput::Run(log(61, "gpu2#0", &format!("stderr {i}"))));
    }
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Enter);
    let frame = text(&render(&app, 80, 24));
    assert!(frame.contains("stderr 39"), "newest first:\n{frame}");
    assert!(frame.contains("rows 1-"), "{frame}");
    key(&mut app, KeyCode::End);
    let frame = text(&render(&app, 80, 24));
    assert!(frame.contains("error: device lost"), "{frame}");
    assert!(!frame.contains("stderr 39"), "{frame}");
    key(&mut app, KeyCode::Home);
    assert_eq!(app.detail_scroll, 0);
    key(&mut app, KeyCode::PageDown);
    assert_eq!(app.detail_scroll, herd::ui::tui::PAGE);
}

#[test]
fn a_click_selects_and_the_wheel_scrolls() {
    // A click on a host row focuses the hosts and selects it.
    let mut app = app_with(mid_run());
    let frame = text(&render(&app, 120, 40));
    let y = row_of(&frame, "NVIDIA L4");
    mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 5, y);
    assert_eq!(app.focus, Focus::Hosts);
    assert_eq!(app.host_selected, 2);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay, Some(Overlay::HostDetail(2)));
    key(&mut app, KeyCode::Esc);

    // A click on a lane selects its running chunk.
    let frame = text(&render(&app, 120, 40));
    let y = row_of(&frame, "gpu1#1 ");
    mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 10, y);
    assert_eq!(app.focus, Focus::Timeline);
    assert_eq!(app.chunk_selected, Some(15));

    // The wheel over the log scrolls it back, and forward again.
    let frame = text(&render(&app, 120, 40));
    let y = row_of(&frame, "split chunk 5");
    mouse(&mut app, MouseEventKind::ScrollUp, 10, y);
    assert_eq!(app.focus, Focus::Log);
    assert_eq!(app.log_scroll, herd::ui::tui::WHEEL);
    mouse(&mut app, MouseEventKind::ScrollDown, 10, y);
    assert_eq!(app.log_scroll, 0);

    // Versions: a click selects, and never flips.
    let mut app = store_app();
    let frame = text(&render(&app, 80, 24));
    let y = row_of(&frame, "  v5");
    assert_eq!(
        mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 3, y),
        None
    );
    assert_eq!(app.selected_version().map(|v| v.version), Some(5));
    assert_eq!(app.overlay, None);

    // Jobs.
    let mut app = App::new(jobs(), false);
    let frame = text(&render(&app, 80, 24));
    let y = row_of(&frame, "broken");
    mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 3, y);
    assert_eq!(app.job_selected, 2);
}

#[test]
fn enter_opens_a_version_with_its_report_and_a_lookup_by_id() {
    let mut app = store_app();
    key(&mut app, KeyCode::Down);
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(app.overlay, Some(Overlay::VersionDetail(6)));
    let frame = text(&render(&app, 120, 40));
    for want in [
        "status live  job nightly",
        "model two-tower-2026-11-28 (two_tower)",
        "rows 100,000 committed of 100,000 expected",
        "created 2025-11-29 04:00 UTC  took 1m38s",
        "validation: passed (4 checks)",
        "ok   drift:",
    ] {
        assert!(frame.contains(want), "no {want:?}:\n{frame}");
    }
    // Enter types an id; Enter again looks it up in this version.
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    typed(&mut app, "u42");
    assert!(text(&render(&app, 120, 40)).contains("look up id: u42▏"));
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        Some(Action::Lookup {
            version: 6,
            id: "u42".into()
        })
    );
    assert!(text(&render(&app, 120, 40)).contains("looking up 'u42' in v6"));
    app.apply(UiInput::Lookup(Lookup {
        version: 6,
        id: "u42".into(),
        answer: Ok(Some(prediction("u42"))),
    }));
    let frame = text(&render(&app, 120, 40));
    assert!(frame.contains("FOUND: id u42 in v6"), "{frame}");
    assert!(frame.contains("1. item 17         0.93125"), "{frame}");

    // Not found says so plainly.
    typed(&mut app, "i");
    key(&mut app, KeyCode::Backspace);
    key(&mut app, KeyCode::Backspace);
    key(&mut app, KeyCode::Backspace);
    typed(&mut app, "nobody");
    key(&mut app, KeyCode::Enter);
    app.apply(UiInput::Lookup(Lookup {
        version: 6,
        id: "nobody".into(),
        answer: Ok(None),
    }));
    let frame = text(&render(&app, 120, 40));
    assert!(
        frame.contains("NOT FOUND: v6 has no prediction for id 'nobody'"),
        "{frame}"
    );
    // An answer to an older question is not shown as this one's.
    app.apply(UiInput::Lookup(Lookup {
        version: 6,
        id: "u42".into(),
        answer: Ok(Some(prediction("u42"))),
    }));
    assert!(!text(&render(&app, 120, 40)).contains("FOUND: id u42"));

    // A failed version's report lists the failed check; Esc goes back.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, None);
    ch(&mut app, 'g');
    key(&mut app, KeyCode::Enter);
    let frame = text(&render(&app, 120, 40));
    assert!(
        frame.contains("validation: FAILED (1 of 4 checks)"),
        "{frame}"
    );
    assert!(frame.contains("FAIL drift:"), "{frame}");
    // f on a version the store would refuse says why, in the window.
    assert_eq!(ch(&mut app, 'f'), None);
    assert!(app.message.as_deref().unwrap().contains("v7 is failed"));
    assert_eq!(app.overlay, Some(Overlay::VersionDetail(7)));
}

#[test]
fn a_rollback_from_the_version_detail_still_needs_y() {
    let mut app = store_app();
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay, Some(Overlay::VersionDetail(5)));
    for _ in 0..3 {
        assert_eq!(key(&mut app, KeyCode::Enter), None);
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::Enter);
    }
    assert_eq!(app.overlay, Some(Overlay::VersionDetail(5)));
    key(&mut app, KeyCode::Esc);
    assert_eq!(ch(&mut app, 'f'), None);
    assert_eq!(app.overlay, Some(Overlay::ConfirmFlip(5)));
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(ch(&mut app, 'y'), Some(Action::Flip(5)));
}

#[test]
fn help_is_about_the_view_it_was_asked_in() {
    let help = |app: &mut App| {
        ch(app, '?');
        let frame = text(&render(app, 120, 40));
        key(app, KeyCode::Esc);
        frame
    };
    let run = help(&mut app_with(mid_run()));
    assert!(run.contains("help: run"), "{run}");
    assert!(run.contains("x peers: an attempt's rows/s over the median"));
    assert!(run.contains("backup attempt of the selected chunk"));

    let mut store = store_app();
    let page = help(&mut store);
    assert!(page.contains("help: store"), "{page}");
    assert!(page.contains("open it: report, lookup by id"));
    assert!(!page.contains("x peers"));

    key(&mut store, KeyCode::Enter);
    let detail = help(&mut store);
    assert!(detail.contains("help: version"), "{detail}");
    assert!(detail.contains("type an entity id"));
    assert_eq!(
        store.overlay,
        Some(Overlay::VersionDetail(7)),
        "Esc goes back to the window the help was opened over"
    );

    let jobs_help = help(&mut App::new(jobs(), false));
    assert!(jobs_help.contains("help: jobs"), "{jobs_help}");

    let mut host = app_with(mid_run());
    key(&mut host, KeyCode::Tab);
    key(&mut host, KeyCode::Enter);
    let detail = help(&mut host);
    assert!(detail.contains("help: host"), "{detail}");
    assert_eq!(host.overlay, Some(Overlay::HostDetail(0)));
}

/// The views this file adds, named, in a state that shows what they do.
fn new_views() -> Vec<(&'static str, App)> {
    let mut views = Vec::new();
    let mut filtered = app_with(mid_run());
    key(&mut filtered, KeyCode::Tab);
    key(&mut filtered, KeyCode::Tab);
    ch(&mut filtered, '/');
    typed(&mut filtered, "run");
    views.push(("log_filter", filtered));
    views.push(("lanes_scrolled", {
        let mut app = wide_fleet();
        key(&mut app, KeyCode::PageDown);
        app
    }));
    let mut detail = store_app();
    key(&mut detail, KeyCode::Down);
    key(&mut detail, KeyCode::Enter);
    key(&mut detail, KeyCode::Enter);
    typed(&mut detail, "u42");
    key(&mut detail, KeyCode::Enter);
    detail.apply(UiInput::Lookup(Lookup {
        version: 6,
        id: "u42".into(),
        answer: Ok(Some(prediction("u42"))),
    }));
    views.push(("version_detail", detail.clone()));
    detail.apply(UiInput::Lookup(Lookup {
        version: 6,
        id: "u42".into(),
        answer: Ok(None),
    }));
    views.push(("version_not_found", detail.clone()));
    ch(&mut detail, '?');
    views.push(("version_help", detail));
    let mut store_help = store_app();
    ch(&mut store_help, '?');
    views.push(("store_help", store_help));
    views
}

#[test]
fn new_views_at_three_sizes_and_without_colour() {
    for (name, app) in new_views() {
        let mut coloured = app.clone();
        coloured.colors = true;
        for (w, h) in [(80, 24), (120, 40), (200, 50)] {
            let plain = render(&app, w, h);
            assert_snapshot!(format!("{name}_{w}x{h}"), plain);
            assert_eq!(coloured_cells(&plain), 0, "{name} {w}x{h} has colour");
            assert_eq!(
                text(&plain),
                text(&render(&coloured, w, h)),
                "{name} {w}x{h}: colour changed a glyph"
            );
        }
    }
}

#[test]
fn no_panic_at_any_size_in_the_new_views() {
    let mut terminal = Terminal::new(TestBackend::new(1, 1)).expect("test terminal");
    for (_, app) in new_views() {
        for w in (0..=200).step_by(11) {
            for h in (0..=60).step_by(7) {
                terminal.backend_mut().resize(w, h);
                terminal
                    .resize(ratatui::layout::Rect::new(0, 0, w, h))
                    .expect("resize");
                terminal.draw(|f| app.draw(f)).expect("draw");
            }
        }
    }
}
