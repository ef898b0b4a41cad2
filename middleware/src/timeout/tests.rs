use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::control::Registry;

type Res = Response<Full<Bytes>>;

/// A request body fed by the test, chunk by chunk; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// Sets the flag when dropped: proves the inner future was dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn layer(ms: u64) -> (TimeoutLayer, TimeoutHandle) {
    TimeoutLayer::new(
        TimeoutConfig::builder()
            .timeout(Duration::from_millis(ms))
            .exempt_path("/health/*")
            .build()
            .unwrap(),
    )
}

/// A handler sleeping `?ms` milliseconds, flagging when its future is dropped.
fn sleeper(
    dropped: Arc<AtomicBool>,
) -> impl Service<Request<TimeoutBody<Full<Bytes>>>, Response = Res, Error = Infallible, Future: Send>
+ Clone {
    service_fn(move |req: Request<TimeoutBody<Full<Bytes>>>| {
        let flag = DropFlag(Arc::clone(&dropped));
        async move {
            let _flag = flag;
            let ms: u64 = req.uri().query().unwrap_or("0").parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("done"))))
        }
    })
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn cuts_a_hung_handler_at_the_deadline_with_504() {
    let (layer, handle) = layer(100);
    let dropped = Arc::new(AtomicBool::new(false));
    let svc = layer.layer(sleeper(Arc::clone(&dropped)));
    let task = tokio::spawn(svc.oneshot(get("/?3600000")));
    tokio::time::advance(Duration::from_millis(99)).await;
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "answered before the deadline");
    assert!(!dropped.load(Ordering::SeqCst));
    tokio::time::advance(Duration::from_millis(1)).await;
    let res = task.await.unwrap().unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler's future was dropped"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["status"], 504);
    assert_eq!(body["timeout_ms"], 100);
    let stats = handle.stats();
    assert_eq!(
        (stats.timed_out, stats.completed, stats.cancelled),
        (1, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn answers_in_time_untouched() {
    let (layer, handle) = layer(100);
    let svc = layer.layer(sleeper(Arc::new(AtomicBool::new(false))));
    let res = svc.oneshot(get("/?99")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "done");
    assert_eq!(handle.stats().completed, 1);
}

#[tokio::test(start_paused = true)]
async fn answers_408_while_the_body_is_still_arriving() {
    let (layer, handle) = TimeoutLayer::new(
        TimeoutConfig::builder()
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    // The handler reads the whole body before answering.
    let svc = layer.layer(service_fn(
        |req: Request<TimeoutBody<ChannelBody>>| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        },
    ));
    let (tx, rx) = mpsc::channel(4);
    tx.send(Bytes::from("first half")).await.unwrap();
    let req = Request::post("/upload").body(ChannelBody(rx)).unwrap();
    let task = tokio::spawn(svc.oneshot(req));
    tokio::time::advance(Duration::from_millis(100)).await;
    let res = task.await.unwrap().unwrap();
    assert_eq!(res.status(), 408);
    assert_eq!(res.headers()["connection"], "close");
    assert_eq!(handle.stats().client_timed_out, 1);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_with_an_unread_body_is_a_504() {
    let (layer, _handle) = layer(100);
    // The body never ends, but the handler never reads it: the service is slow, not the client.
    let svc = layer.layer(service_fn(
        |_req: Request<TimeoutBody<ChannelBody>>| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        },
    ));
    let (_tx, rx) = mpsc::channel(1);
    let res = svc
        .oneshot(Request::post("/").body(ChannelBody(rx)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
}

#[tokio::test(start_paused = true)]
async fn a_complete_body_then_a_slow_handler_is_a_504() {
    let (layer, _handle) = layer(100);
    let svc = layer.layer(service_fn(
        |req: Request<TimeoutBody<ChannelBody>>| async move {
            let _ = req.into_body().collect().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        },
    ));
    let (tx, rx) = mpsc::channel(1);
    tx.send(Bytes::from("all of it")).await.unwrap();
    drop(tx);
    let res = svc
        .oneshot(Request::post("/").body(ChannelBody(rx)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
}

#[tokio::test(start_paused = true)]
async fn exempt_paths_and_disabled_timing_run_to_completion() {
    let (layer, handle) = layer(100);
    let svc = layer.layer(sleeper(Arc::new(AtomicBool::new(false))));
    let res = svc.clone().oneshot(get("/health/ready?500")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(handle.stats().exempt, 1);

    handle
        .set_settings(TimeoutSettings {
            enabled: false,
            timeout_ms: 100,
        })
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(get("/?500")).await.unwrap().status(),
        200
    );
    handle
        .set_settings(TimeoutSettings {
            enabled: true,
            timeout_ms: 100,
        })
        .unwrap();
    assert_eq!(svc.oneshot(get("/?500")).await.unwrap().status(), 504);
}

#[tokio::test(start_paused = true)]
async fn runtime_changes_apply_to_new_requests_and_invalid_ones_change_nothing() {
    let (layer, handle) = layer(100);
    let registry = Registry::new();
    registry.add(&handle).unwrap();
    let svc = layer.layer(sleeper(Arc::new(AtomicBool::new(false))));

    // A request in flight keeps the deadline it started with.
    let in_flight = tokio::spawn(svc.clone().oneshot(get("/?150")));
    tokio::task::yield_now().await;

    let c = registry.get("timeout").unwrap();
    let errors = c.apply(&json!({ "timeout_ms": 0 }), false).unwrap_err();
    assert_eq!(errors[0].field, "timeout_ms");
    assert!(c.apply(&json!({ "timeout_ms": "soon" }), false).is_err());
    assert!(c.apply(&json!({ "deadline": 5 }), false).is_err());
    assert_eq!(c.version(), 0);
    assert_eq!(handle.timeout(), Duration::from_millis(100));

    let dry = c.apply(&json!({ "timeout_ms": 200 }), true).unwrap();
    assert_eq!(dry.after["timeout_ms"], 200);
    assert_eq!(handle.timeout(), Duration::from_millis(100));

    let change = c.apply(&json!({ "timeout_ms": 200 }), false).unwrap();
    assert_eq!(change.before["timeout_ms"], 100);
    assert_eq!(c.version(), 1);
    assert_eq!(c.settings(), json!({ "enabled": true, "timeout_ms": 200 }));

    assert_eq!(in_flight.await.unwrap().unwrap().status(), 504);
    assert_eq!(svc.oneshot(get("/?150")).await.unwrap().status(), 200);
    assert_eq!(c.stats()["timed_out"], 1);
    assert_eq!(c.stats()["completed"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_request_counts_as_cancelled() {
    let (layer, handle) = layer(100);
    let svc = layer.layer(sleeper(Arc::new(AtomicBool::new(false))));
    let task = tokio::spawn(svc.oneshot(get("/?50")));
    tokio::task::yield_now().await;
    task.abort();
    let _ = task.await;
    assert_eq!(handle.stats().cancelled, 1);
    assert_eq!(handle.stats().completed, 0);
}

#[test]
fn config_errors_name_the_field() {
    let e = TimeoutConfig::builder()
        .timeout(Duration::from_secs(100_000))
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "timeout.timeout_ms must be between 1 and 86400000 (got 100000000)"
    );
    let e = TimeoutConfig::builder()
        .exempt_path("health")
        .build()
        .unwrap_err();
    assert!(
        e.to_string().contains("`health` must start with `/`"),
        "{e}"
    );
}
