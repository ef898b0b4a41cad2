use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::timeout::TimeoutBody;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

use super::*;
use crate::admin::AdminConfig;
use crate::cache::response::CACHE_STATUS;
use crate::rate_limit::{PeerAddr, PolicyConfig};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn limits(burst: u32) -> RateLimitConfig {
    RateLimitConfig::builder()
        .policy(PolicyConfig::builder("api").per_minute(60).burst(burst))
        .build()
        .unwrap()
}

fn full_stack(burst: u32) -> StackLayer {
    Stack::new()
        .observe(ObserveConfig::default())
        .rate_limit(limits(burst))
        .circuit_breaker(CircuitBreakerConfig::consecutive_failures(
            2,
            Duration::from_secs(60),
        ))
        .response_cache(ResponseCacheConfig::default())
        .build()
        .unwrap()
}

fn get_from(path: &str, peer: &str) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    req
}

/// A service that counts its calls and answers with `status` and `cache-control`.
fn counting(
    calls: &Arc<AtomicU64>,
    status: StatusCode,
    cache_control: &'static str,
) -> BoxCloneService<Request<TimeoutBody<Body>>, Response<Full<Bytes>>, Infallible> {
    let calls = Arc::clone(calls);
    BoxCloneService::new(service_fn(move |_req: Request<TimeoutBody<Body>>| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .header("cache-control", cache_control)
                    .body(Full::new(Bytes::from_static(b"body")))
                    .unwrap(),
            )
        }
    }))
}

#[tokio::test]
async fn registers_every_component_under_its_own_name() {
    let stack = full_stack(5);
    let names: Vec<_> = stack
        .registry()
        .snapshot()
        .into_iter()
        .map(|c| (c.kind, c.name))
        .collect();
    assert_eq!(
        names,
        [
            (ComponentKind::Limit, "api".to_owned()),
            (ComponentKind::Breaker, "default".to_owned()),
            (ComponentKind::Cache, "responses".to_owned()),
        ]
    );
    assert!(stack.observe().is_some());
    assert_eq!(
        stack.circuit_breaker().map(CircuitBreakerHandle::name),
        Some("default")
    );
}

#[tokio::test]
async fn a_name_clash_fails_the_build_and_registers_nothing() {
    let registry = Registry::new();
    let (_, taken) = CircuitBreakerLayer::new(CircuitBreakerConfig::default().with_name("app"));
    registry.add(&taken).unwrap();
    let err = Stack::new()
        .registry(registry.clone())
        .rate_limit(limits(5))
        .circuit_breaker(CircuitBreakerConfig::default().with_name("app"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, StackError::DuplicateName { kind: ComponentKind::Breaker, name } if name == "app"),
        "{err}"
    );
    // The rate-limit policy (checked before the breaker) was not registered either.
    assert!(registry.get("api").is_none());
    assert_eq!(registry.snapshot().len(), 1);
}

#[tokio::test]
async fn an_invalid_cache_config_is_a_typed_error() {
    let config = ResponseCacheConfig {
        cache_status_name: "not a token".to_owned(),
        ..ResponseCacheConfig::default()
    };
    let err = Stack::new().response_cache(config).build().unwrap_err();
    assert!(matches!(err, StackError::ResponseCache(_)), "{err}");
    assert!(err.to_string().starts_with("response_cache: "), "{err}");
}

#[tokio::test]
async fn client_ip_keys_without_a_peer_address_are_refused_loudly() {
    let stack = full_stack(5);
    assert!(stack.needs_peer_addr());
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(stack.clone());
    let res = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["title"], "Peer address missing");
    // Nothing was counted against the limit.
    let api = stack.rate_limit().unwrap().policy("api").unwrap();
    assert_eq!(api.stats().allowed, 0);

    // axum's ConnectInfo is enough.
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut().insert(axum::extract::ConnectInfo(
        "192.0.2.7:1000".parse::<SocketAddr>().unwrap(),
    ));
    assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(api.stats().allowed, 1);
}

#[tokio::test]
async fn a_global_key_needs_no_peer_address() {
    let stack = Stack::new()
        .rate_limit(
            RateLimitConfig::builder()
                .policy(
                    PolicyConfig::builder("all")
                        .per_second(10)
                        .key(KeySource::Global),
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(!stack.needs_peer_addr());
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(stack);
    let res = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn refusals_happen_outside_in_and_observe_sees_them() {
    let calls = Arc::new(AtomicU64::new(0));
    let stack = full_stack(2);
    let svc = ServiceBuilder::new().layer(stack.clone()).service(counting(
        &calls,
        StatusCode::OK,
        "public, max-age=60",
    ));

    let first = svc
        .clone()
        .oneshot(get_from("/a", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()[CACHE_STATUS], "palisade; fwd=miss; stored");
    let second = svc
        .clone()
        .oneshot(get_from("/a", "192.0.2.1:1"))
        .await
        .unwrap();
    assert!(
        second.headers()[CACHE_STATUS]
            .to_str()
            .unwrap()
            .starts_with("palisade; hit")
    );
    assert_eq!(
        second.into_body().collect().await.unwrap().to_bytes(),
        "body"
    );
    // The limiter is outside the cache: a third request is refused even though it would hit.
    let third = svc
        .clone()
        .oneshot(get_from("/a", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert!(!third.headers().contains_key(CACHE_STATUS));
    // Another client has its own bucket.
    let other = svc
        .clone()
        .oneshot(get_from("/a", "192.0.2.2:1"))
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "one miss reached the service"
    );
    let traffic = stack.observe().unwrap().traffic();
    assert_eq!(traffic.requests_total, 4);
    assert_eq!(stack.response_cache().unwrap().stats().hits, 2);
    // Responses count in flight until their bodies are gone.
    assert_eq!(stack.drain().in_flight(), 3);
    drop((first, third, other));
    assert_eq!(stack.drain().in_flight(), 0);
}

#[tokio::test]
async fn an_open_breaker_answers_before_the_cache_and_the_service() {
    let calls = Arc::new(AtomicU64::new(0));
    let stack = full_stack(100);
    let svc = stack.layer(counting(
        &calls,
        StatusCode::INTERNAL_SERVER_ERROR,
        "no-store",
    ));
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(get_from("/", "192.0.2.1:1"))
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
    }
    let res = svc
        .clone()
        .oneshot(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert_eq!(
        stack.circuit_breaker().unwrap().state(),
        Some(crate::circuit_breaker::State::Open)
    );
}

#[tokio::test]
async fn without_a_cache_bodies_pass_through() {
    let calls = Arc::new(AtomicU64::new(0));
    let stack = Stack::new().build().unwrap();
    assert_eq!(stack.registry().snapshot().len(), 0);
    let svc = stack.layer(counting(&calls, StatusCode::OK, "public, max-age=60"));
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(get_from("/", "192.0.2.1:1"))
            .await
            .unwrap();
        assert!(!res.headers().contains_key(CACHE_STATUS));
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "body");
    }
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn the_drain_counts_requests_and_closes_connections() {
    let stack = Stack::new().build().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(stack.clone());
    stack.drain().start_with_delay(Duration::ZERO);
    assert!(!stack.drain().is_ready());
    let res = app.oneshot(get_from("/", "192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["connection"], "close");
    assert_eq!(stack.drain().in_flight(), 1, "until the body is done");
    drop(res);
    assert_eq!(stack.drain().in_flight(), 0);
}

#[tokio::test]
async fn the_admin_router_serves_and_changes_the_stack() {
    let stack = full_stack(5);
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(stack.clone());
    app.oneshot(get_from("/", "192.0.2.1:1")).await.unwrap();
    let admin = stack.admin_router(
        AdminConfig::builder()
            .read_write_token("ops", TOKEN)
            .build()
            .unwrap(),
    );

    let snapshot = admin
        .clone()
        .oneshot(
            Request::get("/admin/v1/snapshot")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(snapshot.status(), 200);
    let body = snapshot.into_body().collect().await.unwrap().to_bytes();
    let snapshot: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(snapshot["workers"][0]["requests"], 1, "{snapshot}");

    let put = admin
        .oneshot(
            Request::put("/admin/v1/limits/api")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Body::from(json!({ "burst": 50 }).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let api = stack.rate_limit().unwrap().policy("api").unwrap();
    assert_eq!(api.limits().burst, 50);
}

#[tokio::test]
async fn serve_attaches_the_peer_and_ends_with_the_drain() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stack = Stack::new().rate_limit(limits(1)).build().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(stack.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(stack.serve(listener, app).with_signals(false).into_future());

    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        statuses.push(out.split(' ').nth(1).unwrap().to_owned());
    }
    // The peer address reached the limiter: one client, burst 1.
    assert_eq!(statuses, ["200", "429"]);

    stack.drain().start_with_delay(Duration::ZERO);
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.cut, 0);
}

#[tokio::test]
async fn per_route_breakers_keep_healthy_routes_open() {
    let stack = Stack::new()
        .circuit_breaker_per_route(
            CircuitBreakerConfig::consecutive_failures(2, Duration::from_secs(60))
                .with_name("routes"),
        )
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/fails",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/users/{id}", get(|| async { "ok" }))
        .layer(stack.clone());
    let statuses = async |path: &str, n: usize| {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(
                app.clone()
                    .oneshot(get_from(path, "192.0.2.1:1"))
                    .await
                    .unwrap()
                    .status(),
            );
        }
        out
    };
    assert_eq!(statuses("/fails", 3).await, [500, 500, 503]);
    assert_eq!(statuses("/users/1", 1).await, [200]);
    assert_eq!(statuses("/users/2", 1).await, [200]);
    let names: Vec<_> = stack
        .registry()
        .snapshot()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["routes"]);
}

// === timeout and concurrency limit ===

/// A service that never answers until `release` is notified.
fn hanging(
    release: &Arc<tokio::sync::Notify>,
) -> BoxCloneService<Request<TimeoutBody<Body>>, Response<Full<Bytes>>, Infallible> {
    let release = Arc::clone(release);
    BoxCloneService::new(service_fn(move |_req: Request<TimeoutBody<Body>>| {
        let release = Arc::clone(&release);
        async move {
            release.notified().await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"late"))))
        }
    }))
}

fn timeout_config(ms: u64) -> crate::timeout::TimeoutConfig {
    crate::timeout::TimeoutConfig::builder()
        .timeout(Duration::from_millis(ms))
        .build()
        .unwrap()
}

fn concurrency_config(n: u32) -> crate::concurrency::ConcurrencyLimitConfig {
    crate::concurrency::ConcurrencyLimitConfig::builder()
        .max_in_flight(n)
        .build()
        .unwrap()
}

#[tokio::test]
async fn timeout_and_concurrency_limit_register_in_the_stack_order() {
    let stack = Stack::new()
        .observe(ObserveConfig::default())
        .rate_limit(limits(5))
        .concurrency_limit(concurrency_config(8))
        .circuit_breaker(CircuitBreakerConfig::five_consecutive_failures())
        .timeout(timeout_config(1000))
        .response_cache(ResponseCacheConfig::default())
        .build()
        .unwrap();
    let names: Vec<_> = stack
        .registry()
        .snapshot()
        .into_iter()
        .map(|c| (c.kind, c.name))
        .collect();
    assert_eq!(
        names,
        [
            (ComponentKind::Limit, "api".to_owned()),
            (ComponentKind::Limit, "concurrency".to_owned()),
            (ComponentKind::Limit, "timeout".to_owned()),
            (ComponentKind::Breaker, "default".to_owned()),
            (ComponentKind::Cache, "responses".to_owned()),
        ]
    );
    assert_eq!(stack.timeout().map(|h| h.name()), Some("timeout"));
    assert_eq!(
        stack.concurrency_limit().map(|h| h.name()),
        Some("concurrency")
    );
    // Changed at runtime through the registry, like every other component.
    let admin = stack.admin_router(
        AdminConfig::builder()
            .read_write_token("ops", TOKEN)
            .build()
            .unwrap(),
    );
    let req = Request::put("/admin/v1/limits/timeout")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "timeout_ms": 250 }).to_string()))
        .unwrap();
    let res = admin.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(stack.timeout().unwrap().settings().timeout_ms, 250);
}

#[tokio::test]
async fn a_name_shared_by_the_timeout_and_a_limit_policy_is_refused() {
    let err = Stack::new()
        .rate_limit(limits(5))
        .timeout(
            crate::timeout::TimeoutConfig::builder()
                .name("api")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, StackError::DuplicateName { kind: ComponentKind::Limit, name } if name == "api"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_service_is_cut_at_the_timeout_and_opens_the_breaker() {
    let release = Arc::new(tokio::sync::Notify::new());
    let stack = Stack::new()
        .circuit_breaker(CircuitBreakerConfig::consecutive_failures(
            2,
            Duration::from_secs(60),
        ))
        .timeout(timeout_config(100))
        .build()
        .unwrap();
    let svc = stack.layer(hanging(&release));
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    }
    // The timeout is inside the breaker: two 504s are two failures, and it opened.
    assert_eq!(
        stack.circuit_breaker().unwrap().state(),
        Some(crate::circuit_breaker::State::Open)
    );
    assert_eq!(stack.timeout().unwrap().stats().timed_out, 2);
}

#[tokio::test(start_paused = true)]
async fn shedding_happens_before_the_breaker_and_never_counts_as_a_failure() {
    let release = Arc::new(tokio::sync::Notify::new());
    let stack = Stack::new()
        .concurrency_limit(concurrency_config(1))
        .circuit_breaker(CircuitBreakerConfig::consecutive_failures(
            2,
            Duration::from_secs(60),
        ))
        .build()
        .unwrap();
    let svc = stack.layer(hanging(&release));
    let admitted = tokio::spawn(
        svc.clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap()),
    );
    // Wait until the first request holds the only slot.
    while stack.concurrency_limit().unwrap().stats().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..5 {
        let res = svc
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key("retry-after"));
    }
    assert_eq!(
        stack.circuit_breaker().unwrap().state(),
        Some(crate::circuit_breaker::State::Closed),
        "shed requests never reached the breaker"
    );
    release.notify_one();
    let res = admitted.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
