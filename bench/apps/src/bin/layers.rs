//! `bench-layers ADDR`: the benchmark routes on `axum::serve` with a chosen subset of Palisade's
//! layers, to split the reference server's overhead over bare axum into its parts (each layer,
//! the log subscriber, and the server's own connection handling).
//!
//! `LAYERS` (comma-separated, default `drain,observe,body_limit,rate_limit`) picks the layers, in
//! the reference server's order (outermost first): `drain`, `observe`, `body_limit`, `rate_limit`
//! (one client-IP policy that never rejects, shared-memory store). `LOG=info` installs the same
//! `tracing_subscriber` fmt subscriber as the server (compact, stderr; ANSI colours unless
//! `NO_COLOR` is set); without it no subscriber is installed.
//!
//! By default the layers are added with `Router::layer`, as the reference server does, which wraps
//! every route separately (one boxed service per layer per route, cloned per request). `OUTER=1`
//! instead wraps the whole router once with a `tower::ServiceBuilder` stack of all four layers (no
//! per-route boxing; the rate limiter and observe then run before routing).

use std::net::SocketAddr;

use axum::Router;
use palisade::observe::{ObserveConfig, ObserveLayer, PrometheusExporter};
use palisade::rate_limit::{PolicyConfig, RateLimitConfig, RateLimitLayer, ShmZone};
use palisade::shutdown::{Drain, DrainConfig};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;

#[tokio::main]
async fn main() {
    let layers =
        std::env::var("LAYERS").unwrap_or_else(|_| "drain,observe,body_limit,rate_limit".into());
    let on = |name: &str| layers.split(',').any(|l| l.trim() == name);
    if let Ok(level) = std::env::var("LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .with_writer(std::io::stderr)
            .compact()
            .init();
    }
    let exporter = PrometheusExporter::install().expect("install the Prometheus recorder");
    exporter.spawn_upkeep(std::time::Duration::from_secs(5));

    let rate_limit = on("rate_limit").then(|| {
        let zone = ShmZone::create_memfd("bench", 100_000).expect("shared-memory zone");
        let config = RateLimitConfig::builder()
            .policy(
                PolicyConfig::builder("api")
                    .rate(10_000_000)
                    .burst(1_000_000)
                    .shm(zone),
            )
            .build()
            .expect("valid rate-limit config");
        RateLimitLayer::new(config).0
    });
    let body_limit = on("body_limit").then(|| RequestBodyLimitLayer::new(16 * 1024 * 1024));
    let observe = on("observe").then(|| ObserveLayer::new(ObserveConfig::default()).0);
    let drain = on("drain")
        .then(|| Drain::new(DrainConfig::builder().build().expect("valid drain config")).layer());

    let routes: Router = palisade_bench_apps::routes();
    let app = if std::env::var("OUTER").is_ok_and(|v| v == "1") {
        // The whole stack, wrapped around the router once (LAYERS is ignored).
        let (Some(drain), Some(observe), Some(body_limit), Some(rate_limit)) =
            (drain, observe, body_limit, rate_limit)
        else {
            panic!("OUTER=1 needs every layer in LAYERS");
        };
        let stack = ServiceBuilder::new()
            .layer(drain)
            .layer(observe)
            .map_response(|res: http::Response<_>| res.map(axum::body::Body::new))
            .layer(body_limit)
            .layer(rate_limit)
            .service(routes);
        Router::new().fallback_service(stack)
    } else {
        let mut app = routes;
        if let Some(layer) = rate_limit {
            app = app.layer(layer);
        }
        if let Some(layer) = body_limit {
            app = app.layer(layer);
        }
        if let Some(layer) = observe {
            app = app.layer(layer);
        }
        if let Some(layer) = drain {
            app = app.layer(layer);
        }
        app
    };

    let addr = palisade_bench_apps::addr_from_args();
    let listener = palisade_bench_apps::listen(addr).await;
    eprintln!("bench-layers listening on {addr} with [{layers}]");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .expect("server failed");
}
