//! SIGTERM / SIGINT handling for [`Drain`].

use std::io;

use super::drain::Drain;

/// A pair of termination signal listeners (SIGTERM and SIGINT; Ctrl-C off Unix).
struct Termination {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Termination {
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next signal: its name and the conventional exit code (128 + number).
    async fn recv(&mut self) -> (&'static str, i32) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => ("SIGTERM", 143),
                _ = self.int.recv() => ("SIGINT", 130),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            ("ctrl-c", 130)
        }
    }
}

/// Completes when accept must stop after SIGTERM or SIGINT, driving `drain` through its
/// sequence: the first signal [starts](Drain::start) the drain (readiness fails at once) and the
/// future completes after the configured delay. A second signal logs what is still in flight,
/// [forces](Drain::force) the drain and exits the process (exit code 128 + signal number).
///
/// Pass it to `axum::serve(..).with_graceful_shutdown(..)` and run the server under
/// [`Drain::run`] to bound the wait; see the [module docs](super). Signal handlers are
/// installed when the future is first polled; if they cannot be, the error is logged and the
/// future never completes (the process can still be stopped with SIGKILL).
pub async fn shutdown_signal(drain: Drain) {
    let mut signals = match Termination::new() {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for termination signals");
            return std::future::pending().await;
        }
    };
    let (name, _) = signals.recv().await;
    tracing::info!(signal = name, "termination signal received, draining");
    drain.start();
    let second = drain.clone();
    tokio::spawn(async move {
        let (name, code) = signals.recv().await;
        tracing::warn!(
            signal = name,
            in_flight = second.in_flight(),
            "second termination signal, exiting now"
        );
        second.force();
        std::process::exit(code);
    });
    drain.accept_stopped().await;
}
