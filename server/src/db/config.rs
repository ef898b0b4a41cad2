//! `[database]`: where users are stored.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The database behind `/api/v1/users`.
///
/// `url` picks the backend: `postgres://user:pass@host:5432/db` (or `postgresql://`) for
/// PostgreSQL, `sqlite://PATH` (or `sqlite:PATH`) for an SQLite file, unset for the embedded
/// default, an SQLite file `palisade.db` in the state directory (next to the admin token),
/// which every worker shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The database URL; unset: SQLite in the state directory.
    pub url: Option<String>,
    /// Connections per worker process (SQLite: readers; writes go through one more).
    pub max_connections: u32,
    /// Longest a query (including waiting for a pooled connection) may take before the request
    /// answers 503, milliseconds.
    pub query_timeout_ms: u64,
    /// How long the start-up migration waits for the database before giving up, milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            query_timeout_ms: 2_000,
            connect_timeout_ms: 5_000,
        }
    }
}

/// The backend a [`DatabaseConfig`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (the URL as given).
    Postgres(String),
}

impl Target {
    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// A description without credentials, for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite file {}", path.display()),
            Self::Postgres(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                format!("postgres://{host}")
            }
        }
    }
}

impl DatabaseConfig {
    /// The backend and location, or why the URL is not usable.
    pub fn target(&self) -> Result<Target, String> {
        let Some(url) = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Target::Sqlite(default_sqlite_path()));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(format!(
                    "database.url {url:?} names no file; workers share the database, so it \
                     must be a file (sqlite:///var/lib/palisade/users.db)"
                ));
            }
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        Err(format!(
            "database.url must start with postgres://, postgresql:// or sqlite:// (got {:?})",
            redact(url)
        ))
    }

    /// The query timeout.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    /// The start-up connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Every rule these settings break.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.target() {
            problems.push(e);
        }
        if self.max_connections == 0 || self.max_connections > 1000 {
            problems.push(format!(
                "database.max_connections must be between 1 and 1000 (got {})",
                self.max_connections
            ));
        }
        if self.query_timeout_ms == 0 {
            problems.push("database.query_timeout_ms must be at least 1 (got 0)".to_owned());
        }
        if self.connect_timeout_ms == 0 {
            problems.push("database.connect_timeout_ms must be at least 1 (got 0)".to_owned());
        }
        problems
    }
}

fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => url.to_owned(),
    }
}

/// `palisade.db` in the state directory (`$XDG_STATE_HOME/palisade`, else
/// `~/.local/state/palisade`), else in the working directory.
pub fn default_sqlite_path() -> PathBuf {
    palisade::admin::token::default_token_path()
        .and_then(|token| token.parent().map(|dir| dir.join("palisade.db")))
        .unwrap_or_else(|| PathBuf::from("palisade.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> DatabaseConfig {
        DatabaseConfig {
            url: Some(url.to_owned()),
            ..DatabaseConfig::default()
        }
    }

    #[test]
    fn the_url_selects_the_backend() {
        assert_eq!(
            with_url("sqlite:///tmp/u.db").target(),
            Ok(Target::Sqlite("/tmp/u.db".into()))
        );
        assert_eq!(
            with_url("sqlite:rel.db?mode=rwc").target(),
            Ok(Target::Sqlite("rel.db".into()))
        );
        let pg = with_url("postgres://app:secret@db:5432/app")
            .target()
            .unwrap();
        assert_eq!(pg.backend(), "postgres");
        assert_eq!(pg.redacted(), "postgres://db:5432/app");
        assert!(matches!(
            DatabaseConfig::default().target(),
            Ok(Target::Sqlite(p)) if p.ends_with("palisade.db")
        ));
    }

    #[test]
    fn bad_urls_are_refused_without_leaking_secrets() {
        let e = with_url("mysql://root:hunter2@db/app")
            .target()
            .unwrap_err();
        assert!(e.contains("postgres://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(with_url("sqlite::memory:").target().is_err());
        let zero = DatabaseConfig {
            max_connections: 0,
            query_timeout_ms: 0,
            ..DatabaseConfig::default()
        };
        assert_eq!(zero.problems().len(), 2);
    }
}
