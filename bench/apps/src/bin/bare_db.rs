//! `bench-bare-db ADDR`: the database-backed user lookup on axum with no middleware and no
//! cache: every `GET /api/v1/users/{id}` is one query on a sqlx PostgreSQL pool
//! (`DATABASE_URL`, `POOL_SIZE` connections, default 8). The floor bench/db.sh compares the
//! cached stacks with.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use palisade_bench_apps::User;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

#[tokio::main]
async fn main() {
    let addr = palisade_bench_apps::addr_from_args();
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is required");
    let size = std::env::var("POOL_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let pool = PgPoolOptions::new()
        .min_connections(size)
        .max_connections(size)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    let app = Router::new()
        .route("/plaintext", get(|| async { "Hello, World!" }))
        .route("/api/v1/users/{id}", get(fetch))
        .with_state(pool);
    let listener = palisade_bench_apps::listen(addr).await;
    eprintln!("bench-bare-db listening on {addr}");
    axum::serve(listener, app).await.expect("server failed");
}

async fn fetch(
    State(pool): State<PgPool>,
    Path(raw): Path<String>,
) -> Result<Json<User>, (StatusCode, &'static str)> {
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or((StatusCode::BAD_REQUEST, "user id must be a positive integer"))?;
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, email FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&pool)
            .await
            .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"))?;
    let (id, name, email) = row.ok_or((StatusCode::NOT_FOUND, "no such user"))?;
    Ok(Json(User {
        id: id as u64,
        name,
        email,
    }))
}
