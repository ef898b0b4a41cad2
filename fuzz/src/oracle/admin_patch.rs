//! Properties of admin request bodies: `palisade::control::merge_patch` / `merge_json` and each
//! layer handle's `Component::apply`.
//!
//! Shared by the `admin_patch` fuzz target (fuzz/src/lib.rs) and the proptests in
//! middleware/tests/proptest_parsers.rs.

use std::sync::Arc;

use palisade::cache::{CacheConfig, TwoLevelCache};
use palisade::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerSettings,
};
use palisade::control::{DynComponent, merge_json, merge_patch};
use palisade::rate_limit::{KeySource, Limits, PolicyConfig, RateLimitConfig, RateLimitLayer};
use serde_json::{Map, Value, json};

/// Which layer handle a patch goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A rate-limit policy (`PolicyHandle`).
    Limit,
    /// A circuit breaker (`CircuitBreakerHandle`).
    Breaker,
    /// A cache (`CacheHandle`).
    Cache,
}

/// Every target.
pub(crate) const TARGETS: [Target; 3] = [Target::Limit, Target::Breaker, Target::Cache];

/// A fresh handle of this kind, as the reference server builds it.
fn component(target: Target) -> Arc<dyn DynComponent> {
    match target {
        Target::Limit => {
            let config = RateLimitConfig::builder()
                .policy(
                    PolicyConfig::builder("api")
                        .per_second(100)
                        .burst(20)
                        .key(KeySource::Global)
                        .local(64),
                )
                .build()
                .expect("a valid policy");
            let (_layer, handle) = RateLimitLayer::new(config);
            Arc::new(handle.policy("api").expect("the policy"))
        }
        Target::Breaker => Arc::new(CircuitBreakerLayer::new(CircuitBreakerConfig::default()).1),
        Target::Cache => {
            let config = CacheConfig::builder()
                .name("users")
                .build()
                .expect("a valid cache");
            let cache: TwoLevelCache<String, String> = TwoLevelCache::new(config).expect("a cache");
            Arc::new(cache.handle())
        }
    }
}

/// Whether `settings` (as a handle reports them) is a valid settings document of its kind.
fn valid_settings(target: Target, settings: &Value) -> Result<(), String> {
    let s = settings.clone();
    match target {
        Target::Limit => serde_json::from_value::<Limits>(s)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| format!("{e:?}")),
        Target::Breaker => {
            let errors = serde_json::from_value::<CircuitBreakerSettings>(s)
                .map_err(|e| e.to_string())?
                .validate();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(format!("{errors:?}"))
            }
        }
        Target::Cache => serde_json::from_value::<CacheConfig>(s)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string()),
    }
}

/// The top-level settings keys of a target (patch generators draw keys from these).
pub(crate) fn settings_keys(target: Target) -> Vec<String> {
    let mut keys: Vec<String> = match component(target).settings() {
        Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("settings of {target:?} are not an object: {other}"),
    };
    keys.extend(["per_secs", "redis", "unknown", ""].map(String::from));
    keys
}

/// Values that sit on or next to the rules of the three settings types.
pub(crate) fn interesting_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(10),
        json!(100),
        json!(1023),
        json!(1024),
        json!(3600),
        json!(100_000),
        json!(10_000_000),
        json!(10_000_001),
        json!(86_400_000),
        json!(86_400_001),
        json!(1_000_000_000),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.0),
        json!(-0.0),
        json!(0.5),
        json!(50.0),
        json!(100.0),
        json!(100.000_001),
        json!(1e300),
        json!(-1e300),
        json!(f64::MIN_POSITIVE),
        json!(""),
        json!("1s"),
        json!("100ms"),
        json!("0.5s"),
        json!("1.5s"),
        json!("0s"),
        json!("1ns"),
        json!(".s"),
        json!("1.2.3s"),
        json!("366d"),
        json!("367d"),
        json!("99999999999999999999d"),
        json!("0.000000000000000000001h"),
        json!("1 fortnight"),
        json!("é"),
        json!("enforce"),
        json!("shadow"),
        json!("off"),
        json!("count"),
        json!("time"),
        json!("lru"),
        json!("tiny_lfu"),
        json!("users"),
        json!("redis://127.0.0.1:1/"),
        json!([]),
        json!([1, "x"]),
        json!({}),
        json!({ "url": "redis://127.0.0.1:1/" }),
    ]
}

/// RFC 7396, section 2, as pseudo-code there.
fn reference_merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            out.remove(name);
        } else {
            let merged = reference_merge(out.get(name).unwrap_or(&Value::Null), value);
            out.insert(name.clone(), merged);
        }
    }
    Value::Object(out)
}

/// `merge_json` is RFC 7396 merge-patch.
pub(crate) fn check_merge_json(target: &Value, patch: &Value) {
    let mut doc = target.clone();
    merge_json(&mut doc, patch);
    assert_eq!(doc, reference_merge(target, patch));
}

/// `merge_patch` into each typed settings type: a non-object is refused; a refusal names a
/// reason (and names the key when the patch changes one key to a scalar); an accepted result
/// equals deserializing the merged document and, when it is valid settings, is stable under an
/// empty patch and under its own serialization. (Invalid values need not serialize back: a
/// `per` of more than 584 years is read as seconds but written as a string that is refused.)
pub(crate) fn check_merge_patch(patch: &Value) {
    fn one<T>(current: &T, patch: &Value, valid: fn(&T) -> bool)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        match merge_patch(current, patch) {
            Ok(next) => {
                assert!(patch.is_object());
                if valid(&next) {
                    assert_eq!(merge_patch(&next, &json!({})).as_ref(), Ok(&next));
                    let own = serde_json::to_value(&next).expect("serializable");
                    assert_eq!(merge_patch(&next, &own).as_ref(), Ok(&next));
                }
                let merged = reference_merge(&serde_json::to_value(current).expect("ser"), patch);
                let direct: T = serde_json::from_value(merged).expect("same document");
                assert_eq!(direct, next);
            }
            Err(errors) => {
                assert!(!errors.is_empty());
                assert!(errors.iter().all(|e| !e.reason.is_empty()));
                // A single changed key with a scalar or array value is the one to blame. (Keys
                // with a backtick are not: the field is read back from serde's message, which
                // quotes names in backticks; see docs/reliability.md.)
                if let Value::Object(map) = patch
                    && map.len() == 1
                {
                    let (key, value) = map.iter().next().expect("one key");
                    if !value.is_object() && !value.is_null() && !key.contains('`') {
                        assert_eq!(&errors[0].field, key, "{errors:?}");
                    }
                }
            }
        }
    }
    one(&Limits::per_second(100), patch, |l| l.validate().is_ok());
    one(&CircuitBreakerSettings::default(), patch, |b| {
        b.validate().is_empty()
    });
    one(&CacheConfig::default(), patch, |c| c.validate().is_ok());
}

/// One `PATCH` (or dry run) in a sequence sent to one handle.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// The merge-patch body.
    pub(crate) patch: Value,
    /// `?dry_run=true`.
    pub(crate) dry_run: bool,
}

/// A fresh handle receives `steps` in order. Never a panic; a refusal has reasons and leaves
/// `settings()` and `version()` unchanged; a dry run changes nothing and predicts the real apply;
/// an apply stores exactly `change.after`, reports `change.before` as the previous settings and
/// bumps the version by one; settings are always valid and re-applying them is a no-op change.
pub(crate) fn check_apply(target: Target, steps: &[Step]) {
    let c = component(target);
    assert_eq!(valid_settings(target, &c.settings()), Ok(()));
    for step in steps {
        let before = c.settings();
        let version = c.version();
        match c.apply(&step.patch, step.dry_run) {
            Err(errors) => {
                assert!(!errors.is_empty(), "refused without a reason");
                assert!(errors.iter().all(|e| !e.reason.is_empty()), "{errors:?}");
                assert_eq!(c.settings(), before, "a refused patch changed settings");
                assert_eq!(c.version(), version, "a refused patch bumped the version");
            }
            Ok(change) => {
                assert!(step.patch.is_object());
                assert_eq!(change.before, before);
                assert_eq!(valid_settings(target, &change.after), Ok(()), "{change:?}");
                if step.dry_run {
                    assert_eq!(c.settings(), before, "a dry run changed settings");
                    assert_eq!(c.version(), version, "a dry run bumped the version");
                    let real = c.apply(&step.patch, false).expect("the dry run passed");
                    assert_eq!(real, change, "the dry run mispredicted");
                }
                assert_eq!(c.settings(), change.after);
                assert_eq!(c.version(), version + 1);
            }
        }
        let now = c.settings();
        assert_eq!(valid_settings(target, &now), Ok(()));
        let same = c
            .apply(&now, true)
            .expect("current settings are a valid patch");
        assert_eq!((&same.before, &same.after), (&now, &now));
    }
}
