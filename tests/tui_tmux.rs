//! The real binary in a real terminal: tmux runs `herd tui JOB`, keys go in
//! with send-keys and the screen comes back with capture-pane.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{HERD, JobShape, Scratch};

/// Tmux servers started by this process, for unique socket names.
static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &std::path::Path, command: &str) -> Tmux {
        let have = Command::new("tmux").arg("-V").output();
        assert!(
            have.is_ok_and(|o| o.status.success()),
            "tmux is missing: apt-get install -y tmux"
        );
        let t = Tmux {
            // One server per test: tests run in parallel in one process.
            socket: format!(
                "herd-test-{}-{}",
                std::process::id(),
                SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        let ok = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "new-session",
                "-d",
                "-s",
                "herd",
                "-x",
                "80",
                "-y",
                "24",
                "-c",
            ])
            .arg(dir)
            .arg(command)
            .env_remove("NO_COLOR")
            .status()
            .unwrap();
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "herd"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Whether the program in the pane has asked for mouse reports.
    fn mouse_on(&self) -> bool {
        let o = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "display-message",
                "-p",
                "-t",
                "herd",
                "#{mouse_any_flag}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim() == "1"
    }

    /// The process id of the pane's program.
    fn pane_pid(&self) -> u32 {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "display-message", "-p", "-t", "herd"])
            .arg("#{pane_pid}")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("pane_pid {text:?}"))
    }

    fn keys(&self, keys: &str) {
        Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "herd", keys])
            .status()
            .unwrap();
    }

    /// Waits until the screen no longer shows `text`.
    fn wait_without(&self, text: &str, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let s = self.screen();
            if !s.contains(text) {
                return;
            }
            assert!(
                Instant::now() < until,
                "screen still shows {text:?}; last screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the screen shows `text`; returns that screen.
    fn wait_for(&self, text: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            assert!(
                Instant::now() < until,
                "screen never showed {text:?}; last screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The whole visit of a user at 80x24: pick a job, watch it run, open a
/// host, filter the log, then in the store open a version, look an id up
/// (found and not found), roll back with `y`, quit; the terminal comes back
/// as it was, mouse reporting off.
#[test]
fn a_visit_at_80x24_from_the_picker_to_a_rollback_and_back_to_the_shell() {
    let s = Scratch::new(&JobShape::default());
    let t = Tmux::start(
        s.dir.path(),
        &format!("{HERD} tui job.toml; echo HERD-EXITED-$?; sleep 120"),
    );
    let picker = t.wait_for("test-candidates", Duration::from_secs(30));
    assert!(picker.contains("two_tower"), "{picker}");
    assert!(t.mouse_on(), "the UI asks for mouse reports");
    t.keys("Enter");
    let done = t.wait_for("v1 is live", Duration::from_secs(120));
    assert!(done.contains("FLIPPED"), "{done}");
    assert!(
        done.contains("DONE"),
        "the state stays on the header:\n{done}"
    );
    assert!(done.contains("local#0"), "no lanes:\n{done}");
    assert!(done.contains("600 / 600 rows"), "{done}");

    // A second run: v2 goes live, and header and store view agree.
    t.keys("Escape");
    t.wait_for("pick a job", Duration::from_secs(10));
    t.keys("Enter");
    let second = t.wait_for("v2 is live", Duration::from_secs(120));
    assert!(second.contains("live v2"), "header:\n{second}");

    // The host detail: Tab to the hosts, Enter on the selected one.
    t.keys("Tab");
    t.keys("Enter");
    let host = t.wait_for("host local", Duration::from_secs(10));
    assert!(host.contains("local#0:"), "its slots:\n{host}");
    // A key sent right behind Escape could reach the UI in the same read
    // and be taken as Alt+key: wait for the window to close first.
    t.keys("Escape");
    t.wait_without("host local", Duration::from_secs(10));

    // The log, filtered: only the matching lines, and how many.
    t.keys("Tab");
    t.keys("/");
    t.keys("finished");
    let typing = t.wait_for("/finished▏", Duration::from_secs(10));
    assert!(typing.contains("match"), "{typing}");
    t.keys("Enter");
    let filtered = t.wait_for("log /finished: 1 of", Duration::from_secs(10));
    assert!(filtered.contains("finished: v2 is live"), "{filtered}");
    assert!(!filtered.contains("validation passed"), "{filtered}");
    t.keys("Escape");
    t.wait_without("log /finished", Duration::from_secs(10));

    t.keys("v");
    let store = t.wait_for("store: versions (live v2)", Duration::from_secs(10));
    assert!(store.contains("* v2"), "{store}");
    // Down to v1; Enter opens it, never flips.
    t.keys("Down");
    t.keys("Enter");
    let detail = t.wait_for("validation: passed", Duration::from_secs(10));
    assert!(detail.contains("job test-candidates"), "{detail}");
    assert!(
        detail.contains("rows 600 committed of 600 expected"),
        "{detail}"
    );
    // Look an id up, then one that is not there.
    t.keys("Enter");
    t.keys("7");
    t.keys("Enter");
    t.wait_for("FOUND: id 7 in v1", Duration::from_secs(10));
    // The top-K runs past the window at 80x24: End scrolls to it.
    t.keys("End");
    let found = t.wait_for("10. item", Duration::from_secs(10));
    assert!(
        found.contains("(↑↓ PgUp PgDn)"),
        "the window says it scrolls:\n{found}"
    );
    t.keys("i");
    t.keys("BSpace");
    t.keys("99999");
    t.keys("Enter");
    t.wait_for(
        "NOT FOUND: v1 has no prediction for id '99999'",
        Duration::from_secs(10),
    );
    t.keys("Escape");
    t.wait_for("Enter open", Duration::from_secs(10));
    t.keys("f");
    let dialog = t.wait_for("roll back?", Duration::from_secs(10));
    assert!(dialog.contains("600 rows"), "{dialog}");
    // Enter in the dialog does nothing; y rolls back.
    t.keys("Enter");
    t.wait_for("press y to go ahead", Duration::from_secs(10));
    t.keys("y");
    let rolled = t.wait_for("store: versions (live v1)", Duration::from_secs(20));
    assert!(rolled.contains("* v1"), "{rolled}");

    t.keys("q");
    let after = t.wait_for("HERD-EXITED-0", Duration::from_secs(20));
    // Back on the normal screen: nothing of the UI is left drawn.
    assert!(
        !after.contains("store: versions") && !after.contains("timeline"),
        "terminal not restored:\n{after}"
    );
    assert!(!t.mouse_on(), "mouse reporting left on after the UI quit");
}

/// A terminal that goes away after a run (the window closed, the ssh
/// session dropped) takes the TUI with it: no process left behind spinning
/// on a hung-up terminal.
#[test]
fn the_tui_exits_when_its_terminal_hangs_up_after_a_run() {
    let s = Scratch::new(&JobShape::default());
    let (t, pid) = after_a_run(&s);
    drop(t);
    wait_gone(pid, "its terminal hung up");
}

/// `kill PID` after a run ends the TUI (the run's signal handlers, which
/// stop a run resumably, stay registered for the process's life).
#[test]
fn the_tui_exits_on_sigterm_after_a_run() {
    let s = Scratch::new(&JobShape::default());
    let (_t, pid) = after_a_run(&s);
    // SAFETY: a plain kill(2) of the pane's process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_gone(pid, "SIGTERM");
}

/// `herd tui` (the pane's process itself) after a run of the job flipped
/// v1: its tmux and its process id.
fn after_a_run(s: &Scratch) -> (Tmux, u32) {
    let t = Tmux::start(s.dir.path(), &format!("exec {HERD} tui job.toml"));
    t.wait_for("test-candidates", Duration::from_secs(30));
    let pid = t.pane_pid();
    t.keys("Enter");
    t.wait_for("v1 is live", Duration::from_secs(120));
    (t, pid)
}

/// Waits up to 10 s for process `pid` to end (or be a zombie).
fn wait_gone(pid: u32, after: &str) {
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.split_whitespace().nth(2) == Some("Z"))
    };
    let until = Instant::now() + Duration::from_secs(10);
    while !gone(pid) {
        if Instant::now() >= until {
            // SAFETY: a plain kill(2), so no process is left spinning.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("herd tui (pid {pid}) still runs 10 s after {after}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
