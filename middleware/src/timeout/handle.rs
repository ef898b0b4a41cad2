//! [`TimeoutHandle`]: read statistics and change the deadline at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::config::{ConfigError, TimeoutSettings};
use super::shared::Shared;
use crate::control::{self, Change, Component, ComponentKind, FieldError};

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

/// A timeout layer's live statistics (the `stats` of its [`Component`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeoutStats {
    /// Timed requests answered before their deadline.
    pub completed: u64,
    /// Requests cut at the deadline with `504 Gateway Timeout`.
    pub timed_out: u64,
    /// Requests cut at the deadline with `408 Request Timeout` (the service was waiting for
    /// the request body).
    pub client_timed_out: u64,
    /// Timed requests whose response future was dropped before either (client disconnects).
    pub cancelled: u64,
    /// Requests not timed because their path is exempt.
    pub exempt: u64,
}

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
    fn kind(&self) -> ComponentKind {
        ComponentKind::Limit
    }

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> Value {
        serde_json::to_value(self.shared.settings()).unwrap_or(Value::Null)
    }

    fn stats(&self) -> Value {
        serde_json::to_value(TimeoutHandle::stats(self)).unwrap_or(Value::Null)
    }

    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
        let _guard = self.shared.apply_lock.lock();
        let current = self.shared.settings();
        let next: TimeoutSettings = control::merge_patch(&current, patch)?;
        let errors = next.validate();
        if !errors.is_empty() {
            return Err(errors.iter().map(FieldError::from).collect());
        }
        let change = Change {
            before: serde_json::to_value(current).unwrap_or(Value::Null),
            after: serde_json::to_value(next).unwrap_or(Value::Null),
        };
        if !dry_run {
            self.shared.store(next);
        }
        Ok(change)
    }
}

impl crate::control::Handle for TimeoutHandle {
    fn components(&self) -> Vec<(String, Arc<dyn Component>)> {
        vec![(self.name().to_owned(), Arc::new(self.clone()))]
    }
}
