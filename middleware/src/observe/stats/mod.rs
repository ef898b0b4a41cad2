//! Live request statistics for the dashboard: HDR latency histograms over rolling windows,
//! counters by status class and route, in-flight gauge.
//!
//! [`StatsRecorder`] is built for the hot path: each thread records into its own shard (a
//! `parking_lot::Mutex` picked by thread, so uncontended in practice), and a shard hands its data
//! to the shared store once per second. Readers ([`traffic`](StatsRecorder::traffic),
//! [`take_delta`](StatsRecorder::take_delta), [`snapshot`](StatsRecorder::snapshot)) flush every
//! shard first, so they see every completed request.
//!
//! Windows: the short window is the last 10 one-second buckets (the current one included), the
//! long window is built from 10-second blocks and covers the last 51 to 60 seconds. Both are
//! reported with their nominal length (10 and 60). All percentiles come from histograms; merging
//! workers adds histograms, it never averages percentiles.
//!
//! Memory: an HDR histogram of this range is about 140 KiB; a recorder holds one per shard plus
//! 19 shared ones (10 seconds, 7 ten-second blocks, the delta and the cumulative histogram).

pub(crate) mod snapshot;

pub use crate::control::histogram::{
    CodecError, LATENCY_HIGH_US, LATENCY_LOW_US, LATENCY_SIGFIG, LatencyHistogram, MergeError,
};
pub use snapshot::{STATS_SNAPSHOT_VERSION, StatsSnapshot};

use std::collections::HashMap;

/// A map keyed by route template, with a fast hasher.
pub(crate) type RouteMap<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::control::model::{StatusCounts, Traffic};

/// The length of the short latency window, seconds.
pub const SHORT_WINDOW_SECS: u64 = 10;
/// The length of the long latency window, seconds.
pub const LONG_WINDOW_SECS: u64 = 60;
/// The route name under which routes beyond [`StatsConfig::max_routes`] are counted.
pub const OTHER_ROUTE: &str = "_other";

const SECONDS_SLOTS: usize = SHORT_WINDOW_SECS as usize;
const BLOCK_SECS: u64 = 10;
const BLOCK_SLOTS: usize = (LONG_WINDOW_SECS / BLOCK_SECS) as usize + 1;
const MAX_SHARDS: usize = 256;

/// A value on its own cache line(s), so shards do not false-share.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

/// The shard index of the current thread, for `mask + 1` (a power of two) shards.
pub(crate) fn shard_index(mask: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i) & mask
}

/// Settings of a [`StatsRecorder`].
///
/// ```
/// use palisade::observe::StatsConfig;
/// let config = StatsConfig::builder().shards(4).max_routes(64).build().unwrap();
/// assert_eq!(config.shards(), 4);
/// assert!(StatsConfig::builder().shards(3).build().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    shards: usize,
    max_routes: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self {
            shards: cpus.clamp(1, 16).next_power_of_two(),
            max_routes: 256,
        }
    }
}

impl StatsConfig {
    /// A builder starting from the defaults: one shard per CPU (rounded up to a power of two,
    /// at most 16), 256 routes.
    pub fn builder() -> StatsConfigBuilder {
        StatsConfigBuilder {
            config: Self::default(),
        }
    }

    /// Number of recording shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Number of distinct routes counted before the rest goes to `_other`.
    pub fn max_routes(&self) -> usize {
        self.max_routes
    }
}

/// Builds a validated [`StatsConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct StatsConfigBuilder {
    config: StatsConfig,
}

impl StatsConfigBuilder {
    /// Number of recording shards: a power of two from 1 to 256.
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = shards;
        self
    }

    /// Number of distinct routes counted (at least 1).
    pub fn max_routes(mut self, max_routes: usize) -> Self {
        self.config.max_routes = max_routes;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<StatsConfig, super::ConfigError> {
        let c = &self.config;
        if c.shards == 0 || c.shards > MAX_SHARDS || !c.shards.is_power_of_two() {
            return Err(super::ConfigError::StatsShards(c.shards));
        }
        if c.max_routes == 0 {
            return Err(super::ConfigError::ZeroMaxRoutes);
        }
        Ok(self.config)
    }
}

#[derive(Debug)]
struct ShardState {
    sec: u64,
    dirty: bool,
    status: StatusCounts,
    // Keyed by route template; foldhash: a few instructions per lookup where SipHash takes
    // a hundred, and the keys are the router's own templates (not attacker-chosen).
    routes: RouteMap<StatusCounts>,
    latency: LatencyHistogram,
}

#[derive(Debug)]
struct Shard {
    in_flight: AtomicI64,
    state: Mutex<ShardState>,
}

#[derive(Debug)]
struct Slot {
    tag: Option<u64>,
    latency: LatencyHistogram,
}

impl Slot {
    fn empty() -> Self {
        Self {
            tag: None,
            latency: LatencyHistogram::new(),
        }
    }

    /// Adds into this slot if it holds `tag` (or something older, which it replaces).
    fn add(&mut self, tag: u64, latency: &LatencyHistogram) {
        match self.tag {
            Some(t) if t == tag => {}
            Some(t) if t > tag => return,
            _ => {
                self.latency.reset();
                self.tag = Some(tag);
            }
        }
        // Same bounds everywhere; auto-resize covers foreign producers.
        let _ = self.latency.add(latency);
    }
}

#[derive(Debug)]
struct Central {
    seconds: Vec<Slot>,
    blocks: Vec<Slot>,
    delta: StatsSnapshot,
    total: StatsSnapshot,
}

impl Central {
    fn add_routes(
        routes: &mut std::collections::BTreeMap<String, StatusCounts>,
        route: &str,
        counts: &StatusCounts,
        max_routes: usize,
    ) {
        if let Some(c) = routes.get_mut(route) {
            c.add(counts);
        } else if route == OTHER_ROUTE
            || routes.len() - usize::from(routes.contains_key(OTHER_ROUTE)) < max_routes
        {
            routes.insert(route.to_owned(), *counts);
        } else {
            routes
                .entry(OTHER_ROUTE.to_owned())
                .or_default()
                .add(counts);
        }
    }

    fn add(
        &mut self,
        sec: u64,
        status: &StatusCounts,
        routes: &mut dyn Iterator<Item = (&str, &StatusCounts)>,
        latency: &LatencyHistogram,
        max_routes: usize,
    ) {
        self.seconds[(sec % SECONDS_SLOTS as u64) as usize].add(sec, latency);
        let block = sec / BLOCK_SECS;
        self.blocks[(block % BLOCK_SLOTS as u64) as usize].add(block, latency);
        for snap in [&mut self.delta, &mut self.total] {
            let _ = snap.latency.add(latency);
            snap.status.add(status);
        }
        for (route, counts) in routes {
            Self::add_routes(&mut self.delta.routes, route, counts, max_routes);
            Self::add_routes(&mut self.total.routes, route, counts, max_routes);
        }
    }

    fn short_window(&self, now: u64) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for slot in &self.seconds {
            if matches!(slot.tag, Some(tag) if tag <= now && tag + SHORT_WINDOW_SECS > now) {
                let _ = h.add(&slot.latency);
            }
        }
        h
    }

    fn long_window(&self, now: u64) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        let current = now / BLOCK_SECS;
        for slot in &self.blocks {
            if matches!(slot.tag, Some(tag) if tag <= current && tag * BLOCK_SECS + LONG_WINDOW_SECS > now)
            {
                let _ = h.add(&slot.latency);
            }
        }
        h
    }
}

struct Inner {
    config: StatsConfig,
    epoch: Instant,
    shards: Box<[Padded<Shard>]>,
    central: Mutex<Central>,
}

/// Live request statistics, cheap to record from many threads; see the [module docs](self).
///
/// Cloning is cheap: clones share the statistics.
///
/// ```
/// use palisade::observe::StatsRecorder;
/// use std::time::Duration;
///
/// let stats = StatsRecorder::default();
/// let guard = stats.begin();
/// assert_eq!(stats.in_flight(), 1);
/// drop(guard);
/// stats.record("/users/{id}", 200, Duration::from_millis(12));
/// stats.record("/users/{id}", 404, Duration::from_millis(2));
///
/// let traffic = stats.traffic();
/// assert_eq!(traffic.requests_total, 2);
/// assert_eq!(traffic.status.client_error, 1);
/// assert_eq!(traffic.latency[0].window_secs, 10);
/// assert_eq!(traffic.latency[0].count, 2);
///
/// // Heartbeats send deltas; a supervisor merges them.
/// let delta = stats.take_delta();
/// assert_eq!(delta.requests(), 2);
/// assert_eq!(stats.take_delta().requests(), 0);
/// ```
#[derive(Clone)]
pub struct StatsRecorder {
    inner: Arc<Inner>,
}

impl Default for StatsRecorder {
    fn default() -> Self {
        Self::new(StatsConfig::default())
    }
}

impl fmt::Debug for StatsRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsRecorder")
            .field("config", &self.inner.config)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Counts one request in flight until dropped; from [`StatsRecorder::begin`].
#[derive(Debug)]
#[must_use = "the request counts as in flight until the guard is dropped"]
pub struct InFlightGuard {
    stats: StatsRecorder,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.stats.end();
    }
}

impl StatsRecorder {
    /// A recorder with validated settings.
    pub fn new(config: StatsConfig) -> Self {
        let shards = (0..config.shards)
            .map(|_| {
                Padded(Shard {
                    in_flight: AtomicI64::new(0),
                    state: Mutex::new(ShardState {
                        sec: 0,
                        dirty: false,
                        status: StatusCounts::default(),
                        routes: RouteMap::default(),
                        latency: LatencyHistogram::new(),
                    }),
                })
            })
            .collect();
        let central = Central {
            seconds: (0..SECONDS_SLOTS).map(|_| Slot::empty()).collect(),
            blocks: (0..BLOCK_SLOTS).map(|_| Slot::empty()).collect(),
            delta: StatsSnapshot::default(),
            total: StatsSnapshot::default(),
        };
        Self {
            inner: Arc::new(Inner {
                config,
                epoch: Instant::now(),
                shards,
                central: Mutex::new(central),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &StatsConfig {
        &self.inner.config
    }

    fn shard(&self) -> &Shard {
        &self.inner.shards[shard_index(self.inner.shards.len() - 1)].0
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.inner.epoch).as_secs()
    }

    /// Counts a request in flight until the guard drops.
    pub fn begin(&self) -> InFlightGuard {
        self.shard().in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            stats: self.clone(),
        }
    }

    /// Counts a request in flight until [`end`](Self::end) (the guard-free form of
    /// [`begin`](Self::begin), for layers that track completion themselves).
    pub fn start(&self) {
        self.shard().in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends one request counted by [`start`](Self::start).
    pub fn end(&self) {
        self.shard().in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        let sum: i64 = self
            .inner
            .shards
            .iter()
            .map(|s| s.0.in_flight.load(Ordering::Relaxed))
            .sum();
        u64::try_from(sum).unwrap_or(0)
    }

    /// Records one completed request: its route template, status code (0 = failed without a
    /// response, counted as a server error) and latency.
    pub fn record(&self, route: &str, status: u16, latency: Duration) {
        self.record_at(route, status, latency, Instant::now());
    }

    /// [`record`](Self::record) with the completion time already read.
    pub fn record_at(&self, route: &str, status: u16, latency: Duration, now: Instant) {
        let sec = self.second(now);
        let max_routes = self.inner.config.max_routes;
        let mut state = self.shard().state.lock();
        if state.dirty && state.sec != sec {
            self.flush(&mut state);
        }
        state.sec = sec;
        state.dirty = true;
        state.latency.record(latency);
        state.status.record(status);
        if let Some(c) = state.routes.get_mut(route) {
            c.record(status);
        } else {
            let named = state.routes.len() - usize::from(state.routes.contains_key(OTHER_ROUTE));
            let key = if named < max_routes {
                route
            } else {
                OTHER_ROUTE
            };
            state.routes.entry(key.into()).or_default().record(status);
        }
    }

    /// Hands a shard's data to the shared store and clears it. Lock order: shard, then central.
    fn flush(&self, state: &mut ShardState) {
        if !state.dirty {
            return;
        }
        let max_routes = self.inner.config.max_routes;
        {
            let mut central = self.inner.central.lock();
            let mut routes = state
                .routes
                .iter()
                .filter(|(_, c)| c.total() > 0)
                .map(|(k, c)| (&**k, c));
            central.add(
                state.sec,
                &state.status,
                &mut routes,
                &state.latency,
                max_routes,
            );
        }
        state.latency.reset();
        state.status = StatusCounts::default();
        if state.routes.len() > max_routes {
            state.routes.clear();
        } else {
            state
                .routes
                .values_mut()
                .for_each(|c| *c = StatusCounts::default());
        }
        state.dirty = false;
    }

    fn flush_all(&self) {
        for shard in self.inner.shards.iter() {
            let mut state = shard.0.state.lock();
            self.flush(&mut state);
        }
    }

    /// Everything recorded or absorbed since the previous call (or since start), with the
    /// current in-flight count: the payload of a worker heartbeat.
    pub fn take_delta(&self) -> StatsSnapshot {
        self.flush_all();
        let mut delta = std::mem::take(&mut self.inner.central.lock().delta);
        delta.in_flight = self.in_flight();
        delta
    }

    /// Everything recorded or absorbed since start, with the current in-flight count.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.flush_all();
        let mut total = self.inner.central.lock().total.clone();
        total.in_flight = self.in_flight();
        total
    }

    /// Adds another recorder's snapshot or delta (e.g. a worker heartbeat) as if its requests
    /// completed now. Its `in_flight` gauge is ignored: a supervisor keeps each worker's latest
    /// value and sums them.
    pub fn absorb(&self, other: &StatsSnapshot) -> Result<(), MergeError> {
        if other.version != STATS_SNAPSHOT_VERSION {
            return Err(MergeError::Version {
                ours: STATS_SNAPSHOT_VERSION,
                theirs: other.version,
            });
        }
        let sec = self.second(Instant::now());
        let max_routes = self.inner.config.max_routes;
        let mut routes = other.routes.iter().map(|(k, c)| (k.as_str(), c));
        self.inner
            .central
            .lock()
            .add(sec, &other.status, &mut routes, &other.latency, max_routes);
        Ok(())
    }

    /// Latencies over the last `SHORT_WINDOW_SECS` (10) seconds.
    pub fn short_window(&self) -> LatencyHistogram {
        self.flush_all();
        let now = self.second(Instant::now());
        self.inner.central.lock().short_window(now)
    }

    /// Latencies over the last `LONG_WINDOW_SECS` (60) seconds, at 10-second granularity.
    pub fn long_window(&self) -> LatencyHistogram {
        self.flush_all();
        let now = self.second(Instant::now());
        self.inner.central.lock().long_window(now)
    }

    /// Totals, in-flight and the 10 s and 60 s latency windows in the admin model's shape.
    pub fn traffic(&self) -> Traffic {
        self.flush_all();
        let now = self.second(Instant::now());
        let central = self.inner.central.lock();
        Traffic {
            requests_total: central.total.requests(),
            in_flight: self.in_flight(),
            status: central.total.status,
            latency: vec![
                central.short_window(now).window(SHORT_WINDOW_SECS),
                central.long_window(now).window(LONG_WINDOW_SECS),
            ],
        }
    }
}
