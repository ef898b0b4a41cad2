//! [`KeyedCircuitBreaker`]: one breaker per key (upstream host, route, tenant) with a bounded
//! number of keys.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;

use super::breaker::{CircuitBreaker, Shared};
use super::config::CircuitBreakerConfig;
use super::error::CircuitOpen;
use super::handle::{CircuitBreakerHandle, KeyedView};
use super::{CallPermit, State};

/// Entries looked at to choose an eviction victim.
const EVICTION_SAMPLE: usize = 32;
const MAX_SHARDS: usize = 16;

struct Slot {
    breaker: CircuitBreaker,
    /// The keyed breaker's insert count when this key was last used (a logical clock: no
    /// clock read on lookups).
    used: AtomicU64,
}

/// A shard: its map and its capacity.
type Shard<K> = (RwLock<HashMap<K, Slot>>, usize);

struct KeyedInner<K> {
    shared: Arc<Shared>,
    shards: Box<[Shard<K>]>,
    hasher: RandomState,
    inserts: AtomicU64,
    evictions: AtomicU64,
    len: AtomicUsize,
}

/// One [`CircuitBreaker`] per key, all sharing one configuration (changed together through the
/// [`handle`](Self::handle)) and one set of counters and metrics (keys never become metric
/// labels). Cheap to clone; clones share the breakers.
///
/// At most `max_keys` keys are kept (see [`CircuitBreakerConfigBuilder::max_keys`]). A new key
/// beyond that evicts a least recently used key of the same shard, closed breakers first, so a
/// flood of distinct keys cannot grow memory; an evicted key starts again closed and empty.
/// Lookups take a shard's read lock (the breaker itself is lock-free).
///
/// [`CircuitBreakerConfigBuilder::max_keys`]: super::CircuitBreakerConfigBuilder::max_keys
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreaker, State};
/// use std::time::Duration;
///
/// let per_host = KeyedCircuitBreaker::<String>::new(
///     CircuitBreakerConfig::consecutive_failures(1, Duration::from_secs(30)),
/// );
/// per_host.try_acquire("a.example").unwrap().failure();
/// assert_eq!(per_host.state("a.example"), Some(State::Open));
/// assert!(per_host.try_acquire("b.example").is_ok(), "other keys are unaffected");
/// ```
pub struct KeyedCircuitBreaker<K> {
    inner: Arc<KeyedInner<K>>,
}

impl<K> Clone for KeyedCircuitBreaker<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for KeyedCircuitBreaker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("name", &self.inner.shared.name)
            .field("keys", &self.inner.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K> KeyedCircuitBreaker<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// An empty keyed breaker; every key starts closed with `config`'s settings.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        let max_keys = config.max_keys();
        let n = max_keys.clamp(1, MAX_SHARDS);
        let shards = (0..n)
            .map(|i| {
                let cap = max_keys / n + usize::from(i < max_keys % n);
                (RwLock::new(HashMap::new()), cap)
            })
            .collect();
        Self {
            inner: Arc::new(KeyedInner {
                shared: Shared::new(&config),
                shards,
                hasher: RandomState::new(),
                inserts: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                len: AtomicUsize::new(0),
            }),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K> {
        let h = self.inner.hasher.hash_one(key);
        &self.inner.shards[(h % self.inner.shards.len() as u64) as usize]
    }

    /// The breaker for `key`, created closed (or in the operator state set for all keys) if
    /// absent.
    pub fn get<Q>(&self, key: &Q) -> CircuitBreaker
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let (lock, cap) = self.shard(key);
        let clock = self.inner.inserts.load(Ordering::Relaxed);
        if let Some(slot) = lock.read().get(key) {
            if slot.used.load(Ordering::Relaxed) != clock {
                slot.used.store(clock, Ordering::Relaxed);
            }
            return slot.breaker.clone();
        }
        let mut map = lock.write();
        if let Some(slot) = map.get(key) {
            return slot.breaker.clone();
        }
        if map.len() >= *cap {
            self.evict_one(&mut map);
        }
        let initial = State::ALL
            .get(usize::from(
                self.inner.shared.initial.load(Ordering::Acquire),
            ))
            .copied()
            .unwrap_or(State::Closed);
        let breaker = CircuitBreaker::with_shared(Arc::clone(&self.inner.shared), initial);
        let clock = self.inner.inserts.fetch_add(1, Ordering::Relaxed) + 1;
        map.insert(
            key.to_owned(),
            Slot {
                breaker: breaker.clone(),
                used: AtomicU64::new(clock),
            },
        );
        self.inner.len.fetch_add(1, Ordering::Relaxed);
        breaker
    }

    fn evict_one(&self, map: &mut HashMap<K, Slot>) {
        let rank = |s: &Slot| match s.breaker.inner.current_state() {
            State::Closed => 0,
            State::Disabled | State::ForcedClosed => 1,
            State::Open | State::HalfOpen => 2,
            State::ForcedOpen => 3,
        };
        let victim = map
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, s)| (rank(s), s.used.load(Ordering::Relaxed)))
            .map(|(k, _)| k.clone());
        if let Some(victim) = victim {
            map.remove(&victim);
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
            self.inner.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`CircuitBreaker::try_acquire`] on `key`'s breaker.
    pub fn try_acquire<Q>(&self, key: &Q) -> Result<CallPermit, CircuitOpen>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.get(key).try_acquire()
    }

    /// The state of `key`'s breaker, if the key exists (does not create it).
    pub fn state<Q>(&self, key: &Q) -> Option<State>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (lock, _) = self.shard(key);
        let breaker = lock.read().get(key).map(|s| s.breaker.clone());
        breaker.map(|b| b.state())
    }

    /// The breakers' shared name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys evicted to respect `max_keys`.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// A control-plane handle over every key.
    pub fn handle(&self) -> CircuitBreakerHandle
    where
        K: fmt::Display,
    {
        CircuitBreakerHandle::keyed(
            Arc::clone(&self.inner.shared),
            Arc::clone(&self.inner) as Arc<dyn KeyedView>,
        )
    }
}

impl<K> KeyedView for KeyedInner<K>
where
    K: Hash + Eq + fmt::Display + Send + Sync + 'static,
{
    fn for_each(&self, f: &mut dyn FnMut(&dyn fmt::Display, &CircuitBreaker)) {
        for (lock, _) in self.shards.iter() {
            // Clone out so callbacks never run under the shard lock.
            let entries: Vec<(String, CircuitBreaker)> = lock
                .read()
                .iter()
                .map(|(k, s)| (k.to_string(), s.breaker.clone()))
                .collect();
            for (k, b) in &entries {
                f(k, b);
            }
        }
    }

    fn find(&self, key: &str) -> Option<CircuitBreaker> {
        self.shards.iter().find_map(|(lock, _)| {
            lock.read()
                .iter()
                .find(|(k, _)| k.to_string() == key)
                .map(|(_, s)| s.breaker.clone())
        })
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}
