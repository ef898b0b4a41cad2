//! Two-level cache (moka L1 + optional Redis L2) and the HTTP response cache layer.
//!
//! # `TwoLevelCache`
//!
//! [`TwoLevelCache<K, V>`](TwoLevelCache) keeps values in an in-process moka cache (L1,
//! capacity in bytes, per-entry expiry) and, when [`CacheConfig::redis`] is set, in Redis (L2,
//! shared by every node). Without Redis it is a plain L1 cache: the embedded default.
//!
//! Guarantees:
//!
//! - **Single flight.** Concurrent [`get_or_load`](TwoLevelCache::get_or_load) misses for one
//!   key run the loader once; the load runs in a task of its own, so a caller that is cancelled
//!   (client hung up, timeout) neither cancels it nor leaves the key poisoned.
//! - **Fail-safe.** With `max_stale_ms > 0` a value is kept past its TTL; when the loader fails,
//!   panics, exceeds `hard_timeout_ms`, or is slower than `soft_timeout_ms`, the stale value is
//!   served (and the failing origin is retried at most once per `fail_safe_throttle_ms`).
//! - **Never an error because of Redis.** Every L2 call has a timeout and goes through a circuit
//!   breaker; a failed, slow, corrupt, truncated or foreign L2 entry is a miss (counted in
//!   [`CacheStats`] and `palisade_cache_*` metrics), and L1 plus the loader keep serving. The
//!   connection and the invalidation subscriber reconnect by themselves.
//! - **Coherence.** [`invalidate`](TwoLevelCache::invalidate),
//!   [`invalidate_prefix`](TwoLevelCache::invalidate_prefix), [`flush`](TwoLevelCache::flush)
//!   and [`set`](TwoLevelCache::set) reach L1 on every node through a Redis pub/sub backplane
//!   (`redis.backplane`, on by default). A load racing an invalidation is not stored. After the
//!   subscriber reconnects, L1 is cleared (messages may have been lost meanwhile), and
//!   invalidations that failed during an outage are replayed on L2.
//! - **TTL jitter** (`jitter_ms`) spreads expiries; **negative caching** (`negative_ttl_ms`)
//!   stores "not found" results from
//!   [`get_or_load_optional`](TwoLevelCache::get_or_load_optional).
//!
//! Caveats: freshness deadlines use the tokio clock (so `tokio::time::pause` controls them) and,
//! in L2, wall-clock milliseconds, so nodes' clocks should be roughly in sync. The default L1
//! policy is TinyLFU, which may refuse a never-seen key when L1 is full; choose
//! [`EvictionPolicy::Lru`] for rotating key spaces.
//!
//! # `ResponseCacheLayer`
//!
//! A tower layer caching HTTP responses in a `TwoLevelCache` (see [`response`]): GET/HEAD,
//! RFC 9111 freshness (`s-maxage`, `max-age`, `Expires`), `Vary`, `Age`,
//! `stale-while-revalidate`, `stale-if-error` and an RFC 9211 `Cache-Status` header.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use palisade::cache::{CacheConfig, TwoLevelCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = CacheConfig::builder()
//!     .name("users")
//!     .ttl(Duration::from_secs(30))
//!     .max_stale(Duration::from_secs(600))
//!     .build()
//!     .unwrap();
//! let users: TwoLevelCache<u64, String> = TwoLevelCache::new(config).unwrap();
//!
//! let name = users.get_or_load(&7, || async { Ok::<_, std::io::Error>("Grace".to_owned()) }).await;
//! assert_eq!(name.unwrap(), "Grace");
//! // Served from L1 now; this loader is not called.
//! let again = users.get_or_load(&7, || async { Err::<String, _>(std::io::Error::other("down")) }).await;
//! assert_eq!(again.unwrap(), "Grace");
//!
//! users.invalidate(&7).await;
//! assert_eq!(users.get(&7).await, None);
//! assert_eq!(users.stats().loads.total, 1);
//! # }
//! ```

pub mod codec;
mod config;
mod entry;
mod handle;
#[cfg(feature = "redis")]
mod l2;
pub mod response;
mod stats;
mod two_level;

pub use config::{CacheConfig, CacheConfigBuilder, ConfigError, EvictionPolicy, RedisConfig};
pub use entry::{CacheError, CacheKey, CachedEntry};
pub use handle::{Accepted, CacheAction, CacheHandle};
pub use response::{
    ResponseCacheAction, ResponseCacheConfig, ResponseCacheHandle, ResponseCacheLayer,
};
pub use stats::{
    BackplaneStats, CacheStats, L1Stats, L2Stats, LoadStats, METRIC_BACKPLANE, METRIC_CORRUPT,
    METRIC_ENTRIES, METRIC_EVICTIONS, METRIC_HITS, METRIC_L1_BYTES, METRIC_L2_ERRORS,
    METRIC_LOAD_DURATION, METRIC_LOADS, METRIC_MISSES, METRIC_STALE,
};
pub use two_level::{EntryOptions, TwoLevelCache, TwoLevelCacheBuilder};

#[cfg(test)]
mod tests;
