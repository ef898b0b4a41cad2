//! Metric handles, registered once per policy through the `metrics` facade.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `palisade_rate_limit_requests_total` | counter | `policy`, `decision` = `allowed` / `rejected` / `shadow_rejected` |
//! | `palisade_rate_limit_exempt_total` | counter | – |
//! | `palisade_rate_limit_keys` | gauge | `policy`, `store` |
//! | `palisade_rate_limit_evictions_total` | counter | `policy`, `reason` = `idle` / `pressure` |
//! | `palisade_rate_limit_store_errors_total` | counter | `policy`, `store`, `kind` = `timeout` / `error` / `breaker_open` |
//! | `palisade_rate_limit_fallbacks_total` | counter | `policy`, `mode` = `fail_open` / `fail_closed` / `local_fallback` |
//!
//! Labels never carry a key or a client IP, so cardinality is bounded by the number of policies.
//! Handles are taken when the layer is built: install the metrics recorder before building it.

use std::sync::Once;

use metrics::{Counter, Gauge};

pub(crate) const REQUESTS: &str = "palisade_rate_limit_requests_total";
pub(crate) const EXEMPT: &str = "palisade_rate_limit_exempt_total";
pub(crate) const KEYS: &str = "palisade_rate_limit_keys";
pub(crate) const EVICTIONS: &str = "palisade_rate_limit_evictions_total";
pub(crate) const STORE_ERRORS: &str = "palisade_rate_limit_store_errors_total";
pub(crate) const FALLBACKS: &str = "palisade_rate_limit_fallbacks_total";

pub(crate) fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(REQUESTS, "Rate-limit decisions by policy and outcome.");
        metrics::describe_counter!(EXEMPT, "Requests exempt from rate limiting.");
        metrics::describe_gauge!(KEYS, "Keys tracked by a rate-limit store.");
        metrics::describe_counter!(EVICTIONS, "Rate-limit keys evicted to admit new keys.");
        metrics::describe_counter!(STORE_ERRORS, "Rate-limit store failures (e.g. Redis).");
        metrics::describe_counter!(FALLBACKS, "Decisions made by a failure policy.");
    });
}

/// Per-policy decision counters.
#[derive(Debug, Clone)]
pub(crate) struct DecisionMetrics {
    pub(crate) allowed: Counter,
    pub(crate) rejected: Counter,
    pub(crate) shadow_rejected: Counter,
}

impl DecisionMetrics {
    pub(crate) fn new(policy: &str) -> Self {
        describe();
        let p = policy.to_owned();
        Self {
            allowed: metrics::counter!(REQUESTS, "policy" => p.clone(), "decision" => "allowed"),
            rejected: metrics::counter!(REQUESTS, "policy" => p.clone(), "decision" => "rejected"),
            shadow_rejected: metrics::counter!(REQUESTS, "policy" => p, "decision" => "shadow_rejected"),
        }
    }
}

/// Per-store occupancy metrics.
#[derive(Debug, Clone)]
pub(crate) struct StoreMetrics {
    pub(crate) keys: Gauge,
    pub(crate) evicted_idle: Counter,
    pub(crate) evicted_pressure: Counter,
}

impl StoreMetrics {
    pub(crate) fn new(policy: &str, store: &'static str) -> Self {
        describe();
        let p = policy.to_owned();
        Self {
            keys: metrics::gauge!(KEYS, "policy" => p.clone(), "store" => store),
            evicted_idle: metrics::counter!(EVICTIONS, "policy" => p.clone(), "reason" => "idle"),
            evicted_pressure: metrics::counter!(EVICTIONS, "policy" => p, "reason" => "pressure"),
        }
    }

    /// Records a table event; `keys` is the table's current key count.
    pub(crate) fn record(&self, event: super::table::Event, keys: u64) {
        use super::table::Event;
        match event {
            Event::None => {}
            Event::Inserted => self.keys.set(keys as f64),
            Event::EvictedIdle => self.evicted_idle.increment(1),
            Event::EvictedPressure => self.evicted_pressure.increment(1),
        }
    }
}

pub(crate) fn exempt() -> Counter {
    describe();
    metrics::counter!(EXEMPT)
}
