//! Palisade layers on a plain tower service served by hyper-util: no axum router.
//!
//! The service is a `tower::service_fn` over `http::Request<hyper::body::Incoming>`. The layers
//! are the same ones an axum app uses; what changes without axum:
//!
//! - the accept loop is yours (hyper-util `auto::Builder` + `GracefulShutdown`), so it inserts
//!   the socket peer as a [`PeerAddr`] extension for client-IP rate limiting (axum's
//!   `ConnectInfo` does this for axum apps) and stops accepting when the [`Drain`] says so;
//! - there is no route template, so metrics and spans label requests `http.route="unmatched"`
//!   (use a custom key or an axum router when you need per-route labels).
//!
//! ```text
//! cargo run -p examples --example tower_service
//! curl -i localhost:3000/            # 200, RateLimit headers, x-request-id
//! curl -i localhost:3000/fail        # 500 ... then 503 + Retry-After once the breaker opens
//! ```
//!
//! Ctrl-C drains. With `EXAMPLE_SMOKE=1` (or `--once`) it serves on a free port, sends itself
//! requests, drains and exits.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use palisade::observe::{LogFormat, ObserveConfig, ObserveLayer};
use palisade::rate_limit::{PeerAddr, PolicyConfig, RateLimitConfig, RateLimitLayer};
use palisade::shutdown::{Drain, DrainConfig, shutdown_signal};
use tower::ServiceBuilder;

type BoxError = Box<dyn Error + Send + Sync>;

/// The service: any `Service<Request<Incoming>>` works the same way.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let res = match req.uri().path() {
        "/" => Response::new(Full::new(Bytes::from_static(
            b"hello from a tower service\n",
        ))),
        "/fail" => {
            let mut res = Response::new(Full::new(Bytes::from_static(b"upstream broke\n")));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            res
        }
        _ => {
            let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
    };
    Ok(res)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke =
        std::env::var_os("EXAMPLE_SMOKE").is_some() || std::env::args().any(|a| a == "--once");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    palisade::observe::init_tracing(LogFormat::Compact, &filter)?;

    let (observe, _stats) = ObserveLayer::new(ObserveConfig::default());
    let drain = Drain::new(
        DrainConfig::builder()
            .grace(Duration::from_secs(10))
            .build()?,
    );
    let (limits, _limits) = RateLimitLayer::new(
        RateLimitConfig::builder()
            .policy(PolicyConfig::builder("per_client").per_second(10).burst(10))
            .build()?,
    );
    let (breaker, _breaker) = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .name("service")
            .count_window(10)
            .minimum_calls(5)
            .failure_rate_threshold(50.0)
            .wait_in_open(Duration::from_secs(10))
            .build()?,
    );
    // The whole stack is a tower service; clones share every layer's state.
    let stack = ServiceBuilder::new()
        .layer(observe)
        .layer(drain.layer())
        .layer(limits)
        .layer(breaker)
        .service_fn(handle);

    let listener = tokio::net::TcpListener::bind(if smoke {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    })
    .await?;
    let addr = listener.local_addr()?;
    println!("serving a plain tower service on http://{addr}");

    let server = tokio::spawn(serve(listener, stack, drain.clone()));
    if smoke {
        smoke_test(addr).await?;
        drain.start();
    } else {
        tokio::spawn(shutdown_signal(drain.clone())); // SIGTERM / Ctrl-C start the drain
    }
    let report = server.await?;
    println!(
        "drained: {} completed, {} cut",
        report.completed, report.cut
    );
    Ok(())
}

/// The accept loop: one hyper connection per socket, watched by `GracefulShutdown`, until the
/// drain stops accepting; then in-flight requests get the grace period.
async fn serve<S>(
    listener: tokio::net::TcpListener,
    stack: S,
    drain: Drain,
) -> palisade::shutdown::DrainReport
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<palisade::shutdown::DrainBody<Full<Bytes>>>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let stop = drain.accept_stopped();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, peer)) = conn else { continue };
                // Tell the rate limiter who the client is.
                let svc = ServiceBuilder::new()
                    .map_request(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(PeerAddr(peer));
                        req
                    })
                    .service(stack.clone());
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(svc),
                );
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener); // refuse new connections at once
    let closed = tokio::spawn(graceful.shutdown());
    let report = drain.wait(drain.config().grace()).await;
    if report.cut == 0 {
        let _ = closed.await;
    }
    report
}

async fn smoke_test(addr: SocketAddr) -> Result<(), BoxError> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let uri = format!("http://{addr}{path}");
            let res = client.get(uri.parse()?).await?;
            Ok::<_, BoxError>(res)
        }
    };

    let res = get("/").await?;
    println!(
        "GET / -> {} ratelimit: {}",
        res.status().as_u16(),
        res.headers()
            .get("ratelimit")
            .map_or("-", |v| v.to_str().unwrap_or("-"))
    );

    let mut limited = 0;
    for _ in 0..15 {
        if get("/").await?.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    println!("GET / x15 right away -> {limited} limited (429)");
    let body = get("/").await?.into_body().collect().await?.to_bytes();
    println!(
        "429 body is problem+json: {}",
        String::from_utf8_lossy(&body).contains("quota-exceeded")
    );
    // Let the bucket refill (10 per second), then trip the breaker.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get("/fail").await?.status().as_u16());
    }
    let res = get("/fail").await?;
    statuses.push(res.status().as_u16());
    println!(
        "GET /fail x6 -> {statuses:?}, retry-after: {}",
        res.headers()
            .get("retry-after")
            .map_or("-", |v| v.to_str().unwrap_or("-"))
    );

    Ok(())
}
