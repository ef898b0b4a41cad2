//! # Palisade
//!
//! Production-ready [tower] layers for HTTP services: rate limiting, circuit breaking,
//! two-level caching, graceful drain, tracing and metrics. They work on any `tower::Service`
//! over `http::Request`: an axum `Router`, a hyper `service_fn`, an HTTP client.
//!
//! Users meet Palisade through [`Stack`]: a builder that takes a typed configuration for each
//! layer you want, puts the layers in the one correct order, registers each layer's runtime
//! *handle* under its name in a [`control::Registry`], and yields one `tower::Layer`. The same
//! stack serves its admin router ([`StackLayer::admin_router`]) and the wrapped app, with client
//! addresses, graceful drain and signals ([`StackLayer::serve`]).
//!
//! The handles read live statistics and change settings at runtime without losing state:
//! raising a rate limit keeps what each client has used, resizing a cache keeps its entries.
//! Every clone of a layer, and every service it builds, shares one state, so the per-request
//! clones axum makes never reset a limit or a breaker window. The admin router serves the
//! registry over HTTP, so the `palisade-top` dashboard and scripts can watch and tune any
//! service built with this crate. The individual layers stay available (each module below) for
//! those who compose their own stack.
//!
//! ## Quick start
//!
//! An existing axum app, wrapped in every layer, one request through it, and a runtime change
//! through the registry, exactly what the admin API does:
//!
//! ```
//! # #[cfg(feature = "stack")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, body::Body, routing::get};
//! use palisade::Stack;
//! use palisade::cache::ResponseCacheConfig;
//! use palisade::circuit_breaker::CircuitBreakerConfig;
//! use palisade::observe::ObserveConfig;
//! use palisade::rate_limit::{PeerAddr, PolicyConfig, RateLimitConfig};
//! use tower::ServiceExt;
//!
//! let stack = Stack::new()
//!     .observe(ObserveConfig::default())
//!     .rate_limit(
//!         RateLimitConfig::builder()
//!             .exempt_path("/health/*")
//!             .policy(PolicyConfig::builder("api").per_second(100).burst(20))
//!             .build()?,
//!     )
//!     .circuit_breaker(CircuitBreakerConfig::five_consecutive_failures().with_name("app"))
//!     .response_cache(ResponseCacheConfig::default())
//!     .build()?;
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(stack.clone());
//!
//! // Serve it with `stack.serve(listener, app).await?` and the admin API with
//! // `axum::serve(admin_listener, stack.admin_router(admin_config))`. Here one request goes
//! // through in process; `PeerAddr` stands in for the socket peer `serve` attaches.
//! let mut req = http::Request::get("/").body(Body::empty())?;
//! req.extensions_mut().insert(PeerAddr("192.0.2.1:5000".parse()?));
//! let res = app.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert!(res.headers().contains_key("x-request-id"));
//! assert_eq!(res.headers()["ratelimit-policy"], "\"api\";q=100;w=1");
//! assert_eq!(stack.observe().map(|o| o.traffic().requests_total), Some(1));
//!
//! // A runtime change, exactly what `PUT /admin/v1/limits/api {"burst": 50}` does.
//! let api = stack.registry().get("api").expect("registered");
//! api.apply(&serde_json::json!({ "burst": 50 }), false).expect("a valid change");
//! let limits = stack.rate_limit().and_then(|l| l.policy("api")).map(|p| p.limits().burst);
//! assert_eq!(limits, Some(50));
//! // Invalid changes are refused with reasons and change nothing.
//! assert!(api.apply(&serde_json::json!({ "burst": 0 }), false).is_err());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "stack"))]
//! # fn main() {}
//! ```
//!
//! ## The layers
//!
//! | module            | layer                                  | handle                 | in short |
//! |-------------------|----------------------------------------|------------------------|----------|
//! | `observe`         | `ObserveLayer`                         | `ObserveHandle`        | `x-request-id`, W3C `traceparent`, one span per request with the route template, OpenTelemetry HTTP metrics, live HDR latency windows |
//! | `shutdown`        | `DrainLayer` (from `Drain::layer`)     | `Drain`                | readiness fails first, accept stops after a delay, `Connection: close`, streams told to end, bounded wait with a report |
//! | `rate_limit`      | `RateLimitLayer`                       | `PolicyHandle`         | GCRA per client IP, header, route or closure; local, shared-memory or Redis state; 429 + `Retry-After` + `RateLimit` headers |
//! | `circuit_breaker` | `CircuitBreakerLayer`                  | `CircuitBreakerHandle` | resilience4j semantics, keyed per route or host; inbound 503 or outbound `CallError` |
//! | `cache`           | `TwoLevelCache`, `ResponseCacheLayer`  | `CacheHandle`, `ResponseCacheHandle` | moka L1 + Redis L2, single flight, fail-safe, pub/sub invalidation; RFC 9111 response cache with `Cache-Status` |
//! | `timeout`         | `TimeoutLayer`                         | `TimeoutHandle`        | a deadline per request: 504 problem, or 408 while the request body is still arriving; inner future dropped at the deadline |
//! | `concurrency`     | `ConcurrencyLimitLayer`                | `ConcurrencyLimitHandle` | at most N requests in flight (fixed or AIMD); beyond, 503 + `Retry-After` at once, never a queue |
//! | `admin`           | `admin::router`                        | (serves the registry)  | authenticated JSON API: snapshots, SSE stream, `PUT` with `If-Match`, actions, audit log |
//! | `stack`           | `StackLayer` (from `Stack::build`)     | all of the above       | every layer in the right order from one builder, one registry, admin router, serve helper |
//! | `serve`           | `serve()`                              | (follows a `Drain`)    | accept loop with connect info, graceful drain, signals, header timeouts, connection cap |
//!
//! The order, outermost first, as [`Stack`] fixes it: drain, observe, rate limit, circuit
//! breaker, response cache, then the service. The drain sees every request (and its body type
//! cannot carry a refusal, so it stays outside the layers that make them); observe sees every
//! refusal; refusing early (rate limit) spends nothing; an open breaker answers before the cache
//! or the service is asked. Inside an axum `Router` (`Router::layer`) the layers run after
//! routing and know the route template. Composing layers by hand, keep the same order.
//!
//! ## Refusals are responses
//!
//! A layer that refuses a request answers it with an RFC 9457 `application/problem+json`
//! document ([`problem::Problem`]): `429` with `Retry-After` from the rate limiter, `503` with
//! `Retry-After` from an open breaker, `503` from the readiness probe while draining. The
//! inner service's error type passes through unchanged, so axum needs no `HandleErrorLayer`. For
//! that, inbound layers require a response body that implements `From<bytes::Bytes>` (axum's
//! `Body` and `http_body_util::Full<Bytes>` do).
//!
//! ## Further reading
//!
//! In the repository: `docs/layers.md` (each layer's semantics, headers, metrics, failure
//! policies and runtime settings), `docs/admin-api.md` and `docs/openapi.json` (the admin API),
//! `docs/configuration.md` (the reference server's settings), `docs/migrating-to-stack.md` (from
//! per-layer constructors to the stack), and runnable programs in
//! `examples/examples/` (`cargo run -p examples --example wrap_axum`).
//!
//! ## Features
//!
//! | feature           | what it enables                                              |
//! |-------------------|--------------------------------------------------------------|
//! | `rate-limit`      | GCRA rate limiting (local, shared-memory and Redis stores)   |
//! | `circuit-breaker` | circuit breaking for inbound routes and outbound clients     |
//! | `cache`           | moka L1 + optional Redis L2 cache, HTTP response cache layer |
//! | `redis`           | Redis L2, distributed limits, invalidation backplane         |
//! | `redis-tls`       | `rediss://` (rustls, ring; not in `full`: ring compiles C)   |
//! | `shutdown`        | graceful drain coordinator                                   |
//! | `observe`         | request ids, trace context, spans, metrics, live histograms  |
//! | `timeout`         | the request timeout layer (504 / 408)                        |
//! | `concurrency-limit` | the concurrency limit with load shedding (503)             |
//! | `admin`           | the admin HTTP router over the control registry              |
//! | `serve`           | the drain-aware accept loop (`palisade::serve`)              |
//! | `stack`           | `palisade::Stack` (needs every layer, `admin` and `serve`)   |
//!
//! All but `redis-tls` are on by default (and in `full`); Redis is only *used* when configured.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[macro_use]
mod macros;

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "stack"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// `docs/writing-a-component.md`, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/writing-a-component.md")]
pub struct WritingAComponentDoctests;

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;
#[cfg(feature = "concurrency-limit")]
pub mod concurrency;
pub mod control;
pub mod duration;
pub mod health;
#[cfg(feature = "observe")]
pub mod observe;
#[cfg(any(
    feature = "rate-limit",
    feature = "timeout",
    feature = "concurrency-limit"
))]
mod path_pattern;
pub mod problem;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(any(feature = "redis", feature = "cache"))]
pub mod redis;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;
#[cfg(feature = "shutdown")]
pub mod shutdown;
#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub mod stack;
#[cfg(feature = "timeout")]
pub mod timeout;

#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub use self::serve::serve;
#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub use self::stack::{Stack, StackLayer};
