//! The reference application: the seed API wrapped in every Palisade layer.
//!
//! The process-wide layers come from one public [`palisade::Stack`]: drain (in-flight
//! accounting, `Connection: close` while draining) → observe (request id, trace context, span,
//! metrics, live stats, OTLP export when configured) → rate limit → concurrency limit (503
//! beyond N in flight) → request timeout (504 / 408), around body limit → the router. The `/names` response
//! cache and the `/flaky` circuit breaker are route layers built with the layers' own
//! constructors; every handle is in the stack's registry. `/metrics` serves this process's
//! Prometheus exposition.
//!
//! The stack wraps the router as one service ([`AppService::Around`]) rather than going through
//! `Router::layer`, which wraps every route and boxes a clone, a future and a body per layer and
//! request. A [`RouteLayer`] inside the router tells observe the route template. Only when a
//! rate-limit policy is keyed by route template (`key = "route"`) does the stack run inside the
//! router ([`AppService::Inside`]), after routing, where the template is known.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::settings::rate_limit::{BuildContext, StoreSetting};
use axum::Router;
use palisade::cache::TwoLevelCache;
use palisade::cache::response::ResponseCacheLayer;
use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use palisade::control::Registry;
use palisade::observe::{
    ObserveConfig, ObserveHandle, PrometheusExporter, RouteLayer, TraceConfig,
};
use palisade::rate_limit::ShmZone;
use palisade::serve::ServeConfig;
use palisade::shutdown::{Drain, DrainConfig, DrainReport};
use palisade::stack::StackService;
use palisade::{Stack, StackLayer};
use tower::Layer as _;
use tower_http::limit::RequestBodyLimit;
use tower_http::limit::RequestBodyLimitLayer;

use crate::api::{self, users::User};
use crate::config::Config;

/// State shared by every request in one process.
#[derive(Debug)]
pub struct AppState {
    /// The effective configuration.
    pub config: Config,
    /// The users database.
    pub db: crate::db::Database,
    /// Readiness checks behind `/health/ready` (the database; Redis when configured).
    pub readiness: palisade::health::Readiness,
    /// Invalidations for the other workers' L1, when no Redis backplane carries them.
    pub peers: crate::db::invalidate::Peers,
    /// User lookups through the two-level cache (`users` in the admin API).
    pub users_cache: TwoLevelCache<u64, User>,
    /// Worker slot id (0 for a single-process server).
    pub worker_id: u32,
    /// When this process started.
    pub started: Instant,
    /// This process's layer handles.
    pub registry: Registry,
    /// The drain coordinator.
    pub drain: Drain,
    /// Live request statistics.
    pub observe: ObserveHandle,
    /// This process's Prometheus exposition (`/metrics`), when a recorder is installed.
    pub exporter: Option<PrometheusExporter>,
    ready: AtomicBool,
}

impl AppState {
    /// Whether `/health/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.drain.is_ready()
    }

    /// Sets readiness (start-up complete).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// Route-level layers, handed to [`api::routes`].
#[derive(Debug, Clone)]
pub struct RouteLayers {
    /// The `/names` response cache.
    pub names_cache: ResponseCacheLayer,
    /// The breaker around the `/flaky` upstream.
    pub flaky_breaker: CircuitBreakerLayer,
}

/// The service every request goes through: the router inside the stack.
#[derive(Debug, Clone)]
pub enum AppService {
    /// The stack around the body limit and the router (the usual case).
    Around(StackService<RequestBodyLimit<Router>>),
    /// The stack inside the router (`Router::layer`), after routing: a rate-limit policy keys
    /// by route template.
    Inside(Router),
}

/// One process's application: its state and its service.
#[derive(Debug)]
pub struct App {
    /// Shared state.
    pub state: Arc<AppState>,
    /// The stack the service is wrapped in (registry, drain, handles).
    pub stack: StackLayer,
    /// The full application, layers included.
    pub service: AppService,
}

impl App {
    /// Serves the application on `listener` with `palisade::serve`, following the stack's
    /// drain and, with `load`, taking only this worker's share of connections;
    /// `signals`: whether SIGTERM/SIGINT start the drain (not in a worker, whose
    /// supervisor decides).
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        load: Option<crate::balance::WorkerLoad>,
        config: ServeConfig,
        signals: bool,
    ) -> std::io::Result<DrainReport> {
        // A worker takes only its share of the connections (see `crate::balance`).
        let listener = crate::balance::Acceptor::new(listener, load)?;
        // `[server.tls]`: every connection is a TLS handshake first; SIGHUP reloads the files.
        #[cfg(feature = "tls")]
        let tls = match &self.state.config.server.tls {
            Some(settings) => {
                let acceptor =
                    crate::tls::TlsAcceptor::new(settings, crate::tls::alpn(config.http2))
                        .map_err(std::io::Error::other)?;
                let acceptor = Arc::new(acceptor);
                acceptor.reload_on_hangup("server")?;
                Some(acceptor)
            }
            None => None,
        };
        // Without the `tls` feature a `[server.tls]` table never passes validation.
        #[cfg(not(feature = "tls"))]
        let tls: Option<Arc<dyn palisade::serve::Handshake>> = None;
        match self.service {
            AppService::Around(service) => {
                let serve = self
                    .stack
                    .serve(listener, service)
                    .config(config)
                    .with_signals(signals);
                match tls {
                    Some(tls) => serve.handshake(tls).await,
                    None => serve.await,
                }
            }
            AppService::Inside(router) => {
                let serve = self
                    .stack
                    .serve(listener, router)
                    .config(config)
                    .with_signals(signals);
                match tls {
                    Some(tls) => serve.handshake(tls).await,
                    None => serve.await,
                }
            }
        }
    }
}

/// Why the application could not be built (a configuration problem: exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

fn err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> BuildError + '_ {
    move |e| BuildError(format!("{what}: {e}"))
}

/// Builds the application for worker `worker_id`. `ctx` carries the shared-memory zones of
/// `store = "shm"` rate-limit policies; `exporter` renders `/metrics`.
pub fn build(
    config: Config,
    worker_id: u32,
    ctx: &BuildContext,
    exporter: Option<&PrometheusExporter>,
) -> Result<App, BuildError> {
    let rate_limit = config
        .rate_limit
        .config(&config.rate_limit_context(ctx.clone()))
        .map_err(|e| err("rate_limit")(&e))?;
    let stack = Stack::new()
        .drain(
            DrainConfig::builder()
                .delay(config.shutdown.drain_delay())
                .grace(config.shutdown.graceful_timeout())
                .build()
                .map_err(|e| err("shutdown")(&e))?,
        )
        .observe(observe_config(&config)?)
        .rate_limit(rate_limit)
        .concurrency_limit(
            config
                .concurrency
                .config()
                .map_err(|e| err("concurrency")(&e))?,
        )
        .timeout(config.timeout.config().map_err(|e| err("timeout")(&e))?)
        .build()
        .map_err(|e| err("stack")(&e))?;
    let registry = stack.registry().clone();
    let drain = stack.drain().clone();
    let observe = stack
        .observe()
        .cloned()
        .ok_or_else(|| BuildError("observe: not in the stack".to_owned()))?;

    let cache = config.cache_settings();
    cache.validate().map_err(|e| err("cache")(&e))?;
    let users_cache =
        TwoLevelCache::new(cache.users_config()).map_err(|e| err("cache.users")(&e))?;
    registry
        .add(&users_cache.handle())
        .map_err(|e| err("cache.users")(&e))?;
    let (names_cache, names) =
        ResponseCacheLayer::new(cache.names_config()).map_err(|e| err("cache.names")(&e))?;
    registry.add(&names).map_err(|e| err("cache.names")(&e))?;

    let breaker = CircuitBreakerConfig::from_settings("flaky", config.breaker.clone())
        .map_err(|e| err("breaker")(&e))?;
    let (flaky_breaker, flaky) = CircuitBreakerLayer::new(breaker);
    registry.add(&flaky).map_err(|e| err("breaker")(&e))?;

    let (db, readiness) = crate::db::setup(&config, &registry)?;

    let body_limit = config.server.body_limit_bytes;
    let state = Arc::new(AppState {
        config,
        db,
        readiness,
        peers: crate::db::invalidate::Peers::default(),
        users_cache,
        worker_id,
        started: Instant::now(),
        registry,
        drain,
        observe,
        exporter: exporter.cloned(),
        ready: AtomicBool::new(false),
    });
    let layers = RouteLayers {
        names_cache,
        flaky_breaker,
    };
    let mut routes = api::routes(Arc::clone(&state), layers);
    if let Some(exporter) = exporter {
        routes = routes.route_service("/metrics", exporter.service());
    }
    let routes = routes.route_layer(RouteLayer);
    let service = if state.config.rate_limit.keys_by_route() {
        AppService::Inside(
            routes
                .layer(RequestBodyLimitLayer::new(body_limit))
                .layer(stack.clone()),
        )
    } else {
        AppService::Around(stack.layer(RequestBodyLimit::new(routes, body_limit)))
    };
    Ok(App {
        state,
        stack,
        service,
    })
}

/// Observe with the default trace levels, the completion event at `info` with `log.access`.
fn observe_config(config: &Config) -> Result<ObserveConfig, BuildError> {
    let mut trace = TraceConfig::default();
    if config.log.access {
        trace = trace.completion_level(tracing::Level::INFO);
    }
    ObserveConfig::builder()
        .trace(trace)
        .build()
        .map_err(|e| err("observe")(&e))
}

/// Creates one shared-memory zone per `store = "shm"` rate-limit policy (the supervisor does
/// this once; workers inherit the zones, so N workers enforce one exact limit).
pub fn create_zones(config: &Config) -> std::io::Result<Vec<(String, Arc<ShmZone>)>> {
    config
        .rate_limit
        .policies
        .iter()
        .filter(|p| p.store == StoreSetting::Shm)
        .map(|p| {
            let keys = p.max_keys.unwrap_or(100_000);
            ShmZone::create_anonymous(&p.name, keys).map(|zone| (p.name.clone(), zone))
        })
        .collect()
}

/// The layer build context for a set of zones.
pub fn context(zones: &[(String, Arc<ShmZone>)]) -> BuildContext {
    zones.iter().fold(BuildContext::new(), |ctx, (name, zone)| {
        ctx.with_shm_zone(name.clone(), Arc::clone(zone))
    })
}
