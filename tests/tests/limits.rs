//! Protocol limits enforced by the connection layer: body size, header count and size, malformed
//! requests and slowloris.

use std::time::{Duration, Instant};

use http::Method;
use palisade_tests::http::{Client, raw_exchange, raw_status};
use palisade_tests::server::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn oversized_body_is_413() {
    let server = ServerProcess::builder()
        .args(["--set", "server.body_limit_bytes=1024"])
        .spawn();
    let client = Client::new();
    let body = format!(r#"{{"name":"{}","email":"a@b.co"}}"#, "x".repeat(4096));
    let res = client
        .request(
            Method::POST,
            &server.url("/api/v1/users"),
            &[("content-type", "application/json")],
            body,
        )
        .await
        .unwrap();
    assert_eq!(res.status, 413);
    // The server is still fine.
    assert_eq!(
        client.get(&server.url("/plaintext")).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let server = ServerProcess::builder()
        .args(["--set", "server.max_headers=20"])
        .spawn();
    let mut raw = String::from("GET /plaintext HTTP/1.1\r\nhost: x\r\n");
    for i in 0..40 {
        raw.push_str(&format!("x-h{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    let out = raw_exchange(server.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        raw_status(&out),
        Some(431),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn oversized_header_is_431() {
    let server = ServerProcess::builder()
        .args(["--set", "server.max_header_bytes=8192"])
        .spawn();
    let raw = format!(
        "GET /plaintext HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let out = raw_exchange(server.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        raw_status(&out),
        Some(431),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn malformed_request_line_is_400() {
    let server = ServerProcess::start();
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let out = raw_exchange(server.addr, raw, Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&out),
            Some(400),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[tokio::test]
async fn slowloris_connection_is_closed_at_the_header_timeout() {
    let server = ServerProcess::builder()
        .args(["--set", "server.header_read_timeout_ms=500"])
        .spawn();
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /plaintext HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    // Dribble a header byte every 100 ms; the server must cut us off around 500 ms.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(b"x").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
        {
            // EOF (0) or an error response (408) both mean the server gave up on us.
            let _ = n;
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("slowloris connection was never closed");
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    // Meanwhile normal clients are served.
    assert_eq!(
        Client::new()
            .get(&server.url("/plaintext"))
            .await
            .unwrap()
            .status,
        200
    );
}
