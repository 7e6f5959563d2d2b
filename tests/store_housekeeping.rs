//! Store housekeeping through the real binary: `herd store drop`, gc of
//! abandoned `building` and `failed` versions, the run lock (one coordinator
//! per store, a dead one's lock taken over), stale reader slots cleared at
//! open, the format marker, version numbers never reused, and a full disk.
//!
//! Some cases edit the store with Python's standard `lmdb` package (as
//! another program, or a crash, would leave it) and the disk-full case
//! mounts a small tmpfs, which needs root.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use herd::store::{NewVersion, Status, Store};

fn small_job() -> Scratch {
    Scratch::new(&JobShape {
        users: 200,
        items: 400,
        dim: 8,
        ..JobShape::default()
    })
}

fn run_job(s: &Scratch) {
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is needed by this test: install python3 and `pip install lmdb`");
    assert!(
        out.status.success(),
        "python failed (the `lmdb` package is needed: `pip install lmdb`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn versions(s: &Scratch) -> Vec<(u64, String)> {
    let v = json(&s.herd(&["store", "versions", "--json", "--store", "store"]));
    v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn new_version(job: &str, created: u64) -> NewVersion {
    NewVersion {
        job: job.into(),
        model_version: "m".into(),
        model_kind: "two_tower".into(),
        rows: 10,
        ttl_secs: 60,
        fingerprint: "f".into(),
        created,
        hosts: vec![],
    }
}

#[test]
fn drop_refuses_the_live_and_previous_versions_and_drops_others() {
    let s = small_job();
    for _ in 0..3 {
        run_job(&s);
    }
    let live = s.herd(&["store", "drop", "3"]);
    assert_eq!(live.status.code(), Some(1), "{}", text(&live));
    assert!(
        text(&live).contains("live version is never dropped"),
        "{}",
        text(&live)
    );
    let previous = s.herd(&["store", "drop", "2"]);
    assert_eq!(previous.status.code(), Some(1), "{}", text(&previous));
    assert!(text(&previous).contains("rollback"), "{}", text(&previous));
    let missing = s.herd(&["store", "drop", "9"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains("no version 9"),
        "{}",
        text(&missing)
    );

    let ok = s.herd(&["store", "drop", "1"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let left: Vec<u64> = versions(&s).into_iter().map(|(v, _)| v).collect();
    assert_eq!(left, vec![3, 2]);
}

#[test]
fn gc_reclaims_old_building_and_failed_versions_no_coordinator_owns() {
    let s = small_job();
    run_job(&s);
    {
        let store = Store::open_existing(&s.store()).unwrap();
        let two_days_ago = now() - 2 * 86_400;
        let stale = store
            .begin_version(new_version("crashed", two_days_ago))
            .unwrap();
        let failed = store
            .begin_version(new_version("failed", two_days_ago))
            .unwrap();
        store
            .update_record(failed, |r| r.status = Status::Failed)
            .unwrap();
        let fresh = store.begin_version(new_version("running", now())).unwrap();
        assert_eq!((stale, failed, fresh), (2, 3, 4));

        // While a coordinator holds the store, its building versions stay.
        let lock = store.lock_run().unwrap();
        let out = s.herd(&["store", "gc", "--keep", "10", "--grace", "1d"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains("dropped versions [3]"),
            "{}",
            text(&out)
        );
        drop(lock);
    }
    let out = s.herd(&["store", "gc", "--keep", "10", "--grace", "1d"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("dropped versions [2]"),
        "{}",
        text(&out)
    );
    assert_eq!(
        versions(&s),
        vec![(4, "building".to_string()), (1, "live".to_string())]
    );
    // `drop` takes a building version at once when no coordinator runs.
    let out = s.herd(&["store", "drop", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_second_coordinator_is_refused_and_a_dead_ones_lock_is_taken_over() {
    let s = Scratch::new(&JobShape {
        slots: 1,
        ..JobShape::default()
    });
    let log = std::fs::File::create(s.path("first.log")).unwrap();
    let mut first = Command::new(HERD)
        .args(["run", "job.toml"])
        .current_dir(s.dir.path())
        .env(herd::run::TEST_SLOW_SLOT_ENV, "0:400")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let lock_file = s.store().join(herd::store::LOCK_FILE);
    let mine = format!("pid {} ", first.id());
    let until = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&lock_file).is_ok_and(|t| t.contains(&mine)) {
        assert!(first.try_wait().unwrap().is_none(), "first run ended early");
        assert!(Instant::now() < until, "the first run never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = s.herd(&["run", "job.toml"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another herd run"), "{err}");
    assert!(
        err.contains(mine.trim()),
        "the holder's pid is not named: {err}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(err.contains(&format!("host {}", host.trim())), "{err}");
    assert!(
        first.try_wait().unwrap().is_none(),
        "the second run stopped the first"
    );

    // SAFETY: signals the first run's process group (it and its workers).
    unsafe { libc::kill(-(first.id() as i32), libc::SIGKILL) };
    first.wait().unwrap();
    let resumed = s.herd(&["run", "job.toml", "--resume"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(versions(&s)[0], (1, "live".to_string()));
}

#[test]
fn reader_slots_of_dead_processes_are_cleared_when_herd_opens_the_store() {
    let s = small_job();
    run_job(&s);
    let store = s.store();
    // A live process keeps the environment open (so LMDB does not reset the
    // reader table for the next opener), and prints the table on request.
    let mut watcher = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, lmdb\n\
             env = lmdb.open(sys.argv[1], readonly=True, max_dbs=2)\n\
             print('open', flush=True)\n\
             for line in sys.stdin:\n    print(repr(env.readers()), flush=True)\n",
        )
        .arg(&store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with the `lmdb` package");
    let mut ask = watcher.stdin.take().unwrap();
    let mut answers = BufReader::new(watcher.stdout.take().unwrap());
    let mut opened = String::new();
    answers.read_line(&mut opened).unwrap();
    assert_eq!(opened.trim(), "open");
    let mut readers = || {
        writeln!(ask, "?").unwrap();
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        line
    };
    // A reader dies inside its read transaction.
    let mut dying = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, lmdb\n\
             env = lmdb.open(sys.argv[1], readonly=True, max_dbs=2)\n\
             txn = env.begin()\n\
             print('holding', flush=True)\n\
             sys.stdin.readline()\n",
        )
        .arg(&store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(dying.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "holding");
    let pid = dying.id();
    dying.kill().unwrap();
    dying.wait().unwrap();
    let has_pid = |table: &str| {
        table
            .split("\\n")
            .any(|row| row.split_whitespace().next() == Some(&pid.to_string()))
    };
    let before = readers();
    assert!(
        has_pid(&before),
        "the dead reader's slot is not there: {before}"
    );

    let out = s.herd(&["store", "versions"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = readers();
    assert!(
        !has_pid(&after),
        "herd left the dead reader's slot: {after}"
    );
    drop(ask);
    watcher.wait().unwrap();
}

#[test]
fn a_store_marked_by_a_newer_herd_is_refused_naming_that_herd() {
    let s = small_job();
    run_job(&s);
    python(
        "import sys, struct, lmdb\n\
         env = lmdb.open(sys.argv[1], max_dbs=4)\n\
         meta = env.open_db(b'meta')\n\
         with env.begin(write=True) as txn:\n\
         \x20   assert struct.unpack('>I', txn.get(b'format', db=meta))[0] == 1\n\
         \x20   txn.put(b'format', struct.pack('>I', 7), db=meta)\n\
         \x20   txn.put(b'format/written_by', b'herd 9.1.0', db=meta)\n",
        &[s.store().to_str().unwrap()],
    );
    for args in [
        vec!["store", "versions"],
        vec!["store", "get", "7"],
        vec!["run", "job.toml"],
    ] {
        let out = s.herd(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("format 7, written by herd 9.1.0") && err.contains("use a newer herd"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_version_number_is_never_reused_when_next_went_back() {
    let s = small_job();
    run_job(&s);
    // As if a crash had undone the `next` counter but not the record.
    python(
        "import sys, struct, lmdb\n\
         env = lmdb.open(sys.argv[1], max_dbs=4)\n\
         meta = env.open_db(b'meta')\n\
         with env.begin(write=True) as txn:\n\
         \x20   txn.put(b'next', struct.pack('>Q', 1), db=meta)\n",
        &[s.store().to_str().unwrap()],
    );
    run_job(&s);
    assert_eq!(
        versions(&s),
        vec![(2, "live".to_string()), (1, "retired".to_string())]
    );
}

/// A tmpfs mounted for the life of the value.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill the disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_reported_as_such_and_live_stays_readable() {
    let s = small_job();
    let _fs = Tmpfs::mount(&s.store(), 2 << 20);
    run_job(&s);
    let before = json(&s.herd(&["store", "get", "7", "--json"]));
    // Fill what is left of the file system.
    let mut filler = std::fs::File::create(s.store().join("filler")).unwrap();
    let block = vec![1u8; 4096];
    while filler.write_all(&block).is_ok() {}
    drop(filler);

    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("disk full"), "{}", text(&out));
    let after = json(&s.herd(&["store", "get", "7", "--json"]));
    assert_eq!(before, after, "the live version changed after a failed run");
    let listed = versions(&s);
    assert!(listed.contains(&(1, "live".to_string())), "{listed:?}");

    // With room again, `drop` reclaims the version the full disk broke.
    std::fs::remove_file(s.store().join("filler")).unwrap();
    let broken: Vec<u64> = listed.iter().map(|(v, _)| *v).filter(|&v| v > 1).collect();
    for v in &broken {
        let out = s.herd(&["store", "drop", &v.to_string()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    run_job(&s);
    let newest = versions(&s)[0].clone();
    assert_eq!(newest, (broken.len() as u64 + 2, "live".to_string()));
}
