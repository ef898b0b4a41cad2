//! `TwoLevelCache::get_or_load` inside axum handlers, with invalidation on update.
//!
//! `GET /users/{id}` reads through a [`TwoLevelCache`]: an L1 hit costs no database query;
//! concurrent misses for one user run **one** query (single flight); a missing user is cached
//! as "not found" for a few seconds (negative caching); if the database fails, a stale copy is
//! served for up to 10 minutes (fail-safe). `PUT /users/{id}` writes the database, then
//! invalidates the key.
//!
//! With `REDIS_URL` set (e.g. `redis://127.0.0.1:6379/`), the cache gets a Redis L2 shared by
//! every instance, and invalidations reach every instance's L1 through Redis pub/sub. The example
//! then also builds a second cache over the same Redis, standing in for a second instance, and
//! shows that an update made through one is seen by the other. Without `REDIS_URL` it runs L1
//! only: nothing else changes in the code.
//!
//! ```text
//! cargo run -p examples --example cache_in_handler
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run -p examples --example cache_in_handler
//! curl localhost:3000/users/1
//! curl -X PUT -H 'content-type: application/json' -d '{"name":"Ada L."}' localhost:3000/users/1
//! ```
//!
//! With `EXAMPLE_SMOKE=1` (or `--once`) it sends its own requests in process and exits.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use palisade::cache::{CacheConfig, RedisConfig, TwoLevelCache};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A slow database: every query takes 50 ms and is counted.
#[derive(Default)]
struct Db {
    users: RwLock<HashMap<u64, User>>,
    queries: AtomicU64,
}

impl Db {
    async fn find(&self, id: u64) -> Result<Option<User>, BoxError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(self.users.read().get(&id).cloned())
    }

    async fn update(&self, user: User) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.users.write().insert(user.id, user);
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    db: Arc<Db>,
    users: TwoLevelCache<u64, User>,
}

async fn get_user(State(state): State<AppState>, Path(id): Path<u64>) -> Response {
    let db = Arc::clone(&state.db);
    // Runs the query only on a miss, once however many requests miss together.
    match state
        .users
        .get_or_load_optional(&id, move || async move { db.find(id).await })
        .await
    {
        Ok(Some(user)) => Json(user).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        // The database failed and nothing stale was left to serve.
        Err(error) => {
            tracing::warn!(%error, user = id, "user lookup failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

async fn put_user(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Json(body): Json<Rename>,
) -> Json<User> {
    let user = User {
        id,
        name: body.name,
    };
    state.db.update(user.clone()).await;
    // Write first, then invalidate: the next read loads the new row (on every instance).
    state.users.invalidate(&id).await;
    Json(user)
}

fn cache_config(redis_url: Option<&str>) -> Result<CacheConfig, BoxError> {
    let mut config = CacheConfig::builder()
        .name("users")
        .namespace("example-users")
        .ttl(Duration::from_secs(30))
        .max_stale(Duration::from_secs(600))
        .negative_ttl(Duration::from_secs(5))
        .jitter(Duration::from_secs(2));
    if let Some(url) = redis_url {
        config = config.redis(RedisConfig::new(url));
    }
    Ok(config.build()?)
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke =
        std::env::var_os("EXAMPLE_SMOKE").is_some() || std::env::args().any(|a| a == "--once");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    palisade::observe::init_tracing(palisade::observe::LogFormat::Compact, &filter)?;
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());

    let db = Arc::new(Db::default());
    for (id, name) in [(1, "Ada"), (2, "Grace"), (3, "Barbara")] {
        db.update(User {
            id,
            name: name.to_owned(),
        })
        .await;
    }
    let users = TwoLevelCache::new(cache_config(redis_url.as_deref())?)?;
    match &redis_url {
        Some(url) => {
            println!("cache: L1 + Redis L2 at {url}");
            users.flush().await; // start the demo from a clean slate
        }
        None => println!("cache: L1 only (set REDIS_URL for a shared Redis L2)"),
    }
    let state = AppState {
        db: Arc::clone(&db),
        users: users.clone(),
    };

    if !smoke {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        println!("serving on http://{}", listener.local_addr()?);
        axum::serve(listener, app(state)).await?;
        return Ok(());
    }

    let app = app(state);
    let get = |id: u64| {
        let app = app.clone();
        async move {
            let res = app
                .oneshot(Request::get(format!("/users/{id}")).body(Body::empty())?)
                .await?;
            let status = res.status().as_u16();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, String::from_utf8_lossy(&body).into_owned()))
        }
    };

    let (status, body) = get(1).await?;
    println!(
        "GET /users/1 -> {status} {body} (queries: {})",
        db.queries()
    );
    let (status, _) = get(1).await?;
    println!(
        "GET /users/1 again -> {status} from the cache (queries: {})",
        db.queries()
    );

    let before = db.queries();
    let many: Vec<_> = (0..50).map(|_| tokio::spawn(get(2))).collect();
    for r in many {
        r.await??;
    }
    println!(
        "50 concurrent GET /users/2 -> {} query (single flight)",
        db.queries() - before
    );

    let put = Request::put("/users/1")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"name":"Ada Lovelace"}"#))?;
    let status = app.clone().oneshot(put).await?.status().as_u16();
    let (_, body) = get(1).await?;
    println!("PUT /users/1 -> {status}, then GET /users/1 -> {body} (invalidated, reloaded)");

    let before = db.queries();
    let (status, _) = get(99).await?;
    let (again, _) = get(99).await?;
    println!(
        "GET /users/99 -> {status}, again -> {again}: {} query (negative caching)",
        db.queries() - before
    );

    if let Some(url) = &redis_url {
        let (_, body) = get(3).await?;
        println!("instance A: GET /users/3 -> {body} (loaded, stored in L1 and Redis)");
        two_instances(url, &users, &db).await?;
    }
    let stats = users.stats();
    println!(
        "stats: l1 hits {} misses {}, loads {}, coalesced {}, negative hits {}",
        stats.l1.hits,
        stats.l1.misses,
        stats.loads.total,
        stats.loads.coalesced,
        stats.negative_hits
    );
    Ok(())
}

/// A second cache over the same Redis, as another instance of the service would have.
async fn two_instances(
    url: &str,
    a: &TwoLevelCache<u64, User>,
    db: &Arc<Db>,
) -> Result<(), BoxError> {
    let b: TwoLevelCache<u64, User> = TwoLevelCache::new(cache_config(Some(url))?)?;
    // Wait for instance B's invalidation subscriber (it connects in the background).
    for _ in 0..250 {
        if b.stats().l2.is_some_and(|l2| l2.backplane.connected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db_b = Arc::clone(db);
    let before = db.queries();
    let user = b
        .get_or_load(&3, move || async move {
            db_b.find(3)
                .await?
                .ok_or_else(|| BoxError::from("no user 3"))
        })
        .await?;
    let l2_hits = b.stats().l2.map_or(0, |l2| l2.hits);
    println!(
        "instance B: user 3 = {} from Redis L2 (l2 hits: {l2_hits}, queries: {})",
        user.name,
        db.queries() - before
    );

    // Instance A updates user 3 and invalidates; B's L1 copy is dropped through pub/sub.
    db.update(User {
        id: 3,
        name: "Barbara Liskov".to_owned(),
    })
    .await;
    a.invalidate(&3).await;
    let mut seen = None;
    for _ in 0..250 {
        if b.get(&3).await.is_none() {
            let db_b = Arc::clone(db);
            let user = b
                .get_or_load(&3, move || async move {
                    db_b.find(3)
                        .await?
                        .ok_or_else(|| BoxError::from("no user 3"))
                })
                .await?;
            seen = Some(user.name);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "instance B after A's update: {}",
        seen.as_deref()
            .unwrap_or("still the old name (invalidation not received)")
    );
    Ok(())
}
