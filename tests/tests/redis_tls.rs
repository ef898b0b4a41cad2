//! The reference server with `[redis] url = "rediss://…"` against a private TLS-only
//! `redis-server` (test CA, mutual TLS): two workers share one rate limit in Redis over TLS, the
//! users cache's L2 and backplane carry a write to every worker, readiness reports Redis; a
//! wrong CA degrades (no 5xx, the TLS error visible in `/health/ready` and the log); mistakes in
//! `[redis]` exit 64.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use palisade_tests::http::Client;
use palisade_tests::load::{Outcome, connect, exchange, parse_worker, supervisor, temp_dir};
use palisade_tests::redis::{ClientAuth, RedisServer};
use palisade_tests::server::{ServerProcess, binary};
use serde_json::json;

/// A config file: `[redis]` with `tls`, a global Redis limit of `burst` on `/plaintext`.
fn write_config(dir: &Path, redis: &RedisServer, ca: &Path, mutual: bool, burst: u32) -> String {
    let files = redis.tls().expect("a TLS redis");
    let client = if mutual {
        format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            files.client_cert, files.client_key
        )
    } else {
        String::new()
    };
    let text = format!(
        r#"
[redis]
url = "{url}"
ca_file = {ca:?}
{client}
[rate_limit]
exempt_paths = ["/health/*", "/metrics"]

# No url: the [redis] one. A generous timeout, so a loaded machine's slow TLS handshake is not
# taken for Redis being down (which the local fallback would answer).
[rate_limit.redis]
timeout = "2s"

[[rate_limit.policy]]
name = "tls"
rate = 1
per = "1h"
burst = {burst}
key = "global"
paths = ["/plaintext"]
store = "redis"
failure_mode = "local_fallback"
"#,
        url = redis.url(),
    );
    let file = dir.join("palisade.toml");
    std::fs::write(&file, text).expect("write the config");
    file.to_str().expect("UTF-8 path").to_owned()
}

/// One keep-alive connection per worker: connects until `/health/worker` named two pids.
async fn one_connection_per_worker(
    server: &ServerProcess,
) -> Vec<(u32, palisade_tests::load::Sender)> {
    let mut by_pid = BTreeMap::new();
    for _ in 0..200 {
        let mut sender = connect(server.addr).await.expect("connect");
        if let Outcome::Done {
            status: 200, body, ..
        } = exchange(&mut sender, Method::GET, "/health/worker", false).await
            && let Some(worker) = parse_worker(&body)
        {
            by_pid.entry(worker.pid).or_insert(sender);
        }
        if by_pid.len() == 2 {
            break;
        }
    }
    assert_eq!(by_pid.len(), 2, "both workers must answer");
    by_pid.into_iter().collect()
}

async fn ready_checks(server: &ServerProcess) -> serde_json::Value {
    let ready = Client::new()
        .get(&server.url("/health/ready"))
        .await
        .expect("readiness");
    ready.json()["checks"].clone()
}

#[tokio::test]
async fn two_workers_share_a_limit_and_a_cache_over_rediss() {
    let Some(redis) = RedisServer::start_tls(ClientAuth::Required) else {
        return;
    };
    let dir = temp_dir("redis-tls");
    let ca = redis.tls().unwrap().ca.clone();
    let file = write_config(&dir, &redis, &ca, true, 12);
    let server = supervisor(2, &["--config", &file]);

    // The limit: 30 requests alternating between the two workers, one burst of 12 in all.
    let mut conns = one_connection_per_worker(&server).await;
    let mut tally: BTreeMap<(u32, u16), u32> = BTreeMap::new();
    for i in 0..30 {
        let (pid, sender) = &mut conns[i % 2];
        let status = match exchange(sender, Method::GET, "/plaintext", false).await {
            Outcome::Done { status, .. } => status,
            other => panic!("request {i}: {other:?}"),
        };
        *tally.entry((*pid, status)).or_default() += 1;
    }
    eprintln!("(worker pid, status) → count over rediss://: {tally:?}");
    let count = |status: u16| -> u32 {
        tally
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!((count(200), count(429)), (12, 18), "{tally:?}");
    let admitting: BTreeSet<u32> = tally
        .keys()
        .filter(|(_, s)| *s == 200)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(admitting.len(), 2, "both workers admitted some: {tally:?}");

    // The cache: L2 and the backplane over TLS carry a write to the other worker's L1.
    let client = Client::without_keep_alive();
    let url = server.url("/api/v1/users/1");
    for _ in 0..20 {
        let res = client.get(&url).await.expect("read");
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let body = json!({ "name": "Ada TLS", "email": "ada-tls@example.com" });
    let res = client
        .json(Method::PUT, &url, &[], &body)
        .await
        .expect("replace");
    assert_eq!(res.status, 200, "{}", res.text());
    let changed = Instant::now();
    let mut seen_new = 0;
    while seen_new < 20 && changed.elapsed() < Duration::from_secs(1) {
        let res = client.get(&url).await.expect("read");
        assert_eq!(res.status, 200, "{}", res.text());
        seen_new = if res.json()["name"] == "Ada TLS" {
            seen_new + 1
        } else {
            0
        };
    }
    assert_eq!(
        seen_new, 20,
        "stale reads 1 s after the write over rediss://"
    );
    let checks = ready_checks(&server).await;
    assert_eq!(checks[1]["name"], "redis", "{checks}");
    assert_eq!(checks[1]["ok"], true, "{checks}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_wrong_ca_degrades_the_server_visibly() {
    let Some(redis) = RedisServer::start_tls(ClientAuth::No) else {
        return;
    };
    let dir = temp_dir("redis-wrong-ca");
    let wrong = redis.tls().unwrap().wrong_ca.clone();
    let file = write_config(&dir, &redis, &wrong, false, 5);
    let log = dir.join("server.log");
    // One worker, so the local fallback's burst is counted once.
    let server = ServerProcess::builder()
        .args(["--workers", "1", "--config", &file])
        .stderr_to(&log)
        .spawn();
    let client = Client::without_keep_alive();
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for _ in 0..10 {
        let res = client
            .get(&server.url("/plaintext"))
            .await
            .expect("plaintext");
        *statuses.entry(res.status.as_u16()).or_default() += 1;
    }
    for _ in 0..5 {
        let res = client
            .get(&server.url("/api/v1/users/1"))
            .await
            .expect("user");
        *statuses.entry(res.status.as_u16()).or_default() += 1;
    }
    let took = started.elapsed();
    eprintln!("wrong CA: statuses {statuses:?} in {took:?}");
    // The local fallback admits its own burst of 5, the cached reads all answer.
    assert_eq!(statuses, BTreeMap::from([(200, 10), (429, 5)]));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let checks = ready_checks(&server).await;
    assert_eq!(checks[1]["name"], "redis", "{checks}");
    assert_eq!(checks[1]["ok"], false, "{checks}");
    let error = checks[1]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("certificate"), "{checks}");
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("certificate")),
        "a warning names the TLS failure: {log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn redis_tls_mistakes_exit_64() {
    let dir = temp_dir("redis-tls-config");
    let ca = dir.join("ca.pem");
    palisade_tests::tls::TestCa::new("config test CA").write(&ca);
    let ca = ca.to_str().unwrap().to_owned();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk = junk.to_str().unwrap().to_owned();
    let set = |kv: &str| ["--set".to_owned(), kv.to_owned()];
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            [
                set("redis.url=rediss://127.0.0.1:6380/"),
                set("redis.ca_file=/nonexistent/ca.pem"),
            ]
            .concat(),
            "redis.ca_file \"/nonexistent/ca.pem\": cannot read".to_owned(),
        ),
        (
            [
                set("redis.url=rediss://127.0.0.1:6380/"),
                set(&format!("redis.ca_file={junk}")),
            ]
            .concat(),
            format!("redis.ca_file {junk:?}: "),
        ),
        (
            [
                set("redis.url=redis://127.0.0.1:6379/"),
                set(&format!("redis.ca_file={ca}")),
            ]
            .concat(),
            "redis.url = \"redis://127.0.0.1:6379/\" is not a rediss:// URL".to_owned(),
        ),
        (
            [
                set("redis.url=rediss://127.0.0.1:6380/"),
                set("cache.redis_url=redis://127.0.0.1:6379/"),
                set(&format!("redis.ca_file={ca}")),
            ]
            .concat(),
            "cache.redis_url = \"redis://127.0.0.1:6379/\" is not a rediss:// URL".to_owned(),
        ),
        (
            set(&format!("redis.ca_file={ca}")).to_vec(),
            "no Redis is in use".to_owned(),
        ),
        (
            [
                set("redis.url=rediss://127.0.0.1:6380/"),
                set(&format!("redis.cert_file={ca}")),
            ]
            .concat(),
            "redis.key_file is missing".to_owned(),
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(binary())
            .args(&args)
            .arg("--print-config")
            .env_clear()
            .output()
            .expect("run palisade");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains(&needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one clear message: {err}");
    }
    // A good rediss:// configuration is accepted (connecting is lazy).
    let out = Command::new(binary())
        .args(["--set", "redis.url=rediss://127.0.0.1:6380/", "--set"])
        .arg(format!("redis.ca_file={ca}"))
        .arg("--print-config")
        .env_clear()
        .output()
        .expect("run palisade");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
