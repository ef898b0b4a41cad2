//! Typed statistics of every Palisade layer: what each handle's [`Component::stats`] returns
//! and the admin API serves as JSON.
//!
//! These types are always compiled (whatever the layer features), so a dashboard or a script
//! can read a snapshot's `stats` with `serde_json::from_value` instead of poking at JSON by
//! string keys. Each implements [`Stats`]: how its fields combine across worker processes is
//! declared next to the fields.
//!
//! ```
//! use palisade::control::stats::{BreakerState, BreakerStats};
//! let stats: BreakerStats = serde_json::from_value(serde_json::json!({
//!     "keyed": false, "state": "open",
//!     "window": {"kind": "count", "size": 100, "calls": 20, "failures": 12, "slow_calls": 0,
//!                "failure_rate": 60.0, "slow_call_rate": 0.0},
//!     "retry_after_ms": 4200, "half_open": null, "last_transition": null,
//!     "calls": {"success": 8, "failure": 12, "slow_success": 0, "slow_failure": 0,
//!               "ignored": 0, "cancelled": 0},
//!     "timeouts": 0, "rejected": 3, "stale": 0, "transitions": 1
//! })).unwrap();
//! assert_eq!(stats.state(), Some(BreakerState::Open));
//! assert_eq!(stats.breaker.unwrap().retry_after_ms, Some(4200));
//! ```
//!
//! [`Component::stats`]: super::Component::stats

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Stats;
use super::histogram::LatencyHistogram;
use super::merge::{FieldMerge, Merge};

// === latency ===

/// A latency distribution inside component statistics: a summary for readers and the HDR
/// histogram (`hdr`, base64 of the V2 encoding) it was computed from, so workers' figures merge
/// exactly ([`Merge::Histogram`]) — percentiles are never averaged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Samples.
    pub count: u64,
    /// Mean, milliseconds.
    pub mean_ms: f64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest sample, milliseconds.
    pub max_ms: f64,
    /// The histogram itself.
    pub hdr: LatencyHistogram,
}

impl LatencyStats {
    /// The summary of `hdr` (and `hdr` itself).
    ///
    /// ```
    /// use palisade::control::histogram::LatencyHistogram;
    /// use palisade::control::stats::LatencyStats;
    /// let mut h = LatencyHistogram::new();
    /// for ms in [1, 2, 3, 100] { h.record(std::time::Duration::from_millis(ms)); }
    /// let s = LatencyStats::from_histogram(h);
    /// assert_eq!(s.count, 4);
    /// assert!((s.max_ms - 100.0).abs() < 0.1);
    /// ```
    pub fn from_histogram(hdr: LatencyHistogram) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mean_ms = if hdr.is_empty() {
            0.0
        } else {
            hdr.histogram().mean() / 1000.0
        };
        Self {
            count: hdr.count(),
            mean_ms,
            p50_ms: ms(hdr.quantile(0.5)),
            p99_ms: ms(hdr.quantile(0.99)),
            max_ms: ms(hdr.max()),
            hdr,
        }
    }
}

// === rate limiting ===

/// Occupancy and eviction counters of a rate-limit store (zone-wide for a shared-memory store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Keys currently tracked.
    pub keys: u64,
    /// Maximum keys (0 when unbounded by the store itself, e.g. Redis with key TTLs).
    pub capacity: u64,
    /// Idle keys replaced by new ones.
    pub evictions_idle: u64,
    /// Active keys replaced because their set was full.
    pub evictions_pressure: u64,
    /// Idle keys freed by a purge.
    pub purged: u64,
    /// Store failures (Redis errors, timeouts, calls refused by the open breaker).
    pub errors: u64,
    /// Decisions made by the failure policy instead of the store.
    pub fallbacks: u64,
}

/// A rate-limit policy's live statistics (kind `limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStats {
    /// Requests this policy allowed (and that were not rejected by another policy).
    pub allowed: u64,
    /// Requests this policy rejected.
    pub rejected: u64,
    /// Requests this shadow-mode policy would have rejected.
    pub shadow_rejected: u64,
    /// The store kind: `local`, `shm`, `redis` or a custom store's name.
    pub store: String,
    /// What the policy counts by (`client_ip`, `header:x-api-key`, ...).
    pub key: String,
    /// The path patterns the policy applies to (empty: every path).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Store occupancy, evictions, errors and fallbacks.
    #[serde(flatten)]
    pub store_stats: StoreStats,
}

impl Stats for PolicyStats {
    fn merge_rules(&self) -> Vec<FieldMerge> {
        if self.store == "shm" {
            // One table in shared memory: every worker reports the whole zone.
            [
                "capacity",
                "keys",
                "evictions_idle",
                "evictions_pressure",
                "purged",
            ]
            .into_iter()
            .map(|f| (f, Merge::Once))
            .collect()
        } else {
            Vec::new()
        }
    }
}

/// A timeout layer's live statistics (kind `limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutStats {
    /// Timed requests answered before their deadline.
    pub completed: u64,
    /// Requests cut at the deadline with `504 Gateway Timeout`.
    pub timed_out: u64,
    /// Requests cut at the deadline with `408 Request Timeout` (the service was waiting for
    /// the request body).
    pub client_timed_out: u64,
    /// Timed requests whose response future was dropped before either (client disconnects).
    pub cancelled: u64,
    /// Requests not timed because their path is exempt.
    pub exempt: u64,
}

impl Stats for TimeoutStats {}

/// A concurrency limit's live statistics (kind `limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyStats {
    /// Requests admitted.
    pub allowed: u64,
    /// Requests shed with `503`.
    pub rejected: u64,
    /// Requests in flight now.
    pub in_flight: u32,
    /// The effective limit now (`max_in_flight`, or the AIMD estimate).
    pub limit: u32,
    /// The most requests in flight at once so far.
    pub peak_in_flight: u32,
    /// Requests not limited because their path is exempt.
    pub exempt: u64,
    /// AIMD drops: slow or overloaded responses.
    pub drops: u64,
}

/// Every field adds up: each worker has its own limit, so the sums are what the server admits.
impl Stats for ConcurrencyStats {}

// === circuit breaking ===

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; outcomes fill the sliding window.
    Closed = 0,
    /// Calls are refused until `wait_in_open` has passed.
    Open = 1,
    /// `half_open_max_calls` probes are admitted; their outcomes close or re-open the breaker.
    HalfOpen = 2,
    /// Operator state: every call is refused until an operator changes the state.
    ForcedOpen = 3,
    /// Operator state: every call is admitted and recorded (rates stay visible) but the breaker
    /// never trips (resilience4j `METRICS_ONLY`).
    ForcedClosed = 4,
    /// Operator state: every call is admitted and nothing is recorded in the window.
    Disabled = 5,
}

impl BreakerState {
    /// Every state, in gauge-index order.
    pub const ALL: [BreakerState; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::ForcedOpen,
        Self::ForcedClosed,
        Self::Disabled,
    ];

    /// Every state, most severe (refusing calls) first: how states of several workers or keys
    /// combine into one.
    pub const BY_SEVERITY: [BreakerState; 6] = [
        Self::ForcedOpen,
        Self::Open,
        Self::HalfOpen,
        Self::Disabled,
        Self::ForcedClosed,
        Self::Closed,
    ];

    /// `closed`, `open`, `half_open`, `forced_open`, `forced_closed` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
            Self::Disabled => "disabled",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const SEVERITY_NAMES: &[&str] = &[
    "forced_open",
    "open",
    "half_open",
    "disabled",
    "forced_closed",
    "closed",
];

/// A breaker's sliding window at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerWindow {
    /// `count` (the last `size` calls) or `time` (the calls of the last `size` seconds).
    pub kind: String,
    /// The window size.
    pub size: u32,
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window (slow or not).
    pub failures: u64,
    /// Slow calls in the window (failed or not).
    pub slow_calls: u64,
    /// `failures / calls` in percent, two decimals; `None` while the window is empty.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls` in percent, two decimals; `None` while the window is empty.
    pub slow_call_rate: Option<f64>,
}

/// Probes of a half-open breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfOpenStats {
    /// Probes still admitted.
    pub probes_left: u32,
    /// Probes finished.
    pub completed: u64,
    /// Probes that failed.
    pub failed: u64,
    /// Probes that were slow.
    pub slow: u64,
}

/// A breaker's last state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why, e.g. `failure rate 60.00% >= 50%`.
    pub reason: String,
    /// How long ago, milliseconds.
    pub ago_ms: u64,
}

/// One breaker's state: the breaker of a single breaker, or one key of a keyed breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// The state.
    pub state: BreakerState,
    /// The sliding window.
    pub window: BreakerWindow,
    /// When open: milliseconds until the next probe is admitted.
    pub retry_after_ms: Option<u64>,
    /// When half open: the probes.
    pub half_open: Option<HalfOpenStats>,
    /// The last state change, if any.
    pub last_transition: Option<Transition>,
}

/// One key of a keyed breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedBreaker {
    /// The key, displayed.
    pub key: String,
    /// Its breaker.
    #[serde(flatten)]
    pub breaker: BreakerSnapshot,
}

/// Keys per state of a keyed breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Keys closed.
    pub closed: u64,
    /// Keys open.
    pub open: u64,
    /// Keys half open.
    pub half_open: u64,
    /// Keys forced open.
    pub forced_open: u64,
    /// Keys forced closed.
    pub forced_closed: u64,
    /// Keys disabled.
    pub disabled: u64,
}

impl StateCounts {
    /// Keys in `state`.
    pub fn get(&self, state: BreakerState) -> u64 {
        match state {
            BreakerState::Closed => self.closed,
            BreakerState::Open => self.open,
            BreakerState::HalfOpen => self.half_open,
            BreakerState::ForcedOpen => self.forced_open,
            BreakerState::ForcedClosed => self.forced_closed,
            BreakerState::Disabled => self.disabled,
        }
    }

    /// Counts one more key in `state`.
    pub fn add(&mut self, state: BreakerState) {
        let slot = match state {
            BreakerState::Closed => &mut self.closed,
            BreakerState::Open => &mut self.open,
            BreakerState::HalfOpen => &mut self.half_open,
            BreakerState::ForcedOpen => &mut self.forced_open,
            BreakerState::ForcedClosed => &mut self.forced_closed,
            BreakerState::Disabled => &mut self.disabled,
        };
        *slot += 1;
    }

    /// The most severe state any key is in, with how many keys are in it; `None` without
    /// keys outside `closed`.
    pub fn worst(&self) -> Option<(BreakerState, u64)> {
        BreakerState::BY_SEVERITY
            .into_iter()
            .filter(|s| *s != BreakerState::Closed)
            .map(|s| (s, self.get(s)))
            .find(|(_, n)| *n > 0)
    }
}

/// What a keyed breaker reports besides totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyedStats {
    /// Keys held.
    pub keys: u64,
    /// The most keys held.
    pub max_keys: u64,
    /// Keys evicted so far.
    pub evictions: u64,
    /// Keys per state.
    pub states: StateCounts,
    /// Up to 50 keys, those not closed first.
    pub breakers: Vec<KeyedBreaker>,
}

/// Calls by outcome (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    /// Fast successful calls.
    pub success: u64,
    /// Fast failed calls.
    pub failure: u64,
    /// Slow successful calls.
    pub slow_success: u64,
    /// Slow failed calls.
    pub slow_failure: u64,
    /// Calls whose outcome is ignored by the classifier.
    pub ignored: u64,
    /// Calls dropped before they finished.
    pub cancelled: u64,
}

/// A circuit breaker's live statistics (kind `breaker`).
///
/// A single breaker reports its [`BreakerSnapshot`] fields at the top level (`state`,
/// `window`, `retry_after_ms`, `half_open`, `last_transition`); a keyed breaker reports
/// [`KeyedStats`] instead. Counters are totals over all keys, evicted ones included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerStats {
    /// Whether this is a keyed breaker (one breaker per key).
    pub keyed: bool,
    /// A single breaker's state.
    #[serde(flatten)]
    pub breaker: Option<BreakerSnapshot>,
    /// A keyed breaker's keys.
    #[serde(flatten)]
    pub keys: Option<KeyedStats>,
    /// Calls by outcome.
    pub calls: CallCounts,
    /// Calls cut by the breaker's call timeout.
    pub timeouts: u64,
    /// Calls refused while open.
    pub rejected: u64,
    /// Outcomes of calls that started before a state change, not recorded.
    pub stale: u64,
    /// State changes.
    pub transitions: u64,
}

impl BreakerStats {
    /// A single breaker's state, or a keyed breaker's most severe key state.
    pub fn state(&self) -> Option<BreakerState> {
        match (&self.breaker, &self.keys) {
            (Some(b), _) => Some(b.state),
            (None, Some(k)) => Some(k.states.worst().map_or(BreakerState::Closed, |(s, _)| s)),
            (None, None) => None,
        }
    }
}

impl Stats for BreakerStats {
    fn merge_rules(&self) -> Vec<FieldMerge> {
        // Each worker runs its own breaker: show the most severe state, the worst rates and
        // the earliest probe.
        vec![
            ("state", Merge::Worst(SEVERITY_NAMES)),
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

// === caching ===

/// Live statistics of a two-level cache (`cache::TwoLevelCache`), the stats of its handle.
/// Counters are monotonic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    /// The in-process level.
    pub l1: L1Stats,
    /// The Redis level, when configured.
    pub l2: Option<L2Stats>,
    /// Loader runs.
    pub loads: LoadStats,
    /// Lookups answered by a negative ("not found") entry.
    pub negative_hits: u64,
    /// Stale values served (fail-safe plus soft timeouts).
    pub stale_served: u64,
    /// Stale values served because the loader or L2 failed.
    pub fail_safe: u64,
    /// Stale values served because the load exceeded the soft timeout.
    pub soft_timeouts: u64,
}

/// Statistics of L1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L1Stats {
    /// Lookups answered by a fresh L1 entry.
    pub hits: u64,
    /// Lookups L1 could not answer.
    pub misses: u64,
    /// Entries held (approximate: moka applies pending writes lazily).
    pub entries: u64,
    /// Sum of entry weights in bytes.
    pub weighted_bytes: u64,
    /// Configured capacity in bytes.
    pub capacity_bytes: u64,
    /// Entries evicted to stay within capacity.
    pub evictions: u64,
    /// Entries removed after their stale horizon passed.
    pub expirations: u64,
}

/// Statistics of L2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L2Stats {
    /// Lookups answered by a fresh L2 entry.
    pub hits: u64,
    /// Lookups L2 could not answer with a fresh entry.
    pub misses: u64,
    /// Entries refused by the codec (corrupt, truncated, foreign, oversized).
    pub corrupt: u64,
    /// Calls that failed with an error.
    pub errors: u64,
    /// Calls that exceeded the timeout.
    pub timeouts: u64,
    /// Calls skipped because the L2 breaker was open.
    pub skipped_open: u64,
    /// Entries written.
    pub writes: u64,
    /// Values too large for L2 (kept in L1 only).
    pub oversize: u64,
    /// The L2 breaker state: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Invalidations waiting to be replayed on L2 after an outage.
    pub pending_invalidations: u64,
    /// The invalidation backplane.
    pub backplane: BackplaneStats,
}

/// Statistics of the invalidation backplane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackplaneStats {
    /// Whether the backplane is enabled.
    pub enabled: bool,
    /// Whether the subscriber is connected.
    pub connected: bool,
    /// Messages from other nodes applied.
    pub received: u64,
    /// Messages published.
    pub published: u64,
    /// Re-subscriptions after a lost connection (each clears L1).
    pub reconnects: u64,
}

/// Statistics of loader runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadStats {
    /// Loader runs.
    pub total: u64,
    /// Successful runs.
    pub ok: u64,
    /// Failed runs (errors and panics).
    pub errors: u64,
    /// Runs cut by the hard timeout.
    pub timeouts: u64,
    /// Callers that joined a load already running for their key.
    pub coalesced: u64,
    /// Calls whose key was too long to cache.
    pub bypassed: u64,
    /// Mean loader latency, milliseconds (across workers: the largest worker's mean; read
    /// [`latency`](Self::latency) for exact merged figures).
    pub latency_mean_ms: f64,
    /// Slowest loader run, milliseconds.
    pub latency_max_ms: f64,
    /// Loader latency distribution; merged exactly across workers.
    #[serde(default)]
    pub latency: LatencyStats,
    /// Loader runs in progress now.
    #[serde(default)]
    pub in_flight: u64,
}

impl CacheStats {
    /// L1's hit ratio (0.0 ..= 1.0); `None` before the first lookup.
    pub fn l1_hit_ratio(&self) -> Option<f64> {
        ratio(self.l1.hits, self.l1.misses)
    }

    /// L2's hit ratio; `None` without L2 or before the first L2 lookup.
    pub fn l2_hit_ratio(&self) -> Option<f64> {
        self.l2.as_ref().and_then(|l2| ratio(l2.hits, l2.misses))
    }
}

#[allow(clippy::cast_precision_loss, reason = "a ratio")]
fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}

const L2_BREAKER_SEVERITY: &[&str] = &["open", "half_open", "closed"];

impl Stats for CacheStats {
    fn merge_rules(&self) -> Vec<FieldMerge> {
        vec![
            ("l2.breaker", Merge::Worst(L2_BREAKER_SEVERITY)),
            ("l2.backplane.enabled", Merge::Once),
            ("loads.latency_mean_ms", Merge::Max),
            ("loads.latency_max_ms", Merge::Max),
            ("loads.latency", Merge::Histogram),
        ]
    }
}

/// Live statistics of an HTTP response cache (`cache::response`), the stats of its handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseCacheStats {
    /// Responses served fresh from the cache.
    pub hits: u64,
    /// Stale responses served while revalidating in the background (`stale-while-revalidate`).
    pub stale: u64,
    /// Stale responses served because the origin failed (`stale-if-error`).
    pub stale_if_error: u64,
    /// Requests forwarded because nothing usable was stored.
    pub misses: u64,
    /// Requests the cache did not handle (method, credentials, `no-store`).
    pub bypassed: u64,
    /// Responses stored.
    pub stored: u64,
    /// Forwarded responses that were not storable.
    pub not_stored: u64,
    /// Responses not stored because the body exceeded `max_body_bytes`.
    pub too_large: u64,
    /// Requests that waited for a concurrent miss of the same URI.
    pub collapsed: u64,
    /// Background revalidations started.
    pub revalidations: u64,
    /// URIs invalidated by unsafe methods.
    pub invalidations: u64,
    /// The underlying two-level cache.
    pub store: CacheStats,
}

impl Stats for ResponseCacheStats {
    fn merge_rules(&self) -> Vec<FieldMerge> {
        // The same rules as the two-level cache's, under `store`.
        vec![
            ("store.l2.breaker", Merge::Worst(L2_BREAKER_SEVERITY)),
            ("store.l2.backplane.enabled", Merge::Once),
            ("store.loads.latency_mean_ms", Merge::Max),
            ("store.loads.latency_max_ms", Merge::Max),
            ("store.loads.latency", Merge::Histogram),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn window() -> BreakerWindow {
        BreakerWindow {
            kind: "count".into(),
            size: 10,
            calls: 4,
            failures: 1,
            slow_calls: 0,
            failure_rate: Some(25.0),
            slow_call_rate: None,
        }
    }

    #[test]
    fn breaker_stats_keep_their_wire_shape_both_ways() {
        let single = BreakerStats {
            keyed: false,
            breaker: Some(BreakerSnapshot {
                state: BreakerState::HalfOpen,
                window: window(),
                retry_after_ms: None,
                half_open: Some(HalfOpenStats {
                    probes_left: 2,
                    ..HalfOpenStats::default()
                }),
                last_transition: None,
            }),
            keys: None,
            calls: CallCounts::default(),
            timeouts: 0,
            rejected: 1,
            stale: 0,
            transitions: 2,
        };
        let v = serde_json::to_value(&single).unwrap();
        assert_eq!(v["state"], "half_open");
        assert_eq!(v["retry_after_ms"], json!(null), "null, not missing");
        assert_eq!(v["window"]["slow_call_rate"], json!(null));
        assert!(v.get("keys").is_none() && v.get("breakers").is_none());
        assert_eq!(serde_json::from_value::<BreakerStats>(v).unwrap(), single);

        let mut states = StateCounts::default();
        states.add(BreakerState::Closed);
        states.add(BreakerState::Open);
        let keyed = BreakerStats {
            keyed: true,
            breaker: None,
            keys: Some(KeyedStats {
                keys: 2,
                max_keys: 100,
                evictions: 0,
                states,
                breakers: vec![KeyedBreaker {
                    key: "a".into(),
                    breaker: BreakerSnapshot {
                        state: BreakerState::Open,
                        window: window(),
                        retry_after_ms: Some(900),
                        half_open: None,
                        last_transition: None,
                    },
                }],
            }),
            ..single
        };
        let v = serde_json::to_value(&keyed).unwrap();
        assert!(v.get("state").is_none());
        assert_eq!(v["states"]["open"], 1);
        assert_eq!(v["breakers"][0]["key"], "a");
        assert_eq!(v["breakers"][0]["state"], "open");
        let back: BreakerStats = serde_json::from_value(v).unwrap();
        assert_eq!(back.state(), Some(BreakerState::Open));
        assert_eq!(back, keyed);
    }

    #[test]
    fn cache_stats_read_older_reports_without_latency() {
        let v = json!({
            "l1": {"hits": 3, "misses": 1, "entries": 2, "weighted_bytes": 10,
                   "capacity_bytes": 100, "evictions": 0, "expirations": 0},
            "l2": null,
            "loads": {"total": 1, "ok": 1, "errors": 0, "timeouts": 0, "coalesced": 0,
                      "bypassed": 0, "latency_mean_ms": 1.0, "latency_max_ms": 1.0},
            "negative_hits": 0, "stale_served": 0, "fail_safe": 0, "soft_timeouts": 0
        });
        let stats: CacheStats = serde_json::from_value(v).unwrap();
        assert_eq!(stats.l1_hit_ratio(), Some(0.75));
        assert_eq!(stats.l2_hit_ratio(), None);
        assert_eq!(stats.loads.latency.count, 0);
    }
}
