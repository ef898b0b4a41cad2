//! Configuration of a [`TwoLevelCache`](super::TwoLevelCache): validated once, serializable so
//! the control plane and the server's `[cache]` section share one shape.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration value that breaks a rule; names the field, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field that must not be empty was empty.
    #[error("cache.{field} must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A field that must not contain whitespace or control characters did.
    #[error("cache.{field} must not contain whitespace or control characters (got {value:?})")]
    BadChars {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A numeric field was below its minimum.
    #[error("cache.{field} must be at least {min} (got {value})")]
    TooSmall {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
        /// The minimum.
        min: u64,
    },
    /// A numeric field was above its maximum.
    #[error("cache.{field} must be at most {max} (got {value})")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
        /// The maximum.
        max: u64,
    },
    /// `l1_ttl_ms` exceeded `ttl_ms`.
    #[error("cache.l1_ttl_ms ({l1}) must not exceed cache.ttl_ms ({ttl})")]
    TtlOrder {
        /// The L1 TTL, milliseconds.
        l1: u64,
        /// The TTL, milliseconds.
        ttl: u64,
    },
    /// `soft_timeout_ms` was not below `hard_timeout_ms`.
    #[error("cache.soft_timeout_ms ({soft}) must be below cache.hard_timeout_ms ({hard})")]
    TimeoutOrder {
        /// Soft timeout, milliseconds.
        soft: u64,
        /// Hard timeout, milliseconds.
        hard: u64,
    },
    /// The Redis URL could not be parsed.
    #[error("cache.redis.url is not a valid redis URL ({url:?}): {reason}")]
    RedisUrl {
        /// The URL.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The Redis URL and its TLS options do not make a client (a `rediss://` URL without the
    /// `redis-tls` feature, TLS options with a plain URL, an unreadable certificate file...).
    #[error("cache.redis: {0}")]
    Redis(#[from] crate::redis::ConnectError),
    /// A field that cannot change while the cache runs was changed.
    #[error("cache.{field} cannot be changed at runtime (restart with the new value)")]
    Immutable {
        /// The field.
        field: &'static str,
    },
}

impl ConfigError {
    /// The dotted field the error is about (without the `cache.` prefix).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Empty { field }
            | Self::BadChars { field, .. }
            | Self::TooSmall { field, .. }
            | Self::TooLarge { field, .. }
            | Self::Immutable { field } => field,
            Self::TtlOrder { .. } => "l1_ttl_ms",
            Self::TimeoutOrder { .. } => "soft_timeout_ms",
            Self::RedisUrl { .. } => "redis.url",
            Self::Redis(e) => match e {
                crate::redis::ConnectError::Read { option, .. }
                | crate::redis::ConnectError::Pem { option, .. } => match *option {
                    "ca_file" => "redis.tls.ca_file",
                    "cert_file" => "redis.tls.cert_file",
                    _ => "redis.tls.key_file",
                },
                crate::redis::ConnectError::HalfClientCert { .. } => "redis.tls",
                _ => "redis.url",
            },
        }
    }
}

/// How L1 chooses what to keep when it is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictionPolicy {
    /// moka's default: LRU eviction plus TinyLFU admission. Resists scans, but a brand-new key
    /// may be refused when the cache is full and the key has not been seen before.
    #[default]
    TinyLfu,
    /// Plain LRU: every insert is admitted. Better for rotating key spaces and small caches.
    Lru,
}

/// Settings of one [`TwoLevelCache`](super::TwoLevelCache). Durations are milliseconds so the
/// same shape works in TOML, JSON and the admin API.
///
/// Build it with [`CacheConfig::builder`] (validated), or deserialize it (e.g. from a server's
/// `[cache.users]` table) and let [`TwoLevelCache::new`](super::TwoLevelCache::new) validate it.
///
/// ```
/// use std::time::Duration;
/// use palisade::cache::CacheConfig;
/// let config = CacheConfig::builder()
///     .name("users")
///     .ttl(Duration::from_secs(30))
///     .max_stale(Duration::from_secs(300))
///     .build()
///     .unwrap();
/// assert_eq!(config.ttl(), Duration::from_secs(30));
/// assert!(CacheConfig::builder().ttl(Duration::ZERO).build().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Name used in metrics labels, logs and the control registry.
    pub name: String,
    /// Namespace of this cache's L2 keys and invalidation channel. Caches with different value
    /// types must use different namespaces.
    pub namespace: String,
    /// L1 capacity in bytes (each entry weighs its key, its value's weight and ~160 B of
    /// bookkeeping).
    pub l1_capacity_bytes: u64,
    /// L1 admission/eviction policy.
    pub l1_eviction: EvictionPolicy,
    /// Freshness of a loaded value, milliseconds.
    pub ttl_ms: u64,
    /// Freshness of the L1 copy when an L2 is configured (at most `ttl_ms`); an expired L1 copy
    /// is refreshed from L2. `None` means `ttl_ms`.
    pub l1_ttl_ms: Option<u64>,
    /// Fail-safe horizon: how long past its freshness a value is kept and served when the
    /// loader or L2 fails or is slower than the soft timeout, milliseconds. 0 disables.
    pub max_stale_ms: u64,
    /// After the fail-safe served a stale value, it counts as fresh again for this long, so a
    /// failing origin is retried at most once per throttle period, milliseconds.
    pub fail_safe_throttle_ms: u64,
    /// Freshness of a "not found" result (negative caching), milliseconds. `None` disables.
    pub negative_ttl_ms: Option<u64>,
    /// A random extra freshness in `0..=jitter_ms` per entry, so keys stored together do not
    /// expire together, milliseconds.
    pub jitter_ms: u64,
    /// When a stale value exists, a load slower than this returns the stale value and finishes
    /// in the background, milliseconds. `None` waits for the load.
    pub soft_timeout_ms: Option<u64>,
    /// A load slower than this fails (or serves stale, within `max_stale_ms`), milliseconds.
    /// `None` waits for the loader.
    pub hard_timeout_ms: Option<u64>,
    /// Longest key in bytes; longer keys bypass the cache (the loader runs every time).
    pub max_key_bytes: usize,
    /// The Redis L2; `None` runs L1 only.
    pub redis: Option<RedisConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            namespace: "default".to_owned(),
            l1_capacity_bytes: 64 * 1024 * 1024,
            l1_eviction: EvictionPolicy::TinyLfu,
            ttl_ms: 60_000,
            l1_ttl_ms: None,
            max_stale_ms: 0,
            fail_safe_throttle_ms: 1_000,
            negative_ttl_ms: None,
            jitter_ms: 0,
            soft_timeout_ms: None,
            hard_timeout_ms: None,
            max_key_bytes: 1024,
            redis: None,
        }
    }
}

/// Settings of the Redis L2 and the invalidation backplane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`, `redis+unix:///path`, or `rediss://host:port/db` for TLS (feature
    /// `redis-tls`; without it such a URL fails validation).
    pub url: String,
    /// TLS options of a `rediss://` URL: a CA to trust, a client certificate (see
    /// [`RedisTls`](crate::redis::RedisTls)).
    #[serde(skip_serializing_if = "crate::redis::RedisTls::is_empty")]
    pub tls: crate::redis::RedisTls,
    /// Prefix of every key and channel; carries the wire-format version so incompatible
    /// deployments do not read each other's entries.
    pub key_prefix: String,
    /// Deadline of one L2 call (get, set, delete, publish), milliseconds.
    pub timeout_ms: u64,
    /// Deadline of one connection attempt, milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest encoded entry written to or read from L2; larger values stay in L1 only.
    pub max_entry_bytes: usize,
    /// Subscribe to the invalidation channel so invalidations on other nodes evict this node's
    /// L1 (and publish this node's invalidations).
    pub backplane: bool,
    /// Write loaded values to L2 in a background task instead of before answering the load.
    pub background_writes: bool,
    /// Consecutive L2 failures (errors or timeouts) that open the L2 breaker.
    pub breaker_failures: u32,
    /// How long the open L2 breaker skips Redis before one probe, milliseconds.
    pub breaker_open_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".to_owned(),
            tls: crate::redis::RedisTls::default(),
            key_prefix: "palisade:v1".to_owned(),
            timeout_ms: 100,
            connect_timeout_ms: 1_000,
            max_entry_bytes: 1024 * 1024,
            backplane: true,
            background_writes: false,
            breaker_failures: 5,
            breaker_open_ms: 2_000,
        }
    }
}

/// Merges `patch` into `doc` (RFC 7396: objects merge recursively, `null` removes).
fn merge_json(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (doc, patch) {
        (Value::Object(doc), Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    doc.remove(k);
                } else {
                    merge_json(doc.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (doc, patch) => *doc = patch.clone(),
    }
}

/// Deserializes a partial document over `T::default()`, so a nested table that is only
/// partly given keeps the *parent's* defaults for the rest (serde's `default` would take the
/// nested type's own `Default`, e.g. lose a nested cache's name and namespace).
pub(crate) fn deserialize_over_default<'de, D, T, F>(d: D, finish: F) -> Result<T, D::Error>
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
    merge_json(&mut doc, &patch);
    finish(doc).map_err(D::Error::custom)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Empty { field });
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::BadChars {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn at_least(field: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::TooSmall { field, value, min });
    }
    Ok(())
}

fn at_most(field: &'static str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value > max {
        return Err(ConfigError::TooLarge { field, value, max });
    }
    Ok(())
}

/// Ten years: far enough for any TTL, small enough that `Instant + d` never overflows.
const MAX_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

impl CacheConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CacheConfigBuilder {
        CacheConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("name", &self.name)?;
        check_name("namespace", &self.namespace)?;
        at_least("l1_capacity_bytes", self.l1_capacity_bytes, 1024)?;
        at_least("ttl_ms", self.ttl_ms, 1)?;
        at_most("ttl_ms", self.ttl_ms, MAX_MS)?;
        if let Some(l1) = self.l1_ttl_ms {
            at_least("l1_ttl_ms", l1, 1)?;
            if l1 > self.ttl_ms {
                return Err(ConfigError::TtlOrder {
                    l1,
                    ttl: self.ttl_ms,
                });
            }
        }
        at_most("max_stale_ms", self.max_stale_ms, MAX_MS)?;
        at_most("fail_safe_throttle_ms", self.fail_safe_throttle_ms, MAX_MS)?;
        at_most("jitter_ms", self.jitter_ms, MAX_MS)?;
        if let Some(n) = self.negative_ttl_ms {
            at_least("negative_ttl_ms", n, 1)?;
            at_most("negative_ttl_ms", n, MAX_MS)?;
        }
        if let Some(s) = self.soft_timeout_ms {
            at_least("soft_timeout_ms", s, 1)?;
            at_most("soft_timeout_ms", s, MAX_MS)?;
        }
        if let Some(h) = self.hard_timeout_ms {
            at_least("hard_timeout_ms", h, 1)?;
            at_most("hard_timeout_ms", h, MAX_MS)?;
            if let Some(s) = self.soft_timeout_ms
                && s >= h
            {
                return Err(ConfigError::TimeoutOrder { soft: s, hard: h });
            }
        }
        at_least("max_key_bytes", self.max_key_bytes as u64, 16)?;
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        Ok(())
    }

    /// Freshness of a loaded value.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// Freshness of the L1 copy (never above [`ttl`](Self::ttl)).
    pub fn l1_ttl(&self) -> Duration {
        Duration::from_millis(self.l1_ttl_ms.unwrap_or(self.ttl_ms).min(self.ttl_ms))
    }

    /// The fail-safe horizon past freshness.
    pub fn max_stale(&self) -> Duration {
        Duration::from_millis(self.max_stale_ms)
    }

    /// The fail-safe throttle.
    pub fn fail_safe_throttle(&self) -> Duration {
        Duration::from_millis(self.fail_safe_throttle_ms)
    }

    /// Freshness of negative entries, if negative caching is on.
    pub fn negative_ttl(&self) -> Option<Duration> {
        self.negative_ttl_ms.map(Duration::from_millis)
    }

    /// The jitter bound.
    pub fn jitter(&self) -> Duration {
        Duration::from_millis(self.jitter_ms)
    }

    /// The soft load timeout.
    pub fn soft_timeout(&self) -> Option<Duration> {
        self.soft_timeout_ms.map(Duration::from_millis)
    }

    /// The hard load timeout.
    pub fn hard_timeout(&self) -> Option<Duration> {
        self.hard_timeout_ms.map(Duration::from_millis)
    }

    /// Refuses changes to fields that are fixed for the life of a cache.
    pub(crate) fn check_runtime_change(&self, next: &Self) -> Result<(), ConfigError> {
        if self.name != next.name {
            return Err(ConfigError::Immutable { field: "name" });
        }
        if self.namespace != next.namespace {
            return Err(ConfigError::Immutable { field: "namespace" });
        }
        match (&self.redis, &next.redis) {
            (None, None) => Ok(()),
            (Some(a), Some(b)) => {
                if a.url != b.url {
                    return Err(ConfigError::Immutable { field: "redis.url" });
                }
                if a.tls != b.tls {
                    return Err(ConfigError::Immutable { field: "redis.tls" });
                }
                if a.key_prefix != b.key_prefix {
                    return Err(ConfigError::Immutable {
                        field: "redis.key_prefix",
                    });
                }
                if a.backplane != b.backplane {
                    return Err(ConfigError::Immutable {
                        field: "redis.backplane",
                    });
                }
                Ok(())
            }
            _ => Err(ConfigError::Immutable { field: "redis" }),
        }
    }
}

impl RedisConfig {
    /// A Redis configuration with defaults and this URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_empty() {
            return Err(ConfigError::Empty { field: "redis.url" });
        }
        #[cfg(feature = "redis")]
        crate::redis::client(&self.url, &self.tls)?;
        check_name("redis.key_prefix", &self.key_prefix)?;
        at_least("redis.timeout_ms", self.timeout_ms, 1)?;
        at_most("redis.timeout_ms", self.timeout_ms, 60_000)?;
        at_least("redis.connect_timeout_ms", self.connect_timeout_ms, 1)?;
        at_most("redis.connect_timeout_ms", self.connect_timeout_ms, 60_000)?;
        at_least("redis.max_entry_bytes", self.max_entry_bytes as u64, 64)?;
        at_most(
            "redis.max_entry_bytes",
            self.max_entry_bytes as u64,
            512 * 1024 * 1024,
        )?;
        at_least(
            "redis.breaker_failures",
            u64::from(self.breaker_failures),
            1,
        )?;
        at_least("redis.breaker_open_ms", self.breaker_open_ms, 1)?;
        at_most("redis.breaker_open_ms", self.breaker_open_ms, MAX_MS)?;
        Ok(())
    }

    /// Deadline of one L2 call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Deadline of one connection attempt.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Builds a validated [`CacheConfig`]. Methods take `self`.
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheConfigBuilder {
    config: CacheConfig,
}

impl CacheConfigBuilder {
    /// Name for metrics, logs and the registry.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// L2 namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// L1 capacity in bytes.
    pub fn l1_capacity_bytes(mut self, bytes: u64) -> Self {
        self.config.l1_capacity_bytes = bytes;
        self
    }

    /// L1 admission/eviction policy.
    pub fn l1_eviction(mut self, policy: EvictionPolicy) -> Self {
        self.config.l1_eviction = policy;
        self
    }

    /// Freshness of a loaded value.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl_ms = ms(ttl);
        self
    }

    /// Freshness of the L1 copy when an L2 is configured.
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.config.l1_ttl_ms = Some(ms(ttl));
        self
    }

    /// Fail-safe horizon past freshness.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.config.max_stale_ms = ms(max_stale);
        self
    }

    /// Fail-safe throttle.
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.config.fail_safe_throttle_ms = ms(throttle);
        self
    }

    /// Turns negative caching on with this freshness.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl_ms = Some(ms(ttl));
        self
    }

    /// TTL jitter bound.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.config.jitter_ms = ms(jitter);
        self
    }

    /// Soft load timeout.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.config.soft_timeout_ms = Some(ms(timeout));
        self
    }

    /// Hard load timeout.
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.config.hard_timeout_ms = Some(ms(timeout));
        self
    }

    /// Longest key in bytes.
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.config.max_key_bytes = bytes;
        self
    }

    /// Adds a Redis L2.
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.config.redis = Some(redis);
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<CacheConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CacheConfig::default().validate().unwrap();
        let c = CacheConfig {
            redis: Some(RedisConfig::default()),
            ..CacheConfig::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn refuses_l1_ttl_above_ttl() {
        let e = CacheConfig::builder()
            .ttl(Duration::from_secs(1))
            .l1_ttl(Duration::from_secs(2))
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            ConfigError::TtlOrder {
                l1: 2000,
                ttl: 1000
            }
        );
        assert!(e.to_string().contains("l1_ttl_ms (2000)"));
    }

    #[test]
    fn refuses_soft_timeout_not_below_hard() {
        let e = CacheConfig::builder()
            .soft_timeout(Duration::from_millis(50))
            .hard_timeout(Duration::from_millis(50))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "soft_timeout_ms");
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(
            CacheConfig::builder()
                .namespace("a b")
                .build()
                .unwrap_err()
                .field(),
            "namespace"
        );
        assert_eq!(
            CacheConfig::builder().name("").build().unwrap_err().field(),
            "name"
        );
    }

    #[test]
    fn deserializes_partial_tables_with_defaults() {
        let c: CacheConfig = serde_json::from_value(
            serde_json::json!({"ttl_ms": 5, "redis": {"url": "redis://x/"}}),
        )
        .unwrap();
        assert_eq!(c.ttl_ms, 5);
        assert_eq!(c.redis.unwrap().key_prefix, "palisade:v1");
        assert!(serde_json::from_value::<CacheConfig>(serde_json::json!({"nope": 1})).is_err());
    }

    #[test]
    fn merges_nested_tables_and_removes_nulls() {
        let mut doc = serde_json::json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge_json(
            &mut doc,
            &serde_json::json!({"a": {"b": 5, "c": null}, "e": [1]}),
        );
        assert_eq!(doc, serde_json::json!({"a": {"b": 5}, "d": 3, "e": [1]}));
    }

    #[test]
    fn runtime_change_refuses_identity_fields() {
        let a = CacheConfig::default();
        let b = CacheConfig {
            namespace: "other".into(),
            ..a.clone()
        };
        assert_eq!(
            a.check_runtime_change(&b).unwrap_err(),
            ConfigError::Immutable { field: "namespace" }
        );
        let c = CacheConfig {
            ttl_ms: 1,
            ..a.clone()
        };
        a.check_runtime_change(&c).unwrap();
    }
}
