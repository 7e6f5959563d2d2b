//! Chaos through the real binary: 20 rounds, each killing the coordinator
//! with SIGKILL at a random moment (seeded) and a worker at another, then
//! finishing with `--resume` (or a fresh run when nothing was begun, or the
//! killed run had already made its version live or validated it) while
//! another worker is killed. Every round must end with a live version equal
//! to a clean run's, within a time bound per command.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{HERD, JobShape, Scratch, text, workers_of};
use herd::splitmix::SplitMix64;
use herd::store::{Status, Store, Value};

const ROUNDS: usize = 20;
const SEED: u64 = 0x000C_4A05;
/// No command of a round may take longer than this.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

fn shape() -> JobShape {
    JobShape {
        users: 3000,
        items: 2000,
        dim: 16,
        slots: 2,
        ..Default::default()
    }
}

fn spawn(s: &Scratch, args: &[&str]) -> Child {
    Command::new(HERD)
        .arg("run")
        .arg("job.toml")
        .args(args)
        .current_dir(s.dir.path())
        .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
        .env_remove(herd::worker::FAULT_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start herd")
}

/// Waits for `child` up to [`COMMAND_LIMIT`], killing a worker of it after
/// `worker_kill` (if it still runs then).
fn finish(mut child: Child, worker_kill: Option<Duration>) -> Output {
    let started = Instant::now();
    let mut worker_kill = worker_kill;
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < COMMAND_LIMIT,
            "a run took longer than {COMMAND_LIMIT:?}"
        );
        if let Some(at) = worker_kill
            && started.elapsed() >= at
            && let Some(&w) = workers_of(child.id()).first()
        {
            kill9(w);
            worker_kill = None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// SIGKILL to `pid`, which may have exited already.
fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn live_contents(s: &Scratch) -> (u64, Vec<(Vec<u8>, Value)>) {
    let store = Store::open_existing(&s.store()).unwrap();
    let live = store.live().unwrap().expect("a live version");
    let mut out = Vec::new();
    store
        .for_each(live, |k, v| {
            out.push((k.to_vec(), v.to_value()));
            true
        })
        .unwrap();
    (live, out)
}

fn statuses(s: &Scratch) -> Vec<(u64, Status)> {
    match Store::open_existing(&s.store()) {
        Ok(store) => store
            .versions()
            .unwrap()
            .into_iter()
            .map(|r| (r.version, r.status))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn twenty_rounds_of_kill_9_and_resume_each_end_equal_to_a_clean_run() {
    let clean = Scratch::new(&shape());
    let out = finish(spawn(&clean, &[]), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_, want) = live_contents(&clean);
    // How long a run takes once the data exists: the span of the kills.
    let started = Instant::now();
    let out = finish(spawn(&clean, &[]), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let clean_run = started.elapsed();

    let s = Scratch::new(&shape());
    std::fs::create_dir_all(s.path("data")).unwrap();
    for f in ["data/users.parquet", "data/two_tower.safetensors"] {
        std::fs::copy(clean.path(f), s.path(f)).unwrap();
    }
    let mut rng = SplitMix64(SEED);
    let span = clean_run.as_millis() as u64 + 200;
    let mut resumed = 0;
    for round in 0..ROUNDS {
        let before = statuses(&s);
        let mut kill_at = Duration::from_millis(rng.in_range(0..span));
        let worker_at = Duration::from_millis(rng.in_range(0..span));
        // Every other round aims inside the version's life: its kill comes
        // a few milliseconds after a new `building` version shows, however
        // long the machine takes to get there.
        let after_begin = Duration::from_millis(rng.in_range(0..20));
        let aim_mid_version = round % 2 == 1;
        if aim_mid_version {
            kill_at = Duration::from_secs(60);
        }
        let mut child = spawn(&s, &[]);
        let t = Instant::now();
        let mut worker_killed = false;
        let mut begun = false;
        while t.elapsed() < kill_at && child.try_wait().unwrap().is_none() {
            if aim_mid_version
                && !begun
                && statuses(&s)
                    .iter()
                    .any(|(v, st)| *st == Status::Building && !before.iter().any(|(b, _)| b == v))
            {
                begun = true;
                kill_at = t.elapsed() + after_begin;
            }
            if !worker_killed
                && t.elapsed() >= worker_at
                && let Some(&w) = workers_of(child.id()).first()
            {
                kill9(w);
                worker_killed = true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        kill9(child.id());
        let _ = child.wait();
        // Workers outlive their coordinator only until they read EOF.

        let after = statuses(&s);
        let building = after
            .iter()
            .any(|(v, st)| *st == Status::Building && !before.iter().any(|(b, _)| b == v));
        let worker_kill = Some(Duration::from_millis(rng.in_range(0..span)));
        let out = if building {
            resumed += 1;
            finish(spawn(&s, &["--resume"]), worker_kill)
        } else {
            // Killed before its version was begun, or after it was
            // validated: a fresh run makes this round's version.
            finish(spawn(&s, &[]), worker_kill)
        };
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round} (kill at {kill_at:?}, building {building}): {}",
            text(&out)
        );
        let (live, got) = live_contents(&s);
        assert!(
            got == want,
            "round {round}: live version {live} differs from a clean run's ({} vs {} entries)",
            got.len(),
            want.len()
        );
    }
    eprintln!("{resumed} of {ROUNDS} rounds resumed a version the kill left unfinished");
    assert!(
        resumed >= ROUNDS / 4,
        "only {resumed} of {ROUNDS} rounds were killed mid-version: the kills miss the run"
    );
}
