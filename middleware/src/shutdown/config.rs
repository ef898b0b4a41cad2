//! [`DrainConfig`].

use std::time::Duration;

/// The longest accepted delay or grace period.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// A setting refused at build time, naming the field, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `delay` longer than a day.
    #[error("shutdown.delay must be at most 24h (got {0:?})")]
    DelayTooLong(Duration),
    /// `grace` longer than a day.
    #[error("shutdown.grace must be at most 24h (got {0:?})")]
    GraceTooLong(Duration),
}

/// Timing of a drain: how long readiness fails before accept stops (`delay`), and how long
/// in-flight requests then get to finish (`grace`).
///
/// Behind a load balancer or in Kubernetes, set `delay` to at least the readiness probe period
/// times its failure threshold plus propagation time (commonly 5 to 15 s), so no new traffic is
/// routed to a listener that is about to close. Without one, `0` (the default) stops accepting at
/// once. The whole drain takes at most `delay + grace`.
///
/// ```
/// use palisade::shutdown::DrainConfig;
/// use std::time::Duration;
/// let config = DrainConfig::builder()
///     .delay(Duration::from_secs(5))
///     .grace(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(config.delay(), Duration::from_secs(5));
/// assert!(DrainConfig::builder().grace(Duration::from_secs(100_000)).build().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainConfig {
    delay: Duration,
    grace: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            grace: Duration::from_secs(30),
        }
    }
}

impl DrainConfig {
    /// A builder starting from the defaults: no delay, 30 s grace.
    pub fn builder() -> DrainConfigBuilder {
        DrainConfigBuilder {
            config: Self::default(),
        }
    }

    /// Time between readiness failing and accept stopping.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Time in-flight requests get after accept stopped.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// Builds a validated [`DrainConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DrainConfigBuilder {
    config: DrainConfig,
}

impl DrainConfigBuilder {
    /// Time between readiness failing and accept stopping (default 0).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.config.delay = delay;
        self
    }

    /// Time in-flight requests get after accept stopped, before they are cut (default 30 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.config.grace = grace;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<DrainConfig, ConfigError> {
        if self.config.delay > MAX_DURATION {
            return Err(ConfigError::DelayTooLong(self.config.delay));
        }
        if self.config.grace > MAX_DURATION {
            return Err(ConfigError::GraceTooLong(self.config.grace));
        }
        Ok(self.config)
    }
}
