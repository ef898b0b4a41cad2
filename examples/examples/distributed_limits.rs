//! Two processes enforcing **one** rate limit through Redis.
//!
//! Each process runs the same axum app with a policy on a Redis store: 5 requests per 10 seconds
//! per client IP. The GCRA runs in a Lua script on the Redis server's clock, so it does not
//! matter which process a request reaches: together they admit 5, then both answer `429`. If
//! Redis goes away, each process falls back to a local copy of the same limit
//! ([`FailureMode::LocalFallback`]); a Redis outage is never a `5xx`.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run -p examples --example distributed_limits
//! ```
//!
//! starts two copies of itself (`--role server`) on free ports, sends 12 requests alternating
//! between them, prints who answered what, stops them and exits. To run the two servers by hand:
//!
//! ```text
//! REDIS_URL=... cargo run -p examples --example distributed_limits -- --role server --port 3001
//! REDIS_URL=... cargo run -p examples --example distributed_limits -- --role server --port 3002
//! curl -i localhost:3001/ ; curl -i localhost:3002/   # ... the sixth is a 429, on either port
//! ```
//!
//! Without `REDIS_URL` it explains what it needs and exits.
#![forbid(unsafe_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use palisade::rate_limit::{
    FailureMode, PolicyConfig, RateLimitConfig, RateLimitLayer, RedisOptions, RedisStore,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

type BoxError = Box<dyn Error + Send + Sync>;

/// `--name value` from the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    palisade::observe::init_tracing(palisade::observe::LogFormat::Compact, &filter)?;
    let Some(redis_url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        println!("distributed_limits needs a Redis server: set REDIS_URL, for example");
        println!(
            "  REDIS_URL=redis://127.0.0.1:6379/ cargo run -p examples --example distributed_limits"
        );
        println!("Without Redis, each process would enforce its own copy of the limit: with N");
        println!("processes a client gets up to N times the quota. For worker processes on one");
        println!("machine the reference server shares one limit through shared memory instead");
        println!("(store = \"shm\"); Redis is for limits shared across machines.");
        return Ok(());
    };
    let prefix = arg("--prefix").unwrap_or_else(|| "palisade:example:".to_owned());
    if arg("--role").as_deref() == Some("server") {
        let port = arg("--port").map_or(Ok(3001), |p| p.parse())?;
        return server(&redis_url, &prefix, port).await;
    }
    orchestrate(&redis_url).await
}

/// One node: an axum app whose limit lives in Redis.
async fn server(redis_url: &str, prefix: &str, port: u16) -> Result<(), BoxError> {
    // The per-call timeout defaults to 50 ms; a slower answer lets the failure mode decide.
    let redis = RedisStore::new(
        RedisOptions::new(redis_url)
            .prefix(prefix)
            .timeout(Duration::from_millis(250)),
    )?;
    let (limits, _handle) = RateLimitLayer::new(
        RateLimitConfig::builder()
            .policy(
                PolicyConfig::builder("shared")
                    .rate(5)
                    .per(Duration::from_secs(10))
                    .burst(5)
                    .redis(redis, FailureMode::LocalFallback),
            )
            .build()?,
    );
    let pid = std::process::id();
    let app = Router::new()
        .route(
            "/",
            get(move || async move { format!("hello from process {pid}\n") }),
        )
        .layer(limits);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // The orchestrator reads this line to learn the port.
    println!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// Starts this program twice as `--role server` and sends requests to both.
async fn orchestrate(redis_url: &str) -> Result<(), BoxError> {
    // A fresh key prefix, so earlier runs do not count against this one.
    let prefix = format!("palisade:example:{}:", std::process::id());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(spawn_node(redis_url, &prefix).await?);
    }
    println!(
        "two processes share one limit of 5 requests per 10 s in Redis: {} and {}",
        nodes[0].1, nodes[1].1
    );

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut allowed = 0;
    for i in 0..12 {
        let (name, addr) = if i % 2 == 0 {
            ("A", nodes[0].1)
        } else {
            ("B", nodes[1].1)
        };
        let res = client.get(format!("http://{addr}/").parse()?).await?;
        let status = res.status().as_u16();
        if status == 200 {
            allowed += 1;
        }
        let retry = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(|s| format!(", retry after {s} s"))
            .unwrap_or_default();
        println!("request {:>2} -> process {name}: {status}{retry}", i + 1);
    }
    println!("allowed {allowed} of 12 across 2 processes");

    for (mut child, _) in nodes {
        child.kill().await?;
    }
    Ok(())
}

async fn spawn_node(redis_url: &str, prefix: &str) -> Result<(Child, SocketAddr), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--role", "server", "--port", "0", "--prefix", prefix])
        .env("REDIS_URL", redis_url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await??
        .ok_or("the server exited before listening")?;
    let addr = line
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected line from the server: {line}"))?
        .parse()?;
    Ok((child, addr))
}
