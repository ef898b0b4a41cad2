//! The request timeout and the concurrency limit of the reference server, end to end: a hung
//! handler is cut with 504, a stalled request body gets 408, over-limit requests are shed with
//! 503 + `Retry-After` while the admitted ones keep their latency, and both limits change at
//! runtime through the supervisor's admin API, reaching every worker.

use std::time::{Duration, Instant};

use http::Method;
use palisade_tests::http::{Client, raw_exchange, raw_status};
use palisade_tests::load::{admin_get, eventually_async, supervisor};
use palisade_tests::server::ServerProcess;
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(100);

/// `PUT /admin/v1/limits/{name}` with the read-write token; status and body.
async fn put_limit(
    server: &ServerProcess,
    client: &Client,
    name: &str,
    patch: Value,
) -> (u16, Value) {
    let (k, v) = server.admin_auth();
    let res = client
        .json(
            Method::PUT,
            &server.admin_url(&format!("/admin/v1/limits/{name}")),
            &[(&k, &v)],
            &patch,
        )
        .await
        .unwrap();
    let body = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    (res.status.as_u16(), body)
}

/// `n` sequential `GET path` requests, each on a new connection (so every worker is likely to
/// answer one); the statuses.
async fn statuses(server: &ServerProcess, path: &str, n: usize) -> Vec<u16> {
    let client = Client::without_keep_alive();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            client
                .get(&server.url(path))
                .await
                .map_or(0, |r| r.status.as_u16()),
        );
    }
    out
}

#[tokio::test]
async fn timeout_cuts_hung_handlers_and_changes_at_runtime_on_every_worker() {
    let server = supervisor(2, &["--set", "timeout.timeout_ms=300"]);
    let client = Client::new();

    // A handler slower than the deadline: 504 problem document, near the deadline.
    let started = Instant::now();
    let res = client.get(&server.url("/slow?ms=3000")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(res.json()["timeout_ms"], 300);
    assert!(
        took < Duration::from_millis(2000),
        "cut at the deadline, took {took:?}"
    );
    // Fast requests are untouched.
    assert_eq!(statuses(&server, "/slow?ms=10", 4).await, [200; 4]);

    // An invalid change: 400 naming the field, nothing changed.
    let (status, body) = put_limit(&server, &client, "timeout", json!({"timeout_ms": 0})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("timeout_ms"), "{body}");
    let current = admin_get(&server, &client, "limits/timeout").await.unwrap();
    assert_eq!(current["settings"]["timeout_ms"], 300, "{current}");

    // Raise it: every worker lets a 600 ms handler finish.
    let (status, body) = put_limit(&server, &client, "timeout", json!({"timeout_ms": 5000})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually_async(Duration::from_secs(10), POLL, || async {
            statuses(&server, "/slow?ms=600", 6).await == [200; 6]
        })
        .await,
        "a raised timeout did not reach every worker"
    );

    // Lower it again: every worker cuts the same handler.
    let (status, _) = put_limit(&server, &client, "timeout", json!({"timeout_ms": 100})).await;
    assert_eq!(status, 200);
    assert!(
        eventually_async(Duration::from_secs(10), POLL, || async {
            statuses(&server, "/slow?ms=600", 6).await == [504; 6]
        })
        .await,
        "a lowered timeout did not reach every worker"
    );

    // The workers' counters, summed by the supervisor.
    assert!(
        eventually_async(Duration::from_secs(5), POLL, || async {
            admin_get(&server, &client, "limits/timeout")
                .await
                .is_ok_and(|c| c["stats"]["timed_out"].as_u64() >= Some(7))
        })
        .await
    );
}

#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let server = ServerProcess::builder()
        .args(["--set", "timeout.timeout_ms=300"])
        .spawn();
    // The head promises 100 bytes of JSON; 10 arrive, then nothing.
    let raw = b"POST /api/v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n{\"name\": \"";
    let started = Instant::now();
    let out = raw_exchange(server.addr, raw, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(raw_status(&out), Some(408), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the server closed the connection"
    );
}

#[tokio::test]
async fn over_limit_requests_are_shed_while_the_rest_keep_their_latency() {
    let server = supervisor(2, &[]);
    let client = Client::new();

    // One request in flight per worker; wait until both workers report the new limit.
    let (status, body) =
        put_limit(&server, &client, "concurrency", json!({"max_in_flight": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually_async(Duration::from_secs(10), POLL, || async {
            admin_get(&server, &client, "limits/concurrency")
                .await
                .is_ok_and(|c| c["stats"]["limit"] == 2)
        })
        .await,
        "both workers should report limit 1 (summed: 2)"
    );

    // 12 concurrent 800 ms requests on their own connections: at most one per worker runs.
    let started = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let url = server.url("/slow?ms=800");
            tokio::spawn(async move {
                let res = Client::without_keep_alive().get(&url).await.unwrap();
                (res, started.elapsed())
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut shed = Vec::new();
    for t in tasks {
        let (res, took) = t.await.unwrap();
        match res.status.as_u16() {
            200 => ok.push(took),
            503 => {
                assert_eq!(res.header("retry-after"), Some("1"));
                assert_eq!(res.header("content-type"), Some("application/problem+json"));
                shed.push(took);
            }
            other => panic!("unexpected {other}: {}", res.text()),
        }
    }
    eprintln!("admitted after {ok:?}; shed after {shed:?}");
    assert!(
        (1..=2).contains(&ok.len()),
        "admitted {ok:?}, shed {shed:?}"
    );
    assert_eq!(ok.len() + shed.len(), 12);
    // Shed at once, not queued behind the slow ones; the admitted ones take their 800 ms.
    for took in &shed {
        assert!(*took < Duration::from_millis(700), "shed after {took:?}");
    }
    for took in &ok {
        assert!(
            *took < Duration::from_millis(1600),
            "admitted request took {took:?}"
        );
    }
    // The workers' counters reach the supervisor, summed.
    let expected = shed.len() as u64;
    assert!(
        eventually_async(Duration::from_secs(5), POLL, || async {
            admin_get(&server, &client, "limits/concurrency")
                .await
                .is_ok_and(|c| c["stats"]["rejected"].as_u64() == Some(expected))
        })
        .await
    );

    // Raised again at runtime: the same burst is admitted in full.
    let (status, _) = put_limit(
        &server,
        &client,
        "concurrency",
        json!({"max_in_flight": 64}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        eventually_async(Duration::from_secs(10), POLL, || async {
            admin_get(&server, &client, "limits/concurrency")
                .await
                .is_ok_and(|c| c["stats"]["limit"] == 128)
        })
        .await
    );
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let url = server.url("/slow?ms=200");
            tokio::spawn(
                async move { Client::without_keep_alive().get(&url).await.unwrap().status },
            )
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Invalid: 400 with reasons, nothing changed.
    let (status, body) = put_limit(
        &server,
        &client,
        "concurrency",
        json!({"algorithm": "aimd", "min_in_flight": 100, "max_in_flight": 10}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("min_in_flight"), "{body}");
}
