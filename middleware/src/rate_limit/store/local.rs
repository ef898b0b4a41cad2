//! The local keyed store: a fixed-size cell table in this process's memory.

use std::fmt;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Check, Store, StoreStats};
use crate::rate_limit::gcra::{Decision, Gcra};
use crate::rate_limit::key::KeyValue;
use crate::rate_limit::metrics::StoreMetrics;
use crate::rate_limit::table::{Counters, Set, Table, WAYS};

/// GCRA state for one policy in this process, with bounded memory.
///
/// `max_keys` is a hard bound: the table is allocated once (128 bytes per 7 keys, so 100 000 keys
/// take ~1.8 MB) and never grows; new keys evict idle keys first, then the key closest to idle
/// (see the [module docs](crate::rate_limit) for why this is not `governor`). Time comes from
/// [`tokio::time::Instant`], so tests can pause and advance it.
///
/// ```
/// use palisade::rate_limit::{Gcra, KeyValue, LocalStore, Store, Check};
/// use std::time::Duration;
///
/// let store = LocalStore::new(10_000);
/// let gcra = Gcra::new(10, Duration::from_secs(1), 2);
/// let key = KeyValue::Global;
/// let allowed = |c: Check| matches!(c, Check::Ready(d) if d.allowed);
/// assert!(allowed(store.check(&key, &gcra, 1)));
/// assert!(allowed(store.check(&key, &gcra, 1)));
/// assert!(!allowed(store.check(&key, &gcra, 1)));
/// assert_eq!(store.stats().keys, 1);
/// ```
pub struct LocalStore {
    sets: Box<[Set]>,
    counters: Counters,
    seed: u64,
    epoch: Instant,
    metrics: Option<StoreMetrics>,
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("capacity", &self.table().capacity())
            .field("keys", &self.counters.keys.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    /// A store holding at most `max_keys` keys (rounded down to a multiple of 7, at least 7).
    pub fn new(max_keys: usize) -> Self {
        let sets = (max_keys / WAYS).max(1);
        Self {
            sets: (0..sets).map(|_| Set::new()).collect(),
            counters: Counters::default(),
            seed: fastrand::u64(..),
            epoch: Instant::now(),
            metrics: None,
        }
    }

    pub(crate) fn with_metrics(mut self, metrics: StoreMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn table(&self) -> Table<'_> {
        Table::new(&self.sets, &self.counters, 1)
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Checks by a precomputed key hash (see [`LocalStore::hash`]): the cheapest entry point.
    #[inline]
    pub fn check_hash(&self, hash: u64, gcra: &Gcra, cost: u32) -> Decision {
        let table = self.table();
        let (decision, event) = table.check(hash, self.now_ns(), gcra, cost);
        if let Some(m) = &self.metrics {
            m.record(event, self.counters.keys.load(Ordering::Relaxed));
        }
        decision
    }

    /// The hash this store uses for `key`.
    #[inline]
    pub fn hash(&self, key: &KeyValue<'_>) -> u64 {
        key.hash_with(self.seed)
    }
}

impl Store for LocalStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    #[inline]
    fn check(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Check {
        Check::Ready(self.check_hash(self.hash(key), gcra, cost))
    }

    fn peek(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Option<Decision> {
        Some(self.table().peek(self.hash(key), self.now_ns(), gcra, cost))
    }

    fn refund(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) {
        self.table().refund(self.hash(key), gcra, cost);
    }

    fn rescale(&self, old: &Gcra, new: &Gcra) {
        self.table().rescale(self.now_ns(), old, new);
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.counters.keys.load(Ordering::Relaxed),
            capacity: self.table().capacity(),
            evictions_idle: self.counters.evicted_idle.load(Ordering::Relaxed),
            evictions_pressure: self.counters.evicted_pressure.load(Ordering::Relaxed),
            purged: self.counters.purged.load(Ordering::Relaxed),
            ..StoreStats::default()
        }
    }

    fn purge_idle(&self) -> u64 {
        let freed = self.table().purge_idle(self.now_ns());
        if let Some(m) = &self.metrics {
            m.keys
                .set(self.counters.keys.load(Ordering::Relaxed) as f64);
        }
        freed
    }

    fn reset(&self) -> Result<u64, &'static str> {
        let freed = self.table().clear();
        if let Some(m) = &self.metrics {
            m.keys
                .set(self.counters.keys.load(Ordering::Relaxed) as f64);
        }
        Ok(freed)
    }
}
