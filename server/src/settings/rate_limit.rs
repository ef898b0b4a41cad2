//! The `[rate_limit]` table of the reference server's configuration file, and how it becomes a
//! [`RateLimitConfig`].
//!
//! ```toml
//! [rate_limit]
//! trusted_proxies = ["10.0.0.0/8"]      # believe X-Forwarded-For only from these peers
//! forwarded_header = "x-forwarded-for"  # or "forwarded" (RFC 7239) or "none"
//! ipv6_prefix = 64                      # IPv6 clients keyed by /64
//! exempt_paths = ["/health/*", "/metrics"]
//! exempt_cidrs = ["127.0.0.1/32"]
//! headers = "all"                       # RateLimit headers on "all", "rejected" or "none"
//!
//! [rate_limit.redis]                    # optional; store = "redis" needs it or [redis] url
//! url = "redis://127.0.0.1:6379/"       # default: [redis] url (whose TLS options apply)
//! timeout = "50ms"
//! prefix = "palisade:rl:"
//!
//! [[rate_limit.policy]]
//! name = "api"
//! rate = 100
//! per = "1s"                            # or per_secs = 1
//! burst = 20                            # default: rate
//! key = "client_ip"                     # "global", "client_ip", "route", { header = "x-api-key" }
//! paths = ["/api/*"]                    # default: every path
//! methods = ["GET", "POST"]             # default: every method
//! mode = "enforce"                      # "enforce", "shadow", "off"
//! store = "local"                       # "local", "shm" (zone per policy, from the supervisor), "redis"
//! max_keys = 100000                     # local store (or Redis fallback store) size
//! failure_mode = "local_fallback"       # Redis only: "fail_open", "fail_closed", "local_fallback"
//! ```

#[cfg(unix)]
use std::collections::HashMap;
#[cfg(unix)]
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use palisade::rate_limit::{
    ConfigError, DEFAULT_MAX_KEYS, FailureMode, ForwardedHeader, HeaderMode, KeySource, Limits,
    Mode, PolicyConfig, RateLimitConfig, RateLimitHandle, RateLimitLayer, RedisOptions, RedisStore,
    ShmZone, StoreChoice,
};
use palisade::redis::RedisTls;

fn default_ipv6_prefix() -> u8 {
    64
}

fn default_per() -> Duration {
    Duration::from_secs(1)
}

/// The `[rate_limit]` table. Build a layer with [`RateLimitSettings::layer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Proxies whose forwarding header is believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// The header trusted proxies set.
    #[serde(default)]
    pub forwarded_header: ForwardedHeader,
    /// IPv6 clients are keyed by this prefix length.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Paths never limited (`/exact`, `/prefix/*`).
    #[serde(default)]
    pub exempt_paths: Vec<String>,
    /// Client networks never limited.
    #[serde(default)]
    pub exempt_cidrs: Vec<IpNet>,
    /// Which responses carry `RateLimit` headers.
    #[serde(default)]
    pub headers: HeaderMode,
    /// Redis connection for `store = "redis"` policies.
    #[serde(default)]
    pub redis: Option<RedisSettings>,
    /// The policies (`[[rate_limit.policy]]`), evaluated in order.
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicySettings>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            ipv6_prefix: default_ipv6_prefix(),
            exempt_paths: Vec::new(),
            exempt_cidrs: Vec::new(),
            headers: HeaderMode::default(),
            redis: None,
            policies: Vec::new(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_prefix() -> String {
    "palisade:rl:".into()
}

/// The `[rate_limit.redis]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://` (TLS); default: the `[redis]` table's `url`.
    #[serde(default)]
    pub url: Option<String>,
    /// Per-call timeout (default 50 ms); a slower answer counts as a failure.
    #[serde(default = "default_timeout", with = "palisade::duration")]
    pub timeout: Duration,
    /// Key prefix (default `palisade:rl:`); keys are `<prefix><policy>:<key>`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

/// What a policy counts requests by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySetting {
    /// One bucket.
    Global,
    /// The client IP (the default).
    #[default]
    ClientIp,
    /// The route template.
    Route,
    /// A header's value: `key = { header = "x-api-key" }`.
    Header(String),
}

/// Where a policy keeps its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreSetting {
    /// In this process (the default).
    #[default]
    Local,
    /// In the policy's shared-memory zone, given in the [`BuildContext`].
    Shm,
    /// In Redis (`[rate_limit.redis]`).
    Redis,
}

/// One `[[rate_limit.policy]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Unique name (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// Cells replenished per `per`.
    pub rate: u32,
    /// Replenishment period (default `1s`); `per_secs` is an alias taking seconds.
    #[serde(
        default = "default_per",
        with = "palisade::duration",
        alias = "per_secs"
    )]
    pub per: Duration,
    /// Cells that may be taken at once (default: `rate`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Enforce, shadow or off.
    #[serde(default)]
    pub mode: Mode,
    /// What requests are counted by.
    #[serde(default)]
    pub key: KeySetting,
    /// Path patterns the policy applies to (default: all).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Methods the policy applies to (default: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Where state lives.
    #[serde(default)]
    pub store: StoreSetting,
    /// Local store size (or Redis fallback store size); default 100 000.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Redis only: behaviour while Redis is unavailable.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

/// What the embedding program provides to [`RateLimitSettings::layer`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BuildContext {
    /// Shared-memory zones for `store = "shm"` policies, by policy name (created by the
    /// supervisor, one per policy).
    pub shm_zones: HashMap<String, Arc<ShmZone>>,
    /// A Redis store to use instead of connecting to `[rate_limit.redis]`.
    pub redis: Option<RedisStore>,
    /// The shared Redis (`[redis] url`), used when `[rate_limit.redis]` names no URL.
    pub redis_url: Option<String>,
    /// TLS options of every `rediss://` connection (`[redis]`).
    pub redis_tls: RedisTls,
}

impl BuildContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the shared-memory zone of `policy`. Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    #[must_use]
    pub fn with_shm_zone(mut self, policy: impl Into<String>, zone: Arc<ShmZone>) -> Self {
        self.shm_zones.insert(policy.into(), zone);
        self
    }

    /// With a Redis store.
    #[must_use]
    pub fn with_redis(mut self, redis: RedisStore) -> Self {
        self.redis = Some(redis);
        self
    }

    /// With the shared Redis URL and TLS options (the `[redis]` table).
    #[must_use]
    pub fn with_shared_redis(mut self, url: Option<String>, tls: RedisTls) -> Self {
        self.redis_url = url;
        self.redis_tls = tls;
        self
    }
}

fn invalid(field: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl RateLimitSettings {
    /// The URL `store = "redis"` policies use: `[rate_limit.redis] url`, else the shared one;
    /// `None` when no policy needs Redis and no `[rate_limit.redis]` table is given.
    pub fn redis_url<'a>(&'a self, shared: Option<&'a str>) -> Option<&'a str> {
        let wanted =
            self.redis.is_some() || self.policies.iter().any(|p| p.store == StoreSetting::Redis);
        if !wanted {
            return None;
        }
        self.redis
            .as_ref()
            .and_then(|r| r.url.as_deref())
            .or(shared)
    }

    fn redis_store(&self, ctx: &BuildContext) -> Result<Option<RedisStore>, ConfigError> {
        let Some(url) = self.redis_url(ctx.redis_url.as_deref()) else {
            if self.redis.is_some() {
                return Err(invalid(
                    "redis.url",
                    "",
                    "is not set: give [rate_limit.redis] a url, or set [redis] url",
                ));
            }
            return Ok(None);
        };
        let mut options = RedisOptions::new(url).tls(ctx.redis_tls.clone());
        if let Some(r) = &self.redis {
            options.timeout = r.timeout;
            options.prefix.clone_from(&r.prefix);
        }
        RedisStore::new(options)
            .map(Some)
            .map_err(|e| invalid("redis.url", url, e.to_string()))
    }

    /// Whether a policy is keyed by route template (`key = "route"`): such a limiter must run
    /// inside the router (after routing, where axum's `MatchedPath` is known); every other
    /// limiter can wrap the whole router.
    pub fn keys_by_route(&self) -> bool {
        self.policies.iter().any(|p| p.key == KeySetting::Route)
    }

    /// Builds and validates the layer configuration.
    pub fn config(&self, ctx: &BuildContext) -> Result<RateLimitConfig, ConfigError> {
        let mut redis = ctx.redis.clone();
        if redis.is_none() {
            redis = self.redis_store(ctx)?;
        }
        let mut builder = RateLimitConfig::builder()
            .trusted_proxies(self.trusted_proxies.iter().copied())
            .forwarded_header(self.forwarded_header)
            .ipv6_prefix(self.ipv6_prefix)
            .exempt_cidrs(self.exempt_cidrs.iter().copied())
            .headers(self.headers);
        for p in &self.exempt_paths {
            builder = builder.exempt_path(p.clone());
        }
        for p in &self.policies {
            let key = match &p.key {
                KeySetting::Global => KeySource::Global,
                KeySetting::ClientIp => KeySource::ClientIp,
                KeySetting::Route => KeySource::Route,
                KeySetting::Header(h) => KeySource::Header(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| invalid("policy.key.header", h, "is not a header name"))?,
                ),
            };
            let methods = p
                .methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| invalid("policy.methods", m, "is not an HTTP method"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let max_keys = p.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
            let store = match p.store {
                StoreSetting::Local => StoreChoice::Local { max_keys },
                #[cfg(unix)]
                StoreSetting::Shm => StoreChoice::Shm(
                    ctx.shm_zones
                        .get(&p.name)
                        .cloned()
                        .ok_or_else(|| ConfigError::NoShmZone(p.name.clone()))?,
                ),
                StoreSetting::Redis => StoreChoice::Redis {
                    store: redis
                        .clone()
                        .ok_or_else(|| ConfigError::NoRedis(p.name.clone()))?,
                    failure_mode: p.failure_mode,
                    fallback_max_keys: max_keys,
                },
            };
            builder = builder.policy(
                PolicyConfig::builder(p.name.clone())
                    .limits(Limits {
                        rate: p.rate,
                        per: p.per,
                        burst: p.burst.unwrap_or(p.rate),
                        mode: p.mode,
                    })
                    .key(key)
                    .paths(p.paths.iter().cloned())
                    .methods(methods)
                    .store_choice(store),
            );
        }
        builder.build()
    }

    /// Builds the layer and its handle.
    ///
    /// ```
    /// use palisade_server::settings::rate_limit::{BuildContext, RateLimitSettings};
    ///
    /// let settings: RateLimitSettings = toml::from_str(r#"
    ///     exempt_paths = ["/health/*"]
    ///     [[policy]]
    ///     name = "api"
    ///     rate = 100
    ///     per = "1s"
    ///     burst = 20
    /// "#).unwrap();
    /// let (layer, handle) = settings.layer(&BuildContext::new()).unwrap();
    /// assert_eq!(handle.policy("api").unwrap().limits().burst, 20);
    /// # let _ = layer;
    /// ```
    pub fn layer(
        &self,
        ctx: &BuildContext,
    ) -> Result<(RateLimitLayer, RateLimitHandle), ConfigError> {
        Ok(RateLimitLayer::new(self.config(ctx)?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use palisade::rate_limit::{ConfigError, Limits, Mode, ShmZone};

    use super::*;

    #[test]
    fn toml_settings_build_a_layer() {
        let settings: RateLimitSettings = toml::from_str(
            r#"
            trusted_proxies = ["10.0.0.0/8"]
            exempt_paths = ["/health/*", "/metrics"]
            headers = "rejected"

            [[policy]]
            name = "api"
            rate = 100
            per = "1s"
            burst = 20
            paths = ["/api/*"]
            methods = ["get", "POST"]

            [[policy]]
            name = "keys"
            rate = 10
            per_secs = 60
            key = { header = "x-api-key" }
            mode = "shadow"
            max_keys = 7000
            "#,
        )
        .unwrap();
        let (_layer, handle) = settings.layer(&BuildContext::new()).unwrap();
        let keys = handle.policy("keys").unwrap();
        assert_eq!(
            keys.limits(),
            Limits {
                rate: 10,
                per: Duration::from_secs(60),
                burst: 10,
                mode: Mode::Shadow,
            }
        );
        assert_eq!(keys.stats().store_stats.capacity, 7000);
        assert_eq!(keys.stats().key, "header:x-api-key");

        let bad: Result<RateLimitSettings, _> =
            toml::from_str("[[policy]]\nname = \"a\"\nrate = 1\nwindow = 2");
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
        let shm: RateLimitSettings =
            toml::from_str("[[policy]]\nname = \"a\"\nrate = 1\nstore = \"shm\"").unwrap();
        assert_eq!(
            shm.config(&BuildContext::new()).unwrap_err(),
            ConfigError::NoShmZone("a".into())
        );
        let zone = ShmZone::create_anonymous("settings", 70).unwrap();
        assert!(
            shm.config(&BuildContext::new().with_shm_zone("a", zone))
                .is_ok()
        );
        let zero: RateLimitSettings = toml::from_str("[[policy]]\nname = \"a\"\nrate = 0").unwrap();
        assert!(
            zero.config(&BuildContext::new())
                .unwrap_err()
                .to_string()
                .contains("rate")
        );
    }
}
