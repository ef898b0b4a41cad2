//! Cache entries, keys and errors.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Converts a key into the string that names it in L1, L2 and invalidation messages.
///
/// Implemented for strings and integers; implement it for your own key types. Two keys that
/// map to the same string are the same cache entry, so build structured keys without ambiguity
/// (e.g. escape separators). [`TwoLevelCache::invalidate_prefix`](super::TwoLevelCache::invalidate_prefix)
/// matches on this string.
pub trait CacheKey {
    /// The key as a string.
    fn cache_key(&self) -> Cow<'_, str>;
}

impl CacheKey for str {
    fn cache_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl CacheKey for String {
    fn cache_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl<T: CacheKey + ?Sized> CacheKey for &T {
    fn cache_key(&self) -> Cow<'_, str> {
        (**self).cache_key()
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Box<T> {
    fn cache_key(&self) -> Cow<'_, str> {
        (**self).cache_key()
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Arc<T> {
    fn cache_key(&self) -> Cow<'_, str> {
        (**self).cache_key()
    }
}

macro_rules! int_keys {
    ($($t:ty),*) => {$(
        impl CacheKey for $t {
            fn cache_key(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
int_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

/// Why [`get_or_load`](super::TwoLevelCache::get_or_load) produced no value. Never caused by L2:
/// an L2 failure is a miss.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The loader failed and no stale value could be served.
    #[error("the cache loader failed")]
    Load(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The loader exceeded the hard timeout and no stale value could be served.
    #[error("the cache loader timed out after {0:?}")]
    Timeout(Duration),
    /// The loader panicked and no stale value could be served.
    #[error("the cache loader panicked")]
    Panicked,
    /// The key holds a negative entry (stored by `get_or_load_optional`), so there is no value.
    #[error("the cache holds a negative entry for this key")]
    Absent,
}

/// An entry in L1: the value (or `None` for a negative entry) and its deadlines on the tokio
/// clock, so tests with paused time control expiry.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub(crate) value: Option<V>,
    /// When this node stored the entry.
    pub(crate) stored_at: Instant,
    /// Age of the value when this node stored it (e.g. time it spent in L2).
    pub(crate) initial_age: Duration,
    /// Until when the L1 copy may be served without asking L2.
    pub(crate) l1_fresh_until: Instant,
    /// Until when the value is fresh.
    pub(crate) fresh_until: Instant,
    /// Until when the value may be served stale (fail-safe).
    pub(crate) stale_until: Instant,
    /// How long moka keeps the entry (stale horizon from insertion).
    pub(crate) physical: Duration,
    /// Weight for L1 capacity.
    pub(crate) weight: u32,
}

impl<V: Clone> Entry<V> {
    /// A copy of this entry that counts as fresh until `until` (capped by the stale horizon).
    pub(crate) fn refreshed_until(&self, now: Instant, until: Instant) -> Self {
        let until = until.min(self.stale_until);
        Self {
            value: self.value.clone(),
            stored_at: self.stored_at,
            initial_age: self.initial_age,
            l1_fresh_until: until,
            fresh_until: until.max(self.fresh_until),
            stale_until: self.stale_until,
            physical: self
                .stale_until
                .saturating_duration_since(now)
                .max(MIN_PHYSICAL),
            weight: self.weight,
        }
    }

    pub(crate) fn view(&self, now: Instant) -> CachedEntry<V> {
        CachedEntry {
            value: self.value.clone(),
            age: self.initial_age + now.saturating_duration_since(self.stored_at),
            fresh_until: self.fresh_until,
            stale_until: self.stale_until,
            now,
        }
    }
}

pub(crate) const MIN_PHYSICAL: Duration = Duration::from_millis(1);

/// A value read from the cache with its age and freshness (see
/// [`TwoLevelCache::get_entry`](super::TwoLevelCache::get_entry)).
#[derive(Debug, Clone)]
pub struct CachedEntry<V> {
    value: Option<V>,
    age: Duration,
    fresh_until: Instant,
    stale_until: Instant,
    now: Instant,
}

impl<V> CachedEntry<V> {
    /// The value; `None` for a negative entry.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// Takes the value; `None` for a negative entry.
    pub fn into_value(self) -> Option<V> {
        self.value
    }

    /// Whether this is a negative ("not found") entry.
    pub fn is_negative(&self) -> bool {
        self.value.is_none()
    }

    /// Time since the value was produced by the loader (including time spent in L2).
    pub fn age(&self) -> Duration {
        self.age
    }

    /// Whether the value is still fresh.
    pub fn is_fresh(&self) -> bool {
        self.now < self.fresh_until
    }

    /// Remaining freshness (zero when stale).
    pub fn fresh_for(&self) -> Duration {
        self.fresh_until.saturating_duration_since(self.now)
    }

    /// Time since the value went stale (zero when fresh).
    pub fn stale_for(&self) -> Duration {
        self.now.saturating_duration_since(self.fresh_until)
    }

    /// Remaining time the value may be served stale.
    pub fn stale_remaining(&self) -> Duration {
        self.stale_until.saturating_duration_since(self.now)
    }

    /// Remaining freshness in whole seconds, negative when stale (the `ttl` of RFC 9211).
    pub fn ttl_secs(&self) -> i64 {
        if self.is_fresh() {
            i64::try_from(self.fresh_for().as_secs()).unwrap_or(i64::MAX)
        } else {
            -i64::try_from(self.stale_for().as_secs()).unwrap_or(i64::MAX)
        }
    }
}
