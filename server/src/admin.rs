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
use std::time::{Duration, Instant};

use palisade::admin::{
    self, AdminBackend, AdminConfig, Applied, BackendError, BackendFuture, LocalBackend,
};
use palisade::control::model::{Propagation, ServerInfo, Traffic, WorkerInfo};
use palisade::control::{Change, ComponentKind, DynComponent, FieldError, Registry};
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
        .or_else(palisade::admin::token::default_token_path)
        .unwrap_or_else(|| PathBuf::from("palisade-admin.token"))
}

/// What `GET /metrics` on the admin port serves: behind the admin tokens (read-only is enough)
/// unless `admin.metrics_public`.
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

/// Binds the admin listener and serves the admin API, and `/metrics`, on a thread of its own
/// (its own event loop), so nothing the supervisor or the workers' event loop does can hold
/// the admin plane back.
///
/// The listener has its own header and body read timeouts and connection cap
/// (`admin.header_read_timeout_ms`, `admin.body_read_timeout_ms`, `admin.max_connections`),
/// answers only the `Host`s of [`HostCheck`], and refuses to start with a read-write token file
/// that other users can read unless `admin.allow_readable_token_file`.
pub async fn spawn(
    config: &Config,
    registry: Registry,
    backend: impl AdminBackend,
    metrics: Metrics,
) -> std::io::Result<(SocketAddr, admin::Admin)> {
    let path = token_path(config);
    check_token_file(&path, config.admin.allow_readable_token_file)?;
    let (secret, origin) = admin::token::ensure(&path)?;
    if matches!(origin, admin::token::Origin::Created) {
        eprintln!(
            "palisade: admin token written to {} (mode 0600)",
            path.display()
        );
    }
    let mut secrets = vec![secret.trim().to_owned()];
    let mut builder = AdminConfig::builder().read_write_token("admin", secret);
    if let Some(path) = &config.admin.read_only_token_file {
        let (secret, origin) = admin::token::ensure(path)?;
        if matches!(origin, admin::token::Origin::Created) {
            eprintln!(
                "palisade: read-only admin token written to {} (mode 0600)",
                path.display()
            );
        }
        secrets.push(secret.trim().to_owned());
        builder = builder.read_only_token("viewer", secret);
    }
    let admin_config = builder
        .backend(backend)
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let metrics_route = axum::routing::get(move || {
        let text = metrics.render();
        async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text) }
    });
    let metrics_route = if config.admin.metrics_public {
        metrics_route
    } else {
        let secrets: Arc<[String]> = secrets.into();
        metrics_route.route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let allowed = bearer_matches(req.headers(), &secrets);
                async move {
                    if allowed {
                        next.run(req).await
                    } else {
                        metrics_unauthorized()
                    }
                }
            },
        ))
    };
    let hosts = HostCheck::new(config.admin.addr, &config.admin.allowed_hosts);
    let state = admin::Admin::new(registry, admin_config);
    let router = state
        .router()
        .route("/metrics", metrics_route)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let refused = hosts.refuse(&req);
                async move {
                    match refused {
                        Some(res) => res,
                        None => next.run(req).await,
                    }
                }
            },
        ));
    let listen = listener_config(config);
    let listener = palisade::serve::bind(&listen)?;
    let addr = listener.local_addr()?;
    #[cfg(feature = "tls")]
    let tls = match &config.admin.tls {
        Some(settings) => {
            // The admin endpoint outlives rolling restarts: SIGHUP reloads its files in place.
            let acceptor = crate::tls::TlsAcceptor::new(settings, crate::tls::alpn(true))
                .map_err(std::io::Error::other)?;
            let acceptor = Arc::new(acceptor);
            acceptor.reload_on_hangup("admin")?;
            Some(acceptor)
        }
        None => None,
    };
    // Without the `tls` feature an `[admin.tls]` table never passes validation.
    #[cfg(not(feature = "tls"))]
    let tls: Option<Arc<dyn palisade::serve::Handshake>> = None;
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::thread::Builder::new()
        .name("palisade-admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(error) => {
                    tracing::error!(%error, "admin endpoint: cannot start its event loop");
                    return;
                }
            };
            runtime.block_on(async move {
                // The admin listener never drains: it lives as long as the process.
                let drain = palisade::shutdown::Drain::default();
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let serve = palisade::serve(listener, router)
                            .config(listen)
                            .drain(drain)
                            .with_signals(false);
                        match tls {
                            Some(tls) => serve.handshake(tls).await,
                            None => serve.await,
                        }
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = served {
                    tracing::error!(%error, "admin endpoint failed");
                }
            });
        })?;
    tracing::info!(%addr, scheme, token_file = %path.display(), "admin endpoint listening");
    Ok((addr, state))
}

/// The admin listener's connection settings, in the shape the serving port uses.
fn listener_config(config: &Config) -> palisade::serve::ServeConfig {
    let a = &config.admin;
    let mut listen = crate::config::ServerConfig::default().serve_config();
    listen.bind = a.addr;
    listen.backlog = 128;
    listen.header_read_timeout = Duration::from_millis(a.header_read_timeout_ms);
    listen.body_read_timeout = Duration::from_millis(a.body_read_timeout_ms);
    listen.max_connections = a.max_connections;
    // HTTP/1.1 only in clear text (`palisade-top`, curl and Prometheus need nothing else); over
    // TLS, h2 or HTTP/1.1 as ALPN decides.
    listen.http2 = a.tls.is_some();
    listen.reuse_port = false;
    listen
}

/// Refuses to use a read-write token file that group or others can read, unless allowed.
fn check_token_file(path: &std::path::Path, allow_readable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // Missing: created with mode 0600.
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 && !allow_readable {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "admin token file {} is readable by other users (mode {mode:o}); run `chmod 600 \
                 {}`, or set admin.allow_readable_token_file = true to use it anyway",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Whether `Authorization: Bearer <secret>` names one of `secrets`, compared in constant time.
fn bearer_matches(headers: &http::HeaderMap, secrets: &[String]) -> bool {
    let Some(presented) = headers
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes)
        .and_then(|v| v.split_at_checked(7))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, token)| token.trim_ascii())
    else {
        return false;
    };
    let mut found = false;
    for secret in secrets {
        let secret = secret.as_bytes();
        let mut diff = u8::from(secret.len() != presented.len());
        for (i, s) in secret.iter().enumerate() {
            diff |= std::hint::black_box(s ^ presented.get(i).copied().unwrap_or(0));
        }
        found |= std::hint::black_box(diff) == 0;
    }
    found
}

fn metrics_unauthorized() -> axum::response::Response {
    let mut res = palisade::problem::Problem::new(http::StatusCode::UNAUTHORIZED, "Unauthorized")
        .detail(
            "GET /metrics on the admin port needs `Authorization: Bearer <token>` (the read-only \
             token is enough), unless admin.metrics_public = true",
        )
        .into_response();
    res.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static(r#"Bearer realm="palisade-admin""#),
    );
    res
}

/// The `Host`s the admin listener answers: `localhost`, its bind address (any IP address when
/// bound to an unspecified one), and `admin.allowed_hosts`. A page on another origin that the
/// operator's browser resolves to loopback (DNS rebinding) sends its own name and is refused
/// with 421.
#[derive(Debug, Clone)]
pub struct HostCheck {
    bind: std::net::IpAddr,
    allowed: Arc<[String]>,
    any: bool,
}

impl HostCheck {
    /// The check for a listener bound to `bind`, with extra host names `allowed` (`"*"`: any).
    pub fn new(bind: SocketAddr, allowed: &[String]) -> Self {
        Self {
            bind: bind.ip(),
            any: allowed.iter().any(|h| h == "*"),
            allowed: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request naming `host` (a `Host` header or URI authority, port optional) is
    /// answered.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = match host.strip_prefix('[') {
            // `[::1]:9901`
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || self.allowed.contains(&name) {
            return true;
        }
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ip == self.bind || self.bind.is_unspecified(),
            Err(_) => false,
        }
    }

    fn refuse<B>(&self, req: &http::Request<B>) -> Option<axum::response::Response> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        let detail = match &host {
            Some(host) if self.allows(host) => return None,
            Some(host) => format!(
                "the admin endpoint does not answer for host `{}`; use localhost or its address, \
                 or add the name to admin.allowed_hosts",
                host.chars().take(255).collect::<String>()
            ),
            None => "the admin endpoint needs a Host header".to_owned(),
        };
        tracing::warn!(
            host = host.as_deref().unwrap_or(""),
            "admin request for a foreign host refused"
        );
        let mut res = palisade::problem::Problem::new(
            http::StatusCode::MISDIRECTED_REQUEST,
            "Misdirected Request",
        )
        .detail(detail)
        .into_response();
        res.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        Some(res)
    }
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
        self.handle.commands.try_send(make(tx)).map_err(|_| {
            // The operation never reached the loop: free the slot claimed for it.
            self.handle.lifecycle.lock().running = None;
            BackendError::Unavailable("the supervisor is busy; try again".into())
        })?;
        Ok(rx)
    }

    /// Takes the one-lifecycle-operation slot, or answers 409 naming the running operation.
    fn claim(&self, kind: &'static str, detail: String) -> Result<(), BackendError> {
        self.handle
            .lifecycle
            .lock()
            .claim(kind, detail)
            .map_err(BackendError::Conflict)
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
            let max = self.handle.lifecycle.lock().max_workers;
            if workers as usize > max {
                return Err(BackendError::Invalid(vec![FieldError::new(
                    "workers",
                    format!(
                        "must be at most {max} (workers.max; 0 there means four per CPU), got \
                         {workers}"
                    ),
                )]));
            }
            self.claim("scale", format!("scale to {workers} workers"))?;
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
            self.claim("restart", "rolling restart".to_owned())?;
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
            self.claim("drain", format!("replace worker {id}"))?;
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
    inner: Arc<dyn DynComponent>,
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

impl DynComponent for Aggregated {
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
