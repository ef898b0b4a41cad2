use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use std::future::{Ready, ready};
use tokio::time::{Instant, advance};

use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

fn drain(delay_secs: u64, grace_secs: u64) -> Drain {
    Drain::new(
        DrainConfig::builder()
            .delay(Duration::from_secs(delay_secs))
            .grace(Duration::from_secs(grace_secs))
            .build()
            .unwrap(),
    )
}

type Handler = fn(Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn ok(_req: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
}

fn svc(drain: &Drain) -> DrainService<ServiceFn<Handler>> {
    drain.layer().layer(service_fn(ok as Handler))
}

fn req(version: Version) -> Request<()> {
    Request::builder().version(version).body(()).unwrap()
}

/// Lets spawned tasks (the delay timer) run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_fails_at_start_and_accept_stops_after_delay() {
    let d = drain(5, 30);
    assert!(d.is_ready());
    assert_eq!(d.readiness::<Full<Bytes>>().status(), 200);
    let stopped = tokio::spawn(d.accept_stopped());

    assert!(d.start());
    assert!(!d.is_ready());
    assert!(d.is_draining());
    assert_eq!(d.phase(), DrainPhase::Draining);
    let res = d.readiness::<Full<Bytes>>();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    advance(Duration::from_millis(4_900)).await;
    settle().await;
    assert!(!stopped.is_finished());
    assert_eq!(d.phase(), DrainPhase::Draining);

    advance(Duration::from_millis(100)).await;
    settle().await;
    assert!(stopped.is_finished());
    assert_eq!(d.phase(), DrainPhase::Closing);
}

#[tokio::test(start_paused = true)]
async fn start_is_idempotent() {
    let d = drain(5, 30);
    assert!(d.start());
    advance(Duration::from_secs(3)).await;
    assert!(!d.start());
    advance(Duration::from_secs(2)).await;
    settle().await;
    // The delay counts from the first start.
    assert_eq!(d.phase(), DrainPhase::Closing);
}

#[tokio::test(start_paused = true)]
async fn connection_close_is_added_only_after_accept_stopped_and_only_on_http1() {
    let d = drain(5, 30);
    let mut s = svc(&d);

    let res = s
        .ready()
        .await
        .unwrap()
        .call(req(Version::HTTP_11))
        .await
        .unwrap();
    assert!(res.headers().get("connection").is_none());

    d.start();
    let res = s
        .ready()
        .await
        .unwrap()
        .call(req(Version::HTTP_11))
        .await
        .unwrap();
    assert!(
        res.headers().get("connection").is_none(),
        "still serving normally during the delay"
    );

    advance(Duration::from_secs(5)).await;
    settle().await;
    let res = s
        .ready()
        .await
        .unwrap()
        .call(req(Version::HTTP_11))
        .await
        .unwrap();
    assert_eq!(res.headers()["connection"], "close");
    let res = s
        .ready()
        .await
        .unwrap()
        .call(req(Version::HTTP_10))
        .await
        .unwrap();
    assert_eq!(res.headers()["connection"], "close");
    let res = s
        .ready()
        .await
        .unwrap()
        .call(req(Version::HTTP_2))
        .await
        .unwrap();
    assert!(res.headers().get("connection").is_none());
}

#[tokio::test(start_paused = true)]
async fn request_is_in_flight_until_its_body_is_done_or_dropped() {
    let d = drain(0, 30);
    let s = svc(&d);

    let res = s.clone().oneshot(req(Version::HTTP_11)).await.unwrap();
    assert_eq!(d.in_flight(), 1);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    assert_eq!(d.in_flight(), 0);

    let res = s.clone().oneshot(req(Version::HTTP_11)).await.unwrap();
    assert_eq!(d.in_flight(), 1);
    drop(res);
    assert_eq!(d.in_flight(), 0);

    // A future dropped before its response also ends the request.
    let mut s2 = svc(&d);
    let fut = s2.ready().await.unwrap().call(req(Version::HTTP_11));
    assert_eq!(d.in_flight(), 1);
    drop(fut);
    assert_eq!(d.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn wait_returns_when_the_last_request_finishes() {
    let d = drain(0, 30);
    let res = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    let done = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    drop(done); // completed before the drain: not in the report

    let started = Instant::now();
    d.start();
    let waiter = {
        let d = d.clone();
        tokio::spawn(async move { d.wait(Duration::from_secs(30)).await })
    };
    advance(Duration::from_secs(2)).await;
    settle().await;
    assert!(!waiter.is_finished());
    assert_eq!(d.phase(), DrainPhase::Closing);

    drop(res);
    let report = waiter.await.unwrap();
    assert_eq!(report.completed, 1);
    assert_eq!(report.cut, 0);
    assert_eq!(report.elapsed, Duration::from_secs(2));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(d.phase(), DrainPhase::Finished);
}

#[tokio::test(start_paused = true)]
async fn wait_reports_requests_still_running_at_the_deadline_as_cut() {
    let d = drain(0, 30);
    let a = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    let b = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    let c = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    d.start();
    let waiter = {
        let d = d.clone();
        tokio::spawn(async move { d.wait(Duration::from_secs(10)).await })
    };
    settle().await;
    advance(Duration::from_secs(1)).await;
    drop(a);
    let report = waiter.await.unwrap();
    assert_eq!(report.completed, 1);
    assert_eq!(report.cut, 2);
    assert_eq!(report.elapsed, Duration::from_secs(10));
    drop((b, c));
}

#[tokio::test(start_paused = true)]
async fn wait_with_a_deadline_inside_the_delay_ends_at_the_deadline() {
    let d = drain(10, 30);
    let held = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    let report = d.wait(Duration::from_secs(3)).await;
    assert_eq!(report.cut, 1);
    assert_eq!(report.elapsed, Duration::from_secs(3));
    assert_eq!(d.phase(), DrainPhase::Finished);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn force_ends_the_wait_at_once() {
    let d = drain(0, 3600);
    let held = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    d.start();
    let waiter = {
        let d = d.clone();
        tokio::spawn(async move { d.wait(Duration::from_secs(3600)).await })
    };
    advance(Duration::from_secs(1)).await;
    d.force();
    let report = waiter.await.unwrap();
    assert_eq!(report.cut, 1);
    assert_eq!(report.elapsed, Duration::from_secs(1));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn streams_are_signalled_when_accept_stops() {
    let d = drain(5, 30);
    let signal = d.signal();
    let cancelled = tokio::spawn(signal.cancelled());
    d.start();
    settle().await;
    assert!(!signal.is_cancelled());
    advance(Duration::from_secs(5)).await;
    cancelled.await.unwrap();
    assert!(signal.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn guards_count_background_work() {
    let d = drain(0, 30);
    let job = d.guard();
    assert_eq!(d.in_flight(), 1);
    d.start();
    let waiter = {
        let d = d.clone();
        tokio::spawn(async move { d.wait(Duration::from_secs(30)).await })
    };
    advance(Duration::from_secs(4)).await;
    drop(job);
    let report = waiter.await.unwrap();
    assert_eq!((report.completed, report.cut), (1, 0));
    assert_eq!(report.elapsed, Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn run_bounds_a_server_that_never_finishes_by_delay_plus_grace() {
    let d = drain(2, 5);
    let held = svc(&d).oneshot(req(Version::HTTP_11)).await.unwrap();
    let starter = {
        let d = d.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            d.start();
        })
    };
    let began = Instant::now();
    let server = std::future::pending::<Result<(), Infallible>>();
    let report = d.run(server).await.unwrap();
    starter.await.unwrap();
    assert_eq!(report.cut, 1);
    assert_eq!(report.elapsed, Duration::from_secs(7));
    assert_eq!(began.elapsed(), Duration::from_secs(8));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn run_returns_once_idle_and_the_server_finished() {
    let d = drain(0, 30);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = async move {
        let _ = rx.await;
        Ok::<(), Infallible>(())
    };
    let runner = {
        let d = d.clone();
        tokio::spawn(async move { d.run(server).await })
    };
    settle().await;
    d.start();
    settle().await;
    assert!(
        !runner.is_finished(),
        "waits for the server to close its connections"
    );
    tx.send(()).unwrap();
    let report = runner.await.unwrap().unwrap();
    assert_eq!((report.completed, report.cut), (0, 0));
}

#[test]
fn report_serializes_elapsed_as_milliseconds() {
    let report = DrainReport {
        completed: 3,
        cut: 1,
        elapsed: Duration::from_millis(1500),
    };
    let json = serde_json::to_value(report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"completed": 3, "cut": 1, "elapsed": 1500})
    );
    let back: DrainReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn start_outside_a_runtime_stops_accepting_at_once() {
    let d = drain(5, 30);
    assert!(d.start());
    assert_eq!(d.phase(), DrainPhase::Closing);
}

#[tokio::test(start_paused = true)]
async fn an_explicit_delay_overrides_the_configured_one() {
    let d = drain(30, 30);
    assert!(d.start_with_delay(Duration::from_secs(2)));
    assert_eq!(d.phase(), DrainPhase::Draining);
    advance(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(d.phase(), DrainPhase::Closing);
    // A huge timeout is capped instead of overflowing the clock.
    let report = d.wait(Duration::MAX).await;
    assert_eq!(report.cut, 0);
}
