//! The admin router over real sockets: schema, stream, changes, concurrency, TTL, auth, limits,
//! audit, actions, worker operations and the OpenAPI document.
#![cfg(feature = "admin")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use palisade::admin::{self, Admin, AdminBackend, AdminConfig, AdminConfigBuilder, BackendError};
use palisade::control::model::{ServerInfo, Snapshot, Traffic, WorkerInfo};
use palisade::control::{Change, ComponentKind, DynComponent, FieldError, Registry, merge_patch};
use palisade_tests::http::{Client, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const RW: &str = "rw-0123456789abcdef0123456789abcdef";
const RO: &str = "ro-0123456789abcdef0123456789abcdef";

// === test components ===

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSettings {
    rate: u32,
    burst: u32,
    mode: String,
}

/// A rate-limit-like component: typed settings, merge-patch, validation, atomic swap.
#[derive(Debug)]
struct TestLimit {
    settings: ArcSwap<LimitSettings>,
    version: AtomicU64,
}

impl TestLimit {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(LimitSettings {
                rate: 100,
                burst: 20,
                mode: "enforce".into(),
            }),
            version: AtomicU64::new(1),
        })
    }

    fn current(&self) -> LimitSettings {
        (**self.settings.load()).clone()
    }
}

impl DynComponent for TestLimit {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Limit
    }
    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
    fn settings(&self) -> Value {
        serde_json::to_value(self.current()).unwrap()
    }
    fn stats(&self) -> Value {
        json!({ "allowed_total": 7, "rejected_total": 1 })
    }
    fn apply(&self, patch: &Value, dry_run: bool) -> Result<Change, Vec<FieldError>> {
        let current = self.settings.load_full();
        let next: LimitSettings = merge_patch(&*current, patch)?;
        let mut errors = Vec::new();
        if next.rate == 0 {
            errors.push(FieldError::new("rate", "must be at least 1 (got 0)"));
        }
        if !(1..=10_000).contains(&next.burst) {
            errors.push(FieldError::new(
                "burst",
                format!("must be from 1 to 10000 (got {})", next.burst),
            ));
        }
        if !["enforce", "shadow", "off"].contains(&next.mode.as_str()) {
            errors.push(FieldError::new("mode", "must be enforce, shadow or off"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let change = Change {
            before: serde_json::to_value(&*current).unwrap(),
            after: serde_json::to_value(&next).unwrap(),
        };
        if !dry_run {
            self.settings.store(Arc::new(next));
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        Ok(change)
    }
}

/// A breaker-like component whose actions force its state.
#[derive(Debug)]
struct TestBreaker {
    state: Mutex<&'static str>,
}

impl DynComponent for TestBreaker {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Breaker
    }
    fn version(&self) -> u64 {
        1
    }
    fn settings(&self) -> Value {
        json!({ "failure_rate": 0.5 })
    }
    fn stats(&self) -> Value {
        json!({ "state": *self.state.lock() })
    }
    fn apply(&self, _patch: &Value, _dry_run: bool) -> Result<Change, Vec<FieldError>> {
        Err(vec![FieldError::new("", "read-only in this test")])
    }
    fn action(&self, action: &str, _args: &Value) -> Result<Value, Vec<FieldError>> {
        let state = match action {
            "force_open" => "forced_open",
            "force_closed" => "forced_closed",
            "reset" => "closed",
            other => {
                return Err(vec![FieldError::new(
                    "action",
                    format!("unknown action `{other}`"),
                )]);
            }
        };
        *self.state.lock() = state;
        Ok(json!({ "state": state }))
    }
    fn actions(&self) -> &'static [&'static str] {
        &["force_open", "force_closed", "reset"]
    }
}

/// A cache-like component with key and prefix invalidation.
#[derive(Debug)]
struct TestCache {
    keys: Mutex<BTreeSet<String>>,
}

impl DynComponent for TestCache {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Cache
    }
    fn version(&self) -> u64 {
        1
    }
    fn settings(&self) -> Value {
        json!({ "capacity_bytes": 1_048_576 })
    }
    fn stats(&self) -> Value {
        json!({ "entries": self.keys.lock().len() })
    }
    fn apply(&self, _patch: &Value, _dry_run: bool) -> Result<Change, Vec<FieldError>> {
        Err(vec![FieldError::new("", "read-only in this test")])
    }
    fn action(&self, action: &str, args: &Value) -> Result<Value, Vec<FieldError>> {
        let mut keys = self.keys.lock();
        let before = keys.len();
        match action {
            "invalidate" => {
                let key = args["key"]
                    .as_str()
                    .ok_or_else(|| vec![FieldError::new("key", "is required (a string)")])?;
                keys.remove(key);
            }
            "invalidate_prefix" => {
                let prefix = args["prefix"]
                    .as_str()
                    .ok_or_else(|| vec![FieldError::new("prefix", "is required (a string)")])?;
                keys.retain(|k| !k.starts_with(prefix));
            }
            "flush" => keys.clear(),
            other => {
                return Err(vec![FieldError::new(
                    "action",
                    format!("unknown action `{other}`"),
                )]);
            }
        }
        Ok(json!({ "removed": before - keys.len() }))
    }
    fn actions(&self) -> &'static [&'static str] {
        &["invalidate", "invalidate_prefix", "flush"]
    }
}

// === harness ===

struct Harness {
    addr: SocketAddr,
    client: Client,
    admin: Admin,
    limit: Arc<TestLimit>,
    breaker: Arc<TestBreaker>,
    cache: Arc<TestCache>,
}

fn tokens() -> AdminConfigBuilder {
    AdminConfig::builder()
        .read_write_token("ops", RW)
        .read_only_token("viewer", RO)
}

async fn start(config: AdminConfigBuilder) -> Harness {
    let registry = Registry::new();
    let limit = TestLimit::new();
    let breaker = Arc::new(TestBreaker {
        state: Mutex::new("closed"),
    });
    let cache = Arc::new(TestCache {
        keys: Mutex::new(
            ["a/1", "a/2", "b/1"]
                .into_iter()
                .map(String::from)
                .collect(),
        ),
    });
    registry.register("api", limit.clone()).unwrap();
    registry.register("upstream", breaker.clone()).unwrap();
    registry.register("pages", cache.clone()).unwrap();
    let admin = Admin::new(registry, config.build().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = admin.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Harness {
        addr,
        client: Client::new(),
        admin,
        limit,
        breaker,
        cache,
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            all.push(("authorization", a));
        }
        let body = match body {
            Some(v) => {
                all.push(("content-type", "application/json"));
                Bytes::from(serde_json::to_vec(&v).unwrap())
            }
            None => Bytes::new(),
        };
        self.client
            .request(method, &self.url(path), &all, body)
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, Some(RW), &[], None).await
    }

    async fn put(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Response {
        self.send(Method::PUT, path, Some(RW), headers, Some(body))
            .await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> Response {
        self.send(Method::POST, path, Some(RW), &[], body).await
    }
}

fn assert_problem(res: &Response, status: u16) -> Value {
    assert_eq!(res.status.as_u16(), status, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    let body = res.json();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string());
    body
}

fn fields(problem: &Value) -> Vec<String> {
    let mut out: Vec<String> = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors member in {problem}"))
        .iter()
        .map(|e| {
            assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
            e["field"].as_str().unwrap().to_owned()
        })
        .collect();
    out.sort();
    out
}

// === OpenAPI and schema ===

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local refs: {reference}"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("unresolved $ref {reference}"))
}

/// A small JSON Schema subset (what docs/openapi.json uses): $ref, type, enum, required,
/// properties, additionalProperties: false, items, minimum, maximum.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return validate(doc, resolve(doc, r), value, at, errors);
    }
    if let Some(ty) = schema.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type at {at}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !ok {
            errors.push(format!("{at}: expected {types:?}, got {value}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} not in {options:?}"));
    }
    if let (Some(min), Some(v)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && v < min
    {
        errors.push(format!("{at}: {v} < minimum {min}"));
    }
    if let (Some(max), Some(v)) = (
        schema.get("maximum").and_then(Value::as_f64),
        value.as_f64(),
    ) && v > max
    {
        errors.push(format!("{at}: {v} > maximum {max}"));
    }
    if let Some(obj) = value.as_object() {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                errors.push(format!("{at}: missing required `{req}`"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{k}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: unexpected `{k}`"));
                }
                None => {}
            }
        }
        // Every documented property of a produced object must exist (catches a rename that
        // the doc missed) unless it is optional in the model.
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

fn assert_valid(schema_name: &str, value: &Value) {
    let doc = openapi();
    let schema = json!({ "$ref": format!("#/components/schemas/{schema_name}") });
    let mut errors = Vec::new();
    validate(&doc, &schema, value, schema_name, &mut errors);
    assert!(
        errors.is_empty(),
        "{schema_name} does not match the OpenAPI schema: {errors:#?}"
    );
}

fn assert_valid_list(schema_name: &str, value: &Value) {
    let items = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"));
    for item in items {
        assert_valid(schema_name, item);
    }
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes() {
    let doc = openapi();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Routes the reference server adds next to the router (its `/metrics`).
            if operation["x-palisade-server-only"] == true {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} lacks 401"
            );
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} lacks operationId"
            );
        }
    }
    let routed: BTreeSet<_> = admin::routes()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(
        documented, routed,
        "docs/openapi.json and admin::routes() differ"
    );

    // Every $ref in the document resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20);
    for r in all {
        resolve(&doc, r);
    }

    // Every listed route is really served: a routed request answers with a JSON or problem
    // body, never axum's empty 404 for an unknown path.
    let h = start(tokens()).await;
    for (method, path) in admin::routes() {
        if path.ends_with("/stream") {
            continue; // endless; covered by the stream tests
        }
        let concrete = path
            .replace("{name}", "nope")
            .replace("{action}", "reset")
            .replace("{id}", "0");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let res = h.send(method.clone(), &concrete, Some(RW), &[], None).await;
        let ct = res.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json") || ct == "application/problem+json",
            "{method} {concrete} answered {} with content-type {ct:?}",
            res.status
        );
    }
}

#[tokio::test]
async fn snapshot_has_the_documented_shape() {
    let h = start(tokens()).await;
    let res = h
        .put("/admin/v1/limits/api", &[], json!({"burst": 30}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    let res = h.get("/admin/v1/snapshot").await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let body = res.json();
    assert_valid("Snapshot", &body);

    let snap: Snapshot = serde_json::from_value(body).unwrap();
    assert_eq!(snap.schema, palisade::control::model::SCHEMA_VERSION);
    assert_eq!(snap.server.pid, std::process::id());
    assert_eq!(snap.server.mode, "library");
    assert_eq!(snap.workers.len(), 1);
    assert_eq!(
        (snap.workers[0].id, snap.workers[0].pid),
        (0, std::process::id())
    );
    assert_eq!(snap.limits.len(), 1);
    assert_eq!(snap.limits[0].name, "api");
    assert_eq!(snap.limits[0].settings["burst"], 30);
    assert_eq!(snap.limits[0].stats["allowed_total"], 7);
    assert_eq!(snap.breakers[0].name, "upstream");
    assert_eq!(
        snap.breakers[0].actions,
        ["force_open", "force_closed", "reset"]
    );
    assert_eq!(snap.caches[0].name, "pages");
    assert_eq!(snap.audit.len(), 1);
    assert_eq!(snap.audit[0].action, "update");

    let next: Snapshot = serde_json::from_value(h.get("/admin/v1/snapshot").await.json()).unwrap();
    assert!(next.seq > snap.seq);
    assert!(next.taken_at_ms >= snap.taken_at_ms);

    let lists = [
        ("/admin/v1/limits", "api"),
        ("/admin/v1/breakers", "upstream"),
        ("/admin/v1/caches", "pages"),
    ];
    for (path, name) in lists {
        let body = h.get(path).await.json();
        assert_valid_list("ComponentSnapshot", &body);
        assert_eq!(body[0]["name"], name);
    }
    let workers = h.get("/admin/v1/workers").await.json();
    assert_valid_list("WorkerInfo", &workers);
    let audit = h.get("/admin/v1/audit").await.json();
    assert_valid_list("AuditEntry", &audit);
}

#[tokio::test]
async fn snapshot_traffic_comes_from_the_backend_closure() {
    let backend = admin::LocalBackend::new()
        .name("svc")
        .listen("127.0.0.1:8080")
        .traffic(|| {
            let mut t = Traffic {
                requests_total: 12,
                in_flight: 2,
                ..Traffic::default()
            };
            t.status.record(200);
            t.status.record(503);
            t
        });
    let h = start(tokens().backend(backend)).await;
    let body = h.get("/admin/v1/snapshot").await.json();
    assert_valid("Snapshot", &body);
    let snap: Snapshot = serde_json::from_value(body).unwrap();
    assert_eq!(snap.server.name, "svc");
    assert_eq!(snap.server.listen.as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(snap.traffic.requests_total, 12);
    assert_eq!(snap.traffic.status.server_error, 1);
    assert_eq!(snap.workers[0].requests, 12);
    assert_eq!(snap.workers[0].in_flight, 2);
}

// === stream ===

#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
    retry: Option<String>,
}

/// Opens the stream with a raw hyper client (the test client collects whole bodies).
async fn open_stream(
    h: &Harness,
    token: &str,
    last_event_id: Option<&str>,
) -> http::Response<Incoming> {
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::get(h.url("/admin/v1/stream"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap()
}

/// Reads until `n` events (and all comments before them) arrived; `None` if the body ended.
async fn read_events(
    body: &mut Incoming,
    buf: &mut String,
    n: usize,
    comments: &mut Vec<String>,
) -> Option<Vec<SseEvent>> {
    let mut events = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut ev = SseEvent::default();
            let mut is_event = false;
            for line in block.lines() {
                if let Some(c) = line.strip_prefix(':') {
                    comments.push(c.trim().to_owned());
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                is_event = true;
                match field {
                    "id" => ev.id = Some(value.to_owned()),
                    "event" => ev.event = Some(value.to_owned()),
                    "retry" => ev.retry = Some(value.to_owned()),
                    "data" => ev.data.push_str(value),
                    _ => {}
                }
            }
            if is_event {
                events.push(ev);
                if events.len() == n {
                    return Some(events);
                }
            }
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the stream went silent")?
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

#[tokio::test]
async fn stream_delivers_snapshots_with_increasing_ids() {
    let h = start(tokens().stream_interval(Duration::from_millis(50))).await;
    let res = open_stream(&h, RO, None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
    let mut body = res.into_body();
    let (mut buf, mut comments) = (String::new(), Vec::new());
    let events = read_events(&mut body, &mut buf, 5, &mut comments)
        .await
        .unwrap();
    assert_eq!(events[0].retry.as_deref(), Some("1000"));
    let mut last = 0;
    for ev in &events {
        assert_eq!(ev.event.as_deref(), Some("snapshot"));
        let id: u64 = ev.id.as_deref().unwrap().parse().unwrap();
        assert!(id > last, "ids must increase: {id} after {last}");
        last = id;
        let data: Value = serde_json::from_str(&ev.data).unwrap();
        assert_valid("Snapshot", &data);
        assert_eq!(data["seq"], id, "the event id is the snapshot seq");
    }

    // A change shows up in the following events.
    let res = h.put("/admin/v1/limits/api", &[], json!({"rate": 5})).await;
    assert_eq!(res.status, 200);
    let mut seen = false;
    for _ in 0..20 {
        let ev = read_events(&mut body, &mut buf, 1, &mut comments)
            .await
            .unwrap();
        let data: Value = serde_json::from_str(&ev[0].data).unwrap();
        if data["limits"][0]["settings"]["rate"] == 5 {
            seen = true;
            break;
        }
    }
    assert!(seen, "the stream never showed the change");
}

#[tokio::test]
async fn stream_resumes_after_last_event_id() {
    let h = start(tokens().stream_interval(Duration::from_millis(50))).await;
    let res = open_stream(&h, RW, Some("5000")).await;
    let mut body = res.into_body();
    let (mut buf, mut comments) = (String::new(), Vec::new());
    let events = read_events(&mut body, &mut buf, 2, &mut comments)
        .await
        .unwrap();
    let first: u64 = events[0].id.as_deref().unwrap().parse().unwrap();
    assert!(
        first > 5000,
        "ids continue after Last-Event-ID (got {first})"
    );
    // A malformed Last-Event-ID is tolerated.
    let res = open_stream(&h, RW, Some("garbage")).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn stream_sends_keep_alive_comments_and_ends_on_close() {
    let h = start(
        tokens()
            .stream_interval(Duration::from_secs(3600))
            .keep_alive(Duration::from_millis(50)),
    )
    .await;
    let mut body = open_stream(&h, RW, None).await.into_body();
    let (mut buf, mut comments) = (String::new(), Vec::new());
    read_events(&mut body, &mut buf, 1, &mut comments)
        .await
        .unwrap();
    // The next snapshot is an hour away: only keep-alive comments arrive meanwhile.
    while comments.is_empty() {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no keep-alive comment")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(std::str::from_utf8(&data).unwrap());
        }
        let before = buf.clone();
        let events = read_events_now(&mut buf, &mut comments);
        assert_eq!(events, 0, "unexpected event in {before:?}");
    }
    assert_eq!(comments[0], "keep-alive");

    h.admin.close_streams();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "close_streams did not end the stream");
}

/// Parses complete blocks in `buf` without reading more; returns the number of events.
fn read_events_now(buf: &mut String, comments: &mut Vec<String>) -> usize {
    let mut events = 0;
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        for line in block.lines().filter(|l| !l.is_empty()) {
            match line.strip_prefix(':') {
                Some(c) => comments.push(c.trim().to_owned()),
                None => events += 1,
            }
        }
    }
    events
}

// === changes ===

#[tokio::test]
async fn put_changes_the_component_and_bumps_the_etag() {
    let h = start(tokens()).await;
    let res = h.get("/admin/v1/limits/api").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("etag"), Some("\"1\""));
    assert_valid("ComponentSnapshot", &res.json());

    let res = h
        .put(
            "/admin/v1/limits/api",
            &[("if-match", "\"1\"")],
            json!({"rate": 50, "mode": "shadow"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("etag"), Some("\"2\""));
    let body = res.json();
    assert_valid("ChangeResult", &body);
    assert_eq!(body["version"], 2);
    assert_eq!(body["dry_run"], false);
    assert_eq!(body["before"]["rate"], 100);
    assert_eq!(
        body["after"],
        json!({"rate": 50, "burst": 20, "mode": "shadow"})
    );

    assert_eq!(
        h.limit.current(),
        LimitSettings {
            rate: 50,
            burst: 20,
            mode: "shadow".into()
        }
    );
    let res = h.get("/admin/v1/limits/api").await;
    assert_eq!(res.header("etag"), Some("\"2\""));
    assert_eq!(res.json()["settings"]["rate"], 50);

    // Without If-Match the change applies unconditionally; `*` matches any version.
    let res = h
        .put("/admin/v1/limits/api", &[], json!({"burst": 40}))
        .await;
    assert_eq!(res.header("etag"), Some("\"3\""));
    let res = h
        .put(
            "/admin/v1/limits/api",
            &[("if-match", "*")],
            json!({"burst": 41}),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(h.limit.current().burst, 41);

    let res = h
        .put("/admin/v1/limits/nope", &[], json!({"rate": 1}))
        .await;
    assert_problem(&res, 404);
    // Names are per kind: `api` is a limit, not a breaker.
    let res = h.get("/admin/v1/breakers/api").await;
    assert_problem(&res, 404);
}

#[tokio::test]
async fn stale_if_match_is_refused_with_412() {
    let h = start(tokens()).await;
    let res = h
        .put(
            "/admin/v1/limits/api",
            &[("if-match", "\"1\"")],
            json!({"rate": 7}),
        )
        .await;
    assert_eq!(res.status, 200);
    // A second writer still holding version 1 loses.
    let res = h
        .put(
            "/admin/v1/limits/api",
            &[("if-match", "\"1\"")],
            json!({"rate": 8}),
        )
        .await;
    let problem = assert_problem(&res, 412);
    assert_eq!(problem["current_version"], 2);
    assert_eq!(res.header("etag"), Some("\"2\""));
    assert_eq!(h.limit.current().rate, 7);
    assert_eq!(h.limit.version(), 2);
    // Weak tags never match (strong comparison), and a malformed header is a 400.
    let res = h
        .put(
            "/admin/v1/limits/api",
            &[("if-match", "W/\"2\"")],
            json!({"rate": 8}),
        )
        .await;
    assert_problem(&res, 412);
    let res = h
        .put(
            "/admin/v1/limits/api",
            &[("if-match", "2")],
            json!({"rate": 8}),
        )
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["If-Match"]);
    // Actions honour If-Match too.
    let res = h
        .send(
            Method::POST,
            "/admin/v1/caches/pages/actions/flush",
            Some(RW),
            &[("if-match", "\"9\"")],
            None,
        )
        .await;
    assert_problem(&res, 412);
    assert_eq!(h.cache.keys.lock().len(), 3);
    assert_eq!(
        h.admin.audit().recent(10).len(),
        1,
        "refused changes are not audited"
    );
}

#[tokio::test]
async fn invalid_change_is_400_and_changes_nothing() {
    let h = start(tokens()).await;
    let before = h.get("/admin/v1/limits/api").await;

    let res = h
        .put(
            "/admin/v1/limits/api",
            &[],
            json!({"rate": 0, "burst": 0, "mode": "x"}),
        )
        .await;
    let problem = assert_problem(&res, 400);
    assert_valid("Problem", &problem);
    assert_eq!(fields(&problem), ["burst", "mode", "rate"]);

    let res = h
        .put("/admin/v1/limits/api", &[], json!({"rate": "fast"}))
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["rate"]);
    let res = h.put("/admin/v1/limits/api", &[], json!({"rat": 5})).await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["rat"]);
    let res = h.put("/admin/v1/limits/api", &[], json!([1, 2])).await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["body"]);
    let res = h
        .put(
            "/admin/v1/limits/api?ttl_secs=0&ttl=5",
            &[],
            json!({"rate": 5}),
        )
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["ttl", "ttl_secs"]);
    let res = h
        .send(Method::PUT, "/admin/v1/limits/api", Some(RW), &[], None)
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["body"]);
    let res = h
        .client
        .request(
            Method::PUT,
            &h.url("/admin/v1/limits/api"),
            &[("authorization", &format!("Bearer {RW}"))],
            "{not json",
        )
        .await
        .unwrap();
    assert_eq!(fields(&assert_problem(&res, 400)), ["body"]);

    let after = h.get("/admin/v1/limits/api").await;
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(after.json()["settings"], before.json()["settings"]);
    assert_eq!(h.limit.version(), 1);
    assert!(h.admin.audit().recent(10).is_empty());
}

#[tokio::test]
async fn dry_run_reports_the_change_without_applying_it() {
    let h = start(tokens()).await;
    let res = h
        .put(
            "/admin/v1/limits/api?dry_run=true",
            &[],
            json!({"burst": 99}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("etag"), Some("\"1\""));
    let body = res.json();
    assert_valid("ChangeResult", &body);
    assert_eq!(body["dry_run"], true);
    assert_eq!(body["version"], 1);
    assert_eq!(
        (
            body["before"]["burst"].clone(),
            body["after"]["burst"].clone()
        ),
        (json!(20), json!(99))
    );
    assert!(body.get("audit_seq").is_none());
    assert_eq!(h.limit.current().burst, 20);
    assert_eq!(h.limit.version(), 1);
    // A dry run validates like the real thing.
    let res = h
        .put("/admin/v1/limits/api?dry_run=1", &[], json!({"burst": 0}))
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["burst"]);
    assert!(
        h.admin.audit().recent(10).is_empty(),
        "dry runs are not audited"
    );
}

/// Polls `check` until it holds or `within` passes (real time; for a background revert).
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

#[tokio::test]
async fn ttl_change_is_reverted() {
    let h = start(tokens()).await;
    let res = h
        .put("/admin/v1/limits/api?ttl_secs=1", &[], json!({"rate": 3}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.json()["revert_at_ms"].as_u64().is_some());
    assert_eq!(h.limit.current().rate, 3);
    // The exact timing is covered by a paused-clock unit test; here the revert must happen
    // through the real router and show in the API.
    assert!(eventually(Duration::from_secs(10), || h.limit.current().rate == 100).await);
    let res = h.get("/admin/v1/limits/api").await;
    assert_eq!(res.header("etag"), Some("\"3\""));
    let audit = h.get("/admin/v1/audit").await.json();
    assert_eq!(audit[1]["action"], "revert");
    assert_eq!(audit[1]["target"], "limits/api");
    assert_eq!(audit[1]["details"]["reverts"], audit[0]["seq"]);
}

// === auth and limits ===

#[tokio::test]
async fn tokens_are_required_and_read_only_tokens_cannot_change() {
    let h = start(tokens()).await;
    let anonymous = h
        .send(Method::GET, "/admin/v1/snapshot", None, &[], None)
        .await;
    assert_problem(&anonymous, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="palisade-admin""#)
    );

    let wrong = format!("{RW}x");
    for token in [wrong.as_str(), &RW[..RW.len() - 1], "x"] {
        let res = h
            .send(Method::GET, "/admin/v1/limits", Some(token), &[], None)
            .await;
        assert_problem(&res, 401);
        assert!(
            res.header("www-authenticate")
                .unwrap()
                .contains("invalid_token")
        );
    }
    let basic = h
        .send(
            Method::GET,
            "/admin/v1/limits",
            None,
            &[("authorization", "Basic b3BzOnB3")],
            None,
        )
        .await;
    assert_problem(&basic, 401);
    // Every route is protected, mutations included.
    for (method, path) in admin::routes() {
        let path = path
            .replace("{name}", "api")
            .replace("{action}", "reset")
            .replace("{id}", "0");
        let res = h
            .send(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
                None,
                &[],
                None,
            )
            .await;
        assert_eq!(res.status, 401, "{method} {path}");
    }

    let res = h
        .send(Method::GET, "/admin/v1/snapshot", Some(RO), &[], None)
        .await;
    assert_eq!(res.status, 200);
    let res = h
        .send(
            Method::PUT,
            "/admin/v1/limits/api",
            Some(RO),
            &[],
            Some(json!({"rate": 1})),
        )
        .await;
    assert!(
        assert_problem(&res, 403)["detail"]
            .as_str()
            .unwrap()
            .contains("viewer")
    );
    let res = h
        .send(
            Method::POST,
            "/admin/v1/breakers/upstream/actions/force_open",
            Some(RO),
            &[],
            None,
        )
        .await;
    assert_problem(&res, 403);
    let res = h
        .send(
            Method::POST,
            "/admin/v1/workers/scale",
            Some(RO),
            &[],
            Some(json!({"workers": 2})),
        )
        .await;
    assert_problem(&res, 403);
    assert_eq!(h.limit.version(), 1);
    assert_eq!(*h.breaker.state.lock(), "closed");
    // Lower-case scheme and surrounding spaces are accepted (RFC 9110: case-insensitive).
    let res = h
        .send(
            Method::GET,
            "/admin/v1/limits",
            None,
            &[("authorization", &format!("bearer  {RW} "))],
            None,
        )
        .await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let h = start(tokens()).await;
    let big = json!({ "mode": "x".repeat(70 * 1024) });
    let res = h.put("/admin/v1/limits/api", &[], big).await;
    let problem = assert_problem(&res, 413);
    assert_eq!(problem["limit_bytes"], 64 * 1024);
    assert_eq!(h.limit.version(), 1);

    // A chunked body declares no length: the limit applies while reading it.
    let chunk = format!("{{\"mode\": \"{}\"}}", "y".repeat(70 * 1024));
    let raw = format!(
        "PUT /admin/v1/limits/api HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {RW}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let out =
        palisade_tests::http::raw_exchange(h.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        palisade_tests::http::raw_status(&out),
        Some(413),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(h.limit.version(), 1);

    // Smaller limits are configurable.
    let h = start(tokens().body_limit(16)).await;
    let res = h
        .put(
            "/admin/v1/limits/api",
            &[],
            json!({"mode": "shadow", "rate": 10}),
        )
        .await;
    assert_problem(&res, 413);
}

// === audit and actions ===

#[tokio::test]
async fn changes_and_actions_are_audited() {
    let h = start(tokens()).await;
    h.put("/admin/v1/limits/api?ttl_secs=600", &[], json!({"rate": 9}))
        .await;
    let res = h
        .post(
            "/admin/v1/caches/pages/actions/invalidate",
            Some(json!({"key": "a/1"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    h.post("/admin/v1/breakers/upstream/actions/force_open", None)
        .await;

    let res = h
        .send(Method::GET, "/admin/v1/audit", Some(RO), &[], None)
        .await;
    assert_eq!(res.status, 200);
    assert!(
        !res.text().contains(RW) && !res.text().contains(RO),
        "secrets leaked into the audit"
    );
    let audit = res.json();
    assert_valid_list("AuditEntry", &audit);
    let entries = audit.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let summary: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "ops", "update", "limits/api"),
            (2, "ops", "action:invalidate", "caches/pages"),
            (3, "ops", "action:force_open", "breakers/upstream"),
        ]
    );
    assert_eq!(entries[0]["before"]["rate"], 100);
    assert_eq!(entries[0]["after"]["rate"], 9);
    assert_eq!(entries[0]["details"]["ttl_secs"], 600);
    assert_eq!(entries[1]["details"]["args"]["key"], "a/1");
    assert_eq!(entries[1]["details"]["result"]["removed"], 1);
    assert!(
        entries
            .iter()
            .all(|e| e["at_ms"].as_u64().unwrap() > 1_600_000_000_000)
    );

    let since = h.get("/admin/v1/audit?since=2").await.json();
    assert_eq!(since.as_array().unwrap().len(), 1);
    assert_eq!(since[0]["seq"], 3);
    let newest = h.get("/admin/v1/audit?limit=1").await.json();
    assert_eq!(newest[0]["seq"], 3);
    let res = h.get("/admin/v1/audit?since=x").await;
    assert_problem(&res, 400);

    let snap: Snapshot = serde_json::from_value(h.get("/admin/v1/snapshot").await.json()).unwrap();
    assert_eq!(
        snap.audit.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[tokio::test]
async fn audit_log_is_bounded() {
    let h = start(tokens().audit_capacity(3).snapshot_audit(2)).await;
    for rate in 1..=5 {
        let res = h
            .put("/admin/v1/limits/api", &[], json!({ "rate": rate }))
            .await;
        assert_eq!(res.status, 200);
    }
    let audit = h.get("/admin/v1/audit").await.json();
    let seqs: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let snap = h.get("/admin/v1/snapshot").await.json();
    assert_eq!(snap["audit"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn breaker_and_cache_actions_run_and_report_errors() {
    let h = start(tokens()).await;
    let res = h
        .post("/admin/v1/breakers/upstream/actions/force_open", None)
        .await;
    assert_eq!(res.status, 200);
    let body = res.json();
    assert_valid("ActionResult", &body);
    assert_eq!(body["result"]["state"], "forced_open");
    assert_eq!(*h.breaker.state.lock(), "forced_open");
    let snap = h.get("/admin/v1/breakers/upstream").await.json();
    assert_eq!(snap["stats"]["state"], "forced_open");
    h.post("/admin/v1/breakers/upstream/actions/reset", Some(json!({})))
        .await;
    assert_eq!(*h.breaker.state.lock(), "closed");

    let res = h
        .post(
            "/admin/v1/caches/pages/actions/invalidate_prefix",
            Some(json!({"prefix": "a/"})),
        )
        .await;
    assert_eq!(res.json()["result"]["removed"], 2);
    let res = h
        .post("/admin/v1/caches/pages/actions/invalidate", Some(json!({})))
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["key"]);
    let res = h.post("/admin/v1/caches/pages/actions/explode", None).await;
    let problem = assert_problem(&res, 400);
    assert_eq!(
        problem["actions"],
        json!(["flush", "invalidate", "invalidate_prefix"])
    );
    let res = h.post("/admin/v1/caches/pages/actions/flush", None).await;
    assert_eq!(res.status, 200);
    assert!(h.cache.keys.lock().is_empty());
    let res = h.post("/admin/v1/caches/nope/actions/flush", None).await;
    assert_problem(&res, 404);
    let res = h
        .post("/admin/v1/caches/pages/actions/bad%20name", None)
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["action"]);
}

// === workers ===

#[tokio::test]
async fn local_backend_refuses_worker_operations_with_501() {
    let h = start(tokens()).await;
    let res = h
        .post("/admin/v1/workers/scale", Some(json!({"workers": 3})))
        .await;
    let problem = assert_problem(&res, 501);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not supported")
    );
    assert_problem(&h.post("/admin/v1/workers/restart", None).await, 501);
    assert_problem(&h.post("/admin/v1/workers/0/drain", None).await, 501);
    let res = h
        .post("/admin/v1/workers/scale", Some(json!({"workers": 0})))
        .await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["workers"]);
    let res = h.post("/admin/v1/workers/scale", None).await;
    assert_eq!(fields(&assert_problem(&res, 400)), ["workers"]);
}

/// A supervisor-like backend: two workers, scaling and draining recorded.
#[derive(Debug, Default)]
struct Supervisor {
    workers: Mutex<u32>,
    log: Mutex<Vec<String>>,
}

impl AdminBackend for Supervisor {
    fn server(&self) -> ServerInfo {
        ServerInfo {
            name: "palisade".into(),
            mode: "supervisor".into(),
            ..ServerInfo::default()
        }
    }
    fn workers(&self) -> Vec<WorkerInfo> {
        (0..*self.workers.lock())
            .map(|id| WorkerInfo {
                id,
                state: "ready".into(),
                ..WorkerInfo::default()
            })
            .collect()
    }
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
    fn scale(&self, workers: u32) -> admin::BackendFuture<'_, Change> {
        let mut n = self.workers.lock();
        let before = json!({ "workers": *n });
        *n = workers;
        Box::pin(std::future::ready(Ok(Change {
            before,
            after: json!({ "workers": workers }),
        })))
    }
    fn restart(&self) -> admin::BackendFuture<'_, Change> {
        Box::pin(std::future::ready(Err(BackendError::Conflict(
            "a rolling restart is already running".into(),
        ))))
    }
    fn drain_worker(&self, id: u32) -> admin::BackendFuture<'_, Change> {
        if id >= *self.workers.lock() {
            return Box::pin(std::future::ready(Err(BackendError::NotFound(format!(
                "no worker {id}"
            )))));
        }
        self.log.lock().push(format!("drain {id}"));
        Box::pin(std::future::ready(Ok(Change {
            before: json!({ "state": "ready" }),
            after: json!({ "state": "draining" }),
        })))
    }
    fn propagate<'a>(
        &'a self,
        applied: &'a admin::Applied,
    ) -> admin::BackendFuture<'a, palisade::control::model::Propagation> {
        if let admin::Applied::Settings { name, change, .. } = applied {
            self.log
                .lock()
                .push(format!("fan out {name} {}", change.after));
        }
        Box::pin(std::future::ready(Ok(
            palisade::control::model::Propagation::local(),
        )))
    }
}

#[tokio::test]
async fn worker_operations_and_changes_reach_the_backend() {
    let sup = Arc::new(Supervisor {
        workers: Mutex::new(2),
        ..Supervisor::default()
    });
    let h = start(tokens().backend(Arc::clone(&sup))).await;
    let res = h
        .post("/admin/v1/workers/scale", Some(json!({"workers": 4})))
        .await;
    assert_eq!(res.status, 202, "{}", res.text());
    let body = res.json();
    assert_valid("WorkerOperation", &body);
    assert_eq!(
        (
            body["before"]["workers"].clone(),
            body["after"]["workers"].clone()
        ),
        (json!(2), json!(4))
    );
    assert_eq!(
        h.get("/admin/v1/workers")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        4
    );

    assert_eq!(
        h.post("/admin/v1/workers/3/drain", Some(json!({})))
            .await
            .status,
        202
    );
    assert_problem(&h.post("/admin/v1/workers/9/drain", None).await, 404);
    assert_problem(&h.post("/admin/v1/workers/restart", None).await, 409);

    h.put("/admin/v1/limits/api", &[], json!({"rate": 11}))
        .await;
    assert_eq!(
        *sup.log.lock(),
        [
            "drain 3".to_owned(),
            format!(
                "fan out api {}",
                json!({"rate": 11, "burst": 20, "mode": "enforce"})
            )
        ]
    );
    let actions: BTreeMap<u64, String> = h
        .admin
        .audit()
        .recent(10)
        .into_iter()
        .map(|e| (e.seq, format!("{} {}", e.action, e.target)))
        .collect();
    assert_eq!(
        actions.values().collect::<Vec<_>>(),
        ["scale workers", "drain workers/3", "update limits/api"]
    );
    let snap: Snapshot = serde_json::from_value(h.get("/admin/v1/snapshot").await.json()).unwrap();
    assert_eq!(snap.server.mode, "supervisor");
    assert_eq!(snap.workers.len(), 4);
}
