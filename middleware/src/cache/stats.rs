//! Counters of a cache, mirrored to the `metrics` facade.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use parking_lot::Mutex;

use crate::control::histogram::LatencyHistogram;
use crate::control::stats::LatencyStats;
pub use crate::control::stats::{BackplaneStats, CacheStats, L1Stats, L2Stats, LoadStats};

/// Metric: lookups answered by a level (`cache`, `level` = `l1`|`l2`).
pub const METRIC_HITS: &str = "palisade_cache_hits_total";
/// Metric: lookups a level could not answer (`cache`, `level`).
pub const METRIC_MISSES: &str = "palisade_cache_misses_total";
/// Metric: loader runs (`cache`, `result` = `ok`|`error`|`timeout`).
pub const METRIC_LOADS: &str = "palisade_cache_loads_total";
/// Metric: loader latency in seconds (`cache`).
pub const METRIC_LOAD_DURATION: &str = "palisade_cache_load_duration_seconds";
/// Metric: stale values served (`cache`, `reason` = `fail_safe`|`soft_timeout`).
pub const METRIC_STALE: &str = "palisade_cache_stale_served_total";
/// Metric: L2 entries refused by the codec (`cache`, `reason`).
pub const METRIC_CORRUPT: &str = "palisade_cache_corrupt_total";
/// Metric: failed L2 calls (`cache`, `kind` = `error`|`timeout`|`open`).
pub const METRIC_L2_ERRORS: &str = "palisade_cache_l2_errors_total";
/// Metric: L1 removals by moka (`cache`, `cause` = `size`|`expired`).
pub const METRIC_EVICTIONS: &str = "palisade_cache_evictions_total";
/// Metric: L1 entries (`cache`).
pub const METRIC_ENTRIES: &str = "palisade_cache_entries";
/// Metric: L1 weighted size in bytes (`cache`).
pub const METRIC_L1_BYTES: &str = "palisade_cache_l1_bytes";
/// Metric: backplane messages (`cache`, `direction` = `in`|`out`).
pub const METRIC_BACKPLANE: &str = "palisade_cache_backplane_messages_total";

fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(METRIC_HITS, "Cache lookups answered, by level.");
        metrics::describe_counter!(METRIC_MISSES, "Cache lookups not answered, by level.");
        metrics::describe_counter!(METRIC_LOADS, "Cache loader runs, by result.");
        metrics::describe_histogram!(METRIC_LOAD_DURATION, Unit::Seconds, "Cache loader latency.");
        metrics::describe_counter!(METRIC_STALE, "Stale cache values served, by reason.");
        metrics::describe_counter!(
            METRIC_CORRUPT,
            "L2 entries refused by the codec, by reason."
        );
        metrics::describe_counter!(METRIC_L2_ERRORS, "Failed L2 calls, by kind.");
        metrics::describe_counter!(
            METRIC_EVICTIONS,
            "L1 entries removed by the cache, by cause."
        );
        metrics::describe_gauge!(METRIC_ENTRIES, "L1 entries.");
        metrics::describe_gauge!(METRIC_L1_BYTES, Unit::Bytes, "L1 weighted size.");
        metrics::describe_counter!(METRIC_BACKPLANE, "Invalidation backplane messages.");
    });
}

/// The `reason` labels of [`METRIC_CORRUPT`] (see [`DecodeError::reason`](super::codec::DecodeError::reason)).
const CORRUPT_REASONS: [&str; 8] = [
    "too_short",
    "magic",
    "version",
    "too_large",
    "length",
    "checksum",
    "codec",
    "payload",
];

/// A counter kept both as an atomic (for the handle's stats) and as a metric.
#[derive(Debug)]
pub(crate) struct Count {
    value: AtomicU64,
    metric: Counter,
}

impl Count {
    fn new(metric: Counter) -> Self {
        Self {
            value: AtomicU64::new(0),
            metric,
        }
    }

    pub(crate) fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
        self.metric.increment(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// All counters of one cache.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "L2 counters"))]
pub(crate) struct Counters {
    pub(crate) name: String,
    pub(crate) l1_hits: Count,
    pub(crate) l1_misses: Count,
    pub(crate) l2_hits: Count,
    pub(crate) l2_misses: Count,
    pub(crate) negative_hits: AtomicU64,
    pub(crate) loads_ok: Count,
    pub(crate) loads_error: Count,
    pub(crate) loads_timeout: Count,
    pub(crate) coalesced: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) stale_fail_safe: Count,
    pub(crate) stale_soft_timeout: Count,
    pub(crate) l2_errors: Count,
    pub(crate) l2_timeouts: Count,
    pub(crate) l2_open: Count,
    pub(crate) l2_writes: AtomicU64,
    pub(crate) l2_oversize: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) evictions_size: Count,
    pub(crate) evictions_expired: Count,
    pub(crate) backplane_in: Count,
    pub(crate) backplane_out: Count,
    pub(crate) backplane_reconnects: AtomicU64,
    pub(crate) backplane_connected: AtomicBool,
    pub(crate) l2_pending: AtomicU64,
    corrupt_metrics: Vec<(&'static str, Counter)>,
    load_nanos: AtomicU64,
    load_max_nanos: AtomicU64,
    loads_in_flight: AtomicU64,
    load_histogram: Histogram,
    /// Loader latencies for the handle's stats (merged exactly across workers).
    load_hdr: Mutex<LatencyHistogram>,
    entries: Gauge,
    l1_bytes: Gauge,
}

impl Counters {
    pub(crate) fn new(name: &str) -> Self {
        describe();
        let n = name.to_owned();
        let c = |metric: &'static str, k: &'static str, v: &'static str| {
            Count::new(metrics::counter!(metric, "cache" => n.clone(), k => v))
        };
        Self {
            l1_hits: c(METRIC_HITS, "level", "l1"),
            l1_misses: c(METRIC_MISSES, "level", "l1"),
            l2_hits: c(METRIC_HITS, "level", "l2"),
            l2_misses: c(METRIC_MISSES, "level", "l2"),
            negative_hits: AtomicU64::new(0),
            loads_ok: c(METRIC_LOADS, "result", "ok"),
            loads_error: c(METRIC_LOADS, "result", "error"),
            loads_timeout: c(METRIC_LOADS, "result", "timeout"),
            coalesced: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
            stale_fail_safe: c(METRIC_STALE, "reason", "fail_safe"),
            stale_soft_timeout: c(METRIC_STALE, "reason", "soft_timeout"),
            l2_errors: c(METRIC_L2_ERRORS, "kind", "error"),
            l2_timeouts: c(METRIC_L2_ERRORS, "kind", "timeout"),
            l2_open: c(METRIC_L2_ERRORS, "kind", "open"),
            l2_writes: AtomicU64::new(0),
            l2_oversize: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            evictions_size: c(METRIC_EVICTIONS, "cause", "size"),
            evictions_expired: c(METRIC_EVICTIONS, "cause", "expired"),
            backplane_in: c(METRIC_BACKPLANE, "direction", "in"),
            backplane_out: c(METRIC_BACKPLANE, "direction", "out"),
            backplane_reconnects: AtomicU64::new(0),
            backplane_connected: AtomicBool::new(false),
            l2_pending: AtomicU64::new(0),
            corrupt_metrics: CORRUPT_REASONS
                .iter()
                .map(|r| {
                    let c = metrics::counter!(METRIC_CORRUPT, "cache" => n.clone(), "reason" => *r);
                    (*r, c)
                })
                .collect(),
            load_nanos: AtomicU64::new(0),
            load_max_nanos: AtomicU64::new(0),
            loads_in_flight: AtomicU64::new(0),
            load_histogram: metrics::histogram!(METRIC_LOAD_DURATION, "cache" => n.clone()),
            load_hdr: Mutex::new(LatencyHistogram::new()),
            entries: metrics::gauge!(METRIC_ENTRIES, "cache" => n.clone()),
            l1_bytes: metrics::gauge!(METRIC_L1_BYTES, "cache" => n.clone()),
            name: n,
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "L2 only"))]
    pub(crate) fn corrupt(&self, reason: &'static str) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        if let Some((_, c)) = self.corrupt_metrics.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }

    /// Counts a loader run as in flight until the guard drops (finished, failed or cancelled).
    pub(crate) fn load_started(&self) -> LoadInFlight<'_> {
        self.loads_in_flight.fetch_add(1, Ordering::Relaxed);
        LoadInFlight(&self.loads_in_flight)
    }

    pub(crate) fn load_latency(&self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.load_nanos.fetch_add(n, Ordering::Relaxed);
        self.load_max_nanos.fetch_max(n, Ordering::Relaxed);
        self.load_histogram.record(d.as_secs_f64());
        self.load_hdr.lock().record(d);
    }

    pub(crate) fn l1_size(&self, entries: u64, bytes: u64) {
        #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
        {
            self.entries.set(entries as f64);
            self.l1_bytes.set(bytes as f64);
        }
    }

    pub(crate) fn snapshot(&self, l1: L1Stats, l2: Option<L2Stats>) -> CacheStats {
        let loads = self.loads_ok.get() + self.loads_error.get() + self.loads_timeout.get();
        let nanos = self.load_nanos.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss, reason = "milliseconds for display")]
        let mean_ms = if loads == 0 {
            0.0
        } else {
            nanos as f64 / loads as f64 / 1e6
        };
        #[allow(clippy::cast_precision_loss, reason = "milliseconds for display")]
        let max_ms = self.load_max_nanos.load(Ordering::Relaxed) as f64 / 1e6;
        CacheStats {
            l1,
            l2,
            loads: LoadStats {
                total: loads,
                ok: self.loads_ok.get(),
                errors: self.loads_error.get(),
                timeouts: self.loads_timeout.get(),
                coalesced: self.coalesced.load(Ordering::Relaxed),
                bypassed: self.bypassed.load(Ordering::Relaxed),
                latency_mean_ms: mean_ms,
                latency_max_ms: max_ms,
                latency: LatencyStats::from_histogram(self.load_hdr.lock().clone()),
                in_flight: self.loads_in_flight.load(Ordering::Relaxed),
            },
            negative_hits: self.negative_hits.load(Ordering::Relaxed),
            stale_served: self.stale_fail_safe.get() + self.stale_soft_timeout.get(),
            fail_safe: self.stale_fail_safe.get(),
            soft_timeouts: self.stale_soft_timeout.get(),
        }
    }
}

/// A loader run in flight; see [`Counters::load_started`].
#[derive(Debug)]
pub(crate) struct LoadInFlight<'a>(&'a AtomicU64);

impl Drop for LoadInFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
