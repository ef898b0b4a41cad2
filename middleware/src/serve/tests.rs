//! The connection's own header-read deadline ([`ConnDeadline`](super::ConnDeadline)) over real
//! sockets: it restarts with every response, never runs while a request is in flight, and cuts
//! idle and slow connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ServeConfig, serve};
use crate::shutdown::{Drain, DrainConfig};

const HEAD_TIMEOUT: Duration = Duration::from_millis(400);

/// A server with a 400 ms header-read timeout; `/slow` answers after 1 s.
async fn server() -> (SocketAddr, Drain) {
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "slow"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let drain = Drain::new(DrainConfig::default());
    let config = ServeConfig {
        header_read_timeout: HEAD_TIMEOUT,
        ..ServeConfig::default()
    };
    let serving = serve(listener, app)
        .config(config)
        .drain(drain.clone())
        .with_signals(false);
    tokio::spawn(serving.into_future());
    (addr, drain)
}

/// Sends one keep-alive `GET` and reads its whole response; `None` when the server closed.
async fn get_on(conn: &mut TcpStream, path: &str) -> Option<String> {
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return Some(text.into_owned());
            }
        }
    }
}

/// Reads until the server closes the connection; how long that took.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            conn.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_elapsed) => return None,
        }
    }
}

#[tokio::test]
async fn a_busy_keep_alive_connection_outlives_the_header_timeout() {
    let (addr, _drain) = server().await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut served = 0;
    // Requests 150 ms apart for 3 header timeouts: each one restarts the clock.
    while started.elapsed() < HEAD_TIMEOUT * 3 {
        let res = get_on(&mut conn, "/").await.expect("connection kept");
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(served >= 7, "{served}");
}

#[tokio::test]
async fn a_request_in_flight_is_never_cut_by_the_header_timeout() {
    let (addr, _drain) = server().await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // The handler takes 1 s, 2.5 header timeouts; then the connection still serves.
    let res = get_on(&mut conn, "/slow").await.expect("answered");
    assert!(res.ends_with("slow"), "{res}");
    let res = get_on(&mut conn, "/").await.expect("still open");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let (addr, _drain) = server().await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut conn, "/").await.is_some());
    let closed = closed_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("idle connection closed");
    assert!(
        closed >= HEAD_TIMEOUT - Duration::from_millis(50) && closed < Duration::from_secs(3),
        "closed after {closed:?}"
    );
}

#[tokio::test]
async fn a_dribbled_head_is_cut_at_the_header_timeout() {
    let (addr, _drain) = server().await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    conn.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // One header byte every 50 ms: bytes keep arriving, the head never completes.
    let cut = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if conn.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
        {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never cut");
    };
    assert!(
        cut >= HEAD_TIMEOUT - Duration::from_millis(50) && cut < Duration::from_secs(3),
        "cut after {cut:?}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_cut_before_its_version_is_known() {
    let (addr, _drain) = server().await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // A prefix of the HTTP/2 preface, then nothing.
    conn.write_all(b"PRI * HT").await.unwrap();
    let closed = closed_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
}
