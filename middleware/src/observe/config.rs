//! Settings of the observe layers.

use tracing::Level;

use super::context::{MAX_REQUEST_ID_LEN, RequestContextConfig};
use super::stats::StatsConfig;

/// A setting refused at build time, naming the field, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `request_id.max_len` out of range.
    #[error("observe.request_id.max_len must be between 1 and {MAX_REQUEST_ID_LEN} (got {0})")]
    RequestIdMaxLen(usize),
    /// `stats.shards` not a power of two in range.
    #[error("observe.stats.shards must be a power of two from 1 to 256 (got {0})")]
    StatsShards(usize),
    /// `max_routes` is zero.
    #[error("observe.max_routes must be at least 1 (got 0)")]
    ZeroMaxRoutes,
    /// `url_scheme` is not a scheme.
    #[error("observe.url_scheme must be `http` or `https` (got `{0}`)")]
    UrlScheme(String),
}

/// Span and log levels of the per-request span and its completion event.
///
/// ```
/// use palisade::observe::TraceConfig;
/// use tracing::Level;
/// let trace = TraceConfig::default().completion_level(Level::INFO);
/// assert_eq!(trace.span_level_value(), Level::DEBUG);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceConfig {
    pub(crate) span_level: Level,
    pub(crate) completion_level: Level,
    pub(crate) server_error_level: Level,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            span_level: Level::DEBUG,
            completion_level: Level::DEBUG,
            server_error_level: Level::WARN,
        }
    }
}

impl TraceConfig {
    /// The level of the `http_request` span (default `DEBUG`, as tower-http's `TraceLayer`).
    ///
    /// A span enabled by the subscriber's filter costs a few microseconds per request with a
    /// formatting subscriber (its fields are formatted and stored when it opens), so it is off
    /// under the usual `info` filter. The completion event then carries the method, route and
    /// request id itself, so a 5xx logged at `WARN` still names them. Set `INFO` to have every log
    /// line a handler writes carry the request's span.
    #[must_use]
    pub fn span_level(mut self, level: Level) -> Self {
        self.span_level = level;
        self
    }

    /// The level of the `request completed` event for non-5xx responses (default `DEBUG`; set
    /// `INFO` for an access log).
    #[must_use]
    pub fn completion_level(mut self, level: Level) -> Self {
        self.completion_level = level;
        self
    }

    /// The level of the completion event for 5xx responses and service errors (default `WARN`).
    #[must_use]
    pub fn server_error_level(mut self, level: Level) -> Self {
        self.server_error_level = level;
        self
    }

    /// The span level.
    pub fn span_level_value(&self) -> Level {
        self.span_level
    }

    /// The completion event level.
    pub fn completion_level_value(&self) -> Level {
        self.completion_level
    }

    /// The level for 5xx and errors.
    pub fn server_error_level_value(&self) -> Level {
        self.server_error_level
    }
}

/// Settings of [`ObserveLayer`](super::ObserveLayer).
///
/// ```
/// use palisade::observe::{ObserveConfig, TraceConfig};
/// let config = ObserveConfig::builder()
///     .trace(TraceConfig::default().completion_level(tracing::Level::INFO))
///     .url_scheme("https")
///     .build()
///     .unwrap();
/// assert!(config.metrics_enabled());
/// assert!(ObserveConfig::builder().url_scheme("ftp").build().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    pub(crate) request_context: Option<RequestContextConfig>,
    pub(crate) trace: TraceConfig,
    pub(crate) metrics: bool,
    pub(crate) body_sizes: bool,
    pub(crate) url_scheme: String,
    pub(crate) max_routes: usize,
    pub(crate) stats: StatsConfig,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            request_context: Some(RequestContextConfig::default()),
            trace: TraceConfig::default(),
            metrics: true,
            body_sizes: true,
            url_scheme: "http".to_owned(),
            max_routes: 1024,
            stats: StatsConfig::default(),
        }
    }
}

impl ObserveConfig {
    /// A builder starting from the defaults: request ids and trace context on, span at `INFO`,
    /// completion at `DEBUG`, metrics and body sizes on, scheme `http`.
    pub fn builder() -> ObserveConfigBuilder {
        ObserveConfigBuilder {
            config: Self::default(),
        }
    }

    /// Whether the `metrics` facade is fed.
    pub fn metrics_enabled(&self) -> bool {
        self.metrics
    }

    /// The request id / trace context settings, when that part is on.
    pub fn request_context(&self) -> Option<&RequestContextConfig> {
        self.request_context.as_ref()
    }

    /// The span and log levels.
    pub fn trace(&self) -> &TraceConfig {
        &self.trace
    }
}

/// Builds a validated [`ObserveConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ObserveConfigBuilder {
    config: ObserveConfig,
}

impl ObserveConfigBuilder {
    /// Request id and trace context settings (on by default).
    pub fn request_context(mut self, config: RequestContextConfig) -> Self {
        self.config.request_context = Some(config);
        self
    }

    /// Turns request ids and trace context off (when a [`RequestContextLayer`](super::RequestContextLayer)
    /// runs further out, or another component owns them). Spans still pick up a [`RequestId`](super::RequestId)
    /// and [`TraceContext`](super::TraceContext) found in the request extensions.
    pub fn without_request_context(mut self) -> Self {
        self.config.request_context = None;
        self
    }

    /// Span and log levels.
    pub fn trace(mut self, trace: TraceConfig) -> Self {
        self.config.trace = trace;
        self
    }

    /// Whether to feed the `metrics` facade (default `true`; the live stats are always kept).
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.config.metrics = enabled;
        self
    }

    /// Whether to record body sizes (default `true`).
    pub fn body_sizes(mut self, enabled: bool) -> Self {
        self.config.body_sizes = enabled;
        self
    }

    /// The `url.scheme` label: `http` (default) or `https`.
    pub fn url_scheme(mut self, scheme: &str) -> Self {
        self.config.url_scheme = scheme.to_owned();
        self
    }

    /// Bound on the per-thread metric handle cache, in routes (default 1024).
    pub fn max_routes(mut self, max_routes: usize) -> Self {
        self.config.max_routes = max_routes;
        self
    }

    /// Live statistics settings.
    pub fn stats(mut self, stats: StatsConfig) -> Self {
        self.config.stats = stats;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<ObserveConfig, ConfigError> {
        let c = &self.config;
        if !matches!(c.url_scheme.as_str(), "http" | "https") {
            return Err(ConfigError::UrlScheme(c.url_scheme.clone()));
        }
        if c.max_routes == 0 {
            return Err(ConfigError::ZeroMaxRoutes);
        }
        Ok(self.config)
    }
}
