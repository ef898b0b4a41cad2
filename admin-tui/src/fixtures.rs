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
        limits: vec![
            comp(
                ComponentKind::Limit,
                "api",
                3,
                json!({"rate": 100, "per_secs": 1, "burst": 20, "mode": "enforce"}),
                json!({"allowed": 900_000 + 450 * i, "rejected": 2_000 + 12 * i, "shadow_rejected": 0, "keys": 120}),
                &[],
            ),
            comp(
                ComponentKind::Limit,
                "login",
                1,
                json!({"rate": 5, "per_secs": 60, "burst": 5, "mode": "shadow"}),
                json!({"allowed": 3_000 + 2 * i, "rejected": 0, "shadow_rejected": 70 + i, "keys": 40}),
                &[],
            ),
        ],
        breakers: vec![
            comp(
                ComponentKind::Breaker,
                "payments",
                2,
                json!({"failure_threshold": 0.5, "min_calls": 20, "open_secs": 10}),
                json!({"state": "open", "failure_rate": 0.75, "calls": 5_000 + 3 * i, "transitions": 7}),
                &["force_open", "force_closed", "reset"],
            ),
            comp(
                ComponentKind::Breaker,
                "search",
                1,
                json!({"failure_threshold": 0.5, "min_calls": 20, "open_secs": 10}),
                json!({"state": "half_open", "failure_rate": 0.3, "calls": 800 + i, "transitions": 3}),
                &["force_open", "force_closed", "reset"],
            ),
            comp(
                ComponentKind::Breaker,
                "users-db",
                1,
                json!({"failure_threshold": 0.5, "min_calls": 20, "open_secs": 10}),
                json!({"state": "closed", "failure_rate": 0.0, "calls": 90_000 + 40 * i, "transitions": 0}),
                &["force_open", "force_closed", "reset"],
            ),
        ],
        caches: vec![comp(
            ComponentKind::Cache,
            "users",
            1,
            json!({"ttl_secs": 60, "max_entries": 10_000}),
            json!({
                "l1": {"hits": 9_000 + 90 * i, "misses": 1_000 + 10 * i, "entries": 800, "evictions": 12},
                "l2": {"hits": 700 + 7 * i, "misses": 300 + 3 * i, "errors": 0}
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
                before: json!({"rate": 50, "per_secs": 1, "burst": 20, "mode": "enforce"}),
                after: json!({"rate": 100, "per_secs": 1, "burst": 20, "mode": "enforce"}),
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
