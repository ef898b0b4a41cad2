//! State shared by the layer, every service clone, every permit and the handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge};

use super::config::{Algorithm, ConcurrencyLimitConfig, ConcurrencySettings};
use crate::path_pattern::PathPattern;

pub(crate) const REQUESTS: &str = "palisade_concurrency_requests_total";
pub(crate) const IN_FLIGHT: &str = "palisade_concurrency_in_flight";
pub(crate) const LIMIT: &str = "palisade_concurrency_limit";

pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) exempt_paths: Vec<PathPattern>,
    pub(crate) settings: ArcSwap<ConcurrencySettings>,
    /// The effective limit: `max_in_flight` (fixed) or the AIMD estimate.
    pub(crate) limit: AtomicU32,
    pub(crate) in_flight: AtomicU32,
    /// Serialises writers (validate, store, bump version).
    pub(crate) apply_lock: crate::control::ApplyLock,
    pub(crate) version: AtomicU64,
    pub(crate) counters: Counters,
    metrics: Metrics,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) allowed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) exempt: AtomicU64,
    pub(crate) drops: AtomicU64,
    pub(crate) peak_in_flight: AtomicU32,
}

struct Metrics {
    allowed: Counter,
    rejected: Counter,
    in_flight: Gauge,
    limit: Gauge,
}

/// What a completed request tells the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sample {
    /// A good response, `in_flight` requests in flight when it was admitted.
    Good { in_flight: u32 },
    /// Too slow, or the service said it is overloaded (503/504).
    Drop,
}

impl Shared {
    pub(crate) fn new(config: ConcurrencyLimitConfig) -> Self {
        metrics::describe_counter!(
            REQUESTS,
            "Concurrency-limit decisions (`allowed`, `rejected` = shed with 503)."
        );
        metrics::describe_gauge!(IN_FLIGHT, "Requests in flight under the concurrency limit.");
        metrics::describe_gauge!(LIMIT, "The effective concurrency limit.");
        let name = config.name;
        let metrics = Metrics {
            allowed: metrics::counter!(REQUESTS, "name" => name.clone(), "decision" => "allowed"),
            rejected: metrics::counter!(REQUESTS, "name" => name.clone(), "decision" => "rejected"),
            in_flight: metrics::gauge!(IN_FLIGHT, "name" => name.clone()),
            limit: metrics::gauge!(LIMIT, "name" => name.clone()),
        };
        let settings = config.settings;
        metrics.limit.set(f64::from(settings.max_in_flight));
        Self {
            name,
            exempt_paths: config.exempt_paths,
            limit: AtomicU32::new(settings.max_in_flight),
            settings: ArcSwap::from_pointee(settings),
            in_flight: AtomicU32::new(0),
            apply_lock: crate::control::ApplyLock::new(),
            version: AtomicU64::new(0),
            counters: Counters::default(),
            metrics,
        }
    }

    /// Whether a request to `path` bypasses the limit (disabled, or exempt).
    #[inline]
    pub(crate) fn bypass(&self, path: &str) -> bool {
        if !self.settings.load().enabled {
            return true;
        }
        if !self.exempt_paths.is_empty() && PathPattern::any_matches(&self.exempt_paths, path) {
            self.counters.exempt.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Takes a slot if fewer than `limit` requests are in flight; returns the number in flight
    /// before this one.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<u32> {
        let limit = self.limit.load(Ordering::Relaxed);
        let before = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            });
        match before {
            Ok(n) => {
                self.counters.allowed.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .peak_in_flight
                    .fetch_max(n + 1, Ordering::Relaxed);
                self.metrics.allowed.increment(1);
                self.metrics.in_flight.increment(1.0);
                Some(n)
            }
            Err(_) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.metrics.rejected.increment(1);
                None
            }
        }
    }

    /// Gives a slot back.
    #[inline]
    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.metrics.in_flight.decrement(1.0);
    }

    /// The AIMD threshold, when the algorithm is AIMD.
    #[inline]
    pub(crate) fn aimd_threshold(&self) -> Option<Duration> {
        let s = self.settings.load();
        (s.algorithm == Algorithm::Aimd).then(|| Duration::from_millis(s.latency_threshold_ms))
    }

    /// Feeds one sample to the AIMD limit (a no-op for a fixed limit).
    pub(crate) fn sample(&self, sample: Sample) {
        let s = self.settings.load();
        if s.algorithm != Algorithm::Aimd {
            return;
        }
        if sample == Sample::Drop {
            self.counters.drops.fetch_add(1, Ordering::Relaxed);
        }
        let (min, max, backoff) = (s.min_in_flight, s.max_in_flight, s.backoff_percent);
        let next = |limit: u32| -> Option<u32> {
            let next = match sample {
                Sample::Drop => {
                    let scaled =
                        u32::try_from(u64::from(limit) * u64::from(backoff) / 100).unwrap_or(limit);
                    scaled.min(limit.saturating_sub(1)).max(min)
                }
                Sample::Good { in_flight } if in_flight.saturating_mul(2) >= limit => {
                    limit.saturating_add(1).min(max)
                }
                Sample::Good { .. } => limit,
            };
            (next != limit).then_some(next)
        };
        if let Ok(previous) = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, next)
            && let Some(now) = next(previous)
        {
            self.metrics.limit.set(f64::from(now));
        }
    }

    /// Stores validated settings and moves the limit into their bounds; the caller holds
    /// `apply_lock`. Requests in flight keep their slots: a lowered limit admits nobody new
    /// until enough of them finish.
    pub(crate) fn store(&self, settings: ConcurrencySettings) {
        let previous = self.settings.load_full();
        self.settings.store(Arc::new(settings));
        let limit = match settings.algorithm {
            Algorithm::Fixed => settings.max_in_flight,
            Algorithm::Aimd if previous.algorithm == Algorithm::Fixed => settings.max_in_flight,
            Algorithm::Aimd => self
                .limit
                .load(Ordering::Acquire)
                .clamp(settings.min_in_flight, settings.max_in_flight),
        };
        self.limit.store(limit, Ordering::Release);
        self.metrics.limit.set(f64::from(limit));
        self.version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            layer = "concurrency",
            name = %self.name,
            enabled = settings.enabled,
            algorithm = settings.algorithm.as_str(),
            max_in_flight = settings.max_in_flight,
            limit,
            "concurrency limit settings changed"
        );
    }
}

/// One admitted request's slot; given back on drop.
pub(crate) struct Permit {
    pub(crate) shared: Arc<Shared>,
    /// Requests in flight when this one was admitted.
    pub(crate) in_flight: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.release();
    }
}
