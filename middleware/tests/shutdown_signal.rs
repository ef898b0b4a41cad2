//! `shutdown_signal` with real signals, in a child process (this test binary re-run in "child
//! mode"), so a forced exit cannot take the test runner down.
#![cfg(all(feature = "shutdown", unix))]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use palisade::shutdown::{Drain, DrainConfig, DrainPhase, shutdown_signal};

const CHILD_ENV: &str = "PALISADE_SHUTDOWN_SIGNAL_CHILD";

/// In child mode: installs `shutdown_signal`, reports each step on stdout, and waits forever
/// (only the second signal ends the process). Otherwise does nothing.
#[test]
fn child_mode() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let drain = Drain::new(
            DrainConfig::builder()
                .delay(Duration::from_millis(100))
                .build()
                .unwrap(),
        );
        let signal = tokio::spawn(shutdown_signal(drain.clone()));
        // On a current-thread runtime the spawned future runs (and installs its handlers) at
        // the first yield.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        println!("ready");
        drain.started().await;
        println!("draining ready={}", drain.is_ready());
        signal.await.unwrap();
        println!("accept-stopped phase={}", drain.phase());
        assert_eq!(drain.phase(), DrainPhase::Closing);
        std::future::pending::<()>().await;
    });
}

/// Kills the child (by its pid) if the test fails before it exited.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success());
}

#[test]
fn first_signal_drains_and_second_signal_exits() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_mode", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> String {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("child never printed `{what}`"));
            // libtest prints `test child_mode ... ` before the first line of output.
            if let Some(at) = line.find(what) {
                return line[at..].to_owned();
            }
        }
    };

    next("ready");
    kill(pid, "TERM");
    assert_eq!(next("draining"), "draining ready=false");
    assert_eq!(next("accept-stopped"), "accept-stopped phase=closing");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal does not exit"
    );

    kill(pid, "INT");
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "second signal exits with 128 + SIGINT"
    );
}
