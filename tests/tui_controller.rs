//! The TUI's controller without a terminal: actions in, UI inputs out, as
//! the terminal UI drives it. Starting a job runs it and reports the new
//! live version; flipping rolls readers back and says so in the log; the
//! job picker's summary names the job, its model, hosts and rows.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{HERD, JobShape, Scratch};
use herd::run::Event;
use herd::run::controller::{control, job_summary, store_summary};
use herd::ui::tui::{Action, StoreSummary, UiInput};

/// Inputs until `want` matches one (returned), within `limit`.
fn wait_for(
    inputs: &mpsc::Receiver<UiInput>,
    limit: Duration,
    what: &str,
    want: impl Fn(&UiInput) -> bool,
) -> UiInput {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match inputs.recv_timeout(left) {
            Ok(input) if want(&input) => return input,
            Ok(_) => {}
            Err(e) => panic!("no {what} within {limit:?}: {e}"),
        }
    }
}

fn store_of(input: UiInput) -> StoreSummary {
    match input {
        UiInput::Store(s) => s,
        other => panic!("not a store summary: {other:?}"),
    }
}

#[test]
fn the_controller_runs_a_job_flips_and_quits_without_a_terminal() {
    // SAFETY: the only test of this process, before any thread is started.
    unsafe { std::env::set_var(herd::fleet::local::WORKER_EXE_ENV, HERD) };
    let shape = JobShape {
        users: 300,
        ..JobShape::default()
    };
    let s = Scratch::new(&shape);

    let summary = job_summary(&s.job(), None);
    assert_eq!(summary.error, None);
    assert_eq!(
        (summary.name.as_str(), summary.model.as_str()),
        ("test-candidates", "two_tower")
    );
    assert_eq!(summary.hosts, ["local"]);
    assert_eq!(
        summary.rows,
        Some(shape.users),
        "from [generate] before the data exists"
    );
    assert_eq!(store_summary(&s.store()), None, "no store yet");

    let (act_tx, act_rx) = mpsc::channel();
    let (in_tx, in_rx) = mpsc::channel();
    let controller = std::thread::spawn(move || control(act_rx, in_tx, None, None));
    let limit = Duration::from_secs(120);

    // Two runs, each finishing with a flip and a fresh store summary.
    for version in 1..=2u64 {
        act_tx.send(Action::Start(s.job())).unwrap();
        let finished = wait_for(&in_rx, limit, "finished run", |i| {
            matches!(i, UiInput::Run(Event::Finished(_)))
        });
        let UiInput::Run(Event::Finished(report)) = finished else {
            unreachable!()
        };
        assert!(report.flipped, "{:?}", report.error);
        assert_eq!(report.version, version);
        let store = store_of(wait_for(&in_rx, limit, "store summary", |i| {
            matches!(i, UiInput::Store(_))
        }));
        assert_eq!(store.live, Some(version));
    }

    // Roll back to version 1: the log says so and the summary shows it.
    act_tx.send(Action::Flip(1)).unwrap();
    let log = wait_for(
        &in_rx,
        limit,
        "flip log line",
        |i| matches!(i, UiInput::Run(Event::Log { source, .. }) if source == "store"),
    );
    let UiInput::Run(Event::Log { text, .. }) = log else {
        unreachable!()
    };
    assert_eq!(text, format!("v1 is live ({})", s.store().display()));
    let notice = wait_for(&in_rx, limit, "flip notice", |i| {
        matches!(i, UiInput::Notice(_))
    });
    assert_eq!(notice, UiInput::Notice(text));
    let store = store_of(wait_for(&in_rx, limit, "store summary", |i| {
        matches!(i, UiInput::Store(_))
    }));
    assert_eq!(store.live, Some(1));
    let rows: Vec<(u64, &str)> = store
        .versions
        .iter()
        .map(|v| (v.version, v.status.as_str()))
        .collect();
    assert_eq!(rows, [(2, "retired"), (1, "live")]);

    // A refused flip is reported, not acted on.
    act_tx.send(Action::Flip(9)).unwrap();
    let refused = wait_for(
        &in_rx,
        limit,
        "refusal",
        |i| matches!(i, UiInput::Run(Event::Log { text, .. }) if text.contains("refused")),
    );
    drop(refused);

    // Lookups by id, answered off the UI's thread: found in v1 (an
    // integer id), not found, and a version the store does not have.
    let lookup = |version: u64, id: &str| {
        act_tx
            .send(Action::Lookup {
                version,
                id: id.into(),
            })
            .unwrap();
        match wait_for(&in_rx, limit, "lookup answer", |i| {
            matches!(i, UiInput::Lookup(_))
        }) {
            UiInput::Lookup(l) => {
                assert_eq!((l.version, l.id.as_str()), (version, id));
                l.answer
            }
            _ => unreachable!(),
        }
    };
    let found = lookup(1, "7").expect("v1 reads").expect("id 7 is in v1");
    assert_eq!((found.id.as_str(), found.version), ("7", 1));
    assert!(
        matches!(&found.value, herd::store::Value::TopK(pairs) if pairs.len() == shape.top_k),
        "{found:?}"
    );
    assert_eq!(lookup(1, "99999"), Ok(None));
    assert_eq!(lookup(1, "no-such-user"), Ok(None));
    let missing = lookup(9, "7").expect_err("v9 is not in the store");
    assert!(missing.contains('9'), "{missing}");
    // The store view's rows carry what the version detail shows.
    let v1 = store.versions.iter().find(|v| v.version == 1).unwrap();
    assert_eq!(v1.job, "test-candidates");
    assert_eq!(v1.rows_expected, shape.users);
    assert!(v1.validation.as_ref().is_some_and(|r| r.passed), "{v1:?}");

    act_tx.send(Action::Quit).unwrap();
    let ended = controller.join().unwrap();
    assert_eq!(ended.code, 0, "the last run's exit code");
    assert_eq!(ended.quit_note, None, "no run was going at the quit");

    // Quit at once after the start, before the run said anything: the run
    // is cancelled and its version stays resumable (nothing flipped).
    let (ended, store) = quit_when(&s, |_| true);
    let note = ended.quit_note.expect("a note on the interrupted run");
    assert!(note.contains("--resume"), "{note}");
    assert_eq!(store.live, Some(1), "{note}");
    assert_eq!(
        store
            .versions
            .iter()
            .find(|v| v.version == 3)
            .map(|v| v.status.as_str()),
        Some("building"),
        "{note}: {store:?}"
    );

    // Quit once the run validated: its flip is under way and cannot be
    // cancelled. The quit reaches the controller either while the run's
    // task is still going (the note then says the version went live) or
    // just after it ended (no run is going at the quit: no note, as
    // above); the flip happens either way and the store agrees.
    let (ended, store) = quit_when(&s, |i| matches!(i, UiInput::Run(Event::Validated(_))));
    if let Some(note) = &ended.quit_note {
        assert!(
            note.contains("version 4 passed validation and is live"),
            "{note}"
        );
    }
    assert_eq!(ended.code, 0, "{:?}", ended.quit_note);
    assert_eq!(store.live, Some(4), "{:?}", ended.quit_note);
}

/// Starts the job (a new version) in a fresh controller and
/// quits as soon as an input matches `when`; returns how the controller
/// ended and the store afterwards.
fn quit_when(
    s: &Scratch,
    when: impl Fn(&UiInput) -> bool,
) -> (herd::run::controller::Ended, StoreSummary) {
    let (act_tx, act_rx) = mpsc::channel();
    let (in_tx, in_rx) = mpsc::channel();
    let controller = std::thread::spawn(move || control(act_rx, in_tx, None, None));
    act_tx.send(Action::Start(s.job())).unwrap();
    wait_for(&in_rx, Duration::from_secs(120), "the moment to quit", when);
    act_tx.send(Action::Quit).unwrap();
    let ended = controller.join().unwrap();
    (ended, store_summary(&s.store()).expect("a store"))
}
