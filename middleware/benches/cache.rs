//! Cache hot paths: an L1 hit through the HTTP response-cache layer (target ≤ 2 µs), a bare
//! `TwoLevelCache` L1 hit, `/names` served from the cache vs uncached in the same run, and an L2
//! hit over loopback Redis (target p99 ≤ 1 ms; needs `redis-server` and the `redis` feature).
//!
//! `cargo bench -p palisade --no-default-features --features cache,redis --bench cache -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response, header};
use http_body_util::Full;
use palisade::cache::response::{ResponseCacheConfig, ResponseCacheLayer};
use palisade::cache::{CacheConfig, EvictionPolicy, TwoLevelCache};
use tower::{Layer, Service, ServiceExt, service_fn};

/// The reference server's `/names` list.
const NAMES: &[&str] = &[
    "Ada", "Alan", "Barbara", "Dennis", "Donald", "Edsger", "Grace", "John", "Ken", "Leslie",
    "Linus", "Margaret", "Niklaus", "Radia", "Tony",
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What the `/names` handler does: serialize the list, set `Cache-Control`.
async fn names(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = serde_json::to_vec(NAMES).unwrap_or_default();
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

fn request() -> Request<Full<Bytes>> {
    Request::get("http://api.local/names")
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "bench")
        .body(Full::default())
        .unwrap()
}

fn store(name: &str) -> CacheConfig {
    CacheConfig {
        name: name.into(),
        namespace: name.into(),
        l1_eviction: EvictionPolicy::Lru,
        ..CacheConfig::default()
    }
}

/// Runs `iters` calls of `f` inside one `block_on`, timing the loop.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            f().await;
        }
        start.elapsed()
    })
}

fn response_cache(c: &mut Criterion) {
    let rt = runtime();
    let cfg = ResponseCacheConfig {
        store: store("bench-http"),
        ..ResponseCacheConfig::default()
    };
    let (layer, _handle) = ResponseCacheLayer::new(cfg).unwrap();
    let mut cached = layer.layer(service_fn(names));
    let mut uncached = service_fn(names);
    // Warm the entry.
    rt.block_on(async {
        let res = cached.ready().await.unwrap().call(request()).await.unwrap();
        assert!(
            res.headers()["cache-status"]
                .to_str()
                .unwrap()
                .contains("stored")
        );
    });

    let mut g = c.benchmark_group("response_cache");
    g.throughput(Throughput::Elements(1));
    // The cost of building the request, included in every measurement below.
    g.bench_function("request_build", |b| b.iter(|| black_box(request())));
    g.bench_function("l1_hit", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let fut = cached.call(request());
                async move {
                    black_box(fut.await.unwrap());
                }
            })
        });
    });
    g.bench_function("names_uncached", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let fut = uncached.call(request());
                async move {
                    black_box(fut.await.unwrap());
                }
            })
        });
    });
    g.bench_function("names_cached", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let fut = cached.call(request());
                async move {
                    black_box(fut.await.unwrap());
                }
            })
        });
    });
    g.finish();
}

fn two_level(c: &mut Criterion) {
    let rt = runtime();
    let cache: TwoLevelCache<u64, String> = TwoLevelCache::new(store("bench-kv")).unwrap();
    rt.block_on(cache.set(&42, "Grace Hopper".to_owned()));
    c.bench_function("two_level/l1_hit", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let cache = &cache;
                async move {
                    black_box(cache.get(black_box(&42)).await);
                }
            })
        });
    });
    c.bench_function("two_level/get_or_load_hit", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let cache = &cache;
                async move {
                    let v = cache
                        .get_or_load(black_box(&42), || async {
                            Ok::<_, Infallible>(String::new())
                        })
                        .await;
                    black_box(v.ok());
                }
            })
        });
    });
}

#[cfg(feature = "redis")]
fn l2(c: &mut Criterion) {
    use palisade::cache::RedisConfig;
    use palisade_tests::redis::RedisServer;

    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    // Every value weighs more than L1 holds, so moka evicts it at its next maintenance; reads
    // cycle through KEYS keys, so by the time a key comes round again it has left L1 and each
    // `get` is a real L2 round trip (checked below with the L1 hit counter).
    const KEYS: usize = 4096;
    let mut cfg = store("bench-l2");
    cfg.l1_capacity_bytes = 1024;
    cfg.redis = Some(RedisConfig::new(redis.url()));
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i}")).collect();
    let cache: TwoLevelCache<str, String> = rt.block_on(async {
        let cache = TwoLevelCache::<str, String>::builder(cfg)
            .weigher(|_| 1 << 20)
            .codec(palisade::cache::codec::JsonCodec::new())
            .build()
            .unwrap();
        for k in &keys {
            cache.set(k, "Grace Hopper".to_owned()).await;
        }
        cache.run_pending_tasks().await;
        cache
    });
    let mut next = 0usize;
    let mut key = move || {
        next = (next + 1) % KEYS;
        next
    };

    // Percentiles from 10k sequential reads (criterion reports the mean).
    let mut samples: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let k = &keys[key()];
            let start = Instant::now();
            let got = cache.get(k).await;
            v.push(start.elapsed());
            assert!(got.is_some());
        }
        v
    });
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let stats = cache.stats();
    eprintln!(
        "two_level/l2_hit loopback: p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}  (l1 hits {}, l2 hits {})",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1],
        stats.l1.hits,
        stats.l2.as_ref().map_or(0, |l2| l2.hits),
    );

    c.bench_function("two_level/l2_hit", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let cache = &cache;
                let k = &keys[key()];
                async move {
                    black_box(cache.get(k).await);
                }
            })
        });
    });
    let stats = cache.stats();
    eprintln!(
        "two_level/l2_hit totals: l1 hits {}, l2 hits {}",
        stats.l1.hits,
        stats.l2.map_or(0, |l2| l2.hits)
    );
}

#[cfg(not(feature = "redis"))]
fn l2(_c: &mut Criterion) {
    eprintln!("two_level/l2_hit skipped: build with the `redis` feature");
}

criterion_group!(benches, response_cache, two_level, l2);
criterion_main!(benches);
