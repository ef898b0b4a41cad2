//! The handlers shared by the benchmark targets: the same routes and work as the Palisade
//! reference server (`server/src/api`), with no middleware.
//!
//! - `GET /plaintext`: `Hello, World!`
//! - `GET /api/v1/users/{id}`: one user from an in-memory map behind a read lock, as JSON
//! - `GET /names`: a JSON list of 15 names with `Cache-Control: public, max-age=5`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

/// A user, as served by the reference server.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// The in-memory user map (ids 1..=3), read-locked per request like the reference server's.
#[derive(Debug)]
pub struct Users(RwLock<BTreeMap<u64, User>>);

impl Users {
    /// The three sample users of the reference server.
    pub fn with_samples() -> Self {
        let users = [
            ("Ada Lovelace", "ada@example.com"),
            ("Alan Turing", "alan@example.com"),
            ("Grace Hopper", "grace@example.com"),
        ]
        .into_iter()
        .zip(1u64..)
        .map(|((name, email), id)| {
            (
                id,
                User {
                    id,
                    name: name.into(),
                    email: email.into(),
                },
            )
        })
        .collect();
        Self(RwLock::new(users))
    }
}

/// The names served by `/names` (the same list as the reference server).
pub const NAMES: &[&str] = &[
    "Ada", "Alan", "Barbara", "Dennis", "Donald", "Edsger", "Grace", "John", "Ken", "Leslie",
    "Linus", "Margaret", "Niklaus", "Radia", "Tony",
];

/// The routes, with no layers.
pub fn routes() -> Router {
    let users = Router::new().route("/{id}", get(fetch));
    Router::new()
        .nest("/api/v1", Router::new().nest("/users", users))
        .route("/names", get(names))
        .route("/plaintext", get(plaintext))
        .with_state(Arc::new(Users::with_samples()))
}

async fn plaintext() -> &'static str {
    "Hello, World!"
}

async fn names() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=5")], Json(NAMES))
}

async fn fetch(
    State(users): State<Arc<Users>>,
    Path(raw): Path<String>,
) -> Result<Json<User>, (StatusCode, &'static str)> {
    let id = raw.parse::<u64>().ok().filter(|id| *id > 0).ok_or((
        StatusCode::BAD_REQUEST,
        "user id must be a positive integer",
    ))?;
    users
        .0
        .read()
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or((StatusCode::NOT_FOUND, "no such user"))
}

/// The listen address: the first command-line argument, default `127.0.0.1:3000`.
pub fn addr_from_args() -> SocketAddr {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()
        .expect("usage: bench-<app> ADDR (e.g. 127.0.0.1:3000)")
}

/// A listener that sets `TCP_NODELAY` on every accepted socket.
pub type NoDelayListener = axum::serve::TapIo<TcpListener, fn(&mut TcpStream)>;

fn set_nodelay(tcp: &mut TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// Binds `addr` with `TCP_NODELAY` on accepted sockets (as the reference server does).
pub async fn listen(addr: SocketAddr) -> NoDelayListener {
    use axum::serve::ListenerExt as _;
    TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"))
        .tap_io(set_nodelay as fn(&mut TcpStream))
}
