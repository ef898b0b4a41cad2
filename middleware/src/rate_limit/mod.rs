//! GCRA rate limiting: local, shared across worker processes, or distributed on Redis, with
//! limits that change at runtime without losing state.
//!
//! A [`RateLimitLayer`] holds named policies. Each policy has a quota (`rate` per `per`, with a
//! `burst`), a key ([`KeySource`]: global, client IP, header, route template or a closure), an
//! optional path/method filter, a [`Mode`] (enforce, shadow, off) and a [`Store`]. Every policy
//! that applies to a request must pass. A rejected request gets `429 Too Many Requests` with an
//! `application/problem+json` body (type `quota-exceeded`, `violated-policies`,
//! `retry_after_ms`), `Retry-After` in whole seconds (rounded up, never 0) and, unless disabled,
//! the IETF `RateLimit-Policy` / `RateLimit` headers (see [`headers`]), which also
//! go on allowed responses.
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::get, body::Body};
//! use http::Request;
//! use palisade::rate_limit::{PeerAddr, PolicyConfig, RateLimitConfig, RateLimitLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let config = RateLimitConfig::builder()
//!     .exempt_path("/health/*")
//!     .policy(PolicyConfig::builder("api").per_second(100).burst(2))
//!     .build()
//!     .unwrap();
//! let (layer, handle) = RateLimitLayer::new(config);
//! let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
//!
//! let request = || {
//!     let mut req = Request::new(Body::empty());
//!     req.extensions_mut().insert(PeerAddr("192.0.2.1:5000".parse().unwrap()));
//!     req
//! };
//! let ok = app.clone().oneshot(request()).await.unwrap();
//! assert_eq!(ok.status(), 200);
//! assert_eq!(ok.headers()["ratelimit"], "\"api\";r=1;t=1");
//! assert_eq!(ok.headers()["ratelimit-policy"], "\"api\";q=100;w=1");
//! app.clone().oneshot(request()).await.unwrap();
//! let limited = app.clone().oneshot(request()).await.unwrap();
//! assert_eq!(limited.status(), 429);
//! assert_eq!(limited.headers()["retry-after"], "1");
//!
//! // Runtime change: the key keeps its position (no refill, no lock-out).
//! let api = handle.policy("api").unwrap();
//! let mut limits = api.limits();
//! limits.burst = 5;
//! api.set_limits(limits).unwrap();
//! assert_eq!(app.oneshot(request()).await.unwrap().status(), 200);
//! assert_eq!(api.stats().rejected, 1);
//! # }
//! ```
//!
//! # Keys and client IPs
//!
//! The client IP is the socket peer, read from a [`PeerAddr`] extension or axum's
//! `ConnectInfo<SocketAddr>`. `X-Forwarded-For` (or `Forwarded`) is believed only when the peer is
//! in the trusted-proxy list, and is then read right to left (see [`ClientIpConfig`]); a spoofed
//! leftmost entry from an untrusted client never becomes a key. Requests with no peer address
//! share one `<unknown-peer>` bucket (a warning is logged once). Exemptions (paths, client
//! networks) skip every policy.
//!
//! # Evaluation order and refunds
//!
//! Policies on synchronous stores (local, shared memory) are checked first, in declaration order,
//! then those on Redis. A check consumes when it conforms. When an enforced policy rejects, the
//! cells already taken by earlier policies are refunded, so a rejected request costs nothing
//! (for local and shared-memory stores the refund is one atomic update; for Redis it is a second
//! script call, so another request may briefly see those cells as taken). Later synchronous
//! policies are then *peeked* without consuming, so `Retry-After` is the longest wait among the
//! violated ones.
//!
//! # Runtime changes
//!
//! Each policy's [`PolicyHandle`] (a [`Component`](crate::control::Component) of kind `limit`)
//! changes `rate`, `per`, `burst` and `mode` atomically; invalid changes are refused with reasons
//! and change nothing. Stores keep each key's theoretical arrival time (TAT). When the quota
//! changes, each key's debt (TAT − now, the time it has borrowed) is re-expressed in the new
//! emission interval, so the key keeps the number of cells it has used, capped at the new burst:
//!
//! - a key that used 10 of 20 cells still has 10 used after the rate doubles or the burst grows
//!   to 40 (no refill: lowering a limit during an attack does not hand the attacker a fresh burst,
//!   the governor#39 symptom of replacing a limiter);
//! - a key that used more than a new, smaller burst has exactly used it all and waits one new
//!   emission interval (no lock-out).
//!
//! Local stores rescale in one pass over their table when the change is applied; a shared-memory
//! zone records the parameters its state is expressed in and is rescaled once even when every
//! worker applies the same change; Redis keys record the emission interval they were written with
//! and the script rescales each key on its next use. Requests checked during the instant of the
//! change may be evaluated with the new parameters against not-yet-rescaled state.
//!
//! # Stores
//!
//! - [`LocalStore`]: a fixed-size table in this process. **Why not `governor`?** Its quota is
//!   fixed at construction (changing it means a new limiter, whose keys start with a full burst,
//!   governor#39), and its keyed store grows without bound unless the caller schedules
//!   `retain_recent` (governor#171, a memory-exhaustion vector when keys are client-controlled).
//!   The GCRA itself is a few lines ([`Gcra`]); the store here is a set-associative table of
//!   `(key hash, TAT)` cells: memory is allocated once (`max_keys`), a 1M-key flood evicts idle
//!   keys first, then the key closest to idle, and checks of known keys are a lock-free CAS. Keys
//!   are 64-bit hashes (collisions share a bucket, probability ~n²/2⁶⁵).
//! - `ShmZone` (unix only): the same table in a shared-memory segment (a memory file on Linux, a
//!   POSIX shared-memory object on macOS, or a file) that worker processes attach to, so N
//!   workers enforce one limit exactly (nginx `limit_req_zone`). Elsewhere a policy with
//!   `store = "shm"` is a [`ConfigError::ShmUnsupported`].
//! - `RedisStore` (feature `redis`): GCRA in a Lua script on the Redis server's clock, with a
//!   per-call timeout, a circuit breaker and a [`FailureMode`] (default: local fallback). Redis
//!   being down never produces a 5xx.
//!
//! # Metrics
//!
//! See [`metrics`] for names and labels; [`PolicyHandle::stats`] reports the same
//! numbers for the admin API.

mod config;
mod future;
mod gcra;
mod handle;
pub mod headers;
mod key;
mod layer;
pub mod metrics;
mod service;
mod state;
mod store;
mod table;

#[cfg(test)]
mod tests;

pub use self::config::{
    ConfigError, DEFAULT_MAX_KEYS, FailureMode, HeaderMode, Limits, MAX_POLICIES, Mode,
    PolicyBuilder, PolicyConfig, RateLimitConfig, RateLimitConfigBuilder, StoreChoice,
};
pub use self::future::ResponseFuture;
#[cfg(feature = "stack")]
pub(crate) use self::future::add_headers;
pub use self::gcra::{Decision, Gcra};
pub use self::handle::{Freed, PolicyAction, PolicyHandle, PolicyStats, RateLimitHandle};
#[cfg(feature = "stack")]
pub(crate) use self::key::peer_ip;
pub use self::key::{
    ClientIpConfig, ForwardedHeader, KeyFn, KeySource, KeyValue, PeerAddr, RequestInfo,
};
pub use self::layer::RateLimitLayer;
#[cfg(feature = "stack")]
pub(crate) use self::service::{Admit, LimitHeaders, admit};
pub use self::service::{QUOTA_EXCEEDED, RateLimit};
pub use self::store::{Check, DecisionFuture, LocalStore, Store, StoreStats};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::store::{RedisOptions, RedisStore};
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub use self::store::{ShmStore, ShmZone};
