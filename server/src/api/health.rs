//! Health endpoints: `/health/live` (the process runs), `/health/ready` (503 while draining, before
//! the server is ready, or when a required dependency check fails; JSON detail per check) and
//! `/health/worker` (who answered).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;

use crate::app::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/worker", get(worker))
}

async fn live() -> &'static str {
    "ok\n"
}

/// 503 while starting or draining; otherwise the registered dependency checks decide (a
/// failed required check is 503, a failed optional one is 200 `degraded`), each with its detail.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if !state.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
            "draining\n",
        )
            .into_response();
    }
    let report = state.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "status": report.status(), "checks": report.checks });
    if report.ready {
        (status, Json(body)).into_response()
    } else {
        (status, [(http::header::RETRY_AFTER, "1")], Json(body)).into_response()
    }
}

/// `/health/worker`.
#[derive(Debug, Serialize)]
pub struct WorkerHealth {
    /// Worker slot id (0 for a single-process server).
    pub worker_id: u32,
    /// Process id.
    pub pid: u32,
    /// Seconds since the process started.
    pub uptime_secs: u64,
    /// Requests in flight, including this one.
    pub in_flight: u64,
    /// Requests completed by this process.
    pub requests: u64,
}

async fn worker(State(state): State<Arc<AppState>>) -> Json<WorkerHealth> {
    Json(WorkerHealth {
        worker_id: state.worker_id,
        pid: std::process::id(),
        uptime_secs: state.started.elapsed().as_secs(),
        in_flight: state.drain.in_flight(),
        requests: state.observe.traffic().requests_total,
    })
}
