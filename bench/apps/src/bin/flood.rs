//! `bench-flood palisade|governor [KEYS]`: sends KEYS (default 1 000 000) requests, each from a
//! different client IP, through a per-client-IP rate-limit layer in this process, then prints one
//! JSON line: keys tracked by the limiter, its bound, and this process's RSS before and after.
//!
//! - `palisade`: `palisade::rate_limit::RateLimitLayer`, one `client_ip` policy with the default
//!   local store (bounded at `DEFAULT_MAX_KEYS`).
//! - `governor`: `tower_governor::GovernorLayer` with its default keyed store (a dashmap that
//!   grows until `retain_recent` is called; the test does not call it, as between two sweeps).
//!
//! Run each mode in its own process so the RSS numbers are not mixed.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, Response};
use palisade::rate_limit::{PeerAddr, PolicyConfig, RateLimitConfig, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn peer(i: u32) -> SocketAddr {
    // 10.0.0.0/8 and up: 16.7 M distinct addresses before wrapping.
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000_u32.wrapping_add(i))),
        40_000,
    )
}

async fn ok(_req: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::empty()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "palisade".into());
    let keys: u32 = args
        .next()
        .map_or(1_000_000, |k| k.parse().expect("KEYS: a number"));
    let rss_before = rss_kb();
    let start = Instant::now();
    let mut allowed = 0u64;
    // RSS is read inside each arm, while the limiter is still alive.
    let (tracked, capacity, rss_after) = match mode.as_str() {
        "palisade" => {
            let config = RateLimitConfig::builder()
                .policy(PolicyConfig::builder("per_ip").rate(1_000).burst(100))
                .build()
                .expect("valid config");
            let (layer, handle) = RateLimitLayer::new(config);
            let mut svc = layer.layer(tower::service_fn(ok));
            for i in 0..keys {
                let mut req = Request::new(Body::empty());
                req.extensions_mut().insert(PeerAddr(peer(i)));
                let res = svc.ready().await.unwrap().call(req).await.unwrap();
                allowed += u64::from(res.status().is_success());
            }
            let stats = handle.policy("per_ip").expect("policy").stats();
            (stats.store_stats.keys, stats.store_stats.capacity, rss_kb())
        }
        "governor" => {
            let config = tower_governor::governor::GovernorConfigBuilder::default()
                .per_millisecond(1)
                .burst_size(100)
                .finish()
                .expect("valid config");
            let limiter = config.limiter().clone();
            let mut svc = tower_governor::GovernorLayer::new(config).layer(tower::service_fn(ok));
            for i in 0..keys {
                let mut req = Request::new(Body::empty());
                req.extensions_mut().insert(ConnectInfo(peer(i)));
                let res = svc.ready().await.unwrap().call(req).await.unwrap();
                allowed += u64::from(res.status().is_success());
            }
            (limiter.len() as u64, 0, rss_kb())
        }
        other => panic!("unknown mode {other:?}: use palisade or governor"),
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"impl\":\"{mode}\",\"keys_sent\":{keys},\"allowed\":{allowed},\"keys_tracked\":{tracked},\
         \"capacity\":{capacity},\"rss_before_kb\":{rss_before},\"rss_after_kb\":{},\
         \"secs\":{secs:.3},\"ns_per_request\":{:.0}}}",
        rss_after,
        secs * 1e9 / f64::from(keys.max(1)),
    );
}
