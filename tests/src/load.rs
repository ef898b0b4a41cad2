//! Helpers for end-to-end tests against a supervisor and its workers: a supervisor started with
//! quick heartbeats and waited on until its workers run, worker pids from `/proc`, one-connection
//! HTTP/1.1 exchanges that report every outcome, a load generator that records every request it
//! sends, and the supervisor's own counters from the admin API.
//!
//! The load generator counts each request as answered (ok), failed (with the reason) or unsent:
//! a request that hyper hands back *unsent* (the connection was already closed before a byte of
//! it was written) is not a lost request; it is counted separately and sent again on a new
//! connection, as any HTTP client does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::{Future, ready};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::http::Client;
use crate::server::ServerProcess;
use crate::{POLL_INTERVAL, poll_until, wait_until};

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Arguments every supervisor test starts with: quick heartbeats and no drain delay unless a test
/// overrides them (later `--set`s win). [`ServerProcess`] adds a private admin port and token file.
pub const BASE: &[&str] = &[
    "--set",
    "workers.heartbeat_interval_ms=200",
    "--set",
    "shutdown.drain_delay_ms=0",
    "--set",
    "shutdown.graceful_timeout_secs=10",
];

/// A supervisor with [`BASE`], `--workers <workers>` and then `extra`, waited on (20 s) until all
/// of its workers run.
///
/// # Panics
/// When it does not have `workers` workers within 20 s.
pub fn supervisor(workers: usize, extra: &[&str]) -> ServerProcess {
    let server = ServerProcess::builder()
        .args(BASE.iter().copied())
        .args(["--workers".to_owned(), workers.to_string()])
        .args(extra.iter().copied())
        .spawn();
    assert!(
        wait_until(Duration::from_secs(20), || {
            workers_of(server.pid()).len() == workers
        }),
        "expected {workers} workers, have {:?}",
        workers_of(server.pid())
    );
    server
}

/// A directory `palisade-test-<name>-<pid>` in the system's temp dir, created if missing; the
/// test removes it when done.
///
/// # Panics
/// When it cannot be created.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// The live (not zombie) children of `parent`: a supervisor's worker processes.
pub fn workers_of(parent: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("?");
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != "Z" && state != "X" {
            out.insert(pid);
        }
    }
    out
}

/// Open file descriptors of `pid` (a process this test started), from `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

/// Polls `check` every 20 ms (without blocking the runtime) until it holds or `timeout` passes;
/// returns whether it did. The async form of [`crate::wait_until`].
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    eventually_async(timeout, POLL_INTERVAL, || ready(check())).await
}

/// Waits up to `timeout` for the supervisor `sup` to replace `victim`: the victim is gone from
/// its workers and one not in `before` is there (and, with `count`, the supervisor has exactly
/// that many workers). Returns the replacement.
pub async fn replacement_for(
    sup: u32,
    before: &BTreeSet<u32>,
    victim: u32,
    count: Option<usize>,
    timeout: Duration,
) -> Option<u32> {
    let mut replacement = None;
    let replaced = eventually(timeout, || {
        let now = workers_of(sup);
        replacement = now.iter().copied().find(|p| !before.contains(p));
        replacement.is_some()
            && !now.contains(&victim)
            && count.is_none_or(|count| now.len() == count)
    })
    .await;
    replacement.filter(|_| replaced)
}

/// [`eventually`] for an async check, polled every `interval`.
pub async fn eventually_async<C>(
    timeout: Duration,
    interval: Duration,
    check: impl FnMut() -> C,
) -> bool
where
    C: Future<Output = bool>,
{
    poll_until(timeout, interval, check, tokio::time::sleep).await
}

// ---------------------------------------------------------------------------------------------
// HTTP, one connection at a time
// ---------------------------------------------------------------------------------------------

/// What `/health/worker` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerHealth {
    /// The worker slot.
    pub worker_id: u32,
    /// The worker's pid.
    pub pid: u32,
    /// Requests in flight on that worker, this one included.
    pub in_flight: u64,
    /// Requests the worker completed before this one.
    pub requests: u64,
}

/// Parses a `/health/worker` body.
pub fn parse_worker(body: &[u8]) -> Option<WorkerHealth> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    Some(WorkerHealth {
        worker_id: u32::try_from(num("worker_id")?).ok()?,
        pid: u32::try_from(num("pid")?).ok()?,
        in_flight: num("in_flight")?,
        requests: num("requests")?,
    })
}

/// The sending half of one HTTP/1.1 connection.
pub type Sender = http1::SendRequest<Empty<Bytes>>;

/// Opens one HTTP/1.1 connection (no pool, no retries: the test sees every outcome).
pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Like [`connect`], over TLS with `config` when given.
pub async fn connect_with(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Sender, String> {
    let Some(config) = tls else {
        return connect(addr).await;
    };
    let stream = crate::tls::handshake(addr, Arc::clone(config)).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// How one request on one connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// The connection was closed before the request (the server had said `Connection: close`,
    /// or closed it while idle): nothing was sent; use a new connection.
    Closed(String),
    /// The connection closed after the request was queued but before any byte of it was
    /// written: hyper hands it back, safe to resend.
    Unsent(String),
    /// A complete response.
    Done {
        /// The status code.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<String>,
        /// The `Content-Type` header, if any.
        content_type: Option<String>,
        /// The whole body.
        body: Bytes,
    },
    /// The request was (possibly) sent and no complete response came back.
    Failed(String),
}

/// Sends `method path` on `sender` (15 s limit) and reports how it ended.
pub async fn exchange(sender: &mut Sender, method: Method, path: &str, close: bool) -> Outcome {
    if let Err(e) = sender.ready().await {
        return Outcome::Closed(format!("{e}"));
    }
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "palisade.test")
        .header(
            header::CONNECTION,
            if close { "close" } else { "keep-alive" },
        )
        .body(Empty::new())
        .expect("valid request");
    let fut = async {
        match sender.try_send_request(req).await {
            Ok(res) => {
                let status = res.status().as_u16();
                let text = |name: header::HeaderName| {
                    res.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let retry_after = text(header::RETRY_AFTER);
                let content_type = text(header::CONTENT_TYPE);
                match res.into_body().collect().await {
                    Ok(body) => Outcome::Done {
                        status,
                        retry_after,
                        content_type,
                        body: body.to_bytes(),
                    },
                    Err(e) => Outcome::Failed(format!("body: {e:?}")),
                }
            }
            Err(mut e) => {
                if e.take_message().is_some() {
                    Outcome::Unsent(format!("{:?}", e.into_error()))
                } else {
                    Outcome::Failed(format!("{:?}", e.into_error()))
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .unwrap_or_else(|_| Outcome::Failed("timed out".to_owned()))
}

/// `GET /health/worker` on a fresh connection.
pub async fn probe(addr: SocketAddr) -> Result<WorkerHealth, String> {
    let mut sender = connect(addr).await?;
    match exchange(&mut sender, Method::GET, "/health/worker", true).await {
        Outcome::Done {
            status: 200, body, ..
        } => parse_worker(&body).ok_or_else(|| "bad /health/worker body".to_owned()),
        other => Err(format!("{other:?}")),
    }
}

/// `GET path` on a fresh connection; the status.
pub async fn status_of(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut sender = connect(addr).await?;
    match exchange(&mut sender, Method::GET, path, true).await {
        Outcome::Done { status, .. } => Ok(status),
        other => Err(format!("{other:?}")),
    }
}

/// A few concurrent [`probe`]s, so an idle sibling does not win every accept race.
fn spawn_probes(addr: SocketAddr) -> Vec<JoinHandle<Result<WorkerHealth, String>>> {
    (0..4).map(|_| tokio::spawn(probe(addr))).collect()
}

/// Probes with fresh connections until `pid` answers; false after `timeout`.
pub async fn wait_serving(addr: SocketAddr, pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for p in spawn_probes(addr) {
            if matches!(p.await, Ok(Ok(h)) if h.pid == pid) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Probes with fresh connections until every pid in `pids` has answered (or `timeout` passes);
/// what each answering pid said.
pub async fn wait_all_serving(
    addr: SocketAddr,
    pids: &BTreeSet<u32>,
    timeout: Duration,
) -> BTreeMap<u32, WorkerHealth> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeMap::new();
    while Instant::now() < deadline && !pids.iter().all(|p| seen.contains_key(p)) {
        for p in spawn_probes(addr) {
            if let Ok(Ok(h)) = p.await {
                seen.insert(h.pid, h);
            }
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// The supervisor's own counters (admin API)
// ---------------------------------------------------------------------------------------------

/// What the supervisor reports: requests completed by all workers, exited ones included, and
/// the completed requests of each live worker (by pid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// `traffic.requests_total`.
    pub total: u64,
    /// `workers[].requests` by pid.
    pub per_pid: BTreeMap<u32, u64>,
}

/// `GET /admin/v1/{path}` with the server's read-write token; the JSON body of a 200.
pub async fn admin_get(
    server: &ServerProcess,
    client: &Client,
    path: &str,
) -> Result<serde_json::Value, String> {
    let (k, v) = server.admin_auth();
    let res = client
        .request(
            Method::GET,
            &server.admin_url(&format!("/admin/v1/{path}")),
            &[(&k, &v)],
            Bytes::new(),
        )
        .await?;
    if res.status != 200 {
        return Err(format!("{path}: {} {}", res.status, res.text()));
    }
    serde_json::from_slice(&res.body).map_err(|e| format!("{path}: {e}: {}", res.text()))
}

/// The pids of the workers the supervisor reports `ready` (`GET /admin/v1/workers`); empty when
/// the admin endpoint does not answer.
pub async fn ready_workers(server: &ServerProcess, client: &Client) -> BTreeSet<u32> {
    admin_get(server, client, "workers")
        .await
        .map_or_else(|_| BTreeSet::new(), |workers| ready_pids(&workers))
}

/// The pids of the `ready` workers in a `GET /admin/v1/workers` answer.
pub fn ready_pids(workers: &serde_json::Value) -> BTreeSet<u32> {
    workers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["state"] == "ready")
        .filter_map(|w| w["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect()
}

/// Waits until exactly the supervisor's child processes are all `ready` and there are `n` of
/// them: a worker process that exists may still be loading its configuration and certificates.
pub async fn wait_ready_workers(
    server: &ServerProcess,
    client: &Client,
    n: usize,
) -> BTreeSet<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = ready_workers(server, client).await;
        if ready.len() == n && ready == workers_of(server.pid()) {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "{n} ready workers expected, the supervisor reports {ready:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The supervisor's counters from `GET /admin/v1/snapshot`.
pub async fn admin_counts(server: &ServerProcess, client: &Client) -> Result<Counts, String> {
    let snap = admin_get(server, client, "snapshot").await?;
    parse_counts(&snap).ok_or_else(|| format!("bad snapshot: {snap}"))
}

/// The counters of a snapshot.
pub fn parse_counts(snap: &serde_json::Value) -> Option<Counts> {
    let total = snap["traffic"]["requests_total"].as_u64()?;
    let per_pid = snap["workers"]
        .as_array()?
        .iter()
        .filter_map(|w| {
            Some((
                u32::try_from(w["pid"].as_u64()?).ok()?,
                w["requests"].as_u64()?,
            ))
        })
        .collect();
    Some(Counts { total, per_pid })
}

/// Samples the supervisor's counters every 50 ms until stopped.
#[derive(Debug)]
pub struct CountsMonitor {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Counts>>,
}

impl CountsMonitor {
    /// Starts sampling.
    pub fn start(server: &ServerProcess) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let admin_url = server.admin_url("/admin/v1/snapshot");
        let (k, v) = server.admin_auth();
        let task = tokio::spawn(async move {
            let client = Client::new().timeout(Duration::from_secs(5));
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let res = client
                    .request(Method::GET, &admin_url, &[(&k, &v)], Bytes::new())
                    .await;
                if let Some(counts) = res
                    .ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| parse_counts(&r.json()))
                {
                    samples.push(counts);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling; checks that no counter ever went backwards; the number of samples.
    ///
    /// # Panics
    /// When a counter went backwards.
    pub async fn stop_and_check(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.expect("monitor task");
        for pair in samples.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                b.total >= a.total,
                "the supervisor's request total went back from {} to {}",
                a.total,
                b.total
            );
            for (pid, n) in &b.per_pid {
                if let Some(before) = a.per_pid.get(pid) {
                    assert!(
                        n >= before,
                        "worker {pid}'s request count went back from {before} to {n}"
                    );
                }
            }
        }
        samples.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------------

/// What a load task sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/health/worker` in a closed loop on one keep-alive connection (a new one when the
    /// server closes it).
    KeepAlive,
    /// `/health/worker`, one new connection per request (`Connection: close`).
    NewConnection,
    /// `/slow?ms=200` on a keep-alive connection: requests that are in flight at any moment.
    Slow,
}

/// One request the load sent.
#[derive(Debug, Clone)]
pub struct Record {
    /// Which load task sent it.
    pub task: usize,
    /// The task's kind.
    pub kind: Kind,
    /// The worker this keep-alive connection was on before the request, when known.
    pub conn_pid: Option<u32>,
    /// When the request started (including connecting, for a new connection).
    pub start: Instant,
    /// When its outcome was known.
    pub end: Instant,
    /// `Ok(Some(h))` for `/health/worker`, `Ok(None)` for a 200 from `/slow`, `Err(why)`.
    pub result: Result<Option<WorkerHealth>, String>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    unsent: AtomicU64,
    /// Every pid that answered.
    seen: Mutex<BTreeSet<u32>>,
}

/// Load tasks running against a server.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<Vec<Record>>>,
}

/// Every request a [`Load`] sent.
#[derive(Debug)]
pub struct LoadReport {
    /// One record per request sent (unsent-and-resent requests are not records).
    pub records: Vec<Record>,
    /// Requests handed back unsent and sent again.
    pub unsent: u64,
}

impl LoadReport {
    /// The failed requests.
    pub fn failures(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| r.result.is_err()).collect()
    }

    /// The answered requests.
    pub fn ok(&self) -> usize {
        self.records.iter().filter(|r| r.result.is_ok()).count()
    }

    /// Answers per pid.
    pub fn by_pid(&self) -> BTreeMap<u32, Vec<&Record>> {
        let mut out: BTreeMap<u32, Vec<&Record>> = BTreeMap::new();
        for r in &self.records {
            if let Ok(Some(h)) = &r.result {
                out.entry(h.pid).or_default().push(r);
            }
        }
        out
    }

    /// Checks that each process's completed-request counter never goes backwards: a request
    /// that started after another one (to the same pid) ended must see a higher count.
    ///
    /// # Panics
    /// When it does.
    pub fn assert_counters_monotonic(&self) {
        for (pid, mut recs) in self.by_pid() {
            let count = |r: &Record| match &r.result {
                Ok(Some(h)) => h.requests,
                _ => unreachable!("by_pid only holds answers"),
            };
            recs.sort_by_key(|r| r.start);
            let mut by_end = recs.clone();
            by_end.sort_by_key(|r| r.end);
            let mut i = 0;
            let mut max_before: Option<u64> = None;
            for r in &recs {
                while i < by_end.len() && by_end[i].end < r.start {
                    max_before = max_before.max(Some(count(by_end[i])));
                    i += 1;
                }
                if let Some(m) = max_before {
                    assert!(
                        count(r) > m,
                        "pid {pid}: requests counter went from {m} to {} for a later request",
                        count(r)
                    );
                }
            }
        }
    }

    /// Up to 20 failures, one line each.
    pub fn describe_failures(&self) -> String {
        self.failures()
            .iter()
            .take(20)
            .map(|r| {
                format!(
                    "task {} {:?} conn_pid={:?} after {:?}: {}",
                    r.task,
                    r.kind,
                    r.conn_pid,
                    r.end - r.start,
                    r.result.as_ref().err().map_or("", String::as_str)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Load {
    /// Starts `keep_alive` + `new_conn` + `slow` tasks against `addr`.
    pub fn start(addr: SocketAddr, keep_alive: usize, new_conn: usize, slow: usize) -> Self {
        Self::start_paced(addr, keep_alive, new_conn, slow, Duration::ZERO)
    }

    /// Like [`Load::start`], each task pausing `pace` between requests.
    pub fn start_paced(
        addr: SocketAddr,
        keep_alive: usize,
        new_conn: usize,
        slow: usize,
        pace: Duration,
    ) -> Self {
        Self::start_with(addr, None, keep_alive, new_conn, slow, pace)
    }

    /// Like [`Load::start`], over TLS with `tls` (which should offer `http/1.1` or no ALPN).
    pub fn start_tls(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        keep_alive: usize,
        new_conn: usize,
        slow: usize,
    ) -> Self {
        Self::start_with(addr, Some(tls), keep_alive, new_conn, slow, Duration::ZERO)
    }

    fn start_with(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        keep_alive: usize,
        new_conn: usize,
        slow: usize,
        pace: Duration,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let kinds = std::iter::repeat_n(Kind::KeepAlive, keep_alive)
            .chain(std::iter::repeat_n(Kind::NewConnection, new_conn))
            .chain(std::iter::repeat_n(Kind::Slow, slow));
        let tasks = kinds
            .enumerate()
            .map(|(task, kind)| {
                let tls = tls.clone();
                tokio::spawn(load_task(addr, tls, task, kind, pace, Arc::clone(&shared)))
            })
            .collect();
        Self { shared, tasks }
    }

    /// Requests answered so far.
    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::Relaxed)
    }

    /// Requests failed so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Every pid that answered so far.
    pub async fn seen(&self) -> BTreeSet<u32> {
        self.shared.seen.lock().await.clone()
    }

    /// Waits until at least `n` more requests completed; false after `timeout`.
    pub async fn progress(&self, n: u64, timeout: Duration) -> bool {
        let target = self.ok() + n;
        eventually(timeout, || self.ok() >= target).await
    }

    /// Stops every task and collects what they sent.
    ///
    /// # Panics
    /// When a load task panicked.
    pub async fn stop(self) -> LoadReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut records = Vec::new();
        for t in self.tasks {
            records.extend(t.await.expect("load task panicked"));
        }
        LoadReport {
            records,
            unsent: self.shared.unsent.load(Ordering::Relaxed),
        }
    }
}

/// One load task: sends `kind` requests until stopped, pausing `pace` after each one it records.
async fn load_task(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    task: usize,
    kind: Kind,
    pace: Duration,
    shared: Arc<Shared>,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut conn: Option<(Sender, Option<u32>)> = None;
    let (path, close) = match kind {
        Kind::KeepAlive => ("/health/worker", false),
        Kind::NewConnection => ("/health/worker", true),
        Kind::Slow => ("/slow?ms=200", false),
    };
    let mut unsent_in_a_row = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let reused = conn.is_some();
        let (mut sender, conn_pid) = match conn.take() {
            Some(c) => c,
            None => match connect_with(addr, tls.as_ref()).await {
                Ok(s) => (s, None),
                Err(e) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    records.push(Record {
                        task,
                        kind,
                        conn_pid: None,
                        start,
                        end: Instant::now(),
                        result: Err(e),
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let outcome = exchange(&mut sender, Method::GET, path, close).await;
        let end = Instant::now();
        let result = match outcome {
            // The previous response closed this connection: open a new one.
            Outcome::Closed(_) if reused => continue,
            Outcome::Closed(why) | Outcome::Unsent(why) => {
                shared.unsent.fetch_add(1, Ordering::Relaxed);
                unsent_in_a_row += 1;
                assert!(
                    unsent_in_a_row < 1000,
                    "the server keeps closing connections before any request: {why}"
                );
                continue;
            }
            Outcome::Done {
                status: 200, body, ..
            } => {
                if kind == Kind::Slow {
                    Ok(None)
                } else {
                    parse_worker(&body)
                        .map(Some)
                        .ok_or_else(|| format!("bad body: {body:?}"))
                }
            }
            Outcome::Done { status, body, .. } => Err(format!("status {status}: {body:?}")),
            Outcome::Failed(e) => Err(e),
        };
        unsent_in_a_row = 0;
        match &result {
            Ok(h) => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if let Some(h) = h {
                    shared.seen.lock().await.insert(h.pid);
                }
                if !close {
                    let pid = h.map(|h| h.pid).or(conn_pid);
                    conn = Some((sender, pid));
                }
            }
            Err(_) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        records.push(Record {
            task,
            kind,
            conn_pid,
            start,
            end,
            result,
        });
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    records
}
