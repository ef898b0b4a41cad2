//! The route table: one list that builds the router and that the OpenAPI test compares with
//! `docs/openapi.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post, put};
use http::{HeaderValue, StatusCode, header};

use super::{Shared, auth, handlers, stream};
use crate::control::ComponentKind;
use crate::control::ComponentKind::{Breaker, Cache, Limit};
use crate::problem::Problem;

#[derive(Debug, Clone, Copy)]
enum Op {
    Snapshot,
    Stream,
    List(ComponentKind),
    Get(ComponentKind),
    Put(ComponentKind),
    Action(ComponentKind),
    Workers,
    Scale,
    Restart,
    Drain,
    Audit,
    FleetNodes,
    FleetSnapshot,
    FleetAudit,
}

struct RouteDef {
    method: &'static str,
    path: &'static str,
    op: Op,
}

const fn def(method: &'static str, path: &'static str, op: Op) -> RouteDef {
    RouteDef { method, path, op }
}

const TABLE: &[RouteDef] = &[
    def("GET", "/admin/v1/snapshot", Op::Snapshot),
    def("GET", "/admin/v1/stream", Op::Stream),
    def("GET", "/admin/v1/limits", Op::List(Limit)),
    def("GET", "/admin/v1/limits/{name}", Op::Get(Limit)),
    def("PUT", "/admin/v1/limits/{name}", Op::Put(Limit)),
    def(
        "POST",
        "/admin/v1/limits/{name}/actions/{action}",
        Op::Action(Limit),
    ),
    def("GET", "/admin/v1/breakers", Op::List(Breaker)),
    def("GET", "/admin/v1/breakers/{name}", Op::Get(Breaker)),
    def("PUT", "/admin/v1/breakers/{name}", Op::Put(Breaker)),
    def(
        "POST",
        "/admin/v1/breakers/{name}/actions/{action}",
        Op::Action(Breaker),
    ),
    def("GET", "/admin/v1/caches", Op::List(Cache)),
    def("GET", "/admin/v1/caches/{name}", Op::Get(Cache)),
    def("PUT", "/admin/v1/caches/{name}", Op::Put(Cache)),
    def(
        "POST",
        "/admin/v1/caches/{name}/actions/{action}",
        Op::Action(Cache),
    ),
    def("GET", "/admin/v1/workers", Op::Workers),
    def("POST", "/admin/v1/workers/scale", Op::Scale),
    def("POST", "/admin/v1/workers/restart", Op::Restart),
    def("POST", "/admin/v1/workers/{id}/drain", Op::Drain),
    def("GET", "/admin/v1/audit", Op::Audit),
    def("GET", "/admin/v1/fleet/nodes", Op::FleetNodes),
    def("GET", "/admin/v1/fleet/snapshot", Op::FleetSnapshot),
    def("GET", "/admin/v1/fleet/audit", Op::FleetAudit),
];

/// Every admin route as `(method, path template)`, in axum 0.8 syntax (`/{name}`). `GET`
/// routes also answer `HEAD`. The OpenAPI document in `docs/openapi.json` lists exactly these.
///
/// ```
/// let routes: Vec<_> = palisade::admin::routes().collect();
/// assert!(routes.contains(&("PUT", "/admin/v1/limits/{name}")));
/// ```
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE.iter().map(|r| (r.method, r.path))
}

type Endpoint = MethodRouter<Arc<Shared>>;

fn endpoint(op: Op) -> Endpoint {
    match op {
        Op::Snapshot => get(handlers::snapshot),
        Op::Stream => get(stream::stream),
        Op::List(kind) => get(move |s| handlers::list(kind, s)),
        Op::Get(kind) => get(move |s, p| handlers::get_one(kind, s, p)),
        Op::Put(kind) => put(move |s, c, p, q, h, b| handlers::put_one(kind, s, c, p, q, h, b)),
        Op::Action(kind) => post(move |s, c, p, q, h, b| handlers::action(kind, s, c, p, q, h, b)),
        Op::Workers => get(handlers::workers),
        Op::Scale => post(handlers::scale),
        Op::Restart => post(handlers::restart),
        Op::Drain => post(handlers::drain),
        Op::Audit => get(handlers::audit),
        Op::FleetNodes => get(handlers::fleet_nodes),
        Op::FleetSnapshot => get(handlers::fleet_snapshot),
        Op::FleetAudit => get(handlers::fleet_audit),
    }
}

fn method_not_allowed(allow: &str) -> Response {
    let mut res = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        .detail(format!("this admin route accepts {allow}"))
        .into_response();
    if let Ok(value) = HeaderValue::from_str(allow) {
        res.headers_mut().insert(header::ALLOW, value);
    }
    res
}

/// Builds the router over `shared`.
pub(crate) fn build(shared: Arc<Shared>) -> Router {
    let mut by_path: BTreeMap<&'static str, (Endpoint, Vec<&'static str>)> = BTreeMap::new();
    for route in TABLE {
        let entry = by_path
            .entry(route.path)
            .or_insert_with(|| (MethodRouter::new(), Vec::new()));
        entry.0 = std::mem::take(&mut entry.0).merge(endpoint(route.op));
        entry.1.push(route.method);
        if route.method == "GET" {
            entry.1.push("HEAD");
        }
    }
    let mut router = Router::new();
    for (path, (endpoint, methods)) in by_path {
        let allow = methods.join(", ");
        let fallback = move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        };
        router = router.route(path, endpoint.fallback(fallback));
    }
    let limit = shared.config.body_limit;
    router
        .route_layer(DefaultBodyLimit::max(limit))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            auth::authenticate,
        ))
        .with_state(shared)
}
