//! Rate-limit check cost: Palisade's local keyed store and shared-memory zone against
//! `governor`'s keyed limiter (dashmap), single thread and two contending threads; a full layer
//! call; Redis store throughput with many calls in flight (pipelined on one connection).
//!
//! `cargo bench -p palisade --bench rate_limit -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use palisade::rate_limit::{Gcra, KeyValue, LocalStore, ShmStore, ShmZone, Store};

/// Distinct client IPs cycled through (a warm working set, as on a busy server).
const KEYS: u32 = 10_000;
/// Keys shared by the two contending threads (they collide on the same cells).
const HOT_KEYS: u32 = 16;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// Permissive enough that every check is admitted (the common path).
fn gcra() -> Gcra {
    Gcra::new(10_000_000, Duration::from_secs(1), 1_000_000)
}

fn governor_limiter() -> RateLimiter<
    IpAddr,
    governor::state::keyed::DefaultKeyedStateStore<IpAddr>,
    governor::clock::DefaultClock,
> {
    let quota = Quota::per_second(NonZeroU32::new(10_000_000).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000).unwrap());
    RateLimiter::keyed(quota)
}

/// Runs `f(thread, i)` for `iters` iterations on each of two threads; returns the wall time
/// (so the reported time is the per-check latency while another thread contends).
fn two_threads<F>(iters: u64, f: F) -> Duration
where
    F: Fn(u32, u64) + Sync,
{
    let barrier = std::sync::Barrier::new(2);
    let start = std::sync::OnceLock::new();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (f, barrier, start) = (&f, &barrier, &start);
            s.spawn(move || {
                barrier.wait();
                start.get_or_init(Instant::now);
                for i in 0..iters {
                    f(t, i);
                }
            });
        }
    });
    start.get().map_or(Duration::ZERO, Instant::elapsed)
}

fn local_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed_check_1_thread");
    let g_params = gcra();

    let store = LocalStore::new(100_000);
    let mut i = 0u32;
    g.bench_function("palisade_local", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(store.check(&KeyValue::Ip(ip(i)), &g_params, 1))
        });
    });

    let zone = ShmZone::create_anonymous("bench", 100_000).unwrap();
    let shm: ShmStore = zone.store("bench").unwrap();
    g.bench_function("palisade_shm", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(shm.check(&KeyValue::Ip(ip(i)), &g_params, 1))
        });
    });

    let governor = governor_limiter();
    g.bench_function("governor_keyed", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(governor.check_key(&ip(i)).is_ok())
        });
    });
    g.finish();

    let mut g = c.benchmark_group("keyed_check_2_threads_contended");
    let store = LocalStore::new(100_000);
    g.bench_function("palisade_local", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, i| {
                let key = KeyValue::Ip(ip((i % u64::from(HOT_KEYS)) as u32));
                let _ = black_box(store.check(&key, &g_params, 1));
            })
        });
    });
    let zone = ShmZone::create_anonymous("bench2", 100_000).unwrap();
    let shm = zone.store("bench").unwrap();
    g.bench_function("palisade_shm", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, i| {
                let key = KeyValue::Ip(ip((i % u64::from(HOT_KEYS)) as u32));
                let _ = black_box(shm.check(&key, &g_params, 1));
            })
        });
    });
    let governor = governor_limiter();
    g.bench_function("governor_keyed", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, i| {
                black_box(
                    governor
                        .check_key(&ip((i % u64::from(HOT_KEYS)) as u32))
                        .is_ok(),
                );
            })
        });
    });
    g.finish();

    // Under a flood of new keys the table stays at its size and evicts; governor keeps growing
    // (the comparison is time per check; memory is in the report).
    let mut g = c.benchmark_group("new_key_flood");
    let store = LocalStore::new(100_000);
    let mut n = 0u32;
    g.bench_function("palisade_local", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(store.check(&KeyValue::Ip(ip(n)), &g_params, 1))
        });
    });
    let governor = governor_limiter();
    g.bench_function("governor_keyed", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(governor.check_key(&ip(n)).is_ok())
        });
    });
    g.finish();
    eprintln!(
        "after the flood: palisade keys {} (capacity {}), governor keys {}",
        store.stats().keys,
        store.stats().capacity,
        governor.len()
    );
}

fn layer(c: &mut Criterion) {
    use axum::body::Body;
    use http::{Request, Response};
    use palisade::rate_limit::{
        HeaderMode, PeerAddr, PolicyConfig, RateLimitConfig, RateLimitLayer,
    };
    use tower::{Layer, Service};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("layer_call_allowed");
    for (name, headers) in [
        ("headers_on", HeaderMode::All),
        ("headers_off", HeaderMode::None),
    ] {
        let config = RateLimitConfig::builder()
            .headers(headers)
            .policy(
                PolicyConfig::builder("api")
                    .rate(10_000_000)
                    .burst(1_000_000),
            )
            .build()
            .unwrap();
        let (layer, _) = RateLimitLayer::new(config);
        let mut svc = layer.layer(tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }));
        let mut i = 0u32;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                let mut req = Request::new(Body::empty());
                req.extensions_mut().insert(PeerAddr((ip(i), 1000).into()));
                let fut = svc.call(req);
                black_box(rt.block_on(fut).unwrap())
            });
        });
    }
    g.finish();
}

#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use palisade::rate_limit::{Check, FailureMode, RedisOptions, RedisStore};

    let Some(server) = palisade_tests::redis::RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(async {
        let redis =
            RedisStore::new(RedisOptions::new(server.url()).timeout(Duration::from_secs(1)))
                .unwrap();
        Arc::new(redis.store("bench", FailureMode::FailClosed))
    });
    let g_params = gcra();
    let mut g = c.benchmark_group("redis_check_throughput");
    g.sample_size(10);
    for in_flight in [1usize, 64] {
        g.bench_function(format!("in_flight_{in_flight}"), |b| {
            b.iter_custom(|iters| {
                let store = Arc::clone(&store);
                rt.block_on(async move {
                    let start = Instant::now();
                    futures_util::stream::iter(0..iters)
                        .map(|i| {
                            let check = store.check(
                                &KeyValue::Ip(ip((i % u64::from(KEYS)) as u32)),
                                &g_params,
                                1,
                            );
                            async move {
                                match check {
                                    Check::Ready(d) => d,
                                    Check::Pending(f) => f.await,
                                }
                            }
                        })
                        .buffer_unordered(in_flight)
                        .for_each(|d| {
                            assert!(d.allowed);
                            std::future::ready(())
                        })
                        .await;
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
    let stats = store.stats();
    assert_eq!(stats.fallbacks, 0, "every check reached Redis: {stats:?}");
    drop(server);
}

#[cfg(not(feature = "redis"))]
fn redis(_: &mut Criterion) {}

criterion_group!(benches, local_store, layer, redis);
criterion_main!(benches);
