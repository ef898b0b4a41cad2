//! Circuit breaking for inbound routes, outbound clients and internal dependencies (Redis).
//!
//! A breaker watches call outcomes in a sliding window and, when too many fail or are slow,
//! *opens*: calls are refused at once (an HTTP `503` with `Retry-After`, or a typed
//! [`CircuitOpen`] error) without touching the sick dependency. After `wait_in_open` it goes
//! *half-open* and admits exactly `half_open_max_calls` probes; their outcomes close it again or
//! re-open it.
//!
//! # Semantics (resilience4j's)
//!
//! * **Window**: count-based (the last `window_size` calls) or time-based (the calls of the last
//!   `window_size` seconds, in `clamp(window_size, 10, 60)` buckets).
//! * **Trip**: once the window holds at least `minimum_calls`, the breaker opens when the failure
//!   rate reaches `failure_rate_threshold` percent, or the slow-call rate (calls lasting at least
//!   `slow_call_duration_ms`, successful or not) reaches `slow_call_rate_threshold`. Rates are
//!   compared with `>=`.
//! * **Open**: every call is refused with the remaining open time. The move to half-open is
//!   automatic once `wait_in_open_ms` has passed, performed by the next call or stats read (no
//!   background task).
//! * **Half-open**: exactly `half_open_max_calls` probes are admitted (reserved atomically at
//!   admission, so concurrent callers cannot all become probes); further calls are refused. The
//!   rates are computed over the probes: the breaker re-opens as soon as the failure (or slow)
//!   rate over all probes is certain to reach its threshold, and closes with an empty window
//!   when every probe completed below it. With `max_wait_in_half_open_ms`, probes that have not
//!   all finished by then re-open it.
//! * **Operator states** (handle actions): `forced_open` (refuse all), `forced_closed` (admit
//!   all, record, never trip) and `disabled` (admit all, record nothing); `reset` returns to
//!   closed with an empty window.
//! * **Outcomes**: a [`Classify`] turns each result into [`Outcome::Success`], `Failure` or
//!   `Ignored`. The default for HTTP ([`HttpClassifier`]) counts service errors and `5xx` as
//!   failures and everything else, `4xx` included, as success; [`ErrorClassifier`] counts `Err`.
//!   `call_timeout_ms` (off by default) turns an over-long call into a failure. A call whose
//!   future is dropped (client gone) is **cancelled**: counted, never in the window, and a
//!   half-open probe slot is handed back. A result that arrives after the state changed since its
//!   admission (a slow call admitted while closed) is **stale** and cannot flip the new state.
//!
//! # Cost
//!
//! The closed-state path is lock-free: one atomic load to admit, and to record a `fetch_add`
//! on a slot index, a `swap` of the slot and counter increments; no clock read unless slow-call
//! tracking or a time window needs one. Open-state refusal is an atomic load, a clock read and a
//! counter increment. Moving a time-window bucket to a new period (once per bucket width) and
//! state transitions take a small mutex.
//!
//! # Examples
//!
//! Protecting any async call, e.g. a Redis command:
//!
//! ```
//! use palisade::circuit_breaker::{CallError, CircuitBreaker, CircuitBreakerConfig};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = CircuitBreakerConfig::builder()
//!     .name("redis")
//!     .count_window(20)
//!     .minimum_calls(5)
//!     .failure_rate_threshold(50.0)
//!     .wait_in_open(Duration::from_secs(5))
//!     .call_timeout(Duration::from_millis(50))
//!     .build()
//!     .unwrap();
//! let breaker = CircuitBreaker::new(config);
//!
//! for _ in 0..5 {
//!     let r: Result<(), _> = breaker.call(async { Err::<(), _>("connection refused") }).await;
//!     assert!(matches!(r, Err(CallError::Inner(_))));
//! }
//! // Open: refused without running the future.
//! let r = breaker.call(async { Ok::<_, &str>(42) }).await;
//! let Err(CallError::Open(open)) = r else { panic!("expected open") };
//! assert_eq!(open.retry_after_secs(), 5);
//! # }
//! ```
//!
//! The permit API gives full control (e.g. to decide the outcome from a reply):
//!
//! ```
//! use palisade::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, Outcome};
//!
//! let breaker = CircuitBreaker::new(CircuitBreakerConfig::five_consecutive_failures());
//! match breaker.try_acquire() {
//!     Ok(permit) => {
//!         let reply_ok = true; // ... make the call ...
//!         permit.record(if reply_ok { Outcome::Success } else { Outcome::Failure });
//!     }
//!     Err(open) => { /* fall back; retry after open.retry_after() */ }
//! }
//! ```
#![cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]

mod breaker;
mod classify;
mod config;
mod error;
mod future;
mod handle;
mod keyed;
mod layer;
mod metrics;
mod service;
mod window;

pub use breaker::{CallPermit, CircuitBreaker, Outcome, State, WindowStats};
pub use classify::{Classify, ClassifyFn, ErrorClassifier, HttpClassifier, classify_fn};
pub use config::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, CircuitBreakerSettings, ConfigError,
    WindowKind,
};
#[cfg(feature = "stack")]
pub(crate) use error::timeout_response;
pub use error::{CallError, CircuitOpen};
pub use future::ResponseFuture;
pub use handle::{BreakerAction, BreakerActionResult, CircuitBreakerHandle};
pub use keyed::KeyedCircuitBreaker;
#[cfg(feature = "axum")]
pub use layer::ByRoute;
pub use layer::{
    ByHost, CircuitBreakerLayer, Inbound, KeyFn, Keyed, Mode, Outbound, SelectBreaker,
};
pub use service::CircuitBreakerService;

#[cfg(test)]
mod tests;
