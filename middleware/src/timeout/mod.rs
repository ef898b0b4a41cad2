//! A request timeout: a handler that has not produced a response head by the deadline is cut
//! off and the client gets a `504 Gateway Timeout` problem document, or `408 Request Timeout`
//! when the service was waiting for the request body the client had not finished sending.
//!
//! # Guarantees
//!
//! * **A hung handler never holds its slot past the deadline.** At the deadline the inner
//!   future is dropped at once, so what it holds (a database connection, a concurrency permit,
//!   a breaker permit) is released before the refusal is written.
//! * **504 or 408, never a dropped connection.** `504` means the service was too slow;
//!   `408` (with `Connection: close`) means the service was blocked reading the request body:
//!   a slow or stalled client. Both are `application/problem+json` with a `timeout_ms` member.
//! * **Runtime changes without a restart.** The [`TimeoutHandle`] changes the deadline or
//!   switches timing off; requests that start afterwards use the new settings, requests in
//!   flight keep theirs.
//! * **Exemptions** (`exempt_path`) for long polls, event streams and probes.
//!
//! # Caveats
//!
//! * The deadline covers the response *head*. A streaming response body is not timed.
//! * Cancelling drops the handler's future: work it started elsewhere (a query running on a
//!   database server, a write on a connection thread) may still finish after the client got
//!   its `504`. Keep writes idempotent, and keep the timeouts of dependencies (database, Redis)
//!   shorter than this one so they fail first and report what failed.
//! * The clock is Tokio's: tests drive it with `tokio::time::pause()` and `advance`.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use palisade::timeout::{TimeoutBody, TimeoutConfig, TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let (layer, handle) = TimeoutLayer::new(
//!     TimeoutConfig::builder().timeout(Duration::from_millis(100)).build()?,
//! );
//! // The service sees the request body as a `TimeoutBody` (the same bytes, watched).
//! let svc = ServiceBuilder::new().layer(layer).service_fn(|req: http::Request<TimeoutBody<Full<Bytes>>>| async move {
//!     // A handler that takes as long as the query string says.
//!     let ms: u64 = req.uri().query().unwrap_or("0").parse().unwrap_or(0);
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("done"))))
//! });
//!
//! let req = |ms: u64| http::Request::get(format!("/?{ms}")).body(Full::new(Bytes::new()));
//! assert_eq!(svc.clone().oneshot(req(50)?).await?.status(), 200);
//! let res = svc.clone().oneshot(req(500)?).await?;
//! assert_eq!(res.status(), 504);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//!
//! // At runtime, e.g. from `PUT /admin/v1/limits/timeout {"timeout_ms": 1000}`:
//! handle.set_timeout(Duration::from_secs(1)).map_err(|e| format!("{e:?}"))?;
//! assert_eq!(svc.clone().oneshot(req(500)?).await?.status(), 200);
//! assert_eq!(handle.stats().timed_out, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! `palisade_timeout_requests_total{name, outcome = "timed_out" | "client_timed_out"}`.

mod body;
mod config;
mod future;
mod handle;
mod layer;
mod service;
mod shared;

#[cfg(test)]
mod tests;

pub use body::TimeoutBody;
pub use config::{
    ConfigError, MAX_TIMEOUT_MS, TimeoutConfig, TimeoutConfigBuilder, TimeoutSettings,
};
pub use future::ResponseFuture;
pub use handle::{TimeoutHandle, TimeoutStats};
pub use layer::TimeoutLayer;
pub use service::Timeout;
