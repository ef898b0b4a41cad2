//! [`ResponseCacheConfig`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::config::deserialize_over_default;
use crate::cache::{CacheConfig, ConfigError};

/// Settings of a [`ResponseCacheLayer`](super::ResponseCacheLayer). Durations are milliseconds.
///
/// ```
/// use palisade::cache::response::ResponseCacheConfig;
/// let config: ResponseCacheConfig = serde_json::from_value(serde_json::json!({
///     "max_body_bytes": 65536,
///     "store": { "name": "names", "namespace": "http-names", "l1_capacity_bytes": 8388608 }
/// })).unwrap();
/// config.validate().unwrap();
/// assert!(!config.allow_authorized);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct ResponseCacheConfig {
    /// The underlying [`TwoLevelCache`](crate::cache::TwoLevelCache): name, namespace, L1
    /// capacity, optional Redis. Response TTLs come from the responses; the store's `ttl_ms`
    /// only bounds the "hit-for-pass" markers.
    pub store: CacheConfig,
    /// Largest body stored; a larger (or longer-than-announced) body is passed through as it
    /// streams, after buffering at most this many bytes.
    pub max_body_bytes: usize,
    /// Freshness given to storable responses that state none (no `max-age`, `s-maxage` or
    /// `Expires`). `None`: such responses are not stored.
    pub default_ttl_ms: Option<u64>,
    /// Upper bound of any freshness lifetime and stale window.
    pub max_ttl_ms: u64,
    /// Also serve and store responses to requests carrying `Authorization` or `Cookie`, when the
    /// response is explicitly shareable (`public` or `s-maxage`, RFC 9111 §3.5). Responses are
    /// not keyed by identity: only enable this for origins that mark per-user responses
    /// `private`.
    pub allow_authorized: bool,
    /// Include the `Host` (or URI authority) in the key. Turn off only behind a single virtual
    /// host.
    pub include_host: bool,
    /// How long concurrent misses for one URI wait for the first to fill the cache before going
    /// to the origin themselves (nginx `proxy_cache_lock_timeout`).
    pub lock_timeout_ms: u64,
    /// After a response to a URI was not storable, concurrent misses for it stop waiting for
    /// each other for this long ("hit-for-pass").
    pub pass_ttl_ms: u64,
    /// A successful `POST`, `PUT`, `PATCH` or `DELETE` invalidates the cached `GET` for the same
    /// URI, on every node (RFC 9111 §4.4).
    pub invalidate_on_unsafe: bool,
    /// The cache's identifier in `Cache-Status` (an RFC 8941 token).
    pub cache_status_name: String,
}

impl Serialize for ResponseCacheConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ResponseCacheConfig::serialize(self, s)
    }
}

/// A partial `store` table keeps this type's store defaults (name and namespace `responses`).
impl<'de> Deserialize<'de> for ResponseCacheConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_over_default(d, ResponseCacheConfig::deserialize)
    }
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        Self {
            store: CacheConfig {
                name: "responses".to_owned(),
                namespace: "responses".to_owned(),
                ..CacheConfig::default()
            },
            max_body_bytes: 1024 * 1024,
            default_ttl_ms: None,
            max_ttl_ms: 24 * 3600 * 1000,
            allow_authorized: false,
            include_host: true,
            lock_timeout_ms: 5_000,
            pass_ttl_ms: 10_000,
            invalidate_on_unsafe: true,
            cache_status_name: "palisade".to_owned(),
        }
    }
}

fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && chars.all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
}

impl ResponseCacheConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ResponseCacheConfigBuilder {
        ResponseCacheConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every rule (including the store's).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate()?;
        if self.max_body_bytes < 1 {
            return Err(ConfigError::TooSmall {
                field: "max_body_bytes",
                value: 0,
                min: 1,
            });
        }
        if self.max_body_bytes > 256 * 1024 * 1024 {
            return Err(ConfigError::TooLarge {
                field: "max_body_bytes",
                value: self.max_body_bytes as u64,
                max: 256 * 1024 * 1024,
            });
        }
        if self.max_ttl_ms < 1 {
            return Err(ConfigError::TooSmall {
                field: "max_ttl_ms",
                value: 0,
                min: 1,
            });
        }
        if let Some(d) = self.default_ttl_ms
            && d < 1
        {
            return Err(ConfigError::TooSmall {
                field: "default_ttl_ms",
                value: d,
                min: 1,
            });
        }
        if self.pass_ttl_ms < 1 {
            return Err(ConfigError::TooSmall {
                field: "pass_ttl_ms",
                value: 0,
                min: 1,
            });
        }
        if !is_token(&self.cache_status_name) {
            return Err(ConfigError::BadChars {
                field: "cache_status_name",
                value: self.cache_status_name.clone(),
            });
        }
        Ok(())
    }

    /// The freshness bound.
    pub fn max_ttl(&self) -> Duration {
        Duration::from_millis(self.max_ttl_ms)
    }

    /// The coalescing wait.
    pub fn lock_timeout(&self) -> Duration {
        Duration::from_millis(self.lock_timeout_ms)
    }
}

/// Builds a validated [`ResponseCacheConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ResponseCacheConfigBuilder {
    config: ResponseCacheConfig,
}

impl ResponseCacheConfigBuilder {
    /// The underlying cache's configuration.
    pub fn store(mut self, store: CacheConfig) -> Self {
        self.config.store = store;
        self
    }

    /// Largest body stored.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config.max_body_bytes = bytes;
        self
    }

    /// Freshness of responses that state none.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl_ms = Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Upper bound of freshness and stale windows.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.config.max_ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Serve and store explicitly shareable responses to requests with credentials.
    pub fn allow_authorized(mut self, allow: bool) -> Self {
        self.config.allow_authorized = allow;
        self
    }

    /// Include the host in the key.
    pub fn include_host(mut self, include: bool) -> Self {
        self.config.include_host = include;
        self
    }

    /// Coalescing wait.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.config.lock_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Invalidate on successful unsafe methods.
    pub fn invalidate_on_unsafe(mut self, invalidate: bool) -> Self {
        self.config.invalidate_on_unsafe = invalidate;
        self
    }

    /// The `Cache-Status` identifier.
    pub fn cache_status_name(mut self, name: impl Into<String>) -> Self {
        self.config.cache_status_name = name.into();
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<ResponseCacheConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_store_table_keeps_the_store_defaults() {
        let c: ResponseCacheConfig =
            serde_json::from_value(serde_json::json!({"store": {"ttl_ms": 5}})).unwrap();
        assert_eq!((c.store.name.as_str(), c.store.ttl_ms), ("responses", 5));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["store"]["namespace"], "responses");
        let err = serde_json::from_value::<ResponseCacheConfig>(serde_json::json!({"nope": 1}))
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `nope`"), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_names_are_tokens() {
        ResponseCacheConfig::default().validate().unwrap();
        assert!(is_token("palisade"));
        assert!(is_token("edge-1.example/x"));
        assert!(!is_token("two words"));
        assert!(!is_token("1abc"));
        let e = ResponseCacheConfig::builder()
            .cache_status_name("a b")
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "cache_status_name");
    }
}
