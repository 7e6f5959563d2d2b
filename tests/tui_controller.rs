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
    assert!(text.contains("to version 1"), "{text}");
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

    act_tx.send(Action::Quit).unwrap();
    assert_eq!(controller.join().unwrap(), 0, "the last run's exit code");
}
