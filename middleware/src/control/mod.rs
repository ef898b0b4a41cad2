//! The control plane: a registry of live layer handles.
//!
//! Every Palisade layer is built as a pair `(layer, handle)`. The handle implements
//! [`Component`]: it reports its settings and live statistics as JSON and applies validated
//! changes atomically, keeping state (buckets, breaker windows, cache entries). Handles register
//! under a stable name in a [`Registry`]; the admin router lists, reads and changes them.
//!
//! ```
//! use palisade::control::{Change, Component, ComponentKind, FieldError, Registry};
//! use serde_json::{json, Value};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! #[derive(Debug, Default)]
//! struct Knob(AtomicU64, AtomicU64);
//!
//! impl Component for Knob {
//!     fn kind(&self) -> ComponentKind { ComponentKind::Limit }
//!     fn version(&self) -> u64 { self.1.load(Ordering::Acquire) }
//!     fn settings(&self) -> Value { json!({ "rate": self.0.load(Ordering::Acquire) }) }
//!     fn stats(&self) -> Value { json!({}) }
//!     fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
//!         let rate = patch["rate"].as_u64().filter(|r| *r > 0)
//!             .ok_or_else(|| vec![FieldError::new("rate", "must be a positive integer")])?;
//!         let before = self.settings();
//!         if !dry_run {
//!             self.0.store(rate, Ordering::Release);
//!             self.1.fetch_add(1, Ordering::AcqRel);
//!         }
//!         Ok(Change { before, after: json!({ "rate": rate }) })
//!     }
//! }
//!
//! let registry = Registry::new();
//! registry.register("api", std::sync::Arc::new(Knob::default())).unwrap();
//! let change = registry.get("api").unwrap().apply(&json!({ "rate": 5 }), false).unwrap();
//! assert_eq!(change.after["rate"], 5);
//! assert!(registry.get("api").unwrap().apply(&json!({ "rate": 0 }), false).is_err());
//! ```

pub mod merge;
pub mod model;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of layer a component controls; the admin API groups components by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// A rate-limit policy (`/admin/v1/limits`).
    Limit,
    /// A circuit breaker (`/admin/v1/breakers`).
    Breaker,
    /// A cache (`/admin/v1/caches`).
    Cache,
}

impl ComponentKind {
    /// The plural used in admin URLs: `limits`, `breakers`, `caches`.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Limit => "limits",
            Self::Breaker => "breakers",
            Self::Cache => "caches",
        }
    }

    /// Parses the plural used in admin URLs.
    pub fn from_plural(s: &str) -> Option<Self> {
        match s {
            "limits" => Some(Self::Limit),
            "breakers" => Some(Self::Breaker),
            "caches" => Some(Self::Cache),
            _ => None,
        }
    }
}

/// One reason a change was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field, e.g. `burst` or `windows.size`.
    pub field: String,
    /// Why the value was refused, e.g. `must be at least 1 (got 0)`.
    pub reason: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The settings before and after an applied (or dry-run) change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Settings before the change.
    pub before: Value,
    /// Settings after the change (what they would be, for a dry run).
    pub after: Value,
}

/// A live layer handle, as the control plane sees it.
///
/// Implementations must make [`apply`](Component::apply) all-or-nothing: a patch with any
/// invalid field changes nothing and returns every reason. A successful, non-dry-run apply bumps
/// [`version`](Component::version), which the admin API exposes as an `ETag`.
pub trait Component: Send + Sync + fmt::Debug + 'static {
    /// The kind of layer.
    fn kind(&self) -> ComponentKind;
    /// A counter bumped by every applied change.
    fn version(&self) -> u64;
    /// Current settings, in the same shape [`apply`](Component::apply) accepts.
    fn settings(&self) -> Value;
    /// Live statistics (counters are monotonic, so rates can be derived by a reader).
    fn stats(&self) -> Value;
    /// Validates a partial settings object and, unless `dry_run`, applies it atomically.
    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>>;
    /// Runs an operator action such as `force_open`, `reset`, `invalidate` or `flush`.
    ///
    /// The default refuses every action.
    fn action(&self, action: &str, args: &Value) -> Result<Value, Vec<FieldError>> {
        let _ = args;
        Err(vec![FieldError::new(
            "action",
            format!("unknown action `{action}` for this component"),
        )])
    }
    /// The actions [`action`](Component::action) accepts, for discovery.
    fn actions(&self) -> &'static [&'static str] {
        &[]
    }
    /// How fields of [`stats`](Component::stats) combine across worker processes, by dotted
    /// path (see [`merge`](mod@merge)); fields not listed follow
    /// [`merge::Merge::Default`] (counters add up, other numbers keep the largest).
    fn stats_merge(&self) -> Vec<merge::FieldMerge> {
        Vec::new()
    }
}

/// A component's full state at one moment, as served by the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentSnapshot {
    /// The registered name.
    pub name: String,
    /// The kind of layer.
    pub kind: ComponentKind,
    /// The settings version (the admin API's `ETag`).
    pub version: u64,
    /// Current settings.
    pub settings: Value,
    /// Live statistics.
    pub stats: Value,
    /// Operator actions available.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A layer handle that knows the name(s) it is registered under, for [`Registry::add`].
///
/// Implemented by every Palisade handle: one component for a breaker or a cache, one per policy
/// for a rate limiter.
pub trait Handle {
    /// `(name, component)` pairs to register.
    fn components(&self) -> Vec<(String, Arc<dyn Component>)>;
}

/// Registering a second component under a name already taken.
#[derive(Debug, thiserror::Error)]
#[error("a {kind:?} component named `{name}` is already registered")]
pub struct DuplicateName {
    /// The kind.
    pub kind: ComponentKind,
    /// The name.
    pub name: String,
}

/// Live layer handles by kind and stable name. Cheap to clone; clones share the registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<Components>>,
}

type Components = BTreeMap<(ComponentKind, String), Arc<dyn Component>>;

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.inner.read().keys().cloned().collect();
        f.debug_struct("Registry")
            .field("components", &names)
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a handle under `name` (unique per kind).
    pub fn register(
        &self,
        name: impl Into<String>,
        component: Arc<dyn Component>,
    ) -> Result<(), DuplicateName> {
        let name = name.into();
        let kind = component.kind();
        let mut map = self.inner.write();
        let key = (kind, name);
        if map.contains_key(&key) {
            return Err(DuplicateName { kind, name: key.1 });
        }
        map.insert(key, component);
        Ok(())
    }

    /// Registers every component of a handle under the name it carries (a breaker's name, a
    /// cache's name, one entry per rate-limit policy). All or nothing: when a name is taken,
    /// nothing of `handle` is registered.
    ///
    /// ```
    /// # #[cfg(feature = "circuit-breaker")] {
    /// use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// use palisade::control::Registry;
    ///
    /// let registry = Registry::new();
    /// let (_layer, handle) =
    ///     CircuitBreakerLayer::new(CircuitBreakerConfig::default().with_name("payments"));
    /// registry.add(&handle).unwrap();
    /// assert!(registry.get("payments").is_some());
    /// assert!(registry.add(&handle).is_err());
    /// # }
    /// ```
    pub fn add(&self, handle: &impl Handle) -> Result<(), DuplicateName> {
        let components = handle.components();
        let mut map = self.inner.write();
        for (name, component) in &components {
            let kind = component.kind();
            let taken = map.contains_key(&(kind, name.clone()))
                || components
                    .iter()
                    .filter(|(n, c)| n == name && c.kind() == kind)
                    .count()
                    > 1;
            if taken {
                return Err(DuplicateName {
                    kind,
                    name: name.clone(),
                });
            }
        }
        for (name, component) in components {
            map.insert((component.kind(), name), component);
        }
        Ok(())
    }

    /// Removes a handle; returns it if it was registered.
    pub fn unregister(&self, kind: ComponentKind, name: &str) -> Option<Arc<dyn Component>> {
        self.inner.write().remove(&(kind, name.to_owned()))
    }

    /// Finds a handle by name, whatever its kind (names are usually unique across kinds).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Component>> {
        self.inner
            .read()
            .iter()
            .find(|((_, n), _)| n == name)
            .map(|(_, c)| Arc::clone(c))
    }

    /// Finds a handle by kind and name.
    pub fn get_kind(&self, kind: ComponentKind, name: &str) -> Option<Arc<dyn Component>> {
        self.inner.read().get(&(kind, name.to_owned())).cloned()
    }

    /// Snapshots every component, ordered by kind then name.
    pub fn snapshot(&self) -> Vec<ComponentSnapshot> {
        let entries: Vec<_> = self
            .inner
            .read()
            .iter()
            .map(|((kind, name), c)| (*kind, name.clone(), Arc::clone(c)))
            .collect();
        entries
            .into_iter()
            .map(|(kind, name, c)| snapshot_of(kind, name, c.as_ref()))
            .collect()
    }

    /// Snapshots the components of one kind.
    pub fn snapshot_kind(&self, kind: ComponentKind) -> Vec<ComponentSnapshot> {
        self.snapshot()
            .into_iter()
            .filter(|s| s.kind == kind)
            .collect()
    }
}

/// Snapshots one component.
pub fn snapshot_of(kind: ComponentKind, name: String, c: &dyn Component) -> ComponentSnapshot {
    ComponentSnapshot {
        name,
        kind,
        version: c.version(),
        settings: c.settings(),
        stats: c.stats(),
        actions: c.actions().iter().map(|a| (*a).to_owned()).collect(),
    }
}

/// Merges a partial JSON object into typed settings (RFC 7396 merge-patch) and deserializes the
/// result, so every component accepts patches the same way.
///
/// Unknown fields are refused when `T` uses `#[serde(deny_unknown_fields)]`; type errors name the
/// field. Validation of values stays with the caller.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct S { rate: u32, burst: u32 }
/// let s = S { rate: 10, burst: 5 };
/// let s: S = palisade::control::merge_patch(&s, &serde_json::json!({ "burst": 7 })).unwrap();
/// assert_eq!((s.rate, s.burst), (10, 7));
/// assert!(palisade::control::merge_patch(&s, &serde_json::json!({ "burst": "x" })).is_err());
/// ```
pub fn merge_patch<T>(current: &T, patch: &Value) -> Result<T, Vec<FieldError>>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let Value::Object(changes) = patch else {
        return Err(vec![FieldError::new("", "a change must be a JSON object")]);
    };
    let mut doc = serde_json::to_value(current).map_err(|e| {
        vec![FieldError::new(
            "",
            format!("settings not serializable: {e}"),
        )]
    })?;
    merge(&mut doc, changes);
    serde_json::from_value(doc).map_err(|e| vec![field_error_from_serde(&e, changes)])
}

/// Applies an RFC 7396 JSON merge-patch to `target` in place (`null` removes a member).
///
/// ```
/// let mut doc = serde_json::json!({ "rate": 10, "mode": "enforce" });
/// palisade::control::merge_json(&mut doc, &serde_json::json!({ "rate": 5, "mode": null }));
/// assert_eq!(doc, serde_json::json!({ "rate": 5 }));
/// ```
pub fn merge_json(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(changes) => merge(target, changes),
        other => *target = other.clone(),
    }
}

fn merge(doc: &mut Value, changes: &serde_json::Map<String, Value>) {
    if !doc.is_object() {
        *doc = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target) = doc else { return };
    for (key, value) in changes {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => merge(target.entry(key.clone()).or_insert(Value::Null), inner),
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

fn field_error_from_serde(
    e: &serde_json::Error,
    changes: &serde_json::Map<String, Value>,
) -> FieldError {
    let msg = e.to_string();
    // serde names unknown fields in backticks; otherwise blame the single changed field if any.
    let field = msg
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned)
        .or_else(|| {
            (changes.len() == 1)
                .then(|| changes.keys().next().cloned())
                .flatten()
        })
        .unwrap_or_default();
    FieldError::new(field, msg)
}
