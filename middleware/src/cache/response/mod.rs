//! HTTP response cache: a tower layer storing responses in a
//! [`TwoLevelCache`](crate::cache::TwoLevelCache).
//!
//! What it does (an RFC 9111 subset for a shared cache):
//!
//! - Serves `GET` and `HEAD` (from the stored `GET`); other methods pass through
//!   (`Cache-Status: ...; fwd=method`), and a successful `POST`/`PUT`/`PATCH`/`DELETE`
//!   invalidates the URI on every node.
//! - Key: method + host + path + query, plus the request's values of the fields the response
//!   names in `Vary` (`Vary: *` is never stored).
//! - Freshness: `s-maxage`, else `max-age`, else `Expires - Date`, minus the `Age` the response
//!   arrived with; `default_ttl_ms` for responses stating none (off by default). Stored only for
//!   heuristically cacheable statuses (200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501).
//! - Never stored: `no-store`, `private`, `no-cache` (no revalidation support, so not stored at
//!   all), `Set-Cookie`, bodies above `max_body_bytes` (buffered at most up to the cap, then
//!   streamed through), and responses to requests with `Authorization` or `Cookie` (those
//!   requests bypass the cache unless `allow_authorized`, and then only `public`/`s-maxage`
//!   responses are stored).
//! - Request `no-store` bypasses; `no-cache`, `max-age=0` or `Pragma: no-cache` forward and
//!   store the new response.
//! - `Age` on every cached response; `stale-while-revalidate` (serve stale, refresh once in the
//!   background) and `stale-if-error` (serve stale when the origin errs or answers 500, 502, 503,
//!   504), except under `must-revalidate`, `proxy-revalidate`, `s-maxage`.
//! - Concurrent misses for one URI are collapsed: one request goes to the origin, the others
//!   wait up to `lock_timeout_ms` and are served what it stored.
//! - `Cache-Status` (RFC 9211) on every response, appended after any upstream member:
//!   `palisade; hit; ttl=12`, `palisade; fwd=miss; stored`, `palisade; fwd=vary-miss`,
//!   `palisade; hit; ttl=-2; detail=stale-while-revalidate`,
//!   `palisade; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error`, `palisade; fwd=bypass`,
//!   `palisade; fwd=request; stored` (client asked to reload), `; collapsed` on requests that
//!   waited for another.
//!
//! Not implemented: conditional revalidation (`ETag`/`If-None-Match` → 304), range requests,
//! request `max-stale`/`min-fresh`/`only-if-cached`.
//!
//! The response body type becomes [`CacheBody<B>`](CacheBody) (implements `Body` and
//! `From<Bytes>`).
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use palisade::cache::response::{ResponseCacheConfig, ResponseCacheLayer, CACHE_STATUS};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (layer, handle) = ResponseCacheLayer::new(ResponseCacheConfig::default()).unwrap();
//! let svc = layer.layer(service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(
//!         Response::builder()
//!             .header("cache-control", "public, max-age=60")
//!             .body(Full::new(Bytes::from_static(b"[\"Ada\"]")))
//!             .unwrap(),
//!     )
//! }));
//!
//! let get = || Request::get("http://api.local/names").body(Full::default()).unwrap();
//! let first = svc.clone().oneshot(get()).await.unwrap();
//! assert_eq!(first.headers()[CACHE_STATUS], "palisade; fwd=miss; stored");
//! let second = svc.clone().oneshot(get()).await.unwrap();
//! assert!(second.headers()[CACHE_STATUS].to_str().unwrap().starts_with("palisade; hit; ttl="));
//! assert_eq!(second.headers()["age"], "0");
//! assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "[\"Ada\"]");
//! assert_eq!(handle.stats().hits, 1);
//! # }
//! ```

mod body;
mod config;
mod directives;
mod future;
mod handle;
mod layer;
mod service;
mod shared;
mod stored;

pub use body::CacheBody;
pub use config::{ResponseCacheConfig, ResponseCacheConfigBuilder};
pub use future::ResponseFuture;
pub use handle::{ResponseCacheAction, ResponseCacheHandle};
pub use layer::ResponseCacheLayer;
pub use service::{CACHE_STATUS, ResponseCache};
pub use shared::{METRIC_HTTP_RESPONSES, METRIC_HTTP_STORED, ResponseCacheStats};
