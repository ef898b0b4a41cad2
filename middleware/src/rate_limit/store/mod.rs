//! Where GCRA state lives: one trait, three stores.
//!
//! - [`LocalStore`]: this process, bounded memory (a fixed cell table).
//! - `ShmZone` / `ShmStore` (unix): one table in a shared-memory segment used by several worker
//!   processes, so they enforce one limit together (nginx `limit_req_zone`).
//! - `RedisStore` (feature `redis`): GCRA in a Lua script on the Redis server's clock, shared by
//!   every instance, with a timeout, a breaker and a failure policy.
//!
//! Synchronous stores answer [`Store::check`] with [`Check::Ready`]; asynchronous ones return
//! [`Check::Pending`] (a boxed future; only the Redis path allocates).

mod local;
#[cfg(feature = "redis")]
mod redis;
#[cfg(unix)]
mod shm;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use self::local::LocalStore;
#[cfg(feature = "redis")]
pub use self::redis::{RedisOptions, RedisStore};
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub use self::shm::{ShmStore, ShmZone};

use super::gcra::{Decision, Gcra};
use super::key::KeyValue;

/// A boxed decision future, returned by asynchronous stores.
pub type DecisionFuture = Pin<Box<dyn Future<Output = Decision> + Send + 'static>>;

/// The answer of [`Store::check`].
#[must_use]
pub enum Check {
    /// Decided synchronously.
    Ready(Decision),
    /// Decided by an asynchronous store; never fails (failures are mapped to a decision by the
    /// store's failure policy).
    Pending(DecisionFuture),
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(d) => f.debug_tuple("Ready").field(d).finish(),
            Self::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

pub use crate::control::stats::StoreStats;

/// GCRA state storage for one policy.
///
/// The layer gives the store a key and the policy's current [`Gcra`] parameters on every check,
/// so a quota change takes effect at once and the stored TATs are kept (see the module docs of
/// [`rate_limit`](super) for the semantics).
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// A short name: `local`, `shm` or `redis`.
    fn kind(&self) -> &'static str;

    /// Whether [`check`](Store::check) may return [`Check::Pending`]. The layer evaluates
    /// synchronous policies first.
    fn is_async(&self) -> bool {
        false
    }

    /// Checks a request of `cost` cells and consumes them when it conforms.
    fn check(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Check;

    /// The decision [`check`](Store::check) would make, without consuming; `None` when the store
    /// cannot tell cheaply (the layer uses it to report the longest `Retry-After`).
    fn peek(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Option<Decision> {
        let _ = (key, gcra, cost);
        None
    }

    /// Returns `cost` cells consumed by an allowed check (another policy rejected the request).
    fn refund(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32);

    /// The policy's parameters changed from `old` to `new`: re-express each key's state so it
    /// keeps the number of cells it has used (capped at the new burst). Called once per change,
    /// after the new parameters are in place. Stores that rescale lazily (Redis) ignore it.
    fn rescale(&self, old: &Gcra, new: &Gcra) {
        let _ = (old, new);
    }

    /// Occupancy and eviction counters.
    fn stats(&self) -> StoreStats;

    /// Frees the state of idle keys (a full bucket carries no information). Returns how many.
    fn purge_idle(&self) -> u64 {
        0
    }

    /// Forgets every key of this store, giving everyone a full burst. Stores that cannot do so
    /// for one policy alone say why.
    fn reset(&self) -> Result<u64, &'static str> {
        Err("this store cannot be reset from here")
    }
}
