//! The [`Drain`] coordinator.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::config::DrainConfig;
use super::layer::DrainLayer;
use crate::problem::Problem;

/// Where a [`Drain`] is in its sequence. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainPhase {
    /// Normal operation: ready, accepting.
    Serving,
    /// Readiness fails; still accepting and serving while load balancers notice (the delay).
    Draining,
    /// Accept stopped; HTTP/1 responses carry `Connection: close`; long-lived streams are told
    /// to end; in-flight requests finish until the grace period ends.
    Closing,
    /// [`Drain::wait`] returned its report.
    Finished,
}

impl DrainPhase {
    /// The phase as a lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::Closing => "closing",
            Self::Finished => "finished",
        }
    }
}

impl fmt::Display for DrainPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Requests that finished (response body sent or abandoned by the client) after the drain
    /// started.
    pub completed: u64,
    /// Requests still in flight when the drain ended (at the deadline or when forced); the
    /// caller drops their connections.
    pub cut: u64,
    /// Time from the start of the drain to the report.
    #[serde(with = "millis")]
    pub elapsed: Duration,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `now + d`, capped at a day so absurd durations cannot overflow.
fn after(d: Duration) -> Instant {
    Instant::now() + d.min(super::config::MAX_DURATION)
}

#[derive(Debug, Clone, Copy)]
struct Started {
    at: Instant,
    completed_before: u64,
}

pub(crate) struct Shared {
    config: DrainConfig,
    phase: watch::Sender<DrainPhase>,
    forced: watch::Sender<bool>,
    in_flight: AtomicU64,
    completed: AtomicU64,
    draining: AtomicBool,
    closing: AtomicBool,
    idle: Notify,
    started: Mutex<Option<Started>>,
}

impl Shared {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

/// Counts one unit of work (an HTTP request, a background job) as in flight until dropped; the
/// drain waits for it. From [`Drain::guard`]; [`DrainLayer`] makes one per request.
#[must_use = "the work counts as in flight until the guard is dropped"]
pub struct DrainGuard {
    shared: Arc<Shared>,
}

impl DrainGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl fmt::Debug for DrainGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainGuard").finish_non_exhaustive()
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        let s = &self.shared;
        s.completed.fetch_add(1, Ordering::AcqRel);
        if s.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && s.draining.load(Ordering::Acquire) {
            s.idle.notify_waiters();
        }
    }
}

/// Tells long-lived streams (SSE, WebSocket, long polls) to end once accept stopped.
///
/// ```
/// # use palisade::shutdown::{Drain, DrainConfig};
/// # async fn demo() {
/// let drain = Drain::new(DrainConfig::default());
/// let signal = drain.signal();
/// // In an SSE handler: `stream.take_until(signal.cancelled())`, or in a loop:
/// tokio::select! {
///     _ = signal.cancelled() => { /* send a last event and return */ }
///     _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => { /* next event */ }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DrainSignal {
    rx: watch::Receiver<DrainPhase>,
}

impl DrainSignal {
    /// Whether streams were told to end.
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow() >= DrainPhase::Closing
    }

    /// Completes once streams are told to end (immediately if they already were).
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|p| *p >= DrainPhase::Closing).await;
        }
    }
}

/// Coordinates a graceful drain; see the [module docs](super) for the sequence and examples.
///
/// Cheap to clone; clones share the drain.
#[derive(Clone)]
pub struct Drain {
    shared: Arc<Shared>,
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("phase", &self.phase())
            .field("in_flight", &self.in_flight())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new(DrainConfig::default())
    }
}

impl Drain {
    /// A coordinator in the [`Serving`](DrainPhase::Serving) phase.
    pub fn new(config: DrainConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                phase: watch::Sender::new(DrainPhase::Serving),
                forced: watch::Sender::new(false),
                in_flight: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                draining: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                idle: Notify::new(),
                started: Mutex::new(None),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DrainConfig {
        &self.shared.config
    }

    /// The layer counting in-flight requests and closing keep-alive connections while draining.
    pub fn layer(&self) -> DrainLayer {
        DrainLayer::from_shared(self.shared.clone())
    }

    /// Counts a unit of work (not an HTTP request: those are counted by the layer) as in flight.
    pub fn guard(&self) -> DrainGuard {
        DrainGuard::new(self.shared.clone())
    }

    /// The signal long-lived streams await.
    pub fn signal(&self) -> DrainSignal {
        DrainSignal {
            rx: self.shared.phase.subscribe(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> DrainPhase {
        *self.shared.phase.borrow()
    }

    /// Whether the drain started (readiness fails from then on).
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Whether this server should be reported ready (no drain started).
    pub fn is_ready(&self) -> bool {
        !self.is_draining()
    }

    /// Requests (and guards) in flight now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// A readiness probe response: `200 {"status":"ready"}` while serving, a `503` problem
    /// document once draining. Serve it at your readiness path.
    ///
    /// ```
    /// use palisade::shutdown::{Drain, DrainConfig};
    /// use http_body_util::Full;
    /// use bytes::Bytes;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let drain = Drain::new(DrainConfig::default());
    /// assert_eq!(drain.readiness::<Full<Bytes>>().status(), 200);
    /// drain.start();
    /// assert_eq!(drain.readiness::<Full<Bytes>>().status(), 503);
    /// # }
    /// ```
    pub fn readiness<B: From<Bytes>>(&self) -> Response<B> {
        let mut res = if self.is_ready() {
            let mut res = Response::new(B::from(Bytes::from_static(b"{\"status\":\"ready\"}")));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        } else {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Draining")
                .detail("this server is shutting down and accepts no new work")
                .with("phase", self.phase())
                .into_response()
        };
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }

    /// Starts the drain: readiness fails now, accept stops after the configured delay (the
    /// timer runs on the current Tokio runtime; outside one, accept stops at once). Returns
    /// whether this call started it (later calls do nothing).
    pub fn start(&self) -> bool {
        self.start_with_delay(self.shared.config.delay())
    }

    /// Like [`start`](Self::start) with an explicit delay instead of the configured one, for
    /// drains ordered by someone who knows better (a supervisor's drain message, a second
    /// signal, an admin request asking for an immediate drain).
    ///
    /// ```
    /// use palisade::shutdown::{Drain, DrainConfig, DrainPhase};
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let drain = Drain::new(DrainConfig::builder().delay(Duration::from_secs(5)).build().unwrap());
    /// drain.start_with_delay(Duration::ZERO);
    /// assert_eq!(drain.phase(), DrainPhase::Closing);
    /// # }
    /// ```
    pub fn start_with_delay(&self, delay: Duration) -> bool {
        let shared = &self.shared;
        // Flags are set inside the transition, so whoever wakes on the phase change sees them.
        let started = shared.phase.send_if_modified(|p| {
            if *p != DrainPhase::Serving {
                return false;
            }
            *shared.started.lock() = Some(Started {
                at: Instant::now(),
                completed_before: shared.completed.load(Ordering::Acquire),
            });
            shared.draining.store(true, Ordering::Release);
            *p = DrainPhase::Draining;
            true
        });
        if !started {
            return false;
        }
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            grace_ms = self.shared.config.grace().as_millis() as u64,
            in_flight = self.in_flight(),
            "drain started"
        );
        if delay.is_zero() {
            self.stop_accepting();
        } else {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let drain = self.clone();
                    // The delay counts from now, not from when the task first runs.
                    let at = after(delay);
                    rt.spawn(async move {
                        tokio::time::sleep_until(at).await;
                        drain.stop_accepting();
                    });
                }
                Err(_) => {
                    tracing::warn!("drain started outside a Tokio runtime; skipping the delay");
                    self.stop_accepting();
                }
            }
        }
        true
    }

    /// Ends the delay now: accept stops, keep-alive connections are closed after their current
    /// response, streams are signalled. Starts the drain first if needed.
    pub fn stop_accepting(&self) {
        self.start();
        let shared = &self.shared;
        let moved = shared.phase.send_if_modified(|p| {
            if *p != DrainPhase::Draining {
                return false;
            }
            shared.closing.store(true, Ordering::Release);
            *p = DrainPhase::Closing;
            true
        });
        if moved {
            tracing::info!(in_flight = self.in_flight(), "drain: stopped accepting");
        }
    }

    /// Gives up waiting: [`wait`](Self::wait) and [`run`](Self::run) return at once, counting
    /// what is in flight as cut.
    pub fn force(&self) {
        self.stop_accepting();
        self.shared.forced.send_replace(true);
    }

    /// Completes when the drain starts.
    pub fn started(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.phase.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p >= DrainPhase::Draining).await;
        }
    }

    /// Completes when accept must stop (the drain started and its delay passed). An accept loop
    /// selects on it; pass it to `axum::serve(..).with_graceful_shutdown(..)`.
    pub fn accept_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.phase.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p >= DrainPhase::Closing).await;
        }
    }

    /// Waits, for at most `timeout` from now, for accept to stop and then for every in-flight
    /// request to finish; starts the drain if needed. See [`wait_until`](Self::wait_until).
    pub async fn wait(&self, timeout: Duration) -> DrainReport {
        self.wait_until(after(timeout)).await
    }

    /// Waits until accept stopped and nothing is in flight, or until `deadline`, or until
    /// [`force`](Self::force); starts the drain if needed. Moves to
    /// [`Finished`](DrainPhase::Finished) and reports what completed and what was cut.
    pub async fn wait_until(&self, deadline: Instant) -> DrainReport {
        self.start();
        let mut forced_rx = self.shared.forced.subscribe();
        let mut forced = pin!(async move {
            let _ = forced_rx.wait_for(|f| *f).await;
        });
        let mut sleep = pin!(tokio::time::sleep_until(deadline));
        let accept = self.accept_stopped();
        let accept_stopped = tokio::select! {
            _ = accept => true,
            _ = &mut sleep => false,
            _ = &mut forced => false,
        };
        if accept_stopped {
            loop {
                let mut idle = pin!(self.shared.idle.notified());
                idle.as_mut().enable();
                if self.in_flight() == 0 {
                    break;
                }
                tokio::select! {
                    _ = idle => {}
                    _ = &mut sleep => break,
                    _ = &mut forced => break,
                }
            }
        }
        self.finish()
    }

    fn finish(&self) -> DrainReport {
        let shared = &self.shared;
        shared.phase.send_modify(|p| {
            shared.closing.store(true, Ordering::Release);
            *p = DrainPhase::Finished;
        });
        let cut = self.in_flight();
        let started = *self.shared.started.lock();
        let now = Instant::now();
        let (elapsed, completed) = match started {
            Some(s) => (
                now.saturating_duration_since(s.at),
                self.shared
                    .completed
                    .load(Ordering::Acquire)
                    .saturating_sub(s.completed_before),
            ),
            None => (Duration::ZERO, 0),
        };
        let report = DrainReport {
            completed,
            cut,
            elapsed,
        };
        let elapsed_ms = elapsed.as_millis() as u64;
        if cut > 0 {
            tracing::warn!(completed, cut, elapsed_ms, "drain finished, requests cut");
        } else {
            tracing::info!(completed, elapsed_ms, "drain finished");
        }
        report
    }

    /// Runs a server future under this drain and returns the report: until the drain starts it
    /// just runs the server; once accept stopped, it waits for in-flight requests for the grace
    /// period, then gives the server until the same deadline to close its connections, and drops
    /// it (cutting whatever is left) if it has not finished.
    ///
    /// Built for `axum::serve(..).with_graceful_shutdown(drain.accept_stopped())` (or
    /// [`shutdown_signal`](super::shutdown_signal)), whose future otherwise waits forever for
    /// slow or streaming connections. Server errors are returned as they are. If the server
    /// stops by itself before any drain, the report is empty.
    ///
    /// Note that `axum::serve` runs connections in spawned tasks: dropping its future stops
    /// accepting but does not abort them; they end with the runtime.
    pub async fn run<F, E>(&self, server: F) -> Result<DrainReport, E>
    where
        F: IntoFuture<Output = Result<(), E>>,
    {
        let mut server = pin!(server.into_future());
        let server_done = tokio::select! {
            biased;
            _ = self.accept_stopped() => false,
            res = &mut server => {
                res?;
                true
            }
        };
        if server_done && !self.is_draining() {
            // Stopped by itself, not by this drain.
            return Ok(DrainReport {
                completed: 0,
                cut: self.in_flight(),
                elapsed: Duration::ZERO,
            });
        }
        let deadline = after(self.shared.config.grace());
        let mut waiting = pin!(self.wait_until(deadline));
        let (report, server_done) = if server_done {
            (waiting.await, true)
        } else {
            tokio::select! {
                res = &mut server => {
                    res?;
                    (waiting.await, true)
                }
                report = &mut waiting => (report, false),
            }
        };
        if !server_done && report.cut == 0 && !*self.shared.forced.borrow() {
            // Nothing in flight: give the server until the deadline to close idle connections.
            if let Ok(res) = tokio::time::timeout_at(deadline, &mut server).await {
                res?;
            }
        }
        Ok(report)
    }
}
