//! The reference application: the seed API wrapped in Palisade's layers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::limit::RequestBodyLimitLayer;

use palisade::control::Registry;
use palisade::control::model::StatusCounts;

use crate::api::{self, users::UserStore};
use crate::config::Config;

/// State shared by every request in one process.
#[derive(Debug)]
pub struct AppState {
    /// The effective configuration.
    pub config: Config,
    /// The user store.
    pub users: UserStore,
    /// Worker slot id (0 for a single-process server).
    pub worker_id: u32,
    /// When this process started.
    pub started: Instant,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Requests completed.
    pub requests: AtomicU64,
    /// Completed requests by status class.
    pub status: parking_lot::Mutex<StatusCounts>,
    /// This process's layer handles.
    pub registry: Registry,
    ready: AtomicBool,
}

impl AppState {
    /// State for worker `worker_id` with sample users.
    pub fn new(config: Config, worker_id: u32) -> Self {
        Self {
            config,
            users: UserStore::with_samples(),
            worker_id,
            started: Instant::now(),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            status: parking_lot::Mutex::new(StatusCounts::default()),
            registry: Registry::new(),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether `/health/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The full application: routes plus layers.
pub fn build(state: Arc<AppState>) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    api::routes(Arc::clone(&state))
        .layer(axum::middleware::from_fn_with_state(state, count_requests))
        .layer(RequestBodyLimitLayer::new(body_limit))
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let res = next.run(req).await;
    state.in_flight.fetch_sub(1, Ordering::Relaxed);
    state.requests.fetch_add(1, Ordering::Relaxed);
    state.status.lock().record(res.status().as_u16());
    res
}
