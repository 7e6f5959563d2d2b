//! The scheduler's rules, one behaviour per test, driven by hand or through
//! the simulated cluster.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use herd::sched::sim::{self, Scenario, SimHost};
use herd::sched::{Command, Input, Policy, SILENCE_FACTOR, SILENCE_MIN, Scheduler, SlotId};

fn policy(pull: bool, cost_aware: bool, split: bool, speculation: bool, target: u64) -> Policy {
    Policy {
        pull,
        cost_aware,
        split_running: split,
        speculation,
        max_attempts: 4,
        target_chunk_cost: target,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn drain(scheduler: &mut Scheduler) -> Vec<Command> {
    std::iter::from_fn(|| scheduler.poll_command()).collect()
}

fn launches(commands: &[Command]) -> Vec<(u64, u64, SlotId, Range<u64>, bool)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Launch {
                attempt,
                chunk,
                slot,
                rows,
                backup,
            } => Some((*attempt, *chunk, *slot, rows.clone(), *backup)),
            _ => None,
        })
        .collect()
}

fn slot_up(scheduler: &mut Scheduler, now: Duration, slot: u32, host: u32) {
    scheduler.handle(
        now,
        Input::SlotUp {
            slot: SlotId(slot),
            host,
        },
    );
}

/// Drives the scheduler where every attempt on slot `s` takes
/// `seconds_per_chunk[s]` and reports nothing until it finishes; returns the
/// launches and the committed ranges.
fn drive_fixed_durations(
    scheduler: &mut Scheduler,
    seconds_per_chunk: &[f64],
) -> (Vec<Command>, Vec<Range<u64>>) {
    for slot in 0..seconds_per_chunk.len() {
        slot_up(scheduler, Duration::ZERO, slot as u32, slot as u32);
    }
    scheduler.handle_timeout(Duration::ZERO);
    let mut finishing: BTreeMap<(Duration, u64), u64> = BTreeMap::new();
    let mut all = Vec::new();
    let mut commits = Vec::new();
    for _ in 0..10_000 {
        for command in drain(scheduler) {
            match &command {
                Command::Launch { attempt, slot, .. } => {
                    let at = secs(seconds_per_chunk[slot.0 as usize]);
                    finishing.insert((at, *attempt), *attempt);
                }
                Command::Commit { rows, .. } => commits.push(rows.clone()),
                _ => {}
            }
            all.push(command);
        }
        if scheduler.is_finished() {
            return (all, commits);
        }
        let Some(((at, _), attempt)) = finishing.pop_first() else {
            panic!("nothing running and not finished");
        };
        scheduler.handle(at, Input::Finished { attempt });
        // Attempts launched now finish a slot's duration later.
        for command in drain(scheduler) {
            if let Command::Launch { attempt, slot, .. } = &command {
                let done = at + secs(seconds_per_chunk[slot.0 as usize]);
                finishing.insert((done, *attempt), *attempt);
            }
            if let Command::Commit { rows, .. } = &command {
                commits.push(rows.clone());
            }
            all.push(command);
        }
        if scheduler.is_finished() {
            return (all, commits);
        }
    }
    panic!("no end after 10000 steps");
}

fn assert_tiles(mut ranges: Vec<Range<u64>>, rows: u64) {
    ranges.sort_by_key(|r| r.start);
    let mut at = 0;
    for r in &ranges {
        assert_eq!(
            r.start, at,
            "ranges {ranges:?} leave a gap or overlap at row {at}"
        );
        assert!(r.end > r.start, "empty range in {ranges:?}");
        at = r.end;
    }
    assert_eq!(at, rows, "ranges {ranges:?} do not reach row {rows}");
}

#[test]
fn pull_gives_faster_slots_more_chunks() {
    let mut scheduler = Scheduler::new(policy(true, true, false, false, 10), vec![1; 200], &[]);
    let (commands, commits) = drive_fixed_durations(&mut scheduler, &[1.0, 4.0]);
    assert_tiles(commits, 200);
    let per_slot = |s: u32| {
        launches(&commands)
            .iter()
            .filter(|l| l.2 == SlotId(s))
            .count()
    };
    let (fast, slow) = (per_slot(0), per_slot(1));
    assert_eq!(fast + slow, 20);
    assert!(
        fast >= 3 * slow,
        "fast slot ran {fast} chunks, slow slot {slow}"
    );
}

#[test]
fn static_plan_gives_one_equal_chunk_per_slot_known_at_the_first_timeout() {
    let mut scheduler = Scheduler::new(policy(false, false, false, false, 10), vec![1; 10], &[]);
    for slot in 0..3 {
        slot_up(&mut scheduler, Duration::ZERO, slot, 0);
        assert!(
            drain(&mut scheduler).is_empty(),
            "planned before the slots settled"
        );
    }
    assert_eq!(scheduler.poll_timeout(), Some(Duration::ZERO));
    scheduler.handle_timeout(Duration::ZERO);
    let rows: Vec<Range<u64>> = launches(&drain(&mut scheduler))
        .into_iter()
        .map(|l| l.3)
        .collect();
    assert_eq!(rows, vec![0..4, 4..7, 7..10]);
}

#[test]
fn a_split_emits_stop_at_then_launches_covering_exactly_the_rest() {
    let mut scheduler = Scheduler::new(policy(true, true, true, false, 1000), vec![10; 100], &[]);
    slot_up(&mut scheduler, Duration::ZERO, 0, 0);
    let first = launches(&drain(&mut scheduler));
    assert_eq!(first, vec![(0, 0, SlotId(0), 0..100, false)]);
    slot_up(&mut scheduler, Duration::ZERO, 1, 1);
    assert!(
        drain(&mut scheduler).is_empty(),
        "split with no speed known"
    );
    scheduler.handle(
        secs(1.0),
        Input::Progress {
            attempt: 0,
            rows_done: 10,
        },
    );
    scheduler.handle(
        secs(2.0),
        Input::Progress {
            attempt: 0,
            rows_done: 20,
        },
    );
    let commands = drain(&mut scheduler);
    let Some(Command::StopAt { attempt: 0, row }) = commands.first().cloned() else {
        panic!("expected StopAt first, got {commands:?}");
    };
    assert!(row > 20 && row < 100, "split row {row}");
    let rest: Vec<Range<u64>> = launches(&commands[1..]).into_iter().map(|l| l.3).collect();
    assert_eq!(rest.first().map(|r| r.start), Some(row));
    assert_tiles(
        std::iter::once(0..row)
            .chain(rest.iter().cloned())
            .collect(),
        100,
    );
    let snapshot = scheduler.snapshot(secs(2.0));
    assert_eq!(snapshot.splits, 1);
    assert!(
        snapshot
            .attempts
            .iter()
            .any(|a| a.attempt == 0 && a.split && a.rows == (0..row))
    );

    // Freeze further decisions so each finish shows its commit alone.
    scheduler.handle(secs(2.0), Input::Pause(true));

    scheduler.handle(secs(3.0), Input::Finished { attempt: 0 });
    assert_eq!(
        drain(&mut scheduler),
        vec![Command::Commit {
            chunk: 0,
            attempt: 0,
            rows: 0..row
        }]
    );
    scheduler.handle(secs(4.0), Input::Finished { attempt: 1 });
    assert_eq!(
        drain(&mut scheduler),
        vec![
            Command::Commit {
                chunk: 1,
                attempt: 1,
                rows: row..100
            },
            Command::Done
        ]
    );
}

#[test]
fn a_backup_commits_once_and_the_loser_is_cancelled() {
    let mut scheduler = Scheduler::new(policy(true, true, false, true, 1000), vec![10; 50], &[]);
    slot_up(&mut scheduler, Duration::ZERO, 0, 0);
    assert_eq!(launches(&drain(&mut scheduler)).len(), 1);
    scheduler.handle(Duration::ZERO, Input::RequestBackup { chunk: 0 });
    assert!(drain(&mut scheduler).is_empty(), "backup with no free slot");
    slot_up(&mut scheduler, secs(1.0), 1, 1);
    assert_eq!(
        launches(&drain(&mut scheduler)),
        vec![(1, 0, SlotId(1), 0..50, true)]
    );
    scheduler.handle(secs(2.0), Input::Finished { attempt: 1 });
    assert_eq!(
        drain(&mut scheduler),
        vec![
            Command::Commit {
                chunk: 0,
                attempt: 1,
                rows: 0..50
            },
            Command::Cancel { attempt: 0 },
            Command::Done,
        ]
    );
    scheduler.handle(secs(3.0), Input::Finished { attempt: 0 });
    assert!(
        drain(&mut scheduler).is_empty(),
        "a duplicate finish emitted commands"
    );
    assert_eq!(scheduler.snapshot(secs(3.0)).backups, 1);
}

#[test]
fn speculation_backs_up_a_chunk_stuck_on_a_slow_host() {
    // Host 0 (one slot, 10x slower) takes the first chunk; host 1 runs the
    // rest and then backs it up.
    let scenario = Scenario {
        name: "slow-first",
        costs: vec![1_000_000; 20].into(),
        hosts: vec![SimHost::new(100_000.0, 1), SimHost::new(1_000_000.0, 1)],
    };
    let with = sim::run(
        &scenario,
        &policy(true, true, false, true, 4_000_000),
        10_000,
    );
    let without = sim::run(
        &scenario,
        &policy(true, true, false, false, 4_000_000),
        10_000,
    );
    assert_eq!(with.failed, None);
    assert_tiles(with.commits.clone(), 20);
    assert_eq!(with.backups, 1);
    assert!(
        with.makespan.as_secs_f64() < 0.8 * without.makespan.as_secs_f64(),
        "with speculation {:?}, without {:?}",
        with.makespan,
        without.makespan
    );
}

#[test]
fn a_retry_prefers_another_host() {
    let mut scheduler = Scheduler::new(policy(true, true, false, false, 10), vec![10; 2], &[]);
    slot_up(&mut scheduler, Duration::ZERO, 0, 0);
    slot_up(&mut scheduler, Duration::ZERO, 1, 1);
    let first = launches(&drain(&mut scheduler));
    assert_eq!(first.len(), 2);
    let on_slot0 = first
        .iter()
        .find(|l| l.2 == SlotId(0))
        .expect("slot 0 busy")
        .0;
    let on_slot1 = first
        .iter()
        .find(|l| l.2 == SlotId(1))
        .expect("slot 1 busy")
        .0;
    scheduler.handle(
        secs(1.0),
        Input::Failed {
            attempt: on_slot0,
            error: "out of memory".into(),
        },
    );
    assert!(
        launches(&drain(&mut scheduler)).is_empty(),
        "retried on the host it failed on while another host was up"
    );
    scheduler.handle(secs(2.0), Input::Finished { attempt: on_slot1 });
    let retry = launches(&drain(&mut scheduler));
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].2, SlotId(1));
}

#[test]
fn pause_stops_launches_and_running_attempts_still_commit() {
    let mut scheduler = Scheduler::new(policy(true, true, false, false, 10), vec![10; 3], &[]);
    slot_up(&mut scheduler, Duration::ZERO, 0, 0);
    assert_eq!(launches(&drain(&mut scheduler)).len(), 1);
    scheduler.handle(Duration::ZERO, Input::Pause(true));
    slot_up(&mut scheduler, Duration::ZERO, 1, 0);
    scheduler.handle(secs(1.0), Input::Finished { attempt: 0 });
    let commands = drain(&mut scheduler);
    assert_eq!(
        commands,
        vec![Command::Commit {
            chunk: 0,
            attempt: 0,
            rows: 0..1
        }]
    );
    scheduler.handle_timeout(secs(2.0));
    assert!(drain(&mut scheduler).is_empty());
    assert!(scheduler.snapshot(secs(2.0)).paused);
    scheduler.handle(secs(3.0), Input::Pause(false));
    assert_eq!(launches(&drain(&mut scheduler)).len(), 2);
}

#[test]
fn resumed_done_ranges_are_never_launched() {
    let done = [10..30, 50..60];
    for p in [
        policy(false, false, false, false, 50),
        policy(true, false, false, false, 50),
        policy(true, true, true, true, 50),
    ] {
        let mut scheduler = Scheduler::new(p.clone(), vec![5; 100], &done);
        let (commands, commits) = drive_fixed_durations(&mut scheduler, &[1.0, 2.0, 3.0]);
        for (_, _, _, rows, _) in launches(&commands) {
            for d in &done {
                assert!(
                    rows.end <= d.start || rows.start >= d.end,
                    "{p:?}: launched rows {rows:?} overlap done {d:?}"
                );
            }
        }
        assert_tiles(
            commits.into_iter().chain(done.iter().cloned()).collect(),
            100,
        );
        assert_eq!(commands.last(), Some(&Command::Done));
    }
}

#[test]
fn nothing_left_to_do_is_done_at_once() {
    let mut scheduler = Scheduler::new(
        policy(true, true, true, true, 10),
        vec![1; 5],
        &[0..2, 2..5],
    );
    assert_eq!(drain(&mut scheduler), vec![Command::Done]);
    assert!(scheduler.is_finished());
    assert_eq!(scheduler.poll_timeout(), None);
}

#[test]
fn losing_every_host_fails_the_run() {
    let mut scheduler = Scheduler::new(policy(true, true, false, false, 10), vec![10; 4], &[]);
    slot_up(&mut scheduler, Duration::ZERO, 0, 7);
    drain(&mut scheduler);
    scheduler.handle(
        secs(1.0),
        Input::HostLost {
            host: 7,
            reason: "connection reset".into(),
        },
    );
    let commands = drain(&mut scheduler);
    let Some(Command::Fail { chunk: None, error }) = commands.last() else {
        panic!("expected Fail, got {commands:?}");
    };
    assert!(error.contains("no hosts left"), "{error}");
    slot_up(&mut scheduler, secs(2.0), 1, 7);
    assert!(
        drain(&mut scheduler).is_empty(),
        "work after the run failed"
    );
}

#[test]
fn a_lost_host_never_gets_work_again() {
    let mut scheduler = Scheduler::new(policy(true, true, false, false, 10), vec![10; 4], &[]);
    slot_up(&mut scheduler, Duration::ZERO, 0, 0);
    slot_up(&mut scheduler, Duration::ZERO, 1, 1);
    drain(&mut scheduler);
    scheduler.handle(
        secs(1.0),
        Input::HostLost {
            host: 0,
            reason: "gone".into(),
        },
    );
    slot_up(&mut scheduler, secs(1.5), 2, 0);
    for command in drain(&mut scheduler) {
        if let Command::Launch { slot, .. } = command {
            assert_ne!(slot, SlotId(0));
            assert_ne!(slot, SlotId(2));
        }
    }
    let snapshot = scheduler.snapshot(secs(2.0));
    assert!(
        snapshot
            .hosts
            .iter()
            .any(|h| h.host == 0 && h.lost && h.failures == 1)
    );
}

#[test]
fn snapshot_reports_progress_and_a_straggler() {
    let mut scheduler = Scheduler::new(policy(true, true, false, false, 100), vec![10; 40], &[]);
    for slot in 0..4 {
        slot_up(&mut scheduler, Duration::ZERO, slot, slot);
    }
    drain(&mut scheduler);
    // Attempts 0..3 run chunks of 10 rows; attempt 3 is 10x slower.
    for (t, rows) in [(1.0, 2), (2.0, 4)] {
        for attempt in 0..3 {
            scheduler.handle(
                secs(t),
                Input::Progress {
                    attempt,
                    rows_done: rows,
                },
            );
        }
    }
    scheduler.handle(
        secs(2.0),
        Input::Progress {
            attempt: 3,
            rows_done: 1,
        },
    );
    scheduler.handle(
        secs(12.0),
        Input::Progress {
            attempt: 3,
            rows_done: 2,
        },
    );
    scheduler.handle(secs(12.0), Input::Finished { attempt: 0 });
    let snapshot = scheduler.snapshot(secs(12.0));
    assert_eq!(snapshot.rows_total, 40);
    assert_eq!(snapshot.rows_done, 10);
    assert_eq!(snapshot.cost_done, 100);
    assert_eq!(snapshot.chunks_total, 4);
    assert_eq!(snapshot.chunks_done, 1);
    assert!(snapshot.eta.is_some());
    let slow = snapshot
        .attempts
        .iter()
        .find(|a| a.attempt == 3)
        .expect("attempt 3");
    assert!(slow.slowness > 1.5, "slowness {}", slow.slowness);
    assert!(snapshot.stragglers.iter().any(|s| s.attempt == 3));
}

/// Pulling, cost-aware, speculating (no splits): 20 rows of cost 10 in two
/// chunks of 100, attempt 0 on slot 0 (host 0) and 1 on slot 1 (host 1).
fn two_chunks_running_on_two_hosts() -> Scheduler {
    let mut scheduler = Scheduler::new(policy(true, true, false, true, 100), vec![10; 20], &[]);
    slot_up(&mut scheduler, Duration::ZERO, 0, 0);
    slot_up(&mut scheduler, Duration::ZERO, 1, 1);
    assert_eq!(launches(&drain(&mut scheduler)).len(), 2);
    scheduler
}

/// Attempt 0 reports every second, then stops; by [`SILENCE_FACTOR`] x its
/// report interval (at least [`SILENCE_MIN`]) after its last report it is
/// silent, and a backup of its chunk goes to the idle slot, although the
/// LATE test (the backup would not finish in half the time left) refused one
/// while it still reported.
#[test]
fn a_silent_attempt_gets_a_backup_once_it_stops_reporting() {
    let mut scheduler = two_chunks_running_on_two_hosts();
    // Attempt 0 reports 10 cost/s, then falls silent; attempt 1 finishes.
    for (t, rows_done) in [(1.0, 1), (2.0, 2)] {
        scheduler.handle(
            secs(t),
            Input::Progress {
                attempt: 0,
                rows_done,
            },
        );
    }
    scheduler.handle(secs(4.0), Input::Finished { attempt: 1 });
    assert_eq!(drain(&mut scheduler).len(), 1, "only the commit of chunk 1");
    // Its reports came every second, and SILENCE_FACTOR x 1 s is below
    // SILENCE_MIN: silent 5 s after the last.
    const { assert!(SILENCE_FACTOR <= 5.0) };
    assert_eq!(SILENCE_MIN, secs(5.0));
    scheduler.handle_timeout(secs(6.9));
    assert!(launches(&drain(&mut scheduler)).is_empty());
    scheduler.handle_timeout(secs(7.1));
    assert_eq!(
        launches(&drain(&mut scheduler)),
        vec![(2, 0, SlotId(1), 0..10, true)]
    );
}

/// Attempt 0 reports half its chunk at 1 s (50 cost/s: done at 2 s), then
/// runs on past that without a word. It is not silent before 6 s
/// ([`SILENCE_MIN`] after its report), but once it has overrun its predicted
/// finish by more than twice what a backup on the idle fast slot takes, it
/// gets one: the fast slot does not sit idle until it falls silent.
#[test]
fn an_attempt_long_past_its_predicted_finish_gets_a_backup_before_it_falls_silent() {
    let mut scheduler = two_chunks_running_on_two_hosts();
    // Attempt 1 (slot 1) does its 100 in 0.5 s; attempt 0 reports half of
    // its 100 at 1 s, so it should be done at 2 s.
    scheduler.handle(secs(0.5), Input::Finished { attempt: 1 });
    scheduler.handle(
        secs(1.0),
        Input::Progress {
            attempt: 0,
            rows_done: 5,
        },
    );
    drain(&mut scheduler);
    let mut backed_up = None;
    for step in 0..=18 {
        let t = 1.0 + 0.25 * f64::from(step);
        scheduler.handle_timeout(secs(t));
        let launched = launches(&drain(&mut scheduler));
        if !launched.is_empty() {
            assert_eq!(launched, vec![(2, 0, SlotId(1), 0..10, true)], "at {t} s");
            backed_up = Some(t);
            break;
        }
    }
    let t = backed_up.expect("no backup by 5.5 s");
    assert!(t > 2.0, "backed up at {t} s, before its predicted finish");
    assert!(t < 6.0, "backed up at {t} s, only once silent");
}

/// The backup of a silent attempt wins; the silent attempt is cancelled and
/// its slot gets no more work until it comes up again (a retry goes to a
/// host it failed on rather than there).
#[test]
fn a_slot_whose_silent_attempt_lost_is_set_aside_until_it_comes_up_again() {
    let mut scheduler = Scheduler::new(policy(true, true, false, true, 100), vec![10; 30], &[]);
    for slot in 0..3 {
        slot_up(&mut scheduler, Duration::ZERO, slot, slot);
    }
    assert_eq!(launches(&drain(&mut scheduler)).len(), 3);
    for (t, rows_done) in [(1.0, 1), (2.0, 2)] {
        scheduler.handle(
            secs(t),
            Input::Progress {
                attempt: 0,
                rows_done,
            },
        );
    }
    scheduler.handle(secs(4.0), Input::Finished { attempt: 1 });
    drain(&mut scheduler);
    scheduler.handle_timeout(secs(7.1));
    assert_eq!(
        launches(&drain(&mut scheduler)),
        vec![(3, 0, SlotId(1), 0..10, true)]
    );
    let fail = |scheduler: &mut Scheduler, t: f64, attempt: u64| {
        scheduler.handle(
            secs(t),
            Input::Failed {
                attempt,
                error: "out of memory".into(),
            },
        );
    };
    fail(&mut scheduler, 7.5, 2);
    assert!(launches(&drain(&mut scheduler)).is_empty());
    scheduler.handle(secs(8.0), Input::Finished { attempt: 3 });
    let commands = drain(&mut scheduler);
    assert!(
        commands.contains(&Command::Cancel { attempt: 0 }),
        "{commands:?}"
    );
    assert_eq!(
        launches(&commands),
        vec![(4, 2, SlotId(1), 20..30, false)],
        "the retry went to the slot set aside"
    );
    // Failed on hosts 1 and 2, and host 0's only slot is set aside: a host
    // it failed on takes it.
    fail(&mut scheduler, 9.0, 4);
    let retry = launches(&drain(&mut scheduler));
    assert_eq!(retry.len(), 1, "{retry:?}");
    assert_ne!(
        retry[0].2,
        SlotId(0),
        "the retry went to the slot set aside"
    );
    // With slots 1 and 2 gone (the one running it last), nothing runs until
    // slot 0 comes up again.
    let running = retry[0].2.0;
    for slot in [3 - running, running] {
        scheduler.handle(
            secs(9.5),
            Input::SlotDown {
                slot: SlotId(slot),
                reason: "gone".into(),
            },
        );
    }
    assert!(launches(&drain(&mut scheduler)).is_empty());
    slot_up(&mut scheduler, secs(10.0), 0, 0);
    assert_eq!(
        launches(&drain(&mut scheduler)),
        vec![(6, 2, SlotId(0), 20..30, false)],
        "the slot is back once it came up"
    );
}
