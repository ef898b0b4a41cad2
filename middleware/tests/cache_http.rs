//! The HTTP response cache layer: RFC 9111 directives, Vary, Age, stale serving, Cache-Status.
#![cfg(feature = "cache")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use palisade::cache::response::{
    CACHE_STATUS, CacheBody, ResponseCache, ResponseCacheConfig, ResponseCacheHandle,
    ResponseCacheLayer,
};
use palisade::cache::{CacheConfig, EvictionPolicy};
use palisade::control::DynComponent;
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, Service, ServiceExt};

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// What the fake origin answers; tests change it between requests.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
    delay: Duration,
    /// Answer with an error instead of a response.
    error: bool,
    /// Stream the body in these chunks (no size hint).
    chunks: Option<Vec<&'static str>>,
    /// Append the request's `accept-language` to the body.
    echo_language: bool,
}

impl Reply {
    fn ok(cache_control: &'static str, body: &'static str) -> Self {
        Self {
            status: 200,
            headers: vec![("cache-control", cache_control)],
            body,
            delay: Duration::ZERO,
            error: false,
            chunks: None,
            echo_language: false,
        }
    }
}

#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
}

impl Origin {
    fn new(reply: Reply) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            reply: Arc::new(Mutex::new(reply)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock() = reply;
    }
}

impl Service<Request<Full<Bytes>>> for Origin {
    type Response = Response<Body>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = self.reply.lock().clone();
        Box::pin(async move {
            sleep(reply.delay).await;
            if reply.error {
                return Err(std::io::Error::other("origin unreachable"));
            }
            let body = match (&reply.chunks, reply.echo_language) {
                (Some(chunks), _) => {
                    let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = chunks
                        .iter()
                        .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
                        .collect();
                    StreamBody::new(futures_util::stream::iter(frames)).boxed()
                }
                (None, true) => {
                    let lang = req
                        .headers()
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    full(format!("{}:{lang}", reply.body))
                }
                (None, false) => full(reply.body),
            };
            let mut res = Response::new(body);
            *res.status_mut() = StatusCode::from_u16(reply.status).unwrap();
            for (k, v) in &reply.headers {
                res.headers_mut().append(*k, HeaderValue::from_static(v));
            }
            Ok(res)
        })
    }
}

fn config() -> ResponseCacheConfig {
    ResponseCacheConfig {
        store: CacheConfig {
            name: "http-test".into(),
            namespace: "http-test".into(),
            l1_eviction: EvictionPolicy::Lru,
            ..CacheConfig::default()
        },
        ..ResponseCacheConfig::default()
    }
}

fn stack(
    cfg: ResponseCacheConfig,
    origin: &Origin,
) -> (ResponseCache<Origin>, ResponseCacheHandle) {
    let (layer, handle) = ResponseCacheLayer::new(cfg).unwrap();
    (layer.layer(origin.clone()), handle)
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

fn with(
    method: Method,
    uri: &str,
    headers: &[(&'static str, &'static str)],
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::default())
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(*k, HeaderValue::from_static(v));
    }
    req
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn cache_status(&self) -> String {
        let all: Vec<_> = self
            .headers
            .get_all(CACHE_STATUS)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        all.join(", ")
    }
}

async fn send(svc: &ResponseCache<Origin>, req: Request<Full<Bytes>>) -> Got {
    let res: Response<CacheBody<Body>> = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

const URI: &str = "http://api.test/names";

#[tokio::test(start_paused = true)]
async fn stores_then_serves_fresh_responses_with_age_and_cache_status() {
    let origin = Origin::new(Reply::ok("public, max-age=60", "hello"));
    let (svc, handle) = stack(config(), &origin);
    let r1 = send(&svc, get(URI)).await;
    assert_eq!(r1.cache_status(), "palisade; fwd=miss; stored");
    assert_eq!(r1.body, "hello");
    advance(Duration::from_secs(3)).await;
    let r2 = send(&svc, get(URI)).await;
    assert_eq!(r2.cache_status(), "palisade; hit; ttl=57");
    assert_eq!(r2.headers["age"], "3");
    assert_eq!(r2.headers["content-length"], "5");
    assert_eq!(r2.headers["cache-control"], "public, max-age=60");
    assert_eq!(r2.body, "hello");
    assert_eq!(origin.calls(), 1);
    let stats = handle.stats();
    assert_eq!((stats.hits, stats.misses, stats.stored), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_response_expires_after_max_age() {
    let origin = Origin::new(Reply::ok("max-age=2", "v1"));
    let (svc, _) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    advance(Duration::from_secs(1)).await;
    assert!(send(&svc, get(URI)).await.cache_status().contains("hit"));
    advance(Duration::from_secs(2)).await;
    let r = send(&svc, get(URI)).await;
    assert!(r.cache_status().contains("fwd="), "{}", r.cache_status());
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn s_maxage_takes_precedence_over_max_age() {
    let origin = Origin::new(Reply::ok("max-age=100, s-maxage=2", "v1"));
    let (svc, _) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    assert_eq!(
        send(&svc, get(URI)).await.cache_status(),
        "palisade; hit; ttl=2"
    );
    advance(Duration::from_secs(3)).await;
    send(&svc, get(URI)).await;
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn age_from_upstream_shortens_freshness() {
    let mut reply = Reply::ok("max-age=10", "v1");
    reply.headers.push(("age", "4"));
    let origin = Origin::new(reply);
    let (svc, _) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    advance(Duration::from_secs(1)).await;
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.headers["age"], "5");
    assert_eq!(r.cache_status(), "palisade; hit; ttl=5");
}

#[tokio::test(start_paused = true)]
async fn no_store_private_no_cache_set_cookie_and_missing_freshness_are_not_stored() {
    let cases: Vec<Reply> = vec![
        Reply::ok("no-store, max-age=60", "x"),
        Reply::ok("private, max-age=60", "x"),
        Reply::ok("no-cache, max-age=60", "x"),
        Reply {
            headers: vec![("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            ..Reply::ok("", "x")
        },
        Reply {
            headers: vec![],
            ..Reply::ok("", "x")
        },
        Reply {
            headers: vec![("cache-control", "max-age=60"), ("vary", "*")],
            ..Reply::ok("", "x")
        },
        Reply {
            status: 500,
            ..Reply::ok("max-age=60", "x")
        },
    ];
    for reply in cases {
        let label = format!("{:?} {}", reply.headers, reply.status);
        let origin = Origin::new(reply);
        let (svc, handle) = stack(config(), &origin);
        let r1 = send(&svc, get(URI)).await;
        let r2 = send(&svc, get(URI)).await;
        assert_eq!(origin.calls(), 2, "{label}");
        assert_eq!(r1.cache_status(), "palisade; fwd=miss", "{label}");
        assert!(!r2.cache_status().contains("stored"), "{label}");
        assert_eq!(handle.stats().stored, 0, "{label}");
    }
}

#[tokio::test(start_paused = true)]
async fn default_ttl_stores_responses_that_state_no_freshness() {
    let origin = Origin::new(Reply {
        headers: vec![],
        ..Reply::ok("", "x")
    });
    let cfg = ResponseCacheConfig {
        default_ttl_ms: Some(5_000),
        ..config()
    };
    let (svc, _) = stack(cfg, &origin);
    send(&svc, get(URI)).await;
    assert_eq!(
        send(&svc, get(URI)).await.cache_status(),
        "palisade; hit; ttl=5"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_with_credentials_bypass_the_cache() {
    let origin = Origin::new(Reply::ok("public, max-age=60", "shared"));
    let (svc, _) = stack(config(), &origin);
    // A request with Authorization is neither stored...
    let r = send(
        &svc,
        with(Method::GET, URI, &[("authorization", "Bearer a")]),
    )
    .await;
    assert_eq!(r.cache_status(), "palisade; fwd=bypass");
    assert!(
        send(&svc, get(URI))
            .await
            .cache_status()
            .contains("fwd=miss; stored")
    );
    // ...nor served from the cache.
    let r = send(&svc, with(Method::GET, URI, &[("cookie", "session=1")])).await;
    assert_eq!(r.cache_status(), "palisade; fwd=bypass");
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn allow_authorized_stores_only_explicitly_shareable_responses() {
    let cfg = ResponseCacheConfig {
        allow_authorized: true,
        ..config()
    };
    let origin = Origin::new(Reply::ok("max-age=60", "mine"));
    let (svc, _) = stack(cfg.clone(), &origin);
    let auth = || with(Method::GET, URI, &[("authorization", "Bearer a")]);
    send(&svc, auth()).await;
    assert_eq!(
        send(&svc, auth()).await.cache_status(),
        "palisade; fwd=miss"
    );

    let origin = Origin::new(Reply::ok("public, max-age=60", "everyone"));
    let (svc, _) = stack(cfg, &origin);
    send(&svc, auth()).await;
    assert!(
        send(&svc, auth())
            .await
            .cache_status()
            .starts_with("palisade; hit")
    );
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn vary_keys_responses_by_the_named_request_fields() {
    let origin = Origin::new(Reply {
        headers: vec![("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        echo_language: true,
        ..Reply::ok("", "names")
    });
    let (svc, _) = stack(config(), &origin);
    let lang = |l: &'static str| with(Method::GET, URI, &[("accept-language", l)]);
    let en = send(&svc, lang("en")).await;
    assert_eq!(
        (en.body.as_str(), en.cache_status().as_str()),
        ("names:en", "palisade; fwd=miss; stored")
    );
    let fr = send(&svc, lang("fr")).await;
    assert_eq!(
        (fr.body.as_str(), fr.cache_status().as_str()),
        ("names:fr", "palisade; fwd=vary-miss; stored")
    );
    let en = send(&svc, lang("en")).await;
    assert_eq!(en.body, "names:en");
    assert!(en.cache_status().starts_with("palisade; hit"));
    let fr = send(&svc, lang("fr")).await;
    assert_eq!(fr.body, "names:fr");
    assert!(fr.cache_status().starts_with("palisade; hit"));
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn request_no_cache_forwards_and_refreshes_the_entry() {
    let origin = Origin::new(Reply::ok("max-age=60", "v1"));
    let (svc, _) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    origin.set(Reply::ok("max-age=60", "v2"));
    let r = send(
        &svc,
        with(Method::GET, URI, &[("cache-control", "no-cache")]),
    )
    .await;
    assert_eq!(
        (r.body.as_str(), r.cache_status().as_str()),
        ("v2", "palisade; fwd=request; stored")
    );
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.body, "v2");
    assert!(r.cache_status().contains("hit"));
    let r = send(&svc, with(Method::GET, URI, &[("pragma", "no-cache")])).await;
    assert!(r.cache_status().contains("fwd=request"));
}

#[tokio::test(start_paused = true)]
async fn request_no_store_bypasses_the_cache() {
    let origin = Origin::new(Reply::ok("max-age=60", "v1"));
    let (svc, _) = stack(config(), &origin);
    let r = send(
        &svc,
        with(Method::GET, URI, &[("cache-control", "no-store")]),
    )
    .await;
    assert_eq!(r.cache_status(), "palisade; fwd=bypass");
    assert!(
        send(&svc, get(URI))
            .await
            .cache_status()
            .contains("fwd=miss")
    );
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_the_stored_get() {
    let origin = Origin::new(Reply::ok("max-age=60", "twelve bytes"));
    let (svc, _) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    let r = send(&svc, with(Method::HEAD, URI, &[])).await;
    assert!(r.cache_status().starts_with("palisade; hit"));
    assert_eq!(r.body, "");
    assert_eq!(r.headers["content-length"], "12");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn unsafe_methods_invalidate_the_uri() {
    let origin = Origin::new(Reply::ok("max-age=60", "v1"));
    let (svc, handle) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    send(&svc, get("http://api.test/other")).await;
    let r = send(&svc, with(Method::POST, URI, &[])).await;
    assert_eq!(r.cache_status(), "palisade; fwd=method");
    assert!(
        send(&svc, get(URI))
            .await
            .cache_status()
            .contains("fwd=miss")
    );
    assert!(
        send(&svc, get("http://api.test/other"))
            .await
            .cache_status()
            .contains("hit")
    );
    assert_eq!(handle.stats().invalidations, 1);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let origin = Origin::new(Reply::ok("max-age=1, stale-while-revalidate=30", "v1"));
    let (svc, handle) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    origin.set(Reply {
        delay: Duration::from_millis(100),
        ..Reply::ok("max-age=1, stale-while-revalidate=30", "v2")
    });
    advance(Duration::from_secs(3)).await;
    let started = Instant::now();
    let r = send(&svc, get(URI)).await;
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "stale is served without waiting"
    );
    assert_eq!(r.body, "v1");
    assert_eq!(
        r.cache_status(),
        "palisade; hit; ttl=-2; detail=stale-while-revalidate"
    );
    // A second stale request does not start a second revalidation.
    send(&svc, get(URI)).await;
    sleep(Duration::from_millis(150)).await;
    assert_eq!(origin.calls(), 2);
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.body, "v2");
    assert!(r.cache_status().starts_with("palisade; hit; ttl="));
    assert_eq!(handle.stats().revalidations, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_revalidation_keeps_the_stale_response() {
    let origin = Origin::new(Reply::ok("max-age=1, stale-while-revalidate=30", "v1"));
    let (svc, handle) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    origin.set(Reply {
        status: 503,
        ..Reply::ok("no-store", "down")
    });
    advance(Duration::from_secs(2)).await;
    assert_eq!(send(&svc, get(URI)).await.body, "v1");
    sleep(Duration::from_millis(10)).await;
    assert_eq!(origin.calls(), 2, "one background revalidation");
    // Still served stale (and revalidated again), not replaced by the failure.
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.body, "v1");
    assert!(r.cache_status().contains("stale-while-revalidate"));
    sleep(Duration::from_millis(10)).await;
    assert_eq!(handle.stats().revalidations, 2);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_when_the_origin_fails() {
    let origin = Origin::new(Reply::ok("max-age=1, stale-if-error=60", "v1"));
    let (svc, handle) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    advance(Duration::from_secs(5)).await;
    origin.set(Reply {
        status: 503,
        ..Reply::ok("no-store", "down")
    });
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "v1");
    assert_eq!(
        r.cache_status(),
        "palisade; fwd=stale; fwd-status=503; ttl=-4; detail=stale-if-error"
    );
    origin.set(Reply {
        error: true,
        ..Reply::ok("", "")
    });
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.body, "v1");
    assert!(r.cache_status().contains("detail=stale-if-error"));
    assert_eq!(handle.stats().stale_if_error, 2);
    // Past the window the origin's answer goes through.
    origin.set(Reply {
        status: 503,
        ..Reply::ok("no-store", "down")
    });
    advance(Duration::from_secs(60)).await;
    assert_eq!(send(&svc, get(URI)).await.status, 503);
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_forbids_serving_stale() {
    let origin = Origin::new(Reply::ok(
        "max-age=1, stale-if-error=60, must-revalidate",
        "v1",
    ));
    let (svc, _) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    advance(Duration::from_secs(2)).await;
    origin.set(Reply {
        status: 503,
        ..Reply::ok("no-store", "down")
    });
    let r = send(&svc, get(URI)).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (503, "down"));
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_cap_stream_through_and_are_not_stored() {
    let cfg = ResponseCacheConfig {
        max_body_bytes: 8,
        ..config()
    };
    // Known length over the cap.
    let origin = Origin::new(Reply::ok("max-age=60", "0123456789abcdef"));
    let (svc, handle) = stack(cfg.clone(), &origin);
    assert_eq!(send(&svc, get(URI)).await.body, "0123456789abcdef");
    assert_eq!(send(&svc, get(URI)).await.body, "0123456789abcdef");
    assert_eq!(origin.calls(), 2);
    assert_eq!(handle.stats().too_large, 2);

    // Unknown length: buffered up to the cap, then the rest streams through intact.
    let origin = Origin::new(Reply {
        chunks: Some(vec!["abcd", "efgh", "ijkl"]),
        ..Reply::ok("max-age=60", "")
    });
    let (svc, handle) = stack(cfg.clone(), &origin);
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.body, "abcdefghijkl");
    assert!(!r.cache_status().contains("stored"));
    assert_eq!(handle.stats().too_large, 1);

    // Unknown length within the cap is stored.
    let origin = Origin::new(Reply {
        chunks: Some(vec!["ab", "cd"]),
        ..Reply::ok("max-age=60", "")
    });
    let (svc, _) = stack(cfg, &origin);
    assert!(send(&svc, get(URI)).await.cache_status().contains("stored"));
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.body, "abcd");
    assert_eq!(r.headers["content-length"], "4");
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_for_one_uri_are_collapsed() {
    let origin = Origin::new(Reply {
        delay: Duration::from_millis(100),
        ..Reply::ok("max-age=60", "slow")
    });
    let (svc, handle) = stack(config(), &origin);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { send(&svc, get(URI)).await }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.body, "slow");
        statuses.push(r.cache_status());
    }
    assert_eq!(origin.calls(), 1);
    assert_eq!(statuses.iter().filter(|s| s.contains("stored")).count(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| s.contains("hit") && s.contains("collapsed"))
            .count(),
        9
    );
    assert_eq!(handle.stats().collapsed, 9);
}

#[tokio::test(start_paused = true)]
async fn uncacheable_uris_do_not_make_requests_wait_for_each_other() {
    let origin = Origin::new(Reply {
        delay: Duration::from_millis(100),
        ..Reply::ok("no-store", "private data")
    });
    let (svc, _) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { send(&svc, get(URI)).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(origin.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_cache_status_is_kept_and_ours_is_appended() {
    let origin = Origin::new(Reply {
        headers: vec![
            ("cache-control", "max-age=60"),
            ("cache-status", "origin-cache; hit"),
        ],
        ..Reply::ok("", "x")
    });
    let (svc, _) = stack(config(), &origin);
    let r = send(&svc, get(URI)).await;
    assert_eq!(
        r.cache_status(),
        "origin-cache; hit, palisade; fwd=miss; stored"
    );
    let r = send(&svc, get(URI)).await;
    assert_eq!(r.cache_status(), "origin-cache; hit, palisade; hit; ttl=60");
}

#[tokio::test(start_paused = true)]
async fn keys_include_the_query_and_the_host() {
    let origin = Origin::new(Reply::ok("max-age=60", "x"));
    let (svc, _) = stack(config(), &origin);
    send(&svc, get("http://a.test/names?x=1")).await;
    assert!(
        send(&svc, get("http://a.test/names?x=2"))
            .await
            .cache_status()
            .contains("miss")
    );
    assert!(
        send(&svc, get("http://b.test/names?x=1"))
            .await
            .cache_status()
            .contains("miss")
    );
    assert!(
        send(&svc, get("http://A.TEST/names?x=1"))
            .await
            .cache_status()
            .contains("hit")
    );
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_handle_invalidates_paths_and_applies_settings() {
    let origin = Origin::new(Reply::ok("max-age=60", "x"));
    let (svc, handle) = stack(config(), &origin);
    send(&svc, get(URI)).await;
    handle.invalidate_path(Some("api.test"), "/names").await;
    assert!(send(&svc, get(URI)).await.cache_status().contains("miss"));

    let v = handle.version();
    let errs = handle
        .apply(&json!({ "max_body_bytes": 0 }), false)
        .unwrap_err();
    assert_eq!(errs[0].field, "max_body_bytes");
    let errs = handle
        .apply(&json!({ "store": { "namespace": "x" } }), false)
        .unwrap_err();
    assert_eq!(errs[0].field, "namespace");
    assert_eq!(handle.version(), v);
    handle
        .apply(
            &json!({ "max_body_bytes": 4, "store": { "l1_capacity_bytes": 2097152 } }),
            false,
        )
        .unwrap();
    assert_eq!(handle.version(), v + 1);
    assert_eq!(handle.config().max_body_bytes, 4);
    assert_eq!(handle.store().config().l1_capacity_bytes, 2_097_152);
    assert_eq!(
        DynComponent::settings(&handle)["store"]["l1_capacity_bytes"],
        2_097_152
    );
    assert!(DynComponent::stats(&handle)["store"]["l1"]["hits"].is_u64());

    handle.action("flush", &json!({})).unwrap();
    sleep(Duration::from_millis(1)).await;
    let r = send(&svc, get("http://api.test/names")).await;
    assert!(r.cache_status().contains("miss"));
}

#[cfg(feature = "redis")]
mod with_redis {
    use super::*;
    use palisade::cache::RedisConfig;
    use palisade_tests::redis::RedisServer;

    fn shared_config(redis: &RedisServer) -> ResponseCacheConfig {
        let mut cfg = config();
        cfg.store.namespace = "http-shared".into();
        cfg.store.redis = Some(RedisConfig::new(redis.url()));
        cfg
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_share_responses_through_l2_and_invalidate_each_other() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let origin = Origin::new(Reply::ok("public, max-age=60", "shared"));
        let (a, _) = stack(shared_config(&redis), &origin);
        let (b, b_handle) = stack(shared_config(&redis), &origin);
        assert!(send(&a, get(URI)).await.cache_status().contains("stored"));
        let r = send(&b, get(URI)).await;
        assert_eq!(r.body, "shared");
        assert!(
            r.cache_status().starts_with("palisade; hit"),
            "{}",
            r.cache_status()
        );
        assert_eq!(origin.calls(), 1);
        assert_eq!(b_handle.stats().store.l2.unwrap().hits, 1);

        // A write through worker A evicts the URI on B as well.
        send(&a, with(Method::DELETE, URI, &[])).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = send(&b, get(URI)).await;
            if r.cache_status().contains("fwd=miss") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "B still serves the invalidated URI"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The layer on one axum route, as the reference server uses it for `/names`.
#[tokio::test]
async fn works_as_an_axum_route_layer() {
    use axum::Router;
    use axum::routing::get;

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let (layer, handle) = ResponseCacheLayer::new(config()).unwrap();
    let app: Router = Router::new()
        .route(
            "/names",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        [("cache-control", "public, max-age=5")],
                        axum::Json(["Ada", "Grace"]),
                    )
                }
            })
            .layer(layer),
        )
        .route("/other", get(|| async { "not cached" }));
    for _ in 0..3 {
        let res = app
            .clone()
            .oneshot(
                Request::get("/names")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "[\"Ada\",\"Grace\"]");
    }
    let res = app
        .oneshot(
            Request::get("/other")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!res.headers().contains_key(CACHE_STATUS));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().hits, 2);
}
