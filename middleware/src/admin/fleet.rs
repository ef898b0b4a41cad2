//! The fleet model of the admin API (`/admin/v1/fleet/*`): the nodes of a fleet, fleet-wide
//! traffic with exactly merged latency, and the fleet audit log. The reference server fills it
//! in fleet mode (`[fleet]`, see `docs/fleet.md`); `palisade-top --fleet` reads it.

use serde::{Deserialize, Serialize};

use crate::control::model::{LatencyWindow, Propagation, StatusCounts, Traffic};

/// One node (one server: a supervisor and its workers) of a fleet, from its last heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node id (`fleet.node_id`; by default `<hostname>-<port>`).
    pub node_id: String,
    /// The node's admin endpoint address.
    #[serde(default)]
    pub admin_addr: Option<String>,
    /// The node's public listener address.
    #[serde(default)]
    pub listen: Option<String>,
    /// The product version the node runs.
    pub version: String,
    /// PID of the node's supervisor (or single process).
    pub pid: u32,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Ready worker processes.
    pub workers_ready: u64,
    /// Worker processes in any state.
    pub workers: u64,
    /// Requests the node completed since it started (monotonic).
    pub requests_total: u64,
    /// Requests in flight on the node now.
    pub in_flight: u64,
    /// The node's completed requests by status class (monotonic).
    pub status: StatusCounts,
    /// The node's latency percentiles over its 10 s and 60 s windows.
    pub latency: Vec<LatencyWindow>,
    /// The last fleet settings version this node applied.
    pub applied_version: u64,
    /// Whether the node runs the fleet's current settings version.
    pub in_sync: bool,
    /// Components this node overrides locally (`?scope=node`), e.g. `limits/api`.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Milliseconds since the node's last heartbeat was written.
    pub last_seen_ms: u64,
}

/// `GET /admin/v1/fleet/nodes`: every live node (one that missed fewer than three heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetNodes {
    /// The fleet name (`fleet.name`).
    pub fleet: String,
    /// The node answering.
    pub node_id: String,
    /// The fleet settings version (increases by one per fleet-wide change).
    pub version: u64,
    /// The heartbeat interval, milliseconds; a node silent for three intervals leaves the view.
    pub heartbeat_ms: u64,
    /// The live nodes, ordered by id.
    pub nodes: Vec<NodeInfo>,
}

/// `GET /admin/v1/fleet/snapshot`: fleet-wide traffic, with latency percentiles from the
/// nodes' HDR histograms added together (never averaged percentiles), and every live node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    /// The fleet name.
    pub fleet: String,
    /// The node answering.
    pub node_id: String,
    /// The fleet settings version.
    pub version: u64,
    /// Wall-clock time the snapshot was taken, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// Totals, in-flight, status classes and the 10 s and 60 s latency windows over every node.
    pub traffic: Traffic,
    /// The live nodes, ordered by id.
    pub nodes: Vec<NodeInfo>,
}

/// One fleet-wide change, as recorded in the fleet audit log (kept in Redis, shared by every
/// node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetAuditEntry {
    /// The fleet settings version the change made.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The node whose admin API took the change.
    pub origin: String,
    /// The token id that made the change.
    pub actor: String,
    /// `update`, `rollback` (the settings restored after a refusal), `action:<name>`...
    pub action: String,
    /// What it was done to, e.g. `limits/api`.
    pub target: String,
    /// Settings before.
    #[serde(default)]
    pub before: serde_json::Value,
    /// Settings after.
    #[serde(default)]
    pub after: serde_json::Value,
    /// `applied` (on every node) or `rolled_back`.
    pub outcome: String,
    /// The origin's workers' and every other node's answers.
    pub propagation: Propagation,
}

/// `GET /admin/v1/fleet/audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetAudit {
    /// The fleet name.
    pub fleet: String,
    /// The newest entries, newest last.
    pub entries: Vec<FleetAuditEntry>,
}
