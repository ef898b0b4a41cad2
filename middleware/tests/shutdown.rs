//! Graceful drain end to end: `axum::serve` on a real socket, real HTTP/1.1 clients.
#![cfg(feature = "shutdown")]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use palisade::shutdown::{Drain, DrainConfig, DrainPhase, DrainReport};
use palisade_tests::http::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Polls `check` every 10 ms for at most `timeout`.
async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

struct Server {
    addr: SocketAddr,
    drain: Drain,
    release: watch::Sender<bool>,
    run: JoinHandle<std::io::Result<DrainReport>>,
}

/// A server whose `/slow` requests wait until `release` is set.
async fn start(config: DrainConfig) -> Server {
    let drain = Drain::new(config);
    let (release, released) = watch::channel(false);
    let ready = drain.clone();
    let app = Router::new()
        .route(
            "/slow",
            get(|State(mut rx): State<watch::Receiver<bool>>| async move {
                let _ = rx.wait_for(|go| *go).await;
                "done"
            }),
        )
        .route(
            "/ready",
            get(move || {
                let d = ready.clone();
                async move { d.readiness::<Body>() }
            }),
        )
        .with_state(released)
        .layer(drain.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum::serve(listener, app).with_graceful_shutdown(drain.accept_stopped());
    let run = {
        let drain = drain.clone();
        tokio::spawn(async move { drain.run(server).await })
    };
    Server {
        addr,
        drain,
        release,
        run,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_completes_100_slow_requests_and_refuses_new_connections() {
    let server = start(
        DrainConfig::builder()
            .delay(Duration::from_millis(300))
            .grace(Duration::from_secs(20))
            .build()
            .unwrap(),
    )
    .await;
    let url = format!("http://{}", server.addr);
    let client = Client::without_keep_alive().timeout(Duration::from_secs(30));

    let slow: Vec<_> = (0..100)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(&format!("{url}/slow")).await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || server.drain.in_flight() == 100).await,
        "100 requests in flight (got {})",
        server.drain.in_flight()
    );
    let ready = client.get(&format!("{url}/ready")).await.unwrap();
    assert_eq!(ready.status, 200);

    let began = Instant::now();
    assert!(server.drain.start());
    // During the delay the server still accepts, and readiness fails.
    let ready = client.get(&format!("{url}/ready")).await.unwrap();
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.header("content-type"),
        Some("application/problem+json")
    );

    tokio::time::timeout(Duration::from_secs(5), server.drain.accept_stopped())
        .await
        .expect("accept stops after the delay");
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.drain.phase(), DrainPhase::Closing);
    // The listener closes: new connections are refused, not queued.
    let addr = server.addr;
    assert!(
        eventually(Duration::from_secs(5), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
        })
        .await,
        "new connections are refused once accept stopped"
    );
    assert_eq!(
        server.drain.in_flight(),
        100,
        "in-flight requests are untouched"
    );

    server.release.send_replace(true);
    for task in slow {
        let res = task.await.unwrap().expect("slow request completes");
        assert_eq!(res.status, 200);
        assert_eq!(res.text(), "done");
        assert_eq!(res.header("connection"), Some("close"));
    }
    let report = tokio::time::timeout(Duration::from_secs(10), server.run)
        .await
        .expect("run returns once idle")
        .unwrap()
        .unwrap();
    assert_eq!(report.cut, 0);
    assert_eq!(
        report.completed, 101,
        "100 slow requests and the 503 readiness probe"
    );
    assert!(report.elapsed < Duration::from_secs(20));
    assert_eq!(server.drain.phase(), DrainPhase::Finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_running_at_the_deadline_are_reported_cut() {
    let server = start(
        DrainConfig::builder()
            .grace(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
    .await;
    let url = format!("http://{}", server.addr);
    let client = Client::without_keep_alive().timeout(Duration::from_secs(30));
    let _stuck: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(&format!("{url}/slow")).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || server.drain.in_flight() == 5).await);

    let began = Instant::now();
    server.drain.start();
    let report = tokio::time::timeout(Duration::from_secs(10), server.run)
        .await
        .expect("run gives up at the deadline")
        .unwrap()
        .unwrap();
    let took = began.elapsed();
    assert_eq!(report.cut, 5);
    assert_eq!(report.completed, 0);
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_get_connection_close_once_draining() {
    let server = start(
        DrainConfig::builder()
            .delay(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .await;
    let url = format!("http://{}", server.addr);
    let client = Client::new();
    let res = client.get(&format!("{url}/ready")).await.unwrap();
    assert_eq!(res.header("connection"), None);

    // One request held across the accept stop, on a keep-alive connection.
    let held = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(&format!("{url}/slow")).await })
    };
    assert!(eventually(Duration::from_secs(5), || server.drain.in_flight() == 1).await);
    server.drain.start();
    server.drain.accept_stopped().await;
    server.release.send_replace(true);
    let res = held.await.unwrap().unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), Some("close"));
    let report = server.run.await.unwrap().unwrap();
    assert_eq!((report.completed, report.cut), (1, 0));
}
