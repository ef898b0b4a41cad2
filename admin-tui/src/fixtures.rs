//! Deterministic snapshots for tests.

use palisade::control::model::{
    AuditEntry, LatencyWindow, SCHEMA_VERSION, ServerInfo, Snapshot, StatusCounts, Traffic,
    WorkerInfo,
};
use palisade::control::{ComponentKind, ComponentSnapshot};
use serde_json::{Value, json};

use crate::connection::{ConnEvent, Transport};
use crate::state::{Msg, State};

/// Wall clock of the first fixture snapshot: 2026-01-02 12:00:00 UTC.
pub(crate) const T0: u64 = 1_767_355_200_000;

fn comp(
    kind: ComponentKind,
    name: &str,
    version: u64,
    settings: Value,
    stats: Value,
    actions: &[&str],
) -> ComponentSnapshot {
    ComponentSnapshot {
        name: name.into(),
        kind,
        version,
        settings,
        stats,
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
    }
}

/// A single (not keyed) circuit breaker as the layer reports it.
#[allow(clippy::too_many_arguments, reason = "one fixture row")]
fn breaker(
    name: &str,
    version: u64,
    state: &str,
    failure_rate: f64,
    slow_call_rate: f64,
    calls: u64,
    retry_after_ms: Option<u64>,
    rejected: u64,
    transitions: u64,
) -> ComponentSnapshot {
    comp(
        ComponentKind::Breaker,
        name,
        version,
        json!({
            "failure_rate_threshold": 50.0, "slow_call_rate_threshold": 100.0,
            "slow_call_duration_ms": null, "minimum_calls": 20, "window_kind": "count",
            "window_size": 100, "wait_in_open_ms": 10_000, "half_open_max_calls": 10,
            "max_wait_in_half_open_ms": null, "call_timeout_ms": null
        }),
        json!({
            "keyed": false,
            "state": state,
            "window": {
                "kind": "count", "size": 100, "calls": calls,
                "failures": 0, "slow_calls": 0,
                "failure_rate": failure_rate, "slow_call_rate": slow_call_rate
            },
            "retry_after_ms": retry_after_ms,
            "half_open": null,
            "last_transition": null,
            "rejected": rejected,
            "transitions": transitions,
            "calls": {"success": calls * 10, "failure": calls, "slow_success": 0, "slow_failure": 0, "ignored": 0, "cancelled": 0},
            "timeouts": 0,
            "stale": 0
        }),
        &["force_open", "force_closed", "reset"],
    )
}

/// The `i`-th snapshot of a busy two-worker server, one per second. Counters grow linearly
/// with `i` so rates are exact: 500 req/s total (worker 0: 300, worker 1: 200).
pub(crate) fn snapshot(i: u64) -> Snapshot {
    let wave = |base: f64, amp: f64| {
        #[allow(clippy::cast_precision_loss)]
        let x = (i % 20) as f64;
        base + amp * (x - 10.0).abs() / 10.0
    };
    Snapshot {
        schema: SCHEMA_VERSION,
        seq: 100 + i,
        taken_at_ms: T0 + i * 1000,
        server: ServerInfo {
            name: "palisade".into(),
            version: "0.1.0".into(),
            pid: 4242,
            mode: "supervisor".into(),
            uptime_secs: 7380 + i,
            listen: Some("0.0.0.0:8080".into()),
        },
        workers: vec![
            WorkerInfo {
                id: 0,
                pid: 4243,
                state: "ready".into(),
                uptime_secs: 7370 + i,
                requests: 1_000_000 + 300 * i,
                in_flight: 3,
                rss_bytes: 25_165_824,
                restarts: 0,
                loop_lag_ms: 0.31,
                p99_ms: Some(12.5),
            },
            WorkerInfo {
                id: 1,
                pid: 4250,
                state: "ready".into(),
                uptime_secs: 300 + i,
                requests: 50_000 + 200 * i,
                in_flight: 1,
                rss_bytes: 23_068_672,
                restarts: 1,
                loop_lag_ms: 0.22,
                p99_ms: Some(9.1),
            },
        ],
        traffic: Traffic {
            requests_total: 1_050_000 + 500 * i,
            in_flight: 4,
            status: StatusCounts {
                informational: 0,
                success: 1_000_000 + 480 * i,
                redirection: 10_000,
                client_error: 30_000 + 15 * i,
                server_error: 10_000 + 5 * i,
            },
            latency: vec![
                LatencyWindow {
                    window_secs: 10,
                    count: 5000,
                    p50_ms: wave(1.2, 0.6),
                    p90_ms: wave(3.4, 1.5),
                    p99_ms: wave(12.5, 6.0),
                    p999_ms: 40.0,
                    max_ms: 81.0,
                },
                LatencyWindow {
                    window_secs: 60,
                    count: 30_000,
                    p50_ms: 1.1,
                    p90_ms: 3.1,
                    p99_ms: 11.0,
                    p999_ms: 35.0,
                    max_ms: 120.0,
                },
            ],
        },
        // The shapes the real layers report (see `palisade::rate_limit`, `circuit_breaker`,
        // `cache`): the panels are tested against what a server sends.
        limits: vec![
            comp(
                ComponentKind::Limit,
                "api",
                3,
                json!({"rate": 100, "per": "1s", "burst": 20, "mode": "enforce"}),
                json!({
                    "allowed": 900_000 + 450 * i, "rejected": 2_000 + 12 * i, "shadow_rejected": 0,
                    "keys": 120, "capacity": 100_000, "store": "shm", "errors": 0, "fallbacks": 0,
                    "evictions_idle": 0, "evictions_pressure": 0, "purged": 0,
                    "key": "client_ip", "paths": ["/api/*"]
                }),
                &[],
            ),
            comp(
                ComponentKind::Limit,
                "login",
                1,
                json!({"rate": 5, "per": "1m", "burst": 5, "mode": "shadow"}),
                json!({
                    "allowed": 3_000 + 2 * i, "rejected": 0, "shadow_rejected": 70 + i,
                    "keys": 40, "store": "redis", "errors": 3, "fallbacks": 3 + i,
                    "key": "client_ip", "paths": ["/login"]
                }),
                &[],
            ),
        ],
        breakers: vec![
            breaker(
                "payments",
                2,
                "open",
                75.0,
                10.0,
                100,
                Some(7_400),
                5_000 + 3 * i,
                7,
            ),
            breaker("search", 1, "half_open", 30.0, 0.0, 40, None, 800 + i, 3),
            breaker("users-db", 1, "closed", 0.0, 0.0, 100, None, 0, 0),
        ],
        caches: vec![comp(
            ComponentKind::Cache,
            "users",
            1,
            json!({
                "ttl_ms": 30_000, "l1_ttl_ms": 5_000, "l1_capacity_bytes": 16_777_216,
                "l1_eviction": "tiny_lfu", "max_stale_ms": 300_000, "negative_ttl_ms": 5_000,
                "jitter_ms": 2_000, "soft_timeout_ms": 250, "hard_timeout_ms": 5_000,
                "name": "users", "namespace": "users", "redis": null
            }),
            json!({
                "l1": {
                    "hits": 9_000 + 90 * i, "misses": 1_000 + 10 * i, "entries": 800,
                    "evictions": 12, "expirations": 3, "weighted_bytes": 3_500_000,
                    "capacity_bytes": 16_777_216
                },
                "l2": {
                    "hits": 700 + 7 * i, "misses": 300 + 3 * i, "errors": 0, "timeouts": 0,
                    "corrupt": 0, "skipped_open": 0, "writes": 1_000, "oversize": 0,
                    "breaker": "closed", "pending_invalidations": 0,
                    "backplane": {"enabled": true, "connected": true, "received": 4, "published": 9, "reconnects": 0}
                },
                "loads": {
                    "total": 1_000, "ok": 998, "errors": 2, "timeouts": 0, "coalesced": 40,
                    "bypassed": 0, "latency_mean_ms": 2.5, "latency_max_ms": 40.0, "in_flight": 2
                },
                "negative_hits": 0, "stale_served": 0, "fail_safe": 0, "soft_timeouts": 0
            }),
            &["invalidate", "invalidate_prefix", "flush"],
        )],
        audit: vec![
            AuditEntry {
                seq: 1,
                at_ms: T0 - 3_600_000,
                actor: "admin".into(),
                action: "update".into(),
                target: "limits/api".into(),
                before: json!({"rate": 50, "per": "1s", "burst": 20, "mode": "enforce"}),
                after: json!({"rate": 100, "per": "1s", "burst": 20, "mode": "enforce"}),
                ..AuditEntry::default()
            },
            AuditEntry {
                seq: 2,
                at_ms: T0 - 60_000,
                actor: "admin".into(),
                action: "action:force_open".into(),
                target: "breakers/payments".into(),
                details: json!({"ttl_secs": 300}),
                ..AuditEntry::default()
            },
        ],
    }
}

/// A state that received `n` snapshots one second apart over a live stream; the clock is at
/// the last one.
pub(crate) fn live_state(n: u64) -> State {
    let mut state = State::new("http://127.0.0.1:9901", T0).with_utc_offset(Some(0));
    state.update(Msg::Conn {
        event: ConnEvent::Connected {
            transport: Transport::Stream,
        },
        at_ms: T0,
    });
    for i in 0..n {
        state.update(Msg::Conn {
            event: ConnEvent::Snapshot(Box::new(snapshot(i))),
            at_ms: T0 + i * 1000,
        });
    }
    state.update(Msg::Tick {
        now_ms: T0 + n.saturating_sub(1) * 1000,
    });
    state
}
