//! A generic view of component settings and stats.
//!
//! Settings and stats are JSON objects whose fields may change from release to release, so
//! nothing here knows a rate limiter from a cache beyond a few well-known names used for
//! nicer columns (`allowed`, `rejected`, `state`, `hits`...). Nested objects are flattened to
//! dotted paths (`window.size`), which is also how an edit names its field.

use palisade::control::{ComponentKind, ComponentSnapshot};
use serde_json::{Map, Value};

/// Stats counters of rate-limit policies shown as per-second rates.
pub const LIMIT_RATE_FIELDS: [&str; 3] = ["allowed", "rejected", "shadow_rejected"];

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

/// Settings shown first, in this order, when present (a rate limit reads "rate per_secs
/// burst mode"); every other field follows in key order.
pub const PREFERRED_ORDER: [&str; 4] = ["rate", "per_secs", "burst", "mode"];

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

/// The columns after the name column for a table of components of one kind.
pub fn columns(kind: ComponentKind, components: &[&ComponentSnapshot]) -> Vec<Column> {
    let settings = setting_paths(components);
    let stats = stat_paths(components);
    let mut cols = Vec::new();
    let setting_cols = settings
        .iter()
        .map(|p| Column::new(p.to_uppercase(), ColumnSource::Setting(p.clone())));
    match kind {
        ComponentKind::Limit => {
            cols.extend(setting_cols);
            for f in LIMIT_RATE_FIELDS {
                if stats.iter().any(|p| p == f) {
                    let title = format!("{}/S", f.replace("_rejected", "").to_uppercase());
                    cols.push(Column::new(title, ColumnSource::Rate(f.to_owned())));
                }
            }
            for p in stats
                .iter()
                .filter(|p| !LIMIT_RATE_FIELDS.contains(&p.as_str()))
            {
                cols.push(Column::new(p.to_uppercase(), ColumnSource::Stat(p.clone())));
            }
        }
        ComponentKind::Breaker => {
            if stats.iter().any(|p| p == "state") {
                cols.push(Column::new("STATE", ColumnSource::BreakerState));
            }
            if stats.iter().any(|p| p == "failure_rate") {
                cols.push(Column::new(
                    "FAIL%",
                    ColumnSource::Stat("failure_rate".into()),
                ));
            }
            for p in stats
                .iter()
                .filter(|p| *p != "state" && *p != "failure_rate")
            {
                cols.push(Column::new(p.to_uppercase(), ColumnSource::Stat(p.clone())));
            }
            cols.extend(setting_cols);
        }
        ComponentKind::Cache => {
            let mut levels = Vec::new();
            for c in components {
                for l in cache_levels(&c.stats) {
                    push_unique(&mut levels, l.name);
                }
            }
            for l in levels {
                let title = if l.is_empty() {
                    "HIT%".to_owned()
                } else {
                    format!("{} HIT%", l.to_uppercase())
                };
                cols.push(Column::new(title, ColumnSource::HitRatio(l)));
            }
            cols.extend(setting_cols);
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

/// The levels of a cache's stats: every member that is an object with scalar fields; when
/// there is none, the stats object itself as one unnamed level.
///
/// ```
/// use serde_json::json;
/// let levels = palisade_top::state::components::cache_levels(
///     &json!({"l1": {"hits": 3, "misses": 1}, "l2": {"hits": 0, "misses": 0}}));
/// assert_eq!(levels[0].hit_ratio(), Some(0.75));
/// assert_eq!(levels[1].hit_ratio(), None);
/// ```
pub fn cache_levels(stats: &Value) -> Vec<CacheLevel> {
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
        .filter(|(_, v)| v.is_object())
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
    fn limit_columns_are_settings_then_rates_then_other_stats() {
        let a = comp(
            ComponentKind::Limit,
            "api",
            json!({"rate": 100, "per_secs": 1, "burst": 20, "mode": "enforce"}),
            json!({"allowed": 5, "rejected": 1, "shadow_rejected": 0, "keys": 3}),
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
                "PER_SECS",
                "BURST",
                "MODE",
                "NEW_FIELD",
                "ALLOWED/S",
                "REJECTED/S",
                "SHADOW/S",
                "KEYS"
            ],
            "new fields follow the preferred ones"
        );
    }

    #[test]
    fn breaker_columns_lead_with_state() {
        let a = comp(
            ComponentKind::Breaker,
            "upstream",
            json!({"failure_threshold": 0.5}),
            json!({"failure_rate": 0.1, "state": "closed", "transitions": 2}),
        );
        let cols = columns(ComponentKind::Breaker, &[&a]);
        assert_eq!(cols[0].source, ColumnSource::BreakerState);
        assert_eq!(cols[1].source, ColumnSource::Stat("failure_rate".into()));
        assert_eq!(
            cols[3].source,
            ColumnSource::Setting("failure_threshold".into())
        );
    }

    #[test]
    fn cache_columns_have_a_hit_ratio_per_level() {
        let a = comp(
            ComponentKind::Cache,
            "users",
            json!({"ttl_secs": 60}),
            json!({"l1": {"hits": 9, "misses": 1, "entries": 4}, "l2": {"hits": 1, "misses": 1}}),
        );
        let cols = columns(ComponentKind::Cache, &[&a]);
        let titles: Vec<_> = cols.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["L1 HIT%", "L2 HIT%", "TTL_SECS"]);
        let flat = comp(
            ComponentKind::Cache,
            "flat",
            json!({}),
            json!({"hits": 1, "misses": 3}),
        );
        let levels = cache_levels(&flat.stats);
        assert_eq!((levels.len(), levels[0].hit_ratio()), (1, Some(0.25)));
    }

    #[test]
    fn non_object_settings_are_tolerated() {
        let a = comp(ComponentKind::Limit, "odd", json!(null), json!([1, 2]));
        assert!(columns(ComponentKind::Limit, &[&a]).is_empty());
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
