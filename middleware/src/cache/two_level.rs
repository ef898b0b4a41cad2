//! [`TwoLevelCache`]: moka L1, optional Redis L2, single-flight loads with fail-safe.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use moka::Expiry;
use moka::notification::RemovalCause;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::codec::{BoxError, JsonCodec, ValueCodec};
use super::config::{CacheConfig, ConfigError, EvictionPolicy};
use super::entry::{CacheError, CacheKey, CachedEntry, Entry, MIN_PHYSICAL};
use super::handle::CacheHandle;
use super::stats::{CacheStats, Counters, L1Stats};

/// Bookkeeping bytes added to every entry's weight (moka's per-entry overhead, measured by its
/// maintainer at ~152-184 B on 64-bit, plus our `Entry`).
pub(crate) const ENTRY_OVERHEAD: usize = 160;

pub(crate) type L1<V> = moka::future::Cache<Arc<str>, Arc<Entry<V>>>;
pub(crate) type Weigher<V> = Arc<dyn Fn(&V) -> usize + Send + Sync>;
type Loader<V> = Box<dyn FnOnce() -> BoxFuture<'static, Result<Option<V>, BoxError>> + Send>;
type FlightResult<V> = Result<(Arc<Entry<V>>, Served), CacheError>;

/// How a load was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    Fresh,
    Stale,
}

/// Per-entry overrides of the cache-wide TTLs, for [`TwoLevelCache::set_with`] and
/// [`TwoLevelCache::get_or_load_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryOptions {
    /// Freshness of this entry (jitter is still added). `None` uses the cache's TTL.
    pub ttl: Option<Duration>,
    /// Fail-safe horizon of this entry. `None` uses the cache's `max_stale`.
    pub max_stale: Option<Duration>,
}

impl EntryOptions {
    /// Options with this TTL.
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            max_stale: None,
        }
    }

    /// Adds a fail-safe horizon.
    #[must_use]
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = Some(max_stale);
        self
    }
}

/// Per-entry expiry for moka: keep each entry until its stale horizon.
struct StaleHorizon;

impl<V> Expiry<Arc<str>, Arc<Entry<V>>> for StaleHorizon {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<Entry<V>>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.physical)
    }

    fn expire_after_update(
        &self,
        _key: &Arc<str>,
        value: &Arc<Entry<V>>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.physical)
    }
}

pub(crate) fn build_l1<V>(config: &CacheConfig, stats: &Arc<Counters>) -> L1<V>
where
    V: Clone + Send + Sync + 'static,
{
    let listener_stats = Arc::clone(stats);
    let policy = match config.l1_eviction {
        EvictionPolicy::TinyLfu => moka::policy::EvictionPolicy::tiny_lfu(),
        EvictionPolicy::Lru => moka::policy::EvictionPolicy::lru(),
    };
    moka::future::Cache::builder()
        .name(&config.name)
        .max_capacity(config.l1_capacity_bytes)
        .eviction_policy(policy)
        .weigher(|_k: &Arc<str>, v: &Arc<Entry<V>>| v.weight)
        .expire_after(StaleHorizon)
        .eviction_listener(move |_k, _v, cause| match cause {
            RemovalCause::Size => listener_stats.evictions_size.inc(),
            RemovalCause::Expired => listener_stats.evictions_expired.inc(),
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        })
        .build()
}

/// Where a write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// L1, L2, and an invalidation to other nodes.
    Everywhere,
    /// L1 and L2, no invalidation (other nodes' copies stay valid).
    Shared,
    /// This node's L1 only.
    Local,
}

/// What to drop from L1 (locally, or on every node through the backplane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inval {
    Key(String),
    Prefix(String),
    All,
}

impl Inval {
    fn matches(&self, key: &str) -> bool {
        match self {
            Self::Key(k) => k == key,
            Self::Prefix(p) => key.starts_with(p.as_str()),
            Self::All => true,
        }
    }
}

struct FlightState {
    id: u64,
    /// Set by an invalidation or a write racing the load: the result is returned to the waiters
    /// but not stored.
    discard: AtomicBool,
}

struct Flight<V> {
    state: Arc<FlightState>,
    result: Shared<BoxFuture<'static, FlightResult<V>>>,
}

pub(crate) struct Inner<V> {
    pub(crate) config: ArcSwap<CacheConfig>,
    pub(crate) version: AtomicU64,
    pub(crate) l1: ArcSwap<L1<V>>,
    /// The previous L1 while a resize migrates entries out of it.
    migrating: Mutex<Option<L1<V>>>,
    flights: Mutex<HashMap<Arc<str>, Flight<V>>>,
    next_flight: AtomicU64,
    weigher: Weigher<V>,
    has_l2: bool,
    pub(crate) apply_lock: crate::control::ApplyLock,
    pub(crate) stats: Arc<Counters>,
    #[cfg(feature = "redis")]
    pub(crate) l2: Option<super::l2::L2<V>>,
    #[cfg(feature = "redis")]
    pub(crate) background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    #[cfg(feature = "redis")]
    pub(crate) started: AtomicBool,
}

impl<V> Drop for Inner<V> {
    fn drop(&mut self) {
        #[cfg(feature = "redis")]
        if let Some(task) = self.background.lock().take() {
            task.abort();
        }
    }
}

/// Removes a finished (or panicked, or aborted) flight from the map.
struct FlightGuard<V: Clone + Send + Sync + 'static> {
    inner: Arc<Inner<V>>,
    key: Arc<str>,
    id: u64,
}

impl<V: Clone + Send + Sync + 'static> Drop for FlightGuard<V> {
    fn drop(&mut self) {
        let mut flights = self.inner.flights.lock();
        if flights
            .get(&self.key)
            .is_some_and(|f| f.state.id == self.id)
        {
            flights.remove(&self.key);
        }
    }
}

fn jittered(base: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return base;
    }
    let max = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    base + Duration::from_millis(fastrand::u64(0..=max))
}

impl<V> Inner<V>
where
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new_entry(
        &self,
        key: &str,
        value: Option<V>,
        now: Instant,
        opts: EntryOptions,
    ) -> Entry<V> {
        let cfg = self.config.load();
        let negative = value.is_none();
        let base = match (negative, opts.ttl) {
            (true, _) => cfg.negative_ttl().unwrap_or(Duration::ZERO),
            (false, Some(ttl)) => ttl,
            (false, None) => cfg.ttl(),
        };
        let jitter = jittered(Duration::ZERO, cfg.jitter());
        let ttl = base + jitter;
        let l1_ttl = if self.has_l2 && opts.ttl.is_none() && !negative {
            (cfg.l1_ttl() + jitter).min(ttl)
        } else {
            ttl
        };
        let max_stale = if negative {
            Duration::ZERO
        } else {
            opts.max_stale.unwrap_or_else(|| cfg.max_stale())
        };
        let fresh_until = now + ttl;
        let stale_until = fresh_until + max_stale;
        let weight = key.len() + value.as_ref().map_or(0, |v| (self.weigher)(v)) + ENTRY_OVERHEAD;
        Entry {
            value,
            stored_at: now,
            initial_age: Duration::ZERO,
            l1_fresh_until: now + l1_ttl,
            fresh_until,
            stale_until,
            physical: (ttl + max_stale).max(MIN_PHYSICAL),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "L2 only"))]
    pub(crate) fn weigh(&self, key: &str, value: Option<&V>) -> u32 {
        let w = key.len() + value.map_or(0, |v| (self.weigher)(v)) + ENTRY_OVERHEAD;
        u32::try_from(w).unwrap_or(u32::MAX)
    }

    fn l1(&self) -> Arc<L1<V>> {
        self.l1.load_full()
    }

    /// Stores in L1 unless the flight was discarded; re-checks after the insert so an
    /// invalidation racing the store always wins.
    async fn store_l1(&self, key: &Arc<str>, entry: &Arc<Entry<V>>, state: Option<&FlightState>) {
        if state.is_some_and(|s| s.discard.load(Ordering::SeqCst)) {
            return;
        }
        let l1 = self.l1();
        l1.insert(Arc::clone(key), Arc::clone(entry)).await;
        if state.is_some_and(|s| s.discard.load(Ordering::SeqCst)) {
            l1.invalidate(key).await;
        }
        self.stats.l1_size(l1.entry_count(), l1.weighted_size());
    }

    /// Marks running loads for matching keys as discarded and forgets them, so the next caller
    /// starts a fresh load.
    fn discard_flights(&self, what: &Inval) {
        let mut flights = self.flights.lock();
        flights.retain(|key, flight| {
            if what.matches(key) {
                flight.state.discard.store(true, Ordering::SeqCst);
                false
            } else {
                true
            }
        });
    }

    /// Drops matching entries from this node's L1 (and the L1 being migrated out of, if any).
    pub(crate) async fn evict_local(&self, what: &Inval) {
        self.discard_flights(what);
        let old = self.migrating.lock().clone();
        for l1 in old.into_iter().chain(std::iter::once((*self.l1()).clone())) {
            match what {
                Inval::Key(k) => l1.invalidate(k.as_str()).await,
                Inval::All => l1.invalidate_all(),
                Inval::Prefix(p) => {
                    let keys: Vec<Arc<str>> = l1
                        .iter()
                        .filter(|(k, _)| k.starts_with(p.as_str()))
                        .map(|(k, _)| Arc::clone(&*k))
                        .collect();
                    for k in keys {
                        l1.invalidate(&k).await;
                    }
                }
            }
        }
    }

    /// Reads L1, returning the entry if it is within its stale horizon.
    async fn l1_entry(&self, key: &str, now: Instant) -> Option<Arc<Entry<V>>> {
        let l1 = self.l1();
        // moka's `get` future is ~900 bytes and nearly always ready at once: poll it in place
        // so it does not enlarge (and get copied along with) every caller's future; box it in
        // the rare case it has to wait for moka's maintenance lock.
        let found = match l1.get(key).now_or_never() {
            Some(found) => found,
            None => Box::pin(l1.get(key)).await,
        };
        found.filter(|e| now < e.stale_until)
    }

    #[cfg(feature = "redis")]
    fn ensure_started(self: &Arc<Self>) {
        if !self.started.load(Ordering::Acquire) {
            super::l2::start_background(self);
        }
    }

    #[cfg(not(feature = "redis"))]
    fn ensure_started(self: &Arc<Self>) {}

    /// Joins the running load for `key` or starts one, then waits for it (or for the soft
    /// timeout when a stale fallback exists).
    async fn load(
        self: &Arc<Self>,
        key: &str,
        stale: Option<Arc<Entry<V>>>,
        opts: EntryOptions,
        loader: Loader<V>,
    ) -> FlightResult<V> {
        let result = {
            let mut flights = self.flights.lock();
            if let Some(flight) = flights.get(key) {
                self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                flight.result.clone()
            } else {
                let key: Arc<str> = Arc::from(key);
                let state = Arc::new(FlightState {
                    id: self.next_flight.fetch_add(1, Ordering::Relaxed),
                    discard: AtomicBool::new(false),
                });
                let task = tokio::spawn(run_flight(
                    Arc::clone(self),
                    Arc::clone(&key),
                    Arc::clone(&state),
                    stale.clone(),
                    opts,
                    loader,
                ));
                let result = async move { task.await.unwrap_or(Err(CacheError::Panicked)) }
                    .boxed()
                    .shared();
                flights.insert(
                    key,
                    Flight {
                        state,
                        result: result.clone(),
                    },
                );
                result
            }
        };
        let soft = self.config.load().soft_timeout();
        let outcome = match (stale, soft) {
            (Some(stale), Some(soft)) => match tokio::time::timeout(soft, result).await {
                Ok(r) => r,
                Err(_) => {
                    self.stats.stale_soft_timeout.inc();
                    tracing::debug!(cache = %self.stats.name, key, "soft timeout: serving stale");
                    return Ok((stale, Served::Stale));
                }
            },
            _ => result.await,
        };
        if let Ok((_, Served::Stale)) = &outcome {
            self.stats.stale_fail_safe.inc();
        }
        outcome
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let l1 = self.l1();
        let cfg = self.config.load();
        let l1_stats = L1Stats {
            hits: self.stats.l1_hits.get(),
            misses: self.stats.l1_misses.get(),
            entries: l1.entry_count(),
            weighted_bytes: l1.weighted_size(),
            capacity_bytes: cfg.l1_capacity_bytes,
            evictions: self.stats.evictions_size.get(),
            expirations: self.stats.evictions_expired.get(),
        };
        #[cfg(feature = "redis")]
        let l2 = self.l2.as_ref().map(|l2| l2.stats(self));
        #[cfg(not(feature = "redis"))]
        let l2 = None;
        self.stats
            .l1_size(l1_stats.entries, l1_stats.weighted_bytes);
        self.stats.snapshot(l1_stats, l2)
    }

    /// Swaps in a new configuration; rebuilds L1 when its capacity or policy changed and returns
    /// the migration to run (moka cannot resize in place).
    pub(crate) fn commit(self: &Arc<Self>, next: CacheConfig) -> Option<BoxFuture<'static, ()>> {
        let prev = self.config.swap(Arc::new(next));
        self.version.fetch_add(1, Ordering::AcqRel);
        let cfg = self.config.load();
        if prev.l1_capacity_bytes == cfg.l1_capacity_bytes && prev.l1_eviction == cfg.l1_eviction {
            return None;
        }
        let fresh: L1<V> = build_l1(&cfg, &self.stats);
        let old = self.l1.swap(Arc::new(fresh));
        tracing::info!(
            cache = %cfg.name,
            from = prev.l1_capacity_bytes,
            to = cfg.l1_capacity_bytes,
            "cache L1 resized; migrating entries"
        );
        let old = (*old).clone();
        *self.migrating.lock() = Some(old.clone());
        let this = Arc::clone(self);
        // Clears `migrating` when the migration ends or is dropped without running.
        let done = ClearMigrating(Arc::clone(self));
        Some(
            async move {
                let _done = done;
                this.migrate(old).await;
            }
            .boxed(),
        )
    }

    /// Copies entries from the old L1 into the current one (which applies its own capacity),
    /// without overwriting newer writes or resurrecting invalidated keys.
    async fn migrate(&self, old: L1<V>) {
        let now = Instant::now();
        let target = self.l1();
        let keys: Vec<Arc<str>> = old.iter().map(|(k, _)| Arc::clone(&*k)).collect();
        for key in keys {
            let Some(entry) = old.get(&key).await else {
                continue;
            };
            if now >= entry.stale_until {
                continue;
            }
            target.entry(Arc::clone(&key)).or_insert(entry).await;
            // An invalidation that ran during the copy removed the key from `old` first.
            if !old.contains_key(&key) {
                target.invalidate(&key).await;
            }
        }
        old.invalidate_all();
        target.run_pending_tasks().await;
        self.stats
            .l1_size(target.entry_count(), target.weighted_size());
    }
}

struct ClearMigrating<V>(Arc<Inner<V>>);

impl<V> Drop for ClearMigrating<V> {
    fn drop(&mut self) {
        *self.0.migrating.lock() = None;
    }
}

async fn run_flight<V>(
    inner: Arc<Inner<V>>,
    key: Arc<str>,
    state: Arc<FlightState>,
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))] mut fallback: Option<Arc<Entry<V>>>,
    opts: EntryOptions,
    loader: Loader<V>,
) -> FlightResult<V>
where
    V: Clone + Send + Sync + 'static,
{
    let _guard = FlightGuard {
        inner: Arc::clone(&inner),
        key: Arc::clone(&key),
        id: state.id,
    };
    let cfg = inner.config.load_full();

    #[cfg(feature = "redis")]
    if let Some(l2) = &inner.l2 {
        match l2.get(&inner, &key).await {
            super::l2::L2Read::Hit(entry) => {
                let now = Instant::now();
                if now < entry.fresh_until {
                    inner.stats.l2_hits.inc();
                    let entry = Arc::new(entry);
                    inner.store_l1(&key, &entry, Some(&state)).await;
                    return Ok((entry, Served::Fresh));
                }
                inner.stats.l2_misses.inc();
                if fallback
                    .as_ref()
                    .is_none_or(|f| f.fresh_until < entry.fresh_until)
                {
                    fallback = Some(Arc::new(entry));
                }
            }
            super::l2::L2Read::Miss => inner.stats.l2_misses.inc(),
            super::l2::L2Read::Unavailable => {
                inner.stats.l2_misses.inc();
                // L2 cannot be asked; an L1 copy that is still fresh by the value's own TTL
                // is as good as what L2 would have said.
                let now = Instant::now();
                if let Some(f) = fallback.as_ref().filter(|f| now < f.fresh_until) {
                    let until = (now + cfg.l1_ttl()).min(f.fresh_until);
                    let entry = Arc::new(f.refreshed_until(now, until));
                    inner.store_l1(&key, &entry, Some(&state)).await;
                    return Ok((entry, Served::Fresh));
                }
            }
        }
    }

    let started = Instant::now();
    let loading = inner.stats.load_started();
    let loaded = AssertUnwindSafe(loader()).catch_unwind();
    let result = match cfg.hard_timeout() {
        Some(limit) => match tokio::time::timeout(limit, loaded).await {
            Ok(r) => r,
            Err(_) => Ok(Err(LoadFailure::Timeout(limit).into())),
        },
        None => loaded.await,
    };
    drop(loading);
    let now = Instant::now();
    inner
        .stats
        .load_latency(now.saturating_duration_since(started));
    let error = match result {
        Ok(Ok(value)) => {
            inner.stats.loads_ok.inc();
            let negative = value.is_none();
            let entry = Arc::new(inner.new_entry(&key, value, now, opts));
            if negative && cfg.negative_ttl().is_none() {
                return Ok((entry, Served::Fresh));
            }
            inner.store_l1(&key, &entry, Some(&state)).await;
            #[cfg(feature = "redis")]
            if let Some(l2) = &inner.l2 {
                let background = cfg.redis.as_ref().is_some_and(|r| r.background_writes);
                if background {
                    let (inner2, key2, entry2, state2) = (
                        Arc::clone(&inner),
                        Arc::clone(&key),
                        Arc::clone(&entry),
                        Arc::clone(&state),
                    );
                    tokio::spawn(async move {
                        if let Some(l2) = &inner2.l2 {
                            l2.store(&inner2, &key2, &entry2, false, Some(&state2.discard))
                                .await;
                        }
                    });
                } else {
                    l2.store(&inner, &key, &entry, false, Some(&state.discard))
                        .await;
                }
            }
            return Ok((entry, Served::Fresh));
        }
        Ok(Err(e)) => match e.downcast::<LoadFailure>() {
            Ok(timeout) => {
                inner.stats.loads_timeout.inc();
                let LoadFailure::Timeout(limit) = *timeout;
                CacheError::Timeout(limit)
            }
            Err(e) => {
                inner.stats.loads_error.inc();
                CacheError::Load(Arc::from(e))
            }
        },
        Err(_panic) => {
            inner.stats.loads_error.inc();
            CacheError::Panicked
        }
    };
    tracing::debug!(cache = %cfg.name, key = %key, error = %error, "cache load failed");
    match fallback.filter(|f| now < f.stale_until) {
        Some(stale) => {
            // Fail-safe: serve the stale value and treat it as fresh for the throttle period,
            // so a failing origin is retried at most once per period.
            let throttled = Arc::new(stale.refreshed_until(now, now + cfg.fail_safe_throttle()));
            inner.store_l1(&key, &throttled, Some(&state)).await;
            tracing::debug!(cache = %cfg.name, key = %key, "fail-safe: serving stale value");
            Ok((throttled, Served::Stale))
        }
        None => Err(error),
    }
}

#[derive(Debug, thiserror::Error)]
enum LoadFailure {
    #[error("load timed out after {0:?}")]
    Timeout(Duration),
}

/// A two-level cache: moka L1 in process, optional Redis L2 shared by every node, and
/// single-flight loads with fail-safe. See the [module docs](super) for the guarantees.
///
/// Cheap to clone; clones share the cache.
pub struct TwoLevelCache<K: ?Sized, V> {
    inner: Arc<Inner<V>>,
    _key: PhantomData<fn(&K)>,
}

impl<K: ?Sized, V> Clone for TwoLevelCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _key: PhantomData,
        }
    }
}

impl<K: ?Sized, V> fmt::Debug for TwoLevelCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cfg = self.inner.config.load();
        f.debug_struct("TwoLevelCache")
            .field("name", &cfg.name)
            .field("l2", &self.inner.has_l2)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TwoLevelCache`] with a custom weigher or L2 codec.
#[must_use]
pub struct TwoLevelCacheBuilder<K: ?Sized, V> {
    config: CacheConfig,
    weigher: Weigher<V>,
    codec: Option<Arc<dyn ValueCodec<V>>>,
    _key: PhantomData<fn(&K)>,
}

impl<K: ?Sized, V: 'static> fmt::Debug for TwoLevelCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoLevelCacheBuilder")
            .field("config", &self.config)
            .field("codec", &self.codec.as_ref().map(|c| c.id()))
            .finish_non_exhaustive()
    }
}

impl<K, V> TwoLevelCacheBuilder<K, V>
where
    K: CacheKey + ?Sized,
    V: Clone + Send + Sync + 'static,
{
    /// Sets how many bytes a value weighs in L1 (the key and a fixed overhead are added). The
    /// default is `size_of::<V>()`, which undercounts values owning heap data.
    pub fn weigher(mut self, weigher: impl Fn(&V) -> usize + Send + Sync + 'static) -> Self {
        self.weigher = Arc::new(weigher);
        self
    }

    /// Sets the codec of L2 payloads (required when a Redis L2 is configured).
    pub fn codec(mut self, codec: impl ValueCodec<V>) -> Self {
        self.codec = Some(Arc::new(codec));
        self
    }

    /// Validates the configuration and builds the cache. Needs no runtime and no Redis: the L2
    /// connection and the backplane start on first use and reconnect by themselves.
    pub fn build(self) -> Result<TwoLevelCache<K, V>, ConfigError> {
        self.config.validate()?;
        let stats = Arc::new(Counters::new(&self.config.name));
        let l1 = build_l1(&self.config, &stats);
        #[cfg(feature = "redis")]
        let l2 = match &self.config.redis {
            Some(redis) => {
                let Some(codec) = self.codec else {
                    return Err(ConfigError::Empty {
                        field: "redis (a value codec is required for L2)",
                    });
                };
                Some(super::l2::L2::new(
                    &self.config,
                    redis,
                    codec,
                    Arc::clone(&stats),
                )?)
            }
            None => None,
        };
        #[cfg(not(feature = "redis"))]
        if self.config.redis.is_some() {
            tracing::warn!(
                cache = %self.config.name,
                "cache.redis is set but palisade was built without the `redis` feature; L1 only"
            );
        }
        #[cfg(not(feature = "redis"))]
        let _ = self.codec;
        let has_l2 = cfg!(feature = "redis") && self.config.redis.is_some();
        let inner = Arc::new(Inner {
            config: ArcSwap::from_pointee(self.config),
            version: AtomicU64::new(0),
            l1: ArcSwap::from_pointee(l1),
            migrating: Mutex::new(None),
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            weigher: self.weigher,
            has_l2,
            apply_lock: crate::control::ApplyLock::new(),
            stats,
            #[cfg(feature = "redis")]
            l2,
            #[cfg(feature = "redis")]
            background: Mutex::new(None),
            #[cfg(feature = "redis")]
            started: AtomicBool::new(false),
        });
        #[cfg(feature = "redis")]
        if tokio::runtime::Handle::try_current().is_ok() {
            inner.ensure_started();
        }
        Ok(TwoLevelCache {
            inner,
            _key: PhantomData,
        })
    }
}

impl<K, V> TwoLevelCache<K, V>
where
    K: CacheKey + ?Sized,
    V: Clone + Send + Sync + 'static,
{
    /// A cache whose L2 payloads (if L2 is configured) are JSON.
    ///
    /// # Errors
    /// When the configuration breaks a rule.
    pub fn new(config: CacheConfig) -> Result<Self, ConfigError>
    where
        V: Serialize + DeserializeOwned,
    {
        Self::builder(config).codec(JsonCodec::<V>::new()).build()
    }

    /// A builder, for a custom weigher or codec.
    pub fn builder(config: CacheConfig) -> TwoLevelCacheBuilder<K, V> {
        TwoLevelCacheBuilder {
            config,
            weigher: Arc::new(|_| std::mem::size_of::<V>()),
            codec: None,
            _key: PhantomData,
        }
    }

    /// The runtime handle (stats, settings, invalidation), also a control-plane component.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.inner) as Arc<dyn super::handle::CacheControl>)
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<CacheConfig> {
        self.inner.config.load_full()
    }

    /// Live statistics.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// A fresh value from L1, else from L2. Stale and negative entries are `None`.
    pub async fn get(&self, key: &K) -> Option<V> {
        self.get_entry(key)
            .await
            .filter(CachedEntry::is_fresh)
            .and_then(CachedEntry::into_value)
    }

    /// The entry for `key` with its age and freshness, including stale entries within their
    /// fail-safe horizon and negative entries: L1 first; L2 when L1 has no fresh copy.
    pub async fn get_entry(&self, key: &K) -> Option<CachedEntry<V>> {
        let key = key.cache_key();
        self.get_entry_str(&key).await
    }

    pub(crate) async fn get_entry_str(&self, key: &str) -> Option<CachedEntry<V>> {
        let inner = &self.inner;
        let now = Instant::now();
        let local = inner.l1_entry(key, now).await;
        if let Some(e) = &local
            && now < e.l1_fresh_until
        {
            inner.stats.l1_hits.inc();
            if e.value.is_none() {
                inner.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            }
            return Some(e.view(now));
        }
        inner.stats.l1_misses.inc();
        #[cfg(feature = "redis")]
        if let Some(l2) = &inner.l2 {
            inner.ensure_started();
            if let super::l2::L2Read::Hit(entry) = l2.get(inner, key).await {
                let now = Instant::now();
                if now < entry.fresh_until {
                    inner.stats.l2_hits.inc();
                    let entry = Arc::new(entry);
                    inner.store_l1(&Arc::from(key), &entry, None).await;
                    return Some(entry.view(now));
                }
                inner.stats.l2_misses.inc();
                if local
                    .as_ref()
                    .is_none_or(|l| l.fresh_until < entry.fresh_until)
                {
                    return Some(entry.view(now));
                }
            } else {
                inner.stats.l2_misses.inc();
            }
        }
        local.map(|e| e.view(Instant::now()))
    }

    /// The value for `key`: from L1, else L2, else from `loader`, which runs once however many
    /// callers miss concurrently (in a task of its own, so a cancelled caller neither cancels
    /// it nor makes the others wait for a second run). The result is stored in both levels.
    ///
    /// If the loader fails, times out (hard timeout) or is slower than the soft timeout, and a
    /// stale value within `max_stale` exists, the stale value is returned instead.
    ///
    /// # Errors
    /// When the loader fails and there is nothing stale to serve. Redis errors are never
    /// returned: L2 failures are misses.
    pub async fn get_or_load<F, Fut, E>(&self, key: &K, loader: F) -> Result<V, CacheError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let value = self
            .get_or_load_with(key, EntryOptions::default(), move || async move {
                loader().await.map(Some)
            })
            .await?;
        value.ok_or(CacheError::Absent)
    }

    /// Like [`get_or_load`](Self::get_or_load) for loaders that may find nothing: `Ok(None)`
    /// is stored as a negative entry for `negative_ttl_ms` when negative caching is on.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_optional<F, Fut, E>(
        &self,
        key: &K,
        loader: F,
    ) -> Result<Option<V>, CacheError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.get_or_load_with(key, EntryOptions::default(), loader)
            .await
    }

    /// [`get_or_load_optional`](Self::get_or_load_optional) with per-entry TTLs.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_with<F, Fut, E>(
        &self,
        key: &K,
        opts: EntryOptions,
        loader: F,
    ) -> Result<Option<V>, CacheError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let key = key.cache_key();
        let inner = &self.inner;
        if key.len() > inner.config.load().max_key_bytes {
            inner.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            return loader()
                .await
                .map_err(|e| CacheError::Load(Arc::from(e.into())));
        }
        let now = Instant::now();
        let stale = match inner.l1_entry(&key, now).await {
            Some(e) if now < e.l1_fresh_until => {
                inner.stats.l1_hits.inc();
                if e.value.is_none() {
                    inner.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(e.value.clone());
            }
            other => other,
        };
        inner.stats.l1_misses.inc();
        inner.ensure_started();
        let boxed: Loader<V> =
            Box::new(move || async move { loader().await.map_err(Into::into) }.boxed());
        let (entry, _served) = inner.load(&key, stale, opts, boxed).await?;
        Ok(entry.value.clone())
    }

    /// Stores a value in L1 and L2 (awaiting the L2 write) and tells other nodes to drop their
    /// L1 copy. A load running for the key is not stored over it.
    pub async fn set(&self, key: &K, value: V) {
        self.set_with(key, value, EntryOptions::default()).await;
    }

    /// [`set`](Self::set) with per-entry TTLs.
    pub async fn set_with(&self, key: &K, value: V, opts: EntryOptions) {
        let key = key.cache_key();
        self.set_str(&key, Some(value), opts, Duration::ZERO, Write::Everywhere)
            .await;
    }

    /// Stores a value that was already `age` old (e.g. an HTTP response with an `Age`).
    pub(crate) async fn set_str(
        &self,
        key: &str,
        value: Option<V>,
        opts: EntryOptions,
        age: Duration,
        write: Write,
    ) {
        let inner = &self.inner;
        if key.len() > inner.config.load().max_key_bytes {
            inner.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        inner.ensure_started();
        inner.discard_flights(&Inval::Key(key.to_owned()));
        let mut entry = inner.new_entry(key, value, Instant::now(), opts);
        entry.initial_age = age;
        let entry = Arc::new(entry);
        let key: Arc<str> = Arc::from(key);
        inner.store_l1(&key, &entry, None).await;
        #[cfg(feature = "redis")]
        if let Some(l2) = &inner.l2
            && write != Write::Local
        {
            l2.store(inner, &key, &entry, write == Write::Everywhere, None)
                .await;
        }
        #[cfg(not(feature = "redis"))]
        let _ = write;
    }

    /// Removes `key` from L1 and L2 on this node and, through the backplane, from L1 on every
    /// node. A load running for the key is not stored.
    pub async fn invalidate(&self, key: &K) {
        let key = key.cache_key().into_owned();
        invalidate(&self.inner, Inval::Key(key)).await;
    }

    /// Removes every key starting with `prefix` (as [`CacheKey`] strings), on every level and
    /// node. L2 is scanned (`SCAN MATCH` + `UNLINK`), so this costs O(keys in the namespace).
    pub async fn invalidate_prefix(&self, prefix: &str) {
        invalidate(&self.inner, Inval::Prefix(prefix.to_owned())).await;
    }

    /// Removes every entry of this cache's namespace, on every level and node.
    pub async fn flush(&self) {
        invalidate(&self.inner, Inval::All).await;
    }

    /// Applies moka's pending maintenance (evictions, counts). For tests and benchmarks.
    pub async fn run_pending_tasks(&self) {
        self.inner.l1().run_pending_tasks().await;
    }
}

pub(crate) async fn invalidate<V>(inner: &Arc<Inner<V>>, what: Inval)
where
    V: Clone + Send + Sync + 'static,
{
    inner.ensure_started();
    inner.evict_local(&what).await;
    #[cfg(feature = "redis")]
    if let Some(l2) = &inner.l2 {
        l2.invalidate(inner, &what).await;
    }
}
