//! End-to-end tests of the supervisor: a real `palisade` supervisor with real worker processes,
//! real signals and real sockets, loopback only.
//!
//! Every request the in-test load generator sends is accounted for: it either completed with a
//! status (ok) or failed (with the reason). A request that hyper hands back *unsent* (the
//! connection was already closed before a byte of it was written) is not a lost request: it is
//! counted separately and sent again on a new connection, as any HTTP client does.
//!
//! Worker pids are the supervisor's live (non-zombie) children, read from `/proc`. Loops are
//! bounded; timeouts are generous (a loaded 2-core machine), except the bounds the issue asks
//! for. Only processes the test started are signalled, by pid.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use nix::sys::signal::Signal;
use palisade_tests::http::Client;
use palisade_tests::load::{
    BASE, CountsMonitor, Kind, Load, Outcome, Record, Sender, admin_counts, connect, eventually,
    exchange, parse_worker, probe, replacement_for, status_of, supervisor, temp_dir,
    wait_all_serving, wait_serving, workers_of,
};
use palisade_tests::server::ServerProcess;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_come_up_and_requests_spread() {
    let server = supervisor(3, &[]);
    let pids = workers_of(server.pid());
    assert_eq!(pids.len(), 3);
    assert!(!pids.contains(&server.pid()));

    let seen = wait_all_serving(server.addr, &pids, Duration::from_secs(20)).await;
    assert_eq!(
        seen.keys().copied().collect::<BTreeSet<_>>(),
        pids,
        "every worker answers, and only workers answer"
    );
    let ids: BTreeSet<u32> = seen.values().map(|h| h.worker_id).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2]), "one worker per slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_is_replaced_quickly_and_only_its_requests_fail() {
    let server = supervisor(2, &[]);
    let monitor = CountsMonitor::start(&server);
    let load = Load::start(server.addr, 4, 2, 0);
    assert!(load.progress(200, Duration::from_secs(20)).await);
    let before = workers_of(server.pid());
    let victim = *before.iter().next().expect("a worker");
    let survivor = *before.iter().nth(1).expect("two workers");

    let killed_at = Instant::now();
    palisade_tests::kill_pid(victim, Signal::SIGKILL);
    let signalled = Instant::now();

    let replacement = replacement_for(server.pid(), &before, victim, None, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no replacement for worker {victim}"));
    assert!(
        wait_serving(server.addr, replacement, Duration::from_secs(10)).await,
        "replacement {replacement} never answered"
    );
    let ready_after = killed_at.elapsed();
    eprintln!("SIGKILL → replacement serving: {ready_after:?}");
    assert!(
        ready_after < Duration::from_secs(1),
        "replacement took {ready_after:?}"
    );

    // The load keeps running on both workers afterwards.
    assert!(load.progress(200, Duration::from_secs(20)).await);
    let report = load.stop().await;

    // Only requests that were on the killed worker may fail: those on a connection known to be
    // on it, and those on a connection opened before the kill whose worker was not known yet.
    // Each such task fails at most once (its next connection goes to a live worker).
    let on_victim =
        |r: &Record| r.conn_pid == Some(victim) || (r.conn_pid.is_none() && r.start <= signalled);
    let failures = report.failures();
    for f in &failures {
        assert!(
            on_victim(f),
            "a request that was not on the killed worker failed:\n{}",
            report.describe_failures()
        );
    }
    let attached = report
        .records
        .iter()
        .filter(|r| r.end >= killed_at && on_victim(r))
        .map(|r| r.task)
        .collect::<BTreeSet<_>>()
        .len();
    assert!(
        failures.len() <= attached,
        "{} failures, but only {attached} load tasks had a request on worker {victim}:\n{}",
        failures.len(),
        report.describe_failures()
    );
    let by_pid = report.by_pid();
    assert!(by_pid.contains_key(&survivor) && by_pid.contains_key(&replacement));
    let ids: BTreeSet<u32> = by_pid
        .values()
        .flat_map(|v| v.iter())
        .filter_map(|r| r.result.as_ref().ok().copied().flatten())
        .map(|h| h.worker_id)
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([0, 1]),
        "the replacement takes over the slot"
    );
    report.assert_counters_monotonic();
    let samples = monitor.stop_and_check().await;
    assert!(samples >= 5, "only {samples} admin snapshots");
    eprintln!(
        "kill under load: {} ok, {} failed (≤ {attached}), {} unsent-and-resent",
        report.ok(),
        failures.len(),
        report.unsent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rolling_restarts_under_load_lose_no_request() {
    let server = supervisor(2, &[]);
    let admin = Client::new();
    // Requests served before the load (readiness probes), once the heartbeats reported them.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let baseline = admin_counts(&server, &admin).await.expect("snapshot").total;
    let monitor = CountsMonitor::start(&server);
    let load = Load::start(server.addr, 4, 2, 2);
    assert!(load.progress(200, Duration::from_secs(20)).await);

    let mut rolls = Vec::new();
    let mut all_pids = workers_of(server.pid());
    for round in 1..=10 {
        let before = workers_of(server.pid());
        assert_eq!(before.len(), 2, "round {round}: {before:?}");
        let started = Instant::now();
        server.signal(Signal::SIGHUP);
        let mut after = BTreeSet::new();
        assert!(
            eventually(Duration::from_secs(30), || {
                after = workers_of(server.pid());
                after.len() == 2 && after.is_disjoint(&before)
            })
            .await,
            "round {round}: workers {before:?} were not all replaced (now {after:?})"
        );
        let took = started.elapsed();
        rolls.push((started, took));
        all_pids.extend(&after);
        // The new generation serves the load before the next roll.
        let mut served = false;
        for _ in 0..1000 {
            let seen = load.seen().await;
            if after.is_subset(&seen) {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            served,
            "round {round}: new workers {after:?} never answered"
        );
        assert!(load.progress(50, Duration::from_secs(20)).await);
    }
    assert_eq!(load.failed(), 0, "requests failed during rolling restarts");
    let report = load.stop().await;

    assert!(
        report.failures().is_empty(),
        "{} of {} requests failed during 10 rolling restarts:\n{}",
        report.failures().len(),
        report.records.len(),
        report.describe_failures()
    );
    // The load really ran during every roll.
    for (i, (start, took)) in rolls.iter().enumerate() {
        let during = report
            .records
            .iter()
            .filter(|r| r.end >= *start && r.start <= *start + *took)
            .count();
        assert!(during > 0, "no request overlapped roll {}", i + 1);
    }
    assert_eq!(all_pids.len(), 22, "2 workers + 10 × 2 replacements");
    let answered: BTreeSet<u32> = report.by_pid().keys().copied().collect();
    assert!(
        all_pids.is_subset(&answered),
        "some generation never served: {:?}",
        all_pids.difference(&answered).collect::<Vec<_>>()
    );
    report.assert_counters_monotonic();
    assert!(monitor.stop_and_check().await >= 5);

    // Every answer the clients got was counted by the supervisor, and nothing else was:
    // client-ok == server-handled, with exited workers' final counts included.
    let ok = report.ok() as u64;
    let mut handled = 0;
    for _ in 0..100 {
        handled = admin_counts(&server, &admin).await.expect("snapshot").total - baseline;
        if handled == ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handled, ok, "server-handled vs client-ok requests");

    let mut durations: Vec<Duration> = rolls.iter().map(|(_, d)| *d).collect();
    durations.sort();
    eprintln!(
        "10 rolling restarts: {} ok, 0 failed, {} unsent-and-resent; roll duration min {:?} \
         median {:?} max {:?}",
        report.ok(),
        report.unsent,
        durations[0],
        durations[durations.len() / 2],
        durations[durations.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_worker_is_killed_and_replaced() {
    let server = supervisor(2, &["--set", "workers.worker_timeout_secs=2"]);
    let before = workers_of(server.pid());

    // Find out which worker a keep-alive connection is on, then block that worker's event loop.
    let mut sender = connect(server.addr).await.expect("connect");
    let victim = match exchange(&mut sender, Method::GET, "/health/worker", false).await {
        Outcome::Done {
            status: 200, body, ..
        } => parse_worker(&body).expect("worker health").pid,
        other => panic!("{other:?}"),
    };
    let blocked_at = Instant::now();
    let block = tokio::spawn(async move {
        exchange(&mut sender, Method::GET, "/debug/block?ms=15000", false).await
    });
    // The other worker keeps serving new connections meanwhile: a blocked worker does not
    // accept, so none of them can land on it. Start once the block has surely begun.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let load = Load::start_paced(server.addr, 0, 2, 0, Duration::from_millis(5));

    let replacement = replacement_for(server.pid(), &before, victim, None, Duration::from_secs(12))
        .await
        .unwrap_or_else(|| panic!("blocked worker {victim} was not replaced"));
    let replaced_after = blocked_at.elapsed();
    // Silence is counted from the last heartbeat, which may precede the block by a heartbeat
    // interval (more on a loaded machine): well above 1 s means the timeout was honoured.
    assert!(
        replaced_after >= Duration::from_secs(1),
        "killed after {replaced_after:?}, long before workers.worker_timeout_secs (2 s)"
    );
    assert!(
        replaced_after < Duration::from_secs(10),
        "killed only after {replaced_after:?}"
    );
    match block.await.expect("block task") {
        Outcome::Done { status, .. } => panic!("the blocked request completed ({status})"),
        Outcome::Failed(_) | Outcome::Unsent(_) | Outcome::Closed(_) => {}
    }
    assert!(wait_serving(server.addr, replacement, Duration::from_secs(10)).await);
    let report = load.stop().await;
    assert!(report.ok() > 0);
    assert!(
        report.failures().is_empty(),
        "requests failed while a worker was stuck:\n{}",
        report.describe_failures()
    );
    eprintln!("stuck worker replaced {replaced_after:?} after it blocked (timeout 2 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_recycles_workers_with_jitter() {
    const MAX: u64 = 20;
    const JITTER: u64 = 500;
    let server = supervisor(
        2,
        &[
            "--set",
            "workers.max_requests=20",
            "--set",
            "workers.max_requests_jitter=500",
            "--set",
            "workers.heartbeat_interval_ms=50",
        ],
    );
    let first = workers_of(server.pid());
    let load = Load::start_paced(server.addr, 2, 0, 0, Duration::from_millis(2));
    let mut gone = BTreeSet::new();
    let mut all = first.clone();
    let enough = eventually(Duration::from_secs(150), || {
        let now = workers_of(server.pid());
        all.extend(&now);
        gone = all.difference(&now).copied().collect();
        gone.len() >= 8
    })
    .await;
    let report = load.stop().await;
    assert!(enough, "only {} workers recycled", gone.len());
    assert!(
        report.failures().is_empty(),
        "requests failed while recycling:\n{}",
        report.describe_failures()
    );
    report.assert_counters_monotonic();

    // Each recycled worker served at least max_requests, and at most max_requests + jitter plus
    // what it served between crossing its limit and its drain (a heartbeat, a tick, a spawn).
    let by_pid = report.by_pid();
    let mut served = Vec::new();
    for pid in &gone {
        let Some(recs) = by_pid.get(pid) else {
            continue;
        };
        let total = recs
            .iter()
            .filter_map(|r| r.result.as_ref().ok().copied().flatten())
            .map(|h| h.requests + 1)
            .max()
            .unwrap_or(0);
        assert!(total >= MAX, "worker {pid} recycled after {total} requests");
        assert!(
            total <= MAX + JITTER + 300,
            "worker {pid} recycled only after {total} requests"
        );
        served.push(total);
    }
    served.sort_unstable();
    assert!(
        served.len() >= 8,
        "too few recycled workers had traffic: {served:?}"
    );
    let spread = served[served.len() - 1] - served[0];
    eprintln!("requests served by recycled workers: {served:?}");
    // Without jitter every worker would recycle near 20, plus what it serves between crossing
    // its limit and its replacement being ready (tens of requests). With 0..=500 added per
    // worker, 8 limits fall within 120 of each other with probability 8 × (120/500)^7 < 0.04 %.
    assert!(spread > 120, "no jitter visible: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttin_and_ttou_change_the_worker_count() {
    let server = supervisor(2, &[]);
    let sup = server.pid();
    let count_is = |n: usize| move || workers_of(sup).len() == n;

    for (signal, want) in [(Signal::SIGTTIN, 3), (Signal::SIGTTIN, 4)] {
        server.signal(signal);
        assert!(
            eventually(Duration::from_secs(15), count_is(want)).await,
            "{signal:?}: want {want} workers, have {:?}",
            workers_of(sup)
        );
    }
    let four = workers_of(sup);
    let seen = wait_all_serving(server.addr, &four, Duration::from_secs(20)).await;
    let ids: BTreeSet<u32> = seen.values().map(|h| h.worker_id).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2, 3]));

    for want in [3, 2, 1] {
        server.signal(Signal::SIGTTOU);
        assert!(
            eventually(Duration::from_secs(15), count_is(want)).await,
            "SIGTTOU: want {want} workers, have {:?}",
            workers_of(sup)
        );
    }
    // Never below one worker.
    server.signal(Signal::SIGTTOU);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let last = workers_of(sup);
    assert_eq!(last.len(), 1, "{last:?}");
    let h = probe(server.addr).await.expect("the last worker serves");
    assert_eq!(h.worker_id, 0, "scaling down drains the highest slots");
    assert!(last.contains(&h.pid));
    assert!(
        four.contains(&h.pid),
        "scaling does not restart the remaining workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_on_sighup_keeps_the_old_workers() {
    let dir = temp_dir("reload");
    let file = dir.join("palisade.toml");
    let valid = "[workers]\ncount = 2\nheartbeat_interval_ms = 200\n";
    std::fs::write(&file, valid).expect("write config");
    let mut server = ServerProcess::builder()
        .args(BASE.iter().copied())
        .args(["--config", file.to_str().expect("utf-8 path")])
        .spawn();
    let sup = server.pid();
    assert!(eventually(Duration::from_secs(20), || workers_of(sup).len() == 2).await);
    let before = workers_of(sup);
    let load = Load::start_paced(server.addr, 2, 1, 0, Duration::from_millis(2));
    assert!(load.progress(50, Duration::from_secs(20)).await);

    std::fs::write(&file, "[workers\ncount = \"two\"\n").expect("write config");
    server.signal(Signal::SIGHUP);
    // Nothing may change: give the supervisor ample time to (not) act.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        workers_of(sup),
        before,
        "workers changed on an invalid config"
    );
    assert!(server.try_wait().is_none(), "the supervisor exited");
    assert!(load.progress(50, Duration::from_secs(20)).await);

    // A worker started after the refused reload (here: replacing a crashed one) runs the
    // configuration the supervisor still holds, not the broken file.
    let victim = *before.iter().next().expect("a worker");
    palisade_tests::kill_pid(victim, Signal::SIGKILL);
    let replacement = replacement_for(sup, &before, victim, Some(2), Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no replacement for {victim} after a refused reload: {:?}",
                workers_of(sup)
            )
        });
    assert!(
        wait_serving(server.addr, replacement, Duration::from_secs(10)).await,
        "the replacement does not serve"
    );
    let after_crash = workers_of(sup);

    // A valid file is picked up by the next SIGHUP: three new workers.
    std::fs::write(&file, valid.replace("count = 2", "count = 3")).expect("write config");
    server.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(30), || {
            let now = workers_of(sup);
            now.len() == 3 && now.is_disjoint(&after_crash)
        })
        .await,
        "valid reload not applied: {:?}",
        workers_of(sup)
    );
    let report = load.stop().await;
    // Only the killed worker's requests may have failed (each task at most once).
    let failures = report.failures();
    assert!(
        failures.len() <= 3
            && failures
                .iter()
                .all(|f| f.kind == Kind::NewConnection || f.conn_pid == Some(victim)),
        "{}",
        report.describe_failures()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_100_slow_requests_and_exits_zero() {
    const DRAIN_DELAY: Duration = Duration::from_millis(1000);
    let mut server = supervisor(2, &["--set", "shutdown.drain_delay_ms=1000"]);
    let addr = server.addr;
    let sup = server.pid();
    let workers = workers_of(sup);

    // 50 connections on each worker (a new connection lands on whichever worker accepts it
    // first, so open connections until each worker holds 50), then one slow request on each.
    let mut pinned: BTreeMap<u32, Vec<Sender>> = BTreeMap::new();
    for attempt in 0.. {
        if workers
            .iter()
            .all(|p| pinned.get(p).map_or(0, Vec::len) == 50)
        {
            break;
        }
        let counts: Vec<usize> = pinned.values().map(Vec::len).collect();
        assert!(
            attempt < 5000,
            "cannot get 50 connections per worker: {counts:?}"
        );
        let mut sender = connect(addr).await.expect("connect");
        match exchange(&mut sender, Method::GET, "/health/worker", false).await {
            Outcome::Done {
                status: 200, body, ..
            } => {
                let h = parse_worker(&body).expect("worker health");
                let conns = pinned.entry(h.pid).or_default();
                if conns.len() < 50 {
                    conns.push(sender);
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let slow: Vec<JoinHandle<Outcome>> = pinned
        .into_values()
        .flatten()
        .map(|mut sender| {
            tokio::spawn(
                async move { exchange(&mut sender, Method::GET, "/slow?ms=3000", false).await },
            )
        })
        .collect();
    assert_eq!(slow.len(), 100);
    // All 100 are in flight, 50 on each worker (each probe counts itself too).
    let mut in_flight: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < deadline
        && !(in_flight.len() == 2 && in_flight.values().all(|n| *n == 51))
    {
        if let Ok(h) = probe(addr).await {
            in_flight.insert(h.pid, h.in_flight);
        }
    }
    assert!(
        in_flight.len() == 2 && in_flight.values().all(|n| *n == 51),
        "expected 50 slow requests in flight on each worker: {in_flight:?}"
    );

    let term_at = Instant::now();
    server.signal(Signal::SIGTERM);

    // Readiness fails at once; requests are still served during the drain delay.
    let mut unready = false;
    while term_at.elapsed() < DRAIN_DELAY - Duration::from_millis(200) {
        if status_of(addr, "/health/ready").await == Ok(503) {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        unready,
        "/health/ready never answered 503 during the drain delay"
    );
    if term_at.elapsed() < DRAIN_DELAY - Duration::from_millis(100) {
        assert_eq!(status_of(addr, "/plaintext").await, Ok(200));
    }

    // After the drain delay new connections are refused, while the slow requests finish.
    tokio::time::sleep(DRAIN_DELAY.saturating_sub(term_at.elapsed())).await;
    let mut refused = false;
    while term_at.elapsed() < DRAIN_DELAY + Duration::from_secs(2) {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let refused_after = term_at.elapsed();
    assert!(
        refused,
        "new connections still accepted {refused_after:?} after SIGTERM"
    );
    assert!(
        server.try_wait().is_none(),
        "the supervisor exited before its slow requests finished"
    );

    let mut outcomes = BTreeMap::new();
    for t in slow {
        let outcome = match t.await.expect("slow task") {
            Outcome::Done { status, .. } => format!("status {status}"),
            other => format!("{other:?}"),
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([("status 200".to_owned(), 100)]),
        "slow request outcomes"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_timeout(Duration::from_secs(20));
        (status, server)
    })
    .await
    .expect("wait task");
    let exit = status.0.expect("the supervisor exits after draining");
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        eventually(Duration::from_secs(5), || workers
            .iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()))
        .await,
        "workers outlived the supervisor"
    );
    eprintln!(
        "SIGTERM: 100/100 slow requests completed; connections refused {refused_after:?} after \
         the signal (drain delay {DRAIN_DELAY:?}); exit 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_control_message_replaces_the_worker() {
    let mut server = supervisor(2, &[]);
    let sup = server.pid();
    let before = workers_of(sup);

    let mut sender = connect(server.addr).await.expect("connect");
    let victim = match exchange(&mut sender, Method::GET, "/health/worker", false).await {
        Outcome::Done {
            status: 200, body, ..
        } => parse_worker(&body).expect("worker health").pid,
        other => panic!("{other:?}"),
    };
    // The test-only route writes a frame that is not a valid message on the worker's control
    // channel; the worker may be killed before its answer is written.
    match exchange(&mut sender, Method::POST, "/debug/garbage-control", false).await {
        Outcome::Done { status: 202, .. }
        | Outcome::Failed(_)
        | Outcome::Unsent(_)
        | Outcome::Closed(_) => {}
        Outcome::Done { status, body, .. } => {
            panic!("/debug/garbage-control answered {status} {body:?} (is the test route wired?)")
        }
    }
    let replacement = replacement_for(sup, &before, victim, Some(2), Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("worker {victim} was not replaced: {:?}", workers_of(sup)));
    assert!(server.try_wait().is_none(), "the supervisor died");
    assert!(wait_serving(server.addr, replacement, Duration::from_secs(10)).await);
    let others: BTreeSet<u32> = before.iter().copied().filter(|p| *p != victim).collect();
    assert!(
        others.is_subset(&workers_of(sup)),
        "the other worker was left alone"
    );
}

#[test]
fn supervisor_exits_70_when_no_worker_can_boot() {
    let addr = SocketAddr::from(([127, 0, 0, 1], palisade_tests::free_port()));
    let mut child = std::process::Command::new(palisade_tests::server::binary())
        .args(["--workers", "2", "--bind", &addr.to_string()])
        .args(["--set", "admin.enabled=false"])
        .env("TEST_PALISADE_WORKER_BOOT_FAILS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn palisade");
    let started = Instant::now();
    let mut status = None;
    // Five failures per slot with backoff 0, 100, 200, 400 ms: about a second.
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(s) = child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("supervisor still running after 20 s although no worker can boot");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(70), "stderr:\n{stderr}");
    assert!(
        stderr.contains("no worker ever became ready"),
        "stderr:\n{stderr}"
    );
    println!("gave up after {:?}", started.elapsed());
}

/// `/metrics` on the admin port: every worker's exposition, one family block each, with a
/// `worker` label; the request counts add up to what the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_merge_every_worker_with_a_worker_label() {
    let server = supervisor(2, &[]);
    let pids = workers_of(server.pid());
    wait_all_serving(server.addr, &pids, Duration::from_secs(20)).await;
    let client = Client::without_keep_alive();
    let sent = 60;
    for _ in 0..sent {
        let res = client
            .get(&server.url("/plaintext"))
            .await
            .expect("request");
        assert_eq!(res.status, 200);
    }
    let metrics_url = server.admin_url("/metrics");
    let (auth_name, auth_value) = server.admin_auth();
    let count_of = |text: &str| -> (u64, BTreeSet<String>) {
        let mut total = 0;
        let mut workers = BTreeSet::new();
        for line in text.lines() {
            if line.starts_with("http_server_request_duration_seconds_count{")
                && line.contains(r#"http_route="/plaintext""#)
            {
                let worker = line
                    .split("worker=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .expect("worker label on every sample");
                workers.insert(worker.to_owned());
                total += line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("count value");
            }
        }
        (total, workers)
    };
    // Heartbeats carry the expositions once a second.
    let mut last = (0, BTreeSet::new());
    let mut text = String::new();
    for _ in 0..50 {
        let res = client
            .request(
                Method::GET,
                &metrics_url,
                &[(&auth_name, &auth_value)],
                bytes::Bytes::new(),
            )
            .await
            .expect("admin /metrics");
        assert_eq!(res.status, 200);
        assert!(
            res.header("content-type")
                .is_some_and(|v| v.starts_with("text/plain"))
        );
        text = res.text();
        last = count_of(&text);
        if last.0 == sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, sent, "requests counted over the workers:\n{text}");
    assert!(
        last.1.iter().all(|w| w == "0" || w == "1"),
        "worker labels are slot ids: {:?}",
        last.1
    );
    // The text format needs each family's lines together: one TYPE line per family.
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let unique: BTreeSet<&str> = types.iter().copied().collect();
    assert_eq!(types.len(), unique.len(), "a family's TYPE appears once");
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.contains("worker=\"")),
        "every sample carries the worker label"
    );
}
