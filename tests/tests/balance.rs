//! End-to-end tests of worker load balance: long-lived keep-alive connections opened in one
//! burst against `--workers 2` are shared so that each worker serves its fair share of the
//! requests, as the supervisor's admin snapshot counts them.
//!
//! Without balancing, the first worker the kernel wakes drains the whole accept queue and keeps
//! every connection for its lifetime: one worker serves everything, the other nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::Method;
use palisade_tests::http::Client;
use palisade_tests::load::{
    Outcome, admin_counts, connect, exchange, parse_worker, supervisor, wait_all_serving,
    workers_of,
};

/// Requests sent over all connections of a test, back to back on each connection.
///
/// Every connection sends the same number, so each worker's share of the requests is decided by
/// how many connections it holds, not by how much CPU the scheduler of a loaded, shared test
/// machine happens to give each worker process (a time-bounded load measures the latter too).
const REQUESTS: usize = 6400;

/// Opens `connections` keep-alive connections at once against two workers, sends
/// `REQUESTS / connections` requests on each, and returns how many connections each worker held
/// and each worker's share of the requests in the admin snapshot (by pid).
async fn shares_with(connections: usize) -> (BTreeMap<u32, usize>, BTreeMap<u32, f64>) {
    let server = supervisor(2, &[]);
    let pids = workers_of(server.pid());
    assert_eq!(
        wait_all_serving(server.addr, &pids, Duration::from_secs(20))
            .await
            .len(),
        2,
        "both workers serve"
    );
    let client = Client::new();
    let before = admin_counts(&server, &client).await.expect("snapshot");

    // All connections first (one burst, as a load generator opens them), then the load.
    let connecting: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connect(server.addr)))
        .collect();
    let mut senders = Vec::with_capacity(connections);
    for c in connecting {
        senders.push(
            c.await
                .expect("connect task")
                .expect("every connection opens"),
        );
    }
    // Which worker holds each connection: its first request asks.
    let mut holders: BTreeMap<u32, usize> = BTreeMap::new();
    for sender in &mut senders {
        match exchange(sender, Method::GET, "/health/worker", false).await {
            Outcome::Done {
                status: 200, body, ..
            } => {
                let pid = parse_worker(&body).expect("a /health/worker body").pid;
                *holders.entry(pid).or_default() += 1;
            }
            other => panic!("request failed on a keep-alive connection: {other:?}"),
        }
    }
    let per_connection = REQUESTS / connections;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                let mut ok = 0u64;
                for _ in 0..per_connection {
                    match exchange(&mut sender, Method::GET, "/plaintext", false).await {
                        Outcome::Done { status: 200, .. } => ok += 1,
                        other => panic!("request failed on a keep-alive connection: {other:?}"),
                    }
                }
                ok
            })
        })
        .collect();
    let mut sent = connections as u64;
    for task in tasks {
        sent += task.await.expect("load task");
    }
    assert!(sent > 0);

    // The snapshot counts what the workers' heartbeats reported: wait for all of it.
    let expected = before.total + sent;
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = admin_counts(&server, &client).await.expect("snapshot");
        if counts.total >= expected {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot counts {} of {expected} requests",
            counts.total
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let shares = pids
        .iter()
        .map(|pid| {
            let served = counts.per_pid.get(pid).copied().unwrap_or(0)
                - before.per_pid.get(pid).copied().unwrap_or(0);
            (*pid, served as f64 / sent as f64)
        })
        .collect();
    (holders, shares)
}

fn assert_fair((holders, shares): &(BTreeMap<u32, usize>, BTreeMap<u32, f64>)) {
    assert_eq!(shares.len(), 2, "two workers: {shares:?}");
    let held: Vec<usize> = holders.values().copied().collect();
    assert!(
        held.len() == 2 && held[0].abs_diff(held[1]) <= 1,
        "connections per worker: {holders:?}"
    );
    for (pid, share) in shares {
        assert!(
            (0.40..=0.60).contains(share),
            "worker {pid} served {:.1} % of the requests (shares {shares:?}, connections {holders:?})",
            share * 100.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_keep_alive_connections_are_shared_by_two_workers() {
    assert_fair(&shares_with(8).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_keep_alive_connections_are_shared_by_two_workers() {
    assert_fair(&shares_with(64).await);
}
