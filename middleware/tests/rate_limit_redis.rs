//! The Redis store against a real `redis-server` (skipped loudly when the binary is absent,
//! required when `PALISADE_REQUIRE_REDIS=1`).
#![cfg(all(feature = "rate-limit", feature = "redis"))]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, Response};
use palisade::circuit_breaker::{CircuitBreakerConfig, State};
use palisade::control::DynComponent;
use palisade::rate_limit::{
    FailureMode, KeySource, PeerAddr, PolicyConfig, RateLimit, RateLimitConfig, RateLimitHandle,
    RateLimitLayer, RedisOptions, RedisStore,
};
use palisade_tests::redis::RedisServer;
use tower::{Layer, ServiceExt};

type Inner = tower::util::ServiceFn<
    fn(Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>>,
>;
type Svc = RateLimit<Inner>;

fn ok(_: Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    std::future::ready(Ok(Response::new(Body::empty())))
}

fn redis_store(url: &str, timeout: Duration) -> RedisStore {
    RedisStore::new(RedisOptions::new(url).timeout(timeout).breaker(
        CircuitBreakerConfig::consecutive_failures(3, Duration::from_millis(500)),
    ))
    .unwrap()
}

fn limiter(
    store: RedisStore,
    policy: palisade::rate_limit::PolicyBuilder,
    mode: FailureMode,
) -> (Svc, RateLimitHandle) {
    let config = RateLimitConfig::builder()
        .policy(policy.redis(store, mode))
        .build()
        .unwrap();
    let (layer, handle) = RateLimitLayer::new(config);
    let f: fn(Request<Body>) -> _ = ok;
    (layer.layer(tower::service_fn(f)), handle)
}

fn req(ip: &str) -> Request<Body> {
    let mut r = Request::new(Body::empty());
    r.extensions_mut()
        .insert(PeerAddr(format!("{ip}:1234").parse().unwrap()));
    r
}

async fn status(svc: &Svc) -> u16 {
    svc.clone()
        .oneshot(req("192.0.2.1"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends `n` requests with `concurrency` in flight; returns how many were allowed.
async fn hammer(svc: Svc, n: usize, concurrency: usize) -> usize {
    let per_task = n / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..per_task {
                    match status(&svc).await {
                        200 => ok += 1,
                        429 => {}
                        other => panic!("unexpected status {other}"),
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_burst() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let policy = || {
        PolicyConfig::builder("shared-burst")
            .rate(1)
            .per(Duration::from_secs(3600))
            .burst(1000)
            .key(KeySource::Global)
    };
    // Two limiters with their own connections, as two server processes would have.
    let (a, ha) = limiter(
        redis_store(&server.url(), Duration::from_secs(1)),
        policy(),
        FailureMode::LocalFallback,
    );
    let (b, hb) = limiter(
        redis_store(&server.url(), Duration::from_secs(1)),
        policy(),
        FailureMode::LocalFallback,
    );
    let (na, nb) = tokio::join!(hammer(a, 1500, 16), hammer(b, 1500, 16));
    let total = na + nb;
    eprintln!("instance a admitted {na}, b {nb}");
    assert!(na > 0 && nb > 0);
    assert!(
        total.abs_diff(1000) <= 20,
        "admitted {total}, limit 1000 ± 2%"
    );
    for h in [ha, hb] {
        let stats = h.policy("shared-burst").unwrap().stats();
        assert_eq!(stats.store_stats.fallbacks, 0, "{stats:?}");
    }
    assert_eq!(total, 1000, "with no fallback the shared limit is exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_rate() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let policy = || {
        PolicyConfig::builder("shared-rate")
            .rate(200)
            .burst(20)
            .key(KeySource::Global)
    };
    let (a, _) = limiter(
        redis_store(&server.url(), Duration::from_secs(1)),
        policy(),
        FailureMode::FailClosed,
    );
    let (b, _) = limiter(
        redis_store(&server.url(), Duration::from_secs(1)),
        policy(),
        FailureMode::FailClosed,
    );
    let run = |svc: Svc| async move {
        let deadline = Instant::now() + Duration::from_secs(2);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let mut ok = 0;
                    while Instant::now() < deadline {
                        if status(&svc).await == 200 {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        ok
    };
    // Connect both stores before the clock starts (connections are made on first use); the
    // warm-up requests come out of the same burst, so they are counted.
    let warm = [status(&a).await, status(&b).await]
        .iter()
        .filter(|s| **s == 200)
        .count();
    let start = Instant::now();
    let (na, nb) = tokio::join!(run(a), run(b));
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 20.0 + 200.0 * elapsed;
    let total = (na + nb + warm) as f64;
    eprintln!("admitted {total} (a {na}, b {nb}) in {elapsed:.3} s, expected {expected:.1}");
    assert!(na > 0 && nb > 0);
    assert!(
        (total - expected).abs() <= expected * 0.02,
        "admitted {total}, expected {expected:.1} ± 2%"
    );
}

/// Kills Redis mid-test: the failure mode decides, no 5xx, and Redis is used again after it
/// comes back (the script is reloaded after NOSCRIPT).
async fn outage(mode: FailureMode) {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let name = format!("outage-{}", mode.as_str().replace('_', "-"));
    let store = redis_store(&server.url(), Duration::from_millis(100));
    let (svc, handle) = limiter(
        store.clone(),
        PolicyConfig::builder(name.clone())
            .rate(1)
            .per(Duration::from_secs(3600))
            .burst(5)
            .key(KeySource::Global),
        mode,
    );
    let policy = handle.policy(&name).unwrap();
    for _ in 0..3 {
        assert_eq!(status(&svc).await, 200);
    }
    assert_eq!(policy.stats().store_stats.fallbacks, 0);

    server.kill();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let res = svc.clone().oneshot(req("192.0.2.1")).await.unwrap();
        let s = res.status().as_u16();
        assert!(s < 500, "{mode:?}: a {s} because Redis is down");
        if s == 429 {
            // fail_closed says "try again in a second"; the local fallback gives its own wait.
            let expected = if mode == FailureMode::FailClosed {
                "1"
            } else {
                "3600"
            };
            assert_eq!(res.headers()["retry-after"], expected, "{mode:?}");
        }
        statuses.push(s);
    }
    let allowed = statuses.iter().filter(|&&s| s == 200).count();
    match mode {
        // The local fallback enforces the same quota in this process (its own fresh bucket).
        FailureMode::LocalFallback => assert_eq!(allowed, 5, "{statuses:?}"),
        FailureMode::FailOpen => assert_eq!(allowed, 20),
        FailureMode::FailClosed => assert_eq!(allowed, 0),
    }
    let stats = policy.stats();
    assert_eq!(stats.store_stats.fallbacks, 20, "{stats:?}");
    assert!(stats.store_stats.errors >= 20);
    assert_eq!(
        store.breaker().state(),
        State::Open,
        "the breaker stops calls to a dead Redis"
    );

    server.restart();
    let restarted = Instant::now();
    let recovered = loop {
        let before = policy.stats().store_stats.fallbacks;
        let s = status(&svc).await;
        assert!(s < 500);
        if policy.stats().store_stats.fallbacks == before {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "{mode:?}: Redis not used again 5 s after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("{mode:?}: recovered {recovered:?} after the restart");
    // Redis holds the key again: the script was reloaded into the fresh server.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("palisade:rl:{name}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys, vec![format!("palisade:rl:{name}:*")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_local_fallback() {
    outage(FailureMode::LocalFallback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fail_open() {
    outage(FailureMode::FailOpen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fail_closed() {
    outage(FailureMode::FailClosed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_keep_their_position_across_a_runtime_change() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (svc, handle) = limiter(
        redis_store(&server.url(), Duration::from_secs(1)),
        PolicyConfig::builder("change").rate(1).burst(20),
        FailureMode::FailClosed,
    );
    for _ in 0..10 {
        assert_eq!(status(&svc).await, 200);
    }
    // Ten times the rate: the key still has 10 of 20 used (the script rescales it).
    handle
        .policy("change")
        .unwrap()
        .apply(&serde_json::json!({ "rate": 10 }), false)
        .unwrap();
    let res = svc.clone().oneshot(req("192.0.2.1")).await.unwrap();
    assert_eq!(res.headers()["ratelimit"], "\"change\";r=9;t=1");
    // Another client is fresh.
    let res = svc.clone().oneshot(req("192.0.2.2")).await.unwrap();
    assert_eq!(res.headers()["ratelimit"], "\"change\";r=19;t=1");
}
