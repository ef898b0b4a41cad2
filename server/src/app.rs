//! The reference application: the seed API wrapped in every Palisade layer.
//!
//! Outermost first: drain (in-flight accounting, `Connection: close` while draining) → observe
//! (request id, trace context, span, metrics, live stats) → body limit → rate limit → the router,
//! with the `/names` response cache and the `/flaky` circuit breaker as route layers.
//! `/metrics` serves this process's Prometheus exposition.
//!
//! The process-wide layers wrap the router as one service ([`AppService`]) rather than going
//! through `Router::layer`, which wraps every route in every layer and boxes a clone of each, a
//! future and a body per layer and request (about 25 allocations per request with four layers).
//! A [`RouteLayer`] inside the router tells observe the route template. Only when a rate-limit
//! policy is keyed by route template (`key = "route"`) does the limiter run inside the router,
//! after routing, where the template is known.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use palisade::cache::TwoLevelCache;
use palisade::cache::response::ResponseCacheLayer;
use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use palisade::control::Registry;
use palisade::observe::{
    Observe, ObserveConfig, ObserveHandle, ObserveLayer, PrometheusExporter, RouteLayer,
};
use palisade::rate_limit::RateLimit;
use palisade::rate_limit::{BuildContext, ShmZone, StoreSetting};
use palisade::shutdown::DrainService;
use palisade::shutdown::{Drain, DrainConfig};
use tower::util::Either;
use tower::{Layer as _, ServiceBuilder};
use tower_http::limit::RequestBodyLimit;
use tower_http::limit::RequestBodyLimitLayer;

use crate::api::{self, users::User, users::UserStore};
use crate::config::Config;

/// State shared by every request in one process.
#[derive(Debug)]
pub struct AppState {
    /// The effective configuration.
    pub config: Config,
    /// The user store.
    pub users: UserStore,
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

/// The service every request goes through: the router inside the process-wide layers. The rate
/// limiter is `Left` around the router, or `Right` (inside the router, after routing) when a
/// policy is keyed by route template.
pub type AppService = DrainService<Observe<RequestBodyLimit<Either<RateLimit<Router>, Router>>>>;

/// One process's application: its state and its service.
#[derive(Debug)]
pub struct App {
    /// Shared state.
    pub state: Arc<AppState>,
    /// The full application, layers included.
    pub service: AppService,
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
    let registry = Registry::new();
    let (observe_layer, observe) = ObserveLayer::new(ObserveConfig::default());
    let drain = Drain::new(
        DrainConfig::builder()
            .delay(config.shutdown.drain_delay())
            .grace(config.shutdown.graceful_timeout())
            .build()
            .map_err(|e| err("shutdown")(&e))?,
    );

    let (limit_layer, limits) = config
        .rate_limit
        .layer(ctx)
        .map_err(|e| err("rate_limit")(&e))?;
    limits
        .register(&registry)
        .map_err(|e| err("rate_limit")(&e))?;

    config.cache.validate().map_err(|e| err("cache")(&e))?;
    let users_cache =
        TwoLevelCache::new(config.cache.users_config()).map_err(|e| err("cache.users")(&e))?;
    registry
        .register("users", Arc::new(users_cache.handle()))
        .map_err(|e| err("cache.users")(&e))?;
    let (names_cache, names) =
        ResponseCacheLayer::new(config.cache.names_config()).map_err(|e| err("cache.names")(&e))?;
    registry
        .register("names", Arc::new(names))
        .map_err(|e| err("cache.names")(&e))?;

    let breaker = CircuitBreakerConfig::from_settings("flaky", config.breaker.clone())
        .map_err(|e| err("breaker")(&e))?;
    let (flaky_breaker, flaky) = CircuitBreakerLayer::new(breaker);
    registry
        .register("flaky", Arc::new(flaky))
        .map_err(|e| err("breaker")(&e))?;

    let body_limit = config.server.body_limit_bytes;
    let state = Arc::new(AppState {
        config,
        users: UserStore::with_samples(),
        users_cache,
        worker_id,
        started: Instant::now(),
        registry,
        drain: drain.clone(),
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
    let inner = if state.config.rate_limit.keys_by_route() {
        Either::Right(routes.route_layer(limit_layer))
    } else {
        Either::Left(limit_layer.layer(routes))
    };
    let service = ServiceBuilder::new()
        .layer(drain.layer())
        .layer(observe_layer)
        .layer(RequestBodyLimitLayer::new(body_limit))
        .service(inner);
    Ok(App { state, service })
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
