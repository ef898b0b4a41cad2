//! Request ids, W3C trace context, one span per request, OpenTelemetry HTTP metrics and live
//! latency histograms.
//!
//! [`ObserveLayer`] does it all in one pass per request:
//!
//! 1. **Request id and trace context** ([`context`]): a valid incoming `x-request-id` (at most
//!    128 bytes of `[A-Za-z0-9._:-]`) is kept, anything else is replaced, a missing one is
//!    generated; it is echoed on the response and stored as a [`RequestId`] extension. A valid
//!    `traceparent` is continued with a new span id for this hop, an invalid one starts a new
//!    trace ([`TraceContext`]); the response carries our `traceparent`.
//! 2. **A span** named `http_request` with `http.request.method`, `http.route` (the route
//!    *template*, `unmatched` when no route matched, never the raw path), `request_id`,
//!    `trace_id`, `span_id`; a `request completed` event with `http.response.status_code` and
//!    `latency_ms` at a configurable level ([`TraceConfig`]).
//! 3. **Metrics** through the [`metrics`](::metrics) facade with OpenTelemetry names
//!    ([`observe::metrics`](self::metrics) lists them); [`PrometheusExporter`] renders them for `/metrics`.
//! 4. **Live statistics** ([`StatsRecorder`]): HDR latency histograms over 10 s and 60 s windows,
//!    counters by status class and route, in flight; snapshots serialize compactly and merge
//!    exactly across workers ([`StatsSnapshot`]).
//!
//! The pieces are usable alone: [`RequestContextLayer`], [`trace_layer`] (tower-http's
//! `TraceLayer` with the same span), [`StatsRecorder`], [`PrometheusExporter`]. Binaries set up
//! logging with [`init_tracing`].
//!
//! # Placement
//!
//! Add the layer with axum's `Router::layer`: it then runs after routing and sees the route
//! template. Wrapped around the router instead (a `ServiceBuilder`, a custom accept loop), it runs
//! before routing; add [`RouteLayer`] inside the router so the template still reaches it.
//!
//! Latency is measured to the response head (what OpenTelemetry's duration measures for
//! non-streaming responses); a streamed body's transfer time is not included.
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::get, body::Body};
//! use palisade::observe::{ObserveConfig, ObserveLayer, PrometheusExporter};
//! use tower::ServiceExt;
//!
//! # fn main() {
//! // A binary installs the exporter globally once: `PrometheusExporter::install()`.
//! let (recorder, exporter) = PrometheusExporter::build().unwrap();
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! metrics::with_local_recorder(&recorder, || rt.block_on(async {
//!     let (observe, handle) = ObserveLayer::new(ObserveConfig::default());
//!     let app = Router::new()
//!         .route("/users/{id}", get(|| async { "hi" }))
//!         .route_service("/metrics", exporter.service())
//!         .layer(observe);
//!
//!     let req = http::Request::get("/users/42").header("x-request-id", "req-1").body(Body::empty()).unwrap();
//!     let res = app.clone().oneshot(req).await.unwrap();
//!     assert_eq!(res.headers()["x-request-id"], "req-1");
//!     assert!(res.headers().contains_key("traceparent"));
//!
//!     let traffic = handle.traffic();
//!     assert_eq!(traffic.requests_total, 1);
//!     assert_eq!(traffic.status.success, 1);
//! }));
//! let text = exporter.render();
//! assert!(text.contains(r#"http_route="/users/{id}""#));
//! assert!(!text.contains("/users/42"));
//! # }
//! ```

pub mod context;
pub mod metrics;
pub mod stats;

#[cfg(feature = "otel")]
pub mod otel;

mod config;
mod future;
mod layer;
mod log_ids;
mod prometheus;
mod route;
mod service;
mod trace;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, ObserveConfig, ObserveConfigBuilder, TraceConfig};
pub use context::{
    MAX_REQUEST_ID_LEN, MAX_TRACESTATE_LEN, RequestContext, RequestContextConfig,
    RequestContextConfigBuilder, RequestContextLayer, RequestId, SpanId, TraceContext, TraceId,
    TraceParent, is_valid_request_id,
};
pub use future::ResponseFuture;
#[cfg(feature = "stack")]
pub(crate) use future::State;
pub use layer::{ObserveHandle, ObserveLayer};
pub use log_ids::WithRequestIds;
#[cfg(feature = "stack")]
pub(crate) use log_ids::{LogIds, Scope};
pub use prometheus::{
    CONTENT_TYPE, MetricsService, PrometheusExporter, merge_expositions, prometheus_builder,
};
pub use route::{MatchedRoute, Route, RouteFuture, RouteLayer};
pub use service::Observe;
#[cfg(feature = "stack")]
pub(crate) use service::{Begun, begin};
pub use stats::{
    InFlightGuard, LatencyHistogram, StatsConfig, StatsConfigBuilder, StatsRecorder, StatsSnapshot,
};
#[cfg(feature = "otel")]
pub use trace::init_tracing_with_otel;
pub use trace::{
    HttpTraceLayer, InitError, LogFormat, MakeRequestSpan, OnRequestEnd, OnRequestFailure,
    init_tracing, trace_layer,
};
