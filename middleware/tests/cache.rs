//! `TwoLevelCache` against a real redis-server: levels, corrupt entries, outages, backplane.
#![cfg(all(feature = "cache", feature = "redis"))]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use palisade::cache::codec::{self, EnvelopeMeta};
use palisade::cache::{CacheConfig, EvictionPolicy, RedisConfig, TwoLevelCache};
use palisade_tests::redis::RedisServer;
use parking_lot::Mutex;
use tokio::time::{Instant, sleep};

// === a recorder that keeps counters, to check metrics ===

#[derive(Clone, Default)]
struct TestRecorder {
    counters: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
}

fn key_string(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = Arc::clone(self.counters.lock().entry(key_string(key)).or_default());
        Counter::from_arc(c)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// === helpers ===

fn config(redis: &RedisServer, name: &str, namespace: &str) -> CacheConfig {
    let mut r = RedisConfig::new(redis.url());
    r.timeout_ms = 200;
    r.connect_timeout_ms = 500;
    CacheConfig {
        name: name.into(),
        namespace: namespace.into(),
        l1_eviction: EvictionPolicy::Lru,
        redis: Some(r),
        ..CacheConfig::default()
    }
}

fn cache(config: CacheConfig) -> TwoLevelCache<str, String> {
    TwoLevelCache::new(config).unwrap()
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn raw_get(redis: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let mut c = raw(redis).await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn raw_set(redis: &RedisServer, key: &str, value: &[u8]) {
    let mut c = raw(redis).await;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
}

fn value(v: &'static str) -> impl FnOnce() -> std::future::Ready<Result<String, std::io::Error>> {
    move || std::future::ready(Ok(v.to_owned()))
}

fn failing() -> impl FnOnce() -> std::future::Ready<Result<String, std::io::Error>> {
    || std::future::ready(Err(std::io::Error::other("origin down")))
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn backplanes_up(caches: &[&TwoLevelCache<str, String>]) {
    for c in caches {
        eventually(Duration::from_secs(5), "backplane connected", || async {
            c.stats().l2.unwrap().backplane.connected
        })
        .await;
    }
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_and_misses_are_counted_per_level() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = cache(config(&redis, "levels-a", "levels"));
    let b = cache(config(&redis, "levels-b", "levels"));

    assert_eq!(a.get_or_load("k", value("v1")).await.unwrap(), "v1");
    assert_eq!(
        raw_get(&redis, "palisade:v1:levels:k")
            .await
            .map(|b| b.len() > codec::HEADER_LEN),
        Some(true)
    );
    // B finds it in L2 (its loader would fail), then in its own L1.
    assert_eq!(b.get_or_load("k", failing()).await.unwrap(), "v1");
    assert_eq!(b.get("k").await.as_deref(), Some("v1"));
    assert_eq!(a.get("absent").await, None);

    let sa = a.stats();
    let sb = b.stats();
    let (a2, b2) = (sa.l2.unwrap(), sb.l2.unwrap());
    assert_eq!((sa.l1.misses, a2.misses, sa.loads.total), (2, 2, 1));
    assert_eq!(a2.writes, 1);
    assert_eq!(
        (sb.l1.misses, b2.hits, sb.l1.hits, sb.loads.total),
        (1, 1, 1, 0)
    );
    assert_eq!(b2.breaker, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_with_l2_run_the_loader_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let c = cache(config(&redis, "flight", "flight"));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = c.clone();
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            c.get_or_load("hot", move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(50)).await;
                Ok::<_, std::io::Error>("v".to_owned())
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "v");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_truncated_and_foreign_l2_entries_are_misses_with_a_metric() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let recorder = TestRecorder::default();
    let c = metrics::with_local_recorder(&recorder, || cache(config(&redis, "corrupt", "corrupt")));

    // A valid entry to cut and tamper with.
    let writer = cache(config(&redis, "corrupt-writer", "corrupt"));
    writer.set("valid", "hello".to_owned()).await;
    let valid = raw_get(&redis, "palisade:v1:corrupt:valid").await.unwrap();

    let now_ms = 1u64 << 60; // far future: fresh if it were accepted
    let envelope = |codec_id: u8, payload: &[u8]| {
        let mut buf = Vec::new();
        let meta = EnvelopeMeta {
            codec: codec_id,
            negative: false,
            created_ms: 0,
            fresh_until_ms: now_ms,
            stale_until_ms: now_ms,
        };
        codec::encode(&meta, &mut buf, |o| {
            o.extend_from_slice(payload);
            Ok(())
        })
        .unwrap();
        buf
    };
    let mut flipped = valid.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x20;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"not a palisade entry at all, just some bytes".to_vec(),
            "magic",
        ),
        ("short", b"PLS".to_vec(), "too_short"),
        ("truncated", valid[..valid.len() - 2].to_vec(), "length"),
        ("flipped", flipped, "checksum"),
        ("codec", envelope(9, b"\"x\""), "codec"),
        (
            "payload",
            envelope(codec::CODEC_JSON, b"{not json"),
            "payload",
        ),
        (
            "wrongtype",
            envelope(codec::CODEC_JSON, b"[1,2,3]"),
            "payload",
        ),
    ];
    for (key, bytes, reason) in &cases {
        let metric = format!("palisade_cache_corrupt_total{{cache=corrupt,reason={reason}}}");
        let before = recorder.counter(&metric);
        raw_set(&redis, &format!("palisade:v1:corrupt:{key}"), bytes).await;
        assert_eq!(c.get(key).await, None, "{key}");
        assert_eq!(recorder.counter(&metric), before + 1, "{key}");
        // The loader runs and its value replaces the bad entry; no error reaches the caller.
        assert_eq!(c.get_or_load(key, value("fresh")).await.unwrap(), "fresh");
    }
    let stats = c.stats().l2.unwrap();
    // Each bad entry was refused twice: by `get`, then by the load's L2 read.
    assert_eq!(stats.corrupt, 2 * cases.len() as u64);
    // Rewritten entries now decode.
    let reader = cache(config(&redis, "corrupt-reader", "corrupt"));
    assert_eq!(reader.get("garbage").await.as_deref(), Some("fresh"));
    assert_eq!(reader.get("valid").await.as_deref(), Some("hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_never_reaches_callers_serves_stale_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut cfg = config(&redis, "outage", "outage");
    cfg.ttl_ms = 500;
    cfg.max_stale_ms = 60_000;
    cfg.fail_safe_throttle_ms = 100;
    if let Some(r) = cfg.redis.as_mut() {
        r.timeout_ms = 100;
        r.breaker_failures = 2;
        r.breaker_open_ms = 300;
    }
    let c = cache(cfg);
    let observer = cache(config(&redis, "outage-observer", "outage"));
    backplanes_up(&[&c, &observer]).await;
    assert_eq!(c.get_or_load("k", value("v1")).await.unwrap(), "v1");

    // Redis dies while a load is running: the caller still gets its value.
    let slow = {
        let c = c.clone();
        tokio::spawn(async move {
            c.get_or_load("mid", || async {
                sleep(Duration::from_millis(300)).await;
                Ok::<_, std::io::Error>("loaded".to_owned())
            })
            .await
        })
    };
    sleep(Duration::from_millis(50)).await;
    redis.kill();
    let started = Instant::now();
    assert_eq!(slow.await.unwrap().unwrap(), "loaded");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The value goes stale; the origin fails; the stale value is served, quickly.
    sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    assert_eq!(c.get_or_load("k", failing()).await.unwrap(), "v1");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // New keys are served by the origin while Redis is down.
    for i in 0..5 {
        let key = format!("new{i}");
        assert_eq!(
            c.get_or_load(&key, value("origin")).await.unwrap(),
            "origin"
        );
    }
    let s = c.stats();
    let l2 = s.l2.unwrap();
    assert!(l2.errors + l2.timeouts >= 2, "{l2:?}");
    assert!(
        l2.skipped_open >= 1,
        "the breaker should skip Redis: {l2:?}"
    );
    assert!(s.fail_safe >= 1);
    // An invalidation during the outage is remembered.
    c.invalidate("k").await;
    assert!(c.stats().l2.unwrap().pending_invalidations >= 1);

    redis.restart();
    // Writes reach Redis again once the connection and the breaker recover.
    eventually(
        Duration::from_secs(15),
        "L2 writes after restart",
        || async {
            c.set("probe", "back".to_owned()).await;
            raw_get(&redis, "palisade:v1:outage:probe").await.is_some()
        },
    )
    .await;
    assert_eq!(c.get_or_load("after", value("a")).await.unwrap(), "a");
    assert!(raw_get(&redis, "palisade:v1:outage:after").await.is_some());
    // The backplane re-subscribed (clearing L1) on both nodes.
    eventually(Duration::from_secs(15), "backplane reconnect", || async {
        let l2 = c.stats().l2.unwrap();
        l2.backplane.connected && l2.backplane.reconnects >= 1
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "pending invalidations replayed",
        || async { c.stats().l2.unwrap().pending_invalidations == 0 },
    )
    .await;
    assert_eq!(c.stats().l2.unwrap().breaker, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backplane_invalidations_evict_l1_on_other_nodes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = cache(config(&redis, "bp-a", "bp"));
    let b = cache(config(&redis, "bp-b", "bp"));
    backplanes_up(&[&a, &b]).await;

    assert_eq!(b.get_or_load("k", value("v1")).await.unwrap(), "v1");
    // A write on A: B drops its L1 copy and reads the new value from L2.
    a.set("k", "v2".to_owned()).await;
    eventually(Duration::from_secs(3), "B sees v2", || async {
        b.get("k").await.as_deref() == Some("v2")
    })
    .await;
    // An invalidation on A removes it from B (L1) and from L2.
    a.invalidate("k").await;
    eventually(Duration::from_secs(3), "B lost k", || async {
        b.get("k").await.is_none()
    })
    .await;

    for k in ["user:1", "user:2", "group:1"] {
        b.get_or_load(k, value("x")).await.unwrap();
    }
    a.invalidate_prefix("user:").await;
    eventually(Duration::from_secs(3), "B lost user:*", || async {
        b.get("user:1").await.is_none() && b.get("user:2").await.is_none()
    })
    .await;
    assert_eq!(b.get("group:1").await.as_deref(), Some("x"));
    // Nodes ignore their own messages.
    assert_eq!(a.stats().l2.unwrap().backplane.received, 0);
    assert!(b.stats().l2.unwrap().backplane.received >= 3);
    assert!(a.stats().l2.unwrap().backplane.published >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backplane_resubscribes_after_a_redis_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = cache(config(&redis, "bpr-a", "bpr"));
    let b = cache(config(&redis, "bpr-b", "bpr"));
    backplanes_up(&[&a, &b]).await;
    redis.kill();
    sleep(Duration::from_millis(200)).await;
    redis.restart();
    eventually(Duration::from_secs(15), "B re-subscribed", || async {
        let bp = b.stats().l2.unwrap().backplane;
        bp.connected && bp.reconnects >= 1
    })
    .await;
    backplanes_up(&[&a]).await;
    eventually(Duration::from_secs(15), "L2 usable", || async {
        b.get_or_load("k", value("v1")).await.is_ok() && b.stats().l2.unwrap().breaker == "closed"
    })
    .await;
    b.set("k", "v1".to_owned()).await;
    assert_eq!(b.get("k").await.as_deref(), Some("v1"));
    a.invalidate("k").await;
    eventually(Duration::from_secs(3), "B lost k", || async {
        b.get("k").await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_entry_limit_stay_in_l1() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut cfg = config(&redis, "oversize", "oversize");
    if let Some(r) = cfg.redis.as_mut() {
        r.max_entry_bytes = 64;
    }
    let c = cache(cfg);
    let big = "x".repeat(1000);
    let big2 = big.clone();
    c.get_or_load("big", move || async move { Ok::<_, std::io::Error>(big2) })
        .await
        .unwrap();
    assert_eq!(raw_get(&redis, "palisade:v1:oversize:big").await, None);
    assert_eq!(c.get("big").await, Some(big));
    assert_eq!(c.stats().l2.unwrap().oversize, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_safe_uses_a_stale_l2_copy_after_a_restart_of_the_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut cfg = config(&redis, "l2stale", "l2stale");
    cfg.ttl_ms = 200;
    cfg.max_stale_ms = 60_000;
    let first = cache(cfg.clone());
    first.get_or_load("k", value("v1")).await.unwrap();
    drop(first);
    sleep(Duration::from_millis(300)).await;
    // A fresh node (empty L1) finds only a stale copy in L2; the origin fails.
    let second = cache(cfg);
    assert_eq!(second.get_or_load("k", failing()).await.unwrap(), "v1");
    assert_eq!(second.stats().fail_safe, 1);
}
