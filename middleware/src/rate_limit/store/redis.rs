//! The Redis store: GCRA in a Lua script on the Redis server's clock, so every instance sharing
//! the Redis enforces one limit.
//!
//! Each key holds `"<tat µs>:<emission µs>"` with a `PX` expiry at the moment its bucket is full
//! again, so Redis memory is bounded by the active keys. The script reads `TIME` (never the
//! clients' clocks), rescales a key whose stored emission interval differs from the current one
//! (a runtime quota change, see the module docs), decides, and writes. The script is invoked with
//! `EVALSHA` and reloaded on `NOSCRIPT` (after a Redis restart). Every call has a timeout and goes
//! through a [`CircuitBreaker`]; while Redis is failing or the breaker is open, the policy's
//! [`FailureMode`] decides, so Redis being down never becomes a 5xx.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Check, LocalStore, Store, StoreStats};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, State};
use crate::rate_limit::config::FailureMode;
use crate::rate_limit::gcra::{Decision, Gcra};
use crate::rate_limit::key::KeyValue;
use crate::rate_limit::metrics::{FALLBACKS, STORE_ERRORS, StoreMetrics, describe};
use crate::redis::{ConnectError, RedisTls};

/// KEYS[1] = bucket; ARGV = emission interval (µs), burst (cells), cost (negative = refund).
/// Returns `{allowed, debt µs after the decision, wait µs}`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local capacity = emission * tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local sep = string.find(stored, ':', 1, true)
  if sep then
    local old_tat = tonumber(string.sub(stored, 1, sep - 1))
    local old_emission = tonumber(string.sub(stored, sep + 1))
    if old_tat and old_emission and old_emission > 0 and old_tat > now then
      local debt = old_tat - now
      if old_emission ~= emission then
        debt = math.floor(debt * emission / old_emission)
      end
      if debt > capacity then
        debt = capacity
      end
      tat = now + debt
    end
  end
end
local new_tat = tat + cost * emission
if cost < 0 then
  if new_tat <= now then
    redis.call('DEL', KEYS[1])
    return {1, 0, 0}
  end
elseif new_tat - now > capacity then
  return {0, tat - now, new_tat - capacity - now}
end
redis.call('SET', KEYS[1], string.format('%d:%d', new_tat, emission), 'PX',
  math.ceil((new_tat - now) / 1000))
return {1, new_tat - now, 0}
";

/// Options of a [`RedisStore`].
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `redis://host:port/db`, or `rediss://host:port/db` for TLS (feature `redis-tls`).
    pub url: String,
    /// TLS options of a `rediss://` URL (a CA to trust, a client certificate).
    pub tls: RedisTls,
    /// Per-call timeout (default 50 ms). A slower answer is a failure and the failure policy
    /// decides.
    pub timeout: Duration,
    /// Key prefix (default `palisade:rl:`); keys are `<prefix><policy>:<key>`.
    pub prefix: String,
    /// The breaker on Redis (default: open after 5 consecutive failures, probe after 1 s).
    pub breaker: CircuitBreakerConfig,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: RedisTls::default(),
            timeout: Duration::from_millis(50),
            prefix: "palisade:rl:".into(),
            breaker: CircuitBreakerConfig::consecutive_failures(5, Duration::from_secs(1))
                .with_name("rate_limit_redis"),
        }
    }

    /// With TLS options for a `rediss://` URL.
    #[must_use]
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = tls;
        self
    }

    /// With a per-call timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// With a key prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// With a breaker configuration.
    #[must_use]
    pub fn breaker(mut self, breaker: CircuitBreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }
}

/// A Redis connection for rate limiting, shared by the policies that use it. Cheap to clone.
///
/// Connecting is lazy (the first check, inside the Tokio runtime), so building a layer never
/// blocks and works while Redis is down.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<RedisInner>,
}

struct RedisInner {
    client: redis::Client,
    conn: parking_lot::Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    timeout: Duration,
    prefix: String,
    breaker: CircuitBreaker,
    warnings: crate::redis::Warnings,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.inner.timeout)
            .field("prefix", &self.inner.prefix)
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Why a Redis call produced no decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Error,
    BreakerOpen,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::BreakerOpen => "breaker_open",
        }
    }
}

impl RedisStore {
    /// A store for `options.url`; fails on a malformed URL or unusable TLS options (see
    /// [`crate::redis::client`]), never because Redis is down.
    ///
    /// # Errors
    /// [`ConnectError`] names the URL or the TLS file at fault.
    pub fn new(options: RedisOptions) -> Result<Self, ConnectError> {
        Ok(Self {
            inner: Arc::new(RedisInner {
                client: crate::redis::client(&options.url, &options.tls)?,
                conn: parking_lot::Mutex::new(None),
                script: redis::Script::new(SCRIPT),
                timeout: options.timeout,
                prefix: options.prefix,
                breaker: CircuitBreaker::new(options.breaker),
                warnings: crate::redis::Warnings::default(),
            }),
        })
    }

    /// The breaker on Redis (state, stats, operator actions through its handle).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Whether the breaker currently refuses every call (open or forced open).
    fn refusing(&self) -> bool {
        matches!(self.inner.breaker.state(), State::Open | State::ForcedOpen)
    }

    fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.inner.conn.lock();
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let c = ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs the script once; `Err` on any failure (timeout, I/O, refused by the breaker).
    async fn eval(
        &self,
        key: &[u8],
        emission_us: u64,
        burst: u32,
        cost: i64,
    ) -> Result<[i64; 3], Failure> {
        let permit = self
            .inner
            .breaker
            .try_acquire()
            .map_err(|_| Failure::BreakerOpen)?;
        let Ok(mut conn) = self.connection() else {
            permit.failure();
            return Err(Failure::Error);
        };
        let mut invocation = self.inner.script.key(key);
        invocation.arg(emission_us).arg(burst).arg(cost);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut conn);
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok((a, b, c))) => {
                permit.success();
                Ok([a, b, c])
            }
            Ok(Err(error)) => {
                permit.failure();
                if self.inner.warnings.due() {
                    tracing::warn!(layer = "rate_limit", %error, "redis call failed; the failure mode decides");
                } else {
                    tracing::debug!(layer = "rate_limit", %error, "redis call failed");
                }
                Err(Failure::Error)
            }
            Err(_) => {
                permit.record_timeout();
                Err(Failure::Timeout)
            }
        }
    }

    /// The store of one policy.
    pub(crate) fn policy_store(
        &self,
        policy: &str,
        failure_mode: FailureMode,
        fallback_max_keys: usize,
    ) -> RedisPolicyStore {
        describe();
        let mut key_prefix = self.inner.prefix.as_bytes().to_vec();
        key_prefix.extend_from_slice(policy.as_bytes());
        key_prefix.push(b':');
        let p = policy.to_owned();
        let error_metric = |kind: Failure| metrics::counter!(STORE_ERRORS, "policy" => p.clone(), "store" => "redis", "kind" => kind.as_str());
        RedisPolicyStore {
            inner: Arc::new(PolicyInner {
                redis: self.clone(),
                key_prefix,
                failure_mode,
                fallback: LocalStore::new(fallback_max_keys)
                    .with_metrics(StoreMetrics::new(policy, "redis_fallback")),
                errors: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
                error_metrics: [
                    error_metric(Failure::Timeout),
                    error_metric(Failure::Error),
                    error_metric(Failure::BreakerOpen),
                ],
                fallback_metric: metrics::counter!(
                    FALLBACKS, "policy" => p.clone(), "mode" => failure_mode.as_str()
                ),
            }),
        }
    }

    /// A standalone policy store (for benchmarks and direct use): `policy` names the key space.
    pub fn store(&self, policy: &str, failure_mode: FailureMode) -> impl Store + use<> {
        self.policy_store(
            policy,
            failure_mode,
            crate::rate_limit::config::DEFAULT_MAX_KEYS,
        )
    }
}

/// A policy's view of a [`RedisStore`], with its failure policy and local fallback.
#[derive(Clone)]
pub(crate) struct RedisPolicyStore {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    redis: RedisStore,
    key_prefix: Vec<u8>,
    failure_mode: FailureMode,
    fallback: LocalStore,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    error_metrics: [Counter; 3],
    fallback_metric: Counter,
}

impl fmt::Debug for RedisPolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPolicyStore")
            .field("prefix", &String::from_utf8_lossy(&self.inner.key_prefix))
            .field("failure_mode", &self.inner.failure_mode)
            .finish_non_exhaustive()
    }
}

/// Redis works in microseconds; the decision is computed with the same rounding.
fn micros(gcra: &Gcra) -> (u64, Gcra) {
    let emission_us = gcra.emission_ns().div_ceil(1000).max(1);
    (
        emission_us,
        Gcra::from_raw(emission_us * 1000, gcra.burst()),
    )
}

impl PolicyInner {
    fn redis_key(&self, key: &KeyValue<'_>) -> Vec<u8> {
        let mut k = self.key_prefix.clone();
        key.write_to(&mut k);
        k
    }

    fn fail(&self, failure: Failure, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Decision {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let idx = match failure {
            Failure::Timeout => 0,
            Failure::Error => 1,
            Failure::BreakerOpen => 2,
        };
        self.error_metrics[idx].increment(1);
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.fallback_metric.increment(1);
        match self.failure_mode {
            FailureMode::FailOpen => gcra.allowed(0),
            FailureMode::FailClosed => gcra.rejected(gcra.capacity_ns(), 1_000_000_000),
            FailureMode::LocalFallback => {
                self.fallback
                    .check_hash(self.fallback.hash(key), gcra, cost)
            }
        }
    }

    async fn check(self: Arc<Self>, key: KeyValue<'static>, gcra: Gcra, cost: u32) -> Decision {
        let (emission_us, g) = micros(&gcra);
        let rkey = self.redis_key(&key);
        match self
            .redis
            .eval(&rkey, emission_us, gcra.burst(), i64::from(cost))
            .await
        {
            Ok([1, debt, _]) => g.allowed(u64::try_from(debt).unwrap_or(0) * 1000),
            Ok([_, debt, wait]) => g.rejected(
                u64::try_from(debt).unwrap_or(0) * 1000,
                u64::try_from(wait).unwrap_or(0) * 1000,
            ),
            Err(failure) => self.fail(failure, &key, &gcra, cost),
        }
    }
}

impl Store for RedisPolicyStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_async(&self) -> bool {
        true
    }

    fn check(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Check {
        // An open breaker answers at once, without a future.
        if self.inner.redis.refusing() {
            return Check::Ready(self.inner.fail(Failure::BreakerOpen, key, gcra, cost));
        }
        let inner = Arc::clone(&self.inner);
        Check::Pending(Box::pin(inner.check(key.clone().into_owned(), *gcra, cost)))
    }

    fn refund(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) {
        // The cells came from the fallback store while the breaker refuses calls, from Redis
        // otherwise (a best-effort guess at a state boundary).
        if self.inner.redis.refusing() {
            if self.inner.failure_mode == FailureMode::LocalFallback {
                self.inner.fallback.refund(key, gcra, cost);
            }
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        let rkey = inner.redis_key(key);
        let (emission_us, _) = micros(gcra);
        let burst = gcra.burst();
        runtime.spawn(async move {
            let _ = inner
                .redis
                .eval(&rkey, emission_us, burst, -i64::from(cost))
                .await;
        });
    }

    fn rescale(&self, old: &Gcra, new: &Gcra) {
        // Redis keys are rescaled by the script on their next use; the fallback store now.
        self.inner.fallback.rescale(old, new);
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            errors: self.inner.errors.load(Ordering::Relaxed),
            fallbacks: self.inner.fallbacks.load(Ordering::Relaxed),
            ..self.inner.fallback.stats()
        }
    }

    fn purge_idle(&self) -> u64 {
        self.inner.fallback.purge_idle()
    }

    fn reset(&self) -> Result<u64, &'static str> {
        Err("Redis keys expire when their bucket is full again; they cannot be reset from here")
    }
}
