//! Live statistics across "workers": merging snapshots equals recording everything in one
//! recorder (exact counts, percentiles within HDR precision), including over the wire.
#![cfg(feature = "observe")]

use std::time::Duration;

use palisade::observe::{StatsConfig, StatsRecorder, StatsSnapshot};
use proptest::prelude::*;

const ROUTES: [&str; 4] = ["/users/{id}", "/users", "/names", "/slow"];
const STATUSES: [u16; 6] = [200, 201, 304, 404, 429, 503];

/// Deterministic, long-tailed latencies from 3 µs to about 20 s.
fn samples(seed: u64, n: usize) -> Vec<(usize, u16, Duration)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            let exp = rng.f64() * 7.0; // 10^0 .. 10^7 µs
            let us = (3.0 * 10f64.powf(exp)) as u64;
            (
                rng.usize(..ROUTES.len()),
                STATUSES[rng.usize(..STATUSES.len())],
                Duration::from_micros(us.min(20_000_000)),
            )
        })
        .collect()
}

fn recorder() -> StatsRecorder {
    StatsRecorder::new(StatsConfig::builder().shards(4).build().unwrap())
}

fn exact_quantile(sorted_us: &[u64], q: f64) -> u64 {
    // HdrHistogram's definition: the smallest value with at least q of the samples at or below.
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1]
}

#[test]
fn merging_two_workers_equals_one_recorder() {
    let all = samples(7, 50_000);
    let (a_part, b_part) = all.split_at(18_000);

    let single = recorder();
    for (r, s, d) in &all {
        single.record(ROUTES[*r], *s, *d);
    }
    // Each worker records from its own threads, like a real worker's runtime.
    let record_in_threads = |part: &[(usize, u16, Duration)]| {
        let rec = recorder();
        std::thread::scope(|scope| {
            for chunk in part.chunks(part.len().div_ceil(3)) {
                let rec = rec.clone();
                scope.spawn(move || {
                    for (r, s, d) in chunk {
                        rec.record(ROUTES[*r], *s, *d);
                    }
                });
            }
        });
        rec
    };
    let a = record_in_threads(a_part);
    let b = record_in_threads(b_part);

    // Over the wire, as heartbeats do.
    let a_json = serde_json::to_string(&a.snapshot()).unwrap();
    let b_json = serde_json::to_string(&b.snapshot()).unwrap();
    let mut merged: StatsSnapshot = serde_json::from_str(&a_json).unwrap();
    merged
        .merge(&serde_json::from_str(&b_json).unwrap())
        .unwrap();
    let one = single.snapshot();

    // Exact counts.
    assert_eq!(merged.requests(), 50_000);
    assert_eq!(merged.requests(), one.requests());
    assert_eq!(merged.status, one.status);
    assert_eq!(merged.routes, one.routes);
    assert_eq!(merged.latency.count(), one.latency.count());
    // Bucket-for-bucket the same histogram, so every percentile is identical.
    assert_eq!(merged.latency, one.latency);
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        assert_eq!(merged.latency.quantile(q), one.latency.quantile(q), "q={q}");
    }

    // And within HDR precision (3 significant digits) of the exact percentiles.
    let mut sorted: Vec<u64> = all.iter().map(|(_, _, d)| d.as_micros() as u64).collect();
    sorted.sort_unstable();
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        let exact = exact_quantile(&sorted, q) as f64;
        let got = merged.latency.quantile(q).as_micros() as f64;
        assert!(
            (got - exact).abs() <= exact * 1e-3 + 1.0,
            "q={q}: merged {got} µs vs exact {exact} µs"
        );
    }

    // Averaging the workers' p99 would not give this; the merged one is the true p99.
    let window = merged.latency_window(60);
    assert_eq!(window.count, 50_000);
    assert!(window.p50_ms <= window.p90_ms && window.p90_ms <= window.p99_ms);
    assert!(window.p99_ms <= window.p999_ms && window.p999_ms <= window.max_ms);
}

#[test]
fn a_supervisor_absorbing_worker_deltas_sees_what_one_recorder_sees() {
    let all = samples(11, 20_000);
    let single = recorder();
    let workers = [recorder(), recorder(), recorder()];
    let supervisor = recorder();
    for (i, chunk) in all.chunks(1_000).enumerate() {
        for (r, s, d) in chunk {
            single.record(ROUTES[*r], *s, *d);
            workers[i % 3].record(ROUTES[*r], *s, *d);
        }
        // A heartbeat from one worker per tick.
        let delta = workers[i % 3].take_delta();
        let wire = serde_json::to_vec(&delta).unwrap();
        supervisor
            .absorb(&serde_json::from_slice(&wire).unwrap())
            .unwrap();
    }
    for w in &workers {
        supervisor.absorb(&w.take_delta()).unwrap();
    }
    let (got, want) = (supervisor.traffic(), single.traffic());
    assert_eq!(got.requests_total, 20_000);
    assert_eq!(got.status, want.status);
    assert_eq!(got.latency, want.latency);
    assert_eq!(supervisor.snapshot().latency, single.snapshot().latency);
    // Deltas were drained: nothing is counted twice.
    assert!(workers.iter().all(|w| w.take_delta().requests() == 0));
}

#[test]
fn snapshots_of_different_versions_do_not_merge() {
    let mut a = StatsSnapshot::default();
    let b = StatsSnapshot {
        version: 2,
        ..StatsSnapshot::default()
    };
    let err = a.merge(&b).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn merge_is_exact_for_any_split(
        us in proptest::collection::vec(0u64..70_000_000, 1..400),
        split in 0usize..400,
    ) {
        let split = split.min(us.len());
        let mut whole = StatsSnapshot::default();
        let mut left = StatsSnapshot::default();
        let mut right = StatsSnapshot::default();
        for (i, v) in us.iter().enumerate() {
            let d = Duration::from_micros(*v);
            whole.record("/r", 200, d);
            if i < split { left.record("/r", 200, d) } else { right.record("/r", 200, d) }
        }
        left.merge(&right).unwrap();
        prop_assert_eq!(left.requests(), us.len() as u64);
        prop_assert_eq!(&left.latency, &whole.latency);
        prop_assert_eq!(left.latency.max(), whole.latency.max());
    }
}
