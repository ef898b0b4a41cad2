//! Route handlers: reads, validated changes with optimistic concurrency, TTL reverts, actions
//! and worker operations.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Shared;
use super::audit::now_ms;
use super::auth::{Caller, payload_too_large};
use super::backend::{Applied, BackendError, Scope};
use crate::control::model::{AuditEntry, Outcome, Propagation, Snapshot, WorkerInfo};
use crate::control::{ComponentKind, DynComponent, FieldError, snapshot_of};
use crate::problem::Problem;

/// An error response (boxed: error paths are rare, `Result`s stay small); `?` turns a
/// [`Problem`] into one.
#[derive(Debug)]
pub(crate) struct Reject(Box<Response>);

impl Reject {
    fn new(res: Response) -> Self {
        Self(Box::new(res))
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Problem> for Reject {
    fn from(p: Problem) -> Self {
        Self::new(p.into_response())
    }
}

type Result<T = Response> = std::result::Result<T, Reject>;

/// The largest worker count `POST /admin/v1/workers/scale` accepts.
pub(crate) const MAX_WORKERS: u64 = 1024;

// === helpers ===

fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn json_response(status: StatusCode, body: &impl Serialize, version: Option<u64>) -> Response {
    let mut res = (status, Json(body)).into_response();
    if let Some(v) = version {
        res.headers_mut().insert(header::ETAG, etag(v));
    }
    res
}

fn invalid(errors: Vec<FieldError>, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "Bad Request")
        .detail(detail)
        .with("errors", errors)
}

fn not_found(kind: ComponentKind, name: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "Not Found").detail(format!(
        "no {} named `{name}`; GET /admin/v1/{} lists them",
        kind_word(kind),
        kind.plural()
    ))
}

fn kind_word(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Limit => "limit",
        ComponentKind::Breaker => "breaker",
        ComponentKind::Cache => "cache",
    }
}

fn path_error(rejection: &PathRejection) -> Problem {
    invalid(
        vec![FieldError::new("path", rejection.body_text())],
        "the URL path could not be read",
    )
}

fn query_error(rejection: &QueryRejection) -> Problem {
    invalid(
        vec![FieldError::new("query", rejection.body_text())],
        "the query string could not be read",
    )
}

/// Reads an optional JSON body: `Ok(None)` when it is empty.
fn json_body(
    body: std::result::Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Option<Value>> {
    let bytes = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Reject::new(payload_too_large(limit)));
        }
        Err(rejection) => {
            return Err(Problem::new(rejection.status(), "Bad Request")
                .detail(rejection.body_text())
                .into());
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        invalid(
            vec![FieldError::new("body", format!("not valid JSON: {e}"))],
            "the body is not valid JSON",
        )
        .into()
    })
}

/// An `If-Match` precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// `If-Match: *`: any current version.
    Any,
    /// Strong entity tags holding versions; weak or foreign tags never match.
    Versions(Vec<u64>),
}

impl Precondition {
    pub(crate) fn matches(&self, version: u64) -> bool {
        match self {
            Self::Any => true,
            Self::Versions(v) => v.contains(&version),
        }
    }
}

/// Parses every `If-Match` header; `Ok(None)` when there is none.
pub(crate) fn parse_if_match(
    headers: &HeaderMap,
) -> std::result::Result<Option<Precondition>, FieldError> {
    let mut seen = false;
    let mut any = false;
    let mut versions = Vec::new();
    for value in headers.get_all(header::IF_MATCH) {
        seen = true;
        let text = value
            .to_str()
            .map_err(|_| FieldError::new("If-Match", "must be visible ASCII"))?;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "*" {
                any = true;
                continue;
            }
            let (weak, tag) = match part.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, part),
            };
            let inner = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(|| {
                    FieldError::new(
                        "If-Match",
                        format!(
                            "`{part}` is not an entity tag; send the ETag of a GET, e.g. \"3\""
                        ),
                    )
                })?;
            // If-Match uses strong comparison: a weak tag never matches.
            if !weak {
                versions.extend(inner.parse::<u64>().ok());
            }
        }
    }
    if !seen {
        return Ok(None);
    }
    Ok(Some(if any {
        Precondition::Any
    } else {
        Precondition::Versions(versions)
    }))
}

fn precondition_failed(current: u64) -> Reject {
    let mut res = Problem::new(StatusCode::PRECONDITION_FAILED, "Precondition Failed")
        .detail(format!(
            "the settings changed since you read them: the current version is {current}; read \
             them again and retry with If-Match: \"{current}\""
        ))
        .with("current_version", current)
        .into_response();
    res.headers_mut().insert(header::ETAG, etag(current));
    Reject::new(res)
}

fn if_match(headers: &HeaderMap) -> Result<Option<Precondition>> {
    parse_if_match(headers)
        .map_err(|e| invalid(vec![e], "the If-Match header could not be read").into())
}

fn find(shared: &Shared, kind: ComponentKind, name: &str) -> Result<Arc<dyn DynComponent>> {
    shared
        .registry
        .get_kind(kind, name)
        .ok_or_else(|| not_found(kind, name).into())
}

fn target(kind: ComponentKind, name: &str) -> String {
    format!("{}/{name}", kind.plural())
}

// === reads ===

pub(crate) async fn snapshot(State(shared): State<Arc<Shared>>) -> Json<Snapshot> {
    Json(shared.snapshot())
}

pub(crate) async fn list(kind: ComponentKind, State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.registry.snapshot_kind(kind)).into_response()
}

pub(crate) async fn get_one(
    kind: ComponentKind,
    State(shared): State<Arc<Shared>>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result {
    let Path(name) = path.map_err(|r| path_error(&r))?;
    let c = find(&shared, kind, &name)?;
    let snap = snapshot_of(kind, name, c.as_ref());
    let version = snap.version;
    Ok(json_response(StatusCode::OK, &snap, Some(version)))
}

pub(crate) async fn workers(State(shared): State<Arc<Shared>>) -> Json<Vec<WorkerInfo>> {
    Json(shared.config.backend.workers())
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

pub(crate) async fn audit(
    State(shared): State<Arc<Shared>>,
    query: std::result::Result<Query<AuditQuery>, QueryRejection>,
) -> Result {
    let Query(q) = query.map_err(|r| query_error(&r))?;
    let cap = shared.audit.capacity();
    let limit = q.limit.unwrap_or(cap).min(cap);
    let entries = match q.since {
        Some(after) => shared.audit.since(after, limit),
        None => shared.audit.recent(limit),
    };
    Ok(Json(entries).into_response())
}

// === settings changes ===

/// A parsed `PUT`: the body is the merge-patch; `?ttl_secs=N&dry_run=true` are options.
#[derive(Debug)]
pub(crate) struct PutRequest {
    pub(crate) settings: Value,
    pub(crate) ttl: Option<Duration>,
    pub(crate) dry_run: bool,
    pub(crate) scope: Scope,
}

/// Parses a `PUT` body and query, collecting every field error. Unknown query parameters are
/// refused, so a misspelt `ttl` cannot silently make a temporary change permanent.
pub(crate) fn parse_put(
    body: Option<Value>,
    query: &[(String, String)],
    max_ttl: Duration,
) -> std::result::Result<PutRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let settings = match body {
        Some(v @ Value::Object(_)) => v,
        Some(other) => {
            errors.push(FieldError::new(
                "body",
                format!("must be a JSON object (a merge-patch of the settings), got {other}"),
            ));
            Value::Null
        }
        None => {
            errors.push(FieldError::new(
                "body",
                "is required: a JSON merge-patch of the settings, e.g. {\"burst\": 20}",
            ));
            Value::Null
        }
    };
    let mut ttl = None;
    let mut dry_run = false;
    let mut scope = Scope::default();
    for (key, value) in query {
        match key.as_str() {
            "scope" => match Scope::parse(value) {
                Some(s) => scope = s,
                None => errors.push(scope_error(value)),
            },
            "ttl_secs" => match value.parse::<u64>() {
                Ok(0) => errors.push(FieldError::new("ttl_secs", "must be at least 1 (got 0)")),
                Ok(n) if n > max_ttl.as_secs() => errors.push(FieldError::new(
                    "ttl_secs",
                    format!("must be at most {} (got {n})", max_ttl.as_secs()),
                )),
                Ok(n) => ttl = Some(Duration::from_secs(n)),
                Err(_) => errors.push(FieldError::new(
                    "ttl_secs",
                    format!("must be a whole number of seconds (got `{value}`)"),
                )),
            },
            "dry_run" => match value.as_str() {
                "" | "true" | "1" => dry_run = true,
                "false" | "0" => dry_run = false,
                _ => errors.push(FieldError::new(
                    "dry_run",
                    format!("must be true or false (got `{value}`)"),
                )),
            },
            _ => errors.push(FieldError::new(
                key.clone(),
                "unknown query parameter; PUT accepts ttl_secs, dry_run and scope",
            )),
        }
    }
    if errors.is_empty() {
        Ok(PutRequest {
            settings,
            ttl,
            dry_run,
            scope,
        })
    } else {
        Err(errors)
    }
}

fn scope_error(value: &str) -> FieldError {
    FieldError::new(
        "scope",
        format!(
            "must be `fleet` (every node of a fleet; the default) or `node` (this server only), got `{value}`"
        ),
    )
}

#[derive(Debug, Serialize)]
struct ChangeReply<'a> {
    name: &'a str,
    kind: ComponentKind,
    version: u64,
    dry_run: bool,
    before: Value,
    after: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revert_at_ms: Option<u64>,
    /// Each worker's answer (absent for a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    propagation: Option<Propagation>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one parameter per axum extractor"
)]
pub(crate) async fn put_one(
    kind: ComponentKind,
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result {
    let Path(name) = path.map_err(|r| path_error(&r))?;
    let Query(query) = query.map_err(|r| query_error(&r))?;
    let component = find(&shared, kind, &name)?;
    let precondition = if_match(&headers)?;
    let body = json_body(body, shared.config.body_limit)?;
    let req = parse_put(body, &query, shared.config.max_ttl)
        .map_err(|errors| invalid(errors, "the request was refused; nothing changed"))?;
    apply_settings(
        &shared,
        kind,
        &name,
        &component,
        precondition.as_ref(),
        req,
        &caller,
    )
    .await
}

/// Checks the precondition and applies the change under the write lock, so admin changes are
/// serialized and `If-Match` cannot race another admin request; then carries it to every
/// worker and answers with their outcomes, or rolls it back when any worker did not apply it.
async fn apply_settings(
    shared: &Arc<Shared>,
    kind: ComponentKind,
    name: &str,
    component: &Arc<dyn DynComponent>,
    precondition: Option<&Precondition>,
    req: PutRequest,
    caller: &Caller,
) -> Result {
    let _serialized = shared.write_lock.lock().await;
    let current = component.version();
    if precondition.is_some_and(|p| !p.matches(current)) {
        return Err(precondition_failed(current));
    }
    let refused = |errors: Vec<FieldError>| -> Reject {
        let n = errors.len();
        Problem::new(StatusCode::BAD_REQUEST, "Bad Request")
            .detail(format!(
                "{n} field{} refused; nothing changed",
                if n == 1 { " was" } else { "s were" }
            ))
            .with("errors", errors)
            .into()
    };
    if req.dry_run {
        let change = component.apply(&req.settings, true).map_err(refused)?;
        let reply = ChangeReply {
            name,
            kind,
            version: current,
            dry_run: true,
            before: change.before,
            after: change.after,
            audit_seq: None,
            revert_at_ms: None,
            propagation: None,
        };
        return Ok(json_response(StatusCode::OK, &reply, Some(current)));
    }
    // A change that changes nothing is answered, not applied: no version bump (which would
    // invalidate every other operator's ETag), no audit entry, no fan-out, no revert.
    let preview = component.apply(&req.settings, true).map_err(refused)?;
    if preview.before == preview.after {
        let reply = ChangeReply {
            name,
            kind,
            version: current,
            dry_run: false,
            before: preview.before,
            after: preview.after,
            audit_seq: None,
            revert_at_ms: None,
            propagation: None,
        };
        return Ok(json_response(StatusCode::OK, &reply, Some(current)));
    }
    let change = component.apply(&req.settings, false).map_err(refused)?;
    let version = component.version();
    let applied = Applied::Settings {
        kind,
        name: name.to_owned(),
        patch: req.settings.clone(),
        change: change.clone(),
        version,
        revert: false,
        actor: caller.id.clone(),
        scope: req.scope,
    };
    let propagation = match shared.config.backend.propagate(&applied).await {
        Ok(propagation) => propagation,
        Err(error) => {
            return Err(roll_back(
                shared,
                kind,
                name,
                component,
                &change,
                &req.settings,
                caller,
                error,
            ));
        }
    };
    let revert_at_ms = req
        .ttl
        .map(|ttl| now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
    let mut details = Map::new();
    details.insert("patch".into(), req.settings.clone());
    details.insert("version".into(), version.into());
    if let Some(ttl) = req.ttl {
        details.insert("ttl_secs".into(), ttl.as_secs().into());
    }
    if req.scope != Scope::Fleet {
        details.insert("scope".into(), json!(req.scope));
    }
    let entry = shared.audit.record(AuditEntry {
        actor: caller.id.clone(),
        action: "update".into(),
        target: target(kind, name),
        before: change.before.clone(),
        after: change.after.clone(),
        details: Value::Object(details),
        propagation: Some(propagation.clone()),
        ..AuditEntry::default()
    });
    if let Some(ttl) = req.ttl {
        let revert = Revert {
            kind,
            name: name.to_owned(),
            expected_version: version,
            restore: change.before.clone(),
            of_seq: entry.seq,
            actor: caller.id.clone(),
            scope: req.scope,
        };
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            revert.run(&shared).await;
        });
    }
    let reply = ChangeReply {
        name,
        kind,
        version,
        dry_run: false,
        before: change.before,
        after: change.after,
        audit_seq: Some(entry.seq),
        revert_at_ms,
        propagation: Some(propagation),
    };
    Ok(json_response(StatusCode::OK, &reply, Some(version)))
}

/// A change the workers did not all apply: restores this registry's copy (the backend already
/// restored the workers), audits it and answers with the backend's problem.
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of one refused change"
)]
fn roll_back(
    shared: &Shared,
    kind: ComponentKind,
    name: &str,
    component: &Arc<dyn DynComponent>,
    change: &crate::control::Change,
    patch: &Value,
    caller: &Caller,
    error: BackendError,
) -> Reject {
    if let Err(errors) = component.apply(&change.before, false) {
        // The settings it had a moment ago are valid by construction; say so loudly if not.
        tracing::error!(target = %target(kind, name), errors = ?errors, "cannot restore settings after a refused change");
    }
    let propagation = match &error {
        BackendError::NotApplied(p) => Some(p.clone()),
        _ => None,
    };
    tracing::warn!(target = %target(kind, name), error = %error, "change not applied on every worker; rolled back");
    shared.audit.record(AuditEntry {
        actor: caller.id.clone(),
        action: "update_rolled_back".into(),
        target: target(kind, name),
        before: change.before.clone(),
        after: change.before.clone(),
        details: json!({ "patch": patch, "error": error.to_string() }),
        propagation,
        ..AuditEntry::default()
    });
    backend_problem(error).into()
}

/// A pending TTL revert.
#[derive(Debug)]
pub(crate) struct Revert {
    kind: ComponentKind,
    name: String,
    expected_version: u64,
    restore: Value,
    of_seq: u64,
    actor: String,
    scope: Scope,
}

impl Revert {
    /// Restores the settings unless the component changed (or went away) since.
    pub(crate) async fn run(self, shared: &Shared) {
        let _serialized = shared.write_lock.lock().await;
        let target = target(self.kind, &self.name);
        let skipped = |reason: String, current: Value| {
            tracing::info!(target = %target, of_seq = self.of_seq, reason = %reason, "ttl revert skipped");
            shared.audit.record(AuditEntry {
                actor: self.actor.clone(),
                action: "revert_skipped".into(),
                target: target.clone(),
                before: current.clone(),
                after: current,
                details: json!({ "reverts": self.of_seq, "reason": reason }),
                ..AuditEntry::default()
            });
        };
        let Some(component) = shared.registry.get_kind(self.kind, &self.name) else {
            skipped("the component is no longer registered".into(), Value::Null);
            return;
        };
        let current = component.version();
        if current != self.expected_version {
            skipped(
                format!(
                    "changed since (version {current}, the change being reverted made {})",
                    self.expected_version
                ),
                component.settings(),
            );
            return;
        }
        match component.apply(&self.restore, false) {
            Ok(change) => {
                let version = component.version();
                let applied = Applied::Settings {
                    kind: self.kind,
                    name: self.name.clone(),
                    patch: self.restore.clone(),
                    change: change.clone(),
                    version,
                    revert: true,
                    actor: self.actor.clone(),
                    scope: self.scope,
                };
                match shared.config.backend.propagate(&applied).await {
                    Ok(propagation) => {
                        shared.audit.record(AuditEntry {
                            actor: self.actor.clone(),
                            action: "revert".into(),
                            target: target.clone(),
                            before: change.before.clone(),
                            after: change.after.clone(),
                            details: json!({ "reverts": self.of_seq, "version": version }),
                            propagation: Some(propagation),
                            ..AuditEntry::default()
                        });
                    }
                    Err(error) => {
                        // The workers kept the change; so does this copy.
                        if let Err(errors) = component.apply(&change.before, false) {
                            tracing::error!(target = %target, errors = ?errors, "cannot restore settings after a refused revert");
                        }
                        tracing::warn!(target = %target, of_seq = self.of_seq, error = %error, "ttl revert not applied on every worker");
                        let propagation = match &error {
                            BackendError::NotApplied(p) => Some(p.clone()),
                            _ => None,
                        };
                        shared.audit.record(AuditEntry {
                            actor: self.actor,
                            action: "revert_failed".into(),
                            target,
                            before: change.before.clone(),
                            after: change.before,
                            details: json!({ "reverts": self.of_seq, "error": error.to_string() }),
                            propagation,
                            ..AuditEntry::default()
                        });
                    }
                }
            }
            Err(errors) => {
                tracing::warn!(target = %target, of_seq = self.of_seq, errors = ?errors, "ttl revert refused by the component");
                shared.audit.record(AuditEntry {
                    actor: self.actor,
                    action: "revert_failed".into(),
                    target,
                    before: component.settings(),
                    after: component.settings(),
                    details: json!({ "reverts": self.of_seq, "errors": errors }),
                    ..AuditEntry::default()
                });
            }
        }
    }
}

// === actions ===

fn valid_action_name(action: &str) -> bool {
    (1..=64).contains(&action.len())
        && action
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[allow(
    clippy::too_many_arguments,
    reason = "one parameter per axum extractor"
)]
pub(crate) async fn action(
    kind: ComponentKind,
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result {
    let Path((name, action)) = path.map_err(|r| path_error(&r))?;
    let Query(query) = query.map_err(|r| query_error(&r))?;
    let mut scope = Scope::default();
    let mut errors = Vec::new();
    for (key, value) in &query {
        match (key.as_str(), Scope::parse(value)) {
            ("scope", Some(s)) => scope = s,
            ("scope", None) => errors.push(scope_error(value)),
            _ => errors.push(FieldError::new(
                key.clone(),
                "unknown query parameter; actions accept scope",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(invalid(errors, "the request was refused; nothing changed").into());
    }
    let component = find(&shared, kind, &name)?;
    if !valid_action_name(&action) {
        return Err(invalid(
            vec![FieldError::new(
                "action",
                "must be 1 to 64 characters of [A-Za-z0-9_.-]",
            )],
            "unknown action",
        )
        .into());
    }
    let precondition = if_match(&headers)?;
    let args = json_body(body, shared.config.body_limit)?.unwrap_or_else(|| json!({}));
    let _serialized = shared.write_lock.lock().await;
    let current = component.version();
    if precondition.is_some_and(|p| !p.matches(current)) {
        return Err(precondition_failed(current));
    }
    let before = component.settings();
    let result = component.action(&action, &args).map_err(|errors| {
        let mut available: Vec<&str> = component.actions().to_vec();
        available.sort_unstable();
        invalid(
            errors,
            format!("action `{action}` was refused; nothing changed"),
        )
        .with("actions", available)
    })?;
    let after = component.settings();
    let version = component.version();
    let applied = Applied::Action {
        kind,
        name: name.clone(),
        action: action.clone(),
        args: args.clone(),
        result: result.clone(),
        actor: caller.id.clone(),
        scope,
    };
    // An action cannot be undone: a worker that refuses it is reported, not rolled back.
    let propagated = shared.config.backend.propagate(&applied).await;
    let propagation = match &propagated {
        Ok(p) | Err(BackendError::NotApplied(p)) => Some(p.clone()),
        Err(_) => None,
    };
    shared.audit.record(AuditEntry {
        actor: caller.id.clone(),
        action: format!("action:{action}"),
        target: target(kind, &name),
        before,
        after,
        details: json!({ "args": args, "result": result }),
        propagation: propagation.clone(),
        ..AuditEntry::default()
    });
    propagated.map_err(backend_problem)?;
    let reply = json!({
        "name": name,
        "kind": kind,
        "action": action,
        "version": version,
        "result": result,
        "propagation": propagation,
    });
    Ok(json_response(StatusCode::OK, &reply, Some(version)))
}

// === workers ===

fn backend_problem(e: BackendError) -> Problem {
    match e {
        BackendError::NotSupported(msg) => {
            Problem::new(StatusCode::NOT_IMPLEMENTED, "Not Implemented").detail(msg)
        }
        BackendError::Conflict(msg) => Problem::new(StatusCode::CONFLICT, "Conflict").detail(msg),
        BackendError::NotFound(msg) => Problem::new(StatusCode::NOT_FOUND, "Not Found").detail(msg),
        BackendError::Invalid(errors) => {
            invalid(errors, "the request was refused; nothing changed")
        }
        BackendError::Unavailable(msg) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").detail(msg)
        }
        BackendError::NotApplied(propagation) => {
            let refused = propagation.failed().any(|w| w.outcome == Outcome::Refused)
                || propagation
                    .failed_nodes()
                    .any(|n| n.outcome == Outcome::Refused);
            let nodes: Vec<String> = propagation
                .failed_nodes()
                .map(|n| n.node_id.clone())
                .collect();
            let (status, title) = match (refused, nodes.is_empty()) {
                (true, true) => (StatusCode::CONFLICT, "Refused by a worker"),
                (true, false) => (StatusCode::CONFLICT, "Refused by a fleet node"),
                (false, true) => (StatusCode::GATEWAY_TIMEOUT, "A worker did not answer"),
                (false, false) => (StatusCode::GATEWAY_TIMEOUT, "A fleet node did not answer"),
            };
            let workers: Vec<u32> = propagation.failed().map(|w| w.worker_id).collect();
            let mut problem = Problem::new(status, title)
                .detail(propagation.summary())
                .with("workers", workers);
            if !nodes.is_empty() {
                problem = problem.with("nodes", nodes);
            }
            problem.with("propagation", propagation)
        }
    }
}

/// Runs a worker operation, waits for the server's answer, audits it and answers 202 with
/// before/after (or the server's refusal as a problem).
async fn worker_op(
    shared: &Shared,
    caller: &Caller,
    action: &str,
    target: String,
    op: super::backend::BackendFuture<'_, crate::control::Change>,
) -> Result {
    let change = op.await.map_err(backend_problem)?;
    let entry = shared.audit.record(AuditEntry {
        actor: caller.id.clone(),
        action: action.to_owned(),
        target,
        before: change.before.clone(),
        after: change.after.clone(),
        ..AuditEntry::default()
    });
    let reply = json!({
        "accepted": true,
        "before": change.before,
        "after": change.after,
        "audit_seq": entry.seq,
    });
    Ok(json_response(StatusCode::ACCEPTED, &reply, None))
}

/// Refuses a body with members other than `allowed`; returns the object (empty when no body).
fn object_body(body: Option<Value>, allowed: &[&str], shape: &str) -> Result<Map<String, Value>> {
    let map = match body {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(invalid(
                vec![FieldError::new(
                    "body",
                    format!("expected a JSON object: {shape}"),
                )],
                "the request was refused; nothing changed",
            )
            .into());
        }
    };
    let unknown: Vec<FieldError> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| FieldError::new(k.clone(), format!("unknown field; the body is {shape}")))
        .collect();
    if unknown.is_empty() {
        Ok(map)
    } else {
        Err(invalid(unknown, "the request was refused; nothing changed").into())
    }
}

pub(crate) async fn scale(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result {
    const SHAPE: &str = r#"{"workers": N}"#;
    let body = json_body(body, shared.config.body_limit)?;
    let map = object_body(body, &["workers"], SHAPE)?;
    let workers = match map.get("workers") {
        None => Err(FieldError::new(
            "workers",
            format!("is required; the body is {SHAPE}"),
        )),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
            _ => Err(FieldError::new(
                "workers",
                format!("must be a whole number from 1 to {MAX_WORKERS} (got {v})"),
            )),
        },
    }
    .map_err(|e| invalid(vec![e], "the request was refused; nothing changed"))?;
    let workers = u32::try_from(workers).unwrap_or(u32::MAX);
    worker_op(
        &shared,
        &caller,
        "scale",
        "workers".into(),
        shared.config.backend.scale(workers),
    )
    .await
}

pub(crate) async fn restart(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result {
    let body = json_body(body, shared.config.body_limit)?;
    object_body(body, &[], "empty or {}")?;
    worker_op(
        &shared,
        &caller,
        "restart",
        "workers".into(),
        shared.config.backend.restart(),
    )
    .await
}

pub(crate) async fn drain(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result {
    let Path(id) = path.map_err(|r| path_error(&r))?;
    let id: u32 = id.parse().map_err(|_| {
        invalid(
            vec![FieldError::new(
                "id",
                format!("must be a worker id (a whole number), got `{id}`"),
            )],
            "the request was refused; nothing changed",
        )
    })?;
    let body = json_body(body, shared.config.body_limit)?;
    object_body(body, &[], "empty or {}")?;
    worker_op(
        &shared,
        &caller,
        "drain",
        format!("workers/{id}"),
        shared.config.backend.drain_worker(id),
    )
    .await
}

// === fleet ===

/// Applies settings a fleet already decided to this server (see
/// [`Admin::apply_replicated`](super::Admin::apply_replicated)).
pub(crate) async fn apply_replicated(
    shared: &Shared,
    kind: ComponentKind,
    name: &str,
    settings: &Value,
    actor: &str,
    details: Value,
) -> std::result::Result<Propagation, BackendError> {
    let _serialized = shared.write_lock.lock().await;
    let component = shared.registry.get_kind(kind, name).ok_or_else(|| {
        BackendError::NotFound(format!(
            "no {} named `{name}` on this server",
            kind_word(kind)
        ))
    })?;
    let preview = component
        .apply(settings, true)
        .map_err(BackendError::Invalid)?;
    if preview.before == preview.after {
        // Already in force here (this server made the change, or caught up before).
        return Ok(Propagation::default());
    }
    let change = component
        .apply(settings, false)
        .map_err(BackendError::Invalid)?;
    let version = component.version();
    let applied = Applied::Settings {
        kind,
        name: name.to_owned(),
        patch: settings.clone(),
        change: change.clone(),
        version,
        revert: false,
        actor: actor.to_owned(),
        scope: Scope::Replicated,
    };
    match shared.config.backend.propagate(&applied).await {
        Ok(propagation) => {
            shared.audit.record(AuditEntry {
                actor: actor.to_owned(),
                action: "fleet_update".into(),
                target: target(kind, name),
                before: change.before,
                after: change.after,
                details,
                propagation: Some(propagation.clone()),
                ..AuditEntry::default()
            });
            Ok(propagation)
        }
        Err(error) => {
            if let Err(errors) = component.apply(&change.before, false) {
                tracing::error!(target = %target(kind, name), errors = ?errors, "cannot restore settings after a refused fleet change");
            }
            let propagation = match &error {
                BackendError::NotApplied(p) => Some(p.clone()),
                _ => None,
            };
            shared.audit.record(AuditEntry {
                actor: actor.to_owned(),
                action: "fleet_update_refused".into(),
                target: target(kind, name),
                before: change.before.clone(),
                after: change.before,
                details: json!({ "fleet": details, "error": error.to_string() }),
                propagation,
                ..AuditEntry::default()
            });
            Err(error)
        }
    }
}

pub(crate) async fn fleet_nodes(State(shared): State<Arc<Shared>>) -> Result {
    let nodes = shared
        .config
        .backend
        .fleet_nodes()
        .await
        .map_err(backend_problem)?;
    Ok(Json(nodes).into_response())
}

pub(crate) async fn fleet_snapshot(State(shared): State<Arc<Shared>>) -> Result {
    let snapshot = shared
        .config
        .backend
        .fleet_snapshot()
        .await
        .map_err(backend_problem)?;
    Ok(Json(snapshot).into_response())
}

/// The most fleet audit entries one request returns.
const MAX_FLEET_AUDIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetAuditQuery {
    limit: Option<usize>,
}

pub(crate) async fn fleet_audit(
    State(shared): State<Arc<Shared>>,
    query: std::result::Result<Query<FleetAuditQuery>, QueryRejection>,
) -> Result {
    let Query(q) = query.map_err(|r| query_error(&r))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_FLEET_AUDIT);
    let audit = shared
        .config
        .backend
        .fleet_audit(limit)
        .await
        .map_err(backend_problem)?;
    Ok(Json(audit).into_response())
}
