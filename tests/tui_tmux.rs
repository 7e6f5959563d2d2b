//! The real binary in a real terminal: tmux runs `herd tui JOB`, keys go in
//! with send-keys and the screen comes back with capture-pane.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{HERD, JobShape, Scratch};

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
            socket: format!("herd-test-{}", std::process::id()),
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

    fn keys(&self, keys: &str) {
        Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "herd", keys])
            .status()
            .unwrap();
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

#[test]
fn a_visit_at_80x24_runs_twice_rolls_back_with_y_and_restores_the_terminal() {
    let s = Scratch::new(&JobShape::default());
    let t = Tmux::start(
        s.dir.path(),
        &format!("{HERD} tui job.toml; echo HERD-EXITED-$?; sleep 120"),
    );
    let picker = t.wait_for("test-candidates", Duration::from_secs(30));
    assert!(picker.contains("two_tower"), "{picker}");
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

    t.keys("v");
    let store = t.wait_for("store: versions (live v2)", Duration::from_secs(10));
    assert!(store.contains("* v2"), "{store}");
    // Down to v1; Enter alone never flips: it says what does.
    t.keys("Down");
    t.keys("Enter");
    t.wait_for("Enter does not flip", Duration::from_secs(10));
    t.keys("f");
    let dialog = t.wait_for("roll back?", Duration::from_secs(10));
    assert!(dialog.contains("600 rows"), "{dialog}");
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
}
