//! Validated configuration: [`RateLimitConfig`], its policies and their [`Limits`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::gcra::Gcra;
use super::key::{ClientIpConfig, ForwardedHeader, KeySource};
#[cfg(feature = "redis")]
use super::store::RedisStore;
#[cfg(unix)]
use super::store::ShmZone;
use super::store::Store;
use crate::control::FieldError;

/// The most policies one layer may hold.
pub const MAX_POLICIES: usize = 64;
/// Default `max_keys` of a local store.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
const MAX_RATE: u32 = 1_000_000_000;
const MAX_BURST: u32 = 10_000_000;
const MIN_PER: Duration = Duration::from_millis(1);
const MAX_SPAN: Duration = Duration::from_secs(366 * 86_400);
/// Emission intervals below this (more than 10 million cells per second) are refused.
const MIN_EMISSION: Duration = Duration::from_nanos(100);
const MAX_KEYS: usize = 1 << 31;

/// What a policy does with a request over its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reject with 429 (the default).
    #[default]
    Enforce,
    /// Count the would-be rejection (`shadow_rejected`) and let the request through (nginx
    /// `limit_req_dry_run`, Envoy `filter_enforced` off).
    Shadow,
    /// Do not evaluate the policy at all.
    Off,
}

impl Mode {
    /// `enforce`, `shadow` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Shadow => "shadow",
            Self::Off => "off",
        }
    }
}

/// Which responses carry the `RateLimit` / `RateLimit-Policy` headers. `Retry-After` is always
/// sent on a 429.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMode {
    /// Allowed and rejected responses (the default).
    #[default]
    All,
    /// Only 429 responses.
    Rejected,
    /// Never.
    None,
}

/// What a Redis-backed policy does while Redis is unavailable (error, timeout or open breaker).
/// Never a 5xx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Allow the request.
    FailOpen,
    /// Reject with 429 and `Retry-After: 1`.
    FailClosed,
    /// Apply the same quota in a local store of this process (the default). With N instances the
    /// aggregate admitted rate during an outage is up to N × the quota.
    #[default]
    LocalFallback,
}

impl FailureMode {
    /// `fail_open`, `fail_closed` or `local_fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
            Self::LocalFallback => "local_fallback",
        }
    }
}

/// The runtime-changeable part of a policy: its quota and mode.
///
/// JSON/TOML shape: `{"rate": 100, "per": "1s", "burst": 20, "mode": "enforce"}`; `per` also
/// accepts a number of seconds, and the admin API accepts `per_secs` as an alias.
///
/// `rate` cells are replenished per `per`; up to `burst` may be taken at once. For example
/// `rate = 100, per = "1s", burst = 20` admits 20 requests at once, then one every 10 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Cells replenished per `per` (1 ..= 1 000 000 000).
    pub rate: u32,
    /// The replenishment period (1 ms ..= 366 days).
    #[serde(with = "crate::duration")]
    pub per: Duration,
    /// Cells that may be taken at once (1 ..= 10 000 000).
    pub burst: u32,
    /// Enforce, shadow or off.
    #[serde(default)]
    pub mode: Mode,
}

impl Limits {
    /// `rate` per second, with `burst = rate`.
    pub fn per_second(rate: u32) -> Self {
        Self {
            rate,
            per: Duration::from_secs(1),
            burst: rate,
            mode: Mode::Enforce,
        }
    }

    /// Checks every field; returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.rate == 0 {
            errors.push(FieldError::new("rate", "must be at least 1 (got 0)"));
        } else if self.rate > MAX_RATE {
            errors.push(FieldError::new(
                "rate",
                format!("must be at most {MAX_RATE} (got {})", self.rate),
            ));
        }
        if self.per < MIN_PER || self.per > MAX_SPAN {
            errors.push(FieldError::new(
                "per",
                format!(
                    "must be between 1ms and 366d (got {})",
                    crate::duration::format(self.per)
                ),
            ));
        }
        if self.burst == 0 {
            errors.push(FieldError::new("burst", "must be at least 1 (got 0)"));
        } else if self.burst > MAX_BURST {
            errors.push(FieldError::new(
                "burst",
                format!("must be at most {MAX_BURST} (got {})", self.burst),
            ));
        }
        if errors.is_empty() {
            let emission = self.per / self.rate;
            if emission < MIN_EMISSION {
                errors.push(FieldError::new(
                    "rate",
                    format!(
                        "{} per {} is more than 10000000 per second",
                        self.rate,
                        crate::duration::format(self.per)
                    ),
                ));
            } else if emission.saturating_mul(self.burst) > MAX_SPAN {
                errors.push(FieldError::new(
                    "burst",
                    format!(
                        "refilling a burst of {} takes {}, more than 366d",
                        self.burst,
                        crate::duration::format(emission.saturating_mul(self.burst))
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The GCRA parameters of these limits.
    pub fn gcra(&self) -> Gcra {
        Gcra::new(self.rate, self.per, self.burst)
    }
}

pub(crate) use crate::path_pattern::PathPattern;

/// Where a policy keeps its state.
#[derive(Clone)]
#[non_exhaustive]
pub enum StoreChoice {
    /// A [`LocalStore`](super::LocalStore) of at most `max_keys` keys (the default,
    /// 100 000 keys).
    Local {
        /// Maximum keys.
        max_keys: usize,
    },
    /// A shared-memory zone used by several processes (one zone per policy). Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    Shm(Arc<ShmZone>),
    /// Redis, with a failure policy and a local fallback store of `fallback_max_keys`.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis {
        /// The Redis connection.
        store: RedisStore,
        /// What to do while Redis is unavailable.
        failure_mode: FailureMode,
        /// Size of the local store used by [`FailureMode::LocalFallback`].
        fallback_max_keys: usize,
    },
    /// Any other [`Store`] implementation.
    Custom(Arc<dyn Store>),
}

impl fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { max_keys } => {
                f.debug_struct("Local").field("max_keys", max_keys).finish()
            }
            #[cfg(unix)]
            Self::Shm(z) => f.debug_tuple("Shm").field(z).finish(),
            #[cfg(feature = "redis")]
            Self::Redis { failure_mode, .. } => f
                .debug_struct("Redis")
                .field("failure_mode", failure_mode)
                .finish_non_exhaustive(),
            Self::Custom(s) => f.debug_tuple("Custom").field(s).finish(),
        }
    }
}

/// One named policy. Build with [`PolicyConfig::builder`].
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub(crate) name: String,
    pub(crate) limits: Limits,
    pub(crate) key: KeySource,
    pub(crate) paths: Vec<String>,
    pub(crate) methods: Vec<Method>,
    pub(crate) store: StoreChoice,
}

impl PolicyConfig {
    /// A policy named `name` (letters, digits, `_`, `-`, `.`; it appears in headers, metrics and
    /// the admin API). Defaults: 100 per second, burst = rate, key = client IP, every path and
    /// method, local store of 100 000 keys, enforce.
    pub fn builder(name: impl Into<String>) -> PolicyBuilder {
        PolicyBuilder {
            config: PolicyConfig {
                name: name.into(),
                limits: Limits::per_second(100),
                key: KeySource::ClientIp,
                paths: Vec::new(),
                methods: Vec::new(),
                store: StoreChoice::Local {
                    max_keys: DEFAULT_MAX_KEYS,
                },
            },
            burst_set: false,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's initial limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Builder of a [`PolicyConfig`]; validated by [`RateLimitConfigBuilder::build`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PolicyBuilder {
    config: PolicyConfig,
    burst_set: bool,
}

impl PolicyBuilder {
    /// `rate` cells per [`per`](Self::per) (default per second).
    pub fn rate(mut self, rate: u32) -> Self {
        self.config.limits.rate = rate;
        if !self.burst_set {
            self.config.limits.burst = rate;
        }
        self
    }

    /// The replenishment period.
    pub fn per(mut self, per: Duration) -> Self {
        self.config.limits.per = per;
        self
    }

    /// `rate` per second.
    pub fn per_second(self, rate: u32) -> Self {
        self.rate(rate).per(Duration::from_secs(1))
    }

    /// `rate` per minute.
    pub fn per_minute(self, rate: u32) -> Self {
        self.rate(rate).per(Duration::from_secs(60))
    }

    /// Cells that may be taken at once (default: equal to the rate).
    pub fn burst(mut self, burst: u32) -> Self {
        self.config.limits.burst = burst;
        self.burst_set = true;
        self
    }

    /// All limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self.burst_set = true;
        self
    }

    /// Enforce, shadow or off.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.limits.mode = mode;
        self
    }

    /// What requests are counted by.
    pub fn key(mut self, key: KeySource) -> Self {
        self.config.key = key;
        self
    }

    /// Restricts the policy to request paths matching any of these patterns (`/exact`,
    /// `/prefix/*`, `*`).
    pub fn paths<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .paths
            .extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Restricts the policy to these methods.
    pub fn methods<I: IntoIterator<Item = Method>>(mut self, methods: I) -> Self {
        self.config.methods.extend(methods);
        self
    }

    /// Keeps state in a local store of at most `max_keys` keys.
    pub fn local(mut self, max_keys: usize) -> Self {
        self.config.store = StoreChoice::Local { max_keys };
        self
    }

    /// Keeps state in a shared-memory zone (one zone per policy). Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    pub fn shm(mut self, zone: Arc<ShmZone>) -> Self {
        self.config.store = StoreChoice::Shm(zone);
        self
    }

    /// Keeps state in Redis, with `failure_mode` while it is unavailable (the local fallback
    /// store has the default size).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, store: RedisStore, failure_mode: FailureMode) -> Self {
        self.config.store = StoreChoice::Redis {
            store,
            failure_mode,
            fallback_max_keys: DEFAULT_MAX_KEYS,
        };
        self
    }

    /// Keeps state in any [`Store`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.config.store = StoreChoice::Custom(store);
        self
    }

    /// Any store choice.
    pub fn store_choice(mut self, store: StoreChoice) -> Self {
        self.config.store = store;
        self
    }

    /// The unvalidated policy (validated when the layer config is built).
    pub fn build(self) -> PolicyConfig {
        self.config
    }
}

impl From<PolicyBuilder> for PolicyConfig {
    fn from(b: PolicyBuilder) -> Self {
        b.build()
    }
}

/// A configuration that could not be built. Names the field, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A policy's limits are invalid.
    #[error("rate_limit.policy `{policy}`: {field}: {reason}")]
    Limits {
        /// The policy.
        policy: String,
        /// The field (`rate`, `per`, `burst`).
        field: String,
        /// The rule broken.
        reason: String,
    },
    /// A policy name is empty or has characters other than letters, digits, `_`, `-`, `.`.
    #[error("rate_limit.policy name `{0}` must be 1-64 letters, digits, `_`, `-` or `.`")]
    BadName(String),
    /// Two policies share a name.
    #[error("rate_limit.policy name `{0}` is used twice")]
    DuplicateName(String),
    /// More than [`MAX_POLICIES`] policies.
    #[error("rate_limit.policy: at most {MAX_POLICIES} policies (got {0})")]
    TooManyPolicies(usize),
    /// A path pattern is malformed.
    #[error("rate_limit: path pattern `{pattern}` {reason}")]
    BadPath {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// `max_keys` out of range.
    #[error(
        "rate_limit.policy `{policy}`: max_keys must be between 1 and {MAX_KEYS} (got {value})"
    )]
    MaxKeys {
        /// The policy.
        policy: String,
        /// The value given.
        value: usize,
    },
    /// `ipv6_prefix` above 128.
    #[error("rate_limit.ipv6_prefix must be at most 128 (got {0})")]
    Ipv6Prefix(u8),
    /// A settings value could not be parsed (CIDR, header name, method, URL...).
    #[error("rate_limit.{field}: `{value}` {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A shared-memory zone cannot be used by this policy.
    #[error("rate_limit.policy `{policy}`: {reason}")]
    ShmZone {
        /// The policy.
        policy: String,
        /// Why.
        reason: String,
    },
    /// A policy uses `store = "shm"` but no zone was provided.
    #[error("rate_limit.policy `{0}` uses store \"shm\" but no shared-memory zone was provided")]
    NoShmZone(String),
    /// A policy uses `store = "shm"` on a platform without shared-memory zones (not unix).
    #[error(
        "rate_limit.policy `{0}` uses store \"shm\", which needs a unix system (shared memory \
         between worker processes); use store \"local\" or \"redis\" here"
    )]
    ShmUnsupported(String),
    /// A policy uses `store = "redis"` but no Redis is configured (or the `redis` feature is off).
    #[error("rate_limit.policy `{0}` uses store \"redis\" but rate_limit.redis is not configured")]
    NoRedis(String),
}

/// The validated configuration of a [`RateLimitLayer`](super::RateLimitLayer).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub(crate) policies: Vec<PolicyConfig>,
    pub(crate) policy_paths: Vec<Vec<PathPattern>>,
    pub(crate) client_ip: ClientIpConfig,
    pub(crate) exempt_paths: Vec<PathPattern>,
    pub(crate) exempt_cidrs: Vec<IpNet>,
    pub(crate) headers: HeaderMode,
}

impl RateLimitConfig {
    /// A builder with no policies, no trusted proxies, no exemptions, headers on all responses.
    pub fn builder() -> RateLimitConfigBuilder {
        RateLimitConfigBuilder {
            policies: Vec::new(),
            client_ip: ClientIpConfig::default(),
            exempt_paths: Vec::new(),
            exempt_cidrs: Vec::new(),
            headers: HeaderMode::All,
        }
    }

    /// The policies, in evaluation order.
    pub fn policies(&self) -> &[PolicyConfig] {
        &self.policies
    }
}

/// Builder of a [`RateLimitConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitConfigBuilder {
    policies: Vec<PolicyConfig>,
    client_ip: ClientIpConfig,
    exempt_paths: Vec<String>,
    exempt_cidrs: Vec<IpNet>,
    headers: HeaderMode,
}

impl RateLimitConfigBuilder {
    /// Adds a policy. Policies are evaluated in the order added (local and shared-memory ones
    /// before Redis ones); a request must pass all that apply.
    pub fn policy(mut self, policy: impl Into<PolicyConfig>) -> Self {
        self.policies.push(policy.into());
        self
    }

    /// Proxies whose forwarding header is believed.
    pub fn trusted_proxies<I: IntoIterator<Item = IpNet>>(mut self, nets: I) -> Self {
        self.client_ip.trusted_proxies.extend(nets);
        self
    }

    /// The header trusted proxies set (default `X-Forwarded-For`).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.client_ip.header = header;
        self
    }

    /// IPv6 clients are keyed by this prefix length (default 64).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.client_ip.ipv6_prefix = bits;
        self
    }

    /// Requests whose path matches are never limited (e.g. `/health/*`).
    pub fn exempt_path(mut self, pattern: impl Into<String>) -> Self {
        self.exempt_paths.push(pattern.into());
        self
    }

    /// Clients (resolved client IP) in these networks are never limited.
    pub fn exempt_cidrs<I: IntoIterator<Item = IpNet>>(mut self, nets: I) -> Self {
        self.exempt_cidrs.extend(nets);
        self
    }

    /// Which responses carry the `RateLimit` headers.
    pub fn headers(mut self, mode: HeaderMode) -> Self {
        self.headers = mode;
        self
    }

    /// Validates everything.
    pub fn build(self) -> Result<RateLimitConfig, ConfigError> {
        if self.policies.len() > MAX_POLICIES {
            return Err(ConfigError::TooManyPolicies(self.policies.len()));
        }
        if self.client_ip.ipv6_prefix > 128 {
            return Err(ConfigError::Ipv6Prefix(self.client_ip.ipv6_prefix));
        }
        let parse_paths = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| {
                    PathPattern::parse(p).map_err(|reason| ConfigError::BadPath {
                        pattern: p.clone(),
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let exempt_paths = parse_paths(&self.exempt_paths)?;
        let mut names = HashSet::new();
        let mut policy_paths = Vec::with_capacity(self.policies.len());
        for p in &self.policies {
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !name_ok {
                return Err(ConfigError::BadName(p.name.clone()));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::DuplicateName(p.name.clone()));
            }
            if let Err(errors) = p.limits.validate() {
                let e = &errors[0];
                return Err(ConfigError::Limits {
                    policy: p.name.clone(),
                    field: e.field.clone(),
                    reason: e.reason.clone(),
                });
            }
            let max_keys = match &p.store {
                StoreChoice::Local { max_keys } => Some(*max_keys),
                #[cfg(feature = "redis")]
                StoreChoice::Redis {
                    fallback_max_keys, ..
                } => Some(*fallback_max_keys),
                _ => None,
            };
            if let Some(value) = max_keys.filter(|&v| v == 0 || v > MAX_KEYS) {
                return Err(ConfigError::MaxKeys {
                    policy: p.name.clone(),
                    value,
                });
            }
            #[cfg(unix)]
            if let StoreChoice::Shm(zone) = &p.store {
                zone.store(&p.name).map_err(|e| ConfigError::ShmZone {
                    policy: p.name.clone(),
                    reason: e.to_string(),
                })?;
            }
            policy_paths.push(parse_paths(&p.paths)?);
        }
        Ok(RateLimitConfig {
            policies: self.policies,
            policy_paths,
            client_ip: self.client_ip,
            exempt_paths,
            exempt_cidrs: self.exempt_cidrs,
            headers: self.headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, per: Duration, burst: u32) -> Limits {
        Limits {
            rate,
            per,
            burst,
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn absurd_limits_are_refused_with_reasons() {
        let s = Duration::from_secs(1);
        assert!(limits(100, s, 20).validate().is_ok());
        let e = limits(0, Duration::ZERO, 0).validate().unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["rate", "per", "burst"]);
        assert!(e[0].reason.contains("at least 1"));
        let e = limits(1_000_000_000, s, 1).validate().unwrap_err();
        assert_eq!(e[0].field, "rate");
        assert!(
            e[0].reason.contains("10000000 per second"),
            "{}",
            e[0].reason
        );
        let e = limits(1, Duration::from_secs(86_400), 1000)
            .validate()
            .unwrap_err();
        assert_eq!(e[0].field, "burst");
        assert!(
            limits(1, Duration::from_secs(400 * 86_400), 1)
                .validate()
                .is_err()
        );
        assert!(limits(1, s, 10_000_001).validate().is_err());
    }

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("/health/*").unwrap();
        assert!(p.matches("/health") && p.matches("/health/live"));
        assert!(!p.matches("/healthz") && !p.matches("/api"));
        let p = PathPattern::parse("/metrics").unwrap();
        assert!(p.matches("/metrics") && !p.matches("/metrics/x"));
        assert!(PathPattern::parse("*").unwrap().matches("/anything"));
        assert!(PathPattern::parse("/*").unwrap().matches("/x"));
        assert!(PathPattern::parse("health").is_err());
        assert!(PathPattern::parse("/a/*/b").is_err());
    }

    #[test]
    fn builder_validates_names_and_limits() {
        let ok = RateLimitConfig::builder()
            .policy(PolicyConfig::builder("api").per_second(10))
            .build();
        assert!(ok.is_ok());
        let dup = RateLimitConfig::builder()
            .policy(PolicyConfig::builder("api"))
            .policy(PolicyConfig::builder("api"))
            .build();
        assert_eq!(dup.unwrap_err(), ConfigError::DuplicateName("api".into()));
        let bad = RateLimitConfig::builder()
            .policy(PolicyConfig::builder("a b"))
            .build();
        assert!(matches!(bad, Err(ConfigError::BadName(_))));
        let zero = RateLimitConfig::builder()
            .policy(PolicyConfig::builder("api").burst(0))
            .build()
            .unwrap_err();
        assert_eq!(
            zero.to_string(),
            "rate_limit.policy `api`: burst: must be at least 1 (got 0)"
        );
        let keys = RateLimitConfig::builder()
            .policy(PolicyConfig::builder("api").local(0))
            .build();
        assert!(matches!(keys, Err(ConfigError::MaxKeys { .. })));
    }
}
