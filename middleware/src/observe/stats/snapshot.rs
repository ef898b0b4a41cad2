//! The serializable, mergeable form of live statistics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::histogram::{LatencyHistogram, MergeError};
use crate::control::model::{LatencyWindow, StatusCounts};

/// The format version of [`StatsSnapshot`]; bumped on incompatible changes.
pub const STATS_SNAPSHOT_VERSION: u32 = 1;

/// Request statistics over some interval, in a compact, versioned form that *merges exactly*:
/// counters add, latency histograms add bucket by bucket.
///
/// Produced by [`StatsRecorder::take_delta`](super::StatsRecorder::take_delta) (since the last
/// delta, for heartbeats) and [`StatsRecorder::snapshot`](super::StatsRecorder::snapshot) (since
/// start). A supervisor merges its workers' snapshots with [`merge`](Self::merge) or feeds deltas
/// into its own recorder with [`StatsRecorder::absorb`](super::StatsRecorder::absorb).
///
/// ```
/// use palisade::observe::{StatsSnapshot, LatencyHistogram};
/// use std::time::Duration;
///
/// let mut a = StatsSnapshot::default();
/// a.record("/users/{id}", 200, Duration::from_millis(3));
/// let mut b = StatsSnapshot::default();
/// b.record("/users/{id}", 503, Duration::from_millis(40));
///
/// let json = serde_json::to_string(&b).unwrap();
/// let b: StatsSnapshot = serde_json::from_str(&json).unwrap();
/// a.merge(&b).unwrap();
/// assert_eq!(a.requests(), 2);
/// assert_eq!(a.status.server_error, 1);
/// // Within HDR precision (3 significant digits).
/// let max = a.latency.max().as_secs_f64();
/// assert!((max - 0.040).abs() <= 0.040 * 1e-3);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// [`STATS_SNAPSHOT_VERSION`] of the producer.
    #[serde(rename = "v")]
    pub version: u32,
    /// Requests in flight when the snapshot was taken (a gauge: merging sums it, which is the
    /// total over workers when each snapshot comes from a different worker).
    #[serde(default)]
    pub in_flight: u64,
    /// Completed requests by status class.
    pub status: StatusCounts,
    /// Completed requests by route template and status class (bounded; the overflow is counted
    /// under `_other`).
    #[serde(default)]
    pub routes: BTreeMap<String, StatusCounts>,
    /// Latencies of the completed requests, microseconds.
    pub latency: LatencyHistogram,
}

impl Default for StatsSnapshot {
    fn default() -> Self {
        Self {
            version: STATS_SNAPSHOT_VERSION,
            in_flight: 0,
            status: StatusCounts::default(),
            routes: BTreeMap::new(),
            latency: LatencyHistogram::new(),
        }
    }
}

impl StatsSnapshot {
    /// Completed requests (the sum of the status classes).
    pub fn requests(&self) -> u64 {
        self.status.total()
    }

    /// Records one completed request directly into this snapshot (no route bound applies).
    pub fn record(&mut self, route: &str, status: u16, latency: Duration) {
        self.status.record(status);
        self.routes
            .entry(route.to_owned())
            .or_default()
            .record(status);
        self.latency.record(latency);
    }

    /// Adds `other` into `self`: counters and in-flight sum, histograms add.
    pub fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
        if other.version != self.version {
            return Err(MergeError::Version {
                ours: self.version,
                theirs: other.version,
            });
        }
        self.latency.add(&other.latency)?;
        self.in_flight += other.in_flight;
        self.status.add(&other.status);
        for (route, counts) in &other.routes {
            self.routes.entry(route.clone()).or_default().add(counts);
        }
        Ok(())
    }

    /// Latency percentiles of this snapshot, labelled as a `window_secs` window.
    pub fn latency_window(&self, window_secs: u64) -> LatencyWindow {
        self.latency.window(window_secs)
    }
}
