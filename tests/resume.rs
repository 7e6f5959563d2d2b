//! Crash-resume through the real binary: a coordinator killed with SIGKILL
//! (or interrupted with SIGINT) mid-run leaves its committed chunks in the
//! store; `herd run JOB --resume` finishes the same version, scores only the
//! rows not committed yet, and the result equals a clean run's.

mod common;

use std::ops::Range;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HERD, JobShape, Scratch, text, workers_of};
use herd::store::{Status, Store, Value};

/// Long enough (several seconds on two cores) to be caught mid-run.
fn big_shape() -> JobShape {
    JobShape {
        users: 20000,
        items: 50000,
        dim: 32,
        slots: 3,
        ..Default::default()
    }
}

/// Starts `herd run job.toml ARGS` in the background, its output to `log`.
fn spawn_run(s: &Scratch, args: &[&str], log: &str) -> Child {
    let log = std::fs::File::create(s.path(log)).unwrap();
    Command::new(HERD)
        .arg("run")
        .arg("job.toml")
        .args(args)
        .current_dir(s.dir.path())
        .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
        .env_remove(herd::worker::FAULT_ENV)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group, as a shell gives a foreground job.
        .process_group(0)
        .spawn()
        .expect("start herd")
}

/// Committed row ranges of `version`, or `None` while there is no store or
/// no such version yet.
fn committed(s: &Scratch, version: u64) -> Option<Vec<Range<u64>>> {
    let store = Store::open_existing(&s.store()).ok()?;
    store.committed_ranges(version).ok()
}

fn rows_in(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// Waits until version 1 has a committed chunk; panics with the run's log
/// when the run ends first or nothing commits within `limit`.
fn wait_for_a_commit(s: &Scratch, child: &mut Child, log: &str, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if committed(s, 1).is_some_and(|r| !r.is_empty()) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before it could be stopped:\n{}",
                std::fs::read_to_string(s.path(log)).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!(
        "no chunk committed within {limit:?}:\n{}",
        std::fs::read_to_string(s.path(log)).unwrap_or_default()
    );
}

/// A process that still runs: exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A scratch folder with the same job and the same data files as `s`.
fn same_job_elsewhere(s: &Scratch, shape: &JobShape) -> Scratch {
    let clean = Scratch::new(shape);
    for f in ["data/users.parquet", "data/two_tower.safetensors"] {
        std::fs::create_dir_all(clean.path("data")).unwrap();
        std::fs::copy(s.path(f), clean.path(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
    clean
}

/// Every (entity, value) of `version`, in key order.
fn contents(s: &Scratch, version: u64) -> Vec<(Vec<u8>, Value)> {
    let store = Store::open_existing(&s.store()).unwrap();
    let mut out = Vec::new();
    store
        .for_each(version, |k, v| {
            out.push((k.to_vec(), v.to_value()));
            true
        })
        .unwrap();
    out
}

fn report(s: &Scratch) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(s.path("report.json")).expect("report written"))
        .expect("report is JSON")
}

/// Runs `--resume` after a stopped run and checks it finished version 1,
/// scoring exactly the rows that were not committed; returns how many rows
/// were committed before.
fn resume_and_check(s: &Scratch, total: u64) -> u64 {
    let before = committed(s, 1).expect("version 1 exists");
    let rows_before = rows_in(&before);
    assert!(
        rows_before > 0 && rows_before < total,
        "{rows_before} of {total} rows committed before resuming: the run was not stopped mid-way"
    );
    let out = Command::new(HERD)
        .args(["run", "job.toml", "--resume", "--report", "report.json"])
        .current_dir(s.dir.path())
        .env_remove(herd::run::TEST_SLOW_SLOT_ENV)
        .env_remove(herd::worker::FAULT_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming version 1"), "{stderr}");

    let r = report(s);
    assert_eq!(r["version"], 1, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert_eq!(r["rows"], total, "{r}");
    let scored: u64 = r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(
        scored,
        total - rows_before,
        "the resumed run should commit only the rows not committed before: {r}"
    );
    // No attempt of the resumed run touched a range committed before.
    for a in r["timeline"].as_array().unwrap() {
        let rows = a["rows"][0].as_u64().unwrap()..a["rows"][1].as_u64().unwrap();
        assert!(
            before
                .iter()
                .all(|b| b.end <= rows.start || rows.end <= b.start),
            "attempt {a} re-ran committed rows {before:?}"
        );
    }

    let store = Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.live().unwrap(), Some(1));
    assert_eq!(
        store.versions().unwrap().len(),
        1,
        "a new version was begun"
    );
    assert_eq!(store.len(1).unwrap(), total);
    rows_before
}

#[test]
fn after_kill_9_of_the_coordinator_resume_finishes_the_same_version_like_a_clean_run() {
    let shape = big_shape();
    let s = Scratch::new(&shape);
    let mut child = spawn_run(&s, &[], "killed.log");
    wait_for_a_commit(&s, &mut child, "killed.log", Duration::from_secs(120));
    let workers = workers_of(child.id());
    assert!(!workers.is_empty(), "no worker under the coordinator");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    child.wait().unwrap();

    // Orphaned workers notice that their coordinator is gone and exit.
    let until = Instant::now() + Duration::from_secs(10);
    while workers.iter().any(|&w| alive(w)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = workers.iter().copied().filter(|&w| alive(w)).collect();
    for &w in &left {
        unsafe {
            libc::kill(w as i32, libc::SIGKILL);
        }
    }
    assert!(
        left.is_empty(),
        "workers {left:?} outlived their coordinator by 10 s"
    );

    {
        let store = Store::open_existing(&s.store()).unwrap();
        assert_eq!(store.live().unwrap(), None, "a killed run went live");
        assert_eq!(store.record(1).unwrap().status, Status::Building);
    }
    resume_and_check(&s, shape.users);

    let clean = same_job_elsewhere(&s, &shape);
    let out = clean.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let resumed = contents(&s, 1);
    let fresh = contents(&clean, 1);
    assert_eq!(resumed.len(), shape.users as usize);
    assert_eq!(fresh.len(), shape.users as usize);
    for ((rk, rv), (fk, fv)) in resumed.iter().zip(&fresh) {
        assert_eq!(rk, fk, "the two runs stored different entities");
        assert_eq!(
            rv,
            fv,
            "entity {:?}: resumed and clean runs differ",
            EntityBytes(rk)
        );
    }
}

/// Starts a run (its log in interrupted.log) and, once a chunk is
/// committed, sends SIGINT to its process group as Ctrl-C at a terminal
/// does; returns how it exited.
fn interrupt_a_run(s: &Scratch) -> std::process::ExitStatus {
    let mut child = spawn_run(s, &[], "interrupted.log");
    wait_for_a_commit(s, &mut child, "interrupted.log", Duration::from_secs(120));
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGINT);
    }
    child.wait().unwrap()
}

/// Ctrl-C at a terminal: SIGINT goes to the whole foreground process group.
#[test]
fn sigint_mid_run_exits_1_naming_resume_and_resume_completes() {
    let shape = big_shape();
    let s = Scratch::new(&shape);
    let status = interrupt_a_run(&s);
    let log = std::fs::read_to_string(s.path("interrupted.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    assert!(log.contains("--resume"), "{log}");
    {
        let store = Store::open_existing(&s.store()).unwrap();
        assert_eq!(store.live().unwrap(), None, "an interrupted run went live");
    }
    resume_and_check(&s, shape.users);
}

/// A version left unfinished while a later run went live is not resumed:
/// flipping it would put older predictions in front of newer ones.
#[test]
fn an_unfinished_version_older_than_the_live_one_is_not_resumed() {
    let shape = big_shape();
    let s = Scratch::new(&shape);
    assert_eq!(interrupt_a_run(&s).code(), Some(1));
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = s.herd(&["run", "job.toml", "--resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "version 1 of job 'test-candidates' was begun before version 2, which is live now"
        ),
        "{}",
        text(&out)
    );
    let store = Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.live().unwrap(), Some(2));
    assert_eq!(store.record(1).unwrap().status, Status::Building);
}

/// Shows an entity key as its integer id.
struct EntityBytes<'a>(&'a [u8]);

impl std::fmt::Debug for EntityBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match <[u8; 8]>::try_from(self.0) {
            Ok(b) => write!(f, "{}", u64::from_be_bytes(b)),
            Err(_) => write!(f, "{}", String::from_utf8_lossy(self.0)),
        }
    }
}
