//! [`CacheSettings`]: the reference server's `[cache]` section.

use serde::{Deserialize, Serialize};

use palisade::cache::{CacheConfig, ConfigError, EvictionPolicy, RedisConfig, ResponseCacheConfig};
use palisade::redis::RedisTls;

/// The caches of the reference server, as one `[cache]` table: user lookups through a
/// [`TwoLevelCache`](palisade::cache::TwoLevelCache) and `/names` through the
/// [`ResponseCacheLayer`](palisade::cache::ResponseCacheLayer). Every field has a default.
///
/// ```
/// use palisade_server::settings::cache::CacheSettings;
/// let s: CacheSettings = serde_json::from_value(serde_json::json!({
///     "redis_url": "redis://127.0.0.1:6379/",
///     "users": { "ttl_ms": 10000 },
///     "names": { "max_body_bytes": 65536, "store": { "l1_capacity_bytes": 4194304 } }
/// })).unwrap();
/// s.validate().unwrap();
/// let users = s.users_config();
/// assert_eq!(users.ttl_ms, 10_000);
/// assert_eq!(users.redis.unwrap().url, "redis://127.0.0.1:6379/");
/// assert_eq!(s.names_config().store.namespace, "names");
/// assert_eq!(users.namespace, "users");
/// assert!(CacheSettings::default().users_config().redis.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Use the caches at all (off: handlers go straight to the store, no layer on `/names`).
    pub enabled: bool,
    /// Redis for L2 and the invalidation backplane of both caches; `None` runs L1 only. Sets
    /// (or overrides the URL of) each cache's `redis` table.
    pub redis_url: Option<String>,
    /// TLS options for a `rediss://` `redis_url`, from the `[redis]` table (not a key of
    /// `[cache]`; [`Config::cache_settings`](crate::config::Config::cache_settings) fills it in).
    #[serde(skip)]
    pub redis_tls: RedisTls,
    /// The user-lookup cache (`GET /api/v1/users/{id}`).
    pub users: CacheConfig,
    /// The `/names` response cache.
    pub names: ResponseCacheConfig,
}

impl Serialize for CacheSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CacheSettings::serialize(self, s)
    }
}

/// Partial `users` / `names` tables keep this type's defaults for the fields they omit (their
/// names and namespaces in particular, so the two caches never share an L2 namespace).
impl<'de> Deserialize<'de> for CacheSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_over_default(d, CacheSettings::deserialize)
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: None,
            redis_tls: RedisTls::default(),
            users: CacheConfig {
                name: "users".to_owned(),
                namespace: "users".to_owned(),
                l1_capacity_bytes: 16 * 1024 * 1024,
                l1_eviction: EvictionPolicy::TinyLfu,
                ttl_ms: 30_000,
                l1_ttl_ms: Some(5_000),
                max_stale_ms: 300_000,
                fail_safe_throttle_ms: 1_000,
                negative_ttl_ms: Some(5_000),
                jitter_ms: 2_000,
                soft_timeout_ms: Some(250),
                hard_timeout_ms: Some(5_000),
                ..CacheConfig::default()
            },
            names: ResponseCacheConfig {
                store: CacheConfig {
                    name: "names".to_owned(),
                    namespace: "names".to_owned(),
                    l1_capacity_bytes: 8 * 1024 * 1024,
                    ..CacheConfig::default()
                },
                max_body_bytes: 256 * 1024,
                ..ResponseCacheConfig::default()
            },
        }
    }
}

fn with_redis(mut config: CacheConfig, url: Option<&str>, tls: &RedisTls) -> CacheConfig {
    if let Some(url) = url {
        match config.redis.as_mut() {
            Some(redis) => url.clone_into(&mut redis.url),
            None => config.redis = Some(RedisConfig::new(url)),
        }
    }
    if let Some(redis) = config.redis.as_mut()
        && !tls.is_empty()
    {
        redis.tls = tls.clone();
    }
    config
}

impl CacheSettings {
    /// The user cache's configuration, with `redis_url` (and `redis_tls`) applied.
    pub fn users_config(&self) -> CacheConfig {
        with_redis(
            self.users.clone(),
            self.redis_url.as_deref(),
            &self.redis_tls,
        )
    }

    /// The `/names` cache's configuration, with `redis_url` applied to its store.
    pub fn names_config(&self) -> ResponseCacheConfig {
        let mut names = self.names.clone();
        names.store = with_redis(names.store, self.redis_url.as_deref(), &self.redis_tls);
        names
    }

    /// Checks both caches' rules (with `redis_url` applied).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.users_config().validate()?;
        self.names_config().validate()
    }
}

/// Deserializes a partial document over `T::default()`, so a nested table that is only partly
/// given keeps the *parent's* defaults for the rest (serde's `default` would take the nested
/// type's own `Default`, e.g. lose a nested cache's name and namespace).
fn deserialize_over_default<'de, D, T, F>(d: D, finish: F) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Serialize,
    F: FnOnce(serde_json::Value) -> Result<T, serde_json::Error>,
{
    use serde::de::Error as _;
    let patch = serde_json::Value::deserialize(d)?;
    if !patch.is_object() {
        return Err(D::Error::custom("expected a table of settings"));
    }
    let mut doc = serde_json::to_value(T::default()).map_err(D::Error::custom)?;
    palisade::control::merge_json(&mut doc, &patch);
    finish(doc).map_err(D::Error::custom)
}
