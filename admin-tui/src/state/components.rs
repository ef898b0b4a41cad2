//! Component settings and stats, and the curated columns each panel leads with.
//!
//! Each panel shows first what an operator reads first, from the stats each layer reports: a
//! breaker's state, failure and slow-call rates, calls in the window and the time to its next
//! probe; a cache's entries, size against capacity, L1 and L2 hit ratios, L2 health, evictions
//! and loads in flight; a limit's settings, allowed and rejected per second, keys held and store
//! health. Everything else (every setting, every stat) is in the detail pane. Fields a release
//! does not report show as `-`. Nested objects are flattened to dotted paths (`window.size`),
//! which is also how an edit names its field.

use palisade::control::stats::{BreakerStats, CacheStats, ResponseCacheStats};
use palisade::control::{ComponentKind, ComponentSnapshot};
use serde_json::{Map, Value};

/// Stats counters of rate-limit policies shown as per-second rates.
pub const LIMIT_RATE_FIELDS: [&str; 3] = ["allowed", "rejected", "shadow_rejected"];

/// The two-level cache statistics inside a cache's stats: the stats themselves for a
/// `TwoLevelCache`, or their `store` member for an HTTP response cache.
///
/// ```
/// use serde_json::json;
/// use palisade_top::state::components::cache_store;
/// let http = json!({"hits": 5, "store": {"l1": {"hits": 3}}});
/// assert_eq!(cache_store(&http)["l1"]["hits"], 3);
/// ```
pub fn cache_store(stats: &Value) -> &Value {
    match stats.get("store") {
        Some(store) if stats.get("l1").is_none() && store.get("l1").is_some() => store,
        _ => stats,
    }
}

/// A Palisade cache's typed statistics: a two-level cache's, or an HTTP response cache's
/// `store`; `None` for stats of another shape (a custom component), which the panels read
/// field by field instead.
pub fn typed_cache(stats: &Value) -> Option<CacheStats> {
    serde_json::from_value::<CacheStats>(stats.clone())
        .ok()
        .or_else(|| {
            serde_json::from_value::<ResponseCacheStats>(stats.clone())
                .ok()
                .map(|r| r.store)
        })
}

/// A Palisade breaker's typed statistics; `None` for stats of another shape.
pub fn typed_breaker(stats: &Value) -> Option<BreakerStats> {
    serde_json::from_value(stats.clone()).ok()
}

/// How healthy a cache's L2 (Redis) level is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Health {
    /// No L2 configured.
    Off,
    /// Calls succeed and the L2 breaker is closed.
    Ok,
    /// The L2 breaker is probing (half open).
    Probing,
    /// The L2 breaker is open: L2 is skipped, L1 and the origin serve.
    Open,
}

impl L2Health {
    /// From a cache's stats.
    ///
    /// ```
    /// use serde_json::json;
    /// use palisade_top::state::components::L2Health;
    /// assert_eq!(L2Health::of(&json!({"l1": {}, "l2": null})), L2Health::Off);
    /// assert_eq!(L2Health::of(&json!({"l2": {"breaker": "open"}})), L2Health::Open);
    /// ```
    pub fn of(stats: &Value) -> Self {
        if let Some(typed) = typed_cache(stats) {
            return match typed.l2 {
                None => Self::Off,
                Some(l2) => Self::from_breaker(&l2.breaker),
            };
        }
        match cache_store(stats).get("l2") {
            None | Some(Value::Null) => Self::Off,
            Some(l2) => Self::from_breaker(l2.get("breaker").and_then(Value::as_str).unwrap_or("")),
        }
    }

    fn from_breaker(state: &str) -> Self {
        match state {
            "open" => Self::Open,
            "half_open" => Self::Probing,
            _ => Self::Ok,
        }
    }

    /// The word shown.
    pub fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Ok => "ok",
            Self::Probing => "probing",
            Self::Open => "open",
        }
    }
}

/// A breaker's state for display: its `state`, or for a keyed breaker the worst state any
/// key is in with how many keys are in it (`open ×2`).
///
/// ```
/// use serde_json::json;
/// use palisade_top::state::components::breaker_state;
/// assert_eq!(breaker_state(&json!({"state": "closed"})).as_deref(), Some("closed"));
/// let keyed = json!({"keyed": true, "states": {"closed": 5, "open": 2, "half_open": 0}});
/// assert_eq!(breaker_state(&keyed).as_deref(), Some("open ×2"));
/// ```
pub fn breaker_state(stats: &Value) -> Option<String> {
    if let Some(typed) = typed_breaker(stats) {
        return match (&typed.breaker, &typed.keys) {
            (Some(b), _) => Some(b.state.to_string()),
            (None, Some(keys)) => Some(
                keys.states
                    .worst()
                    .map_or_else(|| "closed".to_owned(), |(s, n)| format!("{s} ×{n}")),
            ),
            (None, None) => None,
        };
    }
    if let Some(state) = stats.get("state").and_then(Value::as_str) {
        return Some(state.to_owned());
    }
    let states = stats.get("states")?.as_object()?;
    let count = |s: &str| states.get(s).and_then(Value::as_u64).unwrap_or(0);
    for worst in [
        "forced_open",
        "open",
        "half_open",
        "disabled",
        "forced_closed",
    ] {
        if count(worst) > 0 {
            return Some(format!("{worst} ×{}", count(worst)));
        }
    }
    Some("closed".to_owned())
}

/// Scalar leaves of a JSON object as `(dotted path, value)`, in key order (serde_json keeps
/// object keys sorted). Arrays are leaves (shown as compact JSON, not editable); a non-object
/// yields nothing.
///
/// ```
/// use serde_json::json;
/// let v = json!({"rate": 5, "window": {"size": 10, "unit": "s"}, "tags": [1]});
/// let paths: Vec<_> = palisade_top::state::components::flatten(&v).into_iter().map(|(p, _)| p).collect();
/// assert_eq!(paths, ["rate", "tags", "window.size", "window.unit"]);
/// ```
pub fn flatten(v: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    if let Value::Object(map) = v {
        flatten_into(map, "", &mut out);
    }
    out
}

fn flatten_into<'a>(map: &'a Map<String, Value>, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            // An HDR histogram's encoding is for merging, not for reading.
            Value::String(_) if k == "hdr" => {}
            Value::Object(inner) => flatten_into(inner, &path, out),
            other => out.push((path, other)),
        }
    }
}

/// Numeric leaves of a JSON object as `(dotted path, f64)`.
pub fn numeric_fields(v: &Value) -> Vec<(String, f64)> {
    flatten(v)
        .into_iter()
        .filter_map(|(p, v)| v.as_f64().map(|f| (p, f)))
        .collect()
}

/// Looks up a dotted path.
///
/// ```
/// let v = serde_json::json!({"l1": {"hits": 3}});
/// assert_eq!(palisade_top::state::components::lookup(&v, "l1.hits"), Some(&serde_json::json!(3)));
/// ```
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.as_object()?.get(k))
}

/// The merge-patch that sets one dotted path.
///
/// ```
/// use serde_json::json;
/// use palisade_top::state::components::patch_for;
/// assert_eq!(patch_for("burst", json!(5)), json!({"burst": 5}));
/// assert_eq!(patch_for("window.size", json!(10)), json!({"window": {"size": 10}}));
/// ```
pub fn patch_for(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |acc, key| {
        let mut m = Map::new();
        m.insert(key.to_owned(), acc);
        Value::Object(m)
    })
}

/// Applies a JSON merge-patch (RFC 7396) in place: objects merge recursively, `null` removes
/// a member, anything else replaces.
///
/// ```
/// use serde_json::json;
/// let mut v = json!({"rate": 1, "window": {"size": 2, "unit": "s"}});
/// palisade_top::state::components::apply_merge_patch(&mut v, &json!({"window": {"size": 3, "unit": null}}));
/// assert_eq!(v, json!({"rate": 1, "window": {"size": 3}}));
/// ```
pub fn apply_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in changes {
        if v.is_null() {
            map.remove(k);
        } else {
            apply_merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Parses what the operator typed into a value of the same JSON type as the current one.
/// Numbers stay numbers (integers when written as integers), booleans booleans, strings
/// strings; for anything else the text is read as JSON, or taken as a string.
///
/// ```
/// use serde_json::json;
/// use palisade_top::state::components::parse_input;
/// assert_eq!(parse_input(&json!(20), " 50 "), Ok(json!(50)));
/// assert_eq!(parse_input(&json!(20), "2.5"), Ok(json!(2.5)));
/// assert!(parse_input(&json!(20), "fifty").is_err());
/// assert_eq!(parse_input(&json!("enforce"), "shadow"), Ok(json!("shadow")));
/// assert_eq!(parse_input(&json!(true), "false"), Ok(json!(false)));
/// ```
pub fn parse_input(current: &Value, input: &str) -> Result<Value, String> {
    let text = input.trim();
    match current {
        Value::Number(_) => {
            if let Ok(i) = text.parse::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = text.parse::<u64>() {
                Ok(Value::from(u))
            } else {
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Ok(Value::from(f)),
                    _ => Err(format!("`{text}` is not a number")),
                }
            }
        }
        Value::Bool(_) => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not true or false")),
        },
        Value::String(_) => {
            if text.is_empty() {
                Err("a value is required".into())
            } else {
                Ok(Value::String(text.to_owned()))
            }
        }
        _ => Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))),
    }
}

/// What a table column shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// A settings leaf (editable when scalar).
    Setting(String),
    /// A stats leaf, shown as is.
    Stat(String),
    /// A stats counter, shown as a per-second rate.
    Rate(String),
    /// A breaker's `state` stat, shown with a glyph and colour.
    BreakerState,
    /// The hit ratio of one cache level (`hits / (hits + misses)`), by level name; the empty
    /// name means stats without levels.
    HitRatio(String),
    /// A stats leaf holding a percentage (0–100), e.g. a breaker's failure rate.
    Percent(String),
    /// A stats leaf holding milliseconds, shown as a duration (time to the next probe).
    Millis(String),
    /// A leaf of a cache's two-level statistics ([`cache_store`]), shown as is.
    CacheStat(String),
    /// A cache's weighted size over its capacity.
    CacheSize,
    /// A cache's [`L2Health`].
    L2Health,
    /// A rate limit's store and its health (errors, fallbacks).
    StoreHealth,
}

/// One column of a component table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header text.
    pub title: String,
    /// Where the cell comes from.
    pub source: ColumnSource,
}

impl Column {
    fn new(title: impl Into<String>, source: ColumnSource) -> Self {
        Self {
            title: title.into(),
            source,
        }
    }
}

/// Pushes `item` unless already present (keeps first-appearance order).
fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Settings shown first, in this order, when present (a rate limit reads "rate per burst
/// mode"); every other field follows in key order.
pub const PREFERRED_ORDER: [&str; 4] = ["rate", "per", "burst", "mode"];

/// The scalar settings paths over all components (the editable fields): the
/// [`PREFERRED_ORDER`] ones first, then the rest in first-seen order.
pub fn setting_paths(components: &[&ComponentSnapshot]) -> Vec<String> {
    let mut paths = Vec::new();
    for c in components {
        for (p, v) in flatten(&c.settings) {
            if !v.is_array() {
                push_unique(&mut paths, p);
            }
        }
    }
    let rank = |p: &String| {
        PREFERRED_ORDER
            .iter()
            .position(|f| f == p)
            .unwrap_or(PREFERRED_ORDER.len())
    };
    paths.sort_by_key(rank);
    paths
}

fn stat_paths(components: &[&ComponentSnapshot]) -> Vec<String> {
    let mut paths = Vec::new();
    for c in components {
        for (p, v) in flatten(&c.stats) {
            if !v.is_array() {
                push_unique(&mut paths, p);
            }
        }
    }
    paths
}

/// The columns after the name column for a table of components of one kind: what an
/// operator reads first. Limits keep their settings as (editable) columns; breakers and caches
/// show their settings in the detail pane, where the selected field is edited.
pub fn columns(kind: ComponentKind, components: &[&ComponentSnapshot]) -> Vec<Column> {
    let stats = stat_paths(components);
    let has = |p: &str| stats.iter().any(|s| s == p);
    let mut cols = Vec::new();
    match kind {
        ComponentKind::Limit => {
            cols.extend(
                setting_paths(components)
                    .into_iter()
                    .map(|p| Column::new(p.to_uppercase(), ColumnSource::Setting(p))),
            );
            for f in LIMIT_RATE_FIELDS {
                if has(f) {
                    let title = format!("{}/S", f.replace("_rejected", "").to_uppercase());
                    cols.push(Column::new(title, ColumnSource::Rate(f.to_owned())));
                }
            }
            cols.push(Column::new("KEYS", ColumnSource::Stat("keys".into())));
            cols.push(Column::new("STORE", ColumnSource::StoreHealth));
            cols.push(Column::new(
                "FALLBACKS",
                ColumnSource::Stat("fallbacks".into()),
            ));
        }
        ComponentKind::Breaker => {
            cols.push(Column::new("STATE", ColumnSource::BreakerState));
            cols.push(Column::new(
                "FAIL%",
                ColumnSource::Percent("window.failure_rate".into()),
            ));
            cols.push(Column::new(
                "SLOW%",
                ColumnSource::Percent("window.slow_call_rate".into()),
            ));
            cols.push(Column::new(
                "CALLS",
                ColumnSource::Stat("window.calls".into()),
            ));
            cols.push(Column::new(
                "NEXT PROBE",
                ColumnSource::Millis("retry_after_ms".into()),
            ));
            cols.push(Column::new(
                "REJECTED/S",
                ColumnSource::Rate("rejected".into()),
            ));
            cols.push(Column::new(
                "TRANSITIONS",
                ColumnSource::Stat("transitions".into()),
            ));
        }
        ComponentKind::Cache => {
            cols.push(Column::new(
                "ENTRIES",
                ColumnSource::CacheStat("l1.entries".into()),
            ));
            cols.push(Column::new("SIZE", ColumnSource::CacheSize));
            cols.push(Column::new("L1 HIT%", ColumnSource::HitRatio("l1".into())));
            cols.push(Column::new("L2 HIT%", ColumnSource::HitRatio("l2".into())));
            cols.push(Column::new("L2", ColumnSource::L2Health));
            cols.push(Column::new(
                "EVICTIONS",
                ColumnSource::CacheStat("l1.evictions".into()),
            ));
            cols.push(Column::new(
                "LOADING",
                ColumnSource::CacheStat("loads.in_flight".into()),
            ));
        }
    }
    cols
}

/// One cache level's stats.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheLevel {
    /// The level's key in the stats object (`l1`, `l2`), or empty for flat stats.
    pub name: String,
    /// Hits, if reported.
    pub hits: Option<f64>,
    /// Misses, if reported.
    pub misses: Option<f64>,
    /// Every scalar field of the level, in order.
    pub fields: Vec<(String, Value)>,
}

impl CacheLevel {
    /// `hits / (hits + misses)`; `None` without both or without any lookup yet.
    pub fn hit_ratio(&self) -> Option<f64> {
        let (h, m) = (self.hits?, self.misses?);
        (h + m > 0.0).then(|| h / (h + m))
    }
}

/// The levels of a cache's stats ([`cache_store`]): every member that is an object with
/// `hits`; when there is none, the stats object itself as one unnamed level.
///
/// ```
/// use serde_json::json;
/// let levels = palisade_top::state::components::cache_levels(
///     &json!({"l1": {"hits": 3, "misses": 1}, "l2": {"hits": 0, "misses": 0}}));
/// assert_eq!(levels[0].hit_ratio(), Some(0.75));
/// assert_eq!(levels[1].hit_ratio(), None);
/// ```
pub fn cache_levels(stats: &Value) -> Vec<CacheLevel> {
    let stats = cache_store(stats);
    let Value::Object(map) = stats else {
        return Vec::new();
    };
    let level = |name: String, obj: &Value| CacheLevel {
        name,
        hits: obj.get("hits").and_then(Value::as_f64),
        misses: obj.get("misses").and_then(Value::as_f64),
        fields: flatten(obj)
            .into_iter()
            .map(|(p, v)| (p, v.clone()))
            .collect(),
    };
    let nested: Vec<CacheLevel> = map
        .iter()
        .filter(|(_, v)| v.get("hits").is_some())
        .map(|(k, v)| level(k.clone(), v))
        .collect();
    if nested.is_empty() {
        vec![level(String::new(), stats)]
    } else {
        nested
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comp(kind: ComponentKind, name: &str, settings: Value, stats: Value) -> ComponentSnapshot {
        ComponentSnapshot {
            name: name.into(),
            kind,
            version: 1,
            settings,
            stats,
            actions: vec![],
        }
    }

    #[test]
    fn limit_columns_are_settings_then_rates_then_keys_and_store() {
        let a = comp(
            ComponentKind::Limit,
            "api",
            json!({"rate": 100, "per": "1s", "burst": 20, "mode": "enforce"}),
            json!({"allowed": 5, "rejected": 1, "shadow_rejected": 0, "keys": 3, "store": "shm", "purged": 0}),
        );
        let b = comp(
            ComponentKind::Limit,
            "login",
            json!({"rate": 5, "new_field": true}),
            json!({}),
        );
        let titles: Vec<_> = columns(ComponentKind::Limit, &[&a, &b])
            .into_iter()
            .map(|c| c.title)
            .collect();
        assert_eq!(
            titles,
            [
                "RATE",
                "PER",
                "BURST",
                "MODE",
                "NEW_FIELD",
                "ALLOWED/S",
                "REJECTED/S",
                "SHADOW/S",
                "KEYS",
                "STORE",
                "FALLBACKS"
            ],
            "new fields follow the preferred ones; other stats stay in the detail pane"
        );
    }

    #[test]
    fn breaker_columns_lead_with_state_and_leave_settings_to_the_detail() {
        let a = comp(
            ComponentKind::Breaker,
            "upstream",
            json!({"failure_rate_threshold": 50.0}),
            json!({"state": "closed", "window": {"failure_rate": 10.0}, "transitions": 2}),
        );
        let cols = columns(ComponentKind::Breaker, &[&a]);
        assert_eq!(cols[0].source, ColumnSource::BreakerState);
        let titles: Vec<_> = cols.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "STATE",
                "FAIL%",
                "SLOW%",
                "CALLS",
                "NEXT PROBE",
                "REJECTED/S",
                "TRANSITIONS"
            ]
        );
        assert!(
            !cols
                .iter()
                .any(|c| matches!(c.source, ColumnSource::Setting(_)))
        );
    }

    #[test]
    fn cache_columns_show_size_hit_ratios_and_l2_health() {
        let a = comp(
            ComponentKind::Cache,
            "users",
            json!({"ttl_ms": 60_000}),
            json!({"l1": {"hits": 9, "misses": 1, "entries": 4}, "l2": {"hits": 1, "misses": 1, "breaker": "open"}, "loads": {"total": 1}}),
        );
        let titles: Vec<_> = columns(ComponentKind::Cache, &[&a])
            .into_iter()
            .map(|c| c.title)
            .collect();
        assert_eq!(
            titles,
            [
                "ENTRIES",
                "SIZE",
                "L1 HIT%",
                "L2 HIT%",
                "L2",
                "EVICTIONS",
                "LOADING"
            ]
        );
        let levels = cache_levels(&a.stats);
        let names: Vec<_> = levels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["l1", "l2"], "loads is no cache level");
        assert_eq!(L2Health::of(&a.stats), L2Health::Open);
        // An HTTP response cache nests the two-level stats under `store`.
        let http =
            json!({"hits": 2, "misses": 2, "store": {"l1": {"hits": 3, "misses": 1}, "l2": null}});
        assert_eq!(cache_levels(&http)[0].hit_ratio(), Some(0.75));
        assert_eq!(L2Health::of(&http), L2Health::Off);
        let flat = json!({"hits": 1, "misses": 3});
        let levels = cache_levels(&flat);
        assert_eq!((levels.len(), levels[0].hit_ratio()), (1, Some(0.25)));
    }

    #[test]
    fn palisade_stats_are_read_typed() {
        use palisade::control::stats::{
            BreakerState, BreakerStats, CallCounts, KeyedStats, StateCounts,
        };
        let mut states = StateCounts::default();
        states.add(BreakerState::HalfOpen);
        states.add(BreakerState::HalfOpen);
        states.add(BreakerState::Closed);
        let keyed = BreakerStats {
            keyed: true,
            breaker: None,
            keys: Some(KeyedStats {
                keys: 3,
                max_keys: 10,
                states,
                ..KeyedStats::default()
            }),
            calls: CallCounts::default(),
            timeouts: 0,
            rejected: 0,
            stale: 0,
            transitions: 2,
        };
        let v = serde_json::to_value(&keyed).unwrap();
        assert_eq!(breaker_state(&v).as_deref(), Some("half_open ×2"));
        let latency =
            serde_json::to_value(palisade::control::stats::LatencyStats::default()).unwrap();
        let cache = json!({
            "l1": {"hits": 3, "misses": 1, "entries": 2, "weighted_bytes": 10,
                   "capacity_bytes": 100, "evictions": 0, "expirations": 0},
            "l2": {"hits": 0, "misses": 0, "corrupt": 0, "errors": 1, "timeouts": 0,
                   "skipped_open": 0, "writes": 0, "oversize": 0, "breaker": "half_open",
                   "pending_invalidations": 0,
                   "backplane": {"enabled": false, "connected": false, "received": 0,
                                 "published": 0, "reconnects": 0}},
            "loads": {"total": 1, "ok": 1, "errors": 0, "timeouts": 0, "coalesced": 0,
                      "bypassed": 0, "latency_mean_ms": 1.0, "latency_max_ms": 1.0,
                      "latency": latency},
            "negative_hits": 0, "stale_served": 0, "fail_safe": 0, "soft_timeouts": 0
        });
        let typed = typed_cache(&cache).expect("a two-level cache's stats");
        assert_eq!(typed.l1_hit_ratio(), Some(0.75));
        assert_eq!(L2Health::of(&cache), L2Health::Probing);
        assert!(
            !flatten(&cache).iter().any(|(p, _)| p.ends_with("hdr")),
            "histogram encodings are not shown"
        );
    }

    #[test]
    fn non_object_settings_are_tolerated() {
        let a = comp(ComponentKind::Limit, "odd", json!(null), json!([1, 2]));
        assert!(
            !columns(ComponentKind::Limit, &[&a])
                .iter()
                .any(|c| matches!(c.source, ColumnSource::Setting(_)))
        );
        assert!(cache_levels(&json!("x")).is_empty());
    }

    #[test]
    fn parse_input_keeps_unknown_types_as_json_or_text() {
        assert_eq!(parse_input(&Value::Null, "[1,2]"), Ok(json!([1, 2])));
        assert_eq!(parse_input(&Value::Null, "abc"), Ok(json!("abc")));
        assert!(parse_input(&json!("x"), "  ").is_err());
        assert!(parse_input(&json!(1), "inf").is_err());
    }
}
