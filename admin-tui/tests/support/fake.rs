//! A fake admin API for tests and manual runs (`cargo run -p palisade-top --example
//! fake_admin`): the real JSON model, SSE, bearer auth, If-Match, validation errors as
//! problem+json, operator actions and an audit log, with traffic that moves.
//!
//! Shared by `tests/connection.rs` and `examples/fake_admin.rs` through `#[path]`.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::{Stream, StreamExt, stream};
use palisade::control::model::{
    AuditEntry, LatencyWindow, SCHEMA_VERSION, ServerInfo, Snapshot, StatusCounts, Traffic,
    WorkerInfo,
};
use palisade::control::{ComponentKind, ComponentSnapshot, FieldError};
use palisade::problem::Problem;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;

fn now_ms() -> u64 {
    palisade_top::format::now_ms()
}

#[derive(Debug, Clone)]
pub struct FakeWorker {
    pub id: u32,
    pub pid: u32,
    pub state: String,
    pub started_ms: u64,
    pub requests: u64,
    pub restarts: u32,
    pub drain_left: u32,
}

#[derive(Debug, Clone)]
pub struct FakeComponent {
    pub kind: ComponentKind,
    pub version: u64,
    pub settings: Value,
    pub stats: Value,
    pub actions: Vec<String>,
}

/// Everything the fake server knows.
#[derive(Debug)]
pub struct FakeState {
    pub started_ms: u64,
    pub seq: u64,
    pub last_ms: u64,
    pub requests: u64,
    pub status: StatusCounts,
    pub workers: Vec<FakeWorker>,
    pub components: BTreeMap<String, FakeComponent>,
    pub audit: Vec<AuditEntry>,
    pub next_pid: u32,
    /// Requests received per `METHOD path`.
    pub hits: BTreeMap<String, u32>,
}

impl FakeState {
    pub fn new(workers: u32) -> Self {
        let now = now_ms();
        let mut s = Self {
            started_ms: now - 3_723_000,
            seq: 0,
            last_ms: now,
            requests: 1_000_000,
            status: StatusCounts {
                success: 990_000,
                redirection: 2_000,
                client_error: 7_000,
                server_error: 1_000,
                informational: 0,
            },
            workers: Vec::new(),
            components: BTreeMap::new(),
            audit: Vec::new(),
            next_pid: 4243,
            hits: BTreeMap::new(),
        };
        for id in 0..workers {
            s.spawn_worker(id, 0);
        }
        let limit = |rate: u64, per: u64, burst: u64, mode: &str| FakeComponent {
            kind: ComponentKind::Limit,
            version: 1,
            settings: json!({"rate": rate, "per_secs": per, "burst": burst, "mode": mode}),
            stats: json!({"allowed": 0, "rejected": 0, "shadow_rejected": 0, "keys": 12}),
            actions: vec!["reset".into()],
        };
        s.components
            .insert("api".into(), limit(100, 1, 20, "enforce"));
        s.components
            .insert("login".into(), limit(5, 60, 5, "shadow"));
        let breaker = |state: &str| FakeComponent {
            kind: ComponentKind::Breaker,
            version: 1,
            settings: json!({"failure_threshold": 0.5, "min_calls": 20, "open_secs": 10}),
            stats: json!({"state": state, "failure_rate": 0.0, "calls": 0, "transitions": 0}),
            actions: vec!["force_open".into(), "force_closed".into(), "reset".into()],
        };
        s.components.insert("users-db".into(), breaker("closed"));
        s.components.insert("payments".into(), breaker("half_open"));
        s.components.insert(
            "responses".into(),
            FakeComponent {
                kind: ComponentKind::Cache,
                version: 1,
                settings: json!({"ttl_secs": 60, "max_entries": 10_000}),
                stats: json!({
                    "l1": {"hits": 0, "misses": 0, "entries": 0, "evictions": 0},
                    "l2": {"hits": 0, "misses": 0, "errors": 0}
                }),
                actions: vec![
                    "invalidate".into(),
                    "invalidate_prefix".into(),
                    "flush".into(),
                ],
            },
        );
        s
    }

    fn spawn_worker(&mut self, id: u32, restarts: u32) {
        let pid = self.next_pid;
        self.next_pid += 7;
        let w = FakeWorker {
            id,
            pid,
            state: "ready".into(),
            started_ms: now_ms(),
            requests: 0,
            restarts,
            drain_left: 0,
        };
        match self.workers.iter_mut().find(|w| w.id == id) {
            Some(slot) => *slot = w,
            None => self.workers.push(w),
        }
    }

    fn record(&mut self, actor: &str, action: &str, target: &str, before: Value, after: Value) {
        let seq = self.audit.last().map_or(1, |a| a.seq + 1);
        self.audit.push(AuditEntry {
            seq,
            at_ms: now_ms(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            before,
            after,
            ..AuditEntry::default()
        });
        if self.audit.len() > 50 {
            self.audit.remove(0);
        }
    }

    /// Advances traffic by the time since the last snapshot and returns a new snapshot.
    pub fn snapshot(&mut self) -> Snapshot {
        let now = now_ms().max(self.last_ms + 1);
        let dt = (now - self.last_ms) as f64 / 1000.0;
        self.last_ms = now;
        self.seq += 1;
        let t = (now - self.started_ms) as f64 / 1000.0;
        let rps = 400.0 + 150.0 * (t / 7.0).sin();
        let n = (rps * dt).round() as u64;
        self.requests += n;
        let errors5 = n / 100;
        let errors4 = n * 3 / 100;
        self.status.server_error += errors5;
        self.status.client_error += errors4;
        self.status.success += n - errors4 - errors5;
        let ready: Vec<usize> = (0..self.workers.len())
            .filter(|i| self.workers[*i].state == "ready")
            .collect();
        for (k, i) in ready.iter().enumerate() {
            let share = if k == 0 {
                n - n / 2 * (ready.len() as u64 - 1).min(1)
            } else {
                n / 2 / (ready.len() as u64 - 1).max(1)
            };
            self.workers[*i].requests += share;
        }
        let draining: Vec<u32> = self
            .workers
            .iter_mut()
            .filter(|w| w.state == "draining")
            .filter_map(|w| {
                w.drain_left = w.drain_left.saturating_sub(1);
                (w.drain_left == 0).then_some(w.id)
            })
            .collect();
        for id in draining {
            let restarts = self
                .workers
                .iter()
                .find(|w| w.id == id)
                .map_or(0, |w| w.restarts);
            self.spawn_worker(id, restarts);
        }
        for c in self.components.values_mut() {
            bump(c, n);
        }
        let wave = |base: f64, amp: f64, period: f64| base + amp * (t / period).sin().abs();
        let window = |secs: u64, f: f64| LatencyWindow {
            window_secs: secs,
            count: (rps * secs as f64) as u64,
            p50_ms: wave(1.1, 0.4, 5.0) * f,
            p90_ms: wave(3.2, 1.2, 6.0) * f,
            p99_ms: wave(11.0, 6.0, 9.0) * f,
            p999_ms: 40.0 * f,
            max_ms: 95.0 * f,
        };
        let server_uptime = (now - self.started_ms) / 1000;
        Snapshot {
            schema: SCHEMA_VERSION,
            seq: self.seq,
            taken_at_ms: now,
            server: ServerInfo {
                name: "palisade".into(),
                version: "0.1.0".into(),
                pid: 4242,
                mode: "supervisor".into(),
                uptime_secs: server_uptime,
                listen: Some("127.0.0.1:8080".into()),
            },
            workers: self
                .workers
                .iter()
                .map(|w| WorkerInfo {
                    id: w.id,
                    pid: w.pid,
                    state: w.state.clone(),
                    uptime_secs: (now - w.started_ms) / 1000,
                    requests: w.requests,
                    in_flight: u64::from(w.id % 3) + 1,
                    rss_bytes: 22_000_000 + u64::from(w.id) * 1_300_000,
                    restarts: w.restarts,
                    loop_lag_ms: 0.2 + f64::from(w.id) * 0.05,
                    p99_ms: Some(wave(11.0, 6.0, 9.0) + f64::from(w.id)),
                })
                .collect(),
            traffic: Traffic {
                requests_total: self.requests,
                in_flight: 4,
                status: self.status,
                latency: vec![window(10, 1.0), window(60, 0.95)],
            },
            limits: self.list(ComponentKind::Limit),
            breakers: self.list(ComponentKind::Breaker),
            caches: self.list(ComponentKind::Cache),
            audit: self.audit.clone(),
        }
    }

    fn list(&self, kind: ComponentKind) -> Vec<ComponentSnapshot> {
        self.components
            .iter()
            .filter(|(_, c)| c.kind == kind)
            .map(|(name, c)| ComponentSnapshot {
                name: name.clone(),
                kind,
                version: c.version,
                settings: c.settings.clone(),
                stats: c.stats.clone(),
                actions: c.actions.clone(),
            })
            .collect()
    }
}

fn add(v: &mut Value, key: &str, n: u64) {
    let cur = v[key].as_u64().unwrap_or(0);
    v[key] = json!(cur + n);
}

fn bump(c: &mut FakeComponent, n: u64) {
    match c.kind {
        ComponentKind::Limit => {
            let burst = c.settings["burst"].as_u64().unwrap_or(1);
            let rejected = n / (burst * 5).max(1);
            if c.settings["mode"] == "shadow" {
                add(&mut c.stats, "allowed", n);
                add(&mut c.stats, "shadow_rejected", rejected);
            } else if c.settings["mode"] == "off" {
                add(&mut c.stats, "allowed", n);
            } else {
                add(&mut c.stats, "allowed", n - rejected);
                add(&mut c.stats, "rejected", rejected);
            }
        }
        ComponentKind::Breaker => {
            add(&mut c.stats, "calls", n / 4);
            let rate = match c.stats["state"].as_str() {
                Some("open" | "forced_open") => 0.8,
                Some("half_open") => 0.3,
                _ => 0.01,
            };
            c.stats["failure_rate"] = json!(rate);
        }
        ComponentKind::Cache => {
            add(&mut c.stats["l1"], "hits", n * 9 / 10);
            add(&mut c.stats["l1"], "misses", n / 10);
            c.stats["l1"]["entries"] =
                json!((c.stats["l1"]["entries"].as_u64().unwrap_or(0) + n / 20).min(10_000));
            add(&mut c.stats["l2"], "hits", n / 14);
            add(&mut c.stats["l2"], "misses", n / 33);
        }
    }
}

/// Server configuration and shared state.
#[derive(Clone)]
pub struct Fake {
    pub token: String,
    pub stream: bool,
    pub interval: Duration,
    pub state: Arc<Mutex<FakeState>>,
    pub shutdown: watch::Receiver<bool>,
}

impl Fake {
    pub fn new(
        token: &str,
        workers: u32,
        stream: bool,
        interval: Duration,
    ) -> (Self, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            Self {
                token: token.into(),
                stream,
                interval,
                state: Arc::new(Mutex::new(FakeState::new(workers))),
                shutdown: rx,
            },
            tx,
        )
    }

    pub fn hits(&self, key: &str) -> u32 {
        self.state.lock().hits.get(key).copied().unwrap_or(0)
    }

    pub fn settings(&self, name: &str) -> Value {
        self.state.lock().components[name].settings.clone()
    }
}

fn problem(status: StatusCode, title: &str, detail: &str, errors: Vec<FieldError>) -> Response {
    let mut p = Problem::new(status, title).detail(detail);
    if !errors.is_empty() {
        p = p.with("errors", errors);
    }
    p.into_response::<axum::body::Body>()
}

fn authorized(fake: &Fake, headers: &HeaderMap, what: String) -> Result<(), Box<Response>> {
    *fake.state.lock().hits.entry(what).or_default() += 1;
    let expected = format!("Bearer {}", fake.token);
    match headers.get(header::AUTHORIZATION) {
        Some(v) if v.as_bytes() == expected.as_bytes() => Ok(()),
        Some(_) => Err(Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid bearer token",
            vec![],
        ))),
        None => Err(Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing bearer token",
            vec![],
        ))),
    }
}

async fn snapshot(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&fake, &headers, "GET snapshot".into()) {
        return *r;
    }
    let s = fake.state.lock().snapshot();
    axum::Json(s).into_response()
}

async fn sse(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&fake, &headers, "GET stream".into()) {
        return *r;
    }
    if !fake.stream {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            "no event stream here",
            vec![],
        );
    }
    let interval = fake.interval;
    let state = Arc::clone(&fake.state);
    let ticks = stream::unfold(tokio::time::interval(interval), |mut iv| async move {
        iv.tick().await;
        Some(((), iv))
    });
    let events = ticks.map(move |()| {
        let s = state.lock().snapshot();
        Ok::<_, Infallible>(
            Event::default()
                .event("snapshot")
                .id(s.seq.to_string())
                .json_data(&s)
                .unwrap_or_default(),
        )
    });
    let mut shutdown = fake.shutdown;
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(events.take_until(stop));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}

/// Validates a merge-patch of rate-limit settings; all-or-nothing.
fn validate_limit(current: &Value, patch: &Value) -> Result<Value, Vec<FieldError>> {
    let Value::Object(changes) = patch else {
        return Err(vec![FieldError::new("", "a change must be a JSON object")]);
    };
    let mut next = current.clone();
    let mut errors = Vec::new();
    for (k, v) in changes {
        match k.as_str() {
            "rate" | "per_secs" | "burst" => match v.as_u64() {
                Some(n) if n >= 1 => next[k] = json!(n),
                _ => errors.push(FieldError::new(
                    k.clone(),
                    format!("must be an integer of at least 1 (got {v})"),
                )),
            },
            "mode" => match v.as_str() {
                Some("enforce" | "shadow" | "off") => next[k] = v.clone(),
                _ => errors.push(FieldError::new(
                    "mode",
                    format!("must be enforce, shadow or off (got {v})"),
                )),
            },
            other => errors.push(FieldError::new(other, "unknown field")),
        }
    }
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(errors)
    }
}

async fn put_limit(
    State(fake): State<Fake>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorized(&fake, &headers, format!("PUT limits/{name}")) {
        return *r;
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "body is not JSON",
            vec![],
        );
    };
    let mut st = fake.state.lock();
    let Some(c) = st
        .components
        .get(&name)
        .filter(|c| c.kind == ComponentKind::Limit)
        .cloned()
    else {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("no limit `{name}`"),
            vec![],
        );
    };
    let tag = format!("\"{}\"", c.version);
    match headers.get(header::IF_MATCH) {
        Some(v) if v.as_bytes() == tag.as_bytes() => {}
        Some(_) => {
            return problem(
                StatusCode::PRECONDITION_FAILED,
                "Precondition Failed",
                &format!("limits/{name} is at version {}", c.version),
                vec![],
            );
        }
        None => {}
    }
    match validate_limit(&c.settings, &patch) {
        Err(errors) => problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &format!("invalid settings for limits/{name}"),
            errors,
        ),
        Ok(next) => {
            let before = c.settings.clone();
            if let Some(slot) = st.components.get_mut(&name) {
                slot.settings = next.clone();
                slot.version += 1;
            }
            st.record(
                "admin",
                "update",
                &format!("limits/{name}"),
                before,
                next.clone(),
            );
            let version = c.version + 1;
            let mut res = axum::Json(json!({"name": name, "version": version, "settings": next}))
                .into_response();
            if let Ok(v) = header::HeaderValue::from_str(&format!("\"{version}\"")) {
                res.headers_mut().insert(header::ETAG, v);
            }
            res
        }
    }
}

async fn action(
    State(fake): State<Fake>,
    Path((kind, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorized(&fake, &headers, format!("POST {kind}/{name}/{action}")) {
        return *r;
    }
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = fake.state.lock();
    let Some(c) = st.components.get_mut(&name) else {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("no component `{name}`"),
            vec![],
        );
    };
    if c.kind.plural() != kind {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("no {kind} `{name}`"),
            vec![],
        );
    }
    let before = c.stats.clone();
    match (c.kind, action.as_str()) {
        (ComponentKind::Breaker, "force_open") => c.stats["state"] = json!("forced_open"),
        (ComponentKind::Breaker, "force_closed") => c.stats["state"] = json!("forced_closed"),
        (ComponentKind::Breaker, "reset") => c.stats["state"] = json!("closed"),
        (ComponentKind::Cache, "flush") => c.stats["l1"]["entries"] = json!(0),
        (ComponentKind::Cache, "invalidate") if args["key"].is_string() => {}
        (ComponentKind::Cache, "invalidate_prefix") if args["prefix"].is_string() => {}
        (ComponentKind::Limit, "reset") => {}
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!("action `{action}` refused"),
                vec![FieldError::new(
                    "action",
                    format!("unknown action or missing argument: {args}"),
                )],
            );
        }
    }
    if c.kind == ComponentKind::Breaker {
        add(&mut c.stats, "transitions", 1);
    }
    let after = c.stats.get("state").cloned().unwrap_or(Value::Null);
    let before = before.get("state").cloned().unwrap_or(Value::Null);
    st.record(
        "admin",
        &format!("action:{action}"),
        &format!("{kind}/{name}"),
        before,
        after,
    );
    axum::Json(json!({"ok": true})).into_response()
}

async fn scale(State(fake): State<Fake>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorized(&fake, &headers, "POST scale".into()) {
        return *r;
    }
    let n = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["workers"].as_u64());
    let Some(n) = n.filter(|n| (1..=64).contains(n)) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "invalid scale",
            vec![FieldError::new("workers", "must be between 1 and 64")],
        );
    };
    let mut st = fake.state.lock();
    let before = st.workers.len();
    let n = usize::try_from(n).unwrap_or(1);
    st.workers.truncate(n);
    while st.workers.len() < n {
        let id = u32::try_from(st.workers.len()).unwrap_or(0);
        st.spawn_worker(id, 0);
    }
    st.record("admin", "scale", "workers", json!(before), json!(n));
    axum::Json(json!({"workers": n})).into_response()
}

async fn restart(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&fake, &headers, "POST restart".into()) {
        return *r;
    }
    let mut st = fake.state.lock();
    for w in &mut st.workers {
        w.state = "draining".into();
        w.drain_left = 2 + w.id * 2;
    }
    st.record("admin", "restart", "workers", Value::Null, Value::Null);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"restarting": true})),
    )
        .into_response()
}

async fn drain(State(fake): State<Fake>, Path(id): Path<u32>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&fake, &headers, format!("POST drain/{id}")) {
        return *r;
    }
    let mut st = fake.state.lock();
    let Some(w) = st.workers.iter_mut().find(|w| w.id == id) else {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("no worker {id}"),
            vec![],
        );
    };
    w.state = "draining".into();
    w.drain_left = 3;
    w.restarts += 1;
    st.record(
        "admin",
        "drain",
        &format!("workers/{id}"),
        Value::Null,
        Value::Null,
    );
    (StatusCode::ACCEPTED, axum::Json(json!({"draining": id}))).into_response()
}

pub fn router(fake: Fake) -> Router {
    Router::new()
        .route("/admin/v1/snapshot", get(snapshot))
        .route("/admin/v1/stream", get(sse))
        .route("/admin/v1/limits/{name}", put(put_limit))
        .route("/admin/v1/{kind}/{name}/actions/{action}", post(action))
        .route("/admin/v1/workers/scale", post(scale))
        .route("/admin/v1/workers/restart", post(restart))
        .route("/admin/v1/workers/{id}/drain", post(drain))
        .with_state(fake)
}

/// Serves until `shutdown` turns true (SSE streams end first, so the graceful shutdown does not
/// hang on them).
pub async fn serve(listener: tokio::net::TcpListener, fake: Fake) {
    let mut shutdown = fake.shutdown.clone();
    let app = router(fake);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
}
