//! Circuit breaker behaviour through the tower layer and the control handle.
//! All timing uses tokio's paused clock; nothing sleeps for real.
#![cfg(feature = "circuit-breaker")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade::circuit_breaker::{
    CallError, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerConfigBuilder,
    CircuitBreakerLayer, ErrorClassifier, KeyedCircuitBreaker, Outcome, State,
};
use palisade::control::DynComponent;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

type Body = Full<Bytes>;

fn response(status: u16) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::new(Bytes::new()))
        .unwrap()
}

fn get(path: &str) -> Request<()> {
    Request::builder().uri(path).body(()).unwrap()
}

/// A service answering with the status in the last path segment (`/500`, `/a/404`; anything
/// else is 200), counting calls.
fn status_service(
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let status = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        async move { Ok::<_, Infallible>(response(status)) }
    })
}

fn config() -> CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .name("test")
        .wait_in_open(Duration::from_secs(10))
}

async fn status_of<S>(svc: &mut S, path: &str) -> u16
where
    S: Service<Request<()>, Response = Response<Body>, Error = Infallible>,
{
    svc.ready()
        .await
        .unwrap()
        .call(get(path))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends `n` requests answered with 500.
async fn fail<S>(svc: &mut S, n: usize)
where
    S: Service<Request<()>, Response = Response<Body>, Error = Infallible>,
{
    for _ in 0..n {
        assert_eq!(status_of(svc, "/500").await, 500);
    }
}

#[tokio::test(start_paused = true)]
async fn count_window_opens_at_exact_threshold_and_open_never_calls_inner() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (layer, handle) = CircuitBreakerLayer::new(
        config()
            .count_window(10)
            .minimum_calls(10)
            .failure_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(status_service(calls.clone()));
    for _ in 0..6 {
        assert_eq!(status_of(&mut svc, "/200").await, 200);
    }
    fail(&mut svc, 4).await;
    assert_eq!(handle.state(), Some(State::Closed), "4 of 10 = 40 % < 50 %");
    assert_eq!(
        status_of(&mut svc, "/404").await,
        404,
        "4xx is not a failure"
    );
    assert_eq!(handle.state(), Some(State::Closed));
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), Some(State::Open), "5 of the last 10 = 50 %");
    assert_eq!(calls.load(Ordering::SeqCst), 12);

    advance(Duration::from_millis(7_500)).await;
    let res = svc.ready().await.unwrap().call(get("/200")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3", "ceil(2.5 s)");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], 503);
    assert_eq!(body["breaker"], "test");
    assert_eq!(body["retry_after_ms"], 2_500);
    assert_eq!(calls.load(Ordering::SeqCst), 12, "open: inner never called");
    assert_eq!(handle.stats().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn open_breaker_does_not_wait_for_an_unready_inner_service() {
    /// A service that is never ready.
    #[derive(Clone)]
    struct Stuck;
    impl Service<Request<()>> for Stuck {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Pending
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            unreachable!("never ready, never called")
        }
    }
    let breaker = CircuitBreaker::new(config().build().unwrap());
    breaker.force_open();
    let mut svc = CircuitBreakerLayer::from_breaker(breaker).layer(Stuck);
    let res = tokio::time::timeout(Duration::from_secs(1), svc.ready())
        .await
        .expect("ready at once while open")
        .unwrap()
        .call(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "10");
}

#[tokio::test(start_paused = true)]
async fn time_window_opens_at_exact_threshold() {
    // A 10 s window in 10 buckets of 1 s.
    let b = CircuitBreaker::new(
        config()
            .time_window(Duration::from_secs(10))
            .minimum_calls(4)
            .failure_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    for _ in 0..3 {
        b.try_acquire().unwrap().success();
    }
    advance(Duration::from_secs(5)).await;
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Closed, "2 of 5 = 40 %");
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open, "3 of 6 = 50 %");
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_calls() {
    let b = CircuitBreaker::new(
        config()
            .time_window(Duration::from_secs(10))
            .minimum_calls(4)
            .failure_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.window().calls, 3);
    advance(Duration::from_millis(9_999)).await;
    assert_eq!(b.window().calls, 3);
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        b.window().calls,
        0,
        "the calls of [0 s, 1 s) left the window at 10 s"
    );
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Closed, "1 call < minimum 4");
    for _ in 0..3 {
        b.try_acquire().unwrap().success();
    }
    assert_eq!(b.state(), State::Closed, "1 of 4 = 25 %");
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Closed, "2 of 5 = 40 %");
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open, "3 of 6 = 50 %");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let (layer, handle) = CircuitBreakerLayer::new(
        config()
            .count_window(4)
            .minimum_calls(4)
            .slow_call(Duration::from_millis(200), 50.0)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(service_fn(|req: Request<()>| async move {
        let ms: u64 = req.uri().path()[1..].parse().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>(response(200))
    }));
    for path in ["/10", "/10", "/199", "/200"] {
        assert_eq!(status_of(&mut svc, path).await, 200);
    }
    assert_eq!(handle.state(), Some(State::Closed), "1 slow of 4 = 25 %");
    assert_eq!(handle.window().unwrap().slow_calls, 1);
    assert_eq!(status_of(&mut svc, "/500").await, 200);
    assert_eq!(
        handle.state(),
        Some(State::Open),
        "2 slow of the last 4 = 50 %"
    );
    assert_eq!(handle.stats().calls.slow_success, 2);
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_is_respected() {
    let b = CircuitBreaker::new(
        config()
            .count_window(100)
            .minimum_calls(20)
            .build()
            .unwrap(),
    );
    for _ in 0..19 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "19 of 19 failed, below the minimum"
    );
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_concurrent_probes_then_closes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (layer, handle) = CircuitBreakerLayer::new(
        config()
            .count_window(2)
            .minimum_calls(2)
            .half_open_max_calls(3)
            .build()
            .unwrap(),
    );
    let inner = {
        let (calls, gate) = (calls.clone(), gate.clone());
        service_fn(move |req: Request<()>| {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if req.uri().path() == "/500" {
                    return Ok::<_, Infallible>(response(500));
                }
                gate.acquire().await.unwrap().forget();
                Ok(response(200))
            }
        })
    };
    let svc = layer.layer(inner);
    fail(&mut svc.clone(), 2).await;
    assert_eq!(handle.state(), Some(State::Open));
    advance(Duration::from_secs(10)).await;

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(get("/200")).await.unwrap().status() })
        })
        .collect();
    while calls.load(Ordering::SeqCst) < 2 + 3 {
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(100);
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().as_u16());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2 + 3,
        "exactly 3 probes reached the service"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 97);
    assert_eq!(handle.state(), Some(State::Closed));
    assert_eq!(
        handle
            .stats()
            .breaker
            .unwrap()
            .last_transition
            .unwrap()
            .reason,
        "half-open probes succeeded"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens_for_another_wait() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (layer, handle) = CircuitBreakerLayer::new(
        config()
            .count_window(2)
            .minimum_calls(2)
            .half_open_max_calls(1)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(status_service(calls.clone()));
    fail(&mut svc, 2).await;
    advance(Duration::from_secs(10)).await;
    assert_eq!(
        handle.state(),
        Some(State::HalfOpen),
        "automatic after wait_in_open"
    );
    assert_eq!(
        status_of(&mut svc, "/500").await,
        500,
        "the probe reaches the service"
    );
    assert_eq!(handle.state(), Some(State::Open));
    assert_eq!(status_of(&mut svc, "/200").await, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    advance(Duration::from_secs(10)).await;
    assert_eq!(status_of(&mut svc, "/200").await, 200);
    assert_eq!(handle.state(), Some(State::Closed));
    // closed → open → half-open → open → half-open → closed
    assert_eq!(handle.stats().transitions, 5);
}

#[tokio::test(start_paused = true)]
async fn stale_result_from_before_a_transition_is_ignored() {
    let b = CircuitBreaker::new(
        config()
            .count_window(2)
            .minimum_calls(2)
            .half_open_max_calls(1)
            .build()
            .unwrap(),
    );
    let slow = b.try_acquire().unwrap(); // admitted while closed
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    advance(Duration::from_secs(10)).await;
    let probe = b.try_acquire().unwrap();
    slow.failure(); // finishes during half-open: must not count as a probe
    assert_eq!(b.state(), State::HalfOpen);
    probe.success();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.handle().stats().stale, 1);
}

#[tokio::test(start_paused = true)]
async fn dropped_response_future_counts_as_cancelled() {
    let (layer, handle) =
        CircuitBreakerLayer::new(config().count_window(2).minimum_calls(1).build().unwrap());
    let mut svc = layer.layer(service_fn(|_: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Infallible>(response(500))
    }));
    for _ in 0..5 {
        let fut = svc.ready().await.unwrap().call(get("/"));
        // The client gives up.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), fut)
                .await
                .is_err()
        );
    }
    assert_eq!(handle.state(), Some(State::Closed));
    assert_eq!(handle.window().unwrap().calls, 0);
    assert_eq!(handle.stats().calls.cancelled, 5);
}

#[tokio::test(start_paused = true)]
async fn call_timeout_answers_504_and_counts_a_failure() {
    let (layer, handle) = CircuitBreakerLayer::new(
        config()
            .count_window(1)
            .minimum_calls(1)
            .call_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(service_fn(|_: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Infallible>(response(200))
    }));
    let res = svc.ready().await.unwrap().call(get("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(handle.state(), Some(State::Open));
    assert_eq!(handle.stats().timeouts, 1);
    assert_eq!(handle.stats().calls.failure, 1);
}

#[tokio::test(start_paused = true)]
async fn outbound_mode_returns_typed_errors() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (layer, _handle) = CircuitBreakerLayer::new(
        config()
            .count_window(2)
            .minimum_calls(2)
            .failure_rate_threshold(100.0)
            .build()
            .unwrap(),
    );
    let layer = layer.outbound().classifier(ErrorClassifier);
    let mut svc = layer.layer(service_fn({
        let calls = calls.clone();
        move |fail: bool| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { if fail { Err("refused") } else { Ok(7) } }
        }
    }));
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), 7);
    for _ in 0..2 {
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert!(matches!(err, CallError::Inner("refused")));
    }
    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    let CallError::Open(open) = err else {
        panic!("expected open, got {err:?}")
    };
    assert_eq!(open.retry_after(), Duration::from_secs(10));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Boxes cleanly for tower stacks that use BoxError.
    let boxed: tower::BoxError = CallError::<std::io::Error>::Open(open).into();
    assert!(boxed.to_string().contains("is open"), "{boxed}");
}

#[tokio::test(start_paused = true)]
async fn runtime_change_takes_effect_without_resetting_the_window() {
    let (layer, handle) = CircuitBreakerLayer::new(
        config()
            .count_window(10)
            .minimum_calls(10)
            .failure_rate_threshold(60.0)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(status_service(Arc::default()));
    for _ in 0..6 {
        status_of(&mut svc, "/200").await;
    }
    fail(&mut svc, 4).await;
    let version = handle.version();
    let change = handle
        .apply(&json!({ "failure_rate_threshold": 45.0 }), false)
        .unwrap();
    assert_eq!(change.before["failure_rate_threshold"], 60.0);
    assert_eq!(change.after["failure_rate_threshold"], 45.0);
    assert_eq!(handle.version(), version + 1);
    let w = handle.window().unwrap();
    assert_eq!((w.calls, w.failures), (10, 4), "window kept");
    fail(&mut svc, 1).await; // 5 of 10 = 50 %: opens at 45 %, would not at 60 %
    assert_eq!(handle.state(), Some(State::Open));

    // Changing the window size starts a new window.
    handle.reset();
    fail(&mut svc, 1).await;
    assert_eq!(handle.window().unwrap().calls, 1);
    handle.apply(&json!({ "window_size": 20 }), false).unwrap();
    assert_eq!(handle.window().unwrap().calls, 0);
    assert_eq!(handle.settings().window_size, 20);
}

#[tokio::test(start_paused = true)]
async fn invalid_change_is_rejected_and_changes_nothing() {
    let b = CircuitBreaker::new(config().count_window(10).minimum_calls(5).build().unwrap());
    let handle = b.handle();
    b.try_acquire().unwrap().failure();
    let before = DynComponent::settings(&handle);
    let version = handle.version();
    let errors = handle
        .apply(
            &json!({ "failure_rate_threshold": 0, "minimum_calls": 11, "wait_in_open_ms": 5000 }),
            false,
        )
        .unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["minimum_calls", "failure_rate_threshold"]);
    assert!(
        errors[1].reason.contains("(0, 100]"),
        "{}",
        errors[1].reason
    );
    assert!(handle.apply(&json!({ "bogus": 1 }), false).is_err());
    assert!(
        handle
            .apply(&json!({ "window_kind": "hourly" }), false)
            .is_err()
    );
    assert_eq!(
        DynComponent::settings(&handle),
        before,
        "nothing applied, not even the valid field"
    );
    assert_eq!(handle.version(), version);
    assert_eq!(b.window().calls, 1);

    let dry = handle
        .apply(&json!({ "wait_in_open_ms": 5000 }), true)
        .unwrap();
    assert_eq!(dry.after["wait_in_open_ms"], 5000);
    assert_eq!(
        DynComponent::settings(&handle),
        before,
        "a dry run changes nothing"
    );
    assert_eq!(handle.version(), version);
}

#[tokio::test(start_paused = true)]
async fn handle_actions_drive_operator_states() {
    let (layer, handle) = CircuitBreakerLayer::new(config().build().unwrap());
    let mut svc = layer.layer(status_service(Arc::default()));
    assert_eq!(
        handle.actions(),
        ["force_open", "force_closed", "disable", "reset"]
    );
    assert_eq!(
        handle.action("force_open", &json!({})).unwrap()["state"],
        "forced_open"
    );
    assert_eq!(status_of(&mut svc, "/200").await, 503);
    assert_eq!(
        handle.action("force_closed", &json!({})).unwrap()["state"],
        "forced_closed"
    );
    assert_eq!(status_of(&mut svc, "/200").await, 200);
    assert_eq!(
        handle.action("reset", &json!(null)).unwrap()["state"],
        "closed"
    );
    assert!(handle.action("explode", &json!({})).is_err());
    assert!(
        handle.action("reset", &json!({ "key": "x" })).is_err(),
        "not keyed"
    );
    let stats = handle.stats();
    assert_eq!(stats.state(), Some(State::Closed));
    assert_eq!(stats.calls.success, 1);
    assert_eq!(stats.rejected, 1);
    assert_eq!(stats.transitions, 3);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_isolated_and_bounded() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (layer, handle) = CircuitBreakerLayer::keyed(
        config()
            .count_window(2)
            .minimum_calls(2)
            .max_keys(64)
            .build()
            .unwrap(),
        |req: &Request<()>| req.uri().path().split('/').nth(1).unwrap_or("").to_owned(),
    );
    let mut svc = layer.layer(status_service(calls.clone()));
    status_of(&mut svc, "/a/500").await;
    status_of(&mut svc, "/a/500").await;
    assert_eq!(status_of(&mut svc, "/a/200").await, 503, "key a is open");
    assert_eq!(status_of(&mut svc, "/b/200").await, 200, "key b is not");
    let stats = handle.stats();
    assert!(stats.keyed);
    let keyed = stats.keys.as_ref().unwrap();
    assert_eq!(keyed.states.open, 1);
    assert_eq!(keyed.breakers[0].key, "a", "open keys listed first");

    for i in 0..1000 {
        status_of(&mut svc, &format!("/k{i}/200")).await;
    }
    let stats = handle.stats();
    let keyed = stats.keys.as_ref().unwrap();
    assert_eq!(keyed.keys, 64);
    assert_eq!(keyed.evictions, 1002 - 64);
    assert_eq!(
        status_of(&mut svc, "/a/200").await,
        503,
        "open keys are evicted last"
    );

    // Per-key and all-keys actions.
    assert_eq!(
        handle.action("reset", &json!({ "key": "a" })).unwrap()["state"],
        "closed"
    );
    assert_eq!(status_of(&mut svc, "/a/200").await, 200);
    handle.action("force_open", &json!({})).unwrap();
    assert_eq!(status_of(&mut svc, "/a/200").await, 503);
    assert_eq!(
        status_of(&mut svc, "/brand-new/200").await,
        503,
        "new keys start forced open"
    );
    handle.action("reset", &json!({})).unwrap();
    assert_eq!(status_of(&mut svc, "/brand-new/200").await, 200);
}

#[tokio::test(start_paused = true)]
async fn keyed_settings_change_applies_to_every_key() {
    let keyed = KeyedCircuitBreaker::<String>::new(
        config()
            .count_window(4)
            .minimum_calls(4)
            .failure_rate_threshold(100.0)
            .build()
            .unwrap(),
    );
    let handle = keyed.handle();
    for key in ["x", "y"] {
        for _ in 0..3 {
            keyed.try_acquire(key).unwrap().failure();
        }
    }
    handle.apply(&json!({ "minimum_calls": 3 }), false).unwrap();
    keyed.try_acquire("x").unwrap().failure();
    assert_eq!(keyed.state("x"), Some(State::Open));
    keyed.try_acquire("y").unwrap().success();
    assert_eq!(
        keyed.state("y"),
        Some(State::Closed),
        "3 of 4 = 75 % < 100 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_keep_counts_consistent() {
    let b = CircuitBreaker::new(
        config()
            .count_window(100_000)
            .minimum_calls(100_000)
            .failure_rate_threshold(100.0)
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..5_000u32 {
                    let permit = b.try_acquire().unwrap();
                    match (i + t) % 4 {
                        0 => permit.failure(),
                        1 => drop(permit),
                        2 => permit.record(Outcome::Ignored),
                        _ => permit.success(),
                    }
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let w = b.window();
    assert_eq!((w.calls, w.failures), (20_000, 10_000));
    let stats = b.handle().stats();
    assert_eq!(stats.calls.failure, 10_000);
    assert_eq!(stats.calls.success, 10_000);
    assert_eq!(stats.calls.cancelled, 10_000);
    assert_eq!(stats.calls.ignored, 10_000);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_count_window_wraparound_keeps_totals_exact() {
    // A small ring written from two threads wraps constantly; after quiescence the totals
    // must equal the ring's contents.
    let b = CircuitBreaker::new(
        config()
            .count_window(8)
            .minimum_calls(8)
            .failure_rate_threshold(100.0)
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..4u32)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..20_000u32 {
                    let permit = b.try_acquire().unwrap();
                    if (i + t) % 3 == 0 {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let w = b.window();
    assert_eq!(w.calls, 8);
    assert!(w.failures <= 8);
    // Overwrite every slot with successes: the totals must come back to exactly zero failures.
    for _ in 0..8 {
        b.try_acquire().unwrap().success();
    }
    assert_eq!((b.window().calls, b.window().failures), (8, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_half_open_admits_exactly_n() {
    for _ in 0..50 {
        let b = CircuitBreaker::new(
            config()
                .count_window(1)
                .minimum_calls(1)
                .half_open_max_calls(5)
                .build()
                .unwrap(),
        );
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), State::Open);
        // Leave the open state without waiting: shorten the wait at runtime.
        b.handle()
            .apply(&json!({ "wait_in_open_ms": 1 }), false)
            .unwrap();
        b.reset();
        b.try_acquire().unwrap().failure();
        while b.state() == State::Open {
            tokio::task::yield_now().await;
        }
        let admitted = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (b, admitted, barrier) = (b.clone(), admitted.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut held = Vec::new();
                    for _ in 0..10 {
                        if let Ok(p) = b.try_acquire() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            held.push(p);
                        }
                    }
                    held
                })
            })
            .collect();
        let mut permits = Vec::new();
        for t in tasks {
            permits.extend(t.await.unwrap());
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 5);
        for p in permits {
            p.success();
        }
        assert_eq!(b.state(), State::Closed);
    }
}

/// A minimal in-memory metrics recorder.
#[derive(Default)]
struct TestRecorder {
    values:
        parking_lot::Mutex<std::collections::BTreeMap<String, Arc<std::sync::atomic::AtomicU64>>>,
}

impl TestRecorder {
    fn handle(&self, key: &metrics::Key) -> Arc<std::sync::atomic::AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.values.lock().entry(name).or_default().clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.values
            .lock()
            .get(name)
            .map_or(0, |v| v.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str) -> f64 {
        self.values
            .lock()
            .get(name)
            .map_or(0.0, |v| f64::from_bits(v.load(Ordering::SeqCst)))
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn transitions_and_calls_emit_metrics() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, || {
        let b = CircuitBreaker::new(
            CircuitBreakerConfig::consecutive_failures(2, Duration::from_secs(60)).with_name("m"),
        );
        assert_eq!(
            recorder.gauge("palisade_circuit_breaker_state{breaker=m,state=closed}"),
            1.0
        );
        b.try_acquire().unwrap().success();
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        assert!(b.try_acquire().is_err());
        drop(b.try_acquire());
        assert_eq!(
            recorder.counter("palisade_circuit_breaker_calls_total{breaker=m,outcome=success}"),
            1
        );
        assert_eq!(
            recorder.counter("palisade_circuit_breaker_calls_total{breaker=m,outcome=failure}"),
            2
        );
        assert_eq!(
            recorder.counter("palisade_circuit_breaker_rejected_total{breaker=m}"),
            2
        );
        assert_eq!(
            recorder.counter(
                "palisade_circuit_breaker_transitions_total{breaker=m,from=closed,to=open}"
            ),
            1
        );
        assert_eq!(
            recorder.gauge("palisade_circuit_breaker_state{breaker=m,state=closed}"),
            0.0
        );
        assert_eq!(
            recorder.gauge("palisade_circuit_breaker_state{breaker=m,state=open}"),
            1.0
        );
        drop(b);
        assert_eq!(
            recorder.gauge("palisade_circuit_breaker_state{breaker=m,state=open}"),
            0.0
        );
    });
}

#[tokio::test(start_paused = true)]
async fn works_as_an_axum_layer() {
    use axum::routing::get as route;
    let (layer, handle) = CircuitBreakerLayer::new(
        CircuitBreakerConfig::consecutive_failures(2, Duration::from_secs(30)).with_name("axum"),
    );
    let app = axum::Router::new()
        .route("/ok", route(|| async { "ok" }))
        .route(
            "/boom",
            route(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .layer(layer);
    let send = |path: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap()
        }
    };
    assert_eq!(send("/ok").await.status(), 200);
    assert_eq!(send("/boom").await.status(), 500);
    assert_eq!(send("/boom").await.status(), 500);
    assert_eq!(
        handle.state(),
        Some(State::Open),
        "axum clones share one breaker"
    );
    let res = send("/ok").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "30");
}
