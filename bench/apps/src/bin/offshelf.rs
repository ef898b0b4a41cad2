//! `bench-offshelf ADDR`: the benchmark routes behind what a Rust user assembles from crates today:
//! tower-http trace + request id (set and propagate `x-request-id`, UUID v4) + timeout + body
//! limit, `tower_governor` (per peer IP), and `metrics` with `metrics-exporter-prometheus`
//! (request counter and duration histogram by method, matched path and status, as in axum's
//! `prometheus-metrics` example; `GET /metrics` renders them). Logs go to stderr through a
//! `tracing_subscriber` fmt subscriber at `info` (`RUST_LOG` overrides).
//!
//! The governor quota is high enough never to reject by default. `OFFSHELF_LIMITED=1` sets one
//! request per hour per IP with a burst of 1 instead, to measure the cost of a 429.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::ServiceBuilder;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

const BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();

    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_requests_duration_seconds".into()),
            BUCKETS,
        )
        .expect("valid buckets")
        .install_recorder()
        .expect("install the Prometheus recorder");
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    let limited = std::env::var("OFFSHELF_LIMITED").is_ok_and(|v| v == "1");
    let governor = if limited {
        GovernorConfigBuilder::default()
            .per_second(3600)
            .burst_size(1)
            .finish()
    } else {
        // The same quota as the Palisade bench policy (10 M/s, burst 1 M): never rejects here.
        GovernorConfigBuilder::default()
            .period(Duration::from_nanos(100))
            .burst_size(1_000_000)
            .finish()
    }
    .expect("valid governor config");
    let limiter = governor.limiter().clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            limiter.retain_recent();
        }
    });

    let app = palisade_bench_apps::routes()
        .route_layer(middleware::from_fn(track_metrics))
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        )
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(RequestBodyLimitLayer::new(16 * 1024 * 1024))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(30),
                ))
                .layer(GovernorLayer::new(governor)),
        );

    let addr = palisade_bench_apps::addr_from_args();
    let listener = palisade_bench_apps::listen(addr).await;
    tracing::info!(%addr, limited, "bench-offshelf listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .expect("server failed");
}

async fn track_metrics(req: Request, next: Next) -> impl IntoResponse {
    let start = Instant::now();
    let path = match req.extensions().get::<MatchedPath>() {
        Some(matched) => matched.as_str().to_owned(),
        None => req.uri().path().to_owned(),
    };
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("path", path), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_requests_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}
