//! [`Stack`]: every Palisade layer around a service, in the one correct order, from one builder.
//!
//! A [`Stack`] takes a typed configuration for each layer you want, builds the layers and their
//! handles, registers every handle in one control [`Registry`] under the name its configuration
//! carries, and yields a [`StackLayer`]: a `tower::Layer` for `Router::layer`,
//! `ServiceBuilder::layer` or any `Layer::layer` call. The same [`StackLayer`] gives the admin
//! router for those handles ([`StackLayer::admin_router`]) and serves the wrapped service with
//! connect info, graceful drain and signals ([`StackLayer::serve`]).
//!
//! # The order
//!
//! Outermost first; a layer left out is skipped, the others keep their place:
//!
//! 1. **drain** (always): counts the request in flight, adds `Connection: close` once accept
//!    stopped. Outermost, so nothing inside can answer a request the drain does not see.
//! 2. **observe** ([`Stack::observe`]): request id, trace context, span, metrics, live latency.
//!    It sees every refusal made further in.
//! 3. **rate limit** ([`Stack::rate_limit`]): refusing early spends nothing.
//! 4. **concurrency limit** ([`Stack::concurrency_limit`]): beyond N requests in flight, a `503`
//!    with `Retry-After` at once, before any expensive work. Outside the breaker, so shedding
//!    under load never counts as a failure of the service.
//! 5. **circuit breaker** ([`Stack::circuit_breaker`], or
//!    [`Stack::circuit_breaker_per_route`]): an open breaker answers `503` before
//!    the cache or the service is asked; what reaches the service is what it judges.
//! 6. **request timeout** ([`Stack::timeout`]): `504` when the service does not answer in time
//!    (`408` while the request body is still arriving). Inside the breaker, so a service that
//!    hangs opens it.
//! 7. **response cache** ([`Stack::response_cache`]): hits answer here, misses go on.
//! 8. the service. Its request body is a [`TimeoutBody`](crate::timeout::TimeoutBody) (the
//!    original body, unchanged, watched by the timeout when there is one); an axum `Router`
//!    takes any body.
//!
//! # Guarantees
//!
//! - **Validated once.** [`Stack::build`] checks every configuration and that no two components
//!   of one kind share a name; it fails with a typed [`StackError`] and builds nothing.
//! - **Named once.** Each component is registered under the name in its configuration (a
//!   breaker's [`name`](crate::circuit_breaker::CircuitBreakerConfig::name), a cache's
//!   `store.name`, each rate-limit policy's name); the admin API, metrics labels and logs use
//!   that name.
//! - **One service.** Whatever the layers, the wrapped service is one [`StackService<S>`] with one
//!   [`ResponseFuture`] and one [`StackBody`]: drain, observe, rate limit, concurrency limit and
//!   breaker run inline in it, in the order above, around one call of the request timeout and
//!   response cache (which own the inner future), each through the same code as its own layer.
//!   Clones share every layer's state, so the clone per request that axum makes never resets a
//!   limit or a breaker window.
//! - **No silent global key.** When a rate-limit policy keys by client IP and a request carries
//!   no peer address (a server started without connect info), the stack answers `500` with an
//!   `application/problem+json` document and logs an error, instead of counting every client in
//!   one bucket. [`StackLayer::serve`] always attaches the peer address.
//!
//! # Caveats
//!
//! Inside an axum `Router` (`Router::layer`) the stack runs after routing, so observe and
//! route-keyed rate limits know the route template. Around a whole router
//! (`ServiceBuilder::new().layer(stack).service(router)`) it runs once per request before
//! routing; add [`RouteLayer`](crate::observe::RouteLayer) with `Router::route_layer` so observe
//! still labels requests with their route.
//!
//! # Examples
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use palisade::Stack;
//! use palisade::cache::ResponseCacheConfig;
//! use palisade::circuit_breaker::CircuitBreakerConfig;
//! use palisade::observe::ObserveConfig;
//! use palisade::rate_limit::{PeerAddr, PolicyConfig, RateLimitConfig};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stack = Stack::new()
//!     .observe(ObserveConfig::default())
//!     .rate_limit(
//!         RateLimitConfig::builder()
//!             .policy(PolicyConfig::builder("api").per_second(100).burst(20))
//!             .build()?,
//!     )
//!     .circuit_breaker(CircuitBreakerConfig::five_consecutive_failures().with_name("app"))
//!     .response_cache(ResponseCacheConfig::default())
//!     .build()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(stack.clone());
//!
//! let mut req = http::Request::get("/").body(Body::empty())?;
//! req.extensions_mut().insert(PeerAddr("192.0.2.1:5000".parse()?));
//! let res = app.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert!(res.headers().contains_key("x-request-id"));
//! assert_eq!(res.headers()["ratelimit-policy"], "\"api\";q=100;w=1");
//!
//! // Every component is in the stack's registry, under its own name.
//! let names: Vec<_> = stack.registry().snapshot().into_iter().map(|c| c.name).collect();
//! assert_eq!(names, ["api", "app", "responses"]);
//! # Ok(())
//! # }
//! ```

mod body;
mod error;
mod future;
mod service;
pub mod slot;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tower::Layer;
use tower::util::Either;

use crate::admin::{AdminConfig, LocalBackend};
use crate::cache::ResponseCacheLayer;
use crate::cache::response::{ResponseCacheConfig, ResponseCacheHandle};
use crate::circuit_breaker::{
    ByRoute, CircuitBreakerConfig, CircuitBreakerHandle, CircuitBreakerLayer, HttpClassifier,
    Inbound, Keyed, KeyedCircuitBreaker,
};
use crate::concurrency::{ConcurrencyLimitConfig, ConcurrencyLimitHandle, ConcurrencyLimitLayer};
use crate::control::{ComponentKind, Handle, Registry};
use crate::observe::{ObserveConfig, ObserveHandle, ObserveLayer};
use crate::rate_limit::{KeySource, RateLimitConfig, RateLimitHandle, RateLimitLayer};
use crate::shutdown::{Drain, DrainConfig, DrainLayer};
use crate::timeout::{TimeoutConfig, TimeoutHandle, TimeoutLayer};

pub use self::body::StackBody;
pub use self::error::StackError;
pub use self::future::ResponseFuture;
pub use self::service::StackService;

/// Builds a [`StackLayer`]: see the [module docs](self).
///
/// Add the layers you want (each at most once; a second call replaces the first), then
/// [`build`](Self::build). The drain layer is always part of the stack; [`drain`](Self::drain)
/// sets its timing.
#[derive(Debug, Default)]
#[must_use]
pub struct Stack {
    registry: Option<Registry>,
    drain: DrainConfig,
    observe: Option<ObserveConfig>,
    rate_limit: Option<RateLimitConfig>,
    circuit_breaker: Option<(CircuitBreakerConfig, BreakerScope)>,
    response_cache: Option<ResponseCacheConfig>,
    timeout: Option<TimeoutConfig>,
    concurrency_limit: Option<ConcurrencyLimitConfig>,
}

impl Stack {
    /// An empty stack: only the drain layer, with [`DrainConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The drain's timing (delay before accept stops, grace period).
    pub fn drain(mut self, config: DrainConfig) -> Self {
        self.drain = config;
        self
    }

    /// Request ids, trace context, spans, metrics and live latency statistics.
    pub fn observe(mut self, config: ObserveConfig) -> Self {
        self.observe = Some(config);
        self
    }

    /// Rate limiting; each policy registers under its own name.
    pub fn rate_limit(mut self, config: RateLimitConfig) -> Self {
        self.rate_limit = Some(config);
        self
    }

    /// One circuit breaker for the whole service, registered under the config's name.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.circuit_breaker = Some((config, BreakerScope::Service));
        self
    }

    /// One circuit breaker per route template ([`ByRoute`]), so a failing route does not open
    /// the breaker of the others; registered (all keys in one component) under the config's
    /// name. Replaces [`circuit_breaker`](Self::circuit_breaker). The stack must run inside the
    /// `Router` (`Router::layer`), where the route template is known.
    pub fn circuit_breaker_per_route(mut self, config: CircuitBreakerConfig) -> Self {
        self.circuit_breaker = Some((config, BreakerScope::PerRoute));
        self
    }

    /// The HTTP response cache, registered under the config's `store.name`.
    pub fn response_cache(mut self, config: ResponseCacheConfig) -> Self {
        self.response_cache = Some(config);
        self
    }

    /// The request timeout (`504`, or `408` while the body is still arriving), registered under
    /// the config's name; see [`timeout`](crate::timeout).
    pub fn timeout(mut self, config: TimeoutConfig) -> Self {
        self.timeout = Some(config);
        self
    }

    /// The concurrency limit with load shedding (`503` + `Retry-After` beyond N in flight, fixed
    /// or adaptive), registered under the config's name; see
    /// [`concurrency`](crate::concurrency).
    pub fn concurrency_limit(mut self, config: ConcurrencyLimitConfig) -> Self {
        self.concurrency_limit = Some(config);
        self
    }

    /// Registers the stack's handles in `registry` instead of a new one, e.g. one that already
    /// holds other components (a data cache, a breaker around a database) or that several stacks
    /// share. Names must still be unique per kind.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Builds every layer, validates the configurations and registers every handle.
    ///
    /// # Errors
    ///
    /// [`StackError`] names the layer and the reason; nothing is registered then.
    pub fn build(self) -> Result<StackLayer, StackError> {
        let registry = self.registry.unwrap_or_default();
        let drain = Drain::new(self.drain);
        let observe = self.observe.map(ObserveLayer::new);
        let needs_peer = self.rate_limit.as_ref().is_some_and(needs_peer);
        let rate_limit = self.rate_limit.map(RateLimitLayer::new);
        let circuit_breaker = self.circuit_breaker.map(|(config, scope)| match scope {
            BreakerScope::Service => {
                let (layer, handle) = CircuitBreakerLayer::new(config);
                (Either::Left(layer), handle)
            }
            BreakerScope::PerRoute => {
                let breakers = KeyedCircuitBreaker::new(config);
                let handle = breakers.handle();
                (
                    Either::Right(CircuitBreakerLayer::from_keyed(breakers, ByRoute)),
                    handle,
                )
            }
        });
        let response_cache = self
            .response_cache
            .map(ResponseCacheLayer::new)
            .transpose()
            .map_err(StackError::ResponseCache)?;
        let timeout = self.timeout.map(TimeoutLayer::new);
        let concurrency_limit = self.concurrency_limit.map(ConcurrencyLimitLayer::new);

        // All names first, so a clash leaves the registry as it was.
        let mut handles: Vec<&dyn HandleRef> = Vec::new();
        if let Some((_, h)) = &rate_limit {
            handles.push(h);
        }
        if let Some((_, h)) = &concurrency_limit {
            handles.push(h);
        }
        if let Some((_, h)) = &circuit_breaker {
            handles.push(h);
        }
        if let Some((_, h)) = &timeout {
            handles.push(h);
        }
        if let Some((_, h)) = &response_cache {
            handles.push(h);
        }
        let mut names: Vec<(ComponentKind, String)> = Vec::new();
        for handle in &handles {
            for (name, component) in handle.parts() {
                let key = (component.kind(), name);
                if names.contains(&key) || registry.get_kind(key.0, &key.1).is_some() {
                    return Err(StackError::DuplicateName {
                        kind: key.0,
                        name: key.1,
                    });
                }
                names.push(key);
            }
        }
        for handle in handles {
            for (name, component) in handle.parts() {
                registry.register(name.clone(), component).map_err(|e| {
                    StackError::DuplicateName {
                        kind: e.kind,
                        name: e.name,
                    }
                })?;
            }
        }

        Ok(StackLayer {
            parts: Arc::new(Parts {
                registry,
                drain_layer: drain.layer(),
                drain,
                observe,
                rate_limit,
                needs_peer,
                concurrency_limit,
                circuit_breaker,
                timeout,
                response_cache,
                warned_no_peer: AtomicBool::new(false),
            }),
        })
    }
}

/// Where a stack's breaker applies.
#[derive(Debug, Clone, Copy)]
enum BreakerScope {
    Service,
    PerRoute,
}

/// The breaker layer of a stack: one breaker, or one per route.
pub(crate) type BreakerLayer = Either<
    CircuitBreakerLayer,
    CircuitBreakerLayer<HttpClassifier, Inbound, Keyed<ByRoute, String>>,
>;

/// Object-safe view of [`Handle`] for the all-names-first check.
trait HandleRef {
    fn parts(&self) -> Vec<(String, Arc<dyn crate::control::DynComponent>)>;
}

impl<H: Handle> HandleRef for H {
    fn parts(&self) -> Vec<(String, Arc<dyn crate::control::DynComponent>)> {
        self.components()
    }
}

/// Whether a rate-limit configuration needs the socket peer of each request.
fn needs_peer(config: &RateLimitConfig) -> bool {
    !config.exempt_cidrs.is_empty()
        || config
            .policies()
            .iter()
            .any(|p| matches!(p.key, KeySource::ClientIp))
}

/// Everything a [`StackLayer`] built, shared by its clones and every service it wraps.
pub(crate) struct Parts {
    pub(crate) registry: Registry,
    pub(crate) drain: Drain,
    pub(crate) drain_layer: DrainLayer,
    pub(crate) observe: Option<(ObserveLayer, ObserveHandle)>,
    pub(crate) rate_limit: Option<(RateLimitLayer, RateLimitHandle)>,
    /// A rate-limit policy keys by client IP (or exempts client networks).
    pub(crate) needs_peer: bool,
    pub(crate) concurrency_limit: Option<(ConcurrencyLimitLayer, ConcurrencyLimitHandle)>,
    pub(crate) circuit_breaker: Option<(BreakerLayer, CircuitBreakerHandle)>,
    pub(crate) timeout: Option<(TimeoutLayer, TimeoutHandle)>,
    pub(crate) response_cache: Option<(ResponseCacheLayer, ResponseCacheHandle)>,
    /// The missing-peer error was logged (once per stack).
    pub(crate) warned_no_peer: AtomicBool,
}

/// The built stack: a `tower::Layer` (for `Router::layer`, `ServiceBuilder::layer`) that wraps a
/// service in every configured layer, with the handles, the registry and the drain. Cheap to
/// clone; clones share everything. See the [module docs](self).
#[derive(Clone)]
pub struct StackLayer {
    parts: Arc<Parts>,
}

impl fmt::Debug for StackLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.parts;
        f.debug_struct("StackLayer")
            .field("registry", &p.registry)
            .field("drain", &p.drain)
            .field("observe", &p.observe.is_some())
            .field("rate_limit", &p.rate_limit.is_some())
            .field("concurrency_limit", &p.concurrency_limit.is_some())
            .field("circuit_breaker", &p.circuit_breaker.is_some())
            .field("timeout", &p.timeout.is_some())
            .field("response_cache", &p.response_cache.is_some())
            .finish()
    }
}

impl StackLayer {
    /// The registry holding every handle of this stack (and whatever else was registered in it).
    pub fn registry(&self) -> &Registry {
        &self.parts.registry
    }

    /// The drain coordinator: readiness ([`Drain::readiness`]), in-flight count, manual start.
    pub fn drain(&self) -> &Drain {
        &self.parts.drain
    }

    /// The observe handle (live statistics), when observe is part of the stack.
    pub fn observe(&self) -> Option<&ObserveHandle> {
        self.parts.observe.as_ref().map(|(_, h)| h)
    }

    /// The rate limiter's handle (one [`PolicyHandle`](crate::rate_limit::PolicyHandle) per
    /// policy), when rate limiting is part of the stack.
    pub fn rate_limit(&self) -> Option<&RateLimitHandle> {
        self.parts.rate_limit.as_ref().map(|(_, h)| h)
    }

    /// The circuit breaker's handle, when a breaker is part of the stack.
    pub fn circuit_breaker(&self) -> Option<&CircuitBreakerHandle> {
        self.parts.circuit_breaker.as_ref().map(|(_, h)| h)
    }

    /// The response cache's handle, when the response cache is part of the stack.
    pub fn response_cache(&self) -> Option<&ResponseCacheHandle> {
        self.parts.response_cache.as_ref().map(|(_, h)| h)
    }

    /// The request timeout's handle, when a timeout is part of the stack.
    pub fn timeout(&self) -> Option<&TimeoutHandle> {
        self.parts.timeout.as_ref().map(|(_, h)| h)
    }

    /// The concurrency limit's handle, when a concurrency limit is part of the stack.
    pub fn concurrency_limit(&self) -> Option<&ConcurrencyLimitHandle> {
        self.parts.concurrency_limit.as_ref().map(|(_, h)| h)
    }

    /// Whether requests must carry their peer address (a rate-limit policy keys by client IP or
    /// client networks are exempt). [`serve`](Self::serve) attaches it; with `axum::serve`, use
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn needs_peer_addr(&self) -> bool {
        self.parts.needs_peer
    }

    /// The admin router over this stack's registry (`/admin/v1/...`): mount it on its own
    /// loopback listener. Unless `config` names a backend, the admin API reports this stack's
    /// traffic (from observe) as a single-process server.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use palisade::{Stack, admin::AdminConfig};
    /// use tower::ServiceExt;
    ///
    /// let stack = Stack::new().build()?;
    /// let token = "0123456789abcdef0123456789abcdef";
    /// let admin = stack.admin_router(AdminConfig::builder().read_write_token("ops", token).build()?);
    /// let req = http::Request::get("/admin/v1/snapshot")
    ///     .header("authorization", format!("Bearer {token}"))
    ///     .body(axum::body::Body::empty())?;
    /// assert_eq!(admin.oneshot(req).await?.status(), 200);
    /// # Ok(())
    /// # }
    /// ```
    pub fn admin_router(&self, mut config: AdminConfig) -> axum::Router {
        if config.default_backend {
            let mut backend = LocalBackend::new();
            if let Some(observe) = self.observe() {
                let observe = observe.clone();
                let drain = self.parts.drain.clone();
                backend = backend.traffic(move || {
                    let mut traffic = observe.traffic();
                    traffic.in_flight = drain.in_flight();
                    traffic
                });
            }
            config.backend = Arc::new(backend);
        }
        crate::admin::router(self.parts.registry.clone(), config)
    }

    /// Serves `app` (usually a `Router` with this stack as a layer) on `listener`, following
    /// this stack's drain: the peer address goes on every request, the first SIGTERM/SIGINT
    /// starts the drain, the future resolves with the drain's report. Configure it further
    /// before awaiting (see [`Serve`](crate::serve::Serve)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use axum::{Router, routing::get};
    /// use palisade::Stack;
    ///
    /// let stack = Stack::new().build()?;
    /// let app = Router::new().route("/", get(|| async { "hello" })).layer(stack.clone());
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// let report = stack.serve(listener, app).await?;
    /// assert_eq!(report.cut, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve<L, S, B>(&self, listener: L, app: S) -> crate::serve::Serve<S, L>
    where
        L: crate::serve::Accept,
        S: tower::Service<
                http::Request<crate::serve::TimedBody<hyper::body::Incoming>>,
                Response = http::Response<B>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        crate::serve::serve(listener, app).drain(self.parts.drain.clone())
    }
}

/// The layers a [`StackService`] composes today, outermost first. The public surface
/// ([`StackService`], [`ResponseFuture`], [`StackBody`]) hides this type, so the composition can
/// become one hand-written state machine without changing the API.
/// What a stack keeps as services around the inner one: the request timeout and the response
/// cache own the inner future (the other layers work inline in [`StackService`]).
pub(crate) type Timed<S> = Either<crate::timeout::Timeout<Cached<S>>, slot::Untimed<Cached<S>>>;
type Cached<S> = Either<crate::cache::response::ResponseCache<S>, slot::Uncached<S>>;

impl<S> Layer<S> for StackLayer {
    type Service = StackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StackService::new(inner, Arc::clone(&self.parts))
    }
}

impl Parts {
    /// Composes the layers around `inner`, innermost first.
    pub(crate) fn inner<S>(&self, inner: S) -> Timed<S> {
        let cached = match &self.response_cache {
            Some((layer, _)) => Either::Left(layer.layer(inner)),
            None => Either::Right(slot::Uncached::new(inner)),
        };
        match &self.timeout {
            Some((layer, _)) => Either::Left(layer.layer(cached)),
            None => Either::Right(slot::Untimed::new(cached)),
        }
    }
}
