//! The control plane: a registry of live layer handles.
//!
//! Every Palisade layer is built as a pair `(layer, handle)`. The handle implements
//! [`Component`]: typed settings, typed live statistics ([`stats`](mod@stats)) and typed
//! operator actions; it applies validated changes atomically, keeping state (buckets, breaker
//! windows, cache entries). Handles register under a stable name in a [`Registry`], which holds
//! them as [`DynComponent`]s — the same component with settings, stats and actions as JSON, the
//! one erasure at the admin/wire boundary — and the admin router lists, reads and changes them.
//! A kind and a name identify a component everywhere (registry, admin URLs, supervisor
//! messages, audit): a limit and a cache may share a name.
//!
//! See [`Component`] for writing your own.

pub mod histogram;
pub mod merge;
pub mod model;
pub mod stats;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
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

/// A live layer handle with typed settings, statistics and actions.
///
/// Every Palisade handle implements it, and so can your own layers. The control plane only
/// speaks JSON at its edge: every `Component` is also a [`DynComponent`] (a blanket
/// implementation, the one place where types are erased, like tower's `BoxService`), which is
/// what a [`Registry`] holds and the admin API serves. That adapter
///
/// - serializes [`settings`](Component::settings) and [`stats`](Component::stats);
/// - applies a JSON merge-patch (RFC 7396) to the typed settings ([`merge_patch`]: unknown
///   fields and wrong types are refused with the field named), then calls
///   [`validate`](Component::validate) and, unless it is a dry run,
///   [`commit`](Component::commit), holding [`apply_lock`](Component::apply_lock) from reading
///   the current settings to storing the new ones — a change is all-or-nothing;
/// - reads an action as `{"action": "<name>", ...args}` into [`Action`](Component::Action)
///   (an enum tagged with `action`) and serializes what [`act`](Component::act) returns.
///
/// A successful, non-dry-run change must bump [`version`](Component::version), which the
/// admin API exposes as an `ETag`.
///
/// ```
/// use palisade::control::{ApplyLock, Component, ComponentKind, DynComponent, FieldError, Registry, Stats};
/// use serde::{Deserialize, Serialize};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct KnobSettings { rate: u64 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct KnobStats { turns: u64 }
/// impl Stats for KnobStats {} // counters add up across workers
///
/// #[derive(Debug, Deserialize)]
/// #[serde(tag = "action", rename_all = "snake_case")]
/// enum KnobAction { Turn { by: u64 } }
///
/// #[derive(Debug, Default)]
/// struct Knob { rate: AtomicU64, turns: AtomicU64, version: AtomicU64, lock: ApplyLock }
///
/// impl Component for Knob {
///     type Settings = KnobSettings;
///     type Stats = KnobStats;
///     type Action = KnobAction;
///     type Outcome = KnobStats;
///     const KIND: ComponentKind = ComponentKind::Limit;
///     const ACTIONS: &'static [&'static str] = &["turn"];
///
///     fn version(&self) -> u64 { self.version.load(Ordering::Acquire) }
///     fn settings(&self) -> KnobSettings { KnobSettings { rate: self.rate.load(Ordering::Acquire) } }
///     fn stats(&self) -> KnobStats { KnobStats { turns: self.turns.load(Ordering::Relaxed) } }
///     fn validate(&self, _current: &KnobSettings, next: &KnobSettings) -> Result<(), Vec<FieldError>> {
///         if next.rate == 0 {
///             return Err(vec![FieldError::new("rate", "must be at least 1 (got 0)")]);
///         }
///         Ok(())
///     }
///     fn commit(&self, next: KnobSettings) {
///         self.rate.store(next.rate, Ordering::Release);
///         self.version.fetch_add(1, Ordering::AcqRel);
///     }
///     fn apply_lock(&self) -> &ApplyLock { &self.lock }
///     fn act(&self, action: KnobAction) -> Result<KnobStats, Vec<FieldError>> {
///         let KnobAction::Turn { by } = action;
///         self.turns.fetch_add(by, Ordering::Relaxed);
///         Ok(Component::stats(self)) // both traits are in scope here
///     }
/// }
///
/// let registry = Registry::new();
/// registry.register("api", std::sync::Arc::new(Knob::default())).unwrap();
/// let api = registry.get("api").unwrap();
/// let change = api.apply(&serde_json::json!({ "rate": 5 }), false).unwrap();
/// assert_eq!((change.after["rate"].as_u64(), api.version()), (Some(5), 1));
/// let refused = api.apply(&serde_json::json!({ "rate": 0 }), false).unwrap_err();
/// assert_eq!(refused[0].field, "rate");
/// assert!(api.apply(&serde_json::json!({ "speed": 1 }), false).is_err(), "unknown field");
/// assert_eq!(api.action("turn", &serde_json::json!({ "by": 2 })).unwrap()["turns"], 2);
/// assert_eq!(api.action("spin", &serde_json::json!({})).unwrap_err()[0].field, "action");
/// ```
pub trait Component: Send + Sync + fmt::Debug + 'static {
    /// The settings, in the shape the admin API shows and a change merge-patches. Use
    /// `#[serde(deny_unknown_fields)]` so a misspelt field is refused rather than ignored.
    type Settings: Serialize + DeserializeOwned;
    /// Live statistics; counters are monotonic, so readers derive rates from two snapshots.
    type Stats: Stats;
    /// Operator actions: an enum tagged with `action` (`#[serde(tag = "action")]`); use
    /// [`NoAction`] for none.
    type Action: DeserializeOwned;
    /// What an action returns.
    type Outcome: Serialize;
    /// The kind of layer (part of the component's identity with its name).
    const KIND: ComponentKind;
    /// The names of the [`Action`](Component::Action) variants, for discovery.
    const ACTIONS: &'static [&'static str] = &[];
    /// Alternative names of settings fields a patch may use, as `(alias, field)`: the alias is
    /// renamed before merging; giving both is refused.
    const ALIASES: &'static [(&'static str, &'static str)] = &[];

    /// A counter bumped by every committed change.
    fn version(&self) -> u64;
    /// The current settings.
    fn settings(&self) -> Self::Settings;
    /// Live statistics.
    fn stats(&self) -> Self::Stats;
    /// Checks complete `next` settings (`current` merged with a patch); every refused field is
    /// reported. Called with [`apply_lock`](Component::apply_lock) held.
    fn validate(
        &self,
        current: &Self::Settings,
        next: &Self::Settings,
    ) -> Result<(), Vec<FieldError>>;
    /// Stores validated settings and bumps the version. Called with
    /// [`apply_lock`](Component::apply_lock) held.
    fn commit(&self, next: Self::Settings);
    /// The lock serializing changes to this component (the handle's own setters take it too).
    fn apply_lock(&self) -> &ApplyLock;
    /// Runs an operator action. The default refuses every action.
    fn act(&self, action: Self::Action) -> Result<Self::Outcome, Vec<FieldError>> {
        let _ = action;
        Err(vec![FieldError::new(
            "action",
            "this component has no actions",
        )])
    }
}

/// The statistics of a [`Component`], with how their fields combine across worker processes.
///
/// The rules sit next to the fields they describe; fields not listed follow
/// [`merge::Merge::Default`] (integer counters add up, other numbers keep the largest).
///
/// ```
/// use palisade::control::Stats;
/// use palisade::control::merge::{FieldMerge, Merge};
///
/// #[derive(serde::Serialize)]
/// struct PoolStats { checked_out: u64, max_size: u64 }
/// impl Stats for PoolStats {
///     fn merge_rules(&self) -> Vec<FieldMerge> {
///         vec![("max_size", Merge::Once)] // the same configured size in every worker
///     }
/// }
/// ```
pub trait Stats: Serialize {
    /// How fields combine, by dotted path (see [`merge`](mod@merge)).
    fn merge_rules(&self) -> Vec<merge::FieldMerge> {
        Vec::new()
    }
}

/// The [`Action`](Component::Action) of a component without actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoAction {}

/// Serializes changes to one [`Component`]: held from reading the current settings to storing
/// the new ones, by the control plane and by a handle's own setters.
#[derive(Debug, Default)]
pub struct ApplyLock(parking_lot::Mutex<()>);

impl ApplyLock {
    /// An unlocked lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the lock; changes are short, synchronous sections.
    pub fn lock(&self) -> ApplyGuard<'_> {
        ApplyGuard(self.0.lock())
    }
}

/// Holds an [`ApplyLock`] until dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ApplyGuard<'a>(
    #[allow(dead_code, reason = "held for its drop")] parking_lot::MutexGuard<'a, ()>,
);

impl fmt::Debug for ApplyGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApplyGuard")
    }
}

/// A live layer handle as the registry, the admin API and the wire see it: settings, stats and
/// actions as JSON.
///
/// Implemented for every [`Component`] (implement that instead); implement this directly only
/// for a proxy that is itself untyped, such as a supervisor's view of its workers.
/// Implementations must make [`apply`](DynComponent::apply) all-or-nothing: a patch with any
/// invalid field changes nothing and returns every reason. A successful, non-dry-run apply
/// bumps [`version`](DynComponent::version).
pub trait DynComponent: Send + Sync + fmt::Debug + 'static {
    /// The kind of layer.
    fn kind(&self) -> ComponentKind;
    /// A counter bumped by every applied change.
    fn version(&self) -> u64;
    /// Current settings, in the same shape [`apply`](DynComponent::apply) accepts.
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
    /// The actions [`action`](DynComponent::action) accepts, for discovery.
    fn actions(&self) -> &'static [&'static str] {
        &[]
    }
    /// How fields of [`stats`](DynComponent::stats) combine across worker processes, by dotted
    /// path (see [`merge`](mod@merge)); fields not listed follow
    /// [`merge::Merge::Default`] (counters add up, other numbers keep the largest).
    fn stats_merge(&self) -> Vec<merge::FieldMerge> {
        Vec::new()
    }
}

/// The erasing adapter: a typed [`Component`] at the JSON boundary.
impl<C: Component> DynComponent for C {
    fn kind(&self) -> ComponentKind {
        C::KIND
    }

    fn version(&self) -> u64 {
        Component::version(self)
    }

    fn settings(&self) -> Value {
        to_json(&Component::settings(self))
    }

    fn stats(&self) -> Value {
        to_json(&Component::stats(self))
    }

    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
        let patch = rename_aliases(patch, C::ALIASES)?;
        let _guard = self.apply_lock().lock();
        let current = Component::settings(self);
        let next: C::Settings = merge_patch(&current, &patch)?;
        self.validate(&current, &next)?;
        let change = Change {
            before: to_json(&current),
            after: to_json(&next),
        };
        if !dry_run {
            self.commit(next);
        }
        Ok(change)
    }

    fn action(&self, action: &str, args: &Value) -> Result<Value, Vec<FieldError>> {
        let mut doc = match args {
            Value::Null => serde_json::Map::new(),
            Value::Object(map) => map.clone(),
            other => {
                return Err(vec![FieldError::new(
                    "args",
                    format!("action arguments must be a JSON object (got {other})"),
                )]);
            }
        };
        doc.insert("action".to_owned(), Value::String(action.to_owned()));
        let parsed: C::Action = serde_json::from_value(Value::Object(doc))
            .map_err(|e| vec![action_error(&e, action, C::ACTIONS)])?;
        self.act(parsed).map(|outcome| to_json(&outcome))
    }

    fn actions(&self) -> &'static [&'static str] {
        C::ACTIONS
    }

    fn stats_merge(&self) -> Vec<merge::FieldMerge> {
        Component::stats(self).merge_rules()
    }
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Renames alias keys of a patch to the field they stand for.
fn rename_aliases(
    patch: &Value,
    aliases: &[(&'static str, &'static str)],
) -> Result<Value, Vec<FieldError>> {
    let mut patch = patch.clone();
    if let Value::Object(map) = &mut patch {
        for (alias, field) in aliases {
            if let Some(value) = map.remove(*alias) {
                if map.contains_key(*field) {
                    return Err(vec![FieldError::new(
                        *alias,
                        format!("give either `{field}` or `{alias}`, not both"),
                    )]);
                }
                map.insert((*field).to_owned(), value);
            }
        }
    }
    Ok(patch)
}

/// Names the field a refused action names: the action itself when unknown, else the argument.
fn action_error(e: &serde_json::Error, action: &str, known: &[&str]) -> FieldError {
    let msg = e.to_string();
    if msg.starts_with("unknown variant") {
        return FieldError::new(
            "action",
            format!(
                "unknown action `{action}` (use one of: {})",
                known.join(", ")
            ),
        );
    }
    let field = backticked(&msg, "missing field `")
        .or_else(|| backticked(&msg, "unknown field `"))
        .unwrap_or_else(|| "args".to_owned());
    FieldError::new(field, msg)
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = &msg[msg.find(prefix)? + prefix.len()..];
    rest.split('`').next().map(str::to_owned)
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
    fn components(&self) -> Vec<(String, Arc<dyn DynComponent>)>;
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

type Components = BTreeMap<(ComponentKind, String), Arc<dyn DynComponent>>;

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
        component: Arc<dyn DynComponent>,
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
    pub fn unregister(&self, kind: ComponentKind, name: &str) -> Option<Arc<dyn DynComponent>> {
        self.inner.write().remove(&(kind, name.to_owned()))
    }

    /// Finds a handle by name, whatever its kind (names are usually unique across kinds).
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynComponent>> {
        self.inner
            .read()
            .iter()
            .find(|((_, n), _)| n == name)
            .map(|(_, c)| Arc::clone(c))
    }

    /// Finds a handle by kind and name.
    pub fn get_kind(&self, kind: ComponentKind, name: &str) -> Option<Arc<dyn DynComponent>> {
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
pub fn snapshot_of(kind: ComponentKind, name: String, c: &dyn DynComponent) -> ComponentSnapshot {
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
