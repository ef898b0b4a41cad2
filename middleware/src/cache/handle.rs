//! [`CacheHandle`]: runtime control of a [`TwoLevelCache`](super::TwoLevelCache).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::config::{CacheConfig, ConfigError};
use super::stats::CacheStats;
use super::two_level::{Inner, Inval, invalidate};
use crate::control::{ApplyLock, Component, ComponentKind, DynComponent, FieldError};

/// The type-erased operations a handle needs from a cache.
pub(crate) trait CacheControl: Send + Sync + 'static {
    fn config(&self) -> Arc<CacheConfig>;
    fn version(&self) -> u64;
    fn stats(&self) -> CacheStats;
    fn apply_lock(&self) -> &ApplyLock;
    /// Validates a complete next configuration against the rules and the current one.
    fn check(&self, next: &CacheConfig) -> Result<(), ConfigError>;
    /// Swaps the configuration in; returns the L1 migration to run after a resize.
    fn commit(self: Arc<Self>, next: CacheConfig) -> Option<BoxFuture<'static, ()>>;
    fn invalidate(self: Arc<Self>, what: Inval) -> BoxFuture<'static, ()>;
}

impl<V> CacheControl for Inner<V>
where
    V: Clone + Send + Sync + 'static,
{
    fn config(&self) -> Arc<CacheConfig> {
        self.config.load_full()
    }

    fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    fn stats(&self) -> CacheStats {
        Inner::stats(self)
    }

    fn apply_lock(&self) -> &ApplyLock {
        &self.apply_lock
    }

    fn check(&self, next: &CacheConfig) -> Result<(), ConfigError> {
        next.validate()?;
        self.config.load().check_runtime_change(next)
    }

    fn commit(self: Arc<Self>, next: CacheConfig) -> Option<BoxFuture<'static, ()>> {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            l2.reconfigure(&next);
        }
        Inner::commit(&self, next)
    }

    fn invalidate(self: Arc<Self>, what: Inval) -> BoxFuture<'static, ()> {
        async move { invalidate(&self, what).await }.boxed()
    }
}

/// Runtime control of one cache: statistics per level, settings (TTLs, L1 capacity, L2
/// timeouts and breaker), invalidation and flush. Cheap to clone; `Send + Sync`.
///
/// As a [`Component`] (kind [`ComponentKind::Cache`]) its settings are the cache's
/// [`CacheConfig`] as JSON; a patch is merged, validated (all-or-nothing) and swapped in
/// atomically. `name`, `namespace`, `redis.url`, `redis.key_prefix` and `redis.backplane` are
/// fixed for the life of the cache. New TTLs apply to entries stored from then on.
///
/// **Resizing L1.** moka cannot change a cache's capacity in place, so a new
/// `l1_capacity_bytes` (or `l1_eviction`) builds a new L1, switches reads and writes to it at
/// once, then copies the old entries over in a background task (the new policy decides what
/// fits; entries written meanwhile are not overwritten, invalidations during the copy are
/// honoured). Outside a tokio runtime the old entries are dropped instead.
///
/// Actions: `invalidate` `{"key": "..."}`, `invalidate_prefix` `{"prefix": "..."}`, `flush`
/// `{}`. They run in the background and apply to every node through the backplane.
#[derive(Clone)]
pub struct CacheHandle {
    core: Arc<dyn CacheControl>,
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("name", &self.core.config().name)
            .field("version", &self.core.version())
            .finish()
    }
}

fn field_errors(e: &ConfigError) -> Vec<FieldError> {
    vec![FieldError::new(e.field(), e.to_string())]
}

impl CacheHandle {
    pub(crate) fn new(core: Arc<dyn CacheControl>) -> Self {
        Self { core }
    }

    pub(crate) fn core(&self) -> &Arc<dyn CacheControl> {
        &self.core
    }

    /// The cache's name.
    pub fn name(&self) -> String {
        self.core.config().name.clone()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<CacheConfig> {
        self.core.config()
    }

    /// Live statistics.
    pub fn stats(&self) -> CacheStats {
        self.core.stats()
    }

    /// Replaces the configuration (same rules as [`DynComponent::apply`]); after an L1 resize,
    /// waits until the old entries are migrated.
    ///
    /// # Errors
    /// When the configuration breaks a rule or changes a fixed field; nothing changes then.
    pub async fn update(&self, next: CacheConfig) -> Result<(), ConfigError> {
        let migration = {
            let _guard = self.core.apply_lock().lock();
            self.core.check(&next)?;
            Arc::clone(&self.core).commit(next)
        };
        if let Some(m) = migration {
            m.await;
        }
        Ok(())
    }

    /// Changes the L1 capacity (rebuild and migrate; see the type docs).
    ///
    /// # Errors
    /// When `bytes` is below the minimum.
    pub async fn resize_l1(&self, bytes: u64) -> Result<(), ConfigError> {
        let mut next = (*self.core.config()).clone();
        next.l1_capacity_bytes = bytes;
        self.update(next).await
    }

    /// Changes the TTL and optionally the L1 TTL of entries stored from now on.
    ///
    /// # Errors
    /// When the TTLs break a rule.
    pub async fn set_ttl(
        &self,
        ttl: Duration,
        l1_ttl: Option<Duration>,
    ) -> Result<(), ConfigError> {
        let mut next = (*self.core.config()).clone();
        next.ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        next.l1_ttl_ms = l1_ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.update(next).await
    }

    /// Removes a key (given as its [`CacheKey`](super::CacheKey) string) everywhere.
    pub async fn invalidate(&self, key: &str) {
        Arc::clone(&self.core)
            .invalidate(Inval::Key(key.to_owned()))
            .await;
    }

    /// Removes every key starting with `prefix` everywhere.
    pub async fn invalidate_prefix(&self, prefix: &str) {
        Arc::clone(&self.core)
            .invalidate(Inval::Prefix(prefix.to_owned()))
            .await;
    }

    /// Removes every entry of the cache's namespace everywhere.
    pub async fn flush(&self) {
        Arc::clone(&self.core).invalidate(Inval::All).await;
    }

    fn spawn(&self, fut: BoxFuture<'static, ()>) -> Result<(), Vec<FieldError>> {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(fut);
                Ok(())
            }
            Err(_) => Err(vec![FieldError::new(
                "action",
                "cache actions need a tokio runtime",
            )]),
        }
    }
}

/// An operator action on a cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CacheAction {
    /// Remove one key (its [`CacheKey`](super::CacheKey) string) everywhere.
    Invalidate {
        /// The key.
        key: String,
    },
    /// Remove every key starting with `prefix` everywhere.
    InvalidatePrefix {
        /// The prefix.
        prefix: String,
    },
    /// Remove every entry of the cache's namespace everywhere.
    Flush,
}

/// The answer to a cache action: it runs in the background (and reaches other nodes through
/// the backplane).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Always `true`: the action was started.
    pub accepted: bool,
    /// The action's name.
    pub action: String,
    /// For a response cache, the key prefix removed (empty for `flush`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl Accepted {
    pub(crate) fn new(action: &str, prefix: Option<String>) -> Self {
        Self {
            accepted: true,
            action: action.to_owned(),
            prefix,
        }
    }
}

impl Component for CacheHandle {
    type Settings = CacheConfig;
    type Stats = CacheStats;
    type Action = CacheAction;
    type Outcome = Accepted;
    const KIND: ComponentKind = ComponentKind::Cache;
    const ACTIONS: &'static [&'static str] = &["invalidate", "invalidate_prefix", "flush"];

    fn version(&self) -> u64 {
        self.core.version()
    }

    fn settings(&self) -> CacheConfig {
        (*self.core.config()).clone()
    }

    fn stats(&self) -> CacheStats {
        self.core.stats()
    }

    fn validate(&self, _current: &CacheConfig, next: &CacheConfig) -> Result<(), Vec<FieldError>> {
        self.core.check(next).map_err(|e| field_errors(&e))
    }

    fn commit(&self, next: CacheConfig) {
        if let Some(migration) = Arc::clone(&self.core).commit(next)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(migration);
        }
    }

    fn apply_lock(&self) -> &ApplyLock {
        self.core.apply_lock()
    }

    fn act(&self, action: CacheAction) -> Result<Accepted, Vec<FieldError>> {
        let (name, what) = match action {
            CacheAction::Invalidate { key } => ("invalidate", Inval::Key(key)),
            CacheAction::InvalidatePrefix { prefix } => {
                ("invalidate_prefix", Inval::Prefix(prefix))
            }
            CacheAction::Flush => ("flush", Inval::All),
        };
        let fut = Arc::clone(&self.core).invalidate(what);
        self.spawn(fut)?;
        Ok(Accepted::new(name, None))
    }
}

impl crate::control::Handle for CacheHandle {
    fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)> {
        vec![(self.name(), Arc::new(self.clone()))]
    }
}
