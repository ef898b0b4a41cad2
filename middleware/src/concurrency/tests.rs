use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::control::{DynComponent, Registry};

type Res = Response<Full<Bytes>>;

/// A handler sleeping `?ms` milliseconds (and answering `?status` if given).
fn sleeper() -> impl Service<Request<()>, Response = Res, Error = Infallible, Future: Send> + Clone
{
    service_fn(|req: Request<()>| async move {
        let mut ms = 0;
        let mut status = 200;
        for pair in req.uri().query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("ms", v)) => ms = v.parse().unwrap(),
                Some(("status", v)) => status = v.parse().unwrap(),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut res = Response::new(Full::new(Bytes::from("done")));
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok::<_, Infallible>(res)
    })
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

fn limited(max: u32) -> (ConcurrencyLimitLayer, ConcurrencyLimitHandle) {
    ConcurrencyLimitLayer::new(
        ConcurrencyLimitConfig::builder()
            .max_in_flight(max)
            .exempt_path("/health/*")
            .build()
            .unwrap(),
    )
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn sheds_over_the_limit_while_admitted_requests_keep_their_latency() {
    let (layer, handle) = limited(2);
    let svc = layer.layer(sleeper());
    let start = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(get("/?ms=100")).await.unwrap();
                (res, start.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for task in tasks {
        let (res, took) = task.await.unwrap();
        match res.status().as_u16() {
            200 => {
                ok += 1;
                assert_eq!(
                    took,
                    Duration::from_millis(100),
                    "admitted latency unchanged"
                );
            }
            503 => {
                shed += 1;
                assert_eq!(took, Duration::ZERO, "shed at once, not queued");
                assert_eq!(res.headers()["retry-after"], "1");
                assert_eq!(res.headers()["content-type"], "application/problem+json");
                let body: serde_json::Value =
                    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes())
                        .unwrap();
                assert_eq!(body["status"], 503);
                assert_eq!(body["retry_after_ms"], 1000);
                assert_eq!(body["limit"], 2);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, shed), (2, 8));
    let stats = handle.stats();
    assert_eq!((stats.allowed, stats.rejected), (2, 8));
    assert_eq!((stats.in_flight, stats.peak_in_flight), (0, 2));
}

#[tokio::test]
async fn readiness_takes_no_slot() {
    let (layer, handle) = limited(1);
    let svc = layer.layer(sleeper());
    // Many "connections" polling readiness, as hyper does before a request arrives.
    let mut clones: Vec<_> = (0..50).map(|_| svc.clone()).collect();
    for c in &mut clones {
        std::future::poll_fn(|cx| c.poll_ready(cx)).await.unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
    let res = clones[49].call(get("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(handle.stats().allowed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_lowered_limit_sheds_until_enough_requests_finish() {
    let (layer, handle) = limited(4);
    let registry = Registry::new();
    registry.add(&handle).unwrap();
    let svc = layer.layer(sleeper());
    let slow: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot(get(&format!("/?ms={}", 100 * (i + 1))))))
        .collect();
    settle().await;
    assert_eq!(handle.in_flight(), 4);

    let c = registry.get("concurrency").unwrap();
    c.apply(&json!({ "max_in_flight": 2 }), false).unwrap();
    assert_eq!(handle.limit(), 2);
    // 4 in flight, limit 2: shed, and the count is never disturbed.
    assert_eq!(svc.clone().oneshot(get("/")).await.unwrap().status(), 503);
    assert_eq!(handle.in_flight(), 4);

    tokio::time::advance(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(handle.in_flight(), 2);
    assert_eq!(svc.clone().oneshot(get("/")).await.unwrap().status(), 503);
    tokio::time::advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(svc.clone().oneshot(get("/")).await.unwrap().status(), 200);
    for t in slow {
        assert_eq!(t.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(c.stats()["rejected"], 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_request_gives_its_slot_back() {
    let (layer, handle) = limited(1);
    let svc = layer.layer(sleeper());
    let task = tokio::spawn(svc.clone().oneshot(get("/?ms=10000")));
    settle().await;
    assert_eq!(handle.in_flight(), 1);
    task.abort();
    let _ = task.await;
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(svc.oneshot(get("/")).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn exempt_paths_and_a_disabled_limit_admit_everything() {
    let (layer, handle) = limited(1);
    let svc = layer.layer(sleeper());
    let hold = tokio::spawn(svc.clone().oneshot(get("/?ms=1000")));
    settle().await;
    assert_eq!(
        svc.clone()
            .oneshot(get("/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(handle.stats().exempt, 1);
    assert_eq!(svc.clone().oneshot(get("/")).await.unwrap().status(), 503);
    handle
        .set_settings(ConcurrencySettings {
            enabled: false,
            ..handle.settings()
        })
        .unwrap();
    assert_eq!(svc.clone().oneshot(get("/")).await.unwrap().status(), 200);
    assert_eq!(hold.await.unwrap().unwrap().status(), 200);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test]
async fn invalid_changes_are_refused_with_reasons_and_change_nothing() {
    let (_layer, handle) = limited(8);
    let c: &dyn DynComponent = &handle;
    let errors = c
        .apply(&json!({ "max_in_flight": 0, "backoff_percent": 10 }), false)
        .unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["max_in_flight", "backoff_percent"]);
    // The floor only binds AIMD.
    let errors = c
        .apply(&json!({ "algorithm": "aimd", "min_in_flight": 9 }), false)
        .unwrap_err();
    assert_eq!(errors[0].field, "min_in_flight");
    assert!(
        c.apply(&json!({ "max_in_flight": 1, "min_in_flight": 9 }), true)
            .is_ok()
    );
    assert!(c.apply(&json!({ "algorithm": "vegas" }), false).is_err());
    assert!(c.apply(&json!({ "limit": 3 }), false).is_err());
    assert_eq!((c.version(), handle.limit()), (0, 8));
    let dry = c.apply(&json!({ "max_in_flight": 3 }), true).unwrap();
    assert_eq!(
        (dry.after["max_in_flight"].as_u64(), handle.limit()),
        (Some(3), 8)
    );
}

#[tokio::test(start_paused = true)]
async fn aimd_lowers_the_limit_on_a_latency_spike_and_recovers() {
    let (layer, handle) = ConcurrencyLimitLayer::new(
        ConcurrencyLimitConfig::builder()
            .max_in_flight(10)
            .aimd(2, Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    let svc = layer.layer(sleeper());
    assert_eq!(handle.limit(), 10);

    // A latency spike: each slow response multiplies the limit by 0.9 (at least -1).
    for _ in 0..3 {
        let res = svc.clone().oneshot(get("/?ms=80")).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(handle.limit(), 7); // 10 -> 9 -> 8 -> 7
    // A 503 from inside is a drop too, and the floor holds.
    for _ in 0..20 {
        svc.clone().oneshot(get("/?status=503")).await.unwrap();
    }
    assert_eq!(handle.limit(), 2);
    assert_eq!(handle.stats().drops, 23);

    // Recovery: fast responses while the limit is in use raise it by one each.
    for round in 0..20 {
        let limit = handle.limit();
        let batch: Vec<_> = (0..limit)
            .map(|_| tokio::spawn(svc.clone().oneshot(get("/?ms=10"))))
            .collect();
        for t in batch {
            assert_eq!(t.await.unwrap().unwrap().status(), 200, "round {round}");
        }
    }
    assert_eq!(handle.limit(), 10, "back at the ceiling");

    // An idle service (one request at a time) does not grow the limit beyond use.
    handle.set_max_in_flight(100).unwrap();
    assert_eq!(handle.limit(), 10, "a change keeps the learnt limit");
    for _ in 0..20 {
        svc.clone().oneshot(get("/?ms=1")).await.unwrap();
    }
    assert_eq!(handle.limit(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_inside_releases_the_slot_and_counts_as_a_drop() {
    #[cfg(feature = "timeout")]
    {
        use crate::timeout::{TimeoutConfig, TimeoutLayer};
        let (limit, handle) = ConcurrencyLimitLayer::new(
            ConcurrencyLimitConfig::builder()
                .max_in_flight(4)
                .aimd(1, Duration::from_secs(10))
                .build()
                .unwrap(),
        );
        let (timeout, _t) = TimeoutLayer::new(
            TimeoutConfig::builder()
                .timeout(Duration::from_millis(50))
                .build()
                .unwrap(),
        );
        let svc = limit.layer(timeout.layer(service_fn(
            |_req: Request<crate::timeout::TimeoutBody<Full<Bytes>>>| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            },
        )));
        let req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 504);
        assert_eq!(handle.in_flight(), 0);
        assert_eq!((handle.stats().drops, handle.limit()), (1, 3));
    }
}
