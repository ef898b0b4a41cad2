//! `/api/v1/users`: list (with `?limit=&offset=`), create, get, replace and delete users stored
//! in the database ([`crate::db`]). Validation errors are 422 problem documents listing each
//! field; an unknown id is 404; a duplicate email is 409 (a unique index decides, so it holds
//! across workers and servers); a database that does not answer is 503.
//!
//! Reads go L1 (this worker) → L2 (Redis, when `cache.redis_url` is set) → database, with one
//! database query per key however many requests miss together, and serve a stale copy while the
//! database is down (`cache.users.max_stale_ms`). Writes commit, then invalidate the key in L2
//! and in every worker's L1: through the Redis backplane when there is one, else through the
//! supervisor's control channel.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use http::request::Parts;
use palisade::control::FieldError;
use palisade::problem::Problem;
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::db::DbError;

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Assigned by the server.
    pub id: u64,
    /// Display name, 1 to 100 characters.
    pub name: String,
    /// Unique email address.
    pub email: String,
}

/// The body of a create or replace request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

impl NewUser {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            errors.push(FieldError::new("name", "must be 1 to 100 characters"));
        }
        if !valid_email(&self.email) {
            errors.push(FieldError::new(
                "email",
                "must be an address like name@example.com",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
        && !domain.contains('@')
}

impl AppState {
    /// After a write to user `id`: drops it from this worker's L1 and from L2 (the Redis
    /// backplane then clears every node's L1), or, without a backplane, asks the supervisor to
    /// clear it from the other workers' L1.
    pub async fn invalidate_user(&self, id: u64) {
        use palisade::cache::CacheKey as _;
        self.users_cache.invalidate(&id).await;
        let backplane = self
            .users_cache
            .config()
            .redis
            .as_ref()
            .is_some_and(|r| r.backplane);
        if !backplane {
            self.peers
                .invalidate("users", id.cache_key().into_owned())
                .await;
        }
    }
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(list).post(create))
        .route("/{id}", get(fetch).put(replace).delete(remove))
}

/// A user id from the path; anything but a positive integer is a 400 problem.
#[derive(Debug, Clone, Copy)]
struct UserId(u64);

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bad = |detail: String| {
            Problem::new(StatusCode::BAD_REQUEST, "Invalid user id").detail(detail)
        };
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| bad(e.body_text()))?;
        raw.parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .map(UserId)
            .ok_or_else(|| bad(format!("user id must be a positive integer (got {raw:?})")))
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// The list response.
#[derive(Debug, Serialize)]
struct UserPage {
    users: Vec<User>,
    total: u64,
    limit: usize,
    offset: usize,
}

const MAX_PAGE: usize = 1000;

async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<UserPage>, Problem> {
    let limit = page.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "Invalid query string").detail(format!(
                "limit must be between 1 and {MAX_PAGE} (got {limit})"
            )),
        );
    }
    let offset = page.offset.unwrap_or(0);
    let (users, total) = state.db.list(limit, offset).await?;
    Ok(Json(UserPage {
        users,
        total,
        limit,
        offset,
    }))
}

fn invalid(errors: Vec<FieldError>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed").with("errors", errors)
}

async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<impl IntoResponse, Problem> {
    new.validate().map_err(invalid)?;
    let user = state.db.create(&new).await?;
    // A 404 for this id may have been cached (negative caching).
    state.invalidate_user(user.id).await;
    let location = format!("/api/v1/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        Json(user),
    ))
}

/// Reads through the users two-level cache (`[cache.users]`): the database is read only on a
/// miss, once however many requests miss together; an unknown id is cached as a negative entry;
/// while the database fails, a stale copy is served. `cache.enabled = false` reads the database
/// directly.
async fn fetch(
    State(state): State<Arc<AppState>>,
    UserId(id): UserId,
) -> Result<Json<User>, Problem> {
    if !state.config.cache.enabled {
        return match state.db.get(id).await? {
            Some(user) => Ok(Json(user)),
            None => Err(DbError::NotFound(id).into()),
        };
    }
    let db = state.db.clone();
    let found = state
        .users_cache
        .get_or_load_optional(&id, move || async move { db.get(id).await })
        .await;
    match found {
        Ok(Some(user)) => Ok(Json(user)),
        Ok(None) => Err(DbError::NotFound(id).into()),
        // The database failed (or timed out) and no stale copy exists.
        Err(error) => Err(unavailable(&error)),
    }
}

/// The 503 for a failed cached load: an open `db` breaker keeps its `Retry-After`.
fn unavailable(error: &palisade::cache::CacheError) -> Problem {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(DbError::Open(open)) = e.downcast_ref::<DbError>() {
            return open.problem();
        }
        source = e.source();
    }
    let mut detail = format!("user lookup failed: {error}");
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        detail.push_str(": ");
        detail.push_str(&e.to_string());
        cause = e.source();
    }
    tracing::warn!(%detail, "user lookup failed");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        .detail(detail)
        .with("retry_after_ms", 1000)
}

async fn replace(
    State(state): State<Arc<AppState>>,
    UserId(id): UserId,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<Json<User>, Problem> {
    new.validate().map_err(invalid)?;
    let user = state.db.replace(id, &new).await?;
    state.invalidate_user(id).await;
    Ok(Json(user))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    UserId(id): UserId,
) -> Result<StatusCode, Problem> {
    state.db.delete(id).await?;
    state.invalidate_user(id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, email: &str) -> NewUser {
        NewUser {
            name: name.into(),
            email: email.into(),
        }
    }

    #[test]
    fn validation() {
        assert!(new("Ann", "ann@example.com").validate().is_ok());
        let errs = new(" ", "nope").validate().unwrap_err();
        assert_eq!(errs.len(), 2);
        for bad in ["a@b", "@b.c", "a@.c", "a b@c.d", "a@b@c.d", "a@b.c."] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
