//! [`CircuitBreakerHandle`]: runtime control of a breaker or keyed breaker.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::breaker::{CircuitBreaker, Shared, Snapshot};
use super::config::{CircuitBreakerSettings, ConfigError};
use super::metrics::CallKind;
use super::{State, WindowStats};
use crate::control::stats::{
    BreakerSnapshot, BreakerStats, BreakerWindow, CallCounts, HalfOpenStats, KeyedBreaker,
    KeyedStats, StateCounts, Transition,
};
use crate::control::{ApplyLock, Component, ComponentKind, DynComponent, FieldError};

/// What a keyed breaker exposes to its handle, with the key type erased.
pub(crate) trait KeyedView: Send + Sync + 'static {
    /// Calls `f` with every key (displayed) and breaker.
    fn for_each(&self, f: &mut dyn FnMut(&dyn fmt::Display, &CircuitBreaker));
    /// The breaker whose key displays as `key`.
    fn find(&self, key: &str) -> Option<CircuitBreaker>;
    /// Number of keys.
    fn len(&self) -> usize;
    /// Keys evicted so far.
    fn evictions(&self) -> u64;
}

#[derive(Clone)]
enum Target {
    Single(CircuitBreaker),
    Keyed(Arc<dyn KeyedView>),
}

/// Runtime control of a breaker (or of every key of a keyed breaker): read state and window
/// statistics, change settings without losing the window, force states. `Clone + Send + Sync`;
/// implements [`Component`] (kind [`ComponentKind::Breaker`]) for the admin API.
///
/// # Settings
///
/// [`CircuitBreakerSettings`] as JSON; a change is a JSON merge-patch of it, validated as a
/// whole and applied all-or-nothing. Threshold, duration and probe-count changes keep the
/// window's contents; changing `window_kind` or `window_size` starts a new, empty window
/// (the old buckets cannot be reinterpreted). New thresholds are evaluated at the next failed
/// or slow call; a new `wait_in_open_ms` / `half_open_max_calls` / `max_wait_in_half_open_ms`
/// applies from the next transition (an open breaker keeps its current deadline).
///
/// # Stats
///
/// [`BreakerStats`]: for a single breaker `state`, `window` (kind, size, calls, failures,
/// slow calls and their rates in percent), `retry_after_ms` (time to the next probe when
/// open), `half_open` (probes), `last_transition`; for a keyed breaker `keys`, `max_keys`,
/// `evictions`, `states` (keys per state) and `breakers` (up to 50 keys, non-closed first).
/// Both report call counters, `timeouts`, `rejected`, `stale` and `transitions`, totals over
/// all keys (including evicted ones).
///
/// # Actions
///
/// `force_open`, `force_closed` (admit all, keep recording, never trip), `disable` (admit all,
/// record nothing) and `reset` (closed, empty window). On a keyed breaker they apply to every
/// key and to keys created later, or to one key with `{"key": "..."}`.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    shared: Arc<Shared>,
    target: Target,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.shared.name)
            .field("keyed", &matches!(self.target, Target::Keyed(_)))
            .finish_non_exhaustive()
    }
}

const ACTIONS: &[&str] = &["force_open", "force_closed", "disable", "reset"];

impl CircuitBreakerHandle {
    pub(crate) fn single(breaker: CircuitBreaker) -> Self {
        Self {
            shared: Arc::clone(&breaker.inner.shared),
            target: Target::Single(breaker),
        }
    }

    pub(crate) fn keyed(shared: Arc<Shared>, view: Arc<dyn KeyedView>) -> Self {
        Self {
            shared,
            target: Target::Keyed(view),
        }
    }

    fn for_each(&self, f: &mut dyn FnMut(&CircuitBreaker)) {
        match &self.target {
            Target::Single(b) => f(b),
            Target::Keyed(k) => k.for_each(&mut |_, b| f(b)),
        }
    }

    /// The breaker name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The state of a single breaker; `None` for a keyed breaker (see
    /// [`KeyedCircuitBreaker::state`](super::KeyedCircuitBreaker::state)).
    pub fn state(&self) -> Option<State> {
        match &self.target {
            Target::Single(b) => Some(b.state()),
            Target::Keyed(_) => None,
        }
    }

    /// The window counts of a single breaker; `None` for a keyed breaker.
    pub fn window(&self) -> Option<WindowStats> {
        match &self.target {
            Target::Single(b) => Some(b.window()),
            Target::Keyed(_) => None,
        }
    }

    /// The current settings.
    pub fn settings(&self) -> CircuitBreakerSettings {
        (**self.shared.settings.load()).clone()
    }

    /// Replaces the settings after validating them; on error nothing changes. Keeps the window
    /// unless its kind or size changed.
    pub fn set_settings(&self, settings: CircuitBreakerSettings) -> Result<(), Vec<ConfigError>> {
        let _guard = self.shared.apply_lock.lock();
        let errors = settings.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        self.store(settings);
        Ok(())
    }

    /// Stores validated settings; the caller holds `apply_lock`.
    fn store(&self, settings: CircuitBreakerSettings) {
        let settings = Arc::new(settings);
        self.shared.settings.store(Arc::clone(&settings));
        self.shared.mirror(&settings);
        let mut window_reset = false;
        self.for_each(&mut |b| window_reset |= b.inner.sync_window(&settings));
        self.shared.version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(breaker = %self.shared.name, window_reset, "circuit breaker settings changed");
    }

    /// Operator: refuse every call (every key, and new keys, of a keyed breaker).
    pub fn force_open(&self) {
        self.set_all(State::ForcedOpen, &|b| b.force_open());
    }

    /// Operator: admit every call, keep recording, never trip.
    pub fn force_closed(&self) {
        self.set_all(State::ForcedClosed, &|b| b.force_closed());
    }

    /// Operator: admit every call, record nothing.
    pub fn disable(&self) {
        self.set_all(State::Disabled, &|b| b.disable());
    }

    /// Back to closed with an empty window.
    pub fn reset(&self) {
        self.set_all(State::Closed, &|b| b.reset());
    }

    fn set_all(&self, initial: State, f: &dyn Fn(&CircuitBreaker)) {
        self.shared.initial.store(initial as u8, Ordering::Release);
        self.for_each(&mut |b| f(b));
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn rate(r: Option<f64>) -> Option<f64> {
    r.map(|r| (r * 100.0).round() / 100.0)
}

fn window_stats(settings: &CircuitBreakerSettings, w: WindowStats) -> BreakerWindow {
    BreakerWindow {
        kind: settings.window_kind.as_str().to_owned(),
        size: settings.window_size,
        calls: w.calls,
        failures: w.failures,
        slow_calls: w.slow_calls,
        failure_rate: rate(w.failure_rate),
        slow_call_rate: rate(w.slow_call_rate),
    }
}

fn snapshot_stats(settings: &CircuitBreakerSettings, s: &Snapshot) -> BreakerSnapshot {
    BreakerSnapshot {
        state: s.state,
        window: window_stats(settings, s.window.into()),
        retry_after_ms: s.retry_after.map(ms),
        half_open: s
            .probes
            .map(|(probes_left, completed, failed, slow)| HalfOpenStats {
                probes_left,
                completed,
                failed,
                slow,
            }),
        last_transition: s.last.map(|t| Transition {
            from: t.from,
            to: t.to,
            reason: t.reason.to_owned(),
            ago_ms: s.now.saturating_sub(t.at) / 1_000_000,
        }),
    }
}

impl CircuitBreakerHandle {
    /// Live statistics (see the type docs).
    pub fn stats(&self) -> BreakerStats {
        let settings = self.shared.settings.load();
        let c = &self.shared.counters;
        let (breaker, keys) = match &self.target {
            Target::Single(b) => (Some(snapshot_stats(&settings, &b.inner.snapshot())), None),
            Target::Keyed(k) => {
                let mut states = StateCounts::default();
                let mut breakers = Vec::new();
                k.for_each(&mut |key, b| {
                    let s = b.inner.snapshot();
                    states.add(s.state);
                    breakers.push((key.to_string(), s));
                });
                breakers.sort_by_key(|(key, s)| (s.state == State::Closed, key.clone()));
                breakers.truncate(50);
                let breakers = breakers
                    .iter()
                    .map(|(key, s)| KeyedBreaker {
                        key: key.clone(),
                        breaker: snapshot_stats(&settings, s),
                    })
                    .collect();
                let keyed = KeyedStats {
                    keys: k.len() as u64,
                    max_keys: self.shared.max_keys as u64,
                    evictions: k.evictions(),
                    states,
                    breakers,
                };
                (None, Some(keyed))
            }
        };
        let call = |kind: CallKind| c.calls[kind as usize].load(Ordering::Relaxed);
        BreakerStats {
            keyed: keys.is_some(),
            breaker,
            keys,
            calls: CallCounts {
                success: call(CallKind::Success),
                failure: call(CallKind::Failure),
                slow_success: call(CallKind::SlowSuccess),
                slow_failure: call(CallKind::SlowFailure),
                ignored: call(CallKind::Ignored),
                cancelled: call(CallKind::Cancelled),
            },
            timeouts: c.timeouts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            transitions: c.transitions.load(Ordering::Relaxed),
        }
    }
}

/// An operator action on a breaker; on a keyed breaker it applies to one key with `key`, or
/// to every key (and keys created later) without.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BreakerAction {
    /// Refuse every call.
    ForceOpen {
        /// One key of a keyed breaker.
        #[serde(default)]
        key: Option<String>,
    },
    /// Admit every call, keep recording, never trip.
    ForceClosed {
        /// One key of a keyed breaker.
        #[serde(default)]
        key: Option<String>,
    },
    /// Admit every call, record nothing.
    Disable {
        /// One key of a keyed breaker.
        #[serde(default)]
        key: Option<String>,
    },
    /// Back to closed with an empty window.
    Reset {
        /// One key of a keyed breaker.
        #[serde(default)]
        key: Option<String>,
    },
}

/// The state a [`BreakerAction`] left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerActionResult {
    /// The key acted on (one key of a keyed breaker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The state now.
    pub state: State,
    /// Keys acted on (every key of a keyed breaker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
}

impl Component for CircuitBreakerHandle {
    type Settings = CircuitBreakerSettings;
    type Stats = BreakerStats;
    type Action = BreakerAction;
    type Outcome = BreakerActionResult;
    const KIND: ComponentKind = ComponentKind::Breaker;
    const ACTIONS: &'static [&'static str] = ACTIONS;

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> CircuitBreakerSettings {
        CircuitBreakerHandle::settings(self)
    }

    fn stats(&self) -> BreakerStats {
        CircuitBreakerHandle::stats(self)
    }

    fn validate(
        &self,
        _current: &CircuitBreakerSettings,
        next: &CircuitBreakerSettings,
    ) -> Result<(), Vec<FieldError>> {
        let errors = next.validate();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.iter().map(FieldError::from).collect())
        }
    }

    fn commit(&self, next: CircuitBreakerSettings) {
        self.store(next);
    }

    fn apply_lock(&self) -> &ApplyLock {
        &self.shared.apply_lock
    }

    fn act(&self, action: BreakerAction) -> Result<BreakerActionResult, Vec<FieldError>> {
        let (apply, initial, key): (fn(&CircuitBreaker), State, _) = match action {
            BreakerAction::ForceOpen { key } => {
                (CircuitBreaker::force_open, State::ForcedOpen, key)
            }
            BreakerAction::ForceClosed { key } => {
                (CircuitBreaker::force_closed, State::ForcedClosed, key)
            }
            BreakerAction::Disable { key } => (CircuitBreaker::disable, State::Disabled, key),
            BreakerAction::Reset { key } => (CircuitBreaker::reset, State::Closed, key),
        };
        match (&self.target, key) {
            (Target::Single(b), None) => {
                apply(b);
                Ok(BreakerActionResult {
                    key: None,
                    state: b.state(),
                    keys: None,
                })
            }
            (Target::Single(_), Some(_)) => Err(vec![FieldError::new(
                "key",
                "this breaker is not keyed; omit `key`",
            )]),
            (Target::Keyed(k), Some(key)) => match k.find(&key) {
                Some(b) => {
                    apply(&b);
                    Ok(BreakerActionResult {
                        state: b.state(),
                        key: Some(key),
                        keys: None,
                    })
                }
                None => Err(vec![FieldError::new(
                    "key",
                    format!("no breaker for key `{key}`"),
                )]),
            },
            (Target::Keyed(k), None) => {
                self.set_all(initial, &apply);
                Ok(BreakerActionResult {
                    key: None,
                    state: initial,
                    keys: Some(k.len() as u64),
                })
            }
        }
    }
}

impl crate::control::Handle for CircuitBreakerHandle {
    fn components(&self) -> Vec<(String, std::sync::Arc<dyn DynComponent>)> {
        vec![(self.name().to_owned(), std::sync::Arc::new(self.clone()))]
    }
}
