//! The admin HTTP API over a [`Registry`]: live snapshots, a Server-Sent-Events stream,
//! validated runtime changes with optimistic concurrency, TTL reverts, operator actions,
//! worker operations and an audit log.
//!
//! [`router`] returns an axum [`Router`] you mount on your own (loopback) listener; the
//! reference server's supervisor serves the same router with its own [`AdminBackend`], so
//! `palisade-top` and scripts see one API everywhere. The routes are listed by [`routes`] and
//! documented in `docs/openapi.json` and `docs/admin-api.md`.
//!
//! # Guarantees
//!
//! - Every route needs `Authorization: Bearer <token>` (401 otherwise, with
//!   `WWW-Authenticate: Bearer`). Secrets are compared in constant time. A read-only token gets
//!   403 on anything but `GET`/`HEAD`.
//! - Request bodies over the limit (64 KiB by default) answer 413. Errors are
//!   `application/problem+json`; refused changes list every `{field, reason}` and change
//!   nothing.
//! - `GET` of one component returns `ETag: "<version>"`; a `PUT` or action with an `If-Match`
//!   that does not match the current version answers 412. Admin changes are serialized, so the
//!   check and the change are atomic with respect to other admin requests. A `PUT` without
//!   `If-Match` applies unconditionally.
//! - A `PUT` that changes nothing (an empty patch, or the current values) answers 200 with the
//!   current version and settings, and is neither applied nor audited: the version stays, so
//!   other operators' `ETag`s stay valid.
//! - A change answers after the [`AdminBackend`] carried it to every worker process
//!   ([`AdminBackend::propagate`]), with each worker's outcome; when a worker refuses it or
//!   does not answer in time it is rolled back everywhere, here too, and the answer is a 409 or
//!   504 problem naming the workers.
//! - A change with `ttl_secs` is reverted to the previous settings when the time is up, unless
//!   the component changed since (then the revert is skipped and audited as
//!   `revert_skipped`).
//! - Every change (and worker operation) is recorded in a bounded [`AuditLog`] with the token
//!   id (never the secret), included in snapshots and emitted as a `tracing` event.
//!
//! # Caveats
//!
//! Serve it on loopback or behind TLS: a bearer token on plain HTTP is readable by anyone on
//! the path. Changes made directly through a handle (not through this router) are not audited
//! and are not serialized with admin changes; `If-Match` still detects them through the
//! version.
//!
//! # Examples
//!
//! ```
//! use palisade::admin::{self, AdminConfig, LocalBackend};
//! use palisade::control::Registry;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = Registry::new();
//! // registry.register("api", Arc::new(rate_limit_handle))...
//! let config = AdminConfig::builder()
//!     .read_write_token("ops", "0123456789abcdef0123456789abcdef")
//!     .backend(LocalBackend::new().name("my-api"))
//!     .build()
//!     .unwrap();
//! let app = admin::router(registry, config);
//! // axum::serve(tokio::net::TcpListener::bind("127.0.0.1:9901").await?, app).await?;
//!
//! let req = http::Request::get("/admin/v1/snapshot")
//!     .header("authorization", "Bearer 0123456789abcdef0123456789abcdef")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let res = app.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//!
//! let anonymous = http::Request::get("/admin/v1/snapshot").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.oneshot(anonymous).await.unwrap().status(), 401);
//! # }
//! ```

mod audit;
mod auth;
mod backend;
mod config;
pub mod fleet;
mod handlers;
mod routes;
mod stream;
pub mod token;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use tokio::sync::watch;

pub use audit::AuditLog;
pub use backend::{
    AdminBackend, Applied, BackendError, BackendFuture, LocalBackend, Scope, rss_bytes,
};
pub use config::{Access, AdminConfig, AdminConfigBuilder, ConfigError, MIN_SECRET_LEN, Token};
pub use routes::routes;

use crate::control::model::{SCHEMA_VERSION, Snapshot};
use crate::control::{ComponentKind, Registry};

/// Builds the admin router over `registry`. Shorthand for
/// `Admin::new(registry, config).router()`; use [`Admin`] to also reach the audit log, take
/// snapshots in code or end open streams at shutdown.
pub fn router(registry: Registry, config: AdminConfig) -> Router {
    Admin::new(registry, config).router()
}

/// The admin API's state: registry, configuration, audit log and snapshot sequence. Cheap to
/// clone; clones share everything.
#[derive(Clone)]
pub struct Admin {
    shared: Arc<Shared>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("registry", &self.shared.registry)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The admin API over `registry`.
    pub fn new(registry: Registry, config: AdminConfig) -> Self {
        let (closed, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                audit: AuditLog::new(config.audit_capacity),
                registry,
                config,
                seq: AtomicU64::new(0),
                write_lock: tokio::sync::Mutex::new(()),
                closed,
            }),
        }
    }

    /// The axum router serving every route of [`routes`]. Routers from one `Admin` share its
    /// state; mount it with `Router::merge` (it has no fallback of its own).
    pub fn router(&self) -> Router {
        routes::build(Arc::clone(&self.shared))
    }

    /// Takes a snapshot, as `GET /admin/v1/snapshot` does (and advances its `seq`).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// The audit log; a server may record its own operations (a SIGHUP restart) here.
    pub fn audit(&self) -> &AuditLog {
        &self.shared.audit
    }

    /// The registry served.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Applies settings that a fleet already decided (a change made through another node's admin
    /// API) to this server: validated by the component, carried to every worker by the
    /// backend ([`AdminBackend::propagate`] with [`Scope::Replicated`], so it is not published
    /// again), serialized with this server's own admin changes and audited as `fleet_update`
    /// with `details`. Settings already in force answer at once with no workers.
    ///
    /// # Errors
    /// The component is unknown ([`BackendError::NotFound`]), refuses the settings
    /// ([`BackendError::Invalid`]), or a worker refused or did not answer
    /// ([`BackendError::NotApplied`]; this server's copy is restored, as for an admin change).
    pub async fn apply_replicated(
        &self,
        kind: ComponentKind,
        name: &str,
        settings: &serde_json::Value,
        actor: &str,
        details: serde_json::Value,
    ) -> Result<crate::control::model::Propagation, BackendError> {
        handlers::apply_replicated(&self.shared, kind, name, settings, actor, details).await
    }

    /// Ends every open `GET /admin/v1/stream` response (and any opened later), so a graceful
    /// shutdown does not wait for them.
    pub fn close_streams(&self) {
        self.shared.closed.send_replace(true);
    }
}

/// State shared by every handler.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) config: AdminConfig,
    pub(crate) audit: AuditLog,
    /// The last snapshot `seq` handed out.
    pub(crate) seq: AtomicU64,
    /// Serializes admin changes so an `If-Match` check and the change are atomic.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// `true` once streams should end.
    pub(crate) closed: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn snapshot(&self) -> Snapshot {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let (mut limits, mut breakers, mut caches) = (Vec::new(), Vec::new(), Vec::new());
        for c in self.registry.snapshot() {
            match c.kind {
                ComponentKind::Limit => limits.push(c),
                ComponentKind::Breaker => breakers.push(c),
                ComponentKind::Cache => caches.push(c),
            }
        }
        let backend = &self.config.backend;
        Snapshot {
            schema: SCHEMA_VERSION,
            seq,
            taken_at_ms: audit::now_ms(),
            server: backend.server(),
            workers: backend.workers(),
            traffic: backend.traffic(),
            limits,
            breakers,
            caches,
            audit: self.audit.recent(self.config.snapshot_audit),
        }
    }
}
