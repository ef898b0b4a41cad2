//! # Palisade
//!
//! Production-ready [tower] layers for HTTP services: rate limiting, circuit breaking,
//! two-level caching, graceful drain, tracing and metrics. They work on any `tower::Service`
//! over `http::Request`: an axum `Router`, a hyper `service_fn`, an HTTP client.
//!
//! Every layer is built as a pair `(layer, handle)`. The layer goes into your service stack;
//! every clone of it, and every service it builds, shares one state, so the per-request clones
//! axum makes never reset a limit or a breaker window. The handle reads live statistics and
//! changes settings at runtime without losing state: raising a rate limit keeps what each
//! client has used, resizing a cache keeps its entries. Handles register in a
//! [`control::Registry`], which the [`admin`](crate#features) router serves over HTTP, so the
//! `palisade-top` dashboard and scripts can watch and tune any service built with this crate.
//!
//! ## Quick start
//!
//! An existing axum app, wrapped in every layer, with its handles registered for the admin API:
//!
//! ```
//! # #[cfg(all(feature = "rate-limit", feature = "circuit-breaker", feature = "cache",
//! #     feature = "shutdown", feature = "observe", feature = "admin"))]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use axum::{Router, body::Body, routing::get};
//! use palisade::cache::{ResponseCacheConfig, ResponseCacheLayer};
//! use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
//! use palisade::control::Registry;
//! use palisade::observe::{ObserveConfig, ObserveLayer};
//! use palisade::rate_limit::{PeerAddr, PolicyConfig, RateLimitConfig, RateLimitLayer};
//! use palisade::shutdown::{Drain, DrainConfig};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! // Each layer with its handle; the handles go into one registry.
//! let registry = Registry::new();
//! let (observe, observe_handle) = ObserveLayer::new(ObserveConfig::default());
//! let drain = Drain::new(DrainConfig::default());
//! let (limit, limit_handle) = RateLimitLayer::new(
//!     RateLimitConfig::builder()
//!         .exempt_path("/health/*")
//!         .policy(PolicyConfig::builder("api").per_second(100).burst(20))
//!         .build()?,
//! );
//! limit_handle.register(&registry)?;
//! let (cache, cache_handle) = ResponseCacheLayer::new(ResponseCacheConfig::default())?;
//! registry.register("responses", Arc::new(cache_handle))?;
//! let (breaker, breaker_handle) =
//!     CircuitBreakerLayer::new(CircuitBreakerConfig::seed().with_name("app"));
//! registry.register("app", Arc::new(breaker_handle))?;
//!
//! // The existing router, wrapped: outermost layer first.
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(observe)
//!         .layer(drain.layer())
//!         .layer(limit)
//!         .layer(cache)
//!         .layer(breaker),
//! );
//!
//! // Serve it with `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`
//! // and the admin API with `axum::serve(admin_listener, palisade::admin::router(registry, ..))`.
//! // Here one request goes through in process; `PeerAddr` stands in for the socket peer.
//! let mut req = http::Request::get("/").body(Body::empty())?;
//! req.extensions_mut().insert(PeerAddr("192.0.2.1:5000".parse()?));
//! let res = app.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert!(res.headers().contains_key("x-request-id"));
//! assert_eq!(res.headers()["ratelimit-policy"], "\"api\";q=100;w=1");
//! assert_eq!(observe_handle.traffic().requests_total, 1);
//!
//! // A runtime change, exactly what `PUT /admin/v1/limits/api {"burst": 50}` does.
//! let api = registry.get("api").expect("registered");
//! api.apply(&serde_json::json!({ "burst": 50 }), false).expect("a valid change");
//! assert_eq!(limit_handle.policy("api").expect("a policy").limits().burst, 50);
//! // Invalid changes are refused with reasons and change nothing.
//! assert!(api.apply(&serde_json::json!({ "burst": 0 }), false).is_err());
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "rate-limit", feature = "circuit-breaker", feature = "cache",
//! #     feature = "shutdown", feature = "observe", feature = "admin")))]
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
//!
//! Recommended order, outermost first: observe, drain, rate limit, response cache, circuit
//! breaker. Observe first sees every refusal; the drain layer's body type cannot carry a
//! refusal, so it stays outside the layers that make them; refusing early (rate limit) spends
//! nothing. Inside an axum `Router` (`Router::layer`) the layers run after routing and know the
//! route template.
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
//! `docs/configuration.md` (the reference server's settings), and runnable programs in
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
//! | `shutdown`        | graceful drain coordinator                                   |
//! | `observe`         | request ids, trace context, spans, metrics, live histograms  |
//! | `timeout`         | the request timeout layer (504 / 408)                        |
//! | `concurrency-limit` | the concurrency limit with load shedding (503)             |
//! | `admin`           | the admin HTTP router over the control registry              |
//!
//! All are on by default; Redis is only *used* when configured.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[macro_use]
mod macros;

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;
#[cfg(feature = "concurrency-limit")]
pub mod concurrency;
pub mod control;
#[cfg(feature = "observe")]
pub mod observe;
#[cfg(any(feature = "timeout", feature = "concurrency-limit"))]
mod path_pattern;
pub mod problem;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "shutdown")]
pub mod shutdown;
#[cfg(feature = "timeout")]
pub mod timeout;
