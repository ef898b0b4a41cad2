//! The users database end to end: a supervisor with two workers against a real SQLite file and a
//! real PostgreSQL server (started here), consistency across workers, invalidation of every
//! worker's L1, a database outage under load, and the start-up migration's refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use palisade_tests::http::{Client, Response};
use palisade_tests::load::{supervisor, temp_dir};
use palisade_tests::postgres::PostgresServer;
use palisade_tests::redis::RedisServer;
use palisade_tests::server::{ServerProcess, binary};
use palisade_tests::{free_port, wait_until};
use serde_json::{Value, json};

/// The worker pids seen over new connections (up to 200 tries until `want` are seen).
async fn worker_pids(server: &ServerProcess, want: usize) -> BTreeSet<u64> {
    let client = Client::without_keep_alive();
    let mut pids = BTreeSet::new();
    for _ in 0..200 {
        let res = client.get(&server.url("/health/worker")).await.unwrap();
        pids.insert(res.json()["pid"].as_u64().unwrap());
        if pids.len() >= want {
            break;
        }
    }
    pids
}

async fn expect(res: Result<Response, String>, status: u16, what: &str) -> Value {
    let res = res.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(res.status, status, "{what}: {}", res.text());
    if res.body.is_empty() {
        Value::Null
    } else {
        res.json()
    }
}

/// 20 rounds of create → read → duplicate → replace → read (→ delete → read) over new
/// connections, so the two workers take turns; then the whole list, page by page.
async fn consistency_rounds(server: &ServerProcess, tag: &str) {
    assert_eq!(
        worker_pids(server, 2).await.len(),
        2,
        "both workers must answer"
    );
    let client = Client::without_keep_alive();
    let users = server.url("/api/v1/users");
    let mut ids = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    for round in 0..20 {
        let email = format!("{tag}-{round}@example.com");
        let body = json!({ "name": format!("User {round}"), "email": email });
        let created = expect(
            client.json(Method::POST, &users, &[], &body).await,
            201,
            "create",
        )
        .await;
        let id = created["id"].as_u64().unwrap();
        assert!(ids.insert(id), "id {id} handed out twice");
        let url = server.url(&format!("/api/v1/users/{id}"));
        for _ in 0..4 {
            let got = expect(client.get(&url).await, 200, "read after create").await;
            assert_eq!(got, created, "a worker returned another user");
        }
        // The same address in other case, on whichever worker: refused by the database.
        let dup = json!({ "name": "Dup", "email": email.to_uppercase() });
        for _ in 0..2 {
            expect(
                client.json(Method::POST, &users, &[], &dup).await,
                409,
                "duplicate email",
            )
            .await;
        }
        // A replace is visible on every worker once it has returned.
        let renamed = json!({ "name": format!("Renamed {round}"), "email": email });
        let started = Instant::now();
        expect(
            client.json(Method::PUT, &url, &[], &renamed).await,
            200,
            "replace",
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "PUT took {:?}",
            started.elapsed()
        );
        for _ in 0..4 {
            let got = expect(client.get(&url).await, 200, "read after replace").await;
            assert_eq!(got["name"], format!("Renamed {round}"), "stale read: {got}");
        }
        if round % 5 == 4 {
            expect(
                client.request(Method::DELETE, &url, &[], "").await,
                204,
                "delete",
            )
            .await;
            deleted.insert(id);
            for _ in 0..4 {
                expect(client.get(&url).await, 404, "read after delete").await;
            }
        }
    }
    // Pages in id order, no id twice, none missing, the total matching.
    let mut listed = Vec::new();
    let mut total = None;
    for page in 0.. {
        let url = server.url(&format!("/api/v1/users?limit=7&offset={}", page * 7));
        let body = expect(client.get(&url).await, 200, "list").await;
        total.get_or_insert(body["total"].as_u64().unwrap());
        let batch = body["users"].as_array().unwrap().clone();
        if batch.is_empty() {
            break;
        }
        listed.extend(batch.iter().map(|u| u["id"].as_u64().unwrap()));
    }
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "{listed:?}");
    assert_eq!(Some(listed.len() as u64), total);
    let alive: BTreeSet<u64> = ids.difference(&deleted).copied().collect();
    assert!(alive.iter().all(|id| listed.contains(id)), "{listed:?}");
    assert!(deleted.iter().all(|id| !listed.contains(id)));
}

#[tokio::test]
async fn sqlite_workers_agree_on_users() {
    let dir = temp_dir("db-sqlite");
    let url = format!("database.url=sqlite://{}/users.db", dir.display());
    let server = supervisor(2, &["--set", &url]);
    consistency_rounds(&server, "sqlite").await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_workers_agree_on_users() {
    let Some(pg) = PostgresServer::start() else {
        return;
    };
    let url = format!("database.url={}", pg.url());
    let server = supervisor(2, &["--set", &url]);
    consistency_rounds(&server, "pg").await;
    // The readiness report names the database check.
    let ready = Client::new()
        .get(&server.url("/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"][0]["name"], "database");
}

/// With Redis as L2, the pub/sub backplane carries invalidations: a replace reaches the other
/// worker's L1 within a second.
#[tokio::test]
async fn redis_backplane_invalidates_every_worker() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = temp_dir("db-redis");
    let db = format!("database.url=sqlite://{}/users.db", dir.display());
    let l2 = format!("cache.redis_url={}", redis.url());
    let server = supervisor(2, &["--set", &db, "--set", &l2]);
    assert_eq!(worker_pids(&server, 2).await.len(), 2);
    let client = Client::without_keep_alive();
    let url = server.url("/api/v1/users/1");
    for _ in 0..20 {
        expect(client.get(&url).await, 200, "warm both workers").await;
    }
    let body = json!({ "name": "Ada King", "email": "ada@example.com" });
    expect(
        client.json(Method::PUT, &url, &[], &body).await,
        200,
        "replace",
    )
    .await;
    let changed = Instant::now();
    // Every read over a new connection (either worker) shows the new name within 1 s.
    let mut seen_new = 0;
    while seen_new < 20 && changed.elapsed() < Duration::from_secs(1) {
        let got = expect(client.get(&url).await, 200, "read").await;
        if got["name"] == "Ada King" {
            seen_new += 1;
        } else {
            seen_new = 0;
        }
    }
    assert_eq!(seen_new, 20, "stale reads 1 s after the write");
    let ready = Client::new()
        .get(&server.url("/health/ready"))
        .await
        .unwrap();
    let checks = ready.json()["checks"].clone();
    assert_eq!(checks[1]["name"], "redis", "{checks}");
    assert_eq!(checks[1]["ok"], true, "{checks}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[derive(Debug, Default)]
struct Tally {
    reads: BTreeMap<u16, u64>,
    read_errors: Vec<String>,
}

/// PostgreSQL killed under load: reads of cached users keep answering 200 (L1, then stale copies
/// once their TTL is over), writes answer 503 within the query timeout, readiness says why, and
/// writes succeed again within 5 s of the database's return.
#[tokio::test]
async fn postgres_outage_serves_cached_reads_and_refuses_writes() {
    let Some(mut pg) = PostgresServer::start() else {
        return;
    };
    let url = format!("database.url={}", pg.url());
    // Short L1 freshness, so the outage outlasts it and stale-if-error is what serves.
    let server = supervisor(
        2,
        &[
            "--set",
            &url,
            "--set",
            "cache.users.l1_ttl_ms=500",
            "--set",
            "cache.users.ttl_ms=1000",
            "--set",
            "cache.users.jitter_ms=0",
        ],
    );
    let client = Client::new();
    let warm = Client::without_keep_alive();
    for _ in 0..30 {
        for id in 1..=3 {
            let url = server.url(&format!("/api/v1/users/{id}"));
            expect(warm.get(&url).await, 200, "warm").await;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(tokio::sync::Mutex::new(Tally::default()));
    let mut readers = Vec::new();
    for task in 0..4u64 {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        let base = server.url("/api/v1/users/");
        readers.push(tokio::spawn(async move {
            let client = Client::without_keep_alive().timeout(Duration::from_secs(5));
            let mut i = task;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{base}{}", 1 + i % 3);
                i += 1;
                let outcome = client.get(&url).await;
                let mut t = tally.lock().await;
                match outcome {
                    Ok(res) => *t.reads.entry(res.status.as_u16()).or_default() += 1,
                    Err(e) => t.read_errors.push(e),
                }
                drop(t);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    pg.kill();
    let down = Instant::now();
    let users = server.url("/api/v1/users");
    let mut writes = BTreeMap::<u16, u64>::new();
    let mut n = 0;
    while down.elapsed() < Duration::from_secs(3) {
        n += 1;
        let body = json!({ "name": "During outage", "email": format!("down-{n}@example.com") });
        let started = Instant::now();
        let res = client.json(Method::POST, &users, &[], &body).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a write took {:?} with the database down",
            started.elapsed()
        );
        assert_eq!(res.header("content-type"), Some("application/problem+json"));
        *writes.entry(res.status.as_u16()).or_default() += 1;
    }
    assert_eq!(
        writes.keys().copied().collect::<Vec<_>>(),
        vec![503],
        "{writes:?}"
    );
    let ready = client.get(&server.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["checks"][0]["ok"], false);
    // The `db` breaker is visible in the admin API.
    let (header, token) = server.admin_auth();
    let breaker = client
        .request(
            Method::GET,
            &server.admin_url("/admin/v1/breakers/db"),
            &[(header.as_str(), token.as_str())],
            "",
        )
        .await
        .unwrap();
    assert_eq!(breaker.status, 200, "{}", breaker.text());

    pg.restart();
    let up = Instant::now();
    let mut recovered = None;
    while up.elapsed() < Duration::from_secs(10) {
        n += 1;
        let body = json!({ "name": "After outage", "email": format!("up-{n}@example.com") });
        let res = client.json(Method::POST, &users, &[], &body).await.unwrap();
        if res.status == 201 {
            recovered = Some(up.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let recovered = recovered.expect("writes did not recover within 10 s");
    assert!(
        recovered < Duration::from_secs(5),
        "recovery took {recovered:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            palisade_tests::server::blocking_status(server.addr, "/health/ready") == Some(200)
        }),
        "readiness did not recover"
    );
    let t = tally.lock().await;
    let fivexx: u64 = t
        .reads
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "outage: reads {:?}, writes during outage {writes:?}, writes back after {recovered:?}",
        t.reads
    );
    assert!(t.read_errors.is_empty(), "{:?}", t.read_errors);
    assert_eq!(fivexx, 0, "cached reads failed: {:?}", t.reads);
    assert!(
        t.reads.get(&200).copied().unwrap_or(0) > 100,
        "{:?}",
        t.reads
    );
}

/// Runs the binary to completion (it must fail at start) and returns (exit code, stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args([
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
            "--set",
            "admin.enabled=false",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_database_stops_the_start_with_exit_69() {
    let url = format!(
        "database.url=postgres://postgres@127.0.0.1:{}/postgres",
        free_port()
    );
    let (code, stderr) = run_to_exit(&["--set", &url, "--set", "database.connect_timeout_ms=2000"]);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("cannot reach the database"), "{stderr}");
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_stops_the_start_with_exit_65() {
    let dir = temp_dir("db-newer");
    let file = dir.join("users.db");
    let _ = std::fs::remove_file(&file);
    let url = format!("database.url=sqlite://{}", file.display());
    // A first start creates the schema.
    drop(
        ServerProcess::builder()
            .args(["--single-process", "--set", &url])
            .spawn(),
    );
    // A newer release applied migration 999.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        file.display()
    ))
    .await
    .unwrap();
    sqlx::query("INSERT INTO palisade_schema (version, description) VALUES (999, 'future')")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let (code, stderr) = run_to_exit(&["--single-process", "--set", &url]);
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("newer than this binary"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
