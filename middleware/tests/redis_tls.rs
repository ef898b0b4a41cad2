//! `rediss://` against a real TLS-only `redis-server` (`--port 0 --tls-port`, certificates from
//! a test CA): the rate-limit Redis store, the L2 cache and the invalidation backplane, with a
//! private CA, with mutual TLS, and with a wrong CA (degraded, never an error for the caller,
//! never a hang).
#![cfg(all(feature = "rate-limit", feature = "cache", feature = "redis-tls"))]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, Response};
use palisade::cache::{CacheConfig, EvictionPolicy, RedisConfig, TwoLevelCache};
use palisade::circuit_breaker::CircuitBreakerConfig;
use palisade::rate_limit::{
    FailureMode, KeySource, PeerAddr, PolicyConfig, RateLimit, RateLimitConfig, RateLimitHandle,
    RateLimitLayer, RedisOptions, RedisStore,
};
use palisade::redis::RedisTls;
use palisade_tests::redis::{ClientAuth, RedisServer};
use tower::{Layer, ServiceExt};

type Inner = tower::util::ServiceFn<
    fn(Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>>,
>;
type Svc = RateLimit<Inner>;

fn ok(_: Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    std::future::ready(Ok(Response::new(Body::empty())))
}

/// TLS options trusting the server's CA, with the client certificate when `mutual`.
fn trusted(server: &RedisServer, mutual: bool) -> RedisTls {
    let files = server.tls().expect("a TLS server");
    let tls = RedisTls::default().ca_file(&files.ca);
    if mutual {
        tls.client_cert(&files.client_cert, &files.client_key)
    } else {
        tls
    }
}

fn store(server: &RedisServer, tls: RedisTls) -> RedisStore {
    RedisStore::new(
        RedisOptions::new(server.url())
            .tls(tls)
            .timeout(Duration::from_secs(1))
            .breaker(CircuitBreakerConfig::consecutive_failures(
                3,
                Duration::from_millis(500),
            )),
    )
    .expect("valid options")
}

fn limiter(store: RedisStore, name: &str, burst: u32) -> (Svc, RateLimitHandle) {
    let policy = PolicyConfig::builder(name)
        .rate(1)
        .per(Duration::from_secs(3600))
        .burst(burst)
        .key(KeySource::Global)
        .redis(store, FailureMode::LocalFallback);
    let config = RateLimitConfig::builder().policy(policy).build().unwrap();
    let (layer, handle) = RateLimitLayer::new(config);
    let f: fn(Request<Body>) -> _ = ok;
    (layer.layer(tower::service_fn(f)), handle)
}

async fn status(svc: &Svc) -> u16 {
    let mut r = Request::new(Body::empty());
    r.extensions_mut()
        .insert(PeerAddr("192.0.2.1:1234".parse().unwrap()));
    svc.clone().oneshot(r).await.unwrap().status().as_u16()
}

/// Sends `n` requests through `svc` one after another; how many were admitted.
async fn admitted(svc: &Svc, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        match status(svc).await {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    ok
}

fn cache(server: &RedisServer, tls: RedisTls, name: &str) -> TwoLevelCache<str, String> {
    let mut redis = RedisConfig::new(server.url());
    redis.tls = tls;
    redis.timeout_ms = 500;
    redis.connect_timeout_ms = 1_000;
    TwoLevelCache::new(CacheConfig {
        name: name.into(),
        namespace: "tls".into(),
        l1_eviction: EvictionPolicy::Lru,
        redis: Some(redis),
        ..CacheConfig::default()
    })
    .expect("valid cache config")
}

fn value(v: &'static str) -> impl FnOnce() -> std::future::Ready<Result<String, std::io::Error>> {
    move || std::future::ready(Ok(v.to_owned()))
}

fn failing() -> impl FnOnce() -> std::future::Ready<Result<String, std::io::Error>> {
    || std::future::ready(Err(std::io::Error::other("origin down")))
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a key matching `pattern` exists, asked over TLS (with the client certificate)
/// through the same client builder Palisade uses.
async fn raw_exists(server: &RedisServer, pattern: &str) -> bool {
    let client = palisade::redis::client(&server.url(), &trusted(server, true)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    !keys.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_store_shares_one_limit_over_tls() {
    let Some(server) = RedisServer::start_tls(ClientAuth::No) else {
        return;
    };
    // The plain scheme is refused by a TLS-only server: the URL really is rediss://.
    assert!(server.url().starts_with("rediss://"));
    // Two limiters with their own TLS connections, as two workers or two servers have.
    let (a, ha) = limiter(store(&server, trusted(&server, false)), "tls-shared", 20);
    let (b, hb) = limiter(store(&server, trusted(&server, false)), "tls-shared", 20);
    let (na, nb) = tokio::join!(admitted(&a, 30), admitted(&b, 30));
    eprintln!("over rediss://: instance a admitted {na}, b {nb}");
    assert!(na > 0 && nb > 0, "both instances were admitted some");
    assert_eq!(na + nb, 20, "one shared burst of 20 over TLS");
    for h in [ha, hb] {
        let stats = h.policy("tls-shared").unwrap().stats().store_stats;
        assert_eq!((stats.errors, stats.fallbacks), (0, 0), "{stats:?}");
    }
    assert!(raw_exists(&server, "palisade:rl:tls-shared:*").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let Some(server) = RedisServer::start_tls(ClientAuth::Required) else {
        return;
    };
    let (with_cert, h) = limiter(store(&server, trusted(&server, true)), "mtls", 5);
    assert_eq!(admitted(&with_cert, 8).await, 5);
    let stats = h.policy("mtls").unwrap().stats().store_stats;
    assert_eq!((stats.errors, stats.fallbacks), (0, 0), "{stats:?}");

    // Without a certificate the server refuses the handshake: the failure mode decides (the
    // local fallback admits its own burst), nothing fails.
    let (without, h) = limiter(store(&server, trusted(&server, false)), "mtls-none", 5);
    let started = Instant::now();
    assert_eq!(admitted(&without, 8).await, 5);
    assert!(started.elapsed() < Duration::from_secs(10));
    let stats = h.policy("mtls-none").unwrap().stats().store_stats;
    assert!(stats.errors >= 1 && stats.fallbacks == 8, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l2_cache_and_the_backplane_work_over_tls() {
    let Some(server) = RedisServer::start_tls(ClientAuth::Required) else {
        return;
    };
    let a = cache(&server, trusted(&server, true), "tls-a");
    let b = cache(&server, trusted(&server, true), "tls-b");
    for c in [&a, &b] {
        eventually(
            Duration::from_secs(5),
            "backplane connected over TLS",
            || async { c.stats().l2.unwrap().backplane.connected },
        )
        .await;
    }
    // A loads and writes L2; B finds it there (its own loader would fail).
    assert_eq!(a.get_or_load("k", value("v1")).await.unwrap(), "v1");
    assert!(raw_exists(&server, "palisade:v1:tls:k").await);
    assert_eq!(b.get_or_load("k", failing()).await.unwrap(), "v1");
    let l2 = b.stats().l2.unwrap();
    assert_eq!((l2.hits, l2.errors, l2.breaker.as_str()), (1, 0, "closed"));

    // A write on A reaches B's L1 through the backplane.
    a.set("k", "v2".to_owned()).await;
    eventually(Duration::from_secs(3), "B sees v2", || async {
        b.get("k").await.as_deref() == Some("v2")
    })
    .await;
    a.invalidate("k").await;
    eventually(Duration::from_secs(3), "B lost k", || async {
        b.get("k").await.is_none()
    })
    .await;
    assert!(b.stats().l2.unwrap().backplane.received >= 2);
    assert!(!raw_exists(&server, "palisade:v1:tls:k").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_degrades_without_errors_or_hangs() {
    let Some(server) = RedisServer::start_tls(ClientAuth::No) else {
        return;
    };
    let wrong = RedisTls::default().ca_file(&server.tls().unwrap().wrong_ca);
    let started = Instant::now();

    // The limiter: every decision by the failure mode, none an error.
    let (svc, h) = limiter(store(&server, wrong.clone()), "wrong-ca", 5);
    assert_eq!(admitted(&svc, 10).await, 5);
    let stats = h.policy("wrong-ca").unwrap().stats().store_stats;
    assert!(stats.errors >= 1 && stats.fallbacks == 10, "{stats:?}");

    // The cache: answers from the loader, then L1; L2 errors are counted, the backplane stays
    // down.
    let c = cache(&server, wrong, "wrong-ca");
    assert_eq!(c.get_or_load("k", value("v")).await.unwrap(), "v");
    assert_eq!(c.get("k").await.as_deref(), Some("v"));
    let l2 = c.stats().l2.unwrap();
    assert!(l2.errors + l2.timeouts >= 1, "{l2:?}");
    assert!(!l2.backplane.connected);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "degraded in {:?}",
        started.elapsed()
    );
    eprintln!("wrong CA: degraded answers in {:?}", started.elapsed());
}
