//! An HTTP client protected by a circuit breaker, a timeout and a client-side rate limit.
//!
//! The client is hyper-util's legacy `Client`, a tower service like any other. The stack, outermost
//! first:
//!
//! 1. [`RateLimitLayer`] with one global bucket: never send the upstream more than 50 requests per
//!    second (burst 10). A call over the limit is not sent; it gets a locally made `429` response
//!    with `Retry-After`.
//! 2. [`CircuitBreakerLayer`] in **outbound** mode: errors and `5xx` answers count as failures;
//!    when half of the last calls failed it opens, and calls fail at once with
//!    [`CallError::Open`] (carrying `retry_after`) without touching the sick upstream. After
//!    `wait_in_open` one probe is let through; its outcome closes or re-opens the breaker.
//! 3. `tower::timeout`: a call slower than 200 ms fails (and counts as a breaker failure).
//! 4. The response body is read to the end, so every layer sees complete responses.
//!
//! The example starts its own flaky upstream on a free port, makes it healthy, failing, slow and
//! healthy again, prints what the client sees and exits:
//!
//! ```text
//! cargo run -p examples --example outbound_breaker
//! ```
#![forbid(unsafe_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::circuit_breaker::{CallError, CircuitBreakerConfig, CircuitBreakerLayer};
use palisade::rate_limit::{KeySource, PolicyConfig, RateLimitConfig, RateLimitLayer};
use tower::{ServiceBuilder, ServiceExt};

type BoxError = Box<dyn Error + Send + Sync>;

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const SLOW: u8 = 2;

/// The upstream: answers 200, 500 or slowly, as the example tells it, and counts its requests.
#[derive(Clone, Default)]
struct Upstream {
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU64>,
}

impl Upstream {
    async fn start(&self) -> Result<SocketAddr, BoxError> {
        let this = self.clone();
        let app = Router::new().route(
            "/data",
            get(move || {
                let this = this.clone();
                async move {
                    this.hits.fetch_add(1, Ordering::Relaxed);
                    match this.mode.load(Ordering::Relaxed) {
                        FAILING => (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke"),
                        SLOW => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            (StatusCode::OK, "late data")
                        }
                        _ => (StatusCode::OK, "data"),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Reads the body to the end, so the layers above get `Full<Bytes>` responses (which the rate
/// limiter can also build its local `429` from).
async fn buffered(res: Response<Incoming>) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let upstream = Upstream::default();
    let addr = upstream.start().await?;
    let url = format!("http://{addr}/data");

    let (limit, _limit_handle) = RateLimitLayer::new(
        RateLimitConfig::builder()
            .policy(
                PolicyConfig::builder("upstream_calls")
                    .per_second(50)
                    .burst(10)
                    .key(KeySource::Global),
            )
            .build()?,
    );
    let (breaker, breaker_handle) = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .name("upstream")
            .count_window(10)
            .minimum_calls(5)
            .failure_rate_threshold(50.0)
            .wait_in_open(Duration::from_secs(1))
            .half_open_max_calls(1)
            .build()?,
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(limit)
        .layer(breaker.outbound())
        .timeout(Duration::from_millis(200))
        .and_then(buffered)
        .service(client);

    // One call, described in a line.
    let call = || {
        let client = client.clone();
        let url = url.clone();
        async move {
            let req = Request::get(url).body(Full::default())?;
            let outcome = match client.oneshot(req).await {
                Ok(res) if res.status() == StatusCode::TOO_MANY_REQUESTS => {
                    "429 made locally by the client-side rate limit".to_owned()
                }
                Ok(res) => format!("upstream answered {}", res.status().as_u16()),
                Err(CallError::Open(open)) => format!(
                    "refused by the breaker ({}), retry in {} ms",
                    open.state(),
                    open.retry_after().as_millis()
                ),
                Err(CallError::Inner(e)) if e.is::<tower::timeout::error::Elapsed>() => {
                    "timed out after 200 ms".to_owned()
                }
                Err(e) => format!("failed: {e}"),
            };
            Ok::<_, BoxError>(outcome)
        }
    };
    let show = |label: &str, outcome: String, hits_before: u64| {
        let sent = if upstream.hits() > hits_before {
            "sent"
        } else {
            "not sent"
        };
        println!("{label}: {outcome} [{sent}]");
    };
    let state = || {
        breaker_handle
            .state()
            .map_or_else(|| "?".to_owned(), |s| s.to_string())
    };

    println!("upstream on http://{addr}; breaker {}", state());
    for _ in 0..3 {
        let before = upstream.hits();
        show("healthy", call().await?, before);
    }
    upstream.set(FAILING);
    for _ in 0..6 {
        let before = upstream.hits();
        show("failing", call().await?, before);
    }
    println!("breaker is {} after the failures", state());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    upstream.set(SLOW);
    let before = upstream.hits();
    show("probe while slow", call().await?, before);
    println!("breaker is {} after the probe timed out", state());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    upstream.set(HEALTHY);
    let before = upstream.hits();
    show("probe while healthy", call().await?, before);
    println!("breaker is {} after a good probe", state());

    let before = upstream.hits();
    let calls: Vec<_> = (0..20).map(|_| tokio::spawn(call())).collect();
    let (mut answered, mut limited) = (0, 0);
    for c in calls {
        match c.await??.as_str() {
            "upstream answered 200" => answered += 1,
            s if s.starts_with("429") => limited += 1,
            other => println!("burst: {other}"),
        }
    }
    println!(
        "burst of 20 concurrent calls: {answered} answered by the upstream, {limited} held back \
         with a local 429; the upstream saw {}",
        upstream.hits() - before
    );
    Ok(())
}
