//! [`ResponseCacheHandle`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::config::ResponseCacheConfig;
use super::shared::{ResponseCacheStats, Shared};
use crate::cache::handle::Accepted;
use crate::cache::{CacheHandle, ConfigError};
use crate::control::{ApplyLock, Component, ComponentKind, DynComponent, FieldError};

/// Runtime control of a response cache: statistics, settings, invalidation. Cheap to clone.
///
/// As a [`Component`] (kind [`ComponentKind::Cache`]) its settings are the
/// [`ResponseCacheConfig`] as JSON, with the underlying cache's settings under `store` (same
/// rules as [`CacheHandle`]: e.g. `{"store": {"l1_capacity_bytes": 1048576}}` resizes L1).
/// Register this handle rather than the store's.
///
/// Actions: `invalidate_path` `{"path": "/names?x=1", "host": "example.com"}` (`host` needed
/// when `include_host` is on), `invalidate_prefix` `{"prefix": "..."}` (raw keys, which look like
/// `GET {host}{path}?{query} `), `flush` `{}`.
#[derive(Clone)]
pub struct ResponseCacheHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ResponseCacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheHandle")
            .field("cache", &self.shared.config.load().store.name)
            .finish()
    }
}

impl ResponseCacheHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The cache's name (its `store.name`), under which it registers.
    pub fn name(&self) -> String {
        self.shared.config.load().store.name.clone()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<ResponseCacheConfig> {
        self.shared.config.load_full()
    }

    /// Live statistics.
    pub fn stats(&self) -> ResponseCacheStats {
        self.shared.stats()
    }

    /// The handle of the underlying two-level cache.
    pub fn store(&self) -> CacheHandle {
        self.shared.cache.handle()
    }

    /// The key prefix of a URI (`path_and_query` like `/names?x=1`).
    pub fn key_for(&self, host: Option<&str>, path_and_query: &str) -> String {
        let cfg = self.shared.config.load();
        let mut k = String::from("GET ");
        if cfg.include_host {
            k.push_str(&host.unwrap_or("").to_ascii_lowercase());
        }
        k.push_str(path_and_query);
        k.push(' ');
        k
    }

    /// Drops every stored response (all `Vary` variants) of one URI, on every node.
    pub async fn invalidate_path(&self, host: Option<&str>, path_and_query: &str) {
        let key = self.key_for(host, path_and_query);
        self.shared.cache.invalidate_prefix(&key).await;
    }

    /// Drops every stored response whose key starts with `prefix`, on every node.
    pub async fn invalidate_prefix(&self, prefix: &str) {
        self.shared.cache.invalidate_prefix(prefix).await;
    }

    /// Drops every stored response, on every node.
    pub async fn flush(&self) {
        self.shared.cache.flush().await;
    }

    /// Replaces the configuration (validated; all-or-nothing); waits for an L1 migration.
    ///
    /// # Errors
    /// When the configuration breaks a rule or changes a fixed store field.
    pub async fn update(&self, next: ResponseCacheConfig) -> Result<(), ConfigError> {
        let migration = {
            let _guard = self.shared.apply_lock.lock();
            next.validate()?;
            let store = self.shared.cache.handle();
            store.core().check(&next.store)?;
            let migration = Arc::clone(store.core()).commit(next.store.clone());
            self.shared.config.store(Arc::new(next));
            self.shared.version.fetch_add(1, Ordering::AcqRel);
            migration
        };
        if let Some(m) = migration {
            m.await;
        }
        Ok(())
    }
}

/// An operator action on a response cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ResponseCacheAction {
    /// Drop every stored response (all `Vary` variants) of one URI.
    InvalidatePath {
        /// Path and query, e.g. `/names?x=1`.
        path: String,
        /// The host, needed when `include_host` is on.
        #[serde(default)]
        host: Option<String>,
    },
    /// Drop every stored response whose raw key starts with `prefix`.
    InvalidatePrefix {
        /// The prefix (keys look like `GET {host}{path}?{query} `).
        prefix: String,
    },
    /// Drop every stored response.
    Flush,
}

impl Component for ResponseCacheHandle {
    type Settings = ResponseCacheConfig;
    type Stats = ResponseCacheStats;
    type Action = ResponseCacheAction;
    type Outcome = Accepted;
    const KIND: ComponentKind = ComponentKind::Cache;
    const ACTIONS: &'static [&'static str] = &["invalidate_path", "invalidate_prefix", "flush"];

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> ResponseCacheConfig {
        (*self.shared.config.load_full()).clone()
    }

    fn stats(&self) -> ResponseCacheStats {
        self.shared.stats()
    }

    fn validate(
        &self,
        _current: &ResponseCacheConfig,
        next: &ResponseCacheConfig,
    ) -> Result<(), Vec<FieldError>> {
        let store = self.shared.cache.handle();
        next.validate()
            .and_then(|()| store.core().check(&next.store))
            .map_err(|e| vec![FieldError::new(e.field(), e.to_string())])
    }

    fn commit(&self, next: ResponseCacheConfig) {
        let store = self.shared.cache.handle();
        let migration = Arc::clone(store.core()).commit(next.store.clone());
        self.shared.config.store(Arc::new(next));
        self.shared.version.fetch_add(1, Ordering::AcqRel);
        if let (Some(m), Ok(rt)) = (migration, tokio::runtime::Handle::try_current()) {
            rt.spawn(m);
        }
    }

    fn apply_lock(&self) -> &ApplyLock {
        &self.shared.apply_lock
    }

    fn act(&self, action: ResponseCacheAction) -> Result<Accepted, Vec<FieldError>> {
        let (name, prefix) = match action {
            ResponseCacheAction::InvalidatePath { path, host } => {
                ("invalidate_path", self.key_for(host.as_deref(), &path))
            }
            ResponseCacheAction::InvalidatePrefix { prefix } => ("invalidate_prefix", prefix),
            ResponseCacheAction::Flush => ("flush", String::new()),
        };
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            vec![FieldError::new(
                "action",
                "cache actions need a tokio runtime",
            )]
        })?;
        let this = self.clone();
        let flush = name == "flush";
        let reply = Accepted::new(name, Some(prefix.clone()));
        rt.spawn(async move {
            if flush {
                this.flush().await;
            } else {
                this.invalidate_prefix(&prefix).await;
            }
        });
        Ok(reply)
    }
}

impl crate::control::Handle for ResponseCacheHandle {
    fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)> {
        vec![(self.name(), Arc::new(self.clone()))]
    }
}
