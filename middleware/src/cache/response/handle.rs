//! [`ResponseCacheHandle`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::config::ResponseCacheConfig;
use super::shared::{ResponseCacheStats, Shared};
use crate::cache::{CacheHandle, ConfigError};
use crate::control::{Change, Component, ComponentKind, FieldError, merge_patch};

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

impl Component for ResponseCacheHandle {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Cache
    }

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> Value {
        serde_json::to_value(&*self.shared.config.load_full()).unwrap_or(Value::Null)
    }

    fn stats(&self) -> Value {
        serde_json::to_value(self.shared.stats()).unwrap_or(Value::Null)
    }

    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
        let _guard = self.shared.apply_lock.lock();
        let current = self.shared.config.load_full();
        let next: ResponseCacheConfig = merge_patch(&*current, patch)?;
        let store = self.shared.cache.handle();
        next.validate()
            .and_then(|()| store.core().check(&next.store))
            .map_err(|e| vec![FieldError::new(e.field(), e.to_string())])?;
        let before = serde_json::to_value(&*current).unwrap_or(Value::Null);
        let after = serde_json::to_value(&next).unwrap_or(Value::Null);
        if !dry_run {
            let migration = Arc::clone(store.core()).commit(next.store.clone());
            self.shared.config.store(Arc::new(next));
            self.shared.version.fetch_add(1, Ordering::AcqRel);
            if let (Some(m), Ok(rt)) = (migration, tokio::runtime::Handle::try_current()) {
                rt.spawn(m);
            }
        }
        Ok(Change { before, after })
    }

    fn action(&self, action: &str, args: &Value) -> Result<Value, Vec<FieldError>> {
        let arg = |name: &str| {
            args.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| vec![FieldError::new(name, "a string is required")])
        };
        let prefix = match action {
            "invalidate_path" => {
                let host = args.get("host").and_then(Value::as_str);
                self.key_for(host, &arg("path")?)
            }
            "invalidate_prefix" => arg("prefix")?,
            "flush" => String::new(),
            other => {
                return Err(vec![FieldError::new(
                    "action",
                    format!("unknown action `{other}` for a response cache"),
                )]);
            }
        };
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            vec![FieldError::new(
                "action",
                "cache actions need a tokio runtime",
            )]
        })?;
        let this = self.clone();
        let flush = action == "flush";
        let reply = json!({ "accepted": true, "action": action, "prefix": prefix });
        rt.spawn(async move {
            if flush {
                this.flush().await;
            } else {
                this.invalidate_prefix(&prefix).await;
            }
        });
        Ok(reply)
    }

    fn actions(&self) -> &'static [&'static str] {
        &["invalidate_path", "invalidate_prefix", "flush"]
    }

    fn stats_merge(&self) -> Vec<crate::control::merge::FieldMerge> {
        use crate::control::merge::Merge;
        vec![
            (
                "store.l2.breaker",
                Merge::Worst(&["open", "half_open", "closed"]),
            ),
            ("store.l2.backplane.enabled", Merge::Once),
            ("store.loads.latency_mean_ms", Merge::Max),
            ("store.loads.latency_max_ms", Merge::Max),
        ]
    }
}

impl crate::control::Handle for ResponseCacheHandle {
    fn components(&self) -> Vec<(String, Arc<dyn crate::control::Component>)> {
        vec![(self.name(), Arc::new(self.clone()))]
    }
}
