//! A tmux session for driving terminal programs (`palisade-top`) in end-to-end tests.

use std::process::Command;
use std::time::Duration;

use crate::wait_until;

/// Sessions started by this process (names stay unique when a test starts several).
static SESSIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A tmux session this test created; killed (by its unique name) on drop.
#[derive(Debug)]
pub struct Tmux {
    name: String,
}

impl Tmux {
    /// Starts `command` in a new detached 140x40 session; `None` (after a loud message) when
    /// tmux is missing outside CI.
    ///
    /// # Panics
    /// When tmux is missing in CI or cannot start the session.
    pub fn start(command: &str) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var("CI").is_err(),
                "tmux is required in CI (.ci/run installs it)"
            );
            eprintln!(
                "\n!!!!!!!! SKIPPING: tmux not found; install it to run this test !!!!!!!!\n"
            );
            return None;
        }
        let name = format!(
            "palisade-top-test-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "140",
                "-y",
                "40",
                command,
            ])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        Some(Self { name })
    }

    /// The visible screen, as text.
    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends keys (tmux names: `Enter`, `C-u`…), one at a time, 250 ms apart.
    ///
    /// # Panics
    /// When tmux refuses a key.
    pub fn keys(&self, keys: &[&str]) {
        for key in keys {
            let status = Command::new("tmux")
                .args(["send-keys", "-t", &self.name, key])
                .status()
                .expect("tmux send-keys");
            assert!(status.success());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the screen satisfies `check`; returns it.
    ///
    /// # Panics
    /// When it does not within `timeout` (showing the last screen).
    pub fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            last = self.screen();
            check(&last)
        });
        assert!(ok, "screen never showed {what}:\n{last}");
        last
    }

    /// Whether the session (the program in it) still runs.
    pub fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.name])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}
