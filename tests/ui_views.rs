//! Whole-frame snapshots of every view (ratatui `TestBackend` + insta), and
//! the keys. States come from fixed events, so frames are deterministic.

mod ui_fixtures;

use std::path::PathBuf;

use herd::ui::tui::{Overlay, Screen};
use herd::ui::{Action, App, UiInput};
use insta::assert_snapshot;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ui_fixtures::*;

#[test]
fn picker() {
    let app = App::new(jobs(), false);
    assert_snapshot!("picker", render(&app, 80, 24));
}

#[test]
fn picker_shows_why_a_job_cannot_start() {
    let mut app = App::new(jobs(), false);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        None,
        "a job with a config error must not start"
    );
    let frame = text(&render(&app, 80, 24));
    assert!(
        frame.contains("cannot start: jobs/broken.toml:4:1: unknown key 'modle'"),
        "{frame}"
    );
}

#[test]
fn run_mid_run_80x24() {
    assert_snapshot!("run_mid_80x24", render(&app_with(mid_run()), 80, 24));
}

#[test]
fn run_mid_run_160x48() {
    assert_snapshot!("run_mid_160x48", render(&app_with(mid_run()), 160, 48));
}

#[test]
fn run_view_shows_the_lost_host_and_why() {
    let frame = text(&render(&app_with(mid_run()), 100, 30));
    let line = frame
        .lines()
        .find(|l| l.contains("gpu2"))
        .expect("gpu2 row");
    assert!(line.contains("lost: ssh: connection reset"), "{line}");
    assert!(line.contains("0/1"), "lost host has no busy slot: {line}");
}

#[test]
fn run_view_lists_stragglers_with_time_left() {
    let app = app_with(mid_run());
    let frame = text(&render(&app, 80, 24));
    assert!(
        frame.contains("> ! chunk 9 on local#1: ~38s left (0.6x peers)"),
        "{frame}"
    );
    let wide = text(&render(&app, 160, 48));
    assert!(
        wide.contains("> ! chunk 9 on local#1: ~38s left (0.6x peers)"),
        "{wide}"
    );
}

#[test]
fn timeline_marks_attempt_kinds_with_glyphs_not_only_colour() {
    let frame = text(&render(&app_with(mid_run()), 160, 48));
    let lane = |label: &str| {
        frame
            .lines()
            .find(|l| l.contains(&format!("│{label}")) || l.contains(&format!("┃{label}")))
            .unwrap_or_else(|| panic!("no lane {label} in\n{frame}"))
            .to_string()
    };
    assert!(lane("local#1").contains('/'), "split attempt glyph");
    assert!(lane("local#1").contains('!'), "straggler glyph");
    assert!(lane("gpu1#0").contains('≡'), "backup glyph");
    assert!(lane("gpu1#1").contains('-'), "cancelled glyph");
    assert!(lane("gpu2#0").contains('x'), "failed glyph");
    assert!(lane("local#0").contains('▒'), "running glyph");
}

#[test]
fn final_panel_flipped() {
    assert_snapshot!(
        "run_final_flipped",
        render(&app_with(finished(true)), 80, 24)
    );
}

#[test]
fn final_panel_not_flipped() {
    let app = app_with(finished(false));
    let frame = render(&app, 80, 24);
    assert!(
        text(&frame)
            .contains("NOT FLIPPED: v7 is not live (v6 is): validation check 'drift' failed")
    );
    assert_snapshot!("run_final_not_flipped", frame);
}

#[test]
fn final_panel_large() {
    assert_snapshot!(
        "run_final_flipped_160x48",
        render(&app_with(finished(true)), 160, 48)
    );
}

#[test]
fn help_overlay() {
    let mut app = app_with(mid_run());
    ch(&mut app, '?');
    assert_eq!(app.overlay, Some(Overlay::Help));
    assert_snapshot!("help", render(&app, 80, 24));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, None);
}

#[test]
fn quit_asks_while_running() {
    let mut app = app_with(mid_run());
    assert_eq!(ch(&mut app, 'q'), None);
    assert_eq!(app.overlay, Some(Overlay::ConfirmQuit));
    assert_snapshot!("quit_confirm", render(&app, 80, 24));
    assert_eq!(ch(&mut app, 'n'), None);
    assert!(!app.quit);
    ch(&mut app, 'q');
    assert_eq!(ch(&mut app, 'y'), Some(Action::Quit));
    assert!(app.quit);
}

#[test]
fn quit_does_not_ask_after_the_run() {
    let mut app = app_with(finished(true));
    assert_eq!(ch(&mut app, 'q'), Some(Action::Quit));
}

#[test]
fn ctrl_c_quits_at_once() {
    let mut app = app_with(mid_run());
    let action = app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(action, Some(Action::Quit));
}

#[test]
fn cancel_asks_first() {
    let mut app = app_with(mid_run());
    assert_eq!(ch(&mut app, 'c'), None);
    assert_eq!(app.overlay, Some(Overlay::ConfirmCancel));
    assert_eq!(
        ch(&mut app, 'x'),
        None,
        "other keys leave the question open"
    );
    assert_eq!(app.overlay, Some(Overlay::ConfirmCancel));
    assert_eq!(ch(&mut app, 'y'), Some(Action::Cancel));
    assert_eq!(app.overlay, None);
}

#[test]
fn pause_toggles_from_the_snapshot() {
    let mut app = app_with(mid_run());
    assert_eq!(ch(&mut app, 'p'), Some(Action::Pause(true)));
    let mut paused = snapshot(61, 45_500);
    paused.paused = true;
    app.apply(UiInput::Run(herd::run::Event::Progress(paused)));
    assert_eq!(ch(&mut app, 'p'), Some(Action::Pause(false)));
    assert!(text(&render(&app, 80, 24)).contains("PAUSED"));
}

#[test]
fn backup_goes_to_the_selected_running_chunk() {
    let mut app = app_with(mid_run());
    // The worst straggler is selected first.
    assert_eq!(app.chunk_selected, Some(9));
    assert_eq!(ch(&mut app, 's'), Some(Action::Backup(9)));
    // Then the other running chunks in slot order: 12 (local#0), 15 (gpu1#1).
    key(&mut app, KeyCode::Right);
    assert_eq!(ch(&mut app, 's'), Some(Action::Backup(12)));
    let frame = text(&render(&app, 80, 24));
    assert!(
        frame.contains("> chunk 12 on local#0: 1,250/2,500 rows (0.9x peers)"),
        "{frame}"
    );
    assert!(
        frame.contains("  ! chunk 9 on local#1"),
        "the straggler stays listed: {frame}"
    );
    key(&mut app, KeyCode::Down);
    assert_eq!(ch(&mut app, 's'), Some(Action::Backup(15)));
    key(&mut app, KeyCode::Down);
    assert_eq!(
        app.chunk_selected,
        Some(15),
        "selection stops at the last chunk"
    );
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Left);
    assert_eq!(app.chunk_selected, Some(9));
}

#[test]
fn no_backup_after_the_run() {
    let mut app = app_with(finished(true));
    assert_eq!(ch(&mut app, 's'), None);
    assert_eq!(ch(&mut app, 'p'), None);
    assert_eq!(ch(&mut app, 'c'), None);
}

#[test]
fn tab_moves_focus_and_arrows_scroll_the_log() {
    let mut app = app_with(mid_run());
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, herd::ui::tui::Focus::Log);
    key(&mut app, KeyCode::Up);
    assert_eq!(app.log_scroll, 1);
    let frame = text(&render(&app, 80, 24));
    assert!(frame.contains("log (back 1 lines)"), "{frame}");
    assert!(
        !frame.contains("backup of chunk 9"),
        "the newest line scrolled out: {frame}"
    );
}

#[test]
fn store_view_flips_after_confirmation() {
    let mut app = app_with(finished(false));
    assert_eq!(ch(&mut app, 'v'), Some(Action::RefreshStore));
    assert_eq!(app.screen, Screen::Store);
    app.apply(UiInput::Store(store()));
    assert_snapshot!("store", render(&app, 80, 24));
    // v7 (failed) is selected: the store would refuse it, so `f` is not
    // offered and pressing it says why.
    let frame = text(&render(&app, 80, 24));
    assert!(!frame.contains("f flip"), "{frame}");
    assert_eq!(ch(&mut app, 'f'), None);
    assert_eq!(app.overlay, None);
    assert_eq!(
        app.message.as_deref(),
        Some("v7 is failed: only a validated or retired version can go live")
    );
    assert!(text(&render(&app, 80, 24)).contains("» v7 is failed"));
    // v6 is live: nothing to do, and it says so.
    key(&mut app, KeyCode::Down);
    assert_eq!(ch(&mut app, 'f'), None);
    assert_eq!(app.message.as_deref(), Some("v6 is already live"));
    key(&mut app, KeyCode::Down);
    assert!(text(&render(&app, 80, 24)).contains("f roll back"));
    ch(&mut app, 'f');
    assert_eq!(app.overlay, Some(Overlay::ConfirmFlip(5)));
    assert_snapshot!("store_rollback_confirm", render(&app, 80, 24));
    let dialog = text(&render(&app, 80, 24));
    assert!(
        dialog.contains("v5 (retired, 99,000 rows)") && dialog.contains("v6 (live, 100,000"),
        "the dialog names both versions and their rows: {dialog}"
    );
    assert_eq!(ch(&mut app, 'y'), Some(Action::Flip(5)));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Run);
}

#[test]
fn enter_alone_never_flips() {
    let mut app = app_with(finished(false));
    ch(&mut app, 'v');
    app.apply(UiInput::Store(store()));
    for row in 0..3 {
        app.version_selected = row;
        // Enter opens the version and then types an id: never a flip.
        for _ in 0..4 {
            assert_eq!(key(&mut app, KeyCode::Enter), None, "row {row}");
            assert!(
                matches!(app.overlay, Some(Overlay::VersionDetail(_))),
                "Enter opened {:?} on row {row}",
                app.overlay
            );
        }
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.overlay, None);
        // With the dialog open, Enter still does not confirm.
        ch(&mut app, 'f');
        if app.overlay.is_some() {
            for _ in 0..3 {
                assert_eq!(key(&mut app, KeyCode::Enter), None, "row {row}");
            }
            key(&mut app, KeyCode::Esc);
            assert_eq!(app.overlay, None);
        }
        assert_eq!(app.screen, Screen::Store);
    }
    // Nor does Enter confirm a cancel or a quit.
    let mut app = app_with(mid_run());
    ch(&mut app, 'c');
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(app.overlay, Some(Overlay::ConfirmCancel));
    key(&mut app, KeyCode::Esc);
    ch(&mut app, 'q');
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert!(!app.quit);
}

#[test]
fn no_flip_is_offered_while_a_run_goes() {
    let mut app = app_with(mid_run());
    ch(&mut app, 'v');
    app.apply(UiInput::Store(store()));
    app.version_selected = 2;
    assert!(!text(&render(&app, 80, 24)).contains("f roll back"));
    assert_eq!(ch(&mut app, 'f'), None);
    assert_eq!(app.overlay, None);
    assert!(app.message.as_deref().unwrap().contains("a run is going"));
}

#[test]
fn refused_and_no_op_keys_say_so_in_the_status_line() {
    let mut app = app_with(finished(true));
    for c in ['s', 'p', 'c'] {
        assert_eq!(ch(&mut app, c), None);
        assert_eq!(app.message.as_deref(), Some("no run is going"), "{c}");
        assert!(text(&render(&app, 80, 24)).contains("» no run is going"));
    }
    // The next key clears it.
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.message, None);
    // A notice from the controller (a refused flip) shows the same way.
    app.apply(UiInput::Notice(
        "flip to v9 refused: no such version".into(),
    ));
    assert!(text(&render(&app, 80, 24)).contains("» flip to v9 refused"));
    // A backup says where it goes.
    let mut app = app_with(mid_run());
    assert_eq!(ch(&mut app, 's'), Some(Action::Backup(9)));
    assert!(app.message.as_deref().unwrap().contains("chunk 9"));
}

/// The live version as the header, the result box and the store view show it.
fn live_everywhere(app: &App) -> (String, String, String) {
    let mut app = app.clone();
    app.screen = Screen::Run;
    let run = text(&render(&app, 120, 40));
    let header = run
        .lines()
        .next()
        .and_then(|l| l.split("live ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    let result = run
        .lines()
        .find(|l| l.contains("FLIPPED"))
        .map(|l| {
            let l = l.trim_matches(|c: char| c == '│' || c == '"' || c.is_whitespace());
            if let Some(rest) = l.split("; ").nth(1).filter(|r| r.contains("live now")) {
                rest.split_whitespace().next().unwrap_or("?").to_string()
            } else if l.starts_with("NOT FLIPPED") {
                l.split('(')
                    .nth(1)
                    .unwrap_or("?")
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            } else {
                l.split_whitespace().nth(1).unwrap_or("?").to_string()
            }
        })
        .unwrap_or_else(|| "-".into());
    app.screen = Screen::Store;
    let store = text(&render(&app, 120, 40));
    let title = store
        .split("(live ")
        .nth(1)
        .and_then(|l| l.split(')').next())
        .unwrap_or("?")
        .to_string();
    let starred = store
        .lines()
        .find_map(|l| l.split("* ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("none")
        .to_string();
    assert_eq!(title, starred, "store title and its starred row:\n{store}");
    (header, result, title)
}

fn versions(live: u64, rows: &[(u64, &str)]) -> UiInput {
    UiInput::Store(herd::ui::StoreSummary {
        live: Some(live),
        versions: rows
            .iter()
            .map(|(v, status)| herd::ui::VersionRow {
                version: *v,
                status: status.to_string(),
                rows: 100_000,
                model_version: "m".into(),
                created: 1_764_388_800,
                ..Default::default()
            })
            .collect(),
    })
}

#[test]
fn header_result_box_and_store_view_agree_on_the_live_version() {
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    // The store as the run found it: v6 live.
    let mut app = App::new(jobs(), false);
    app.apply(versions(6, &[(6, "live"), (5, "retired")]));
    for e in mid_run() {
        app.apply(UiInput::Run(e));
    }
    assert_eq!(live_everywhere(&app), s("v6", "-", "v6"));

    // Flip: the run's Finished makes v7 live everywhere before the store is
    // read again, and stays so after.
    let mut flipped = app.clone();
    for e in finished(true).into_iter().skip(mid_run().len()) {
        flipped.apply(UiInput::Run(e));
    }
    assert_eq!(live_everywhere(&flipped), s("v7", "v7", "v7"));
    flipped.apply(versions(7, &[(7, "live"), (6, "retired"), (5, "retired")]));
    assert_eq!(live_everywhere(&flipped), s("v7", "v7", "v7"));

    // Rollback to v6: the fresh store read moves every view.
    flipped.apply(versions(6, &[(7, "retired"), (6, "live"), (5, "retired")]));
    assert_eq!(live_everywhere(&flipped), s("v6", "v6", "v6"));

    // Failure: nothing flipped, v6 stays live everywhere.
    let mut failed = app.clone();
    for e in finished(false).into_iter().skip(mid_run().len()) {
        failed.apply(UiInput::Run(e));
    }
    assert_eq!(live_everywhere(&failed), s("v6", "v6", "v6"));

    // Resume: a resumed run of v7 starts with v6 live.
    let mut resumed = failed.clone();
    let mut start = started();
    if let herd::run::Event::Started { resumed: r, .. } = &mut start {
        *r = true;
    }
    resumed.apply(UiInput::Run(start));
    let header = text(&render(&resumed, 120, 40));
    assert!(
        header.lines().next().unwrap().contains("resuming v7"),
        "{header}"
    );
    assert_eq!(live_everywhere(&resumed), s("v6", "-", "v6"));
    for e in finished(true).into_iter().skip(1) {
        resumed.apply(UiInput::Run(e));
    }
    assert_eq!(live_everywhere(&resumed), s("v7", "v7", "v7"));
}

#[test]
fn quit_asks_while_a_run_is_starting() {
    let mut app = App::new(jobs(), false);
    assert!(matches!(
        key(&mut app, KeyCode::Enter),
        Some(Action::Start(_))
    ));
    // No Started event yet: quitting still asks.
    assert_eq!(ch(&mut app, 'q'), None);
    assert_eq!(app.overlay, Some(Overlay::ConfirmQuit));
    let frame = text(&render(&app, 80, 24));
    assert!(frame.contains("jobs/demo.toml is starting"), "{frame}");
    key(&mut app, KeyCode::Esc);
    // A start that failed before it began ends the question and says why.
    app.apply(UiInput::RunEnded {
        code: 2,
        why: Some("jobs/demo.toml:3: bad".into()),
    });
    assert!(!app.busy());
    assert!(app.message.as_deref().unwrap().contains("did not start"));
    assert_eq!(ch(&mut app, 'q'), Some(Action::Quit));
}

#[test]
fn picker_starts_the_selected_job() {
    let mut app = App::new(jobs(), false);
    key(&mut app, KeyCode::Down);
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        Some(Action::Start(PathBuf::from("jobs/nightly.toml")))
    );
    app.apply(UiInput::Run(started()));
    assert_eq!(app.screen, Screen::Run);
}

#[test]
fn key_releases_are_ignored() {
    let mut app = App::new(jobs(), false);
    let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
    release.kind = KeyEventKind::Release;
    assert_eq!(app.handle_key(release), None);
    assert!(!app.quit);
}

#[test]
fn tiny_terminal() {
    let frame = render(&app_with(mid_run()), 10, 3);
    assert_snapshot!("tiny", frame);
}

#[test]
fn no_panic_at_any_size_on_any_view() {
    let mut apps = vec![
        App::new(jobs(), false),
        App::new(vec![], true),
        app_with(mid_run()),
        app_with(finished(false)),
    ];
    let mut help = app_with(mid_run());
    ch(&mut help, '?');
    apps.push(help);
    let mut quit = app_with(mid_run());
    ch(&mut quit, 'q');
    apps.push(quit);
    let mut store_view = app_with(finished(true));
    ch(&mut store_view, 'v');
    apps.push(store_view.clone());
    store_view.apply(UiInput::Store(store()));
    key(&mut store_view, KeyCode::Down);
    key(&mut store_view, KeyCode::Down);
    key(&mut store_view, KeyCode::Enter);
    apps.push(store_view);
    let started_only = app_with(vec![started()]);
    apps.push(started_only);
    let mut terminal = Terminal::new(TestBackend::new(1, 1)).expect("test terminal");
    for app in &apps {
        for w in (0..=200).step_by(7) {
            for h in (0..=60).step_by(5) {
                terminal.backend_mut().resize(w, h);
                terminal
                    .resize(ratatui::layout::Rect::new(0, 0, w, h))
                    .expect("resize");
                terminal.draw(|f| app.draw(f)).expect("draw");
            }
        }
    }
}

#[test]
fn no_color_means_no_colour() {
    let plain = render(&app_with(finished(false)), 160, 48);
    let coloured = {
        let mut app = app_with(finished(false));
        app.colors = true;
        render(&app, 160, 48)
    };
    assert_eq!(coloured_cells(&plain), 0);
    assert!(coloured_cells(&coloured) > 0);
    assert_eq!(
        text(&plain),
        text(&coloured),
        "colour must not change a single glyph"
    );
}

#[test]
fn log_shows_run_and_host_lines_during_the_run_and_wraps_long_ones() {
    let mut app = app_with(mid_run());
    let long = format!("{} END-OF-LONG-LINE", "word ".repeat(40));
    app.apply(UiInput::Run(log(61, "gpu1#0", &long)));
    let texts: Vec<&str> = app.run.log.iter().map(|l| l.text.as_str()).collect();
    for want in [
        "started nightly: building v7, 100,000 rows in 40 chunks on 3 hosts; live v6",
        "gpu1: running on vulkan NVIDIA H200",
        "gpu2: lost: ssh: connection reset",
    ] {
        assert!(texts.contains(&want), "no {want:?} in {texts:#?}");
    }
    let frame = text(&render(&app, 80, 40));
    assert!(
        frame.contains("END-OF-LONG-LINE"),
        "the long line is cut:\n{frame}"
    );
}

#[test]
fn log_keeps_the_last_lines_and_says_how_many_were_dropped() {
    use herd::ui::state::LOG_LINES;
    let mut app = app_with(mid_run());
    let before = app.run.log.len();
    for i in 0..LOG_LINES {
        app.apply(UiInput::Run(log(61, "run", &format!("line {i}"))));
    }
    let dropped = before as u64;
    assert_eq!(app.run.log.len(), LOG_LINES);
    assert_eq!(app.run.log_dropped, dropped);
    assert_eq!(app.run.log.front().unwrap().text, "line 0");
    let frame = text(&render(&app, 120, 40));
    assert!(
        frame.contains(&format!("last 1,000 kept, {dropped} older dropped")),
        "{frame}"
    );
}

#[test]
fn stragglers_panel_defines_peers_and_never_says_none_beside_one() {
    let app = app_with(mid_run());
    // Running at 60 s: rows/s 62.5 (chunk 12), 41.7 (chunk 9), 83.3, 125;
    // the median 72.9, so chunk 9 runs at 0.6x its peers.
    let frame = text(&render(&app, 160, 48));
    assert!(frame.contains("x peers: rows/s ÷ median slot's"), "{frame}");
    assert!(
        frame.contains("! chunk 9 on local#1: ~38s left (0.6x peers)"),
        "{frame}"
    );
    assert!(!frame.contains("no stragglers"), "{frame}");
    // No straggler, a chunk selected: the panel does not read as if the
    // selected chunk were one, nor say "no stragglers" and list one.
    let mut calm = app_with(mid_run());
    let mut s = snapshot(60, 45_000);
    s.stragglers.clear();
    calm.apply(UiInput::Run(herd::run::Event::Progress(s)));
    let frame = text(&render(&calm, 160, 48));
    assert!(frame.contains("no stragglers; selected:"), "{frame}");
    assert!(!frame.contains("! chunk"), "{frame}");
}

#[test]
fn time_axis_labels_are_unique_and_rising_at_any_duration() {
    use herd::ui::tui::time_axis;
    for span_ms in [300u64, 1_000, 5_000, 42_000, 98_500, 3_600_000, 11_000_000] {
        for width in [20usize, 45, 70, 150] {
            let axis = time_axis(std::time::Duration::from_millis(span_ms), width);
            assert_eq!(axis.chars().count(), width);
            let labels: Vec<&str> = axis
                .split('|')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            assert!(
                labels.len() >= 2 || width < 30,
                "{span_ms} ms in {width}: {axis:?}"
            );
            let mut seen = std::collections::HashSet::new();
            assert!(
                labels.iter().all(|l| seen.insert(*l)),
                "repeated label at {span_ms} ms, {width} cells: {axis:?}"
            );
        }
    }
}

#[test]
fn paused_holds_the_last_rate_and_says_paused() {
    let mut app = app_with(mid_run());
    let rate = app.run.rows_per_s().unwrap();
    for now in [70, 90, 150] {
        let mut s = snapshot(60, 45_000);
        s.now = secs(now);
        s.paused = true;
        app.apply(UiInput::Run(herd::run::Event::Progress(s)));
        assert_eq!(app.run.rows_per_s(), Some(rate), "at {now} s");
    }
    let frame = text(&render(&app, 120, 40));
    let header = frame.lines().next().unwrap();
    assert!(
        header.contains("PAUSED") && header.contains("ETA paused"),
        "{header}"
    );
    assert!(
        frame.contains(&format!("{} rows/s", herd::ui::fmt_rate(rate))),
        "{frame}"
    );
    assert!(app.run.log.iter().any(|l| l.text.starts_with("paused")));
}

/// Every view, named, in a state that shows what it is for.
fn every_view() -> Vec<(&'static str, App)> {
    let mut views = vec![
        ("picker", App::new(jobs(), false)),
        ("run_mid", app_with(mid_run())),
        ("run_flipped", app_with(finished(true))),
        ("run_not_flipped", app_with(finished(false))),
    ];
    let mut help = app_with(mid_run());
    ch(&mut help, '?');
    views.push(("help", help));
    let mut quit = app_with(mid_run());
    ch(&mut quit, 'q');
    views.push(("quit", quit));
    let mut cancel = app_with(mid_run());
    ch(&mut cancel, 'c');
    views.push(("cancel", cancel));
    let mut host = app_with(mid_run());
    key(&mut host, KeyCode::Tab);
    key(&mut host, KeyCode::Down);
    key(&mut host, KeyCode::Down);
    key(&mut host, KeyCode::Enter);
    views.push(("host", host));
    let mut store_view = app_with(finished(false));
    ch(&mut store_view, 'v');
    store_view.apply(UiInput::Store(store()));
    views.push(("store", store_view.clone()));
    store_view.version_selected = 2;
    ch(&mut store_view, 'f');
    views.push(("rollback", store_view));
    views
}

#[test]
fn every_view_at_three_sizes() {
    for (name, app) in every_view() {
        for (w, h) in [(80, 24), (120, 40), (200, 50)] {
            assert_snapshot!(format!("{name}_{w}x{h}"), render(&app, w, h));
        }
    }
}

#[test]
fn no_color_changes_no_glyph_in_any_view() {
    for (name, app) in every_view() {
        let mut coloured = app.clone();
        coloured.colors = true;
        for (w, h) in [(80, 24), (120, 40), (200, 50)] {
            let plain = render(&app, w, h);
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
fn at_80x24_the_header_and_every_check_stay() {
    let frame = text(&render(&app_with(mid_run()), 80, 24));
    let top: String = frame.lines().take(3).collect();
    for want in [
        "RUNNING",
        "nightly",
        "45,000 / 100,000 rows",
        "ETA 44s",
        "rows/s",
        "cost $",
    ] {
        assert!(top.contains(want), "no {want:?} in the header:\n{frame}");
    }
    for flipped in [true, false] {
        let frame = text(&render(&app_with(finished(flipped)), 80, 24));
        assert!(frame.contains("DONE"), "{frame}");
        for check in checks(flipped).checks {
            assert!(
                frame.contains(&format!(" {}: ", check.name)),
                "check {} missing at 80x24:\n{frame}",
                check.name
            );
        }
    }
}

#[test]
fn page_home_and_end_keys_move_in_the_log_and_the_tables() {
    let mut app = app_with(mid_run());
    for i in 0..30 {
        app.apply(UiInput::Run(log(61, "run", &format!("line {i}"))));
    }
    let lines = app.run.log.len();
    app.focus = herd::ui::tui::Focus::Log;
    key(&mut app, KeyCode::PageUp);
    assert_eq!(app.log_scroll, herd::ui::tui::PAGE);
    ch(&mut app, 'g');
    assert_eq!(app.log_scroll, lines - 1, "g: the oldest line");
    assert!(text(&render(&app, 80, 40)).contains("started nightly"));
    key(&mut app, KeyCode::PageDown);
    assert_eq!(app.log_scroll, lines - 1 - herd::ui::tui::PAGE);
    ch(&mut app, 'G');
    assert_eq!(app.log_scroll, 0, "G: follow the tail again");
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::End);
    assert_eq!(app.log_scroll, 0);

    let mut app = app_with(finished(false));
    ch(&mut app, 'v');
    app.apply(UiInput::Store(store()));
    key(&mut app, KeyCode::End);
    assert_eq!(app.version_selected, 2);
    ch(&mut app, 'g');
    assert_eq!(app.version_selected, 0);
    key(&mut app, KeyCode::PageDown);
    assert_eq!(app.version_selected, 2);

    let mut app = App::new(jobs(), false);
    ch(&mut app, 'G');
    assert_eq!(app.job_selected, 2);
    key(&mut app, KeyCode::Home);
    assert_eq!(app.job_selected, 0);
}

#[test]
fn enter_on_a_host_shows_its_slots_failures_and_stderr() {
    let mut app = app_with(mid_run());
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, herd::ui::tui::Focus::Hosts);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(app.overlay, Some(Overlay::HostDetail(2)));
    let frame = text(&render(&app, 80, 24));
    for want in [
        "host gpu2",
        "vulkan NVIDIA L4",
        "lost: ssh: connection reset",
        "failed: attempt 12 of chunk 11",
        "gpu2#0: error: device lost",
    ] {
        assert!(frame.contains(want), "no {want:?}:\n{frame}");
    }
    assert!(
        !frame.contains("gpu1#0: "),
        "another host's lines:\n{frame}"
    );
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, None);
}
