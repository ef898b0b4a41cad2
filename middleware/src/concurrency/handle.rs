//! [`ConcurrencyLimitHandle`]: read statistics and change the limit at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::config::{ConcurrencySettings, ConfigError};
use super::shared::Shared;
use crate::control::{ApplyLock, Component, ComponentKind, DynComponent, FieldError, NoAction};

/// Runtime control of a [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
/// `Clone + Send + Sync`; implements [`Component`] (kind [`Limit`](ComponentKind::Limit), so
/// the admin API serves it under `/admin/v1/limits/{name}` next to the rate-limit policies).
///
/// # Settings
///
/// [`ConcurrencySettings`] as JSON:
/// `{"enabled": true, "max_in_flight": 1024, "algorithm": "fixed", "min_in_flight": 1,
/// "latency_threshold_ms": 1000, "backoff_percent": 90, "retry_after_secs": 1}`. A change is a
/// JSON merge-patch, validated as a whole and applied atomically. Requests in flight keep their
/// slots: after lowering the limit below the number in flight, new requests are shed until
/// enough of them finish. With `aimd`, a change keeps the learnt limit (clamped to the new
/// bounds); switching from `fixed` to `aimd` starts at `max_in_flight`.
///
/// # Stats
///
/// [`ConcurrencyStats`]: `allowed` and `rejected` (shed) counters, `in_flight` and `limit`
/// now, `peak_in_flight`, `exempt`, and `drops` (AIMD samples that lowered the limit).
#[derive(Clone)]
pub struct ConcurrencyLimitHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ConcurrencyLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitHandle")
            .field("name", &self.shared.name)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

pub use crate::control::stats::ConcurrencyStats;

impl ConcurrencyLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The name this handle registers under.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current settings.
    pub fn settings(&self) -> ConcurrencySettings {
        **self.shared.settings.load()
    }

    /// The effective limit now.
    pub fn limit(&self) -> u32 {
        self.shared.limit.load(Ordering::Acquire)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Replaces the settings after validating them; on error nothing changes.
    pub fn set_settings(&self, settings: ConcurrencySettings) -> Result<(), Vec<ConfigError>> {
        let _guard = self.shared.apply_lock.lock();
        let errors = settings.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        self.shared.store(settings);
        Ok(())
    }

    /// Changes `max_in_flight` (the limit, or the AIMD ceiling).
    pub fn set_max_in_flight(&self, n: u32) -> Result<(), Vec<ConfigError>> {
        let _guard = self.shared.apply_lock.lock();
        let settings = ConcurrencySettings {
            max_in_flight: n,
            ..**self.shared.settings.load()
        };
        let errors = settings.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        self.shared.store(settings);
        Ok(())
    }

    /// Live statistics.
    pub fn stats(&self) -> ConcurrencyStats {
        let c = &self.shared.counters;
        ConcurrencyStats {
            allowed: c.allowed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
            limit: self.limit(),
            peak_in_flight: c.peak_in_flight.load(Ordering::Relaxed),
            exempt: c.exempt.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
        }
    }
}

impl Component for ConcurrencyLimitHandle {
    type Settings = ConcurrencySettings;
    type Stats = ConcurrencyStats;
    type Action = NoAction;
    type Outcome = NoAction;
    const KIND: ComponentKind = ComponentKind::Limit;

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> ConcurrencySettings {
        ConcurrencyLimitHandle::settings(self)
    }

    fn stats(&self) -> ConcurrencyStats {
        ConcurrencyLimitHandle::stats(self)
    }

    fn validate(
        &self,
        _current: &ConcurrencySettings,
        next: &ConcurrencySettings,
    ) -> Result<(), Vec<FieldError>> {
        let errors = next.validate();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.iter().map(FieldError::from).collect())
        }
    }

    fn commit(&self, next: ConcurrencySettings) {
        self.shared.store(next);
    }

    fn apply_lock(&self) -> &ApplyLock {
        &self.shared.apply_lock
    }
}

impl crate::control::Handle for ConcurrencyLimitHandle {
    fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)> {
        vec![(self.name().to_owned(), Arc::new(self.clone()))]
    }
}
