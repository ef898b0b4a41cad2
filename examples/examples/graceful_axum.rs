//! Graceful drain for a plain `axum::serve` app with `palisade::shutdown`.
//!
//! Three additions to an ordinary axum program:
//!
//! 1. `.layer(drain.layer())` counts requests in flight and, once the listener stops, adds
//!    `Connection: close` so keep-alive clients reconnect elsewhere;
//! 2. `/health/ready` answers [`Drain::readiness`]: `200` while serving, `503` from the first
//!    signal on, so a load balancer stops sending traffic **before** the listener closes;
//! 3. [`shutdown_signal`] turns SIGTERM / SIGINT into [`Drain::start`], and
//!    `axum::serve(..).with_graceful_shutdown(drain.accept_stopped())` runs under [`Drain::run`],
//!    which bounds the wait by the grace period (plain axum would wait forever for a stuck
//!    client) and reports what completed and what was cut.
//!
//! On SIGTERM or Ctrl-C: readiness fails at once, the app keeps serving for `delay` (2 s here;
//! set it to your load balancer's health-check interval × threshold), then stops accepting;
//! requests in flight finish, streams (the SSE endpoint) are told to end, and the process exits
//! when nothing is left, or after `grace`. A second signal exits at once.
//!
//! ```text
//! cargo run -p examples --example graceful_axum
//! curl localhost:3000/slow?ms=5000 &  curl -N localhost:3000/events &  kill -TERM <pid>
//! ```
//!
//! Flags: `--port N` (default 3000, 0 for any), `--delay-ms N` (default 2000). With
//! `EXAMPLE_SMOKE=1` (or `--once`) it starts a slow request and an event stream itself, starts the
//! drain as a SIGTERM would, and prints what happened.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Query;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use palisade::shutdown::{Drain, DrainConfig, DrainSignal, shutdown_signal};
use serde::Deserialize;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Deserialize)]
struct Wait {
    ms: Option<u64>,
}

async fn slow(Query(wait): Query<Wait>) -> String {
    let ms = wait.ms.unwrap_or(1000).min(60_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("done after {ms} ms\n")
}

/// An event every 200 ms until the drain tells streams to end.
fn events(signal: DrainSignal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = stream::unfold((0u64, signal), |(n, signal)| async move {
        tokio::select! {
            () = signal.cancelled() => None,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                Some((Ok(Event::default().data(format!("tick {n}"))), (n + 1, signal)))
            }
        }
    });
    Sse::new(ticks)
}

/// `--name value` from the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke =
        std::env::var_os("EXAMPLE_SMOKE").is_some() || std::env::args().any(|a| a == "--once");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    palisade::observe::init_tracing(palisade::observe::LogFormat::Compact, &filter)?;
    let port: u16 = match arg("--port") {
        Some(p) => p.parse()?,
        None if smoke => 0,
        None => 3000,
    };
    let delay = match arg("--delay-ms") {
        Some(ms) => Duration::from_millis(ms.parse()?),
        None if smoke => Duration::from_millis(500),
        None => Duration::from_secs(2),
    };

    let drain = Drain::new(
        DrainConfig::builder()
            .delay(delay)
            .grace(Duration::from_secs(30))
            .build()?,
    );
    let (ready, signal) = (drain.clone(), drain.signal());
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", get(slow))
        .route(
            "/events",
            get(move || std::future::ready(events(signal.clone()))),
        )
        .route(
            "/health/ready",
            get(move || std::future::ready(ready.readiness::<Body>())),
        )
        .layer(drain.layer());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    println!(
        "pid {}; stop with Ctrl-C or kill -TERM {}",
        std::process::id(),
        std::process::id()
    );

    // SIGTERM / SIGINT start the drain; so could an admin endpoint or your own code. The server
    // stops accepting when the drain says so, whoever started it.
    tokio::spawn(shutdown_signal(drain.clone()));
    let server = axum::serve(listener, app).with_graceful_shutdown(drain.accept_stopped());
    let run = tokio::spawn({
        let drain = drain.clone();
        async move { drain.run(server).await }
    });
    let smoke_task = smoke.then(|| tokio::spawn(smoke_test(addr, drain.clone())));

    let report = run.await??;
    println!(
        "drained: {} completed, {} cut, in {} ms",
        report.completed,
        report.cut,
        report.elapsed.as_millis()
    );
    if let Some(task) = smoke_task {
        task.await??;
    }
    Ok(())
}

/// Plays a SIGTERM with work in flight and prints what each client saw.
async fn smoke_test(addr: SocketAddr, drain: Drain) -> Result<(), BoxError> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let fetch = {
        let client = client.clone();
        move |path: &'static str| {
            let client = client.clone();
            async move {
                let res = client.get(format!("http://{addr}{path}").parse()?).await?;
                let status = res.status().as_u16();
                let close = res
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let body = res.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>((status, close, body))
            }
        }
    };

    println!(
        "before: GET /health/ready -> {}",
        fetch("/health/ready").await?.0
    );
    let slow = tokio::spawn(fetch("/slow?ms=1500"));
    let stream = tokio::spawn(fetch("/events"));
    tokio::time::sleep(Duration::from_millis(250)).await;

    drain.start(); // what the first SIGTERM or Ctrl-C does through `shutdown_signal`
    println!("drain started with 2 requests in flight");
    println!(
        "during the delay: GET /health/ready -> {}",
        fetch("/health/ready").await?.0
    );
    println!(
        "during the delay: GET / -> {} (still served)",
        fetch("/").await?.0
    );

    drain.accept_stopped().await;
    // axum closes the listener as soon as it sees the shutdown future complete.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("after the delay: new connections refused: {refused}");

    let (status, close, body) = slow.await??;
    println!(
        "slow request finished: {status}, connection: close = {close}, body: {}",
        String::from_utf8_lossy(&body).trim()
    );
    let (status, _, body) = stream.await??;
    let events = String::from_utf8_lossy(&body).matches("data: tick").count();
    println!("event stream ended by the drain: {status} after {events} events");
    Ok(())
}
