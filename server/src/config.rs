//! Configuration: embedded defaults < TOML file < `PALISADE_*` environment < command line.
//!
//! Every key has a dotted name (`server.backlog`), an environment variable (`PALISADE_SERVER_BACKLOG`)
//! and, for the common ones, a CLI flag; any key can also be set with `--set server.backlog=1024`.
//! [`Loaded::render`] prints the effective configuration with the source of every value
//! (`palisade --print-config`). Invalid configuration is one clear message naming the key; the
//! binary exits with code 64 (`EX_USAGE`).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::settings::cache::CacheSettings;
use crate::settings::rate_limit::{BuildContext, RateLimitSettings, StoreSetting};
use crate::settings::redis::RedisSection;
use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerSettings};
use palisade::concurrency::{Algorithm, ConcurrencyLimitConfig, ConcurrencySettings};
use palisade::observe::otel::OtelConfig;
use palisade::timeout::{TimeoutConfig, TimeoutSettings};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The whole configuration of the reference server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The public HTTP listener and connection handling.
    pub server: ServerConfig,
    /// Worker processes and their lifecycle.
    pub workers: WorkersConfig,
    /// The admin endpoint.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Graceful drain.
    pub shutdown: ShutdownConfig,
    /// The demo routes (`/slow`, `/flaky`).
    pub demo: DemoConfig,
    /// Rate-limit policies (`[[rate_limit.policy]]`).
    pub rate_limit: RateLimitSettings,
    /// The user cache (`[cache.users]`) and the `/names` response cache (`[cache.names]`).
    pub cache: CacheSettings,
    /// The shared Redis and its TLS options (`[redis]`).
    pub redis: RedisSection,
    /// The circuit breaker around the `/flaky` demo upstream.
    pub breaker: CircuitBreakerSettings,
    /// The users database (`[database]`).
    pub database: crate::db::DatabaseConfig,
    /// The request timeout (`[timeout]`).
    pub timeout: TimeoutSection,
    /// The concurrency limit and load shedding (`[concurrency]`).
    pub concurrency: ConcurrencySection,
    /// OpenTelemetry span export over OTLP/HTTP (`[otel]`; off without an endpoint).
    pub otel: OtelSection,
    /// Fleet mode: many servers, one control plane on Redis (`[fleet]`; off by default).
    pub fleet: FleetConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            workers: WorkersConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            demo: DemoConfig::default(),
            rate_limit: default_rate_limit(),
            cache: CacheSettings::default(),
            redis: RedisSection::default(),
            breaker: CircuitBreakerSettings::default(),
            database: crate::db::DatabaseConfig::default(),
            timeout: TimeoutSection::default(),
            concurrency: ConcurrencySection::default(),
            otel: OtelSection::default(),
            fleet: FleetConfig::default(),
        }
    }
}

/// Fleet mode (`[fleet]`): this server joins a fleet of servers sharing one control plane in
/// Redis. It registers itself with a heartbeat, and a runtime change made through any node's
/// admin API applies on every node (see `docs/fleet.md`). Off unless `redis_url` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// The Redis holding the fleet's settings, nodes and audit (`redis://host:port/db`); unset:
    /// fleet mode off.
    pub redis_url: Option<String>,
    /// The fleet's name: servers with the same Redis and name form one fleet.
    pub name: String,
    /// This node's id, unique in the fleet; empty: `<hostname>-<port of server.bind>`.
    pub node_id: String,
    /// How often the node writes its heartbeat (and checks it runs the fleet's settings
    /// version); a node silent for three intervals leaves the fleet view.
    #[serde(with = "palisade::duration")]
    pub heartbeat: Duration,
    /// How long a fleet-wide change waits for every other node's answer before it is rolled
    /// back everywhere.
    #[serde(with = "palisade::duration")]
    pub change_timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            name: "default".to_owned(),
            node_id: String::new(),
            heartbeat: Duration::from_secs(1),
            change_timeout: Duration::from_secs(8),
        }
    }
}

impl FleetConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.redis_url
            && let Err(e) = redis::Client::open(url.as_str())
        {
            problems.push(format!("fleet.redis_url {url:?} is not a Redis URL: {e}"));
        }
        let id_ok = |s: &str| {
            s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        if self.name.is_empty() || !id_ok(&self.name) {
            problems.push(format!(
                "fleet.name {:?} must be 1 to 128 letters, digits, `.`, `-` or `_`",
                self.name
            ));
        }
        if !id_ok(&self.node_id) {
            problems.push(format!(
                "fleet.node_id {:?} must be at most 128 letters, digits, `.`, `-` or `_` (empty: \
                 <hostname>-<port>)",
                self.node_id
            ));
        }
        if self.heartbeat < Duration::from_millis(100) || self.heartbeat > Duration::from_secs(60) {
            problems.push(format!(
                "fleet.heartbeat must be between 100ms and 60s (got {})",
                palisade::duration::format(self.heartbeat)
            ));
        }
        if self.change_timeout < Duration::from_secs(1)
            || self.change_timeout > Duration::from_secs(120)
        {
            problems.push(format!(
                "fleet.change_timeout must be between 1s and 120s (got {})",
                palisade::duration::format(self.change_timeout)
            ));
        }
        problems
    }

    /// Whether fleet mode is on.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }
}

/// The reference policy: 1000 requests per second per client IP on the API, burst 200, in the
/// shared-memory zone so every worker enforces one limit; health checks and metrics exempt.
fn default_rate_limit() -> RateLimitSettings {
    let text = r#"
        exempt_paths = ["/health/*", "/metrics"]
        [[policy]]
        name = "api"
        rate = 1000
        per = "1s"
        burst = 200
        key = "client_ip"
        paths = ["/api/*"]
        store = "shm"
        max_keys = 100000
    "#;
    toml::from_str(text).expect("the embedded rate-limit policy is valid")
}

/// The public HTTP listener and connection handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// Listen backlog (`listen(2)`); the kernel caps it at `net.core.somaxconn`.
    pub backlog: u32,
    /// Disable Nagle's algorithm on accepted connections.
    pub tcp_nodelay: bool,
    /// Set `SO_REUSEPORT` on the listener (lets several servers share a port).
    pub reuse_port: bool,
    /// Keep-alive: 0 disables it (one request per connection); otherwise HTTP/2 connections are
    /// pinged every half of this many seconds and closed when a ping goes unanswered. An idle
    /// HTTP/1.1 connection is closed after `header_read_timeout_ms`, since the header timer
    /// runs while the connection waits for its next request.
    pub keep_alive_timeout_secs: u64,
    /// Close connections whose request headers have not all arrived within this long,
    /// milliseconds (slowloris protection).
    pub header_read_timeout_ms: u64,
    /// Most request headers accepted (more → 431).
    pub max_headers: usize,
    /// Largest request head (request line + headers) in bytes (more → 431).
    pub max_header_bytes: usize,
    /// Largest request body in bytes (more → 413).
    pub body_limit_bytes: usize,
    /// Serve HTTP/2 over cleartext (h2c, prior knowledge) next to HTTP/1.1; with TLS, offer
    /// `h2` by ALPN.
    pub http2: bool,
    /// Most concurrently open client connections per process; more wait in the backlog.
    pub max_connections: usize,
    /// Close a connection whose request body sends nothing for this long, milliseconds (a
    /// handler waiting for the body answers 408): the body counterpart of
    /// `header_read_timeout_ms`.
    pub body_read_timeout_ms: u64,
    /// Serve HTTPS (`[server.tls]`); unset: plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// TLS for a listener (`[server.tls]`, `[admin.tls]`); see [`crate::tls`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to (mTLS); unset: no
    /// client certificates are asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client certificate is `required` or `optional`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether clients must present a certificate when `client_ca` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A handshake without a valid client certificate fails.
    #[default]
    Required,
    /// Clients may present a certificate; one that is presented must be valid.
    Optional,
}

/// Worker processes and their lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// Number of worker processes; 0 means one per CPU.
    pub count: usize,
    /// Serve in this process without a supervisor.
    pub single_process: bool,
    /// Runtime threads per worker process; 0 means one per CPU in single-process mode and one
    /// per worker under the supervisor (the pre-fork model: one event loop per process).
    pub threads: usize,
    /// How often workers report to the supervisor, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A worker silent (no heartbeat) or lagging this long is killed and replaced, seconds.
    pub worker_timeout_secs: u64,
    /// A starting worker that is not ready within this long is killed, seconds.
    pub startup_timeout_secs: u64,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    /// Up to this many requests are added at random to `max_requests` per worker, so workers
    /// do not all recycle at once.
    pub max_requests_jitter: u64,
    /// Recycle a worker after this many seconds (0: never); up to 10% jitter is added.
    pub max_age_secs: u64,
    /// Recycle a worker whose resident memory exceeds this many MiB (0: never).
    pub max_rss_mb: u64,
    /// Longest wait between restarts of a crashing worker, milliseconds.
    pub restart_backoff_max_ms: u64,
    /// Most worker processes, whatever asks for more (configuration, SIGTTIN, the admin API);
    /// 0 means four per CPU. At most [`MAX_WORKERS`].
    pub max: usize,
    /// Most workers starting at once (spawned, not ready yet); more wait their turn, so a large
    /// scale-up cannot overload the machine into startup timeouts. 0 means one per CPU.
    pub max_starting: usize,
}

/// The hard cap on worker processes.
pub const MAX_WORKERS: usize = 1024;

/// The admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API.
    pub enabled: bool,
    /// Address of the admin listener (loopback unless `allow_non_loopback`).
    pub addr: SocketAddr,
    /// File holding the read-write bearer token; created with mode 0600 when missing.
    pub token_file: Option<PathBuf>,
    /// File holding a read-only bearer token (GET only; mutations get 403); created with mode
    /// 0600 when missing. Unset: no read-only token.
    pub read_only_token_file: Option<PathBuf>,
    /// Permit binding the admin API to a non-loopback address.
    pub allow_non_loopback: bool,
    /// Host names the admin listener answers besides `localhost` and its bind address (any IP
    /// address when bound to an unspecified one); other `Host`s get 421, which defeats DNS
    /// rebinding. `"*"` accepts any.
    pub allowed_hosts: Vec<String>,
    /// Serve `GET /metrics` on the admin port without a token (by default it needs the
    /// read-write or read-only token, like every admin route).
    pub metrics_public: bool,
    /// Use a read-write token file that other users can read (by default the server refuses to
    /// start: `chmod 600` it).
    pub allow_readable_token_file: bool,
    /// Close an admin connection whose request head has not fully arrived within this long,
    /// milliseconds.
    pub header_read_timeout_ms: u64,
    /// Close an admin connection whose request body sends nothing for this long, milliseconds.
    pub body_read_timeout_ms: u64,
    /// Most open admin connections; more wait in the backlog.
    pub max_connections: usize,
    /// Serve the admin API over HTTPS (`[admin.tls]`); unset: plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty`, `compact` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `palisade=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
    /// One `request completed` line per request at `info` (method, route, status, latency,
    /// `trace_id`, `request_id`); off: only 5xx answers are logged (at `warn`).
    pub access: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-friendly, multi-line.
    Pretty,
    /// Human-friendly, one line per event.
    Compact,
    /// One JSON object per line.
    Json,
}

/// Graceful drain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After a drain starts, readiness answers 503 for this long before the listener stops
    /// accepting, so load balancers notice; milliseconds.
    pub drain_delay_ms: u64,
    /// Longest a drain waits for in-flight requests before cutting them; seconds.
    pub graceful_timeout_secs: u64,
}

/// The demo routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Longest delay `/slow?ms=` accepts, milliseconds.
    pub slow_max_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backlog: 4096,
            tcp_nodelay: true,
            reuse_port: false,
            keep_alive_timeout_secs: 75,
            header_read_timeout_ms: 10_000,
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            body_limit_bytes: 16 * 1024 * 1024,
            http2: true,
            max_connections: 25_000,
            body_read_timeout_ms: 10_000,
            tls: None,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            count: 0,
            single_process: false,
            threads: 0,
            heartbeat_interval_ms: 1_000,
            worker_timeout_secs: 30,
            startup_timeout_secs: 30,
            max_requests: 0,
            max_requests_jitter: 0,
            max_age_secs: 0,
            max_rss_mb: 0,
            restart_backoff_max_ms: 10_000,
            max: 0,
            max_starting: 0,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_file: None,
            read_only_token_file: None,
            allow_non_loopback: false,
            allowed_hosts: Vec::new(),
            metrics_public: false,
            allow_readable_token_file: false,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 5_000,
            max_connections: 64,
            tls: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Compact,
            level: "info".to_owned(),
            access: false,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay_ms: 1_000,
            graceful_timeout_secs: 30,
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            slow_max_ms: 30_000,
        }
    }
}

impl ServerConfig {
    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The request-body read (idle) timeout.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// The keep-alive idle timeout (`None`: keep-alive disabled).
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        (self.keep_alive_timeout_secs > 0)
            .then(|| Duration::from_secs(self.keep_alive_timeout_secs))
    }

    /// The accept loop's settings (`palisade::serve`).
    pub fn serve_config(&self) -> palisade::serve::ServeConfig {
        let mut serve = palisade::serve::ServeConfig::default();
        serve.bind = self.bind;
        serve.backlog = self.backlog;
        serve.tcp_nodelay = self.tcp_nodelay;
        serve.reuse_port = self.reuse_port;
        serve.keep_alive_timeout = self.keep_alive_timeout();
        serve.header_read_timeout = self.header_read_timeout();
        serve.body_read_timeout = self.body_read_timeout();
        serve.max_headers = self.max_headers;
        serve.max_header_bytes = self.max_header_bytes;
        serve.http2 = self.http2;
        serve.max_connections = self.max_connections;
        serve
    }
}

impl ShutdownConfig {
    /// The drain delay.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    /// The graceful timeout.
    pub fn graceful_timeout(&self) -> Duration {
        Duration::from_secs(self.graceful_timeout_secs)
    }
}

impl Config {
    /// Checks cross-field and range rules; every violation names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let s = &self.server;
        if s.backlog == 0 {
            problems.push("server.backlog must be at least 1 (got 0)".to_owned());
        }
        if s.header_read_timeout_ms == 0 {
            problems.push("server.header_read_timeout_ms must be at least 1 (got 0)".to_owned());
        }
        if s.max_headers == 0 || s.max_headers > 10_000 {
            problems.push(format!(
                "server.max_headers must be between 1 and 10000 (got {})",
                s.max_headers
            ));
        }
        if s.max_header_bytes < 1024 {
            problems.push(format!(
                "server.max_header_bytes must be at least 1024 (got {})",
                s.max_header_bytes
            ));
        }
        if s.max_connections == 0 {
            problems.push("server.max_connections must be at least 1 (got 0)".to_owned());
        }
        if s.body_read_timeout_ms == 0 {
            problems.push("server.body_read_timeout_ms must be at least 1 (got 0)".to_owned());
        }
        if self.workers.max > MAX_WORKERS {
            problems.push(format!(
                "workers.max must be at most {MAX_WORKERS} (got {})",
                self.workers.max
            ));
        } else if self.worker_count() > self.max_workers() {
            problems.push(format!(
                "workers.count ({}) must be at most workers.max ({}; 0 means four per CPU)",
                self.worker_count(),
                self.max_workers()
            ));
        }
        let a = &self.admin;
        for (key, value) in [
            ("admin.header_read_timeout_ms", a.header_read_timeout_ms),
            ("admin.body_read_timeout_ms", a.body_read_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be at least 1 (got 0)"));
            }
        }
        if a.max_connections == 0 {
            problems.push("admin.max_connections must be at least 1 (got 0)".to_owned());
        }
        for host in &a.allowed_hosts {
            let ok = host == "*"
                || (!host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
            if !ok {
                problems.push(format!(
                    "admin.allowed_hosts entry {host:?} must be a host name without port or \
                     scheme (letters, digits, `.`, `-`, `_`), or \"*\""
                ));
            }
        }
        if self.admin.enabled
            && !self.admin.allow_non_loopback
            && !self.admin.addr.ip().is_loopback()
        {
            problems.push(format!(
                "admin.addr {} is not a loopback address; set admin.allow_non_loopback = true to \
                 expose the admin API beyond this machine",
                self.admin.addr
            ));
        }
        let w = &self.workers;
        if w.heartbeat_interval_ms == 0 {
            problems.push("workers.heartbeat_interval_ms must be at least 1 (got 0)".to_owned());
        }
        if w.worker_timeout_secs == 0
            || w.worker_timeout_secs.saturating_mul(1000) <= w.heartbeat_interval_ms
        {
            problems.push(format!(
                "workers.worker_timeout_secs ({}) must be longer than workers.heartbeat_interval_ms ({} ms)",
                w.worker_timeout_secs, w.heartbeat_interval_ms
            ));
        }
        if w.threads > 1024 {
            problems.push(format!(
                "workers.threads must be at most 1024 (got {})",
                w.threads
            ));
        }
        if self.shutdown.graceful_timeout_secs == 0 {
            problems.push("shutdown.graceful_timeout_secs must be at least 1 (got 0)".to_owned());
        }
        // Layer settings are validated by the layers themselves (shm zones are the supervisor's
        // to create, so validate those policies as local ones).
        let mut limits = self.rate_limit.clone();
        for policy in &mut limits.policies {
            if policy.store == StoreSetting::Shm {
                policy.store = StoreSetting::Local;
            }
        }
        // Redis URLs and TLS files first, with their own keys; the layers below would report
        // the same mistakes again in their words, so those repeats are left out.
        let redis_problems = self.redis.problems(self.redis_in_use());
        let repeat = |e: &dyn fmt::Display| {
            let text = e.to_string();
            !redis_problems.is_empty() && (text.contains("redis") || text.contains("Redis"))
        };
        problems.extend(redis_problems.iter().cloned());
        if let Err(e) = limits.config(&self.rate_limit_context(BuildContext::new()))
            && !repeat(&e)
        {
            problems.push(format!("rate_limit: {e}"));
        }
        if let Err(e) = self.cache_settings().validate()
            && !repeat(&e)
        {
            problems.push(format!("cache: {e}"));
        }
        if let Err(e) = CircuitBreakerConfig::from_settings("flaky", self.breaker.clone()) {
            problems.push(format!("breaker: {e}"));
        }
        problems.extend(self.database.problems());
        if let Err(e) = self.timeout.config() {
            problems.push(e.to_string());
        }
        if let Err(e) = self.concurrency.config() {
            problems.push(e.to_string());
        }
        if let Err(e) = self.otel.config(0) {
            problems.push(e);
        }
        problems.extend(self.fleet.problems());
        if self.fleet.enabled() && !self.admin.enabled {
            problems.push(
                "fleet.redis_url needs admin.enabled = true: fleet changes go through the admin API"
                    .to_owned(),
            );
        }
        // TLS files are loaded (and so checked) here: a bad certificate refuses the start with
        // exit 64, and a SIGHUP reload with the old workers kept.
        let tls = [("server.tls", &s.tls), ("admin.tls", &self.admin.tls)];
        for (key, tls) in tls {
            #[cfg(feature = "tls")]
            if let Some(settings) = tls
                && let Err(e) = crate::tls::server_config(settings, Vec::new())
            {
                problems.push(format!("{key}: {e}"));
            }
            #[cfg(not(feature = "tls"))]
            if tls.is_some() {
                problems.push(format!(
                    "{key}: this palisade was built without the `tls` feature"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// The caches' settings with the `[redis]` table applied: `cache.redis_url`, else
    /// `redis.url`, and the TLS options.
    pub fn cache_settings(&self) -> CacheSettings {
        let mut cache = self.cache.clone();
        if cache.redis_url.is_none() {
            cache.redis_url.clone_from(&self.redis.url);
        }
        cache.redis_tls = self.redis.tls();
        cache
    }

    /// `ctx` with the `[redis]` table, for building the rate limiter.
    pub fn rate_limit_context(&self, ctx: BuildContext) -> BuildContext {
        ctx.with_shared_redis(self.redis.url.clone(), self.redis.tls())
    }

    /// Every Redis URL the server will connect to, each with the key it comes from.
    pub fn redis_in_use(&self) -> Vec<(&str, &str)> {
        let mut urls = Vec::new();
        match (&self.cache.redis_url, &self.redis.url) {
            (Some(url), _) => urls.push(("cache.redis_url", url.as_str())),
            (None, Some(url)) => urls.push(("redis.url", url.as_str())),
            (None, None) => {}
        }
        let own = self
            .rate_limit
            .redis
            .as_ref()
            .and_then(|r| r.url.as_deref());
        if let Some(url) = self.rate_limit.redis_url(self.redis.url.as_deref()) {
            let key = if own.is_some() {
                "rate_limit.redis.url"
            } else {
                "redis.url"
            };
            urls.push((key, url));
        }
        urls
    }

    /// The number of workers to run (`workers.count`, or the number of CPUs when 0).
    pub fn worker_count(&self) -> usize {
        match self.workers.count {
            0 => cpus(),
            n => n,
        }
    }

    /// The most workers the supervisor runs (`workers.max`, or four per CPU when 0, never
    /// above [`MAX_WORKERS`]).
    pub fn max_workers(&self) -> usize {
        match self.workers.max {
            0 => cpus().saturating_mul(4),
            n => n,
        }
        .min(MAX_WORKERS)
    }

    /// The most workers starting at once (`workers.max_starting`, or one per CPU when 0).
    pub fn max_starting(&self) -> usize {
        match self.workers.max_starting {
            0 => cpus(),
            n => n,
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The request timeout (`[timeout]`): `504`, or `408` while the request body is still
/// arriving. Runtime component `timeout` (kind `limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSection {
    /// Time requests at all.
    pub enabled: bool,
    /// Deadline for the response head, milliseconds (1 to 86400000).
    pub timeout_ms: u64,
    /// Paths never timed (`/exact`, `/prefix/*`).
    pub exempt_paths: Vec<String>,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_ms: 30_000,
            exempt_paths: vec!["/health/*".to_owned(), "/metrics".to_owned()],
        }
    }
}

impl TimeoutSection {
    /// The layer configuration (component name `timeout`).
    pub fn config(&self) -> Result<TimeoutConfig, palisade::timeout::ConfigError> {
        self.exempt_paths
            .iter()
            .fold(TimeoutConfig::builder(), |b, p| b.exempt_path(p.clone()))
            .settings(TimeoutSettings {
                enabled: self.enabled,
                timeout_ms: self.timeout_ms,
            })
            .build()
    }
}

/// The concurrency limit (`[concurrency]`): beyond `max_in_flight` requests in flight per
/// worker, `503` with `Retry-After`. Runtime component `concurrency` (kind `limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConcurrencySection {
    /// Limit requests at all.
    pub enabled: bool,
    /// Requests in flight per worker (`fixed`), or the ceiling (`aimd`); 1 to 1000000.
    pub max_in_flight: u32,
    /// `fixed` or `aimd` (adaptive).
    pub algorithm: Algorithm,
    /// `aimd`: the floor of the limit.
    pub min_in_flight: u32,
    /// `aimd`: a response slower than this lowers the limit, milliseconds.
    pub latency_threshold_ms: u64,
    /// `aimd`: the limit is multiplied by this percentage after a slow or overloaded response.
    pub backoff_percent: u8,
    /// `Retry-After` of a shed request, seconds.
    pub retry_after_secs: u32,
    /// Paths never limited (`/exact`, `/prefix/*`).
    pub exempt_paths: Vec<String>,
}

impl Default for ConcurrencySection {
    fn default() -> Self {
        let d = ConcurrencySettings::default();
        Self {
            enabled: true,
            max_in_flight: 4096,
            algorithm: d.algorithm,
            min_in_flight: 16,
            latency_threshold_ms: d.latency_threshold_ms,
            backoff_percent: d.backoff_percent,
            retry_after_secs: d.retry_after_secs,
            exempt_paths: vec!["/health/*".to_owned(), "/metrics".to_owned()],
        }
    }
}

impl ConcurrencySection {
    /// The layer configuration (component name `concurrency`).
    pub fn config(&self) -> Result<ConcurrencyLimitConfig, palisade::concurrency::ConfigError> {
        self.exempt_paths
            .iter()
            .fold(ConcurrencyLimitConfig::builder(), |b, p| {
                b.exempt_path(p.clone())
            })
            .settings(ConcurrencySettings {
                enabled: self.enabled,
                max_in_flight: self.max_in_flight,
                algorithm: self.algorithm,
                min_in_flight: self.min_in_flight,
                latency_threshold_ms: self.latency_threshold_ms,
                backoff_percent: self.backoff_percent,
                retry_after_secs: self.retry_after_secs,
            })
            .build()
    }
}

/// OpenTelemetry export (`[otel]`): each worker sends its request spans (continuing the client's
/// `traceparent`) to an OTLP/HTTP collector, with `service.name`, `service.version` and its
/// worker id as resource attributes. Off unless `endpoint` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSection {
    /// The collector: `http://host:port` (`/v1/traces` is appended) or a full URL. Unset: off.
    pub endpoint: Option<String>,
    /// Ratio (0 to 1) of new traces sampled; a caller's sampled flag decides for its traces.
    pub sampling_ratio: f64,
    /// `service.name`.
    pub service_name: String,
    /// Headers sent with every export, `"name: value"`.
    pub headers: Vec<String>,
    /// Spans queued for export at most, per worker; more are dropped.
    pub max_queue_size: usize,
    /// How long spans wait for a batch, milliseconds.
    pub scheduled_delay_ms: u64,
    /// Deadline of one export request, milliseconds.
    pub export_timeout_ms: u64,
}

impl Default for OtelSection {
    fn default() -> Self {
        Self {
            endpoint: None,
            sampling_ratio: 1.0,
            service_name: "palisade".to_owned(),
            headers: Vec::new(),
            max_queue_size: 2048,
            scheduled_delay_ms: 1000,
            export_timeout_ms: 10_000,
        }
    }
}

impl OtelSection {
    /// The exporter configuration for worker `worker_id`, when an endpoint is set. Every value
    /// is checked even without one, so a mistake shows before export is turned on.
    pub fn config(&self, worker_id: u32) -> Result<Option<OtelConfig>, String> {
        let endpoint = self.endpoint.as_deref().filter(|e| !e.is_empty());
        let builder = OtelConfig::builder(endpoint.unwrap_or("http://127.0.0.1:4318"));
        let config = self
            .apply(builder, worker_id)?
            .build()
            .map_err(|e| e.to_string())?;
        Ok(endpoint.map(|_| config))
    }

    fn apply(
        &self,
        builder: palisade::observe::otel::OtelConfigBuilder,
        worker_id: u32,
    ) -> Result<palisade::observe::otel::OtelConfigBuilder, String> {
        let mut b = builder
            .service_name(self.service_name.clone())
            .service_version(env!("CARGO_PKG_VERSION"))
            .worker_id(worker_id)
            .sampling_ratio(self.sampling_ratio)
            .max_queue_size(self.max_queue_size)
            .scheduled_delay(Duration::from_millis(self.scheduled_delay_ms))
            .export_timeout(Duration::from_millis(self.export_timeout_ms));
        for header in &self.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("otel.headers entry {header:?} must be \"name: value\""))?;
            b = b.header(name.trim(), value.trim());
        }
        Ok(b)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or a value has the wrong type.
    #[error("invalid configuration{origin}: {message}")]
    Parse {
        /// Where the bad value came from, e.g. ` in /etc/palisade.toml`.
        origin: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A key that does not exist.
    #[error("unknown configuration key `{key}` (from {origin})")]
    UnknownKey {
        /// The dotted key.
        key: String,
        /// Where it came from.
        origin: Source,
    },
    /// A value that breaks a rule.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Cli(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "env {v}"),
            Self::Cli(flag) => write!(f, "cli {flag}"),
        }
    }
}

/// A loaded configuration and the source of every value.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The source of each dotted key.
    pub sources: BTreeMap<String, Source>,
    /// The config file, if one was read.
    pub file: Option<PathBuf>,
}

/// Inputs to [`load`]: the file, the environment and command-line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The config file, if any.
    pub file: Option<PathBuf>,
    /// Environment variables (name, value); only `PALISADE_*` ones are considered.
    pub env: Vec<(String, String)>,
    /// Command-line settings as (dotted key, TOML value, flag name).
    pub cli: Vec<(String, Value, String)>,
}

/// The environment variable for a dotted key: `server.backlog` → `PALISADE_SERVER_BACKLOG`.
pub fn env_var_for(key: &str) -> String {
    format!("PALISADE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Parses a string as a TOML value (number, bool, array...), falling back to a plain string.
pub fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// Loads the configuration from defaults, the file, the environment and the command line, in
/// increasing precedence, and validates it.
pub fn load(overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let defaults = Value::try_from(Config::default()).map_err(|e| ConfigError::Parse {
        origin: " (defaults)".into(),
        message: e.to_string(),
    })?;
    let mut flat = BTreeMap::new();
    flatten("", &defaults, &mut flat);
    // Optional keys without a default (None) are not serialized; list them explicitly.
    for key in OPTIONAL_KEYS {
        flat.entry((*key).to_owned())
            .or_insert(Value::String(String::new()));
    }
    let known: Vec<String> = flat.keys().cloned().collect();
    let mut sources: BTreeMap<String, Source> =
        known.iter().map(|k| (k.clone(), Source::Default)).collect();
    for key in OPTIONAL_KEYS {
        flat.remove(*key);
    }

    if let Some(path) = &overrides.file {
        let text = crate::fd::read_from_start(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: format!(" in {}", path.display()),
                message: e.to_string(),
            })?;
        let mut file_flat = BTreeMap::new();
        flatten("", &Value::Table(table), &mut file_flat);
        for (key, value) in file_flat {
            // Unknown keys are refused by the typed deserialization below, which names them.
            sources.insert(key.clone(), Source::File(path.clone()));
            flat.insert(key, value);
        }
    }

    for key in &known {
        let var = env_var_for(key);
        if let Some((_, raw)) = overrides.env.iter().find(|(k, _)| *k == var) {
            flat.insert(key.clone(), parse_value(raw));
            sources.insert(key.clone(), Source::Env(var));
        }
    }
    for (name, _) in &overrides.env {
        let is_key = known.iter().any(|k| env_var_for(k) == *name);
        if name.starts_with("PALISADE_") && !is_key && !NON_KEY_ENV.contains(&name.as_str()) {
            return Err(ConfigError::UnknownKey {
                key: name.clone(),
                origin: Source::Env(name.clone()),
            });
        }
    }

    for (key, value, flag) in &overrides.cli {
        flat.insert(key.clone(), value.clone());
        sources.insert(key.clone(), Source::Cli(flag.clone()));
    }

    let config = deserialize(&flat, &sources)?;
    config.validate()?;
    Ok(Loaded {
        config,
        sources,
        file: overrides.file.clone(),
    })
}

/// Keys of `Option` fields, which have no value by default.
const OPTIONAL_KEYS: &[&str] = &[
    "admin.token_file",
    "admin.read_only_token_file",
    "admin.tls.cert",
    "admin.tls.key",
    "admin.tls.client_ca",
    "admin.tls.client_auth",
    "server.tls.cert",
    "server.tls.key",
    "server.tls.client_ca",
    "server.tls.client_auth",
    "breaker.slow_call_duration_ms",
    "breaker.max_wait_in_half_open_ms",
    "breaker.call_timeout_ms",
    "cache.redis_url",
    "redis.url",
    "redis.ca_file",
    "redis.cert_file",
    "redis.key_file",
    "cache.names.default_ttl_ms",
    "cache.names.store.l1_ttl_ms",
    "cache.names.store.negative_ttl_ms",
    "cache.names.store.soft_timeout_ms",
    "cache.names.store.hard_timeout_ms",
    "cache.users.l1_ttl_ms",
    "cache.users.negative_ttl_ms",
    "cache.users.soft_timeout_ms",
    "cache.users.hard_timeout_ms",
    "database.url",
    "otel.endpoint",
    "fleet.redis_url",
];

/// `PALISADE_*` variables that are not configuration keys.
const NON_KEY_ENV: &[&str] = &[
    "PALISADE_CONFIG",
    "PALISADE_REQUIRE_REDIS",
    "PALISADE_REQUIRE_POSTGRES",
    "PALISADE_REQUIRE_SCHEMATHESIS",
    "PALISADE_BIN",
    "PALISADE_REDIS_SERVER",
    "PALISADE_WORKER",
    "PALISADE_LISTEN_FD",
    "PALISADE_CONTROL_FD",
    "PALISADE_SHM_ZONES",
    "PALISADE_ADMIN_TOKEN",
    "PALISADE_LOAD_FD",
    "PALISADE_LOAD_SLOT",
];

fn deserialize(
    flat: &BTreeMap<String, Value>,
    sources: &BTreeMap<String, Source>,
) -> Result<Config, ConfigError> {
    let mut root = Table::new();
    for (key, value) in flat {
        insert_dotted(&mut root, key, value.clone()).map_err(|holder| {
            // A section set to a value (`server = 1`), or a value given keys (`[server.backlog]`).
            let user_set = |k: &str| sources.get(k).is_some_and(|s| *s != Source::Default);
            let (culprit, message) = if user_set(&holder) {
                (
                    holder.clone(),
                    format!("`{holder}` is a table of settings, not a value"),
                )
            } else {
                (key.clone(), format!("`{holder}` is a value, not a table"))
            };
            ConfigError::Parse {
                origin: origin_of(&culprit, sources),
                message,
            }
        })?;
    }
    // Round-trip through text so the parser's message names the offending key.
    let text = toml::to_string(&root).map_err(|e| ConfigError::Parse {
        origin: String::new(),
        message: e.to_string(),
    })?;
    toml::from_str::<Config>(&text).map_err(|e| {
        let message = e.message().to_owned();
        let key = e
            .span()
            .and_then(|span| key_at(&text, span.start))
            .unwrap_or_default();
        ConfigError::Parse {
            origin: origin_of(&key, sources),
            message,
        }
    })
}

/// Sets the dotted `key` in `root`, creating tables on the way; fails with the dotted prefix
/// that already holds a value where a table is needed.
fn insert_dotted(root: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let mut table = root;
    let mut parts = key.split('.').peekable();
    let mut path = String::new();
    while let Some(part) = parts.next() {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return Ok(());
        }
        table = match table
            .entry(part)
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(t) => t,
            _ => return Err(path),
        };
    }
    Ok(())
}

/// ` at `key` (from <source>)` for an error message, using the source of the longest dotted
/// prefix of `key` that has one (a value inside an array of tables, or inside a table given
/// where a value belongs, is reported with the source of the key that holds it).
fn origin_of(key: &str, sources: &BTreeMap<String, Source>) -> String {
    if key.is_empty() {
        return String::new();
    }
    let mut prefix = key;
    loop {
        if let Some(source) = sources.get(prefix) {
            return format!(" at `{key}` (from {source})");
        }
        match prefix.rsplit_once('.') {
            Some((shorter, _)) => prefix = shorter,
            None => return format!(" at `{key}`"),
        }
    }
}

/// The dotted key whose value is at byte `offset` in a TOML document written by `toml`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut section = String::new();
    let mut pos = 0;
    for line in text.lines() {
        let end = pos + line.len();
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim_matches(|c| c == '[' || c == ']').to_owned();
            if offset >= pos && offset <= end {
                return Some(section);
            }
        } else if offset >= pos && offset <= end {
            let key = trimmed.split('=').next()?.trim().trim_matches('"');
            return Some(if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            });
        }
        pos = end + 1;
    }
    None
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

impl Loaded {
    /// The effective configuration as TOML, each value annotated with its source.
    pub fn render(&self) -> String {
        let value = Value::try_from(&self.config).unwrap_or(Value::Table(Table::new()));
        let mut flat = BTreeMap::new();
        flatten("", &value, &mut flat);
        let mut out = String::new();
        let mut section = String::new();
        let mut keys: Vec<(&str, &str, &Source)> = self
            .sources
            .iter()
            .map(|(key, source)| {
                let (sec, name) = key.rsplit_once('.').unwrap_or(("", key));
                (sec, name, source)
            })
            .collect();
        keys.sort_by_key(|(sec, name, _)| (*sec, *name));
        for (sec, name, source) in keys {
            let key = if sec.is_empty() {
                name.to_owned()
            } else {
                format!("{sec}.{name}")
            };
            let key = &key;
            if sec != section {
                let _ = writeln!(out, "{}[{sec}]", if out.is_empty() { "" } else { "\n" });
                section = sec.to_owned();
            }
            let shown = flat
                .get(key)
                .map_or_else(|| "# (unset)".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{name} = {shown}  # {source}; env {}",
                env_var_for(key)
            );
        }
        out
    }
}

/// Where `palisade` looks for a config file when none is given: `PALISADE_CONFIG`, else none.
pub fn default_file(env: &[(String, String)]) -> Option<PathBuf> {
    env.iter()
        .find(|(k, _)| k == "PALISADE_CONFIG")
        .map(|(_, v)| Path::new(v).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let loaded = load(&Overrides::default()).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.sources.values().all(|s| *s == Source::Default));
    }

    #[test]
    fn precedence_file_env_cli() {
        let dir = std::env::temp_dir().join(format!("palisade-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(
            &file,
            "[server]\nbacklog = 10\nmax_headers = 50\ntcp_nodelay = false\n",
        )
        .unwrap();
        let loaded = load(&Overrides {
            file: Some(file.clone()),
            env: env(&[
                ("PALISADE_SERVER_BACKLOG", "20"),
                ("PALISADE_SERVER_MAX_HEADERS", "60"),
            ]),
            cli: vec![(
                "server.backlog".into(),
                Value::Integer(30),
                "--backlog".into(),
            )],
        })
        .unwrap();
        assert_eq!(loaded.config.server.backlog, 30);
        assert_eq!(loaded.config.server.max_headers, 60);
        assert!(!loaded.config.server.tcp_nodelay);
        assert_eq!(
            loaded.sources["server.backlog"],
            Source::Cli("--backlog".into())
        );
        assert_eq!(
            loaded.sources["server.max_headers"],
            Source::Env("PALISADE_SERVER_MAX_HEADERS".into())
        );
        assert_eq!(loaded.sources["server.tcp_nodelay"], Source::File(file));
        let rendered = loaded.render();
        assert!(
            rendered.contains("backlog = 30  # cli --backlog"),
            "{rendered}"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = load(&Overrides {
            env: env(&[("PALISADE_SERVER_BACKLOG", "lots")]),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.backlog"), "{err}");
        assert!(err.contains("PALISADE_SERVER_BACKLOG"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load(&Overrides {
            env: env(&[("PALISADE_SERVER_BAKLOG", "1")]),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
    }

    #[test]
    fn rules_are_checked() {
        let err = load(&Overrides {
            cli: vec![(
                "admin.addr".into(),
                Value::String("0.0.0.0:9901".into()),
                "--admin-addr".into(),
            )],
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin.addr"), "{err}");
    }
}
