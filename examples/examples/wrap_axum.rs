//! Wrap an existing axum app in every Palisade layer with one [`Stack`], and watch it live.
//!
//! The app (`existing_app`) knows nothing about Palisade. `main` builds one [`Stack`] with a
//! typed config per layer: request ids + tracing + metrics (observe), graceful drain, a
//! per-client rate limit, one circuit breaker per route and an HTTP response cache. The stack
//! fixes their order, registers every handle under its name, serves the admin API for them on a
//! second, loopback-only port (so `palisade-top` can watch the app and change its limit at
//! runtime), and serves the app with the client address attached and a graceful drain:
//!
//! ```text
//! cargo run -p examples --example wrap_axum
//! # in another terminal, with the command the example prints:
//! palisade-top --url http://127.0.0.1:3001 --token <printed token>
//! curl -i localhost:3000/users/7      # Cache-Status, RateLimit, x-request-id, traceparent
//! ```
//!
//! Ctrl-C drains: readiness fails, in-flight requests finish, then the process exits.
//! With `EXAMPLE_SMOKE=1` (or `--once`) it binds free ports, sends itself a few requests, prints
//! what each layer did, drains and exits.
#![forbid(unsafe_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use palisade::Stack;
use palisade::admin::{self, AdminConfig};
use palisade::cache::ResponseCacheConfig;
use palisade::cache::response::CACHE_STATUS;
use palisade::circuit_breaker::CircuitBreakerConfig;
use palisade::observe::{LogFormat, ObserveConfig, PrometheusExporter};
use palisade::rate_limit::{PolicyConfig, RateLimitConfig};
use palisade::shutdown::DrainConfig;

type BoxError = Box<dyn Error + Send + Sync>;

/// The application as it was before Palisade: plain axum handlers.
fn existing_app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello from an existing axum app\n" }))
        .route("/users/{id}", get(user))
        .route(
            "/flaky",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
}

async fn user(Path(id): Path<u64>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=30")],
        Json(serde_json::json!({ "id": id, "name": format!("user {id}") })),
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke =
        std::env::var_os("EXAMPLE_SMOKE").is_some() || std::env::args().any(|a| a == "--once");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    palisade::observe::init_tracing(LogFormat::Compact, &filter)?;
    // Install the metrics recorder before building the layers: they take their handles now.
    let exporter = PrometheusExporter::install()?;

    // --- Palisade: one stack, a typed config per layer, each component named once. ---
    let stack = Stack::new()
        .drain(
            DrainConfig::builder()
                .delay(if smoke {
                    Duration::ZERO
                } else {
                    Duration::from_secs(2)
                })
                .grace(Duration::from_secs(30))
                .build()?,
        )
        .observe(ObserveConfig::default())
        .rate_limit(
            RateLimitConfig::builder()
                .exempt_path("/health/*")
                .policy(
                    PolicyConfig::builder("api")
                        .per_second(20)
                        .burst(10)
                        .paths(["/", "/users/*"]),
                )
                .build()?,
        )
        // One breaker per route template, so a failing route does not take the others down.
        .circuit_breaker_per_route(
            CircuitBreakerConfig::builder()
                .name("routes")
                .count_window(20)
                .minimum_calls(10)
                .failure_rate_threshold(50.0)
                .wait_in_open(Duration::from_secs(5))
                .build()?,
        )
        .response_cache(ResponseCacheConfig::default())
        .build()?;

    let drain = stack.drain().clone();
    let app = existing_app()
        .route(
            "/health/ready",
            get(move || std::future::ready(drain.readiness::<Body>())),
        )
        .route_service("/metrics", exporter.service())
        .layer(stack.clone());
    // --- That is all the wrapping; the rest is serving. ---

    let (public, admin_addr) = if smoke {
        ("127.0.0.1:0", "127.0.0.1:0")
    } else {
        ("127.0.0.1:3000", "127.0.0.1:3001")
    };
    let listener = tokio::net::TcpListener::bind(public).await?;
    let addr = listener.local_addr()?;
    let admin_listener = tokio::net::TcpListener::bind(admin_addr).await?;
    let admin_addr = admin_listener.local_addr()?;

    let token = admin::token::generate()?;
    let admin_router = stack.admin_router(
        AdminConfig::builder()
            .read_write_token("example", token.clone())
            .build()?,
    );
    tokio::spawn(async move { axum::serve(admin_listener, admin_router).await });

    println!("serving on http://{addr} (admin API on http://{admin_addr})");
    println!("watch it live: palisade-top --url http://{admin_addr} --token {token}");

    // SIGTERM / Ctrl-C start the drain; every request carries the client address.
    let server = tokio::spawn(stack.serve(listener, app).into_future());

    if smoke {
        smoke_test(addr, admin_addr, &token).await?;
        stack.drain().start(); // what the first SIGTERM or Ctrl-C does
    }
    let report = server.await??;
    println!(
        "drained: {} completed, {} cut, in {:?}",
        report.completed, report.cut, report.elapsed
    );
    Ok(())
}

/// Sends the example a few requests and prints what each layer did.
async fn smoke_test(addr: SocketAddr, admin_addr: SocketAddr, token: &str) -> Result<(), BoxError> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |url: String, token: Option<String>| {
        let client = client.clone();
        async move {
            let mut req = http::Request::get(url);
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let res = client.request(req.body(Full::default())?).await?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>((parts, body))
        }
    };

    let (res, _) = get(format!("http://{addr}/"), None).await?;
    println!(
        "observe: GET / -> {} with x-request-id: {}",
        res.status.as_u16(),
        res.headers.contains_key("x-request-id")
    );

    for _ in 0..2 {
        let (res, _) = get(format!("http://{addr}/users/7"), None).await?;
        let status = res
            .headers
            .get(CACHE_STATUS)
            .map(|v| v.to_str().unwrap_or(""));
        println!(
            "cache: GET /users/7 -> {} cache-status: {}",
            res.status.as_u16(),
            status.unwrap_or("-")
        );
    }

    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (res, _) = get(format!("http://{addr}/flaky"), None).await?;
        statuses.push(res.status.as_u16());
    }
    let failed = statuses.iter().filter(|s| **s == 500).count();
    let open = statuses.iter().filter(|s| **s == 503).count();
    println!("breaker: 12 calls to a failing route -> {failed} x 500, then {open} x 503 (open)");
    let (res, _) = get(format!("http://{addr}/users/8"), None).await?;
    println!(
        "breaker: other routes keep their own breaker: GET /users/8 -> {}",
        res.status.as_u16()
    );

    let (mut ok, mut limited) = (0, 0);
    for _ in 0..30 {
        let (res, _) = get(format!("http://{addr}/"), None).await?;
        match res.status.as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => return Err(format!("unexpected status {other}").into()),
        }
    }
    println!("rate limit: 30 requests at once -> {ok} ok, {limited} limited (429)");

    let (res, body) = get(
        format!("http://{admin_addr}/admin/v1/snapshot"),
        Some(token.to_owned()),
    )
    .await?;
    let snapshot: serde_json::Value = serde_json::from_slice(&body)?;
    let names = |kind: &str| -> Vec<String> {
        snapshot[kind]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    println!(
        "admin: GET /admin/v1/snapshot -> {}; limits {:?}, breakers {:?}, caches {:?}",
        res.status.as_u16(),
        names("limits"),
        names("breakers"),
        names("caches")
    );

    let (_, metrics) = get(format!("http://{addr}/metrics"), None).await?;
    let metrics = String::from_utf8_lossy(&metrics);
    println!(
        "metrics: /metrics has http_server_request_duration_seconds: {}",
        metrics.contains("http_server_request_duration_seconds")
    );
    Ok(())
}
