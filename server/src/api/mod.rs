//! The reference REST API from the seed material: users CRUD, names, demo routes and health.

mod extract;
pub mod health;
pub mod users;

pub use extract::{ApiJson, ApiQuery};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use palisade::problem::Problem;
use serde::Deserialize;

use crate::app::{AppState, RouteLayers};

/// All routes of the reference API (without the layers).
pub fn routes(state: Arc<AppState>, layers: RouteLayers) -> Router {
    // `cache.enabled = false`: no response cache on `/names` (the users cache is bypassed in
    // its handler).
    let names_route = if state.config.cache.enabled {
        get(names).route_layer(layers.names_cache)
    } else {
        get(names)
    };
    Router::new()
        .nest("/api/v1", Router::new().nest("/users", users::routes()))
        .route("/names", names_route)
        .route("/plaintext", get(plaintext))
        .route("/slow", get(slow))
        .route("/flaky", get(flaky).route_layer(layers.flaky_breaker))
        .nest("/health", health::routes())
        .merge(debug_routes())
        .fallback(not_found)
        .with_state(state)
}

/// Test-only routes (cargo feature `test-routes`, off by default): `/debug/block?ms=` blocks
/// the worker's event loop, to exercise stuck-worker detection.
#[cfg(feature = "test-routes")]
fn debug_routes() -> Router<Arc<AppState>> {
    async fn block(ApiQuery(p): ApiQuery<SlowParams>) -> &'static str {
        std::thread::sleep(Duration::from_millis(p.ms.unwrap_or(60_000)));
        "unblocked\n"
    }
    async fn garbage_control() -> StatusCode {
        match crate::channel::send_malformed_frame() {
            Ok(()) => StatusCode::ACCEPTED,
            Err(error) => {
                tracing::warn!(%error, "/debug/garbage-control");
                StatusCode::CONFLICT
            }
        }
    }
    Router::new().route("/debug/block", get(block)).route(
        "/debug/garbage-control",
        axum::routing::post(garbage_control),
    )
}

#[cfg(not(feature = "test-routes"))]
fn debug_routes() -> Router<Arc<AppState>> {
    Router::new()
}

async fn plaintext() -> &'static str {
    "Hello, World!"
}

/// The names served by `/names` (a small, cacheable list).
pub const NAMES: &[&str] = &[
    "Ada", "Alan", "Barbara", "Dennis", "Donald", "Edsger", "Grace", "John", "Ken", "Leslie",
    "Linus", "Margaret", "Niklaus", "Radia", "Tony",
];

async fn names() -> impl IntoResponse {
    (
        [(http::header::CACHE_CONTROL, "public, max-age=5")],
        axum::Json(NAMES),
    )
}

#[derive(Debug, Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(
    State(state): State<Arc<AppState>>,
    ApiQuery(p): ApiQuery<SlowParams>,
) -> Result<String, Problem> {
    let ms = p.ms.unwrap_or(100);
    if ms > state.config.demo.slow_max_ms {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "Bad Request").detail(format!(
                "ms must be at most {} (got {ms})",
                state.config.demo.slow_max_ms
            )),
        );
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(format!("slept {ms} ms\n"))
}

#[derive(Debug, Deserialize)]
struct FlakyParams {
    fail_pct: Option<u8>,
}

async fn flaky(ApiQuery(p): ApiQuery<FlakyParams>) -> Result<&'static str, Problem> {
    let pct = p.fail_pct.unwrap_or(50);
    if pct > 100 {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "Bad Request")
            .detail(format!("fail_pct must be between 0 and 100 (got {pct})")));
    }
    if fastrand::u8(0..100) < pct {
        return Err(
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                .detail("the flaky endpoint failed on purpose"),
        );
    }
    Ok("ok\n")
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "Not Found").detail("no route matches this path")
}
