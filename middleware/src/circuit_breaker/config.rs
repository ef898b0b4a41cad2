//! [`CircuitBreakerConfig`], its builder, the serde [`CircuitBreakerSettings`] shape and
//! [`ConfigError`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::FieldError;

/// Largest count-based window, in calls.
pub(crate) const MAX_COUNT_WINDOW: u32 = 100_000;
/// Largest time-based window, in seconds (one hour).
pub(crate) const MAX_TIME_WINDOW_SECS: u32 = 3_600;
/// Largest half-open probe count.
pub(crate) const MAX_HALF_OPEN_CALLS: u32 = 10_000;
/// Longest open wait, call timeout or slow-call duration (one day).
pub(crate) const MAX_DURATION_MS: u64 = 86_400_000;

/// How the closed-state sliding window is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `window_size` calls (resilience4j `COUNT_BASED`).
    Count,
    /// The calls of the last `window_size` seconds (resilience4j `TIME_BASED`).
    Time,
}

impl WindowKind {
    /// `"count"` or `"time"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Time => "time",
        }
    }
}

/// The settings of a breaker as plain data: the JSON shape of
/// [`CircuitBreakerHandle`](super::CircuitBreakerHandle) settings and patches, and what a server
/// config file deserializes. Turn it into a [`CircuitBreakerConfig`] with
/// [`CircuitBreakerConfig::from_settings`] (which validates).
///
/// ```json
/// {
///   "window_kind": "count",          // "count" | "time"
///   "window_size": 100,              // calls (count) or seconds (time)
///   "minimum_calls": 100,            // no rate is computed below this many calls in the window
///   "failure_rate_threshold": 50.0,  // percent, (0, 100]; trip when rate >= threshold
///   "slow_call_rate_threshold": 100.0, // percent, (0, 100]
///   "slow_call_duration_ms": null,   // null = slow-call tracking off
///   "wait_in_open_ms": 60000,        // open time before half-open
///   "half_open_max_calls": 10,       // probes admitted in half-open
///   "max_wait_in_half_open_ms": null,// null = wait for all probes
///   "call_timeout_ms": null          // null = no timeout; a timeout counts as a failure
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSettings {
    /// Count- or time-based window.
    pub window_kind: WindowKind,
    /// Calls (count window, 1..=100 000) or seconds (time window, 1..=3600).
    pub window_size: u32,
    /// Calls the window must hold before any rate is evaluated (>= 1; for a count window at
    /// most `window_size`).
    pub minimum_calls: u32,
    /// Failure rate in percent, in (0, 100], at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Slow-call rate in percent, in (0, 100], at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// Calls taking at least this long are slow; `None` turns slow-call tracking off.
    pub slow_call_duration_ms: Option<u64>,
    /// How long the breaker stays open before admitting probes.
    pub wait_in_open_ms: u64,
    /// How many probe calls half-open admits (exactly this many, concurrently or not).
    pub half_open_max_calls: u32,
    /// Re-open if the probes have not all completed after this long; `None` waits forever.
    pub max_wait_in_half_open_ms: Option<u64>,
    /// Time limit for a call made through the layer or [`CircuitBreaker::call`]; a call that
    /// runs out of time is dropped and counted as a failure. `None`: no limit.
    ///
    /// [`CircuitBreaker::call`]: super::CircuitBreaker::call
    pub call_timeout_ms: Option<u64>,
}

impl Default for CircuitBreakerSettings {
    /// resilience4j's defaults, except that slow-call tracking is off.
    fn default() -> Self {
        Self {
            window_kind: WindowKind::Count,
            window_size: 100,
            minimum_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_ms: None,
            wait_in_open_ms: 60_000,
            half_open_max_calls: 10,
            max_wait_in_half_open_ms: None,
            call_timeout_ms: None,
        }
    }
}

impl CircuitBreakerSettings {
    /// Every rule these settings break (empty when valid).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        match self.window_kind {
            WindowKind::Count if !(1..=MAX_COUNT_WINDOW).contains(&self.window_size) => {
                errors.push(ConfigError::WindowSize {
                    kind: WindowKind::Count,
                    value: self.window_size,
                    max: MAX_COUNT_WINDOW,
                });
            }
            WindowKind::Time if !(1..=MAX_TIME_WINDOW_SECS).contains(&self.window_size) => {
                errors.push(ConfigError::WindowSize {
                    kind: WindowKind::Time,
                    value: self.window_size,
                    max: MAX_TIME_WINDOW_SECS,
                });
            }
            _ => {}
        }
        if self.minimum_calls == 0 {
            errors.push(ConfigError::MinimumCalls(self.minimum_calls));
        } else if self.window_kind == WindowKind::Count && self.minimum_calls > self.window_size {
            errors.push(ConfigError::MinimumCallsAboveWindow {
                minimum_calls: self.minimum_calls,
                window_size: self.window_size,
            });
        }
        for (field, value) in [
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("slow_call_rate_threshold", self.slow_call_rate_threshold),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 100.0) {
                errors.push(ConfigError::Percent { field, value });
            }
        }
        let durations = [
            ("slow_call_duration_ms", self.slow_call_duration_ms),
            ("wait_in_open_ms", Some(self.wait_in_open_ms)),
            ("max_wait_in_half_open_ms", self.max_wait_in_half_open_ms),
            ("call_timeout_ms", self.call_timeout_ms),
        ];
        for (field, value) in durations {
            if let Some(ms) = value
                && !(1..=MAX_DURATION_MS).contains(&ms)
            {
                errors.push(ConfigError::Duration { field, value: ms });
            }
        }
        if !(1..=MAX_HALF_OPEN_CALLS).contains(&self.half_open_max_calls) {
            errors.push(ConfigError::HalfOpenCalls(self.half_open_max_calls));
        }
        errors
    }
}

/// A breaker setting that breaks a rule. Each variant names the field, the value and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `window_size` out of range for its window kind.
    #[error("circuit_breaker.window_size must be in 1..={max} for a {} window (got {value})", kind.as_str())]
    WindowSize {
        /// The window kind.
        kind: WindowKind,
        /// The refused value.
        value: u32,
        /// The largest allowed value.
        max: u32,
    },
    /// `minimum_calls` is zero.
    #[error("circuit_breaker.minimum_calls must be at least 1 (got {0})")]
    MinimumCalls(u32),
    /// `minimum_calls` can never be reached by a count window.
    #[error(
        "circuit_breaker.minimum_calls ({minimum_calls}) must not exceed the count window_size ({window_size})"
    )]
    MinimumCallsAboveWindow {
        /// The refused value.
        minimum_calls: u32,
        /// The window size.
        window_size: u32,
    },
    /// A percentage outside (0, 100].
    #[error("circuit_breaker.{field} must be a percentage in (0, 100] (got {value})")]
    Percent {
        /// The field.
        field: &'static str,
        /// The refused value.
        value: f64,
    },
    /// A duration outside 1 ms ..= 1 day.
    #[error("circuit_breaker.{field} must be between 1 and {MAX_DURATION_MS} ms (got {value})")]
    Duration {
        /// The field.
        field: &'static str,
        /// The refused value in milliseconds.
        value: u64,
    },
    /// `half_open_max_calls` out of range.
    #[error("circuit_breaker.half_open_max_calls must be in 1..={MAX_HALF_OPEN_CALLS} (got {0})")]
    HalfOpenCalls(u32),
    /// The breaker name is empty.
    #[error("circuit_breaker.name must not be empty")]
    EmptyName,
    /// `max_keys` is zero.
    #[error("circuit_breaker.max_keys must be at least 1 (got {0})")]
    MaxKeys(usize),
}

impl ConfigError {
    /// The settings field this error is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::WindowSize { .. } => "window_size",
            Self::MinimumCalls(_) | Self::MinimumCallsAboveWindow { .. } => "minimum_calls",
            Self::Percent { field, .. } | Self::Duration { field, .. } => field,
            Self::HalfOpenCalls(_) => "half_open_max_calls",
            Self::EmptyName => "name",
            Self::MaxKeys(_) => "max_keys",
        }
    }
}

impl From<&ConfigError> for FieldError {
    fn from(e: &ConfigError) -> Self {
        FieldError::new(e.field(), e.to_string())
    }
}

/// A validated breaker configuration: settings plus the breaker's name (its metrics label) and
/// the key bound of keyed breakers. A built config is always valid, so constructors taking one
/// cannot fail.
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerConfig, WindowKind};
/// use std::time::Duration;
///
/// let config = CircuitBreakerConfig::builder()
///     .name("upstream")
///     .time_window(Duration::from_secs(30))
///     .minimum_calls(20)
///     .failure_rate_threshold(50.0)
///     .slow_call(Duration::from_millis(500), 80.0)
///     .wait_in_open(Duration::from_secs(10))
///     .half_open_max_calls(3)
///     .build()
///     .unwrap();
/// assert_eq!(config.settings().window_kind, WindowKind::Time);
///
/// let err = CircuitBreakerConfig::builder().failure_rate_threshold(0.0).build().unwrap_err();
/// assert_eq!(err.field(), "failure_rate_threshold");
/// ```
#[derive(Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    pub(crate) name: String,
    pub(crate) settings: CircuitBreakerSettings,
    pub(crate) max_keys: usize,
}

impl fmt::Debug for CircuitBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerConfig")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl Default for CircuitBreakerConfig {
    /// [`CircuitBreakerSettings::default`] under the name `default`.
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            settings: CircuitBreakerSettings::default(),
            max_keys: 1024,
        }
    }
}

impl CircuitBreakerConfig {
    /// A builder starting from [`CircuitBreakerSettings::default`].
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder {
            config: Self::default(),
        }
    }

    /// Validates plain settings (e.g. from a config file) under a name.
    pub fn from_settings(
        name: impl Into<String>,
        settings: CircuitBreakerSettings,
    ) -> Result<Self, ConfigError> {
        Self::builder().name(name).settings(settings).build()
    }

    /// The seed's simple breaker: open after `failures` consecutive failures, stay open for
    /// `open_for`, then let one probe through (success closes, failure re-opens).
    ///
    /// It maps exactly onto the sliding-window model: a count window of `failures` calls,
    /// `minimum_calls = failures` and a 100 % failure-rate threshold (the last `failures` calls
    /// all failed is the same as `failures` consecutive failures), `wait_in_open = open_for`,
    /// `half_open_max_calls = 1`, no slow-call tracking. The seed's
    /// `CircuitBreaker(failure_threshold=5, timeout=60)` is `consecutive_failures(5, 60 s)`.
    ///
    /// `failures` is clamped to `1..=100_000`; `open_for` to 1 ms ..= 1 day.
    pub fn consecutive_failures(failures: u32, open_for: Duration) -> Self {
        let failures = failures.clamp(1, MAX_COUNT_WINDOW);
        let settings = CircuitBreakerSettings {
            window_kind: WindowKind::Count,
            window_size: failures,
            minimum_calls: failures,
            failure_rate_threshold: 100.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_ms: None,
            wait_in_open_ms: duration_ms(open_for),
            half_open_max_calls: 1,
            max_wait_in_half_open_ms: None,
            call_timeout_ms: None,
        };
        Self {
            settings,
            ..Self::default()
        }
    }

    /// [`consecutive_failures(5, 60 s)`](Self::consecutive_failures): open after five failures in
    /// a row, stay open for a minute, then let one probe through. The classic breaker of most
    /// tutorials (Python's `CircuitBreaker(failure_threshold=5, timeout=60)`).
    pub fn five_consecutive_failures() -> Self {
        Self::consecutive_failures(5, Duration::from_secs(60))
    }

    /// The former name of [`five_consecutive_failures`](Self::five_consecutive_failures).
    #[deprecated(note = "use `CircuitBreakerConfig::five_consecutive_failures()`")]
    pub fn seed() -> Self {
        Self::five_consecutive_failures()
    }

    /// The breaker name (its `breaker` metrics label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The validated settings.
    pub fn settings(&self) -> &CircuitBreakerSettings {
        &self.settings
    }

    /// The key bound of keyed breakers.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// This config under another name (names are free-form; empty names become `default`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.name = if name.is_empty() {
            "default".to_owned()
        } else {
            name
        };
        self
    }
}

fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_millis().min(u128::from(MAX_DURATION_MS));
    u64::try_from(ms).unwrap_or(MAX_DURATION_MS).max(1)
}

fn duration_ms_unclamped(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Builds a [`CircuitBreakerConfig`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerConfigBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerConfigBuilder {
    /// The breaker name, used as the `breaker` metrics label and in logs (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Replaces all settings.
    pub fn settings(mut self, settings: CircuitBreakerSettings) -> Self {
        self.config.settings = settings;
        self
    }

    /// A count-based window over the last `calls` calls.
    pub fn count_window(mut self, calls: u32) -> Self {
        self.config.settings.window_kind = WindowKind::Count;
        self.config.settings.window_size = calls;
        self
    }

    /// A time-based window over the calls of the last `length` (whole seconds, rounded up).
    pub fn time_window(mut self, length: Duration) -> Self {
        let secs = length.as_secs() + u64::from(length.subsec_nanos() > 0);
        self.config.settings.window_kind = WindowKind::Time;
        self.config.settings.window_size = u32::try_from(secs).unwrap_or(u32::MAX);
        self
    }

    /// Calls the window must hold before rates are evaluated.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.settings.minimum_calls = calls;
        self
    }

    /// Failure rate (percent) at or above which the breaker opens.
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.config.settings.failure_rate_threshold = percent;
        self
    }

    /// Calls lasting at least `duration` are slow; the breaker opens when the slow-call rate
    /// reaches `rate_percent`.
    pub fn slow_call(mut self, duration: Duration, rate_percent: f64) -> Self {
        self.config.settings.slow_call_duration_ms = Some(duration_ms_unclamped(duration));
        self.config.settings.slow_call_rate_threshold = rate_percent;
        self
    }

    /// How long the breaker stays open before admitting probes.
    pub fn wait_in_open(mut self, wait: Duration) -> Self {
        self.config.settings.wait_in_open_ms = duration_ms_unclamped(wait);
        self
    }

    /// Probe calls admitted in half-open.
    pub fn half_open_max_calls(mut self, calls: u32) -> Self {
        self.config.settings.half_open_max_calls = calls;
        self
    }

    /// Re-open when the probes have not all completed after `wait`.
    pub fn max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.config.settings.max_wait_in_half_open_ms = Some(duration_ms_unclamped(wait));
        self
    }

    /// Time limit per call; an expired call is dropped and counted as a failure.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.settings.call_timeout_ms = Some(duration_ms_unclamped(timeout));
        self
    }

    /// At most this many keys in a keyed breaker (default 1024); beyond it the least recently
    /// used key is evicted, closed ones first.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.config.max_keys = keys;
        self
    }

    /// Validates and returns the config, or the first rule broken.
    pub fn build(self) -> Result<CircuitBreakerConfig, ConfigError> {
        if self.config.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if self.config.max_keys == 0 {
            return Err(ConfigError::MaxKeys(0));
        }
        match self.config.settings.validate().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(self.config),
        }
    }
}
