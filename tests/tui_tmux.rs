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
                "100",
                "-y",
                "32",
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
fn the_tui_runs_the_demo_job_shows_lanes_and_the_flip_and_restores_the_terminal() {
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
        done.contains("local#0") && done.contains("local#1"),
        "no lane per slot:\n{done}"
    );
    assert!(done.contains("timeline"), "{done}");
    assert!(done.contains("600 / 600 rows"), "{done}");

    t.keys("v");
    let store = t.wait_for("store: versions", Duration::from_secs(10));
    assert!(store.contains("live"), "{store}");

    t.keys("q");
    let after = t.wait_for("HERD-EXITED-0", Duration::from_secs(20));
    // Back on the normal screen: nothing of the UI is left drawn.
    assert!(
        !after.contains("store: versions") && !after.contains("timeline"),
        "terminal not restored:\n{after}"
    );
}
