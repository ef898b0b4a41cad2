//! Unit tests of the rate-limit layer, driven through real tower services with a paused clock.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::control::{ComponentKind, DynComponent, Registry};

type Svc = RateLimit<tower::util::ServiceFn<fn(Request<Body>) -> Ready>>;
type Ready = std::future::Ready<Result<Response<Body>, Infallible>>;

fn ok(_req: Request<Body>) -> Ready {
    std::future::ready(Ok(Response::new(Body::from("ok"))))
}

fn service(config: RateLimitConfig) -> (Svc, RateLimitHandle) {
    let (layer, handle) = RateLimitLayer::new(config);
    let f: fn(Request<Body>) -> Ready = ok;
    (layer.layer(tower::service_fn(f)), handle)
}

fn one(policy: PolicyBuilder) -> (Svc, RateLimitHandle) {
    service(RateLimitConfig::builder().policy(policy).build().unwrap())
}

fn req(peer: &str, path: &str) -> Request<Body> {
    let mut r = Request::get(path).body(Body::empty()).unwrap();
    r.extensions_mut()
        .insert(PeerAddr(format!("{peer}:40000").parse().unwrap()));
    r
}

fn with_header(mut r: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    r.headers_mut().append(name, value.parse().unwrap());
    r
}

async fn send(svc: &Svc, r: Request<Body>) -> Response<Body> {
    svc.clone().oneshot(r).await.unwrap()
}

async fn status(svc: &Svc, r: Request<Body>) -> u16 {
    send(svc, r).await.status().as_u16()
}

fn header<'a>(res: &'a Response<Body>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn json_body(res: Response<Body>) -> Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(start_paused = true)]
async fn burst_then_steady_rate_is_exact() {
    let (svc, handle) = one(PolicyConfig::builder("api").rate(10).burst(5));
    for _ in 0..5 {
        assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    }
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 429);
    // Offer 100 requests per second for 3 s: exactly 10 per second get through.
    let mut allowed = 0;
    for _ in 0..300 {
        advance(Duration::from_millis(10)).await;
        if status(&svc, req("192.0.2.1", "/")).await == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 30);
    let stats = handle.policy("api").unwrap().stats();
    assert_eq!(stats.allowed, 35);
    assert_eq!(stats.rejected, 271);
    // Another client is independent.
    assert_eq!(status(&svc, req("192.0.2.2", "/")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_rounded_up_never_zero_and_correct() {
    // One cell every 200 ms: the wait is sub-second, the header must still say 1.
    let (svc, _) = one(PolicyConfig::builder("api").rate(5).burst(1));
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), Some("1"));
    assert_eq!(json_body(res).await["retry_after_ms"], 200);
    advance(Duration::from_millis(199)).await;
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(header(&res, "retry-after"), Some("1"));
    assert_eq!(json_body(res).await["retry_after_ms"], 1);
    advance(Duration::from_millis(1)).await;
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);

    // One cell per 10 s: waiting exactly Retry-After seconds is enough.
    let (svc, _) = one(PolicyConfig::builder("slow")
        .rate(1)
        .per(Duration::from_secs(10))
        .burst(1));
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    advance(Duration::from_millis(500)).await;
    let res = send(&svc, req("192.0.2.1", "/")).await;
    let secs: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
    assert_eq!(secs, 10, "9.5 s rounds up to 10");
    advance(Duration::from_secs(secs - 1)).await;
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 429);
    advance(Duration::from_secs(1)).await;
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
}

/// A strict parser of the two header fields: a list of `"name";k=int;k=int` items.
fn parse_list(value: &str) -> Vec<(String, Vec<(String, u64)>)> {
    value
        .split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap();
            assert!(
                name.len() >= 2 && name.starts_with('"') && name.ends_with('"'),
                "item `{item}` must start with an sf-string"
            );
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("param `{p}`"));
                    assert!(k.bytes().all(|b| b.is_ascii_lowercase()), "key `{k}`");
                    assert!(v.bytes().all(|b| b.is_ascii_digit()), "integer `{v}`");
                    (k.to_owned(), v.parse().unwrap())
                })
                .collect();
            (name.trim_matches('"').to_owned(), params)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn headers_follow_the_draft_syntax_on_allowed_and_rejected_responses() {
    let config = RateLimitConfig::builder()
        .policy(PolicyConfig::builder("api").rate(100).burst(2))
        .policy(
            PolicyConfig::builder("hourly")
                .rate(1000)
                .per(Duration::from_secs(3600))
                .key(KeySource::Global),
        )
        .build()
        .unwrap();
    let (svc, _) = service(config);
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(res.status(), 200);
    let policy = parse_list(header(&res, "ratelimit-policy").unwrap());
    assert_eq!(
        policy,
        vec![
            ("api".into(), vec![("q".into(), 100), ("w".into(), 1)]),
            (
                "hourly".into(),
                vec![("q".into(), 1000), ("w".into(), 3600)]
            ),
        ]
    );
    let limit = parse_list(header(&res, "ratelimit").unwrap());
    assert_eq!(
        limit[0],
        ("api".into(), vec![("r".into(), 1), ("t".into(), 1)])
    );
    assert_eq!(
        limit[1],
        ("hourly".into(), vec![("r".into(), 999), ("t".into(), 4)])
    );
    send(&svc, req("192.0.2.1", "/")).await;
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(res.status(), 429);
    assert_eq!(
        header(&res, "content-type"),
        Some("application/problem+json")
    );
    let limit = parse_list(header(&res, "ratelimit").unwrap());
    assert_eq!(
        limit,
        vec![("api".into(), vec![("r".into(), 0), ("t".into(), 1)])]
    );
    let body = json_body(res).await;
    assert_eq!(body["type"], QUOTA_EXCEEDED);
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], json!(["api"]));
}

#[tokio::test(start_paused = true)]
async fn header_modes_are_honoured() {
    let build = |mode| {
        service(
            RateLimitConfig::builder()
                .headers(mode)
                .policy(PolicyConfig::builder("api").rate(1).burst(1))
                .build()
                .unwrap(),
        )
        .0
    };
    let svc = build(HeaderMode::Rejected);
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert!(header(&res, "ratelimit").is_none());
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert!(header(&res, "ratelimit").is_some() && header(&res, "retry-after").is_some());
    let svc = build(HeaderMode::None);
    send(&svc, req("192.0.2.1", "/")).await;
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(res.status(), 429);
    assert!(header(&res, "ratelimit").is_none() && header(&res, "ratelimit-policy").is_none());
    assert_eq!(header(&res, "retry-after"), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn runtime_change_keeps_every_key_in_place() {
    let (svc, handle) = one(PolicyConfig::builder("api").rate(1).burst(20));
    let api = handle.policy("api").unwrap();
    let remaining =
        |res: &Response<Body>| -> u64 { parse_list(header(res, "ratelimit").unwrap())[0].1[0].1 };
    for _ in 0..10 {
        assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    }
    // A bigger burst: 10 of 40 used, so the next request leaves 29 (no refill to 40).
    let change = api.apply(&json!({ "burst": 40 }), false).unwrap();
    assert_eq!(change.before["burst"], 20);
    assert_eq!(change.after["burst"], 40);
    assert_eq!(remaining(&send(&svc, req("192.0.2.1", "/")).await), 29);
    // Ten times the rate: still 11 cells used.
    api.apply(&json!({ "rate": 10 }), false).unwrap();
    assert_eq!(remaining(&send(&svc, req("192.0.2.1", "/")).await), 28);
    // A much lower rate (the operator clamps down): still 12 used, not a fresh burst.
    api.apply(&json!({ "rate": 1, "per": "1m" }), false)
        .unwrap();
    assert_eq!(remaining(&send(&svc, req("192.0.2.1", "/")).await), 27);
    // Spend everything, then shrink the burst: the key waits one new interval, no longer.
    for _ in 0..27 {
        assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    }
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 429);
    api.apply(&json!({ "burst": 5, "per_secs": 10 }), false)
        .unwrap();
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(header(&res, "retry-after"), Some("10"));
    advance(Duration::from_secs(10)).await;
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    assert_eq!(api.version(), 5);
    assert_eq!(
        api.settings(),
        json!({ "rate": 1, "per": "10s", "burst": 5, "mode": "enforce" })
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_changes_are_refused_and_change_nothing() {
    let (_svc, handle) = one(PolicyConfig::builder("api").rate(100).burst(20));
    let api = handle.policy("api").unwrap();
    let before = (api.settings(), api.version());
    let errors = api.apply(&json!({ "burst": 0 }), false).unwrap_err();
    assert_eq!(errors[0].field, "burst");
    assert!(
        errors[0].reason.contains("at least 1"),
        "{}",
        errors[0].reason
    );
    let errors = api
        .apply(&json!({ "rate": 0, "per": "0s" }), false)
        .unwrap_err();
    assert_eq!(errors.len(), 2);
    assert!(
        api.apply(&json!({ "rate": 2_000_000_000u32 }), false)
            .is_err()
    );
    assert!(api.apply(&json!({ "per": "1 fortnight" }), false).is_err());
    assert!(api.apply(&json!({ "window": 3 }), false).is_err());
    assert!(
        api.apply(&json!({ "per": "1s", "per_secs": 1 }), false)
            .is_err()
    );
    assert!(api.apply(&json!({ "mode": "sometimes" }), false).is_err());
    assert_eq!((api.settings(), api.version()), before);
    // A dry run validates but changes nothing either.
    let change = api.apply(&json!({ "rate": 5 }), true).unwrap();
    assert_eq!(change.after["rate"], 5);
    assert_eq!((api.settings(), api.version()), before);
    assert!(
        api.set_limits(Limits {
            burst: 0,
            ..api.limits()
        })
        .is_err()
    );
    assert_eq!(api.limits().burst, 20);
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_counts_would_be_rejections_and_lets_through() {
    let (svc, handle) = one(PolicyConfig::builder("api")
        .rate(1)
        .burst(1)
        .mode(Mode::Shadow));
    for _ in 0..3 {
        let res = send(&svc, req("192.0.2.1", "/")).await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "retry-after").is_none());
        assert!(
            header(&res, "ratelimit").is_none(),
            "shadow policies are not advertised"
        );
    }
    let stats = handle.policy("api").unwrap().stats();
    assert_eq!(
        (stats.allowed, stats.shadow_rejected, stats.rejected),
        (1, 2, 0)
    );
    // Switching to enforce at runtime keeps the state: the key is still over its limit.
    handle
        .policy("api")
        .unwrap()
        .apply(&json!({ "mode": "enforce" }), false)
        .unwrap();
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 429);
    // Off: not evaluated at all.
    handle
        .policy("api")
        .unwrap()
        .apply(&json!({ "mode": "off" }), false)
        .unwrap();
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let (svc, _) = one(PolicyConfig::builder("api").rate(1).burst(2));
    // A client minting a new X-Forwarded-For per request still has one bucket (its peer IP).
    for (i, expected) in [200, 200, 429, 429].into_iter().enumerate() {
        let r = with_header(
            req("203.0.113.9", "/"),
            "x-forwarded-for",
            &format!("10.9.9.{i}"),
        );
        assert_eq!(status(&svc, r).await, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn trusted_proxies_report_the_client_and_forged_entries_do_not_mint_keys() {
    let config = RateLimitConfig::builder()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .policy(PolicyConfig::builder("api").rate(1).burst(2))
        .build()
        .unwrap();
    let (svc, _) = service(config);
    for (i, expected) in [200, 200, 429].into_iter().enumerate() {
        // The client forges the leftmost entry; the proxy appended the real address.
        let r = with_header(
            req("10.0.0.1", "/"),
            "x-forwarded-for",
            &format!("6.6.6.{i}, 198.51.100.7"),
        );
        assert_eq!(status(&svc, r).await, expected);
    }
    // Another real client behind the same proxy has its own bucket.
    let r = with_header(req("10.0.0.1", "/"), "x-forwarded-for", "198.51.100.8");
    assert_eq!(status(&svc, r).await, 200);
    // The same headers from an untrusted peer count against that peer only.
    let r = with_header(req("203.0.113.1", "/"), "x-forwarded-for", "198.51.100.8");
    assert_eq!(status(&svc, r).await, 200);
    let r = with_header(req("203.0.113.1", "/"), "x-forwarded-for", "198.51.100.9");
    assert_eq!(status(&svc, r).await, 200);
    let r = with_header(req("203.0.113.1", "/"), "x-forwarded-for", "198.51.100.10");
    assert_eq!(status(&svc, r).await, 429);
}

#[tokio::test(start_paused = true)]
async fn connect_info_is_a_peer_source() {
    let (svc, _) = one(PolicyConfig::builder("api").rate(1).burst(1));
    let r = |ip: &str| {
        let mut r = Request::get("/").body(Body::empty()).unwrap();
        let addr: SocketAddr = format!("{ip}:1").parse().unwrap();
        r.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        r
    };
    assert_eq!(status(&svc, r("192.0.2.1")).await, 200);
    assert_eq!(status(&svc, r("192.0.2.1")).await, 429);
    assert_eq!(status(&svc, r("192.0.2.2")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn a_million_key_flood_stays_within_max_keys() {
    let store = LocalStore::new(10_000);
    let gcra = Gcra::new(1, Duration::from_secs(1), 5);
    for i in 0..1_000_000u32 {
        let key = KeyValue::Ip(std::net::Ipv4Addr::from(i).into());
        assert!(matches!(store.check(&key, &gcra, 1), Check::Ready(d) if d.allowed));
    }
    let stats = store.stats();
    assert!(
        stats.keys <= 10_000 && stats.capacity <= 10_000,
        "{stats:?}"
    );
    assert_eq!(
        stats.keys + stats.evictions_idle + stats.evictions_pressure,
        1_000_000,
        "every key past the capacity evicted one: {stats:?}"
    );
    // A second later every key is idle: the next flood evicts idle keys, not active ones.
    advance(Duration::from_secs(2)).await;
    let hot = KeyValue::Bytes(b"hot".as_slice().into());
    for _ in 0..5 {
        assert!(matches!(store.check(&hot, &gcra, 1), Check::Ready(d) if d.allowed));
    }
    for i in 0..100_000u32 {
        let key = KeyValue::Ip(std::net::Ipv4Addr::from(i + 2_000_000).into());
        let _ = store.check(&key, &gcra, 1);
    }
    let after = store.stats();
    assert!(after.evictions_idle > stats.evictions_idle);
    assert!(
        matches!(store.check(&hot, &gcra, 1), Check::Ready(d) if !d.allowed),
        "the active key survived the flood with its state"
    );
    advance(Duration::from_secs(2)).await;
    store.purge_idle();
    assert_eq!(store.stats().keys, 1, "only the hot key is still active");
}

#[tokio::test(start_paused = true)]
async fn flood_through_the_layer_is_bounded_and_counted() {
    let (svc, handle) = one(PolicyConfig::builder("keys")
        .rate(1)
        .burst(1)
        .key(KeySource::Header("x-api-key".parse().unwrap()))
        .local(700));
    for i in 0..20_000 {
        let r = with_header(req("192.0.2.1", "/"), "x-api-key", &format!("k{i}"));
        assert_eq!(status(&svc, r).await, 200);
    }
    let stats = handle.policy("keys").unwrap().stats();
    assert_eq!(stats.allowed, 20_000);
    assert!(stats.store_stats.keys <= 700);
    assert_eq!(
        stats.store_stats.keys
            + stats.store_stats.evictions_pressure
            + stats.store_stats.evictions_idle,
        20_000
    );
}

#[tokio::test(start_paused = true)]
async fn every_policy_must_pass_and_rejections_are_refunded() {
    let config = RateLimitConfig::builder()
        .policy(
            PolicyConfig::builder("global")
                .rate(1)
                .per(Duration::from_secs(60))
                .burst(10)
                .key(KeySource::Global),
        )
        .policy(PolicyConfig::builder("per-ip").rate(1).burst(1))
        .build()
        .unwrap();
    let (svc, handle) = service(config);
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    for _ in 0..5 {
        let res = send(&svc, req("192.0.2.1", "/")).await;
        assert_eq!(res.status(), 429);
        assert_eq!(json_body(res).await["violated-policies"], json!(["per-ip"]));
    }
    // The five rejected requests cost the global policy nothing: 2 of 10 used after this one.
    let res = send(&svc, req("192.0.2.2", "/")).await;
    let limit = parse_list(header(&res, "ratelimit").unwrap());
    assert_eq!(limit[0].0, "global");
    assert_eq!(limit[0].1[0], ("r".into(), 8));
    assert_eq!(handle.policy("global").unwrap().stats().allowed, 2);
    assert_eq!(handle.policy("per-ip").unwrap().stats().rejected, 5);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_longest_wait_of_the_violated_policies() {
    let config = RateLimitConfig::builder()
        .policy(PolicyConfig::builder("per-ip").rate(1).burst(1))
        .policy(
            PolicyConfig::builder("global")
                .rate(1)
                .per(Duration::from_secs(10))
                .burst(1)
                .key(KeySource::Global),
        )
        .build()
        .unwrap();
    let (svc, _) = service(config);
    assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    let res = send(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(header(&res, "retry-after"), Some("10"));
    assert_eq!(
        json_body(res).await["violated-policies"],
        json!(["per-ip", "global"])
    );
}

#[tokio::test(start_paused = true)]
async fn exemptions_skip_every_policy() {
    let config = RateLimitConfig::builder()
        .exempt_path("/health/*")
        .exempt_cidrs(["127.0.0.0/8".parse().unwrap()])
        .policy(PolicyConfig::builder("api").rate(1).burst(1))
        .build()
        .unwrap();
    let (svc, handle) = service(config);
    for _ in 0..5 {
        let res = send(&svc, req("192.0.2.1", "/health/live")).await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "ratelimit").is_none());
        assert_eq!(status(&svc, req("127.0.0.1", "/api")).await, 200);
    }
    assert_eq!(status(&svc, req("192.0.2.1", "/api")).await, 200);
    assert_eq!(status(&svc, req("192.0.2.1", "/api")).await, 429);
    assert_eq!(handle.exempt(), 10);
}

#[tokio::test(start_paused = true)]
async fn paths_and_methods_select_policies() {
    let (svc, _) = one(PolicyConfig::builder("writes")
        .rate(1)
        .burst(1)
        .paths(["/api/*"])
        .methods([Method::POST]));
    let post = |path: &str| {
        let mut r = req("192.0.2.1", path);
        *r.method_mut() = Method::POST;
        r
    };
    assert_eq!(status(&svc, post("/api/users")).await, 200);
    assert_eq!(status(&svc, post("/api/users")).await, 429);
    assert_eq!(
        status(&svc, req("192.0.2.1", "/api/users")).await,
        200,
        "GET"
    );
    assert_eq!(status(&svc, post("/other")).await, 200, "other path");
}

#[tokio::test(start_paused = true)]
async fn header_and_custom_keys() {
    let (svc, _) = one(PolicyConfig::builder("by-key")
        .rate(1)
        .burst(1)
        .key(KeySource::Header("x-api-key".parse().unwrap())));
    let keyed = |k: &str| with_header(req("192.0.2.1", "/"), "x-api-key", k);
    assert_eq!(status(&svc, keyed("a")).await, 200);
    assert_eq!(status(&svc, keyed("a")).await, 429);
    assert_eq!(status(&svc, keyed("b")).await, 200);
    // No header: not counted by this policy.
    for _ in 0..3 {
        assert_eq!(status(&svc, req("192.0.2.1", "/")).await, 200);
    }

    let (svc, _) = one(PolicyConfig::builder("tenant")
        .rate(1)
        .burst(1)
        .key(KeySource::custom(|r: &RequestInfo<'_>| {
            r.uri.path().split('/').nth(1).map(str::to_owned)
        })));
    assert_eq!(status(&svc, req("192.0.2.1", "/acme/x")).await, 200);
    assert_eq!(status(&svc, req("192.0.2.2", "/acme/y")).await, 429);
    assert_eq!(status(&svc, req("192.0.2.1", "/globex/x")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn route_keys_use_the_axum_route_template() {
    let config = RateLimitConfig::builder()
        .policy(
            PolicyConfig::builder("route")
                .rate(1)
                .burst(1)
                .key(KeySource::Route),
        )
        .build()
        .unwrap();
    let (layer, _) = RateLimitLayer::new(config);
    let app = axum::Router::new()
        .route("/users/{id}", axum::routing::get(|| async { "u" }))
        .route("/names", axum::routing::get(|| async { "n" }))
        .layer(layer);
    let get = |p: &str| {
        let mut r = Request::get(p).body(Body::empty()).unwrap();
        r.extensions_mut()
            .insert(PeerAddr("192.0.2.1:1".parse().unwrap()));
        r
    };
    assert_eq!(
        app.clone().oneshot(get("/users/1")).await.unwrap().status(),
        200
    );
    assert_eq!(
        app.clone().oneshot(get("/users/2")).await.unwrap().status(),
        429,
        "same template, same bucket"
    );
    assert_eq!(
        app.clone().oneshot(get("/names")).await.unwrap().status(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_clones_share_one_limit() {
    let (svc, handle) = one(PolicyConfig::builder("api")
        .rate(5)
        .burst(5)
        .key(KeySource::Global));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(req("192.0.2.1", "/")).await.unwrap().status() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(handle.policy("api").unwrap().stats().rejected, 995);
}

#[tokio::test(start_paused = true)]
async fn missing_peer_shares_one_bucket() {
    let (svc, _) = one(PolicyConfig::builder("api").rate(1).burst(1));
    let bare = || Request::get("/").body(Body::empty()).unwrap();
    assert_eq!(status(&svc, bare()).await, 200);
    assert_eq!(status(&svc, bare()).await, 429);
}

#[tokio::test(start_paused = true)]
async fn component_registers_reports_and_runs_actions() {
    let (svc, handle) = one(PolicyConfig::builder("api").rate(1).burst(1));
    let registry = Registry::new();
    handle.register(&registry).unwrap();
    let c = registry.get_kind(ComponentKind::Limit, "api").unwrap();
    assert_eq!(c.kind(), ComponentKind::Limit);
    status(&svc, req("192.0.2.1", "/")).await;
    status(&svc, req("192.0.2.1", "/")).await;
    let stats = c.stats();
    assert_eq!(stats["allowed"], 1);
    assert_eq!(stats["rejected"], 1);
    assert_eq!(stats["keys"], 1);
    assert_eq!(stats["store"], "local");
    assert_eq!(stats["key"], "client_ip");
    assert!(stats["capacity"].as_u64().unwrap() <= DEFAULT_MAX_KEYS as u64);
    assert_eq!(c.actions(), ["purge_idle", "reset"]);
    assert_eq!(c.action("purge_idle", &Value::Null).unwrap()["freed"], 0);
    advance(Duration::from_secs(5)).await;
    assert_eq!(c.action("purge_idle", &Value::Null).unwrap()["freed"], 1);
    status(&svc, req("192.0.2.1", "/")).await;
    assert_eq!(c.action("reset", &Value::Null).unwrap()["freed"], 1);
    assert_eq!(
        status(&svc, req("192.0.2.1", "/")).await,
        200,
        "reset gives a full burst"
    );
    assert!(c.action("explode", &Value::Null).is_err());
    assert_eq!(handle.components().len(), 1);
}

#[test]
#[cfg(unix)]
fn shm_policies_share_state_between_layers() {
    let zone = ShmZone::create_anonymous("layers", 700).unwrap();
    let worker_zone = ShmZone::attach(zone.inheritable_fd().unwrap()).unwrap();
    let build = |zone: Arc<ShmZone>| {
        RateLimitConfig::builder()
            .policy(
                PolicyConfig::builder("api")
                    .rate(1)
                    .per(Duration::from_secs(3600))
                    .burst(3)
                    .shm(zone),
            )
            .build()
            .unwrap()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, _) = service(build(zone));
        let (b, hb) = service(build(worker_zone));
        assert_eq!(status(&a, req("192.0.2.1", "/")).await, 200);
        assert_eq!(status(&b, req("192.0.2.1", "/")).await, 200);
        assert_eq!(status(&a, req("192.0.2.1", "/")).await, 200);
        assert_eq!(status(&b, req("192.0.2.1", "/")).await, 429);
        assert_eq!(hb.policy("api").unwrap().stats().store, "shm");
    });
    let other = ShmZone::create_anonymous("owned", 70).unwrap();
    other.store("someone-else").unwrap();
    let err = RateLimitConfig::builder()
        .policy(PolicyConfig::builder("api").shm(other))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::ShmZone { .. }), "{err}");
}

#[test]
fn poll_ready_is_forwarded() {
    let (layer, _) = RateLimitLayer::new(RateLimitConfig::builder().build().unwrap());
    let mut svc = layer.layer(NeverReady);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_pending());
}

/// A service that is never ready.
#[derive(Clone)]
struct NeverReady;

impl Service<Request<Body>> for NeverReady {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Pending
    }
    fn call(&mut self, r: Request<Body>) -> Ready {
        ok(r)
    }
}
