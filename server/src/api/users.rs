//! `/api/v1/users`: list (with `?limit=&offset=`), create, get, replace and delete users held in
//! memory. Validation errors are 422 problem documents listing each field; an unknown id is 404;
//! a duplicate email is 409.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use http::request::Parts;
use palisade::control::FieldError;
use palisade::problem::Problem;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiQuery};
use crate::app::AppState;

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

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No user with that id.
    NotFound(u64),
    /// Another user has that email.
    DuplicateEmail(String),
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Problem::new(StatusCode::NOT_FOUND, "Not Found")
                .detail(format!("no user with id {id}")),
            StoreError::DuplicateEmail(email) => Problem::new(StatusCode::CONFLICT, "Conflict")
                .detail(format!("a user with email {email} already exists")),
        }
    }
}

/// The in-memory user store.
#[derive(Debug, Default)]
pub struct UserStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    users: BTreeMap<u64, User>,
    by_email: HashMap<String, u64>,
}

impl UserStore {
    /// A store holding a few sample users (ids 1..=3).
    pub fn with_samples() -> Self {
        let store = Self::default();
        for (name, email) in [
            ("Ada Lovelace", "ada@example.com"),
            ("Alan Turing", "alan@example.com"),
            ("Grace Hopper", "grace@example.com"),
        ] {
            let _ = store.create(NewUser {
                name: name.into(),
                email: email.into(),
            });
        }
        store
    }

    /// A page of users ordered by id.
    pub fn list(&self, limit: usize, offset: usize) -> (Vec<User>, usize) {
        let inner = self.inner.read();
        let page = inner
            .users
            .values()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        (page, inner.users.len())
    }

    /// One user.
    pub fn get(&self, id: u64) -> Result<User, StoreError> {
        self.inner
            .read()
            .users
            .get(&id)
            .cloned()
            .ok_or(StoreError::NotFound(id))
    }

    /// Creates a user.
    pub fn create(&self, new: NewUser) -> Result<User, StoreError> {
        let mut inner = self.inner.write();
        let email = new.email.to_ascii_lowercase();
        if inner.by_email.contains_key(&email) {
            return Err(StoreError::DuplicateEmail(new.email));
        }
        inner.next_id += 1;
        let user = User {
            id: inner.next_id,
            name: new.name.trim().to_owned(),
            email: new.email,
        };
        inner.by_email.insert(email, user.id);
        inner.users.insert(user.id, user.clone());
        Ok(user)
    }

    /// Replaces a user.
    pub fn replace(&self, id: u64, new: NewUser) -> Result<User, StoreError> {
        let mut inner = self.inner.write();
        let old_email = inner
            .users
            .get(&id)
            .ok_or(StoreError::NotFound(id))?
            .email
            .to_ascii_lowercase();
        let email = new.email.to_ascii_lowercase();
        if inner.by_email.get(&email).is_some_and(|owner| *owner != id) {
            return Err(StoreError::DuplicateEmail(new.email));
        }
        inner.by_email.remove(&old_email);
        inner.by_email.insert(email, id);
        let user = User {
            id,
            name: new.name.trim().to_owned(),
            email: new.email,
        };
        inner.users.insert(id, user.clone());
        Ok(user)
    }

    /// Deletes a user.
    pub fn delete(&self, id: u64) -> Result<User, StoreError> {
        let mut inner = self.inner.write();
        let user = inner.users.remove(&id).ok_or(StoreError::NotFound(id))?;
        inner.by_email.remove(&user.email.to_ascii_lowercase());
        Ok(user)
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
    total: usize,
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
    let (users, total) = state.users.list(limit, offset);
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
    let user = state.users.create(new)?;
    // A 404 for this id may have been cached (negative caching).
    state.users_cache.invalidate(&user.id).await;
    let location = format!("/api/v1/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        Json(user),
    ))
}

/// Reads through the users two-level cache (`[cache.users]`): the store is read only on a miss,
/// once however many requests miss together; an unknown id is cached as a negative entry.
/// `cache.enabled = false` reads the store directly.
async fn fetch(
    State(state): State<Arc<AppState>>,
    UserId(id): UserId,
) -> Result<Json<User>, Problem> {
    if !state.config.cache.enabled {
        return Ok(Json(state.users.get(id)?));
    }
    let store = Arc::clone(&state);
    let found = state
        .users_cache
        .get_or_load_optional(&id, move || async move {
            Ok::<_, std::convert::Infallible>(store.users.get(id).ok())
        })
        .await;
    match found {
        Ok(Some(user)) => Ok(Json(user)),
        Ok(None) => Err(StoreError::NotFound(id).into()),
        // The loader cannot fail; this is a panic or the hard timeout with nothing stale.
        Err(error) => Err(
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                .detail(format!("user lookup failed: {error}")),
        ),
    }
}

async fn replace(
    State(state): State<Arc<AppState>>,
    UserId(id): UserId,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<Json<User>, Problem> {
    new.validate().map_err(invalid)?;
    let user = state.users.replace(id, new)?;
    state.users_cache.invalidate(&id).await;
    Ok(Json(user))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    UserId(id): UserId,
) -> Result<StatusCode, Problem> {
    state.users.delete(id)?;
    state.users_cache.invalidate(&id).await;
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
    fn store_rules() {
        let store = UserStore::with_samples();
        assert_eq!(store.list(10, 0).1, 3);
        assert_eq!(
            store.create(new("X", "ADA@example.com")),
            Err(StoreError::DuplicateEmail("ADA@example.com".into()))
        );
        let u = store.create(new("Bob", "bob@example.com")).unwrap();
        assert_eq!(u.id, 4);
        assert!(
            store
                .replace(u.id, new("Bob", "grace@example.com"))
                .is_err()
        );
        assert!(store.replace(u.id, new("Bobby", "bob@example.com")).is_ok());
        assert_eq!(store.delete(u.id).unwrap().name, "Bobby");
        assert_eq!(store.get(u.id), Err(StoreError::NotFound(4)));
        // The email is free again after delete.
        assert!(store.create(new("Bob", "bob@example.com")).is_ok());
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
