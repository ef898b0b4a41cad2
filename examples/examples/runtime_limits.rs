//! Change a rate limit while the server runs: from code through the handle, and over HTTP
//! through the admin API. No restart, and no key gets a fresh burst out of it.
//!
//! The app has one policy, `api`: 5 requests per second per client IP, burst 5. The example
//!
//! 1. raises the limit from code with [`PolicyHandle::set_limits`] (a change is validated as a
//!    whole: a zero burst is refused with reasons and changes nothing);
//! 2. reads the policy from the admin API (`GET /admin/v1/limits/api`, its `ETag` is the
//!    settings version), lowers it with `PUT` + `If-Match` (a JSON merge-patch), shows a stale
//!    `If-Match` answered `412` and an invalid patch answered `400`;
//! 3. switches the policy to `shadow` mode: over-limit requests pass and are only counted.
//!
//! The admin calls use a bare `hyper` HTTP/1 connection, so nothing is hidden: method, path,
//! `Authorization: Bearer <token>`, `If-Match`, JSON body.
//!
//! ```text
//! cargo run -p examples --example runtime_limits
//! ```
//!
//! After the demo it keeps serving and prints `curl` commands to try (or point `palisade-top` at
//! the admin port). With `EXAMPLE_SMOKE=1` (or `--once`) it exits after the demo.
#![forbid(unsafe_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::admin::{self, AdminConfig, LocalBackend};
use palisade::control::Registry;
use palisade::rate_limit::{Limits, PolicyConfig, PolicyHandle, RateLimitConfig, RateLimitLayer};
use serde_json::{Value, json};

type BoxError = Box<dyn Error + Send + Sync>;

/// One admin API call over a fresh HTTP/1 connection made with hyper directly.
async fn admin_call(
    admin: SocketAddr,
    token: &str,
    method: Method,
    path: &str,
    if_match: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, HeaderMap, Value), BoxError> {
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, admin.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(tag) = if_match {
        req = req.header(header::IF_MATCH, tag);
    }
    let body = match body {
        Some(json) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    let res = sender.send_request(req.body(Full::new(body))?).await?;
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    };
    Ok((parts.status, parts.headers, json))
}

/// Sends `n` requests at once-ish and counts `(ok, limited)`.
async fn burst(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    n: usize,
) -> Result<(usize, usize), BoxError> {
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..n {
        match client
            .get(format!("http://{addr}/").parse()?)
            .await?
            .status()
        {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => return Err(format!("unexpected status {other}").into()),
        }
    }
    Ok((ok, limited))
}

fn show(limits: &Limits) -> String {
    format!(
        "rate {} per {:?}, burst {}, mode {}",
        limits.rate,
        limits.per,
        limits.burst,
        limits.mode.as_str()
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke =
        std::env::var_os("EXAMPLE_SMOKE").is_some() || std::env::args().any(|a| a == "--once");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    palisade::observe::init_tracing(palisade::observe::LogFormat::Compact, &filter)?;

    let (limits, handle) = RateLimitLayer::new(
        RateLimitConfig::builder()
            .policy(PolicyConfig::builder("api").per_second(5).burst(5))
            .build()?,
    );
    let registry = Registry::new();
    registry.add(&handle)?;
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .layer(limits);

    let (public, admin_addr) = if smoke {
        ("127.0.0.1:0", "127.0.0.1:0")
    } else {
        ("127.0.0.1:3000", "127.0.0.1:3001")
    };
    let listener = tokio::net::TcpListener::bind(public).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let token = admin::token::generate()?;
    let admin_listener = tokio::net::TcpListener::bind(admin_addr).await?;
    let admin = admin_listener.local_addr()?;
    let admin_router = admin::router(
        registry,
        AdminConfig::builder()
            .read_write_token("example", token.clone())
            .backend(LocalBackend::new().name("runtime_limits").listen(addr))
            .build()?,
    );
    tokio::spawn(async move { axum::serve(admin_listener, admin_router).await });
    println!("app on http://{addr}, admin API on http://{admin}");

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let api: PolicyHandle = handle.policy("api").ok_or("no policy named api")?;

    // 1. From code.
    println!("policy api: {}", show(&api.limits()));
    let (ok, limited) = burst(&client, addr, 8).await?;
    println!("8 requests: {ok} ok, {limited} limited");
    let before = api
        .set_limits(Limits {
            rate: 50,
            burst: 20,
            ..api.limits()
        })
        .map_err(|e| format!("{e:?}"))?;
    println!("from code: {} -> {}", show(&before), show(&api.limits()));
    let (ok, limited) = burst(&client, addr, 8).await?;
    println!(
        "8 requests: {ok} ok, {limited} limited (the key kept what it had used; no fresh burst)"
    );
    let refused = api
        .set_limits(Limits {
            burst: 0,
            ..api.limits()
        })
        .unwrap_err();
    let reasons: Vec<String> = refused.iter().map(ToString::to_string).collect();
    println!(
        "from code, burst 0: refused: {}; limits unchanged: {}",
        reasons.join("; "),
        show(&api.limits())
    );

    // 2. Through the admin API.
    let (status, headers, current) = admin_call(
        admin,
        &token,
        Method::GET,
        "/admin/v1/limits/api",
        None,
        None,
    )
    .await?;
    let etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    println!(
        "admin: GET /admin/v1/limits/api -> {} etag {etag} settings {}",
        status.as_u16(),
        current["settings"]
    );
    let (status, _, reply) = admin_call(
        admin,
        &token,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(&etag),
        Some(json!({ "rate": 2, "burst": 2 })),
    )
    .await?;
    println!(
        "admin: PUT {{\"rate\": 2, \"burst\": 2}} with If-Match {etag} -> {} after {}",
        status.as_u16(),
        reply["after"]
    );
    println!("the handle sees it: {}", show(&api.limits()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, limited) = burst(&client, addr, 6).await?;
    println!("6 requests: {ok} ok, {limited} limited");

    let (status, _, reply) = admin_call(
        admin,
        &token,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(&etag),
        Some(json!({ "burst": 100 })),
    )
    .await?;
    println!(
        "admin: PUT with the old If-Match {etag} -> {} (someone changed it first; current version {})",
        status.as_u16(),
        reply["current_version"]
    );
    let (status, _, reply) = admin_call(
        admin,
        &token,
        Method::PUT,
        "/admin/v1/limits/api",
        None,
        Some(json!({ "burst": 0, "rate": 0 })),
    )
    .await?;
    let errors: Vec<String> = reply["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["field"].as_str().unwrap_or(""),
                        e["reason"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "admin: PUT {{\"burst\": 0, \"rate\": 0}} -> {}: {}",
        status.as_u16(),
        errors.join("; ")
    );

    // 3. Shadow mode: count what would be rejected, reject nothing.
    let (status, _, _) = admin_call(
        admin,
        &token,
        Method::PUT,
        "/admin/v1/limits/api",
        None,
        Some(json!({ "mode": "shadow" })),
    )
    .await?;
    let (ok, limited) = burst(&client, addr, 6).await?;
    println!(
        "admin: PUT {{\"mode\": \"shadow\"}} -> {}; 6 requests: {ok} ok, {limited} limited, {} would have been",
        status.as_u16(),
        api.stats().shadow_rejected
    );

    if smoke {
        return Ok(());
    }
    println!("\nstill serving; try:");
    println!("  curl -i http://{addr}/");
    println!(
        "  curl -X PUT -H 'authorization: Bearer {token}' -d '{{\"mode\":\"enforce\",\"burst\":3}}' http://{admin}/admin/v1/limits/api"
    );
    println!("  palisade-top --url http://{admin} --token {token}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
