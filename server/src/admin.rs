//! The admin endpoint of the reference server: `palisade::admin`'s router over this process's
//! registry, with a backend that reports workers and merged traffic.
//!
//! In supervisor mode the registry holds the supervisor's own copies of the layer handles (the
//! authoritative settings, validated and versioned here); each change is carried to every live
//! worker over the control channels and answered once all acknowledged it (or rolled back
//! everywhere when one refused or did not answer), and replayed to workers started later. Statistics
//! shown for a component are merged from the workers' reports as the component declares
//! (`Component::stats_merge`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use palisade::admin::{
    self, AdminBackend, AdminConfig, Applied, BackendError, BackendFuture, LocalBackend,
};
use palisade::control::model::{Propagation, ServerInfo, Traffic, WorkerInfo};
use palisade::control::{Change, Component, ComponentKind, FieldError, Registry};
use palisade::observe::{CONTENT_TYPE, PrometheusExporter, StatsRecorder, merge_expositions};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::supervisor::{CHANGE_TIMEOUT, Command, SupervisorHandle, View};

/// How long an admin request waits for the supervisor loop beyond the workers' own bound.
const SUPERVISOR_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits for the supervisor's answer to a command.
async fn answer<T>(rx: oneshot::Receiver<Result<T, BackendError>>) -> Result<T, BackendError> {
    match tokio::time::timeout(CHANGE_TIMEOUT + SUPERVISOR_SLACK, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(BackendError::Unavailable(
            "the supervisor stopped before answering".into(),
        )),
        Err(_) => Err(BackendError::Unavailable(
            "the supervisor did not answer in time; try again".into(),
        )),
    }
}

/// Where the admin token lives: `admin.token_file`, else the per-user default that
/// `palisade-top` also looks at.
pub fn token_path(config: &Config) -> PathBuf {
    config
        .admin
        .token_file
        .clone()
        .or_else(palisade_top::default_token_path)
        .unwrap_or_else(|| PathBuf::from("palisade-admin.token"))
}

/// What `GET /metrics` on the admin port serves (no token, like any Prometheus target; the
/// admin port is loopback-only unless `admin.allow_non_loopback`).
#[derive(Debug, Clone)]
pub enum Metrics {
    /// This process's exposition (single-process mode).
    Local(PrometheusExporter),
    /// Every ready worker's last exposition, merged with a `worker` label (supervisor mode).
    Workers(Arc<RwLock<View>>),
    /// No recorder installed.
    None,
}

impl Metrics {
    fn render(&self) -> String {
        match self {
            Self::Local(exporter) => exporter.render(),
            Self::Workers(view) => {
                let view = view.read();
                let ids: Vec<String> = view.metrics.iter().map(|(id, _)| id.to_string()).collect();
                let sources: Vec<(&str, &str)> = ids
                    .iter()
                    .zip(&view.metrics)
                    .map(|(id, (_, text))| (id.as_str(), &**text))
                    .collect();
                merge_expositions("worker", &sources)
            }
            Self::None => String::new(),
        }
    }
}

/// Binds the admin listener and serves the admin API, and `/metrics`, in the background.
pub async fn spawn(
    config: &Config,
    registry: Registry,
    backend: impl AdminBackend,
    metrics: Metrics,
) -> std::io::Result<SocketAddr> {
    let path = token_path(config);
    let (secret, origin) = admin::token::ensure(&path)?;
    if matches!(origin, admin::token::Origin::Created) {
        eprintln!(
            "palisade: admin token written to {} (mode 0600)",
            path.display()
        );
    }
    let mut builder = AdminConfig::builder().read_write_token("admin", secret);
    if let Some(path) = &config.admin.read_only_token_file {
        let (secret, origin) = admin::token::ensure(path)?;
        if matches!(origin, admin::token::Origin::Created) {
            eprintln!(
                "palisade: read-only admin token written to {} (mode 0600)",
                path.display()
            );
        }
        builder = builder.read_only_token("viewer", secret);
    }
    let admin_config = builder
        .backend(backend)
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let router = admin::router(registry, admin_config).route(
        "/metrics",
        axum::routing::get(move || {
            let text = metrics.render();
            async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(config.admin.addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "admin endpoint failed");
        }
    });
    tracing::info!(%addr, token_file = %path.display(), "admin endpoint listening");
    Ok(addr)
}

/// The backend of a single-process server.
pub fn local_backend(stats: StatsRecorder, listen: Option<SocketAddr>) -> LocalBackend {
    let mut backend = LocalBackend::new()
        .name("palisade")
        .version(env!("CARGO_PKG_VERSION"))
        .mode("single")
        .traffic(move || stats.traffic());
    if let Some(addr) = listen {
        backend = backend.listen(addr);
    }
    backend
}

/// The supervisor's backend: workers and traffic from heartbeats, worker operations and change
/// fan-out through the supervisor loop.
#[derive(Debug)]
pub struct SupervisorBackend {
    handle: SupervisorHandle,
    started: Instant,
    listen: Option<SocketAddr>,
}

impl SupervisorBackend {
    /// A backend over a running supervisor.
    pub fn new(handle: SupervisorHandle, listen: Option<SocketAddr>) -> Self {
        Self {
            handle,
            started: Instant::now(),
            listen,
        }
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<oneshot::Receiver<T>, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.handle
            .commands
            .try_send(make(tx))
            .map_err(|_| BackendError::Unavailable("the supervisor is busy; try again".into()))?;
        Ok(rx)
    }

    fn worker_count(&self) -> usize {
        self.handle
            .view
            .read()
            .workers
            .iter()
            .filter(|w| w.state != "draining")
            .count()
    }
}

impl AdminBackend for SupervisorBackend {
    fn server(&self) -> ServerInfo {
        ServerInfo {
            name: "palisade".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            mode: "supervisor".into(),
            uptime_secs: self.started.elapsed().as_secs(),
            listen: self.listen.map(|a| a.to_string()),
        }
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.handle.view.read().workers.clone()
    }

    fn traffic(&self) -> Traffic {
        let mut traffic = self.handle.stats.traffic();
        let view = self.handle.view.read();
        traffic.in_flight = view.in_flight;
        traffic.requests_total = traffic.requests_total.max(view.requests_total);
        traffic
    }

    fn scale(&self, workers: u32) -> BackendFuture<'_, Change> {
        Box::pin(async move {
            let before = self.worker_count();
            let rx = self.ask(|tx| Command::Scale(workers as usize, tx))?;
            let after = answer(rx).await?;
            Ok(Change {
                before: json!({ "workers": before }),
                after: json!({ "workers": after }),
            })
        })
    }

    fn restart(&self) -> BackendFuture<'_, Change> {
        Box::pin(async move {
            let pids: Vec<u32> = self.workers().iter().map(|w| w.pid).collect();
            let rx = self.ask(Command::Restart)?;
            let replacing = answer(rx).await?;
            Ok(Change {
                before: json!({ "pids": pids }),
                after: json!({ "rolling_restart": true, "replacing": replacing }),
            })
        })
    }

    fn drain_worker(&self, id: u32) -> BackendFuture<'_, Change> {
        Box::pin(async move {
            let worker = self
                .workers()
                .into_iter()
                .find(|w| w.id == id && w.state == "ready")
                .ok_or_else(|| BackendError::NotFound(format!("no ready worker with id {id}")))?;
            let rx = self.ask(|tx| Command::Drain(id, tx))?;
            answer(rx).await?;
            Ok(Change {
                before: json!({ "id": id, "pid": worker.pid }),
                after: json!({ "id": id, "replaced": true }),
            })
        })
    }

    fn propagate<'a>(&'a self, applied: &'a Applied) -> BackendFuture<'a, Propagation> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let command = match applied {
                Applied::Settings {
                    kind, name, change, ..
                } => Command::Apply {
                    kind: *kind,
                    name: name.clone(),
                    settings: change.after.clone(),
                    rollback: change.before.clone(),
                    reply: tx,
                },
                Applied::Action {
                    kind,
                    name,
                    action,
                    args,
                    ..
                } => Command::Action {
                    kind: *kind,
                    name: name.clone(),
                    action: action.clone(),
                    args: args.clone(),
                    reply: tx,
                },
                _ => return Ok(Propagation::default()),
            };
            self.handle.commands.try_send(command).map_err(|_| {
                BackendError::Unavailable(
                    "the supervisor is busy; nothing changed; try again".into(),
                )
            })?;
            match tokio::time::timeout(CHANGE_TIMEOUT + SUPERVISOR_SLACK, rx).await {
                Ok(Ok(Ok(propagation))) => Ok(propagation),
                Ok(Ok(Err(propagation))) => Err(BackendError::NotApplied(propagation)),
                Ok(Err(_)) => Err(BackendError::Unavailable(
                    "the supervisor stopped before the workers answered".into(),
                )),
                Err(_) => Err(BackendError::Unavailable(
                    "the supervisor did not answer in time".into(),
                )),
            }
        })
    }
}

/// A supervisor-side component: settings and validation from the supervisor's own handle,
/// statistics summed over the workers' latest reports.
#[derive(Debug)]
pub struct Aggregated {
    name: String,
    inner: Arc<dyn Component>,
    handle: SupervisorHandle,
}

impl Aggregated {
    /// Wraps every component of `local` into a new registry whose stats come from the workers.
    pub fn registry(local: &Registry, handle: &SupervisorHandle) -> Registry {
        let registry = Registry::new();
        for snapshot in local.snapshot() {
            if let Some(inner) = local.get_kind(snapshot.kind, &snapshot.name) {
                let proxy = Aggregated {
                    name: snapshot.name.clone(),
                    inner,
                    handle: handle.clone(),
                };
                let _ = registry.register(snapshot.name, Arc::new(proxy));
            }
        }
        registry
    }
}

impl Component for Aggregated {
    fn kind(&self) -> ComponentKind {
        self.inner.kind()
    }
    fn version(&self) -> u64 {
        self.inner.version()
    }
    fn settings(&self) -> Value {
        self.inner.settings()
    }
    fn stats(&self) -> Value {
        let view = self.handle.view.read();
        let reports: Vec<&Value> = view
            .heartbeats
            .iter()
            .flat_map(|hb| hb.components.iter())
            .filter(|c| c.name == self.name && c.kind == self.inner.kind())
            .map(|c| &c.stats)
            .collect();
        // Each component declares how its fields combine (counters add up, a shared-memory
        // zone's figures count once, a breaker shows its most severe state).
        palisade::control::merge::merge_stats(&reports, &self.inner.stats_merge())
            .unwrap_or_else(|| self.inner.stats())
    }
    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
        self.inner.apply(patch, dry_run)
    }
    fn action(&self, action: &str, args: &Value) -> Result<Value, Vec<FieldError>> {
        self.inner.action(action, args)
    }
    fn actions(&self) -> &'static [&'static str] {
        self.inner.actions()
    }
    fn stats_merge(&self) -> Vec<palisade::control::merge::FieldMerge> {
        self.inner.stats_merge()
    }
}
