//! [`RateLimitHandle`] and [`PolicyHandle`]: read statistics and change limits at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::config::Limits;
use super::state::{Current, PolicyState, Shared};
pub use crate::control::stats::PolicyStats;
use crate::control::{
    ApplyLock, Component, ComponentKind, DuplicateName, DynComponent, FieldError, Registry,
};

/// Runtime control of a [`RateLimitLayer`](super::RateLimitLayer): one [`PolicyHandle`] per
/// policy. Clone + Send + Sync.
#[derive(Clone)]
pub struct RateLimitHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.shared.policies.iter().map(|p| &*p.name).collect();
        f.debug_struct("RateLimitHandle")
            .field("policies", &names)
            .finish()
    }
}

impl RateLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Every policy, in evaluation order of declaration.
    pub fn policies(&self) -> Vec<PolicyHandle> {
        self.shared
            .policies
            .iter()
            .map(|p| PolicyHandle {
                policy: Arc::clone(p),
            })
            .collect()
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<PolicyHandle> {
        self.shared
            .policies
            .iter()
            .find(|p| &*p.name == name)
            .map(|p| PolicyHandle {
                policy: Arc::clone(p),
            })
    }

    /// `(name, component)` pairs to register in a [`Registry`] (kind
    /// [`Limit`](ComponentKind::Limit)), one per policy.
    pub fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)> {
        self.policies()
            .into_iter()
            .map(|p| (p.name().to_owned(), Arc::new(p) as Arc<dyn DynComponent>))
            .collect()
    }

    /// Registers every policy under its name.
    pub fn register(&self, registry: &Registry) -> Result<(), DuplicateName> {
        for (name, c) in self.components() {
            registry.register(name, c)?;
        }
        Ok(())
    }

    /// Requests let through by an exemption (path or client network).
    pub fn exempt(&self) -> u64 {
        self.shared.exempt.load(Ordering::Relaxed)
    }
}

/// Runtime control of one policy; implements [`Component`] (kind `limit`).
///
/// Settings (what [`Component::settings`] returns and [`DynComponent::apply`] accepts as a JSON
/// merge patch): `{"rate": 100, "per": "1s", "burst": 20, "mode": "enforce"}`. `per` also takes
/// a number of seconds, and `per_secs` is accepted as an alias. A change is validated as a whole
/// (zero rate, period outside 1 ms ..= 366 d, burst 0 or above 10 000 000, more than 10 million
/// per second are refused with reasons) and swapped atomically; every key keeps its state
/// (see "Runtime changes" in the [module docs](super)).
///
/// Actions: `purge_idle` (free the state of idle keys; returns `{"freed": n}`) and `reset`
/// (forget every key of a local store: everyone gets a full burst).
#[derive(Clone)]
pub struct PolicyHandle {
    policy: Arc<PolicyState>,
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("name", &self.policy.name)
            .field("limits", &self.limits())
            .finish()
    }
}

impl PolicyHandle {
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.policy.name
    }

    /// The current limits.
    pub fn limits(&self) -> Limits {
        self.policy.current.load().limits
    }

    /// Validates and applies new limits; returns the previous ones. Keys keep their state.
    pub fn set_limits(&self, limits: Limits) -> Result<Limits, Vec<FieldError>> {
        let _writer = self.policy.write.lock();
        limits.validate()?;
        Ok(self.swap(limits))
    }

    fn swap(&self, limits: Limits) -> Limits {
        let p = &self.policy;
        let new = Arc::new(Current::new(&p.name, limits));
        let old = p.current.swap(Arc::clone(&new));
        if old.gcra != new.gcra {
            p.store.rescale(&old.gcra, &new.gcra);
        }
        p.version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            layer = "rate_limit",
            policy = %p.name,
            from = ?old.limits,
            to = ?limits,
            "rate limit changed"
        );
        old.limits
    }

    /// Live statistics.
    pub fn stats(&self) -> PolicyStats {
        let p = &self.policy;
        PolicyStats {
            allowed: p.counters.allowed.load(Ordering::Relaxed),
            rejected: p.counters.rejected.load(Ordering::Relaxed),
            shadow_rejected: p.counters.shadow_rejected.load(Ordering::Relaxed),
            store: p.store.kind().to_owned(),
            key: p.key.label(),
            paths: p.paths.iter().map(ToString::to_string).collect(),
            store_stats: p.store.stats(),
        }
    }

    /// Frees the state of idle keys; returns how many.
    pub fn purge_idle(&self) -> u64 {
        self.policy.store.purge_idle()
    }

    /// Forgets every key (local stores only).
    pub fn reset(&self) -> Result<u64, &'static str> {
        self.policy.store.reset()
    }
}

/// An operator action on a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PolicyAction {
    /// Free the state of idle keys.
    PurgeIdle,
    /// Forget every key of a local store: everyone gets a full burst.
    Reset,
}

/// What a [`PolicyAction`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freed {
    /// Keys whose state was freed.
    pub freed: u64,
}

impl Component for PolicyHandle {
    type Settings = Limits;
    type Stats = PolicyStats;
    type Action = PolicyAction;
    type Outcome = Freed;
    const KIND: ComponentKind = ComponentKind::Limit;
    const ACTIONS: &'static [&'static str] = &["purge_idle", "reset"];
    const ALIASES: &'static [(&'static str, &'static str)] = &[("per_secs", "per")];

    fn version(&self) -> u64 {
        self.policy.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> Limits {
        self.limits()
    }

    fn stats(&self) -> PolicyStats {
        PolicyHandle::stats(self)
    }

    fn validate(&self, _current: &Limits, next: &Limits) -> Result<(), Vec<FieldError>> {
        next.validate()
    }

    fn commit(&self, next: Limits) {
        self.swap(next);
    }

    fn apply_lock(&self) -> &ApplyLock {
        &self.policy.write
    }

    fn act(&self, action: PolicyAction) -> Result<Freed, Vec<FieldError>> {
        match action {
            PolicyAction::PurgeIdle => Ok(Freed {
                freed: self.purge_idle(),
            }),
            PolicyAction::Reset => self
                .reset()
                .map(|freed| Freed { freed })
                .map_err(|reason| vec![FieldError::new("action", reason)]),
        }
    }
}

impl crate::control::Handle for RateLimitHandle {
    fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)> {
        RateLimitHandle::components(self)
    }
}

impl crate::control::Handle for PolicyHandle {
    fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)> {
        vec![(self.name().to_owned(), Arc::new(self.clone()))]
    }
}
