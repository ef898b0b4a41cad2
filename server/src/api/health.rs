//! Health endpoints: `/health/live` (the process runs), `/health/ready` (503 while draining or
//! before the server is ready) and `/health/worker` (who answered).

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

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
            "draining\n",
        )
            .into_response()
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
