//! [`ConcurrencyLimitConfig`], its builder, the runtime [`ConcurrencySettings`] and
//! [`ConfigError`].

use serde::{Deserialize, Serialize};

use crate::control::FieldError;
use crate::path_pattern::PathPattern;

/// The largest `max_in_flight` accepted.
pub const MAX_LIMIT: u32 = 1_000_000;

/// How the limit moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// The limit is `max_in_flight`, until an operator changes it.
    #[default]
    Fixed,
    /// Additive increase, multiplicative decrease between `min_in_flight` and `max_in_flight`:
    /// `+1` after a good response while at least half the limit is in use; `× backoff_percent
    /// / 100` after a *drop* (a response slower than `latency_threshold_ms`, or a `503`/`504`
    /// from the service).
    Aimd,
}

impl Algorithm {
    /// `fixed` or `aimd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Aimd => "aimd",
        }
    }
}

/// The settings a [`ConcurrencyLimitHandle`](super::ConcurrencyLimitHandle) reads and changes
/// at runtime (the `settings` of its admin component; a change is a JSON merge-patch of this
/// object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencySettings {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// The limit (`fixed`) or its ceiling (`aimd`); `1 ..= 1 000 000`.
    pub max_in_flight: u32,
    /// How the limit moves.
    pub algorithm: Algorithm,
    /// `aimd`: the floor of the limit; at least 1, and at most `max_in_flight` with `aimd`.
    pub min_in_flight: u32,
    /// `aimd`: a response slower than this is a drop; `1 ..= 3 600 000` ms.
    pub latency_threshold_ms: u64,
    /// `aimd`: the limit is multiplied by this percentage after a drop; `50 ..= 99`.
    pub backoff_percent: u8,
    /// The `Retry-After` of a shed request, in seconds; `1 ..= 3600`.
    pub retry_after_secs: u32,
}

impl Default for ConcurrencySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_in_flight: 1024,
            algorithm: Algorithm::Fixed,
            min_in_flight: 1,
            latency_threshold_ms: 1000,
            backoff_percent: 90,
            retry_after_secs: 1,
        }
    }
}

impl ConcurrencySettings {
    /// Every reason these settings are invalid (empty when valid).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.max_in_flight == 0 || self.max_in_flight > MAX_LIMIT {
            errors.push(ConfigError::MaxInFlight(self.max_in_flight));
        }
        // The floor only matters to AIMD: a fixed limit may go below it.
        if self.min_in_flight == 0
            || (self.algorithm == Algorithm::Aimd && self.min_in_flight > self.max_in_flight)
        {
            errors.push(ConfigError::MinInFlight {
                min: self.min_in_flight,
                max: self.max_in_flight,
            });
        }
        if self.latency_threshold_ms == 0 || self.latency_threshold_ms > 3_600_000 {
            errors.push(ConfigError::LatencyThreshold(self.latency_threshold_ms));
        }
        if !(50..=99).contains(&self.backoff_percent) {
            errors.push(ConfigError::Backoff(self.backoff_percent));
        }
        if self.retry_after_secs == 0 || self.retry_after_secs > 3600 {
            errors.push(ConfigError::RetryAfter(self.retry_after_secs));
        }
        errors
    }
}

/// An invalid concurrency-limit setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_in_flight` outside `1 ..= 1 000 000`.
    #[error("concurrency.max_in_flight must be between 1 and {MAX_LIMIT} (got {0})")]
    MaxInFlight(u32),
    /// `min_in_flight` of 0, or above `max_in_flight` with `aimd`.
    #[error("concurrency.min_in_flight must be between 1 and max_in_flight ({max}) (got {min})")]
    MinInFlight {
        /// The floor given.
        min: u32,
        /// The ceiling.
        max: u32,
    },
    /// `latency_threshold_ms` outside `1 ..= 3 600 000`.
    #[error("concurrency.latency_threshold_ms must be between 1 and 3600000 (got {0})")]
    LatencyThreshold(u64),
    /// `backoff_percent` outside `50 ..= 99`.
    #[error("concurrency.backoff_percent must be between 50 and 99 (got {0})")]
    Backoff(u8),
    /// `retry_after_secs` outside `1 ..= 3600`.
    #[error("concurrency.retry_after_secs must be between 1 and 3600 (got {0})")]
    RetryAfter(u32),
    /// An exemption pattern that does not parse.
    #[error("concurrency.exempt_paths: `{pattern}` {reason}")]
    ExemptPath {
        /// The pattern as given.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// An empty component name.
    #[error("concurrency.name must not be empty")]
    EmptyName,
}

impl From<&ConfigError> for FieldError {
    fn from(e: &ConfigError) -> Self {
        let field = match e {
            ConfigError::MaxInFlight(_) => "max_in_flight",
            ConfigError::MinInFlight { .. } => "min_in_flight",
            ConfigError::LatencyThreshold(_) => "latency_threshold_ms",
            ConfigError::Backoff(_) => "backoff_percent",
            ConfigError::RetryAfter(_) => "retry_after_secs",
            ConfigError::ExemptPath { .. } => "exempt_paths",
            ConfigError::EmptyName => "name",
        };
        FieldError::new(field, e.to_string())
    }
}

/// A validated concurrency-limit configuration; build it with
/// [`ConcurrencyLimitConfig::builder`].
///
/// ```
/// use palisade::concurrency::{Algorithm, ConcurrencyLimitConfig};
///
/// let config = ConcurrencyLimitConfig::builder()
///     .max_in_flight(256)
///     .aimd(16, std::time::Duration::from_millis(250))
///     .exempt_path("/health/*")
///     .build()?;
/// assert_eq!(config.settings().algorithm, Algorithm::Aimd);
/// assert!(ConcurrencyLimitConfig::builder().max_in_flight(0).build().is_err());
/// # Ok::<(), palisade::concurrency::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitConfig {
    pub(crate) name: String,
    pub(crate) settings: ConcurrencySettings,
    pub(crate) exempt_paths: Vec<PathPattern>,
}

impl ConcurrencyLimitConfig {
    /// A builder: enabled, fixed limit of 1024, `Retry-After: 1`, no exemptions, registered
    /// as `concurrency`.
    pub fn builder() -> ConcurrencyLimitConfigBuilder {
        ConcurrencyLimitConfigBuilder {
            name: "concurrency".to_owned(),
            settings: ConcurrencySettings::default(),
            exempt_paths: Vec::new(),
        }
    }

    /// The initial runtime settings.
    pub fn settings(&self) -> ConcurrencySettings {
        self.settings
    }

    /// The name the handle registers under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a [`ConcurrencyLimitConfig`]; see [`ConcurrencyLimitConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConcurrencyLimitConfigBuilder {
    name: String,
    settings: ConcurrencySettings,
    exempt_paths: Vec<String>,
}

impl ConcurrencyLimitConfigBuilder {
    /// The limit (`fixed`) or its ceiling (`aimd`); default 1024.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.settings.max_in_flight = n;
        self
    }

    /// Adaptive AIMD between `min_in_flight` and `max_in_flight`; responses slower than
    /// `latency_threshold` lower the limit.
    pub fn aimd(mut self, min_in_flight: u32, latency_threshold: std::time::Duration) -> Self {
        self.settings.algorithm = Algorithm::Aimd;
        self.settings.min_in_flight = min_in_flight;
        self.settings.latency_threshold_ms =
            u64::try_from(latency_threshold.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The `Retry-After` of a shed request (default 1 s).
    pub fn retry_after_secs(mut self, secs: u32) -> Self {
        self.settings.retry_after_secs = secs;
        self
    }

    /// Starts enabled (default) or disabled; the handle can switch it at runtime.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.settings.enabled = enabled;
        self
    }

    /// Starts from complete settings.
    pub fn settings(mut self, settings: ConcurrencySettings) -> Self {
        self.settings = settings;
        self
    }

    /// Never limits requests whose path matches: an exact path (`/metrics`), a prefix ending
    /// in `/*` (`/health/*`), or `*`. Probes must reach an overloaded process.
    pub fn exempt_path(mut self, pattern: impl Into<String>) -> Self {
        self.exempt_paths.push(pattern.into());
        self
    }

    /// The name the handle registers under in a [`Registry`](crate::control::Registry)
    /// (default `concurrency`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates and builds; the first invalid field is returned.
    pub fn build(self) -> Result<ConcurrencyLimitConfig, ConfigError> {
        if let Some(e) = self.settings.validate().into_iter().next() {
            return Err(e);
        }
        if self.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let exempt_paths = PathPattern::parse_all(&self.exempt_paths)
            .map_err(|(pattern, reason)| ConfigError::ExemptPath { pattern, reason })?;
        Ok(ConcurrencyLimitConfig {
            name: self.name,
            settings: self.settings,
            exempt_paths,
        })
    }
}
