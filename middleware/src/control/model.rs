//! The JSON model of the admin API, shared by the admin router, the reference server's
//! supervisor and `palisade-top`. One model everywhere: a library user's admin endpoint and the
//! reference server's look the same to the dashboard.
//!
//! Counters are monotonic totals; readers derive rates from two snapshots (`seq` and
//! `taken_at_ms` tell them how far apart). Latency percentiles come from merged HDR histograms,
//! never from averaged percentiles.

use serde::{Deserialize, Serialize};

use super::ComponentSnapshot;

/// The schema version of [`Snapshot`]; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything the admin API knows at one moment (`GET /admin/v1/snapshot`, and each
/// `GET /admin/v1/stream` event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`] of the producer.
    pub schema: u32,
    /// Increases by one per snapshot produced by this server (the SSE event id).
    pub seq: u64,
    /// Wall-clock time the snapshot was taken, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// The server.
    pub server: ServerInfo,
    /// Worker processes (one entry, id 0, for a single-process server or a library user).
    pub workers: Vec<WorkerInfo>,
    /// Request totals, status classes and latency, merged over all workers.
    pub traffic: Traffic,
    /// Rate-limit policies.
    pub limits: Vec<ComponentSnapshot>,
    /// Circuit breakers.
    pub breakers: Vec<ComponentSnapshot>,
    /// Caches.
    pub caches: Vec<ComponentSnapshot>,
    /// The most recent admin changes, newest last.
    pub audit: Vec<AuditEntry>,
}

/// Identity of the server answering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Product name, e.g. `palisade`.
    pub name: String,
    /// Product version.
    pub version: String,
    /// PID of the process serving the admin API.
    pub pid: u32,
    /// `supervisor`, `single` or `library`.
    pub mode: String,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// The public listener address, if known.
    #[serde(default)]
    pub listen: Option<String>,
}

/// One worker process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Stable worker slot id (reused by its replacement).
    pub id: u32,
    /// Operating-system process id.
    pub pid: u32,
    /// `starting`, `ready`, `draining`, `stopping`, `crash_loop`...
    pub state: String,
    /// Seconds since this process started.
    pub uptime_secs: u64,
    /// Requests completed by this process.
    pub requests: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Times this slot's process was replaced after a crash or a kill.
    pub restarts: u32,
    /// Event-loop lag measured by the worker, milliseconds.
    pub loop_lag_ms: f64,
    /// p99 latency over the last minute, milliseconds (`None` without samples).
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

/// Request totals and latency, merged over all workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Requests completed since start (monotonic).
    pub requests_total: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Completed requests by status class (monotonic).
    pub status: StatusCounts,
    /// Latency percentiles over rolling windows (e.g. 10 s and 60 s).
    pub latency: Vec<LatencyWindow>,
}

/// Completed requests by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// 1xx responses.
    pub informational: u64,
    /// 2xx responses.
    pub success: u64,
    /// 3xx responses.
    pub redirection: u64,
    /// 4xx responses.
    pub client_error: u64,
    /// 5xx responses.
    pub server_error: u64,
}

impl StatusCounts {
    /// Counts one response with `status`.
    pub fn record(&mut self, status: u16) {
        match status {
            100..=199 => self.informational += 1,
            200..=299 => self.success += 1,
            300..=399 => self.redirection += 1,
            400..=499 => self.client_error += 1,
            _ => self.server_error += 1,
        }
    }

    /// Adds another set of counts.
    pub fn add(&mut self, other: &Self) {
        self.informational += other.informational;
        self.success += other.success;
        self.redirection += other.redirection;
        self.client_error += other.client_error;
        self.server_error += other.server_error;
    }

    /// Sum of all classes.
    pub fn total(&self) -> u64 {
        self.informational + self.success + self.redirection + self.client_error + self.server_error
    }
}

/// Latency percentiles over one rolling window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyWindow {
    /// Window length in seconds.
    pub window_secs: u64,
    /// Samples in the window.
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: f64,
    /// Largest sample, milliseconds.
    pub max_ms: f64,
}

/// One admin change, as recorded in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increases by one per entry.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Which token made the change (its id, never the secret).
    pub actor: String,
    /// What was done, e.g. `update`, `action:force_open`, `scale`, `revert`.
    pub action: String,
    /// What it was done to, e.g. `limits/api`.
    pub target: String,
    /// Settings before.
    #[serde(default)]
    pub before: serde_json::Value,
    /// Settings after.
    #[serde(default)]
    pub after: serde_json::Value,
    /// Anything else worth keeping: action arguments and result, a TTL, the entry a revert
    /// undoes. `null` (and omitted) when there is nothing.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// How each worker process answered the change (empty for a change that did not reach
    /// worker processes, e.g. a dry run or a worker operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

/// How one worker process answered a change fanned out to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The worker applied the change.
    Applied,
    /// The worker refused the change (see [`WorkerOutcome::error`]).
    Refused,
    /// The worker did not answer within the bound.
    TimedOut,
    /// The worker exited before answering (it was draining or died); it serves nothing more,
    /// so it does not hold the change back.
    Exited,
}

impl Outcome {
    /// Whether this outcome fails an all-or-nothing change.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Refused | Self::TimedOut)
    }
}

/// One worker's answer to a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOutcome {
    /// Worker slot id.
    pub worker_id: u32,
    /// Process id.
    pub pid: u32,
    /// What happened.
    pub outcome: Outcome,
    /// Why the worker refused, or what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time from sending the change to this worker's answer, milliseconds.
    pub elapsed_ms: u64,
}

/// The outcome of one change on every live worker: all applied it, or it was rolled back
/// everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    /// One entry per worker the change was sent to, ordered by worker id.
    pub workers: Vec<WorkerOutcome>,
    /// Time from the first send to the last answer (or the timeout), milliseconds.
    pub elapsed_ms: u64,
    /// `true` when a refusal or timeout made the change roll back on every worker.
    #[serde(default)]
    pub rolled_back: bool,
    /// In fleet mode, how every other node of the fleet answered (each through its own
    /// workers); empty for a change that stayed on this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeOutcome>,
}

/// One fleet node's answer to a fleet-wide change (see `docs/fleet.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOutcome {
    /// The node id (`fleet.node_id`).
    pub node_id: String,
    /// What happened on that node: [`Outcome::Exited`] when it left the fleet before answering.
    pub outcome: Outcome,
    /// Why the node refused, or what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time from publishing the change to this node's answer, milliseconds.
    pub elapsed_ms: u64,
    /// Each of the node's workers' answers.
    #[serde(default)]
    pub workers: Vec<WorkerOutcome>,
}

impl Propagation {
    /// The propagation of a change in a single process: worker 0 (this process) applied it.
    pub fn local() -> Self {
        Self {
            workers: vec![WorkerOutcome {
                worker_id: 0,
                pid: std::process::id(),
                outcome: Outcome::Applied,
                error: None,
                elapsed_ms: 0,
            }],
            elapsed_ms: 0,
            rolled_back: false,
            nodes: Vec::new(),
        }
    }

    /// Workers that applied the change.
    pub fn applied(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.outcome == Outcome::Applied)
            .count()
    }

    /// Workers that refused the change or did not answer in time.
    pub fn failed(&self) -> impl Iterator<Item = &WorkerOutcome> {
        self.workers.iter().filter(|w| w.outcome.is_failure())
    }

    /// Fleet nodes that refused the change or did not answer in time.
    pub fn failed_nodes(&self) -> impl Iterator<Item = &NodeOutcome> {
        self.nodes.iter().filter(|n| n.outcome.is_failure())
    }

    /// Whether every worker (and, in a fleet, every node) that still runs applied the change.
    pub fn succeeded(&self) -> bool {
        !self.rolled_back && self.failed().next().is_none() && self.failed_nodes().next().is_none()
    }

    /// One line for an operator, e.g. `applied on 2/2 workers in 14 ms` or
    /// `refused by worker 1 (pid 4242): rate: must be positive; rolled back on 2 workers`.
    ///
    /// ```
    /// use palisade::control::model::Propagation;
    /// assert_eq!(Propagation::local().summary(), "applied on 1/1 workers in 0 ms");
    /// ```
    pub fn summary(&self) -> String {
        let total = self
            .workers
            .iter()
            .filter(|w| w.outcome != Outcome::Exited)
            .count();
        if self.succeeded() {
            let nodes = match self.nodes.len() {
                0 => String::new(),
                n => {
                    let applied = self
                        .nodes
                        .iter()
                        .filter(|n| n.outcome == Outcome::Applied)
                        .count();
                    format!(" and {applied}/{n} other nodes")
                }
            };
            return format!(
                "applied on {}/{total} workers{nodes} in {} ms",
                self.applied(),
                self.elapsed_ms
            );
        }
        let node_failures = self.failed_nodes().map(|n| {
            let what = match n.outcome {
                Outcome::TimedOut => "no answer from",
                _ => "refused by",
            };
            match &n.error {
                Some(e) => format!("{what} node {}: {e}", n.node_id),
                None => format!("{what} node {}", n.node_id),
            }
        });
        let failures: Vec<String> = self
            .failed()
            .map(|w| {
                let what = match w.outcome {
                    Outcome::TimedOut => "no answer from".to_owned(),
                    _ => "refused by".to_owned(),
                };
                match &w.error {
                    Some(e) => format!("{what} worker {} (pid {}): {e}", w.worker_id, w.pid),
                    None => format!("{what} worker {} (pid {})", w.worker_id, w.pid),
                }
            })
            .chain(node_failures)
            .collect();
        if self.rolled_back && !self.nodes.is_empty() {
            format!(
                "{}; rolled back on {total} workers and {} other nodes",
                failures.join("; "),
                self.nodes
                    .iter()
                    .filter(|n| n.outcome != Outcome::Exited)
                    .count()
            )
        } else if self.rolled_back {
            format!("{}; rolled back on {total} workers", failures.join("; "))
        } else {
            format!(
                "{}; applied on {}/{total} workers",
                failures.join("; "),
                self.applied()
            )
        }
    }
}
