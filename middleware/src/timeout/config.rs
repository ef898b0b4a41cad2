//! [`TimeoutConfig`], its builder, the runtime [`TimeoutSettings`] and [`ConfigError`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::FieldError;
use crate::path_pattern::PathPattern;

/// The longest timeout accepted: one day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The settings a [`TimeoutHandle`](super::TimeoutHandle) reads and changes at runtime (the
/// `settings` of its admin component; a change is a JSON merge-patch of this object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSettings {
    /// Whether requests are timed at all (`false` lets every request run as long as it takes).
    pub enabled: bool,
    /// The deadline for a response head, in milliseconds from the moment the layer is called
    /// (`1 ..= 86 400 000`).
    pub timeout_ms: u64,
}

impl TimeoutSettings {
    /// Every reason these settings are invalid (empty when valid).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            errors.push(ConfigError::TimeoutOutOfRange(self.timeout_ms));
        }
        errors
    }

    /// The deadline as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// An invalid timeout setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `timeout_ms` outside `1 ..= 86 400 000`.
    #[error("timeout.timeout_ms must be between 1 and {MAX_TIMEOUT_MS} (got {0})")]
    TimeoutOutOfRange(u64),
    /// An exemption pattern that does not parse.
    #[error("timeout.exempt_paths: `{pattern}` {reason}")]
    ExemptPath {
        /// The pattern as given.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// An empty component name.
    #[error("timeout.name must not be empty")]
    EmptyName,
}

impl From<&ConfigError> for FieldError {
    fn from(e: &ConfigError) -> Self {
        let field = match e {
            ConfigError::TimeoutOutOfRange(_) => "timeout_ms",
            ConfigError::ExemptPath { .. } => "exempt_paths",
            ConfigError::EmptyName => "name",
        };
        FieldError::new(field, e.to_string())
    }
}

/// A validated timeout configuration; build it with [`TimeoutConfig::builder`].
///
/// ```
/// use std::time::Duration;
/// use palisade::timeout::TimeoutConfig;
///
/// let config = TimeoutConfig::builder()
///     .timeout(Duration::from_secs(10))
///     .exempt_path("/health/*")
///     .build()?;
/// assert_eq!(config.settings().timeout_ms, 10_000);
/// assert!(TimeoutConfig::builder().timeout(Duration::ZERO).build().is_err());
/// # Ok::<(), palisade::timeout::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TimeoutConfig {
    pub(crate) name: String,
    pub(crate) settings: TimeoutSettings,
    pub(crate) exempt_paths: Vec<PathPattern>,
}

impl TimeoutConfig {
    /// A builder: enabled, 30 s, no exemptions, registered as `timeout`.
    pub fn builder() -> TimeoutConfigBuilder {
        TimeoutConfigBuilder {
            name: "timeout".to_owned(),
            settings: TimeoutSettings {
                enabled: true,
                timeout_ms: 30_000,
            },
            exempt_paths: Vec::new(),
        }
    }

    /// The initial runtime settings.
    pub fn settings(&self) -> TimeoutSettings {
        self.settings
    }

    /// The name the handle registers under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a [`TimeoutConfig`]; see [`TimeoutConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct TimeoutConfigBuilder {
    name: String,
    settings: TimeoutSettings,
    exempt_paths: Vec<String>,
}

impl TimeoutConfigBuilder {
    /// The deadline for the response head (default 30 s). Sub-millisecond parts are dropped.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Starts enabled (default) or disabled; the handle can switch it at runtime.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.settings.enabled = enabled;
        self
    }

    /// Starts from complete settings.
    pub fn settings(mut self, settings: TimeoutSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Never times requests whose path matches: an exact path (`/metrics`), a prefix ending in
    /// `/*` (`/health/*`), or `*`. For long polls, event streams and probes.
    pub fn exempt_path(mut self, pattern: impl Into<String>) -> Self {
        self.exempt_paths.push(pattern.into());
        self
    }

    /// The name the handle registers under in a [`Registry`](crate::control::Registry)
    /// (default `timeout`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates and builds; the first invalid field is returned.
    pub fn build(self) -> Result<TimeoutConfig, ConfigError> {
        if let Some(e) = self.settings.validate().into_iter().next() {
            return Err(e);
        }
        if self.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let exempt_paths = PathPattern::parse_all(&self.exempt_paths)
            .map_err(|(pattern, reason)| ConfigError::ExemptPath { pattern, reason })?;
        Ok(TimeoutConfig {
            name: self.name,
            settings: self.settings,
            exempt_paths,
        })
    }
}
