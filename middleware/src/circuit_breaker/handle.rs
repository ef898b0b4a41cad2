//! [`CircuitBreakerHandle`]: runtime control of a breaker or keyed breaker.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::breaker::{CircuitBreaker, Shared, Snapshot};
use super::config::{CircuitBreakerSettings, ConfigError};
use super::metrics::CallKind;
use super::{State, WindowStats};
use crate::control::{self, Change, Component, ComponentKind, FieldError};

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
/// ```json
/// {
///   "keyed": false,
///   "state": "closed",                      // single breakers
///   "window": { "kind": "count", "size": 100, "calls": 42, "failures": 3, "slow_calls": 0,
///               "failure_rate": 7.14, "slow_call_rate": 0.0 },   // rates null when empty
///   "retry_after_ms": null,                 // remaining open time when open
///   "half_open": null,                      // { "probes_left", "completed", "failed", "slow" }
///   "last_transition": { "from": "half_open", "to": "closed", "reason": "...", "ago_ms": 1200 },
///   "calls": { "success": 0, "failure": 0, "slow_success": 0, "slow_failure": 0,
///              "ignored": 0, "cancelled": 0 },
///   "timeouts": 0, "rejected": 0, "stale": 0, "transitions": 0
/// }
/// ```
///
/// A keyed breaker reports `"keyed": true`, `keys`, `max_keys`, `evictions`, `states` (keys per
/// state) and `breakers`: up to 50 keys, non-closed first, each with `key`, `state`, `window`,
/// `retry_after_ms`; counters are totals over all keys (including evicted ones).
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

fn rate(r: Option<f64>) -> Value {
    r.map_or(Value::Null, |r| json!((r * 100.0).round() / 100.0))
}

fn window_json(settings: &CircuitBreakerSettings, w: WindowStats) -> Value {
    json!({
        "kind": settings.window_kind.as_str(),
        "size": settings.window_size,
        "calls": w.calls,
        "failures": w.failures,
        "slow_calls": w.slow_calls,
        "failure_rate": rate(w.failure_rate),
        "slow_call_rate": rate(w.slow_call_rate),
    })
}

fn snapshot_json(settings: &CircuitBreakerSettings, s: &Snapshot, out: &mut Map<String, Value>) {
    out.insert("state".into(), json!(s.state.as_str()));
    out.insert("window".into(), window_json(settings, s.window.into()));
    out.insert("retry_after_ms".into(), json!(s.retry_after.map(ms)));
    let half_open = s.probes.map(|(left, done, failed, slow)| {
        json!({ "probes_left": left, "completed": done, "failed": failed, "slow": slow })
    });
    out.insert("half_open".into(), json!(half_open));
    let last = s.last.map(|t| {
        json!({
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "reason": t.reason,
            "ago_ms": s.now.saturating_sub(t.at) / 1_000_000,
        })
    });
    out.insert("last_transition".into(), json!(last));
}

impl Component for CircuitBreakerHandle {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Breaker
    }

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> Value {
        serde_json::to_value(&**self.shared.settings.load()).unwrap_or(Value::Null)
    }

    fn stats(&self) -> Value {
        let settings = self.shared.settings.load();
        let c = &self.shared.counters;
        let mut out = Map::new();
        match &self.target {
            Target::Single(b) => {
                out.insert("keyed".into(), json!(false));
                snapshot_json(&settings, &b.inner.snapshot(), &mut out);
            }
            Target::Keyed(k) => {
                let mut states = [0u64; 6];
                let mut breakers = Vec::new();
                k.for_each(&mut |key, b| {
                    let s = b.inner.snapshot();
                    states[s.state as usize] += 1;
                    breakers.push((key.to_string(), s));
                });
                breakers.sort_by_key(|(key, s)| (s.state == State::Closed, key.clone()));
                breakers.truncate(50);
                let list: Vec<Value> = breakers
                    .iter()
                    .map(|(key, s)| {
                        let mut m = Map::new();
                        m.insert("key".into(), json!(key));
                        snapshot_json(&settings, s, &mut m);
                        Value::Object(m)
                    })
                    .collect();
                let states: Map<String, Value> = State::ALL
                    .iter()
                    .map(|s| (s.as_str().to_owned(), json!(states[*s as usize])))
                    .collect();
                out.insert("keyed".into(), json!(true));
                out.insert("keys".into(), json!(k.len()));
                out.insert("max_keys".into(), json!(self.shared.max_keys));
                out.insert("evictions".into(), json!(k.evictions()));
                out.insert("states".into(), Value::Object(states));
                out.insert("breakers".into(), Value::Array(list));
            }
        }
        let calls: Map<String, Value> = CallKind::ALL
            .iter()
            .map(|k| {
                let n = c.calls[*k as usize].load(Ordering::Relaxed);
                (k.as_str().to_owned(), json!(n))
            })
            .collect();
        out.insert("calls".into(), Value::Object(calls));
        out.insert("timeouts".into(), json!(c.timeouts.load(Ordering::Relaxed)));
        out.insert("rejected".into(), json!(c.rejected.load(Ordering::Relaxed)));
        out.insert("stale".into(), json!(c.stale.load(Ordering::Relaxed)));
        out.insert(
            "transitions".into(),
            json!(c.transitions.load(Ordering::Relaxed)),
        );
        Value::Object(out)
    }

    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
        let _guard = self.shared.apply_lock.lock();
        let current = self.shared.settings.load_full();
        let next: CircuitBreakerSettings = control::merge_patch(&*current, patch)?;
        let errors = next.validate();
        if !errors.is_empty() {
            return Err(errors.iter().map(FieldError::from).collect());
        }
        let change = Change {
            before: serde_json::to_value(&*current).unwrap_or(Value::Null),
            after: serde_json::to_value(&next).unwrap_or(Value::Null),
        };
        if !dry_run {
            self.store(next);
        }
        Ok(change)
    }

    fn action(&self, action: &str, args: &Value) -> Result<Value, Vec<FieldError>> {
        let apply: fn(&CircuitBreaker) = match action {
            "force_open" => CircuitBreaker::force_open,
            "force_closed" => CircuitBreaker::force_closed,
            "disable" => CircuitBreaker::disable,
            "reset" => CircuitBreaker::reset,
            _ => {
                return Err(vec![FieldError::new(
                    "action",
                    format!("unknown action `{action}`; expected one of {ACTIONS:?}"),
                )]);
            }
        };
        let key = match args.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(other) => {
                return Err(vec![FieldError::new(
                    "key",
                    format!("must be a string (got {other})"),
                )]);
            }
        };
        match (&self.target, key) {
            (Target::Single(b), None) => {
                apply(b);
                Ok(json!({ "state": b.state().as_str() }))
            }
            (Target::Single(_), Some(_)) => Err(vec![FieldError::new(
                "key",
                "this breaker is not keyed; omit `key`",
            )]),
            (Target::Keyed(k), Some(key)) => match k.find(key) {
                Some(b) => {
                    apply(&b);
                    Ok(json!({ "key": key, "state": b.state().as_str() }))
                }
                None => Err(vec![FieldError::new(
                    "key",
                    format!("no breaker for key `{key}`"),
                )]),
            },
            (Target::Keyed(k), None) => {
                let initial = match action {
                    "force_open" => State::ForcedOpen,
                    "force_closed" => State::ForcedClosed,
                    "disable" => State::Disabled,
                    _ => State::Closed,
                };
                self.set_all(initial, &apply);
                Ok(json!({ "state": initial.as_str(), "keys": k.len() }))
            }
        }
    }

    fn actions(&self) -> &'static [&'static str] {
        ACTIONS
    }

    fn stats_merge(&self) -> Vec<crate::control::merge::FieldMerge> {
        use crate::control::merge::Merge;
        // Each worker runs its own breaker: show the most severe state, the worst rates and
        // the earliest probe.
        const SEVERITY: &[&str] = &[
            "forced_open",
            "open",
            "half_open",
            "disabled",
            "forced_closed",
            "closed",
        ];
        vec![
            ("state", Merge::Worst(SEVERITY)),
            ("window.failure_rate", Merge::Max),
            ("window.slow_call_rate", Merge::Max),
            ("window.size", Merge::Once),
            ("window.kind", Merge::Once),
            ("retry_after_ms", Merge::Min),
            ("last_transition", Merge::Once),
            ("keyed", Merge::Once),
            ("max_keys", Merge::Once),
        ]
    }
}

impl crate::control::Handle for CircuitBreakerHandle {
    fn components(&self) -> Vec<(String, std::sync::Arc<dyn Component>)> {
        vec![(self.name().to_owned(), std::sync::Arc::new(self.clone()))]
    }
}
