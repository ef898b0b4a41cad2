//! [`AdminBackend`]: what the admin router asks beyond the [`Registry`](crate::control::Registry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::fleet::{FleetAudit, FleetNodes, FleetSnapshot};
use crate::control::model::{Propagation, ServerInfo, Traffic, WorkerInfo};
use crate::control::{Change, ComponentKind, FieldError};

/// A worker operation the backend refused or could not run. Each variant maps to one HTTP
/// status of the problem response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The server cannot do this at all (a single process cannot scale): 501.
    #[error("{0}")]
    NotSupported(String),
    /// Not now, e.g. a rolling restart is already running: 409.
    #[error("{0}")]
    Conflict(String),
    /// No such worker: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request was understood but a value is refused: 400 with field errors.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// The operation failed for a reason outside the caller's control: 503.
    #[error("{0}")]
    Unavailable(String),
    /// A change was refused by a worker, or a worker did not answer in time; it was rolled
    /// back on every worker (409 for a refusal, 504 for a timeout, naming the workers).
    #[error("{}", .0.summary())]
    NotApplied(Propagation),
}

/// The future a backend operation returns: worker operations and change fan-out wait for the
/// workers' answers (bounded by the backend), without blocking the request task.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

impl BackendError {
    /// The refusal of a fleet route by a server that is not part of a fleet.
    pub fn fleet_off() -> Self {
        Self::NotFound(
            "this server is not part of a fleet (fleet mode is off; set fleet.redis_url)".into(),
        )
    }

    /// The refusal a backend without worker processes gives.
    pub fn not_supported(operation: &str) -> Self {
        Self::NotSupported(format!(
            "`{operation}` is not supported by this server (it has no worker processes to manage)"
        ))
    }
}

/// Where a change applies (`?scope=` on `PUT` and actions).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Scope {
    /// Everywhere the backend reaches: every worker of this server and, in fleet mode, every
    /// node of the fleet. The default.
    #[default]
    Fleet,
    /// This server only (`?scope=node`): in fleet mode, an explicit node-local override that
    /// the nodes view reports until a fleet-wide change of the same component replaces it.
    Node,
    /// A change the fleet already decided, arriving from another node: applied to this
    /// server's workers only, and never published again (see [`Admin::apply_replicated`]).
    ///
    /// [`Admin::apply_replicated`]: super::Admin::apply_replicated
    Replicated,
}

impl Scope {
    /// Reads the `scope` query value: `fleet` or `node`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "fleet" => Some(Self::Fleet),
            "node" => Some(Self::Node),
            _ => None,
        }
    }
}

/// What the admin router just changed, passed to [`AdminBackend::propagate`] after the change
/// took effect in the local registry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Applied {
    /// New settings (a `PUT`, or the automatic revert of one whose TTL ran out).
    Settings {
        /// The component kind.
        kind: ComponentKind,
        /// The component name.
        name: String,
        /// The merge-patch that was applied (for a revert: the full settings restored).
        patch: Value,
        /// Settings before and after; `after` is the complete new settings object, so a
        /// receiver can apply it as an idempotent patch.
        change: Change,
        /// The component's version after the change.
        version: u64,
        /// `true` for a TTL revert.
        revert: bool,
        /// The token id that made the change.
        actor: String,
        /// Where the change applies.
        scope: Scope,
    },
    /// An operator action such as `force_open` or `invalidate`.
    Action {
        /// The component kind.
        kind: ComponentKind,
        /// The component name.
        name: String,
        /// The action.
        action: String,
        /// Its arguments (`{}` when none were given).
        args: Value,
        /// What [`DynComponent::action`](crate::control::DynComponent::action) returned.
        result: Value,
        /// The token id that ran it.
        actor: String,
        /// Where the action runs.
        scope: Scope,
    },
}

impl Applied {
    /// Where the change applies.
    pub fn scope(&self) -> Scope {
        match self {
            Self::Settings { scope, .. } | Self::Action { scope, .. } => *scope,
        }
    }
}

/// The server behind an admin router: identity, workers, merged traffic, worker operations and
/// a hook that sees every applied change.
///
/// [`LocalBackend`] serves a single process (library users). The reference server's supervisor
/// implements this trait to report its worker processes, merge their traffic and fan changes
/// out to them through [`propagate`](AdminBackend::propagate).
///
/// Every method is called on a request task and must not block; start long work (a rolling
/// restart) in the background and resolve once it started. Worker operations default to
/// [`BackendError::NotSupported`] (HTTP 501).
pub trait AdminBackend: Send + Sync + 'static {
    /// Who is answering.
    fn server(&self) -> ServerInfo;
    /// The worker processes (one entry, id 0, for a single process).
    fn workers(&self) -> Vec<WorkerInfo>;
    /// Request totals, status classes and latency, merged over all workers.
    fn traffic(&self) -> Traffic;
    /// Sets the number of worker processes (`POST /admin/v1/workers/scale`).
    ///
    /// Resolves to the worker count before and after, e.g. `{"workers": 2}` →
    /// `{"workers": 4}`, once the server accepted (or refused) the operation.
    fn scale(&self, workers: u32) -> BackendFuture<'_, Change> {
        let _ = workers;
        Box::pin(std::future::ready(Err(BackendError::not_supported(
            "scale",
        ))))
    }
    /// Starts a rolling restart of every worker (`POST /admin/v1/workers/restart`); resolves
    /// once the server started it (or refused).
    fn restart(&self) -> BackendFuture<'_, Change> {
        Box::pin(std::future::ready(Err(BackendError::not_supported(
            "restart",
        ))))
    }
    /// Drains one worker, which is then replaced (`POST /admin/v1/workers/{id}/drain`);
    /// resolves once the server started it (or refused).
    fn drain_worker(&self, id: u32) -> BackendFuture<'_, Change> {
        let _ = id;
        Box::pin(std::future::ready(Err(BackendError::not_supported(
            "drain",
        ))))
    }
    /// Carries a change the router just applied to its own registry to every worker process
    /// and resolves to each worker's answer.
    ///
    /// All or nothing: when any worker refuses a settings change or does not answer in time,
    /// the backend restores the previous settings (`change.before`) on every worker and
    /// resolves to [`BackendError::NotApplied`]; the router then restores its own copy and
    /// answers with a problem naming the workers. Actions cannot be undone, so for an
    /// [`Applied::Action`] the backend only reports.
    ///
    /// The default (a single process) has nothing to carry: the change is already live in this
    /// process, reported as worker 0.
    fn propagate<'a>(&'a self, applied: &'a Applied) -> BackendFuture<'a, Propagation> {
        let _ = applied;
        Box::pin(std::future::ready(Ok(Propagation::local())))
    }
    /// The nodes of this server's fleet (`GET /admin/v1/fleet/nodes`); 404 outside fleet mode.
    fn fleet_nodes(&self) -> BackendFuture<'_, FleetNodes> {
        Box::pin(std::future::ready(Err(BackendError::fleet_off())))
    }
    /// Fleet-wide traffic with exactly merged latency (`GET /admin/v1/fleet/snapshot`); 404
    /// outside fleet mode.
    fn fleet_snapshot(&self) -> BackendFuture<'_, FleetSnapshot> {
        Box::pin(std::future::ready(Err(BackendError::fleet_off())))
    }
    /// The newest `limit` fleet-wide changes, newest last (`GET /admin/v1/fleet/audit`); 404
    /// outside fleet mode.
    fn fleet_audit(&self, limit: usize) -> BackendFuture<'_, FleetAudit> {
        let _ = limit;
        Box::pin(std::future::ready(Err(BackendError::fleet_off())))
    }
}

impl<T: AdminBackend + ?Sized> AdminBackend for Arc<T> {
    fn server(&self) -> ServerInfo {
        (**self).server()
    }
    fn workers(&self) -> Vec<WorkerInfo> {
        (**self).workers()
    }
    fn traffic(&self) -> Traffic {
        (**self).traffic()
    }
    fn scale(&self, workers: u32) -> BackendFuture<'_, Change> {
        (**self).scale(workers)
    }
    fn restart(&self) -> BackendFuture<'_, Change> {
        (**self).restart()
    }
    fn drain_worker(&self, id: u32) -> BackendFuture<'_, Change> {
        (**self).drain_worker(id)
    }
    fn propagate<'a>(&'a self, applied: &'a Applied) -> BackendFuture<'a, Propagation> {
        (**self).propagate(applied)
    }
    fn fleet_nodes(&self) -> BackendFuture<'_, FleetNodes> {
        (**self).fleet_nodes()
    }
    fn fleet_snapshot(&self) -> BackendFuture<'_, FleetSnapshot> {
        (**self).fleet_snapshot()
    }
    fn fleet_audit(&self, limit: usize) -> BackendFuture<'_, FleetAudit> {
        (**self).fleet_audit(limit)
    }
}

type TrafficFn = dyn Fn() -> Traffic + Send + Sync;

/// The backend of a single process: one worker (id 0, this process), traffic from a closure
/// you supply (for example the `observe` module's recorder), no worker operations.
///
/// ```
/// use palisade::admin::{AdminBackend, LocalBackend};
/// use palisade::control::model::Traffic;
///
/// let backend = LocalBackend::new()
///     .name("my-api")
///     .traffic(|| Traffic { requests_total: 42, ..Traffic::default() });
/// assert_eq!(backend.server().name, "my-api");
/// assert_eq!(backend.workers()[0].id, 0);
/// assert_eq!(backend.workers()[0].requests, 42);
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert!(backend.scale(4).await.is_err());
/// # });
/// ```
#[derive(Clone)]
pub struct LocalBackend {
    name: String,
    version: String,
    mode: String,
    listen: Option<String>,
    started: Instant,
    traffic: Arc<TrafficFn>,
}

impl fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBackend")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Default for LocalBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBackend {
    /// Named `palisade` with this crate's version, mode `library`, uptime counted from now, and
    /// empty traffic.
    pub fn new() -> Self {
        Self {
            name: "palisade".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: "library".to_owned(),
            listen: None,
            started: Instant::now(),
            traffic: Arc::new(Traffic::default),
        }
    }

    /// The product name reported in [`ServerInfo::name`].
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The version reported in [`ServerInfo::version`].
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The mode reported in [`ServerInfo::mode`] (`library` by default; the reference server
    /// uses `single` when it runs without a supervisor).
    #[must_use]
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = mode.into();
        self
    }

    /// The public listener address reported in [`ServerInfo::listen`].
    #[must_use]
    pub fn listen(mut self, addr: impl ToString) -> Self {
        self.listen = Some(addr.to_string());
        self
    }

    /// Where traffic numbers come from; called once per snapshot.
    #[must_use]
    pub fn traffic(mut self, traffic: impl Fn() -> Traffic + Send + Sync + 'static) -> Self {
        self.traffic = Arc::new(traffic);
        self
    }
}

impl AdminBackend for LocalBackend {
    fn server(&self) -> ServerInfo {
        ServerInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            pid: std::process::id(),
            mode: self.mode.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            listen: self.listen.clone(),
        }
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        let traffic = (self.traffic)();
        let p99_ms = traffic
            .latency
            .iter()
            .find(|w| w.window_secs == 60)
            .or_else(|| traffic.latency.last())
            .filter(|w| w.count > 0)
            .map(|w| w.p99_ms);
        vec![WorkerInfo {
            id: 0,
            pid: std::process::id(),
            state: "ready".to_owned(),
            uptime_secs: self.started.elapsed().as_secs(),
            requests: traffic.requests_total,
            in_flight: traffic.in_flight,
            rss_bytes: rss_bytes().unwrap_or(0),
            restarts: 0,
            loop_lag_ms: 0.0,
            p99_ms,
        }]
    }

    fn traffic(&self) -> Traffic {
        (self.traffic)()
    }
}

/// Resident set size of this process from `/proc/self/status` (Linux); `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
