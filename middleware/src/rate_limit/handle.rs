//! [`RateLimitHandle`] and [`PolicyHandle`]: read statistics and change limits at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::{Value, json};

use super::config::Limits;
use super::state::{Current, PolicyState, Shared};
use super::store::StoreStats;
use crate::control::{Change, Component, ComponentKind, DuplicateName, FieldError, Registry};

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
    pub fn components(&self) -> Vec<(String, Arc<dyn Component>)> {
        self.policies()
            .into_iter()
            .map(|p| (p.name().to_owned(), Arc::new(p) as Arc<dyn Component>))
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
/// Settings (what [`Component::settings`] returns and [`Component::apply`] accepts as a JSON
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

/// A policy's live statistics (the `stats` of its [`Component`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyStats {
    /// Requests this policy allowed (and that were not rejected by another policy).
    pub allowed: u64,
    /// Requests this policy rejected.
    pub rejected: u64,
    /// Requests this shadow-mode policy would have rejected.
    pub shadow_rejected: u64,
    /// The store kind: `local`, `shm`, `redis` or a custom store's name.
    pub store: &'static str,
    /// What the policy counts by (`client_ip`, `header:x-api-key`, ...).
    pub key: String,
    /// Store occupancy, evictions, errors and fallbacks.
    #[serde(flatten)]
    pub store_stats: StoreStats,
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
            store: p.store.kind(),
            key: p.key.label(),
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

/// Turns `per_secs` into `per` so a patch may use either.
fn normalize_patch(patch: &Value) -> Result<Value, Vec<FieldError>> {
    let mut patch = patch.clone();
    if let Value::Object(map) = &mut patch
        && let Some(secs) = map.remove("per_secs")
    {
        if map.contains_key("per") {
            return Err(vec![FieldError::new(
                "per_secs",
                "give either `per` or `per_secs`, not both",
            )]);
        }
        if !secs.is_number() {
            return Err(vec![FieldError::new(
                "per_secs",
                format!("must be a number of seconds (got {secs})"),
            )]);
        }
        map.insert("per".into(), secs);
    }
    Ok(patch)
}

impl Component for PolicyHandle {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Limit
    }

    fn version(&self) -> u64 {
        self.policy.version.load(Ordering::Acquire)
    }

    fn settings(&self) -> Value {
        serde_json::to_value(self.limits()).unwrap_or(Value::Null)
    }

    fn stats(&self) -> Value {
        let mut stats = serde_json::to_value(PolicyHandle::stats(self)).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut stats {
            let paths: Vec<String> = self.policy.paths.iter().map(ToString::to_string).collect();
            map.insert("paths".into(), json!(paths));
        }
        stats
    }

    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
        let _writer = self.policy.write.lock();
        let current = self.limits();
        let patch = normalize_patch(patch)?;
        let next: Limits = crate::control::merge_patch(&current, &patch)?;
        next.validate()?;
        let change = Change {
            before: serde_json::to_value(current).unwrap_or(Value::Null),
            after: serde_json::to_value(next).unwrap_or(Value::Null),
        };
        if !dry_run {
            self.swap(next);
        }
        Ok(change)
    }

    fn action(&self, action: &str, _args: &Value) -> Result<Value, Vec<FieldError>> {
        match action {
            "purge_idle" => Ok(json!({ "freed": self.purge_idle() })),
            "reset" => self
                .reset()
                .map(|freed| json!({ "freed": freed }))
                .map_err(|reason| vec![FieldError::new("action", reason)]),
            other => Err(vec![FieldError::new(
                "action",
                format!("unknown action `{other}` (use purge_idle or reset)"),
            )]),
        }
    }

    fn stats_merge(&self) -> Vec<crate::control::merge::FieldMerge> {
        use crate::control::merge::Merge;
        if PolicyHandle::stats(self).store == "shm" {
            // One table in shared memory: every worker reports the whole zone.
            [
                "capacity",
                "keys",
                "evictions_idle",
                "evictions_pressure",
                "purged",
            ]
            .into_iter()
            .map(|f| (f, Merge::Once))
            .collect()
        } else {
            Vec::new()
        }
    }

    fn actions(&self) -> &'static [&'static str] {
        &["purge_idle", "reset"]
    }
}

impl crate::control::Handle for RateLimitHandle {
    fn components(&self) -> Vec<(String, Arc<dyn Component>)> {
        RateLimitHandle::components(self)
    }
}

impl crate::control::Handle for PolicyHandle {
    fn components(&self) -> Vec<(String, Arc<dyn Component>)> {
        vec![(self.name().to_owned(), Arc::new(self.clone()))]
    }
}
