use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::auth::ct_eq;
use super::handlers::{Precondition, parse_if_match, parse_put};
use super::stream::last_event_id;
use super::*;
use crate::control::{ApplyLock, Component, DynComponent, FieldError, NoAction};

const RW: &str = "rw-secret-0123456789abcdef";
const RO: &str = "ro-secret-0123456789abcdef";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobSettings {
    rate: u32,
    burst: u32,
}

#[derive(Debug)]
struct Knob {
    settings: ArcSwap<KnobSettings>,
    version: AtomicU64,
    lock: ApplyLock,
}

impl Knob {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(KnobSettings { rate: 10, burst: 5 }),
            version: AtomicU64::new(1),
            lock: ApplyLock::new(),
        })
    }
}

#[derive(Debug, Serialize)]
struct NoStats {}

impl crate::control::Stats for NoStats {}

impl Component for Knob {
    type Settings = KnobSettings;
    type Stats = NoStats;
    type Action = NoAction;
    type Outcome = NoAction;
    const KIND: ComponentKind = ComponentKind::Limit;

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
    fn settings(&self) -> KnobSettings {
        (**self.settings.load()).clone()
    }
    fn stats(&self) -> NoStats {
        NoStats {}
    }
    fn validate(
        &self,
        _current: &KnobSettings,
        next: &KnobSettings,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if next.rate == 0 {
            errors.push(FieldError::new("rate", "must be at least 1 (got 0)"));
        }
        if next.burst == 0 {
            errors.push(FieldError::new("burst", "must be at least 1 (got 0)"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
    fn commit(&self, next: KnobSettings) {
        self.settings.store(Arc::new(next));
        self.version.fetch_add(1, Ordering::AcqRel);
    }
    fn apply_lock(&self) -> &ApplyLock {
        &self.lock
    }
}

fn admin() -> (Admin, Arc<Knob>) {
    let registry = Registry::new();
    let knob = Knob::new();
    registry.register("api", knob.clone()).unwrap();
    let config = AdminConfig::builder()
        .read_write_token("ops", RW)
        .read_only_token("viewer", RO)
        .build()
        .unwrap();
    (Admin::new(registry, config), knob)
}

async fn call(
    admin: &Admin,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(serde_json::to_vec(&b).unwrap()));
    let res = admin
        .router()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, value)
}

#[test]
fn ct_eq_compares_whole_secrets() {
    assert!(ct_eq(b"secret-value", b"secret-value"));
    assert!(!ct_eq(b"secret-value", b"secret-valuE"));
    assert!(!ct_eq(b"secret-value", b"secret-valu"));
    assert!(!ct_eq(b"secret-value", b"secret-value-longer"));
    assert!(!ct_eq(b"secret", b""));
    assert!(!ct_eq(b"abc", b"abc\0"));
}

#[test]
fn if_match_parses_strong_tags_star_and_lists() {
    let mut h = HeaderMap::new();
    assert_eq!(parse_if_match(&h).unwrap(), None);
    h.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
    assert_eq!(
        parse_if_match(&h).unwrap(),
        Some(Precondition::Versions(vec![3]))
    );
    h.insert(header::IF_MATCH, HeaderValue::from_static("\"3\", \"7\""));
    let p = parse_if_match(&h).unwrap().unwrap();
    assert!(p.matches(7) && p.matches(3) && !p.matches(4));
    h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
    assert!(parse_if_match(&h).unwrap().unwrap().matches(99));
    // Strong comparison: weak and foreign tags never match.
    h.insert(
        header::IF_MATCH,
        HeaderValue::from_static("W/\"3\", \"abc\""),
    );
    assert!(!parse_if_match(&h).unwrap().unwrap().matches(3));
    h.insert(header::IF_MATCH, HeaderValue::from_static("3"));
    assert_eq!(parse_if_match(&h).unwrap_err().field, "If-Match");
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn put_request_reports_every_bad_field() {
    let max = Duration::from_secs(60);
    let ok = parse_put(
        Some(json!({"rate": 1})),
        &q(&[("ttl_secs", "5"), ("dry_run", "true")]),
        max,
    )
    .unwrap();
    assert_eq!(ok.ttl, Some(Duration::from_secs(5)));
    assert!(ok.dry_run);
    assert!(
        parse_put(Some(json!({})), &q(&[("dry_run", "")]), max)
            .unwrap()
            .dry_run
    );
    let errors = parse_put(
        Some(json!(3)),
        &q(&[("ttl_secs", "61"), ("dry_run", "yes"), ("ttl", "5")]),
        max,
    )
    .unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["body", "ttl_secs", "dry_run", "ttl"]);
    assert_eq!(
        parse_put(Some(json!({})), &q(&[("ttl_secs", "0")]), max).unwrap_err()[0].field,
        "ttl_secs"
    );
    assert_eq!(
        parse_put(Some(json!({})), &q(&[("ttl_secs", "x")]), max).unwrap_err()[0].field,
        "ttl_secs"
    );
    assert_eq!(parse_put(None, &[], max).unwrap_err()[0].field, "body");
}

#[test]
fn last_event_id_is_tolerated() {
    let mut h = HeaderMap::new();
    assert_eq!(last_event_id(&h), None);
    h.insert("last-event-id", HeaderValue::from_static(" 41 "));
    assert_eq!(last_event_id(&h), Some(41));
    h.insert("last-event-id", HeaderValue::from_static("not-a-number"));
    assert_eq!(last_event_id(&h), None);
}

#[test]
fn config_refuses_missing_weak_and_duplicate_tokens() {
    assert_eq!(
        AdminConfig::builder().build().unwrap_err(),
        ConfigError::NoTokens
    );
    assert!(matches!(
        AdminConfig::builder()
            .read_write_token("a", "short")
            .build()
            .unwrap_err(),
        ConfigError::WeakSecret { len: 5, .. }
    ));
    assert_eq!(
        AdminConfig::builder()
            .read_write_token("a", RW)
            .read_only_token("a", RO)
            .build()
            .unwrap_err(),
        ConfigError::DuplicateTokenId("a".into())
    );
    assert!(matches!(
        AdminConfig::builder()
            .read_write_token("a", RW)
            .read_only_token("b", RW)
            .build()
            .unwrap_err(),
        ConfigError::DuplicateSecret(..)
    ));
    assert_eq!(
        AdminConfig::builder()
            .read_write_token("has space", RW)
            .build()
            .unwrap_err(),
        ConfigError::BadTokenId("has space".into())
    );
    assert_eq!(
        AdminConfig::builder()
            .read_write_token("a", RW)
            .stream_interval(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::ZeroDuration("stream_interval")
    );
    // The secret is trimmed (token files end with a newline) and never shown by Debug.
    let config = AdminConfig::builder()
        .read_write_token("a", format!("{RW}\n"))
        .build()
        .unwrap();
    assert!(!format!("{config:?}").contains(RW));
}

#[test]
fn audit_ring_drops_the_oldest() {
    let log = AuditLog::new(3);
    for i in 0..5 {
        log.record(AuditEntry {
            action: format!("a{i}"),
            ..AuditEntry::default()
        });
    }
    let all = log.recent(10);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(all.iter().all(|e| e.at_ms > 0));
    assert_eq!(log.recent(1)[0].action, "a4");
    assert_eq!(log.since(3, 10).len(), 2);
    assert_eq!(log.since(0, 1)[0].seq, 3);
    assert_eq!(log.last_seq(), 5);
}

use crate::control::model::AuditEntry;

#[test]
fn token_file_is_created_private_and_reused() {
    let dir = std::env::temp_dir().join(format!("palisade-admin-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("nested").join("admin.token");
    let (first, origin) = token::ensure(&path).unwrap();
    assert_eq!(origin, token::Origin::Created);
    assert_eq!(first.len(), 2 * token::TOKEN_BYTES);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (again, origin) = token::ensure(&path).unwrap();
    assert_eq!(
        (again.as_str(), origin),
        (first.as_str(), token::Origin::Loaded)
    );
    assert_ne!(token::generate().unwrap(), first);
    std::fs::write(&path, "  \n").unwrap();
    assert_eq!(
        token::load_or_create(&path).unwrap_err().kind(),
        std::io::ErrorKind::InvalidData
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn wrong_method_is_a_problem_with_allow() {
    let (admin, _) = admin();
    let (status, headers, body) = call(
        &admin,
        Method::DELETE,
        "/admin/v1/limits/api",
        Some(RW),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "GET, HEAD, PUT");
    assert_eq!(body["status"], 405);
}

#[tokio::test]
async fn unauthenticated_and_read_only_requests_are_refused() {
    let (admin, knob) = admin();
    let (status, headers, _) = call(&admin, Method::GET, "/admin/v1/limits", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="palisade-admin""#
    );
    let (status, _, _) = call(&admin, Method::GET, "/admin/v1/limits", Some(RO), None).await;
    assert_eq!(status, StatusCode::OK);
    let patch = json!({"rate": 1});
    let (status, _, _) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(RO),
        Some(patch),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(DynComponent::version(&*knob), 1);
}

#[tokio::test]
async fn worker_operations_are_not_supported_by_the_local_backend() {
    let (admin, _) = admin();
    let (status, _, body) = call(
        &admin,
        Method::POST,
        "/admin/v1/workers/scale",
        Some(RW),
        Some(json!({"workers": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    let (status, _, body) = call(
        &admin,
        Method::POST,
        "/admin/v1/workers/scale",
        Some(RW),
        Some(json!({"workers": 0, "extra": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "extra");
    let (status, _, body) = call(
        &admin,
        Method::POST,
        "/admin/v1/workers/x/drain",
        Some(RW),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "id");
    let (status, _, _) = call(
        &admin,
        Method::POST,
        "/admin/v1/workers/restart",
        Some(RW),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert!(
        admin.audit().recent(10).is_empty(),
        "refused operations are not audited"
    );
}

/// Polls `cond` in (paused) virtual time until it holds or `within` passes.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

#[tokio::test(start_paused = true)]
async fn ttl_change_reverts_when_the_time_is_up() {
    let (admin, knob) = admin();
    let put = json!({"rate": 99});
    let (status, headers, body) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api?ttl_secs=30",
        Some(RW),
        Some(put),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::ETAG], "\"2\"");
    assert!(body["revert_at_ms"].as_u64().is_some());

    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(
        DynComponent::settings(&*knob)["rate"],
        99,
        "not reverted before the TTL"
    );

    assert!(
        eventually(
            Duration::from_secs(2),
            || DynComponent::settings(&*knob)["rate"] == 10
        )
        .await
    );
    assert_eq!(DynComponent::version(&*knob), 3);
    let audit = admin.audit().recent(10);
    let actions: Vec<_> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["update", "revert"]);
    assert_eq!(audit[1].actor, "ops");
    assert_eq!(audit[1].details["reverts"], audit[0].seq);
    assert_eq!(audit[1].after["rate"], 10);
}

#[tokio::test(start_paused = true)]
async fn ttl_revert_is_skipped_after_a_newer_change() {
    let (admin, knob) = admin();
    let put = json!({"rate": 99});
    let (status, _, _) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api?ttl_secs=10",
        Some(RW),
        Some(put),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let put = json!({"burst": 7});
    let (status, _, _) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(RW),
        Some(put),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    assert!(eventually(Duration::from_secs(12), || admin.audit().last_seq() == 3).await);
    let last = &admin.audit().recent(1)[0];
    assert_eq!(last.action, "revert_skipped");
    assert_eq!(
        DynComponent::settings(&*knob),
        json!({"rate": 99, "burst": 7})
    );
    assert_eq!(DynComponent::version(&*knob), 3);
}

#[derive(Debug, Default)]
struct Recorder(parking_lot::Mutex<Vec<Applied>>);

impl AdminBackend for Recorder {
    fn server(&self) -> crate::control::model::ServerInfo {
        Default::default()
    }
    fn workers(&self) -> Vec<crate::control::model::WorkerInfo> {
        Vec::new()
    }
    fn traffic(&self) -> crate::control::model::Traffic {
        Default::default()
    }
    fn propagate<'a>(
        &'a self,
        applied: &'a Applied,
    ) -> super::BackendFuture<'a, crate::control::model::Propagation> {
        self.0.lock().push(applied.clone());
        Box::pin(async { Ok(crate::control::model::Propagation::local()) })
    }
}

#[tokio::test(start_paused = true)]
async fn backend_hook_sees_changes_and_reverts_in_order() {
    let registry = Registry::new();
    let knob = Knob::new();
    registry.register("api", knob.clone()).unwrap();
    let recorder = Arc::new(Recorder::default());
    let config = AdminConfig::builder()
        .read_write_token("ops", RW)
        .backend(Arc::clone(&recorder))
        .build()
        .unwrap();
    let admin = Admin::new(registry, config);
    let put = json!({"rate": 3});
    let (status, _, _) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api?ttl_secs=1",
        Some(RW),
        Some(put),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let dry = json!({"rate": 4});
    let (status, _, _) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api?dry_run=true",
        Some(RW),
        Some(dry),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(eventually(Duration::from_secs(3), || recorder.0.lock().len() == 2).await);
    let seen = recorder.0.lock().clone();
    match (&seen[0], &seen[1]) {
        (
            Applied::Settings {
                revert: false,
                change,
                version: 2,
                actor,
                ..
            },
            Applied::Settings {
                revert: true,
                change: undo,
                version: 3,
                ..
            },
        ) => {
            assert_eq!(change.after["rate"], 3);
            assert_eq!(undo.after["rate"], 10);
            assert_eq!(actor, "ops");
        }
        other => panic!("unexpected hook calls {other:?}"),
    }
}

#[tokio::test]
async fn a_put_that_changes_nothing_keeps_the_version_and_is_not_audited() {
    let (admin, knob) = admin();
    for patch in [
        json!({}),
        json!({"rate": 10}),
        json!({"rate": 10, "burst": 5}),
    ] {
        let (status, headers, body) = call(
            &admin,
            Method::PUT,
            "/admin/v1/limits/api?ttl_secs=30",
            Some(RW),
            Some(patch.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{patch}: {body}");
        assert_eq!(headers[header::ETAG], "\"1\"", "{patch}");
        assert_eq!(body["version"], 1, "{patch}");
        assert_eq!(body["before"], body["after"]);
        assert!(body.get("audit_seq").is_none(), "{body}");
        assert!(body.get("revert_at_ms").is_none(), "{body}");
    }
    assert_eq!(DynComponent::version(&*knob), 1);
    assert!(admin.audit().recent(10).is_empty());

    // A real change still bumps the version and is audited.
    let (status, headers, _) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(RW),
        Some(json!({"rate": 11})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ETAG], "\"2\"");
    assert_eq!(admin.audit().recent(10).len(), 1);
}

#[tokio::test]
async fn the_scope_reaches_the_backend_and_replicated_changes_are_audited_as_fleet_updates() {
    let registry = Registry::new();
    let knob = Knob::new();
    registry.register("api", knob.clone()).unwrap();
    let recorder = Arc::new(Recorder::default());
    let config = AdminConfig::builder()
        .read_write_token("ops", RW)
        .backend(Arc::clone(&recorder))
        .build()
        .unwrap();
    let admin = Admin::new(registry, config);

    let (status, _, body) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api?scope=everywhere",
        Some(RW),
        Some(json!({"rate": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "scope");
    assert_eq!(
        DynComponent::version(&*knob),
        1,
        "a refused scope changes nothing"
    );

    let (status, _, _) = call(
        &admin,
        Method::PUT,
        "/admin/v1/limits/api?scope=node",
        Some(RW),
        Some(json!({"rate": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let propagation = admin
        .apply_replicated(
            ComponentKind::Limit,
            "api",
            &json!({"rate": 7, "burst": 5}),
            "fleet:node1/ops",
            json!({"fleet_version": 4}),
        )
        .await
        .unwrap();
    assert_eq!(propagation, crate::control::model::Propagation::local());
    assert_eq!(DynComponent::settings(&*knob)["rate"], 7);
    // Settings already in force: answered at once, nothing carried or audited.
    let again = admin
        .apply_replicated(
            ComponentKind::Limit,
            "api",
            &json!({"rate": 7}),
            "fleet:node1/ops",
            Value::Null,
        )
        .await
        .unwrap();
    assert!(again.workers.is_empty());
    let refused = admin
        .apply_replicated(
            ComponentKind::Limit,
            "api",
            &json!({"rate": 0}),
            "fleet:node1/ops",
            Value::Null,
        )
        .await;
    assert!(
        matches!(refused, Err(BackendError::Invalid(_))),
        "{refused:?}"
    );

    let scopes: Vec<Scope> = recorder.0.lock().iter().map(Applied::scope).collect();
    assert_eq!(scopes, [Scope::Node, Scope::Replicated]);
    let audit = admin.audit().recent(10);
    let last = audit.last().unwrap();
    assert_eq!(last.action, "fleet_update");
    assert_eq!(last.actor, "fleet:node1/ops");
    assert_eq!(last.details["fleet_version"], 4);
    assert_eq!(audit[audit.len() - 2].details["scope"], "node");

    // Outside fleet mode the fleet routes are not there.
    for path in [
        "/admin/v1/fleet/nodes",
        "/admin/v1/fleet/snapshot",
        "/admin/v1/fleet/audit?limit=5",
    ] {
        let (status, _, body) = call(&admin, Method::GET, path, Some(RW), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("fleet.redis_url"));
    }
}
