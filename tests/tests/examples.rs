//! The runnable examples (`examples/examples/*.rs`), run as a new user would run them, in smoke
//! mode (`EXAMPLE_SMOKE=1`): each must exit 0 and print what its layers did.
//!
//! The binaries are the ones Cargo builds into `target/<profile>/examples/` (`cargo build
//! --workspace --all-targets`, or `cargo build -p examples --examples`); `EXAMPLES_DIR`
//! overrides the directory. Redis-backed variants start a private `redis-server` and are skipped
//! loudly when it is not installed (unless `PALISADE_REQUIRE_REDIS=1`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_tests::redis::RedisServer;
use palisade_tests::server::blocking_status;

/// The directory holding the example binaries, next to the running test's target directory.
fn examples_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("EXAMPLES_DIR") {
        return PathBuf::from(dir);
    }
    palisade_tests::server::profile_dir().join("examples")
}

fn example(name: &str) -> PathBuf {
    let bin = examples_dir().join(name);
    assert!(
        bin.is_file(),
        "{} not found: build the examples first (cargo build -p examples --examples) or set \
         EXAMPLES_DIR",
        bin.display()
    );
    bin
}

/// What a finished example printed.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The first stdout line starting with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{self}"))
    }

    /// Asserts stdout contains `text`.
    fn has(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "expected {text:?} in:\n{self}");
        self
    }

    fn assert_success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "example failed:\n{self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- exit code {:?}\n--- stdout\n{}--- stderr (tail)\n{}",
            self.code,
            self.stdout,
            tail(&self.stderr, 40)
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The number written just before ` {word}` in `line` ("7 ok, 23 limited" → `limited` = 23).
fn count(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches([',', ';', ')']) == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no number before {word:?} in {line:?}"))
}

fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(example(name))
        .args(args)
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn example {name}: {e}"))
}

/// Collects a child's output (what is left of it), killing it (by PID) if it runs longer than
/// `timeout`.
fn finish(mut child: Child, timeout: Duration) -> Output {
    fn read_all(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut s);
            }
            s
        })
    }
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "example did not exit within {timeout:?}:\n{output}"
    );
    output
}

/// Runs an example in smoke mode and waits for it (at most two minutes).
fn smoke(name: &str, env: &[(&str, &str)]) -> Output {
    let mut env = env.to_vec();
    env.push(("EXAMPLE_SMOKE", "1"));
    finish(spawn(name, &[], &env), Duration::from_secs(120))
}

#[test]
fn wrap_axum_shows_every_layer_and_drains() {
    let out = smoke("wrap_axum", &[]);
    out.assert_success()
        .has("watch it live: palisade-top --url http://127.0.0.1:")
        .has("observe: GET / -> 200 with x-request-id: true")
        .has("cache: GET /users/7 -> 200 cache-status: palisade; fwd=miss; stored")
        .has("cache: GET /users/7 -> 200 cache-status: palisade; hit; ttl=")
        .has("breaker: 12 calls to a failing route -> 10 x 500, then 2 x 503 (open)")
        .has("breaker: other routes keep their own breaker: GET /users/8 -> 200")
        .has(r#"admin: GET /admin/v1/snapshot -> 200; limits ["api"], breakers ["routes"], caches ["responses"]"#)
        .has("metrics: /metrics has http_server_request_duration_seconds: true")
        .has(", 0 cut");
    let limit = out.line("rate limit: 30 requests at once -> ");
    assert!(count(limit, "limited") > 0, "{out}");
    assert_eq!(count(limit, "ok") + count(limit, "limited"), 30, "{out}");
}

#[test]
fn tower_service_limits_breaks_and_drains_without_axum() {
    let out = smoke("tower_service", &[]);
    out.assert_success()
        .has(r#"GET / -> 200 ratelimit: "per_client";r="#)
        .has("429 body is problem+json: true")
        .has("GET /fail x6 -> [500, 500, 500, 500, 500, 503], retry-after: 10")
        .has("drained: ")
        .has(", 0 cut");
    assert!(
        count(out.line("GET / x15 right away -> "), "limited") > 0,
        "{out}"
    );
}

#[test]
fn outbound_breaker_opens_probes_and_closes() {
    let out = finish(
        spawn("outbound_breaker", &[], &[]),
        Duration::from_secs(120),
    );
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let failing: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("failing: "))
        .collect();
    assert_eq!(failing.len(), 6, "{out}");
    // 3 healthy calls then 3 failures: 50 % of the window, the threshold.
    assert!(
        failing[..3]
            .iter()
            .all(|l| l.ends_with("upstream answered 500 [sent]")),
        "{out}"
    );
    assert!(
        failing[3..]
            .iter()
            .all(|l| l.contains("refused by the breaker (open)") && l.ends_with("[not sent]")),
        "{out}"
    );
    out.has("breaker is open after the failures")
        .has("probe while slow: timed out after 200 ms [sent]")
        .has("breaker is open after the probe timed out")
        .has("probe while healthy: upstream answered 200 [sent]")
        .has("breaker is closed after a good probe");
    let burst = out.line("burst of 20 concurrent calls: ");
    let answered = count(burst, "answered");
    assert!(count(burst, "held") > 0, "{out}");
    assert!(
        burst.ends_with(&format!("the upstream saw {answered}")),
        "{out}"
    );
}

#[test]
fn cache_in_handler_without_redis() {
    let out = smoke("cache_in_handler", &[]);
    out.assert_success()
        .has("cache: L1 only")
        .has(r#"GET /users/1 -> 200 {"id":1,"name":"Ada"} (queries: 1)"#)
        .has("GET /users/1 again -> 200 from the cache (queries: 1)")
        .has("50 concurrent GET /users/2 -> 1 query (single flight)")
        .has(r#"then GET /users/1 -> {"id":1,"name":"Ada Lovelace"} (invalidated, reloaded)"#)
        .has("GET /users/99 -> 404, again -> 404: 1 query (negative caching)");
}

#[test]
fn cache_in_handler_with_redis_invalidates_other_instances() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let out = smoke("cache_in_handler", &[("REDIS_URL", &url)]);
    out.assert_success()
        .has("cache: L1 + Redis L2 at redis://127.0.0.1:")
        .has("50 concurrent GET /users/2 -> 1 query (single flight)")
        .has("instance B: user 3 = Barbara from Redis L2 (l2 hits: 1, queries: 0)")
        .has("instance B after A's update: Barbara Liskov");
}

#[test]
fn distributed_limits_explains_itself_without_redis() {
    let out = finish(
        spawn("distributed_limits", &[], &[]),
        Duration::from_secs(30),
    );
    out.assert_success()
        .has("distributed_limits needs a Redis server: set REDIS_URL");
}

#[test]
fn distributed_limits_two_processes_share_one_limit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let out = finish(
        spawn("distributed_limits", &[], &[("REDIS_URL", &url)]),
        Duration::from_secs(120),
    );
    out.assert_success()
        .has("allowed 5 of 12 across 2 processes")
        .has("process A: 200")
        .has("process B: 200")
        .has("process A: 429")
        .has("process B: 429");
}

#[test]
fn graceful_axum_smoke_drains_in_flight_work() {
    let out = smoke("graceful_axum", &[]);
    out.assert_success()
        .has("before: GET /health/ready -> 200")
        .has("during the delay: GET /health/ready -> 503")
        .has("during the delay: GET / -> 200 (still served)")
        .has("after the delay: new connections refused: true")
        .has("slow request finished: 200, connection: close = true, body: done after 1500 ms")
        .has("event stream ended by the drain: 200")
        .has(", 0 cut");
}

#[test]
fn graceful_axum_drains_on_a_real_sigterm() {
    let mut child = spawn("graceful_axum", &["--port", "0", "--delay-ms", "1000"], &[]);
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout
        .read_line(&mut first)
        .expect("read the listening line");
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("an address");
    child.stdout = None;
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });

    // A slow request in flight when the signal arrives.
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "GET /slow?ms=2000 HTTP/1.1\r\nhost: example\r\n\r\n").expect("write");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    assert_eq!(blocking_status(addr, "/health/ready"), Some(200));
    // Let the slow request reach the handler (an ordering guard, not a timing assertion).
    std::thread::sleep(Duration::from_millis(300));
    palisade_tests::kill_pid(child.id(), nix::sys::signal::Signal::SIGTERM);
    // Readiness fails at once, while the listener still accepts for the 1 s delay.
    let draining = palisade_tests::wait_until(Duration::from_millis(900), || {
        blocking_status(addr, "/health/ready") == Some(503)
    });

    let out = finish(child, Duration::from_secs(30));
    let stdout = rest.join().unwrap_or_default();
    let response = slow.join().expect("slow request thread");
    assert!(
        draining,
        "readiness did not answer 503 after SIGTERM\n{out}\n{stdout}"
    );
    assert_eq!(out.code, Some(0), "{out}\n{stdout}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(response.contains("done after 2000 ms"), "{response}");
    assert!(stdout.contains(", 0 cut"), "{stdout}");
}

#[test]
fn runtime_limits_from_code_and_admin_api() {
    let out = smoke("runtime_limits", &[]);
    out.assert_success()
        .has("policy api: rate 5 per 1s, burst 5, mode enforce")
        .has("from code: rate 5 per 1s, burst 5, mode enforce -> rate 50 per 1s, burst 20, mode enforce")
        .has("from code, burst 0: refused: burst: must be at least 1 (got 0); limits unchanged: rate 50 per 1s, burst 20")
        .has("admin: GET /admin/v1/limits/api -> 200 etag \"")
        .has(r#"after {"burst":2,"mode":"enforce","per":"1s","rate":2}"#)
        .has("the handle sees it: rate 2 per 1s, burst 2, mode enforce")
        .has("-> 412 (someone changed it first")
        .has(r#"admin: PUT {"burst": 0, "rate": 0} -> 400: rate: must be at least 1 (got 0); burst: must be at least 1 (got 0)"#)
        .has(r#"admin: PUT {"mode": "shadow"} -> 200; 6 requests: 6 ok, 0 limited"#);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("8 requests: "))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(count(lines[0], "limited") > 0, "{out}");
    assert_eq!(
        count(lines[1], "ok"),
        8,
        "raising the limit must not lock the key out\n{out}"
    );
    assert!(count(out.line("6 requests: "), "limited") > 0, "{out}");
}

#[test]
fn tls_axum_smoke_serves_h2_and_http1_by_alpn() {
    let out = smoke("tls_axum", &[]);
    out.assert_success()
        .has("GET / offering h2: negotiated h2 -> 200 \"hello over TLS\"")
        .has("GET / offering http/1.1: negotiated http/1.1 -> 200 \"hello over TLS\"")
        .has("stopped: 0 completed, 0 cut"); // nothing was in flight when the drain started
}

#[test]
fn tls_axum_serves_given_files_and_reloads_them_on_sighup() {
    use palisade_tests::tls::{TestCa, get};
    let dir =
        std::env::temp_dir().join(format!("palisade-test-tls-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ca = TestCa::new("example CA");
    let first = ca.server_cert();
    first.write(&cert, &key);
    let (cert_arg, key_arg) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let mut child = spawn(
        "tls_axum",
        &["--cert", cert_arg, "--key", key_arg, "--port", "0"],
        &[],
    );
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the listening line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = ca.client_config(&["h2", "http/1.1"], None);
    let before = rt
        .block_on(get(addr, config.clone(), "/"))
        .expect("GET / over TLS");
    assert_eq!((before.status, before.alpn.as_deref()), (200, Some("h2")));
    assert_eq!(before.server_cert.as_ref(), Some(&first.der));

    // A broken file is refused and the old certificate stays; a good one is picked up.
    std::fs::write(&cert, "not a certificate").expect("write");
    palisade_tests::kill_pid(child.id(), nix::sys::signal::Signal::SIGHUP);
    line.clear();
    stdout.read_line(&mut line).expect("read the refusal");
    assert!(line.starts_with("certificate not reloaded"), "{line:?}");
    let second = ca.server_cert();
    second.write(&cert, &key);
    palisade_tests::kill_pid(child.id(), nix::sys::signal::Signal::SIGHUP);
    line.clear();
    stdout.read_line(&mut line).expect("read the reload");
    assert_eq!(line.trim(), "certificate reloaded");
    let after = rt
        .block_on(get(addr, config, "/"))
        .expect("GET / after the reload");
    assert_eq!(after.status, 200);
    assert_eq!(after.server_cert.as_ref(), Some(&second.der));

    palisade_tests::kill_pid(child.id(), nix::sys::signal::Signal::SIGTERM);
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status:?}: {rest}");
    assert!(rest.contains("stopped: 0 completed, 0 cut"), "{rest}");
    let _ = std::fs::remove_dir_all(dir);
}
