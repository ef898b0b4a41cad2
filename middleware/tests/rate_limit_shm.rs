//! Two real processes share one shared-memory zone and together admit exactly the limit.
//!
//! The test re-executes its own binary: the child runs only `shm_child_worker`, which is a no-op
//! unless the parent set `PALISADE_SHM_CHILD_FD`.
#![cfg(all(unix, feature = "rate-limit"))]

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use palisade::rate_limit::{PeerAddr, PolicyConfig, RateLimitConfig, RateLimitLayer, ShmZone};
use tower::{Layer, ServiceExt};

const CHILD_FD: &str = "PALISADE_SHM_CHILD_FD";
const START_AT: &str = "PALISADE_SHM_START_AT";
/// Distinct client IPs, burst per client, requests per process.
const CLIENTS: u32 = 100;
const BURST: u32 = 200;
const REQUESTS: u32 = 40_000;

/// Sends `REQUESTS` requests (round-robin over `CLIENTS` clients) through a layer whose policy
/// lives in `zone`, starting when the shared clock reaches `start_at`; returns how many passed.
fn run_worker(zone: Arc<ShmZone>, start_at: u64) -> u32 {
    let config = RateLimitConfig::builder()
        .policy(
            PolicyConfig::builder("api")
                .rate(1)
                .per(Duration::from_secs(3600))
                .burst(BURST)
                .shm(zone),
        )
        .build()
        .unwrap();
    let (layer, _handle) = RateLimitLayer::new(config);
    let svc = layer.layer(tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    while ShmZone::clock_ns() < start_at {
        std::hint::spin_loop();
    }
    rt.block_on(async {
        let mut allowed = 0;
        for i in 0..REQUESTS {
            let mut req = Request::new(Body::empty());
            let ip = std::net::Ipv4Addr::from(0xc000_0200 + (i % CLIENTS));
            req.extensions_mut().insert(PeerAddr((ip, 40_000).into()));
            let res = svc.clone().oneshot(req).await.unwrap();
            match res.status().as_u16() {
                200 => allowed += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        allowed
    })
}

/// The child half of `two_processes_enforce_one_exact_limit` (no-op in a normal test run).
#[test]
fn shm_child_worker() {
    let Ok(fd) = std::env::var(CHILD_FD) else {
        return;
    };
    let start_at: u64 = std::env::var(START_AT).unwrap().parse().unwrap();
    let zone = ShmZone::attach_path(format!("/dev/fd/{fd}")).unwrap();
    let allowed = run_worker(zone, start_at);
    println!("allowed={allowed}");
}

#[test]
fn two_processes_enforce_one_exact_limit() {
    let zone = ShmZone::create_anonymous("two-processes", 70_000).unwrap();
    let inherited = zone.inheritable_fd().unwrap();
    let start_at = ShmZone::clock_ns() + 500_000_000;
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "shm_child_worker",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_FD, inherited.as_raw_fd().to_string())
        .env(START_AT, start_at.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    drop(inherited);
    let parent_allowed = run_worker(Arc::clone(&zone), start_at);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {:?}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let child_allowed: u32 = stdout
        .lines()
        .find_map(|l| l.split_once("allowed=").map(|(_, n)| n.trim()))
        .unwrap_or_else(|| panic!("no result from the child: {stdout}"))
        .parse()
        .unwrap();
    assert!(
        parent_allowed > 0 && child_allowed > 0,
        "both processes took part: parent {parent_allowed}, child {child_allowed}"
    );
    assert_eq!(
        parent_allowed + child_allowed,
        CLIENTS * BURST,
        "parent {parent_allowed} + child {child_allowed}"
    );
    assert_eq!(zone.stats().keys, u64::from(CLIENTS));
    eprintln!("parent admitted {parent_allowed}, child {child_allowed}");
}
