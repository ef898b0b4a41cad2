//! Graceful shutdown: a [`Drain`] coordinator and its [`DrainLayer`].
//!
//! # The sequence
//!
//! 1. **Readiness fails.** [`Drain::start`] (or the first SIGTERM/SIGINT through
//!    [`shutdown_signal`]) flips [`Drain::is_ready`] to `false`; serve
//!    [`Drain::readiness`] at your readiness path and it answers `503`. The server keeps
//!    accepting and serving normally.
//! 2. **Delay.** For [`DrainConfig::delay`], so load balancers and Kubernetes endpoints notice
//!    and stop routing new traffic here.
//! 3. **Accept stops.** [`Drain::accept_stopped`] completes; the accept loop (or
//!    `axum::serve`'s graceful shutdown) stops accepting and closes the listener, so late
//!    connection attempts are refused at once instead of hanging.
//! 4. **Connections close.** From now on [`DrainLayer`] adds `Connection: close` to HTTP/1
//!    responses, so keep-alive clients reconnect elsewhere after their current request; HTTP/2
//!    connections get GOAWAY from hyper's graceful shutdown.
//! 5. **Streams end.** [`DrainSignal::cancelled`] completes, so SSE/WebSocket handlers end their
//!    streams instead of holding the shutdown forever.
//! 6. **Finish.** [`Drain::wait`] returns when nothing is in flight or at the deadline
//!    ([`DrainConfig::grace`] after accept stopped, through [`Drain::run`]), with a
//!    [`DrainReport`] of what completed and what was cut. A second signal forces the exit.
//!
//! A request counts as in flight from the moment [`DrainLayer`] sees it until its response body
//! has been sent or dropped.
//!
//! # With `axum::serve`
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use palisade::shutdown::{Drain, DrainConfig, shutdown_signal};
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let drain = Drain::new(DrainConfig::builder().delay(Duration::from_secs(5)).build().unwrap());
//!     let ready = drain.clone();
//!     let app = Router::new()
//!         .route("/", get(|| async { "hello" }))
//!         .route("/health/ready", get(move || { let d = ready.clone(); async move { d.readiness::<axum::body::Body>() } }))
//!         .layer(drain.layer());
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//!
//!     let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal(drain.clone()));
//!     let report = drain.run(server).await?;
//!     println!("drained: {} completed, {} cut", report.completed, report.cut);
//!     Ok(())
//! }
//! ```
//!
//! # With a hyper-util accept loop
//!
//! ```no_run
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::{conn::auto, graceful::GracefulShutdown};
//! use hyper_util::service::TowerToHyperService;
//! use palisade::shutdown::{Drain, DrainConfig};
//! use tower::ServiceBuilder;
//!
//! # async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
//! let drain = Drain::new(DrainConfig::default());
//! let svc = ServiceBuilder::new().layer(drain.layer()).service(app);
//! let graceful = GracefulShutdown::new();
//! let builder = auto::Builder::new(TokioExecutor::new());
//! // Elsewhere, on SIGTERM or an admin request: `drain.start()`.
//! let stop = drain.accept_stopped();
//! tokio::pin!(stop);
//! loop {
//!     tokio::select! {
//!         conn = listener.accept() => {
//!             let Ok((stream, _)) = conn else { continue };
//!             let conn = builder.serve_connection_with_upgrades(
//!                 TokioIo::new(stream),
//!                 TowerToHyperService::new(svc.clone()),
//!             );
//!             let conn = graceful.watch(conn.into_owned());
//!             tokio::spawn(async move { let _ = conn.await; });
//!         }
//!         _ = &mut stop => break,
//!     }
//! }
//! drop(listener); // refuse new connections now
//! // Close idle connections, GOAWAY on HTTP/2, while in-flight requests finish.
//! let closed = tokio::spawn(graceful.shutdown());
//! let report = drain.wait(drain.config().grace()).await;
//! if report.cut > 0 {
//!     // Connection tasks still running are cut: abort them (e.g. via a JoinSet) and exit.
//! }
//! let _ = closed;
//! # }
//! ```
//!
//! # Long-lived streams
//!
//! ```
//! use palisade::shutdown::{Drain, DrainConfig};
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let drain = Drain::new(DrainConfig::default());
//! let signal = drain.signal();
//! let stream = tokio::spawn(async move {
//!     let mut events = 0;
//!     loop {
//!         tokio::select! {
//!             _ = signal.cancelled() => return events,
//!             _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => events += 1,
//!         }
//!     }
//! });
//! tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
//! drain.start(); // no delay configured: streams are told to end at once
//! assert_eq!(stream.await.unwrap(), 2);
//! # }
//! ```

mod body;
mod config;
mod drain;
mod future;
mod layer;
mod signal;

#[cfg(test)]
mod tests;

pub use body::DrainBody;
pub use config::{ConfigError, DrainConfig, DrainConfigBuilder, MAX_DURATION};
pub use drain::{Drain, DrainGuard, DrainPhase, DrainReport, DrainSignal};
pub use future::ResponseFuture;
pub use layer::{DrainLayer, DrainService};
pub use signal::shutdown_signal;
