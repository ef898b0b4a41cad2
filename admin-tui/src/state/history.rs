//! Rates derived from counter deltas between two snapshots, and the history of samples the
//! charts are drawn from.
//!
//! Counters in the snapshot are monotonic totals; a rate is `(now - before) / Δt` with `Δt`
//! from the snapshots' own `taken_at_ms`, so a late or bunched delivery does not distort it.
//! A counter that went *down* (the server restarted) gives no rate rather than a negative one.

use std::collections::{HashMap, VecDeque};

use palisade::control::ComponentKind;
use palisade::control::ComponentSnapshot;
use palisade::control::model::{LatencyWindow, Snapshot, StatusCounts};

use super::components::numeric_fields;

/// Per-second rate of a monotonic counter between two readings `dt_ms` apart; `None` when the
/// interval is empty or the counter went backwards (a restart).
///
/// ```
/// use palisade_top::state::history::counter_rate;
/// assert_eq!(counter_rate(100, 350, 500), Some(500.0));
/// assert_eq!(counter_rate(100, 100, 1000), Some(0.0));
/// assert_eq!(counter_rate(100, 5, 1000), None);
/// assert_eq!(counter_rate(1, 2, 0), None);
/// ```
pub fn counter_rate(before: u64, now: u64, dt_ms: u64) -> Option<f64> {
    if dt_ms == 0 || now < before {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "rates are displayed, not accumulated"
    )]
    Some((now - before) as f64 * 1000.0 / dt_ms as f64)
}

/// Same as [`counter_rate`] for counters that arrive as JSON numbers (possibly floats).
pub fn counter_rate_f64(before: f64, now: f64, dt_ms: u64) -> Option<f64> {
    if dt_ms == 0 || now < before || !now.is_finite() || !before.is_finite() {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "rates are displayed, not accumulated"
    )]
    Some((now - before) * 1000.0 / dt_ms as f64)
}

/// Status classes in display order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The counts of [`StatusCounts`] in [`STATUS_CLASSES`] order.
pub fn status_array(s: &StatusCounts) -> [u64; 5] {
    [
        s.informational,
        s.success,
        s.redirection,
        s.client_error,
        s.server_error,
    ]
}

/// Rates derived from the latest two comparable snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    /// Milliseconds between the two snapshots (server clock); 0 when there is no baseline.
    pub dt_ms: u64,
    /// Completed requests per second, all workers.
    pub rps: Option<f64>,
    /// Responses per second by status class ([`STATUS_CLASSES`] order).
    pub status_rates: Option<[f64; 5]>,
    /// Requests per second per worker, keyed by `(id, pid)` so a replaced process starts over.
    pub worker_rps: HashMap<(u32, u32), f64>,
    /// Per-second rates of every numeric stats field of every component, keyed by kind and
    /// name, then by dotted field path (e.g. `allowed`, `l1.hits`).
    pub component_rates: HashMap<(ComponentKind, String), HashMap<String, f64>>,
}

impl Derived {
    /// Rates between `before` and `now`; empty when there is no comparable baseline (first
    /// snapshot, a different server process, or time did not advance).
    pub fn between(before: Option<&Snapshot>, now: &Snapshot) -> Self {
        let Some(before) = before else {
            return Self::default();
        };
        if before.server.pid != now.server.pid || now.taken_at_ms <= before.taken_at_ms {
            return Self::default();
        }
        let dt = now.taken_at_ms - before.taken_at_ms;
        let rps = counter_rate(
            before.traffic.requests_total,
            now.traffic.requests_total,
            dt,
        );
        let (b, n) = (
            status_array(&before.traffic.status),
            status_array(&now.traffic.status),
        );
        let mut status = [0.0; 5];
        let mut status_ok = true;
        for i in 0..5 {
            match counter_rate(b[i], n[i], dt) {
                Some(r) => status[i] = r,
                None => status_ok = false,
            }
        }
        let worker_rps = now
            .workers
            .iter()
            .filter_map(|w| {
                let old = before
                    .workers
                    .iter()
                    .find(|o| o.id == w.id && o.pid == w.pid)?;
                Some(((w.id, w.pid), counter_rate(old.requests, w.requests, dt)?))
            })
            .collect();
        let mut component_rates = HashMap::new();
        for (old_list, new_list) in [
            (&before.limits, &now.limits),
            (&before.breakers, &now.breakers),
            (&before.caches, &now.caches),
        ] {
            for c in new_list {
                let Some(old) = old_list.iter().find(|o| o.name == c.name) else {
                    continue;
                };
                let rates = component_stat_rates(old, c, dt);
                if !rates.is_empty() {
                    component_rates.insert((c.kind, c.name.clone()), rates);
                }
            }
        }
        Self {
            dt_ms: dt,
            rps,
            status_rates: status_ok.then_some(status),
            worker_rps,
            component_rates,
        }
    }

    /// The rate of a component's stats field, if known.
    pub fn component_rate(&self, kind: ComponentKind, name: &str, path: &str) -> Option<f64> {
        self.component_rates
            .get(&(kind, name.to_owned()))
            .and_then(|m| m.get(path))
            .copied()
    }
}

fn component_stat_rates(
    old: &ComponentSnapshot,
    new: &ComponentSnapshot,
    dt: u64,
) -> HashMap<String, f64> {
    let before: HashMap<String, f64> = numeric_fields(&old.stats).into_iter().collect();
    numeric_fields(&new.stats)
        .into_iter()
        .filter_map(|(path, v)| {
            let r = counter_rate_f64(*before.get(&path)?, v, dt)?;
            Some((path, r))
        })
        .collect()
}

/// One point of history.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the dashboard received it (local clock, ms since the epoch).
    pub at_ms: u64,
    /// Requests per second.
    pub rps: Option<f64>,
    /// Responses per second by status class.
    pub status_rates: Option<[f64; 5]>,
    /// The shortest latency window with samples.
    pub latency: Option<LatencyWindow>,
}

impl Sample {
    /// The sample for a snapshot received at `at_ms` with its derived rates.
    pub fn new(at_ms: u64, snapshot: &Snapshot, derived: &Derived) -> Self {
        Self {
            at_ms,
            rps: derived.rps,
            status_rates: derived.status_rates,
            latency: shortest_window(&snapshot.traffic.latency).cloned(),
        }
    }
}

/// The shortest latency window that has samples (the most responsive one).
pub fn shortest_window(windows: &[LatencyWindow]) -> Option<&LatencyWindow> {
    windows
        .iter()
        .filter(|w| w.count > 0)
        .min_by_key(|w| w.window_secs)
}

/// A bounded history of samples, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    samples: VecDeque<Sample>,
    span_ms: u64,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::new(15 * 60 * 1000, 3600)
    }
}

impl History {
    /// Keeps samples at most `span_ms` older than the newest, and at most `capacity`.
    pub fn new(span_ms: u64, capacity: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            span_ms,
            capacity: capacity.max(1),
        }
    }

    /// Appends a sample and drops what fell out of the span or capacity.
    pub fn push(&mut self, sample: Sample) {
        let newest = sample.at_ms;
        self.samples.push_back(sample);
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|s| newest.saturating_sub(s.at_ms) > self.span_ms)
        {
            self.samples.pop_front();
        }
    }

    /// All samples, oldest first.
    pub fn samples(&self) -> impl DoubleEndedIterator<Item = &Sample> + ExactSizeIterator {
        self.samples.iter()
    }

    /// Samples not older than `span_ms` before `now_ms`.
    pub fn since(&self, now_ms: u64, span_ms: u64) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| now_ms.saturating_sub(s.at_ms) <= span_ms)
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// No samples yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }
}
