//! The core breaker: [`CircuitBreaker`], [`CallPermit`], [`Outcome`], [`State`].

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::classify::{Classify, ErrorClassifier};
use super::config::{CircuitBreakerConfig, CircuitBreakerSettings};
use super::error::{CallError, CircuitOpen};
use super::handle::CircuitBreakerHandle;
use super::metrics::{CallKind, Metrics};
use super::window::{CALL, Counts, FAILED, SLOW, Window};

// State word: generation << 3 | state kind. The generation grows on every transition, so a
// permit (which carries the word it was admitted under) recognises results from an earlier
// state period ("stale completions") and drops them.
const KIND_BITS: u32 = 3;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;
const CLOSED: u64 = State::Closed as u64;
const OPEN: u64 = State::Open as u64;
const HALF_OPEN: u64 = State::HalfOpen as u64;
const FORCED_OPEN: u64 = State::ForcedOpen as u64;
const FORCED_CLOSED: u64 = State::ForcedClosed as u64;
const DISABLED: u64 = State::Disabled as u64;
/// States that admit every call without further checks.
const FREE: u64 = (1 << CLOSED) | (1 << FORCED_CLOSED) | (1 << DISABLED);
/// `CallPermit::start` when no clock was read at admission.
const NO_CLOCK: u64 = u64::MAX;
const NANOS_PER_MS: u64 = 1_000_000;

/// The state of a breaker (defined with the typed statistics, so readers without the
/// `circuit-breaker` feature can use it).
pub use crate::control::stats::BreakerState as State;

impl State {
    fn from_kind(kind: u64) -> Self {
        match kind {
            OPEN => Self::Open,
            HALF_OPEN => Self::HalfOpen,
            FORCED_OPEN => Self::ForcedOpen,
            FORCED_CLOSED => Self::ForcedClosed,
            DISABLED => Self::Disabled,
            _ => Self::Closed,
        }
    }
}

/// What a finished call meant for the breaker. Whether it was *slow* is decided by the breaker
/// from the time since [`CircuitBreaker::try_acquire`] and `slow_call_duration_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed (error, 5xx, timeout).
    Failure,
    /// Neither: the call says nothing about the dependency's health (a client error, a
    /// cancellation). Not counted in the window; a half-open probe's slot is returned.
    Ignored,
}

/// Cache-line padding so the hot read-mostly words do not share a line with counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Settings mirrored into atomics for the fast path.
#[derive(Debug)]
pub(crate) struct Hot {
    slow_nanos: AtomicU64,
    timeout_nanos: AtomicU64,
    needs_clock: AtomicBool,
}

/// Monotonic counters, shared by all keys of a keyed breaker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: [AtomicU64; 6],
    pub(crate) timeouts: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) transitions: AtomicU64,
}

/// State shared by a breaker, its clones and handle, or by every key of a keyed breaker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) settings: ArcSwap<CircuitBreakerSettings>,
    pub(crate) version: AtomicU64,
    pub(crate) max_keys: usize,
    /// State kind new keys of a keyed breaker start in (operators can force all keys).
    pub(crate) initial: AtomicU8,
    pub(crate) epoch: Instant,
    pub(crate) apply_lock: crate::control::ApplyLock,
    pub(crate) metrics: Metrics,
    hot: Padded<Hot>,
    pub(crate) counters: Padded<Counters>,
}

fn ms_to_nanos(ms: u64) -> u64 {
    ms.saturating_mul(NANOS_PER_MS)
}

impl Shared {
    pub(crate) fn new(config: &CircuitBreakerConfig) -> Arc<Self> {
        let shared = Self {
            name: Arc::from(config.name()),
            settings: ArcSwap::from_pointee(config.settings().clone()),
            version: AtomicU64::new(1),
            max_keys: config.max_keys(),
            initial: AtomicU8::new(State::Closed as u8),
            epoch: Instant::now(),
            apply_lock: crate::control::ApplyLock::new(),
            metrics: Metrics::new(config.name()),
            hot: Padded(Hot {
                slow_nanos: AtomicU64::new(u64::MAX),
                timeout_nanos: AtomicU64::new(u64::MAX),
                needs_clock: AtomicBool::new(false),
            }),
            counters: Padded::default(),
        };
        shared.mirror(config.settings());
        Arc::new(shared)
    }

    /// Copies the settings the fast path reads into atomics.
    pub(crate) fn mirror(&self, s: &CircuitBreakerSettings) {
        let slow = s.slow_call_duration_ms.map_or(u64::MAX, ms_to_nanos);
        let timeout = s.call_timeout_ms.map_or(u64::MAX, ms_to_nanos);
        self.hot.slow_nanos.store(slow, Ordering::Relaxed);
        self.hot.timeout_nanos.store(timeout, Ordering::Relaxed);
        let needs_clock =
            s.slow_call_duration_ms.is_some() || s.window_kind == super::WindowKind::Time;
        self.hot.needs_clock.store(needs_clock, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn call_timeout(&self) -> Option<Duration> {
        match self.hot.timeout_nanos.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    #[inline]
    fn count(&self, kind: CallKind) {
        self.counters.calls[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.metrics.calls[kind as usize].increment(1);
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
    }
}

/// The last transition, for stats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LastTransition {
    pub(crate) from: State,
    pub(crate) to: State,
    pub(crate) reason: &'static str,
    pub(crate) at: u64,
}

/// One breaker's state machine.
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    state: AtomicU64,
    /// Open: when it may go half-open. Half-open: when unfinished probes re-open it.
    deadline: AtomicU64,
    /// Half-open admission: generation (low 32 bits) << 32 | probes left.
    probes: AtomicU64,
    /// Half-open results: generation (low 16 bits) << 48 | slow << 32 | failed << 16 | done.
    probe_results: AtomicU64,
    probe_total: AtomicU32,
    window: ArcSwap<Window>,
    last: Mutex<Option<LastTransition>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("state", &self.current_state())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.current_state();
        self.shared.metrics.state[state as usize].decrement(1.0);
    }
}

/// A snapshot of one breaker for stats.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) state: State,
    pub(crate) window: Counts,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) probes: Option<(u32, u64, u64, u64)>,
    pub(crate) last: Option<LastTransition>,
    pub(crate) now: u64,
}

impl Inner {
    fn new(shared: Arc<Shared>, initial: State) -> Self {
        let settings = shared.settings.load();
        let window = Window::new(settings.window_kind, settings.window_size);
        drop(settings);
        shared.metrics.state[initial as usize].increment(1.0);
        Self {
            shared,
            state: AtomicU64::new(initial as u64),
            deadline: AtomicU64::new(u64::MAX),
            probes: AtomicU64::new(0),
            probe_results: AtomicU64::new(0),
            probe_total: AtomicU32::new(0),
            window: ArcSwap::from_pointee(window),
            last: Mutex::new(None),
        }
    }

    pub(crate) fn current_state(&self) -> State {
        State::from_kind(self.state.load(Ordering::Acquire) & KIND_MASK)
    }

    /// Performs a due timed transition (open → half-open, unfinished half-open → open), so
    /// readers see the state a call would see.
    pub(crate) fn refresh(&self) -> State {
        let word = self.state.load(Ordering::Acquire);
        let kind = word & KIND_MASK;
        if kind == OPEN || kind == HALF_OPEN {
            let now = self.shared.now();
            if now >= self.deadline.load(Ordering::Acquire) {
                let (to, reason) = if kind == OPEN {
                    (HALF_OPEN, "wait_in_open elapsed")
                } else {
                    (OPEN, "max_wait_in_half_open elapsed")
                };
                self.transition(Some(word), to, reason);
            }
        }
        self.current_state()
    }

    /// The slow path of admission: open, half-open and forced-open states.
    #[cold]
    fn acquire_slow(&self, mut word: u64) -> Result<u64, CircuitOpen> {
        loop {
            match word & KIND_MASK {
                OPEN => {
                    let now = self.shared.now();
                    let deadline = self.deadline.load(Ordering::Acquire);
                    if now < deadline {
                        return Err(self.reject(State::Open, Duration::from_nanos(deadline - now)));
                    }
                    self.transition(Some(word), HALF_OPEN, "wait_in_open elapsed");
                }
                HALF_OPEN => {
                    let deadline = self.deadline.load(Ordering::Acquire);
                    if deadline != u64::MAX {
                        let now = self.shared.now();
                        if now >= deadline {
                            self.transition(Some(word), OPEN, "max_wait_in_half_open elapsed");
                            word = self.state.load(Ordering::Acquire);
                            continue;
                        }
                    }
                    let tag = (word >> KIND_BITS) & 0xFFFF_FFFF;
                    let mut p = self.probes.load(Ordering::Acquire);
                    while p >> 32 == tag {
                        if p & 0xFFFF_FFFF == 0 {
                            return Err(self.reject(State::HalfOpen, Duration::from_secs(1)));
                        }
                        match self.probes.compare_exchange_weak(
                            p,
                            p - 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => return Ok(word),
                            Err(current) => p = current,
                        }
                    }
                }
                FORCED_OPEN => {
                    let wait = self.shared.settings.load().wait_in_open_ms;
                    return Err(self.reject(State::ForcedOpen, Duration::from_millis(wait)));
                }
                _ => return Ok(word),
            }
            word = self.state.load(Ordering::Acquire);
        }
    }

    /// A rejection if a call would be refused now, without taking a probe. Counts it.
    #[inline]
    pub(crate) fn check_open(&self) -> Option<CircuitOpen> {
        let word = self.state.load(Ordering::Acquire);
        let kind = word & KIND_MASK;
        if kind == OPEN || kind == FORCED_OPEN {
            self.check_open_slow(word)
        } else {
            None
        }
    }

    #[cold]
    fn check_open_slow(&self, word: u64) -> Option<CircuitOpen> {
        match word & KIND_MASK {
            OPEN => {
                let now = self.shared.now();
                let deadline = self.deadline.load(Ordering::Acquire);
                (now < deadline)
                    .then(|| self.reject(State::Open, Duration::from_nanos(deadline - now)))
            }
            FORCED_OPEN => {
                let wait = self.shared.settings.load().wait_in_open_ms;
                Some(self.reject(State::ForcedOpen, Duration::from_millis(wait)))
            }
            _ => None,
        }
    }

    fn reject(&self, state: State, retry_after: Duration) -> CircuitOpen {
        self.shared
            .counters
            .rejected
            .fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.rejected.increment(1);
        tracing::debug!(breaker = %self.shared.name, state = state.as_str(), "call rejected");
        CircuitOpen {
            breaker: Arc::clone(&self.shared.name),
            state,
            retry_after,
        }
    }

    #[inline]
    fn complete(&self, token: u64, start: u64, outcome: Outcome, timed_out: bool) {
        let shared = &*self.shared;
        let needs_clock = shared.hot.needs_clock.load(Ordering::Relaxed);
        let now = if needs_clock || start != NO_CLOCK {
            shared.now()
        } else {
            0
        };
        let slow = start != NO_CLOCK
            && now.saturating_sub(start) >= shared.hot.slow_nanos.load(Ordering::Relaxed);
        let (kind, bits) = match (outcome, slow) {
            (Outcome::Success, false) => (CallKind::Success, CALL),
            (Outcome::Success, true) => (CallKind::SlowSuccess, CALL | SLOW),
            (Outcome::Failure, false) => (CallKind::Failure, CALL | FAILED),
            (Outcome::Failure, true) => (CallKind::SlowFailure, CALL | FAILED | SLOW),
            (Outcome::Ignored, _) => (CallKind::Ignored, 0),
        };
        shared.count(kind);
        if timed_out {
            shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            shared.metrics.timeouts.increment(1);
        }
        let state_kind = token & KIND_MASK;
        if bits == 0 {
            if state_kind == HALF_OPEN {
                self.release_probe(token);
            }
            return;
        }
        if self.state.load(Ordering::Acquire) != token {
            shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match state_kind {
            CLOSED => {
                if let Some(counts) = self.window.load().record(now, bits) {
                    self.maybe_trip(token, counts);
                }
            }
            FORCED_CLOSED => {
                self.window.load().record(now, bits);
            }
            HALF_OPEN => self.record_probe(token, bits),
            _ => {}
        }
    }

    fn cancel(&self, token: u64) {
        self.shared.count(CallKind::Cancelled);
        if token & KIND_MASK == HALF_OPEN {
            self.release_probe(token);
        }
    }

    #[cold]
    fn maybe_trip(&self, token: u64, c: Counts) {
        let s = self.shared.settings.load();
        if c.calls < u64::from(s.minimum_calls) {
            return;
        }
        let reason = if c.failure_rate().unwrap_or(0.0) >= s.failure_rate_threshold {
            "failure_rate_threshold reached"
        } else if s.slow_call_duration_ms.is_some()
            && c.slow_rate().unwrap_or(0.0) >= s.slow_call_rate_threshold
        {
            "slow_call_rate_threshold reached"
        } else {
            return;
        };
        drop(s);
        self.transition(Some(token), OPEN, reason);
    }

    #[cold]
    fn record_probe(&self, token: u64, bits: u8) {
        let tag = ((token >> KIND_BITS) & 0xFFFF) << 48;
        let add = 1 + (u64::from(bits & FAILED != 0) << 16) + (u64::from(bits & SLOW != 0) << 32);
        let mut v = self.probe_results.load(Ordering::Acquire);
        let after = loop {
            if v & (0xFFFF << 48) != tag {
                return;
            }
            match self.probe_results.compare_exchange_weak(
                v,
                v + add,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break v + add,
                Err(current) => v = current,
            }
        };
        let done = after & 0xFFFF;
        let failed = (after >> 16) & 0xFFFF;
        let slow = (after >> 32) & 0xFFFF;
        let total = u64::from(self.probe_total.load(Ordering::Acquire)).max(1);
        let s = self.shared.settings.load();
        // Rates over all probes: a rate already at the threshold cannot fall below it, so
        // the breaker re-opens as soon as it is certain; it closes once every probe succeeded
        // well enough.
        let failure_rate = failed as f64 * 100.0 / total as f64;
        let slow_rate = slow as f64 * 100.0 / total as f64;
        let (to, reason) = if failure_rate >= s.failure_rate_threshold {
            (OPEN, "half-open failure_rate_threshold reached")
        } else if s.slow_call_duration_ms.is_some() && slow_rate >= s.slow_call_rate_threshold {
            (OPEN, "half-open slow_call_rate_threshold reached")
        } else if done >= total {
            (CLOSED, "half-open probes succeeded")
        } else {
            return;
        };
        drop(s);
        self.transition(Some(token), to, reason);
    }

    fn release_probe(&self, token: u64) {
        let tag = (token >> KIND_BITS) & 0xFFFF_FFFF;
        let mut p = self.probes.load(Ordering::Acquire);
        while p >> 32 == tag {
            match self
                .probes
                .compare_exchange_weak(p, p + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(current) => p = current,
            }
        }
    }

    /// Moves to state kind `to` if the state word still is `expect` (or unconditionally for
    /// `None`). Returns whether it moved.
    pub(crate) fn transition(&self, expect: Option<u64>, to: u64, reason: &'static str) -> bool {
        let settings = self.shared.settings.load();
        let mut last = self.last.lock();
        let now = self.shared.now();
        let current = self.state.load(Ordering::Acquire);
        if expect.is_some_and(|e| e != current) {
            return false;
        }
        let generation = (current >> KIND_BITS).wrapping_add(1);
        match to {
            OPEN => {
                let wait = ms_to_nanos(settings.wait_in_open_ms);
                self.deadline
                    .store(now.saturating_add(wait), Ordering::Release);
            }
            HALF_OPEN => {
                let n = settings.half_open_max_calls;
                self.probe_total.store(n, Ordering::Release);
                self.probe_results
                    .store((generation & 0xFFFF) << 48, Ordering::Release);
                self.probes.store(
                    ((generation & 0xFFFF_FFFF) << 32) | u64::from(n),
                    Ordering::Release,
                );
                let deadline = settings
                    .max_wait_in_half_open_ms
                    .map_or(u64::MAX, |ms| now.saturating_add(ms_to_nanos(ms)));
                self.deadline.store(deadline, Ordering::Release);
            }
            CLOSED => self.window.load().clear(),
            _ => {}
        }
        self.state
            .store((generation << KIND_BITS) | to, Ordering::Release);
        let from = State::from_kind(current & KIND_MASK);
        let to = State::from_kind(to);
        *last = Some(LastTransition {
            from,
            to,
            reason,
            at: now,
        });
        drop(last);
        self.shared
            .counters
            .transitions
            .fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.transition(from, to);
        let name = &*self.shared.name;
        if matches!(to, State::Open | State::ForcedOpen) {
            tracing::warn!(
                breaker = name,
                from = from.as_str(),
                to = to.as_str(),
                reason,
                "circuit state changed"
            );
        } else {
            tracing::info!(
                breaker = name,
                from = from.as_str(),
                to = to.as_str(),
                reason,
                "circuit state changed"
            );
        }
        true
    }

    /// Replaces the window if the window kind or size changed (the new window starts empty).
    pub(crate) fn sync_window(&self, s: &CircuitBreakerSettings) -> bool {
        let _last = self.last.lock();
        if self.window.load().spec() == (s.window_kind, s.window_size) {
            return false;
        }
        self.window
            .store(Arc::new(Window::new(s.window_kind, s.window_size)));
        true
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.refresh();
        let now = self.shared.now();
        let window = self.window.load().counts(now);
        let deadline = self.deadline.load(Ordering::Acquire);
        let retry_after =
            (state == State::Open).then(|| Duration::from_nanos(deadline.saturating_sub(now)));
        let probes = (state == State::HalfOpen).then(|| {
            let r = self.probe_results.load(Ordering::Acquire);
            (
                (self.probes.load(Ordering::Acquire) & 0xFFFF_FFFF) as u32,
                r & 0xFFFF,
                (r >> 16) & 0xFFFF,
                (r >> 32) & 0xFFFF,
            )
        });
        Snapshot {
            state,
            window,
            retry_after,
            probes,
            last: *self.last.lock(),
            now,
        }
    }
}

/// A circuit breaker: a state machine fed with call outcomes. Cheap to clone; clones share
/// state. Use it directly around any async work (a Redis command, an outbound request) or
/// through [`CircuitBreakerLayer`](super::CircuitBreakerLayer). See the
/// [module docs](super) for the semantics.
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, Outcome, State};
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::new(CircuitBreakerConfig::consecutive_failures(2, Duration::from_secs(5)));
/// for _ in 0..2 {
///     let permit = breaker.try_acquire().unwrap();
///     permit.record(Outcome::Failure);
/// }
/// assert_eq!(breaker.state(), State::Open);
/// let open = breaker.try_acquire().unwrap_err();
/// assert!(open.retry_after() <= Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Counts of a breaker's sliding window at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct WindowStats {
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window (slow or not).
    pub failures: u64,
    /// Slow calls in the window (failed or not).
    pub slow_calls: u64,
    /// `failures / calls` in percent; `None` while the window is empty.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls` in percent; `None` while the window is empty.
    pub slow_call_rate: Option<f64>,
}

impl From<Counts> for WindowStats {
    fn from(c: Counts) -> Self {
        Self {
            calls: c.calls,
            failures: c.failures,
            slow_calls: c.slow,
            failure_rate: c.failure_rate(),
            slow_call_rate: c.slow_rate(),
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self::with_shared(Shared::new(&config), State::Closed)
    }

    pub(crate) fn with_shared(shared: Arc<Shared>, initial: State) -> Self {
        Self {
            inner: Arc::new(Inner::new(shared, initial)),
        }
    }

    /// Asks to make one call. On success, make the call and report its outcome with
    /// [`CallPermit::record`]; dropping the permit instead counts the call as *cancelled*
    /// (nothing enters the window, a half-open probe slot is returned).
    ///
    /// In the closed state this is one atomic load (plus a clock read when slow-call tracking
    /// or a time window needs one). It never blocks.
    #[inline]
    pub fn try_acquire(&self) -> Result<CallPermit, CircuitOpen> {
        let word = self.inner.state.load(Ordering::Acquire);
        let token = if (1 << (word & KIND_MASK)) & FREE != 0 {
            word
        } else {
            self.inner.acquire_slow(word)?
        };
        let start = if self.inner.shared.hot.needs_clock.load(Ordering::Relaxed) {
            self.inner.shared.now()
        } else {
            NO_CLOCK
        };
        Ok(CallPermit {
            breaker: self.clone(),
            token,
            start,
            armed: true,
        })
    }

    /// Runs `fut` through the breaker: refused with [`CallError::Open`] when open, limited by
    /// `call_timeout_ms` ([`CallError::Timeout`], counted as a failure), `Err` counted as a
    /// failure and `Ok` as a success. Dropping the returned future counts as cancelled.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_with(&ErrorClassifier, fut).await
    }

    /// Like [`call`](Self::call) with a classifier deciding each result's [`Outcome`].
    pub async fn call_with<C, F, T, E>(&self, classifier: &C, fut: F) -> Result<T, CallError<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(CallError::Open)?;
        let result = match self.inner.shared.call_timeout() {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => {
                    permit.record_timeout();
                    return Err(CallError::Timeout(limit));
                }
            },
            None => fut.await,
        };
        permit.record(classifier.classify(&result));
        result.map_err(CallError::Inner)
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The current state, after any due timed transition (open → half-open once
    /// `wait_in_open` has passed).
    pub fn state(&self) -> State {
        self.inner.refresh()
    }

    /// The current sliding-window counts.
    pub fn window(&self) -> WindowStats {
        let now = self.inner.shared.now();
        self.inner.window.load().counts(now).into()
    }

    /// The current settings.
    pub fn settings(&self) -> CircuitBreakerSettings {
        (**self.inner.shared.settings.load()).clone()
    }

    /// The configured call timeout, if any.
    #[inline]
    pub fn call_timeout(&self) -> Option<Duration> {
        self.inner.shared.call_timeout()
    }

    /// Operator: refuse every call until [`reset`](Self::reset) or another operator state.
    pub fn force_open(&self) {
        self.inner
            .transition(None, FORCED_OPEN, "operator force_open");
    }

    /// Operator: admit every call, keep recording outcomes, never trip (metrics only).
    pub fn force_closed(&self) {
        self.inner
            .transition(None, FORCED_CLOSED, "operator force_closed");
    }

    /// Operator: admit every call and record nothing in the window.
    pub fn disable(&self) {
        self.inner.transition(None, DISABLED, "operator disable");
    }

    /// Back to closed with an empty window, whatever the state (counters are kept).
    pub fn reset(&self) {
        self.inner.transition(None, CLOSED, "operator reset");
    }

    /// A control-plane handle for this breaker (same state; see [`CircuitBreakerHandle`]).
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::single(self.clone())
    }

    /// A rejection if a call would be refused right now (counted as rejected), without taking
    /// a half-open probe.
    #[inline]
    pub(crate) fn check_open(&self) -> Option<CircuitOpen> {
        self.inner.check_open()
    }
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`]. Report the call's
/// outcome with [`record`](Self::record) (or [`success`](Self::success) /
/// [`failure`](Self::failure) / [`ignore`](Self::ignore)).
///
/// Dropping a permit without recording counts the call as **cancelled**: it is counted in
/// `calls{outcome="cancelled"}` but not in the window (a client hanging up says nothing about
/// the dependency), and a half-open probe slot is handed back so another probe can run.
///
/// A result recorded after the breaker changed state since admission (a slow call admitted
/// while closed that finishes after the breaker opened) is *stale*: it is counted but cannot
/// change the new state.
#[must_use = "record the call's outcome; dropping the permit counts the call as cancelled"]
pub struct CallPermit {
    breaker: CircuitBreaker,
    token: u64,
    start: u64,
    armed: bool,
}

impl fmt::Debug for CallPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit")
            .field("breaker", &self.breaker.name())
            .field("state", &State::from_kind(self.token & KIND_MASK))
            .finish_non_exhaustive()
    }
}

impl CallPermit {
    /// Reports the call's outcome. Slowness is measured from admission.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.armed = false;
        self.breaker
            .inner
            .complete(self.token, self.start, outcome, false);
    }

    /// Reports a timeout: a failure, also counted in `timeouts`.
    pub fn record_timeout(mut self) {
        self.armed = false;
        self.breaker
            .inner
            .complete(self.token, self.start, Outcome::Failure, true);
    }

    /// `record(Outcome::Success)`.
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// `record(Outcome::Failure)`.
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// `record(Outcome::Ignored)`.
    pub fn ignore(self) {
        self.record(Outcome::Ignored);
    }

    /// The state the call was admitted in ([`State::HalfOpen`] for a probe).
    pub fn admitted_in(&self) -> State {
        State::from_kind(self.token & KIND_MASK)
    }

    /// The breaker that issued the permit.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.inner.cancel(self.token);
        }
    }
}
