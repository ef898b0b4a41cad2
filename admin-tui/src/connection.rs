//! The connection task: fetches a snapshot, follows the event stream (or polls the snapshot
//! when the server has no stream), and reconnects with exponential backoff, reporting every
//! step as a [`ConnEvent`] so the dashboard can show whether it is live, reconnecting, and why.
//!
//! It never gives up: it stops only when the receiving side of its channel is dropped.

use std::time::Duration;

use palisade::control::model::Snapshot;
use tokio::sync::mpsc;

use crate::client::{AdminClient, ClientError, is_stream_unsupported};

/// How snapshots arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events from `/admin/v1/stream`.
    Stream,
    /// Periodic `GET /admin/v1/snapshot` (the server has no stream).
    Polling,
}

impl Transport {
    /// `stream` or `polling`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Polling => "polling",
        }
    }
}

/// What the connection task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnEvent {
    /// A connection attempt starts (`attempt` 0 is the first after a success).
    Connecting {
        /// Failed attempts since the last success.
        attempt: u32,
    },
    /// Snapshots flow.
    Connected {
        /// How.
        transport: Transport,
    },
    /// A new snapshot.
    Snapshot(Box<Snapshot>),
    /// The connection failed or broke; the next attempt comes after `retry_in`.
    Disconnected {
        /// Why.
        error: ClientError,
        /// Failed attempts in a row, including this one.
        attempt: u32,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// Commands to the connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Skip the backoff wait (or drop the current connection) and connect again now.
    ReconnectNow,
}

/// Exponential backoff with a cap and proportional jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Up to this fraction of the delay is removed at random (0 = deterministic), so many
    /// dashboards do not reconnect in lockstep.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after `attempt` failures in a row (`attempt >= 1`), before jitter:
    /// `initial * 2^(attempt-1)`, capped at `max`.
    ///
    /// ```
    /// use palisade_top::connection::Backoff;
    /// use std::time::Duration;
    /// let b = Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(5), jitter: 0.0 };
    /// let delays: Vec<_> = (1..=6).map(|a| b.base_delay(a).as_millis()).collect();
    /// assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
    /// ```
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        self.initial.saturating_mul(1 << exp).min(self.max)
    }

    /// The delay with jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 - jitter * fastrand::f64())
    }
}

/// Connection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionConfig {
    /// Snapshot period when polling.
    pub poll_interval: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
        }
    }
}

/// Why a live session ended.
enum End {
    Failed(ClientError),
    Reconnect,
    Closed,
}

/// Runs the connection until `events` is closed.
pub async fn run(
    client: AdminClient,
    config: ConnectionConfig,
    events: mpsc::Sender<ConnEvent>,
    mut control: mpsc::Receiver<Control>,
) {
    let mut attempt: u32 = 0;
    let mut last_seq: Option<u64> = None;
    loop {
        if events
            .send(ConnEvent::Connecting { attempt })
            .await
            .is_err()
        {
            return;
        }
        let error = match session(
            &client,
            &config,
            &events,
            &mut control,
            &mut last_seq,
            &mut attempt,
        )
        .await
        {
            End::Closed => return,
            End::Reconnect => {
                attempt = 0;
                continue;
            }
            End::Failed(e) => e,
        };
        attempt = attempt.saturating_add(1);
        let retry_in = config.backoff.delay(attempt);
        let ev = ConnEvent::Disconnected {
            error,
            attempt,
            retry_in,
        };
        if events.send(ev).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            c = control.recv() => match c {
                Some(Control::ReconnectNow) => attempt = 0,
                None => {}
            },
            () = events.closed() => return,
        }
    }
}

/// One connection: initial snapshot, then stream or poll until something breaks. Resets
/// `attempt` as soon as data flows.
async fn session(
    client: &AdminClient,
    config: &ConnectionConfig,
    events: &mpsc::Sender<ConnEvent>,
    control: &mut mpsc::Receiver<Control>,
    last_seq: &mut Option<u64>,
    attempt: &mut u32,
) -> End {
    let first = tokio::select! {
        r = client.snapshot() => r,
        c = control.recv() => return on_control(c),
    };
    let first = match first {
        Ok(s) => s,
        Err(e) => return End::Failed(e),
    };
    *attempt = 0;
    let stream = tokio::select! {
        r = client.stream(Some(first.seq)) => r,
        c = control.recv() => return on_control(c),
    };
    *last_seq = Some(first.seq);
    match stream {
        Ok(mut stream) => {
            if !send_all(
                events,
                [
                    ConnEvent::Connected {
                        transport: Transport::Stream,
                    },
                    snapshot(first),
                ],
            )
            .await
            {
                return End::Closed;
            }
            loop {
                let next = tokio::select! {
                    r = stream.next_snapshot() => r,
                    c = control.recv() => return on_control(c),
                    () = events.closed() => return End::Closed,
                };
                match next {
                    Ok(Some(s)) => {
                        *last_seq = Some(s.seq);
                        if events.send(snapshot(s)).await.is_err() {
                            return End::Closed;
                        }
                    }
                    Ok(None) => {
                        return End::Failed(ClientError::Transport(
                            "the server closed the event stream".into(),
                        ));
                    }
                    Err(e) => return End::Failed(e),
                }
            }
        }
        Err(e) if is_stream_unsupported(&e) => {
            if !send_all(
                events,
                [
                    ConnEvent::Connected {
                        transport: Transport::Polling,
                    },
                    snapshot(first),
                ],
            )
            .await
            {
                return End::Closed;
            }
            let mut ticker = tokio::time::interval(config.poll_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    c = control.recv() => return on_control(c),
                    () = events.closed() => return End::Closed,
                }
                match client.snapshot().await {
                    Ok(s) => {
                        *last_seq = Some(s.seq);
                        if events.send(snapshot(s)).await.is_err() {
                            return End::Closed;
                        }
                    }
                    Err(e) => return End::Failed(e),
                }
            }
        }
        Err(e) => End::Failed(e),
    }
}

fn snapshot(s: Snapshot) -> ConnEvent {
    ConnEvent::Snapshot(Box::new(s))
}

fn on_control(c: Option<Control>) -> End {
    match c {
        Some(Control::ReconnectNow) => End::Reconnect,
        // The controlling side is gone: the dashboard is shutting down.
        None => End::Closed,
    }
}

async fn send_all<const N: usize>(events: &mpsc::Sender<ConnEvent>, evs: [ConnEvent; N]) -> bool {
    for ev in evs {
        if events.send(ev).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            jitter: 0.0,
        };
        assert_eq!(b.base_delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_millis(1000));
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            jitter: 0.25,
        };
        for attempt in 1..10 {
            let d = b.delay(attempt);
            let base = b.base_delay(attempt);
            assert!(d <= base && d >= base.mul_f64(0.75), "{d:?} vs {base:?}");
        }
    }
}
