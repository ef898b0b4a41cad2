//! Combining one component's statistics from several worker processes.
//!
//! Each component's statistics declare how their fields combine ([`Stats::merge_rules`]):
//! counters add up, a rate keeps the worst worker's, a store shared by all workers (a
//! shared-memory zone) reports the same zone-wide numbers in every worker and is counted once,
//! a state keeps the most severe, latency histograms add exactly. Fields a component does not
//! declare follow [`Merge::Default`].
//!
//! [`Stats::merge_rules`]: super::Stats::merge_rules

use serde_json::Value;

use super::stats::LatencyStats;

/// How one statistics field combines across worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Merge {
    /// Integers add up (counters); other numbers keep the largest; strings that differ are
    /// joined with `/`; objects merge field by field with these same rules.
    Default,
    /// Numbers add up.
    Sum,
    /// The largest number (a rate, a latency: the worst worker's).
    Max,
    /// The smallest number (the earliest deadline, e.g. the next probe).
    Min,
    /// The same value in every worker (a zone-wide figure): taken once, from the first report.
    Once,
    /// Strings ranked by severity, most severe first; the most severe reported wins (a state).
    Worst(&'static [&'static str]),
    /// A [`LatencyStats`] object: the HDR histograms (`hdr`) add bucket by bucket and the
    /// summary (count, mean, percentiles, max) is recomputed from the sum — an exact merge,
    /// never a max or an average of percentiles. A report that does not decode is skipped.
    Histogram,
}

/// One declared field: a dotted path into the stats object and its rule.
pub type FieldMerge = (&'static str, Merge);

/// Merges the statistics `reports` (one per worker) by the declared `rules`; `None` without
/// reports.
///
/// ```
/// use palisade::control::merge::{Merge, merge_stats};
/// use serde_json::json;
/// let a = json!({"allowed": 3, "keys": 10, "state": "closed", "window": {"rate": 5.0}});
/// let b = json!({"allowed": 4, "keys": 10, "state": "open", "window": {"rate": 20.0}});
/// let rules = [("keys", Merge::Once), ("state", Merge::Worst(&["open", "closed"]))];
/// let merged = merge_stats(&[&a, &b], &rules).unwrap();
/// assert_eq!(merged, json!({"allowed": 7, "keys": 10, "state": "open", "window": {"rate": 20.0}}));
/// ```
pub fn merge_stats(reports: &[&Value], rules: &[FieldMerge]) -> Option<Value> {
    let (first, rest) = reports.split_first()?;
    let mut acc = (*first).clone();
    for other in rest {
        merge_into(&mut acc, other, "", rules);
    }
    Some(acc)
}

fn rule_for(path: &str, rules: &[FieldMerge]) -> Merge {
    rules
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(Merge::Default, |(_, m)| *m)
}

fn merge_into(acc: &mut Value, other: &Value, path: &str, rules: &[FieldMerge]) {
    let rule = rule_for(path, rules);
    match (rule, &mut *acc, other) {
        (Merge::Once, _, _) => {}
        (Merge::Histogram, slot, other) => merge_histograms(slot, other),
        (_, Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get_mut(k) {
                    Some(existing) => merge_into(existing, v, &child, rules),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (_, slot @ Value::Null, v) => *slot = v.clone(),
        (Merge::Worst(order), Value::String(a), Value::String(b)) => {
            let rank = |s: &str| order.iter().position(|o| *o == s).unwrap_or(order.len());
            if rank(b) < rank(a) {
                a.clone_from(b);
            }
        }
        (rule, Value::Number(a), Value::Number(b)) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            let sum = |a: &serde_json::Number| match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => Some(x.saturating_add(y).into()),
                _ => serde_json::Number::from_f64(x + y),
            };
            let pick = match rule {
                Merge::Sum => sum(a),
                Merge::Max => (y > x).then(|| b.clone()),
                Merge::Min => (y < x).then(|| b.clone()),
                _ if a.is_u64() && b.is_u64() => sum(a),
                _ => (y > x).then(|| b.clone()),
            };
            if let Some(n) = pick {
                *a = n;
            }
        }
        (Merge::Default, Value::String(a), Value::String(b))
            if !a.split('/').any(|part| part == b) =>
        {
            a.push('/');
            a.push_str(b);
        }
        _ => {}
    }
}

fn merge_histograms(acc: &mut Value, other: &Value) {
    let decode = |v: &Value| serde_json::from_value::<LatencyStats>(v.clone()).ok();
    match (decode(acc), decode(other)) {
        (Some(a), Some(b)) => {
            let mut sum = a.hdr;
            let merged = sum
                .add(&b.hdr)
                .ok()
                .and_then(|()| serde_json::to_value(LatencyStats::from_histogram(sum)).ok());
            if let Some(v) = merged {
                *acc = v;
            }
        }
        (None, Some(_)) => *acc = other.clone(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_rules_sum_counters_and_keep_the_worst_rate() {
        let a = json!({"allowed": 3, "rate": 0.25, "state": "closed", "l1": {"hits": 1}});
        let b = json!({"allowed": 4, "rate": 0.5, "state": "open", "l1": {"hits": 2}, "x": 1});
        let c = json!({"state": "closed"});
        assert_eq!(
            merge_stats(&[&a, &b, &c], &[]).unwrap(),
            json!({"allowed": 7, "rate": 0.5, "state": "closed/open", "l1": {"hits": 3}, "x": 1})
        );
        assert_eq!(merge_stats(&[], &[]), None);
    }

    #[test]
    fn declared_rules_apply_by_dotted_path() {
        let a = json!({"zone": {"keys": 5}, "next_ms": 900, "l2": null, "w": {"rate": 1.5}});
        let b = json!({"zone": {"keys": 5}, "next_ms": 100, "l2": {"hits": 1}, "w": {"rate": 0.5}});
        let rules = [
            ("zone", Merge::Once),
            ("next_ms", Merge::Min),
            ("w.rate", Merge::Sum),
        ];
        assert_eq!(
            merge_stats(&[&a, &b], &rules).unwrap(),
            json!({"zone": {"keys": 5}, "next_ms": 100, "l2": {"hits": 1}, "w": {"rate": 2.0}})
        );
    }

    #[test]
    fn histograms_merge_exactly_where_max_of_percentiles_would_not() {
        use crate::control::histogram::LatencyHistogram;
        use std::time::Duration;
        // Worker A: 98 fast loads; worker B: 2 slow ones. The true p99 over both is slow; the
        // p50 stays fast. A max of the workers' p50 would say 500 ms.
        let report = |ms: u64, n: usize| {
            let mut h = LatencyHistogram::new();
            for _ in 0..n {
                h.record(Duration::from_millis(ms));
            }
            json!({"loads": {"total": n, "latency": LatencyStats::from_histogram(h)}})
        };
        let (a, b) = (report(1, 98), report(500, 2));
        let rules = [("loads.latency", Merge::Histogram)];
        let merged = merge_stats(&[&a, &b], &rules).unwrap();
        let latency: LatencyStats =
            serde_json::from_value(merged["loads"]["latency"].clone()).unwrap();
        assert_eq!(
            (latency.count, merged["loads"]["total"].as_u64()),
            (100, Some(100))
        );
        assert!((latency.p50_ms - 1.0).abs() < 0.01, "{latency:?}");
        assert!((latency.p99_ms - 500.0).abs() < 0.5, "{latency:?}");
        assert!(
            (latency.mean_ms - (98.0 + 1000.0) / 100.0).abs() < 0.05,
            "{latency:?}"
        );
        let mut both = LatencyHistogram::new();
        both.add(
            &serde_json::from_value::<LatencyStats>(a["loads"]["latency"].clone())
                .unwrap()
                .hdr,
        )
        .unwrap();
        both.add(
            &serde_json::from_value::<LatencyStats>(b["loads"]["latency"].clone())
                .unwrap()
                .hdr,
        )
        .unwrap();
        assert_eq!(latency.hdr, both, "bucket-by-bucket sum");
        // An undecodable report is skipped, not mixed in.
        let broken = json!({"loads": {"total": 1, "latency": {"hdr": "not base64!"}}});
        let merged = merge_stats(&[&a, &broken], &rules).unwrap();
        assert_eq!(merged["loads"]["latency"]["count"], 98);
    }
}
