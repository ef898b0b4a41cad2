//! Unit tests of the L1 path (no Redis), on the paused tokio clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, advance, sleep};

use super::*;
use crate::control::DynComponent;

fn config() -> CacheConfigBuilder {
    CacheConfig::builder()
        .name("test")
        .l1_eviction(EvictionPolicy::Lru)
        .ttl(Duration::from_secs(10))
}

fn cache(builder: CacheConfigBuilder) -> TwoLevelCache<str, u64> {
    TwoLevelCache::new(builder.build().unwrap()).unwrap()
}

/// A loader that counts its runs and returns `value` after `delay`.
fn counted(
    calls: &Arc<AtomicUsize>,
    value: u64,
    delay: Duration,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<u64, std::io::Error>>
+ Send
+ 'static {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            sleep(delay).await;
            Ok(value)
        })
    }
}

fn failing(
    calls: &Arc<AtomicUsize>,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<u64, std::io::Error>>
+ Send
+ 'static {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(std::io::Error::other("origin down"))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn serves_l1_hits_without_calling_the_loader() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(c.get("a").await, None);
    assert_eq!(
        c.get_or_load("a", counted(&calls, 1, Duration::ZERO))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        c.get_or_load("a", counted(&calls, 2, Duration::ZERO))
            .await
            .unwrap(),
        1
    );
    assert_eq!(c.get("a").await, Some(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let s = c.stats();
    assert_eq!(s.l1.hits, 2);
    assert_eq!(s.l1.misses, 2);
    assert_eq!(s.loads.total, 1);
    assert!(s.l2.is_none());
}

#[tokio::test(start_paused = true)]
async fn hundred_concurrent_misses_run_the_loader_once() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = c.clone();
        let loader = counted(&calls, 42, Duration::from_millis(50));
        tasks.push(tokio::spawn(
            async move { c.get_or_load("k", loader).await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let s = c.stats();
    assert_eq!(s.loads.total, 1);
    assert_eq!(s.loads.coalesced, 99);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_neither_cancels_the_load_nor_poisons_the_key() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    // The first caller gives up after 10 ms; its load (100 ms) goes on.
    let first = tokio::time::timeout(
        Duration::from_millis(10),
        c.get_or_load("k", counted(&calls, 7, Duration::from_millis(100))),
    )
    .await;
    assert!(first.is_err());
    // A second caller joins the same flight: its own loader never runs.
    let started = Instant::now();
    let v = c
        .get_or_load("k", counted(&calls, 8, Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(v, 7);
    assert!(started.elapsed() <= Duration::from_millis(95));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.get("k").await, Some(7));
}

#[tokio::test(start_paused = true)]
async fn a_load_whose_callers_all_left_still_fills_the_cache() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    let _ = tokio::time::timeout(
        Duration::from_millis(1),
        c.get_or_load("k", counted(&calls, 5, Duration::from_millis(20))),
    )
    .await;
    sleep(Duration::from_millis(30)).await;
    assert_eq!(c.get("k").await, Some(5));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl_on_the_tokio_clock() {
    let c = cache(config().ttl(Duration::from_secs(1)));
    let calls = Arc::new(AtomicUsize::new(0));
    c.get_or_load("k", counted(&calls, 1, Duration::ZERO))
        .await
        .unwrap();
    advance(Duration::from_millis(900)).await;
    assert_eq!(c.get("k").await, Some(1));
    advance(Duration::from_millis(200)).await;
    assert_eq!(c.get("k").await, None);
    assert_eq!(
        c.get_or_load("k", counted(&calls, 2, Duration::ZERO))
            .await
            .unwrap(),
        2
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn per_entry_ttl_overrides_the_cache_ttl() {
    let c = cache(config().ttl(Duration::from_secs(60)));
    c.set_with("short", 1, EntryOptions::ttl(Duration::from_millis(100)))
        .await;
    c.set("long", 2).await;
    advance(Duration::from_millis(150)).await;
    assert_eq!(c.get("short").await, None);
    assert_eq!(c.get("long").await, Some(2));
}

#[tokio::test(start_paused = true)]
async fn fail_safe_serves_stale_within_max_stale_and_throttles_the_origin() {
    let c = cache(
        config()
            .ttl(Duration::from_secs(1))
            .max_stale(Duration::from_secs(10))
            .fail_safe_throttle(Duration::from_secs(1)),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    c.get_or_load("k", counted(&calls, 1, Duration::ZERO))
        .await
        .unwrap();
    advance(Duration::from_secs(2)).await;
    // Stale: the loader fails, the stale value is served.
    assert_eq!(c.get_or_load("k", failing(&calls)).await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Within the throttle period the origin is not asked again.
    advance(Duration::from_millis(500)).await;
    assert_eq!(c.get_or_load("k", failing(&calls)).await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // After it, the origin is retried (and fails again; stale again).
    advance(Duration::from_millis(600)).await;
    assert_eq!(c.get_or_load("k", failing(&calls)).await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let s = c.stats();
    assert_eq!(s.fail_safe, 2);
    assert_eq!(s.stale_served, 2);
    assert_eq!(s.loads.errors, 2);
    // Past max_stale the error reaches the caller.
    advance(Duration::from_secs(10)).await;
    let err = c.get_or_load("k", failing(&calls)).await.unwrap_err();
    assert!(matches!(err, CacheError::Load(_)));
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "origin down"
    );
}

#[tokio::test(start_paused = true)]
async fn soft_timeout_returns_stale_and_finishes_the_load_in_the_background() {
    let c = cache(
        config()
            .ttl(Duration::from_secs(1))
            .max_stale(Duration::from_secs(60))
            .soft_timeout(Duration::from_millis(50)),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    c.get_or_load("k", counted(&calls, 1, Duration::ZERO))
        .await
        .unwrap();
    advance(Duration::from_secs(2)).await;
    let started = Instant::now();
    let v = c
        .get_or_load("k", counted(&calls, 2, Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(c.stats().soft_timeouts, 1);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(c.get("k").await, Some(2));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn hard_timeout_fails_a_load_with_nothing_stale() {
    let c = cache(config().hard_timeout(Duration::from_millis(100)));
    let calls = Arc::new(AtomicUsize::new(0));
    let err = c
        .get_or_load("k", counted(&calls, 1, Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Timeout(d) if d == Duration::from_millis(100)));
    assert_eq!(c.stats().loads.timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn loader_errors_are_not_cached() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    assert!(c.get_or_load("k", failing(&calls)).await.is_err());
    assert_eq!(
        c.get_or_load("k", counted(&calls, 3, Duration::ZERO))
            .await
            .unwrap(),
        3
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_is_an_error_and_leaves_the_key_usable() {
    let c = cache(config());
    let err = c
        .get_or_load("k", || async {
            if true {
                panic!("loader bug");
            }
            Ok::<u64, std::io::Error>(0)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Panicked));
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        c.get_or_load("k", counted(&calls, 9, Duration::ZERO))
            .await
            .unwrap(),
        9
    );
}

#[tokio::test(start_paused = true)]
async fn negative_results_are_cached_for_negative_ttl() {
    let c = cache(config().negative_ttl(Duration::from_secs(1)));
    let calls = Arc::new(AtomicUsize::new(0));
    let absent = |calls: &Arc<AtomicUsize>| {
        let calls = Arc::clone(calls);
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<Option<u64>, std::io::Error>(None)
        }
    };
    assert_eq!(
        c.get_or_load_optional("missing", absent(&calls))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        c.get_or_load_optional("missing", absent(&calls))
            .await
            .unwrap(),
        None
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().negative_hits, 1);
    assert!(matches!(
        c.get_or_load("missing", counted(&calls, 1, Duration::ZERO))
            .await,
        Err(CacheError::Absent)
    ));
    advance(Duration::from_millis(1100)).await;
    assert_eq!(
        c.get_or_load_optional("missing", absent(&calls))
            .await
            .unwrap(),
        None
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn without_negative_caching_absent_results_are_not_stored() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let calls = Arc::clone(&calls);
        let v = c
            .get_or_load_optional("missing", move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<Option<u64>, std::io::Error>(None)
            })
            .await
            .unwrap();
        assert_eq!(v, None);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_load_is_not_overwritten_by_it() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = c.clone();
    let loader = counted(&calls, 1, Duration::from_millis(100));
    let waiter = tokio::spawn(async move { c2.get_or_load("k", loader).await });
    sleep(Duration::from_millis(10)).await;
    c.invalidate("k").await;
    // The waiter still gets the loaded value...
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    // ...but it was not stored over the invalidation.
    assert_eq!(c.get("k").await, None);
}

#[tokio::test(start_paused = true)]
async fn a_set_during_a_load_wins() {
    let c = cache(config());
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = c.clone();
    let loader = counted(&calls, 1, Duration::from_millis(100));
    let waiter = tokio::spawn(async move { c2.get_or_load("k", loader).await });
    sleep(Duration::from_millis(10)).await;
    c.set("k", 2).await;
    waiter.await.unwrap().unwrap();
    assert_eq!(c.get("k").await, Some(2));
}

#[tokio::test(start_paused = true)]
async fn invalidate_prefix_and_flush_remove_matching_keys() {
    let c = cache(config());
    for k in ["user:1", "user:2", "group:1"] {
        c.set(k, 1).await;
    }
    c.invalidate_prefix("user:").await;
    assert_eq!(c.get("user:1").await, None);
    assert_eq!(c.get("user:2").await, None);
    assert_eq!(c.get("group:1").await, Some(1));
    c.flush().await;
    assert_eq!(c.get("group:1").await, None);
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_expiry_across_the_window() {
    let c = cache(
        config()
            .ttl(Duration::from_secs(1))
            .jitter(Duration::from_secs(1)),
    );
    for i in 0..200 {
        c.set(&i.to_string(), i).await;
    }
    let mut remaining = Vec::new();
    for i in 0..200 {
        let e = c.get_entry(&i.to_string()).await.unwrap();
        remaining.push(e.fresh_for());
    }
    let min = remaining.iter().min().unwrap();
    let max = remaining.iter().max().unwrap();
    assert!(*min >= Duration::from_secs(1));
    assert!(*max <= Duration::from_secs(2));
    assert!(
        *max - *min >= Duration::from_millis(500),
        "spread {min:?}..{max:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn keys_longer_than_the_limit_bypass_the_cache() {
    let c = cache(config().max_key_bytes(16));
    let calls = Arc::new(AtomicUsize::new(0));
    let long = "x".repeat(17);
    for _ in 0..2 {
        c.get_or_load(&long, counted(&calls, 1, Duration::ZERO))
            .await
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().loads.bypassed, 2);
}

#[tokio::test(start_paused = true)]
async fn integer_and_string_keys_share_one_key_space() {
    let c: TwoLevelCache<u64, String> = TwoLevelCache::new(config().build().unwrap()).unwrap();
    c.set(&7, "seven".to_owned()).await;
    assert_eq!(c.get(&7).await.as_deref(), Some("seven"));
    assert_eq!(c.handle().stats().l1.hits, 1);
    c.handle().invalidate("7").await;
    assert_eq!(c.get(&7).await, None);
}

#[tokio::test(start_paused = true)]
async fn weigher_bounds_l1_in_bytes() {
    let c: TwoLevelCache<str, Vec<u8>> =
        TwoLevelCache::builder(config().l1_capacity_bytes(64 * 1024).build().unwrap())
            .weigher(Vec::len)
            .codec(codec::JsonCodec::new())
            .build()
            .unwrap();
    for i in 0..100 {
        c.set(&format!("k{i}"), vec![0; 4096]).await;
    }
    c.run_pending_tasks().await;
    let s = c.stats();
    assert!(
        s.l1.weighted_bytes <= 64 * 1024,
        "{} bytes",
        s.l1.weighted_bytes
    );
    assert!(s.l1.entries <= 16);
    assert!(s.l1.evictions > 0);
}

#[tokio::test(start_paused = true)]
async fn resizing_l1_keeps_entries_and_applies_the_new_capacity() {
    let c = cache(config().l1_capacity_bytes(1024 * 1024));
    for i in 0..20 {
        c.set(&format!("k{i}"), i).await;
    }
    let h = c.handle();
    h.resize_l1(2 * 1024 * 1024).await.unwrap();
    assert_eq!(c.config().l1_capacity_bytes, 2 * 1024 * 1024);
    for i in 0..20 {
        assert_eq!(c.get(&format!("k{i}")).await, Some(i));
    }
    // Shrinking below what the entries weigh evicts some.
    h.resize_l1(1024).await.unwrap();
    c.run_pending_tasks().await;
    let s = c.stats();
    assert_eq!(s.l1.capacity_bytes, 1024);
    assert!(s.l1.weighted_bytes <= 1024);
    assert!(h.resize_l1(10).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn handle_applies_valid_patches_atomically_and_refuses_invalid_ones() {
    let c = cache(config());
    let h = c.handle();
    assert_eq!(h.kind(), crate::control::ComponentKind::Cache);
    let v0 = h.version();

    let errs = h
        .apply(&json!({ "ttl_ms": 0, "jitter_ms": 5 }), false)
        .unwrap_err();
    assert_eq!(errs[0].field, "ttl_ms");
    assert_eq!(h.version(), v0);
    assert_eq!(c.config().jitter_ms, 0);

    let errs = h
        .apply(&json!({ "namespace": "other" }), false)
        .unwrap_err();
    assert_eq!(errs[0].field, "namespace");

    let change = h.apply(&json!({ "ttl_ms": 5000 }), true).unwrap();
    assert_eq!(change.after["ttl_ms"], 5000);
    assert_eq!(c.config().ttl_ms, 10_000, "dry run changes nothing");

    h.apply(&json!({ "ttl_ms": 5000, "max_stale_ms": 100 }), false)
        .unwrap();
    assert_eq!(h.version(), v0 + 1);
    assert_eq!(c.config().ttl_ms, 5000);
    assert_eq!(h.settings()["max_stale_ms"], 100);

    c.set("k", 1).await;
    assert!(DynComponent::stats(&h)["l1"]["entries"].as_u64().is_some());
    assert!(h.action("nope", &json!({})).is_err());
    assert!(h.action("invalidate", &json!({})).is_err());
    h.action("invalidate", &json!({ "key": "k" })).unwrap();
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(1)).await;
    assert_eq!(c.get("k").await, None);
    assert_eq!(h.actions(), &["invalidate", "invalidate_prefix", "flush"]);
}
