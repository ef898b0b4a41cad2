//! State shared by the layer, every service clone, every response future and the handle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metrics::Counter;

use super::config::{TimeoutConfig, TimeoutSettings};
use crate::path_pattern::PathPattern;

pub(crate) const REQUESTS: &str = "palisade_timeout_requests_total";

pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) exempt_paths: Vec<PathPattern>,
    /// Hot-path mirror of the settings: read without a lock.
    enabled: AtomicBool,
    timeout_ms: AtomicU64,
    /// Serialises writers (validate, store, bump version).
    pub(crate) apply_lock: crate::control::ApplyLock,
    pub(crate) version: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) metrics: Metrics,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) client_timed_out: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) exempt: AtomicU64,
}

pub(crate) struct Metrics {
    pub(crate) timed_out: Counter,
    pub(crate) client_timed_out: Counter,
}

impl Shared {
    pub(crate) fn new(config: TimeoutConfig) -> Self {
        metrics::describe_counter!(
            REQUESTS,
            "Requests cut by the timeout layer, by outcome (504 `timed_out`, 408 `client_timed_out`)."
        );
        let name = config.name;
        let metrics = Metrics {
            timed_out: metrics::counter!(REQUESTS, "name" => name.clone(), "outcome" => "timed_out"),
            client_timed_out: metrics::counter!(REQUESTS, "name" => name.clone(), "outcome" => "client_timed_out"),
        };
        Self {
            name,
            exempt_paths: config.exempt_paths,
            enabled: AtomicBool::new(config.settings.enabled),
            timeout_ms: AtomicU64::new(config.settings.timeout_ms),
            apply_lock: crate::control::ApplyLock::new(),
            version: AtomicU64::new(0),
            counters: Counters::default(),
            metrics,
        }
    }

    /// The current settings.
    pub(crate) fn settings(&self) -> TimeoutSettings {
        TimeoutSettings {
            enabled: self.enabled.load(Ordering::Acquire),
            timeout_ms: self.timeout_ms.load(Ordering::Acquire),
        }
    }

    /// The deadline for a request to `path`, or `None` when it is not timed.
    #[inline]
    pub(crate) fn timeout_for(&self, path: &str) -> Option<u64> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        if !self.exempt_paths.is_empty() && PathPattern::any_matches(&self.exempt_paths, path) {
            self.counters.exempt.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Stores validated settings; the caller holds `apply_lock`.
    pub(crate) fn store(&self, settings: TimeoutSettings) {
        self.timeout_ms
            .store(settings.timeout_ms, Ordering::Release);
        self.enabled.store(settings.enabled, Ordering::Release);
        self.version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            layer = "timeout",
            name = %self.name,
            enabled = settings.enabled,
            timeout_ms = settings.timeout_ms,
            "timeout settings changed"
        );
    }
}
