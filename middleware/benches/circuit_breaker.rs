//! Circuit breaker hot paths: the closed-state admission + record, open-state refusal, through
//! the core API and through the tower layer, compared in the same run with `failsafe` (core)
//! and `tower-resilience-circuitbreaker` (tower layer).
//!
//! `cargo bench -p palisade --no-default-features --features circuit-breaker --bench circuit_breaker -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use palisade::circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, ErrorClassifier, Outcome,
};
use tower::{Layer, Service, ServiceExt, service_fn};

type Body = Full<Bytes>;

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("bench")
        .count_window(100)
        .minimum_calls(100)
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn time_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("bench_time")
        .time_window(Duration::from_secs(60))
        .minimum_calls(100)
        .slow_call(Duration::from_secs(1), 50.0)
        .wait_in_open(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn failsafe_breaker() -> impl failsafe::CircuitBreaker + Sync {
    use failsafe::{backoff, failure_policy};
    failsafe::Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            5,
            backoff::constant(Duration::from_secs(3600)),
        ))
        .build()
}

fn tower_resilience_layer() -> tower_resilience_circuitbreaker::CircuitBreakerLayer {
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(100)
        .wait_duration_in_open(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// A no-op inner service.
fn inner() -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Body::new(Bytes::new()))))
    })
}

/// A failing inner service (500), to trip breakers that classify responses.
fn failing_inner()
-> impl Service<Request<()>, Response = Response<Body>, Error = &'static str, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<()>| std::future::ready(Err::<Response<Body>, _>("down")))
}

/// A no-op service over `u64`.
fn u64_inner()
-> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send + 'static {
    service_fn(|x: u64| std::future::ready(Ok::<_, Infallible>(x)))
}

/// One `u64` request through `svc`.
fn call_u64<S: Service<u64>>(svc: &mut S) -> Option<Result<S::Response, S::Error>> {
    match svc.ready().now_or_never()? {
        Ok(svc) => svc.call(black_box(7)).now_or_never(),
        Err(e) => Some(Err(e)),
    }
}

/// One request through `svc`; every service here completes without suspending.
fn call_once<S: Service<Request<()>>>(svc: &mut S) -> Option<Result<S::Response, S::Error>> {
    match svc.ready().now_or_never()? {
        Ok(svc) => svc.call(Request::new(())).now_or_never(),
        Err(e) => Some(Err(e)),
    }
}

fn closed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("circuit_breaker/closed");

    let b = CircuitBreaker::new(config());
    g.bench_function("palisade_core_count_window", |bch| {
        bch.iter(|| black_box(b.try_acquire()).unwrap().record(Outcome::Success))
    });
    let bt = CircuitBreaker::new(time_config());
    g.bench_function("palisade_core_time_window_slow_calls", |bch| {
        bch.iter(|| {
            black_box(bt.try_acquire())
                .unwrap()
                .record(Outcome::Success)
        })
    });
    let fs = failsafe_breaker();
    g.bench_function("failsafe_core", |bch| {
        bch.iter(|| black_box(fs.call(|| Ok::<(), ()>(()))).unwrap())
    });

    // For reference: the clock reads a time window / slow-call tracking adds (with tokio's
    // `test-util`, which benches enable through dev-dependencies, `tokio::time::Instant::now`
    // also consults the runtime's pausable clock).
    g.bench_function("reference_tokio_instant_now", |bch| {
        bch.iter(|| black_box(tokio::time::Instant::now()))
    });
    g.bench_function("reference_std_instant_now", |bch| {
        bch.iter(|| black_box(Instant::now()))
    });

    let mut bare = inner();
    g.bench_function("layer_baseline_no_breaker", |bch| {
        bch.iter(|| black_box(call_once(&mut bare)))
    });
    let mut ours = CircuitBreakerLayer::new(config()).0.layer(inner());
    g.bench_function("palisade_layer", |bch| {
        bch.iter(|| black_box(call_once(&mut ours)))
    });
    let mut theirs = tower_resilience_layer().layer(inner());
    g.bench_function("tower_resilience_layer", |bch| {
        bch.iter(|| black_box(call_once(&mut theirs)))
    });

    // The same with a trivial request/response type (u64), so moves of large `http` structs
    // do not hide the layer's own cost.
    let mut bare_u64 = u64_inner();
    g.bench_function("layer_u64_baseline_no_breaker", |bch| {
        bch.iter(|| black_box(call_u64(&mut bare_u64)))
    });
    let mut ours_u64 = CircuitBreakerLayer::new(config())
        .0
        .outbound()
        .classifier(ErrorClassifier)
        .layer(u64_inner());
    g.bench_function("palisade_layer_u64_outbound", |bch| {
        bch.iter(|| black_box(call_u64(&mut ours_u64)))
    });
    let mut theirs_u64 = tower_resilience_layer().layer(u64_inner());
    g.bench_function("tower_resilience_layer_u64", |bch| {
        bch.iter(|| black_box(call_u64(&mut theirs_u64)))
    });

    // Two threads hammering one breaker: per-call time with contention.
    g.bench_function("palisade_core_2_threads", |bch| {
        bch.iter_custom(|iters| two_threads(iters, || b.try_acquire().unwrap().success()))
    });
    g.bench_function("failsafe_core_2_threads", |bch| {
        bch.iter_custom(|iters| {
            two_threads(iters, || {
                let _ = black_box(fs.call(|| Ok::<(), ()>(())));
            })
        })
    });
    g.finish();
}

/// Runs `iters` calls split over two threads; returns the wall time divided so that criterion
/// reports time per call per thread pair (i.e. throughput-equivalent time per call).
fn two_threads(iters: u64, f: impl Fn() + Sync) -> Duration {
    let half = iters.div_ceil(2);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..half {
                f();
            }
        });
        for _ in 0..half {
            f();
        }
    });
    start.elapsed()
}

fn open(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("circuit_breaker/open");

    let b = CircuitBreaker::new(config());
    for _ in 0..100 {
        b.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert!(b.try_acquire().is_err());
    g.bench_function("palisade_core_rejected", |bch| {
        bch.iter(|| black_box(b.try_acquire()).unwrap_err())
    });
    let fs = failsafe_breaker();
    for _ in 0..5 {
        let _ = fs.call(|| Err::<(), ()>(()));
    }
    assert!(!fs.is_call_permitted());
    g.bench_function("failsafe_core_rejected", |bch| {
        bch.iter(|| black_box(fs.call(|| Ok::<(), ()>(()))).unwrap_err())
    });

    // Through the layer: palisade answers 503 problem+json (inbound) or a typed error
    // (outbound); tower-resilience returns an error.
    let breaker = CircuitBreaker::new(config());
    let mut ours = CircuitBreakerLayer::from_breaker(breaker.clone()).layer(inner());
    for _ in 0..100 {
        breaker.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_eq!(call_once(&mut ours).unwrap().unwrap().status(), 503);
    g.bench_function("palisade_layer_rejected_503_response", |bch| {
        bch.iter(|| black_box(call_once(&mut ours)))
    });
    let mut ours_outbound = CircuitBreakerLayer::from_breaker(breaker)
        .outbound()
        .layer(inner());
    assert!(call_once(&mut ours_outbound).unwrap().is_err());
    g.bench_function("palisade_layer_rejected_typed_error", |bch| {
        bch.iter(|| black_box(call_once(&mut ours_outbound)))
    });
    let mut theirs = tower_resilience_layer().layer(failing_inner());
    for _ in 0..100 {
        let _ = call_once(&mut theirs);
    }
    assert!(matches!(
        call_once(&mut theirs),
        Some(Err(
            tower_resilience_circuitbreaker::CircuitBreakerError::OpenCircuit
        ))
    ));
    g.bench_function("tower_resilience_layer_rejected", |bch| {
        bch.iter(|| black_box(call_once(&mut theirs)))
    });
    g.finish();
}

criterion_group!(benches, closed, open);
criterion_main!(benches);
