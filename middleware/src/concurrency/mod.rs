//! A concurrency limit that sheds load: beyond `max_in_flight` requests in flight, a new
//! request is answered at once with `503 Service Unavailable` and `Retry-After`, instead of
//! queueing behind the others. Optionally adaptive (AIMD).
//!
//! # Guarantees
//!
//! * **Shed, don't queue.** Admission is one atomic compare-and-swap in `call`; a request over
//!   the limit costs a ready-made problem document, and the requests admitted keep their
//!   latency because the work in the process stays bounded.
//! * **Idle connections hold nothing.** The slot is taken when a request is called, never in
//!   `poll_ready` (which hyper runs before a request exists), and given back when the response
//!   head is ready or the request is dropped (client gone, a timeout layer around it).
//! * **One count for every clone.** The layer, its services and the handle share one counter,
//!   so the per-connection clones a server makes enforce one limit per process.
//! * **Runtime changes keep state.** [`ConcurrencyLimitHandle`] changes the limit or the
//!   algorithm; requests in flight keep their slots; a lowered limit admits nobody new until
//!   enough of them finish, without underflow.
//! * **Probes get through**: `exempt_path("/health/*")`.
//!
//! # Adaptive limit (AIMD)
//!
//! With [`Algorithm::Aimd`] the limit moves between `min_in_flight` and `max_in_flight`: `+1`
//! after a good response while at least half of the limit was in use when the request was
//! admitted; `× backoff_percent / 100` (at least `-1`) after a *drop*: a response slower than
//! `latency_threshold_ms`, a `503`/`504` from the service (e.g. a timeout layer inside), or an
//! error. Shed requests are not samples. Latency is measured with Tokio's clock.
//!
//! # Caveats
//!
//! * The slot covers the response *head*; a streaming response body is not counted.
//! * In a multi-process server each process has its own limit: the server-wide limit is the
//!   sum over workers.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use palisade::concurrency::{ConcurrencyLimitConfig, ConcurrencyLimitLayer};
//! use tokio::sync::Notify;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let (layer, handle) = ConcurrencyLimitLayer::new(
//!     ConcurrencyLimitConfig::builder().max_in_flight(1).retry_after_secs(2).build()?,
//! );
//! let release = std::sync::Arc::new(Notify::new());
//! let gate = release.clone();
//! let svc = ServiceBuilder::new().layer(layer).service_fn(move |_req: http::Request<()>| {
//!     let gate = gate.clone();
//!     async move {
//!         gate.notified().await; // a slow handler
//!         Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("done"))))
//!     }
//! });
//!
//! let first = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
//! while handle.in_flight() == 0 {
//!     tokio::task::yield_now().await;
//! }
//! // A second request while the first is in flight is shed at once.
//! let shed = svc.clone().oneshot(http::Request::new(())).await?;
//! assert_eq!(shed.status(), 503);
//! assert_eq!(shed.headers()["retry-after"], "2");
//!
//! release.notify_one();
//! assert_eq!(first.await??.status(), 200);
//! assert_eq!((handle.stats().allowed, handle.stats().rejected), (1, 1));
//!
//! // At runtime, e.g. from `PUT /admin/v1/limits/concurrency {"max_in_flight": 64}`:
//! handle.set_max_in_flight(64).map_err(|e| format!("{e:?}"))?;
//! assert_eq!(handle.limit(), 64);
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! `palisade_concurrency_requests_total{name, decision = "allowed" | "rejected"}`,
//! `palisade_concurrency_in_flight{name}`, `palisade_concurrency_limit{name}`.

mod config;
mod future;
mod handle;
mod layer;
mod service;
mod shared;

#[cfg(test)]
mod tests;

pub use config::{
    Algorithm, ConcurrencyLimitConfig, ConcurrencyLimitConfigBuilder, ConcurrencySettings,
    ConfigError, MAX_LIMIT,
};
pub use future::ResponseFuture;
pub use handle::{ConcurrencyLimitHandle, ConcurrencyStats};
pub use layer::ConcurrencyLimitLayer;
pub use service::ConcurrencyLimit;
#[cfg(feature = "stack")]
pub(crate) use service::{Admitted, admit};
