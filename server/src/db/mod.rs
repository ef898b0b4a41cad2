//! The users database: PostgreSQL, or an SQLite file shared by every worker, through pooled
//! `sqlx` connections.
//!
//! - **One database for all workers.** Ids come from the database (identity / autoincrement),
//!   a duplicate email is refused by a unique index (→ 409), and every write is one statement
//!   that commits before the response, so any worker reads it at once.
//! - **Bounded.** Every query (waiting for a pooled connection included) is limited by
//!   `database.query_timeout_ms`; past it the request answers 503, never hangs.
//! - **Circuit breaker `db`.** Connection errors and timeouts count as failures; answers such as
//!   "not found" or "duplicate" as successes. When open, queries are refused at once (503 with
//!   `Retry-After`) instead of piling up on a dead database; its handle is in the control
//!   registry (admin API, `palisade-top`).
//! - **SQLite**: WAL journal (readers never block the writer), `synchronous = NORMAL`, a busy
//!   timeout equal to the query timeout, and per worker one write connection next to the
//!   readers, so a worker's writers queue in-process rather than on the file lock.
//! - **Fork-safe.** Pools connect lazily: the supervisor builds no connection it could carry
//!   into a worker, and each worker opens its own after start.

pub mod config;
pub mod invalidate;
pub mod migrate;

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use palisade::circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerHandle, CircuitOpen,
};
use palisade::health::{CheckPolicy, Readiness};
use palisade::problem::Problem;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _};

use crate::api::users::{NewUser, User};
pub use config::{DatabaseConfig, Target};

/// Exit code when the database cannot be reached at start (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code when the schema is newer than the binary or a migration fails (`EX_DATAERR`).
pub const EXIT_SCHEMA: u8 = 65;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No user with that id.
    #[error("no user with id {0}")]
    NotFound(u64),
    /// Another user has that email.
    #[error("a user with email {0} already exists")]
    DuplicateEmail(String),
    /// The `db` breaker is open.
    #[error("the database is unavailable (circuit open)")]
    Open(CircuitOpen),
    /// The query (or the wait for a connection) took longer than the timeout.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// The database failed (connection refused, I/O, protocol...).
    #[error("database error: {0}")]
    Failed(sqlx::Error),
}

impl DbError {
    /// Whether the database answered (the breaker counts these as successes).
    fn is_answer(&self) -> bool {
        matches!(self, Self::NotFound(_) | Self::DuplicateEmail(_))
    }
}

impl From<DbError> for Problem {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "Not Found").detail(e.to_string())
            }
            DbError::DuplicateEmail(_) => {
                Problem::new(StatusCode::CONFLICT, "Conflict").detail(e.to_string())
            }
            DbError::Open(open) => open.problem(),
            DbError::Timeout(_) | DbError::Failed(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                    .detail(e.to_string())
                    .with("retry_after_ms", 1000)
            }
        }
    }
}

#[derive(Debug)]
enum Pools {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

#[derive(Debug)]
struct Inner {
    pools: Pools,
    target: Target,
    breaker: CircuitBreaker,
    timeout: Duration,
    queries: AtomicU64,
}

/// The users database. Cheap to clone; clones share the pools and the breaker.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

/// The `db` breaker's defaults: open after half of at least 10 of the last 20 queries failed or
/// timed out, probe again after one second (so a database that returns is used again at once).
pub fn default_breaker() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("db")
        .count_window(20)
        .minimum_calls(10)
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::from_secs(1))
        .half_open_max_calls(2)
        .build()
        .unwrap_or_else(|_| CircuitBreakerConfig::five_consecutive_failures().with_name("db"))
}

fn sqlite_options(path: &std::path::Path, busy: Duration) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(busy)
        .foreign_keys(true)
        .pragma("journal_size_limit", "67108864")
        .disable_statement_logging()
}

fn pg_options(url: &str, timeout: Duration) -> Result<PgConnectOptions, sqlx::Error> {
    // The server cancels a statement slightly after the client gave up on it.
    let statement_timeout = (timeout.as_millis() + 500).to_string();
    Ok(PgConnectOptions::from_str(url)?
        .options([("statement_timeout", statement_timeout.as_str())])
        .disable_statement_logging())
}

impl Database {
    /// Pools for `config`, connecting lazily (no I/O here).
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn connect_lazy(config: &DatabaseConfig) -> Result<Self, String> {
        let target = config.target()?;
        let timeout = config.query_timeout();
        let pools = match &target {
            Target::Sqlite(path) => {
                let opts = sqlite_options(path, timeout);
                let pool = |n: u32| {
                    SqlitePoolOptions::new()
                        .max_connections(n)
                        .min_connections(0)
                        .acquire_timeout(timeout)
                        .connect_lazy_with(opts.clone())
                };
                Pools::Sqlite {
                    read: pool(config.max_connections),
                    write: pool(1),
                }
            }
            Target::Postgres(url) => {
                let opts = pg_options(url, timeout)
                    .map_err(|e| format!("database.url is not a valid PostgreSQL URL: {e}"))?;
                Pools::Postgres(
                    PgPoolOptions::new()
                        .max_connections(config.max_connections)
                        .min_connections(0)
                        .acquire_timeout(timeout)
                        .connect_lazy_with(opts),
                )
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pools,
                target,
                breaker: CircuitBreaker::new(default_breaker()),
                timeout,
                queries: AtomicU64::new(0),
            }),
        })
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        self.inner.target.backend()
    }

    /// The `db` breaker's handle (register it in the control registry).
    pub fn breaker_handle(&self) -> CircuitBreakerHandle {
        self.inner.breaker.handle()
    }

    /// Queries sent to the database by this process.
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Runs one database operation through the breaker and the timeout.
    async fn run<T, F>(&self, op: &'static str, fut: F) -> Result<T, DbError>
    where
        F: Future<Output = Result<T, DbError>>,
    {
        let permit = self.inner.breaker.try_acquire().map_err(DbError::Open)?;
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("palisade_db_queries_total", "op" => op).increment(1);
        match tokio::time::timeout(self.inner.timeout, fut).await {
            Err(_) => {
                permit.record_timeout();
                Err(DbError::Timeout(self.inner.timeout))
            }
            Ok(result) => {
                match &result {
                    Err(e) if !e.is_answer() => permit.failure(),
                    _ => permit.success(),
                }
                result
            }
        }
    }

    /// `SELECT 1` (the readiness check), through the breaker and the timeout.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.run("ping", async {
            match &self.inner.pools {
                Pools::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.map(drop),
                Pools::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            }
            .map_err(DbError::Failed)
        })
        .await
    }

    /// One user, or `None`.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn get(&self, id: u64) -> Result<Option<User>, DbError> {
        let Ok(key) = i64::try_from(id) else {
            return Ok(None);
        };
        self.run("get", async {
            let row: Option<Row> = match &self.inner.pools {
                Pools::Sqlite { read, .. } => {
                    sqlx::query_as("SELECT id, name, email FROM users WHERE id = ?")
                        .bind(key)
                        .fetch_optional(read)
                        .await
                }
                Pools::Postgres(pool) => {
                    sqlx::query_as("SELECT id, name, email FROM users WHERE id = $1")
                        .bind(key)
                        .fetch_optional(pool)
                        .await
                }
            }
            .map_err(DbError::Failed)?;
            Ok::<_, DbError>(row.map(user))
        })
        .await
    }

    /// A page of users ordered by id, and the total count.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn list(&self, limit: usize, offset: usize) -> Result<(Vec<User>, u64), DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.run("list", async {
            let (rows, total): (Vec<Row>, (i64,)) = match &self.inner.pools {
                Pools::Sqlite { read, .. } => {
                    // One read transaction: the page and the count see the same snapshot.
                    let mut tx = read.begin().await?;
                    let rows = sqlx::query_as(
                        "SELECT id, name, email FROM users ORDER BY id LIMIT ? OFFSET ?",
                    )
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&mut *tx)
                    .await?;
                    let total = sqlx::query_as("SELECT COUNT(*) FROM users")
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    (rows, total)
                }
                Pools::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                    let rows = sqlx::query_as(
                        "SELECT id, name, email FROM users ORDER BY id LIMIT $1 OFFSET $2",
                    )
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&mut *tx)
                    .await?;
                    let total = sqlx::query_as("SELECT COUNT(*) FROM users")
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    (rows, total)
                }
            };
            let total = u64::try_from(total.0).unwrap_or(0);
            Ok::<_, DbError>((rows.into_iter().map(user).collect(), total))
        })
        .await
    }

    /// Creates a user; the database assigns the id.
    ///
    /// # Errors
    /// [`DbError::DuplicateEmail`], or the database does not answer.
    pub async fn create(&self, new: &NewUser) -> Result<User, DbError> {
        let (name, email, key) = normalized(new);
        self.run("create", async {
            let row: Row = match &self.inner.pools {
                Pools::Sqlite { write, .. } => {
                    sqlx::query_as(
                        "INSERT INTO users (name, email, email_key) VALUES (?, ?, ?) \
                         RETURNING id, name, email",
                    )
                    .bind(name)
                    .bind(email)
                    .bind(&key)
                    .fetch_one(write)
                    .await
                }
                Pools::Postgres(pool) => {
                    sqlx::query_as(
                        "INSERT INTO users (name, email, email_key) VALUES ($1, $2, $3) \
                         RETURNING id, name, email",
                    )
                    .bind(name)
                    .bind(email)
                    .bind(&key)
                    .fetch_one(pool)
                    .await
                }
            }
            .map_err(|e| write_error(e, email))?;
            Ok::<_, DbError>(user(row))
        })
        .await
    }

    /// Replaces a user's name and email.
    ///
    /// # Errors
    /// [`DbError::NotFound`], [`DbError::DuplicateEmail`], or the database does not answer.
    pub async fn replace(&self, id: u64, new: &NewUser) -> Result<User, DbError> {
        let key_id = i64::try_from(id).map_err(|_| DbError::NotFound(id))?;
        let (name, email, key) = normalized(new);
        self.run("replace", async {
            let row: Option<Row> = match &self.inner.pools {
                Pools::Sqlite { write, .. } => {
                    sqlx::query_as(
                        "UPDATE users SET name = ?, email = ?, email_key = ? WHERE id = ? \
                         RETURNING id, name, email",
                    )
                    .bind(name)
                    .bind(email)
                    .bind(&key)
                    .bind(key_id)
                    .fetch_optional(write)
                    .await
                }
                Pools::Postgres(pool) => {
                    sqlx::query_as(
                        "UPDATE users SET name = $1, email = $2, email_key = $3 WHERE id = $4 \
                         RETURNING id, name, email",
                    )
                    .bind(name)
                    .bind(email)
                    .bind(&key)
                    .bind(key_id)
                    .fetch_optional(pool)
                    .await
                }
            }
            .map_err(|e| write_error(e, email))?;
            row.map(user).ok_or(DbError::NotFound(id))
        })
        .await
    }

    /// Deletes a user.
    ///
    /// # Errors
    /// [`DbError::NotFound`], or the database does not answer.
    pub async fn delete(&self, id: u64) -> Result<(), DbError> {
        let key_id = i64::try_from(id).map_err(|_| DbError::NotFound(id))?;
        self.run("delete", async {
            let done = match &self.inner.pools {
                Pools::Sqlite { write, .. } => sqlx::query("DELETE FROM users WHERE id = ?")
                    .bind(key_id)
                    .execute(write)
                    .await
                    .map(|r| r.rows_affected()),
                Pools::Postgres(pool) => sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(key_id)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected()),
            }
            .map_err(DbError::Failed)?;
            if done == 0 {
                Err(DbError::NotFound(id))
            } else {
                Ok(())
            }
        })
        .await
    }

    /// Closes the pools (waits for connections in use to come back).
    pub async fn close(&self) {
        match &self.inner.pools {
            Pools::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(e)
    }
}

type Row = (i64, String, String);

fn user((id, name, email): Row) -> User {
    User {
        id: u64::try_from(id).unwrap_or_default(),
        name,
        email,
    }
}

/// The stored name (trimmed), email (as given) and uniqueness key (lower case).
fn normalized(new: &NewUser) -> (&str, &str, String) {
    (
        new.name.trim(),
        new.email.as_str(),
        new.email.to_ascii_lowercase(),
    )
}

fn write_error(e: sqlx::Error, email: &str) -> DbError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            DbError::DuplicateEmail(email.to_owned())
        }
        _ => DbError::Failed(e),
    }
}

/// Why the start-up migration failed, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The URL is invalid.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached.
    #[error("cannot reach the database ({target}): {error}")]
    Unreachable {
        /// Where (without credentials).
        target: String,
        /// Why.
        error: String,
    },
    /// The schema is newer, or a migration failed.
    #[error("{0}")]
    Schema(#[from] migrate::MigrateError),
}

impl StartError {
    /// The process exit code: 64 for configuration, [`EXIT_UNAVAILABLE`] for an unreachable
    /// database, [`EXIT_SCHEMA`] for schema problems.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => crate::cli::EXIT_USAGE,
            Self::Unreachable { .. } => EXIT_UNAVAILABLE,
            Self::Schema(_) => EXIT_SCHEMA,
        }
    }
}

/// Connects once (within `database.connect_timeout_ms`) and applies pending migrations. The
/// supervisor (or the single process) calls this before any worker starts; the connection is
/// closed before returning.
///
/// # Errors
/// See [`StartError`].
pub async fn prepare(config: &DatabaseConfig) -> Result<migrate::Applied, StartError> {
    let target = config.target().map_err(StartError::Config)?;
    let wait = config.connect_timeout();
    let unreachable = |error: String| StartError::Unreachable {
        target: target.redacted(),
        error,
    };
    let timed_out = || format!("no answer within {} ms", wait.as_millis());
    match &target {
        Target::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| unreachable(format!("creating {}: {e}", dir.display())))?;
            }
            let opts = sqlite_options(path, wait);
            let mut conn = tokio::time::timeout(wait, opts.connect())
                .await
                .map_err(|_| unreachable(timed_out()))?
                .map_err(|e| unreachable(e.to_string()))?;
            let applied = migrate::run_sqlite(&mut conn).await;
            let _ = conn.close().await;
            Ok(applied?)
        }
        Target::Postgres(url) => {
            let opts = pg_options(url, config.query_timeout())
                .map_err(|e| StartError::Config(format!("database.url: {e}")))?;
            let mut conn = tokio::time::timeout(wait, opts.connect())
                .await
                .map_err(|_| unreachable(timed_out()))?
                .map_err(|e| unreachable(e.to_string()))?;
            let applied = migrate::run_postgres(&mut conn).await;
            let _ = conn.close().await;
            Ok(applied?)
        }
    }
}

/// The users database for one process (lazy pools), its `db` breaker registered in `registry`,
/// and the readiness checks: `database` (required) and, with `cache.redis_url` or `redis.url`,
/// `redis` (optional: the caches serve from L1 and the database without it).
///
/// # Errors
/// When the database URL is invalid or the breaker name is taken.
pub fn setup(
    config: &crate::config::Config,
    registry: &palisade::control::Registry,
) -> Result<(Database, Readiness), crate::app::BuildError> {
    use crate::app::BuildError;
    let db = Database::connect_lazy(&config.database)
        .map_err(|e| BuildError(format!("database: {e}")))?;
    registry
        .register("db", Arc::new(db.breaker_handle()))
        .map_err(|e| BuildError(format!("database: {e}")))?;
    // Probes from several load balancers share one round trip per half second.
    let readiness = Readiness::with(Duration::from_secs(1), Duration::from_millis(500));
    let check = db.clone();
    readiness.register("database", CheckPolicy::Required, move || {
        let db = check.clone();
        async move { db.ping().await }
    });
    let cache = config.cache_settings();
    if let Some(url) = cache.redis_url {
        let client = palisade::redis::client(&url, &cache.redis_tls)
            .map_err(|e| BuildError(format!("redis: {e}")))?;
        readiness.register("redis", CheckPolicy::Optional, move || {
            let client = client.clone();
            async move { ping_redis(client).await }
        });
    }
    Ok((db, readiness))
}

async fn ping_redis(client: redis::Client) -> Result<(), redis::RedisError> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
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

    /// The store rules on a real SQLite file: migrations twice (the second is a no-op), ids
    /// from the database, case-insensitive unique emails on create and replace, an email free
    /// again after delete, pages in id order.
    #[tokio::test]
    async fn sqlite_store_rules() {
        let dir = std::env::temp_dir().join(format!("palisade-db-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = DatabaseConfig {
            url: Some(format!("sqlite://{}/users.db", dir.display())),
            ..DatabaseConfig::default()
        };
        let applied = prepare(&config).await.unwrap();
        assert_eq!((applied.from, applied.to), (0, migrate::latest()));
        let again = prepare(&config).await.unwrap();
        assert_eq!(
            (again.from, again.to),
            (migrate::latest(), migrate::latest())
        );

        let db = Database::connect_lazy(&config).unwrap();
        assert_eq!(db.backend(), "sqlite");
        db.ping().await.unwrap();
        let (page, total) = db.list(2, 1).await.unwrap();
        assert_eq!(total, 3);
        assert_eq!(page.iter().map(|u| u.id).collect::<Vec<_>>(), vec![2, 3]);
        assert!(matches!(
            db.create(&new("X", "ADA@example.com")).await,
            Err(DbError::DuplicateEmail(_))
        ));
        let bob = db.create(&new("  Bob ", "bob@example.com")).await.unwrap();
        assert_eq!((bob.id, bob.name.as_str()), (4, "Bob"));
        assert!(matches!(
            db.replace(bob.id, &new("Bob", "grace@example.com")).await,
            Err(DbError::DuplicateEmail(_))
        ));
        let bobby = db
            .replace(bob.id, &new("Bobby", "bob@example.com"))
            .await
            .unwrap();
        assert_eq!(db.get(bob.id).await.unwrap(), Some(bobby));
        assert!(matches!(
            db.replace(99, &new("N", "n@example.com")).await,
            Err(DbError::NotFound(99))
        ));
        db.delete(bob.id).await.unwrap();
        assert!(matches!(db.delete(bob.id).await, Err(DbError::NotFound(_))));
        assert_eq!(db.get(bob.id).await.unwrap(), None);
        // The email is free again; ids are never reused.
        assert_eq!(
            db.create(&new("Bob", "bob@example.com")).await.unwrap().id,
            5
        );
        assert!(db.queries() >= 10);
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
