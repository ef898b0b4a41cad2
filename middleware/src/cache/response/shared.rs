//! State shared by the layer, every service clone and the handle.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use metrics::Counter;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::config::ResponseCacheConfig;
use super::stored::HttpEntry;
use crate::cache::TwoLevelCache;
pub use crate::control::stats::ResponseCacheStats;

/// Metric: responses by how the cache handled them (`cache`, `result` = `hit` | `stale` |
/// `stale_if_error` | `miss` | `bypass`).
pub const METRIC_HTTP_RESPONSES: &str = "palisade_cache_http_responses_total";
/// Metric: responses stored (`cache`).
pub const METRIC_HTTP_STORED: &str = "palisade_cache_http_stored_total";

pub(crate) struct HttpCount {
    value: AtomicU64,
    metric: Counter,
}

impl HttpCount {
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

pub(crate) struct HttpCounters {
    pub(crate) hit: HttpCount,
    pub(crate) stale: HttpCount,
    pub(crate) stale_if_error: HttpCount,
    pub(crate) miss: HttpCount,
    pub(crate) bypass: HttpCount,
    pub(crate) stored: HttpCount,
    pub(crate) not_stored: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) collapsed: AtomicU64,
    pub(crate) revalidations: AtomicU64,
    pub(crate) invalidations: AtomicU64,
}

impl HttpCounters {
    fn new(name: &str) -> Self {
        static DESCRIBE: std::sync::Once = std::sync::Once::new();
        DESCRIBE.call_once(|| {
            metrics::describe_counter!(
                METRIC_HTTP_RESPONSES,
                "Responses by how the response cache handled them."
            );
            metrics::describe_counter!(
                METRIC_HTTP_STORED,
                "Responses stored by the response cache."
            );
        });
        let r = |result: &'static str| {
            HttpCount::new(metrics::counter!(
                METRIC_HTTP_RESPONSES,
                "cache" => name.to_owned(),
                "result" => result
            ))
        };
        Self {
            hit: r("hit"),
            stale: r("stale"),
            stale_if_error: r("stale_if_error"),
            miss: r("miss"),
            bypass: r("bypass"),
            stored: HttpCount::new(
                metrics::counter!(METRIC_HTTP_STORED, "cache" => name.to_owned()),
            ),
            not_stored: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            collapsed: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }
}

/// A leader's id and the channel its waiters watch.
type LockSlot = (u64, watch::Receiver<()>);

pub(crate) struct Shared {
    pub(crate) cache: TwoLevelCache<str, HttpEntry>,
    pub(crate) config: ArcSwap<ResponseCacheConfig>,
    pub(crate) version: AtomicU64,
    pub(crate) apply_lock: crate::control::ApplyLock,
    pub(crate) stats: HttpCounters,
    locks: Mutex<HashMap<Arc<str>, LockSlot>>,
    next_lock: AtomicU64,
}

/// Held by the request filling the cache for a URI; dropping it wakes the waiters.
pub(crate) struct Lead {
    shared: Arc<Shared>,
    key: Arc<str>,
    id: u64,
    _tx: watch::Sender<()>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        let mut locks = self.shared.locks.lock();
        if locks.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            locks.remove(&self.key);
        }
    }
}

pub(crate) enum Lock {
    Lead(Lead),
    Wait(watch::Receiver<()>),
}

impl Shared {
    pub(crate) fn new(cache: TwoLevelCache<str, HttpEntry>, config: ResponseCacheConfig) -> Self {
        let stats = HttpCounters::new(&config.store.name);
        Self {
            cache,
            config: ArcSwap::from_pointee(config),
            version: AtomicU64::new(0),
            apply_lock: crate::control::ApplyLock::new(),
            stats,
            locks: Mutex::new(HashMap::new()),
            next_lock: AtomicU64::new(0),
        }
    }

    /// Becomes the leader for `key`, or returns the leader's wake-up channel.
    pub(crate) fn lock(self: &Arc<Self>, key: &str) -> Lock {
        let mut locks = self.locks.lock();
        if let Some((_, rx)) = locks.get(key) {
            return Lock::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        let key: Arc<str> = Arc::from(key);
        let id = self.next_lock.fetch_add(1, Ordering::Relaxed);
        locks.insert(Arc::clone(&key), (id, rx));
        Lock::Lead(Lead {
            shared: Arc::clone(self),
            key,
            id,
            _tx: tx,
        })
    }

    /// Becomes the leader for `key` unless someone already is.
    pub(crate) fn try_lead(self: &Arc<Self>, key: &str) -> Option<Lead> {
        match self.lock(key) {
            Lock::Lead(l) => Some(l),
            Lock::Wait(_) => None,
        }
    }

    pub(crate) fn stats(&self) -> ResponseCacheStats {
        let s = &self.stats;
        ResponseCacheStats {
            hits: s.hit.get(),
            stale: s.stale.get(),
            stale_if_error: s.stale_if_error.get(),
            misses: s.miss.get(),
            bypassed: s.bypass.get(),
            stored: s.stored.get(),
            not_stored: s.not_stored.load(Ordering::Relaxed),
            too_large: s.too_large.load(Ordering::Relaxed),
            collapsed: s.collapsed.load(Ordering::Relaxed),
            revalidations: s.revalidations.load(Ordering::Relaxed),
            invalidations: s.invalidations.load(Ordering::Relaxed),
            store: self.cache.stats(),
        }
    }
}
