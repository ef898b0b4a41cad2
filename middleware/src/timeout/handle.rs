//! [`TimeoutHandle`]: read statistics and change the deadline at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::config::{ConfigError, TimeoutSettings};
use super::shared::Shared;
use crate::control::{ApplyLock, Component, ComponentKind, DynComponent, FieldError, NoAction};

/// Runtime control of a [`TimeoutLayer`](super::TimeoutLayer). `Clone + Send + Sync`;
/// implements [`Component`] (kind [`Limit`](ComponentKind::Limit), so the admin API serves it
/// under `/admin/v1/limits/{name}` next to the rate-limit policies).
///
/// # Settings
///
/// [`TimeoutSettings`] as JSON, `{"enabled": true, "timeout_ms": 30000}`; a change is a JSON
/// merge-patch, validated as a whole and applied atomically. A new deadline applies to requests
/// that start after the change; requests in flight keep the deadline they started with.
///
/// # Stats
///
/// [`TimeoutStats`]: `completed` (answered before the deadline), `timed_out` (504),
/// `client_timed_out` (408), `cancelled` (the client went away first) and `exempt`, all
/// monotonic counters.
#[derive(Clone)]
pub struct TimeoutHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for TimeoutHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutHandle")
            .field("name", &self.shared.name)
            .field("settings", &self.shared.settings())
            .finish()
    }
}

pub use crate::control::stats::TimeoutStats;

impl TimeoutHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The name this handle registers under.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current settings.
    pub fn settings(&self) -> TimeoutSettings {
        self.shared.settings()
    }

    /// The current deadline.
    pub fn timeout(&self) -> Duration {
        self.settings().timeout()
    }

    /// Replaces the settings after validating them; on error nothing changes.
    pub fn set_settings(&self, settings: TimeoutSettings) -> Result<(), Vec<ConfigError>> {
        let _guard = self.shared.apply_lock.lock();
        let errors = settings.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        self.shared.store(settings);
        Ok(())
    }

    /// Changes the deadline (keeps `enabled`).
    pub fn set_timeout(&self, timeout: Duration) -> Result<(), Vec<ConfigError>> {
        let settings = TimeoutSettings {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ..self.settings()
        };
        self.set_settings(settings)
    }

    /// Live statistics.
    pub fn stats(&self) -> TimeoutStats {
        let c = &self.shared.counters;
        TimeoutStats {
            completed: c.completed.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            client_timed_out: c.client_timed_out.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            exempt: c.exempt.load(Ordering::Relaxed),
        }
    }
}

impl Component for TimeoutHandle {
    type Settings = TimeoutSettings;
    type Stats = TimeoutStats;
    type Action = NoAction;
    type Outcome = NoAction;
    const KIND: ComponentKind = ComponentKind::Limit;

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> TimeoutSettings {
        self.shared.settings()
    }

    fn stats(&self) -> TimeoutStats {
        TimeoutHandle::stats(self)
    }

    fn validate(
        &self,
        _current: &TimeoutSettings,
        next: &TimeoutSettings,
    ) -> Result<(), Vec<FieldError>> {
        let errors = next.validate();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.iter().map(FieldError::from).collect())
        }
    }

    fn commit(&self, next: TimeoutSettings) {
        self.shared.store(next);
    }

    fn apply_lock(&self) -> &ApplyLock {
        &self.shared.apply_lock
    }
}

impl crate::control::Handle for TimeoutHandle {
    fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)> {
        vec![(self.name().to_owned(), Arc::new(self.clone()))]
    }
}
