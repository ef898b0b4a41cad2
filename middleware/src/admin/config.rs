//! [`AdminConfig`]: tokens, intervals and limits of the admin router.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::backend::{AdminBackend, LocalBackend};

/// Shortest secret a token may have, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `GET` routes only (snapshot, stream, lists, audit); mutations answer 403.
    ReadOnly,
    /// Every route.
    ReadWrite,
}

impl Access {
    /// `read_only` or `read_write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::ReadWrite => "read_write",
        }
    }
}

/// A bearer token the admin API accepts: an id (recorded in the audit log) and a secret (never
/// logged, never shown by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
    access: Access,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("access", &self.access)
            .finish()
    }
}

impl Token {
    /// A token. Leading and trailing whitespace of `secret` is ignored (token files end with a
    /// newline). Checked by [`AdminConfigBuilder::build`].
    pub fn new(id: impl Into<String>, secret: impl Into<String>, access: Access) -> Self {
        Self {
            id: id.into(),
            secret: secret.into().trim().to_owned(),
            access,
        }
    }

    /// A read-write token.
    pub fn read_write(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::new(id, secret, Access::ReadWrite)
    }

    /// A read-only token.
    pub fn read_only(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::new(id, secret, Access::ReadOnly)
    }

    /// The id recorded in the audit log.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the token may do.
    pub fn access(&self) -> Access {
        self.access
    }

    pub(crate) fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

/// An invalid [`AdminConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No token was configured; the admin API never runs unauthenticated.
    #[error("admin.tokens must name at least one token (the admin API never runs without auth)")]
    NoTokens,
    /// A token id is empty, too long or not printable ASCII.
    #[error("admin.tokens id {0:?} must be 1 to 64 printable ASCII characters without spaces")]
    BadTokenId(String),
    /// Two tokens share an id.
    #[error("admin.tokens id {0:?} is used twice")]
    DuplicateTokenId(String),
    /// A secret is too short or not usable in an `Authorization` header.
    #[error(
        "admin.tokens secret of {id:?} must be at least {MIN_SECRET_LEN} visible ASCII characters \
         (got {len})"
    )]
    WeakSecret {
        /// The token id.
        id: String,
        /// The secret's length in bytes.
        len: usize,
    },
    /// Two tokens share a secret, so the audit log could not tell them apart.
    #[error("admin.tokens {0:?} and {1:?} share a secret")]
    DuplicateSecret(String, String),
    /// A duration that must be positive is zero.
    #[error("admin.{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// A size that must be positive is zero.
    #[error("admin.{0} must be at least 1")]
    ZeroSize(&'static str),
}

/// Configuration of the admin router: tokens, the backend, stream and keep-alive intervals, the
/// request body limit and the audit log size. Built (and validated) by
/// [`AdminConfig::builder`].
#[derive(Clone)]
pub struct AdminConfig {
    pub(crate) tokens: Vec<Token>,
    pub(crate) backend: Arc<dyn AdminBackend>,
    /// No backend was given: a `Stack` may plug in one that knows its traffic.
    #[cfg_attr(
        not(feature = "stack"),
        allow(dead_code, reason = "read by the stack only")
    )]
    pub(crate) default_backend: bool,
    pub(crate) stream_interval: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) body_limit: usize,
    pub(crate) audit_capacity: usize,
    pub(crate) snapshot_audit: usize,
    pub(crate) max_ttl: Duration,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("tokens", &self.tokens)
            .field("stream_interval", &self.stream_interval)
            .field("keep_alive", &self.keep_alive)
            .field("body_limit", &self.body_limit)
            .field("audit_capacity", &self.audit_capacity)
            .field("snapshot_audit", &self.snapshot_audit)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

impl AdminConfig {
    /// A builder with the defaults: [`LocalBackend`], a snapshot every second on the stream,
    /// keep-alive comments every 15 s, 64 KiB bodies, 1000 audit entries (the last 50 in each
    /// snapshot), TTLs up to 24 h. At least one token is required.
    pub fn builder() -> AdminConfigBuilder {
        AdminConfigBuilder {
            tokens: Vec::new(),
            backend: None,
            stream_interval: Duration::from_secs(1),
            keep_alive: Duration::from_secs(15),
            body_limit: 64 * 1024,
            audit_capacity: 1000,
            snapshot_audit: 50,
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }

    /// The accepted tokens.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Interval between snapshots on `GET /admin/v1/stream`.
    pub fn stream_interval(&self) -> Duration {
        self.stream_interval
    }

    /// Largest request body accepted, bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }
}

/// Builds an [`AdminConfig`]; see [`AdminConfig::builder`].
#[must_use]
pub struct AdminConfigBuilder {
    tokens: Vec<Token>,
    backend: Option<Arc<dyn AdminBackend>>,
    stream_interval: Duration,
    keep_alive: Duration,
    body_limit: usize,
    audit_capacity: usize,
    snapshot_audit: usize,
    max_ttl: Duration,
}

impl fmt::Debug for AdminConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfigBuilder")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl AdminConfigBuilder {
    /// Accepts a token.
    pub fn token(mut self, token: Token) -> Self {
        self.tokens.push(token);
        self
    }

    /// Accepts a read-write token.
    pub fn read_write_token(self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.token(Token::read_write(id, secret))
    }

    /// Accepts a read-only token.
    pub fn read_only_token(self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.token(Token::read_only(id, secret))
    }

    /// The backend answering server, worker and traffic questions and worker operations.
    /// Defaults to [`LocalBackend::new`]. An `Arc<B>` is a backend too, so a caller can keep
    /// its own reference.
    pub fn backend(mut self, backend: impl AdminBackend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// Interval between snapshots on the stream (default 1 s).
    pub fn stream_interval(mut self, interval: Duration) -> Self {
        self.stream_interval = interval;
        self
    }

    /// Longest silence on the stream before a keep-alive comment (default 15 s).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Largest request body, bytes (default 64 KiB); larger bodies answer 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Audit entries kept in memory (default 1000; the oldest are dropped).
    pub fn audit_capacity(mut self, entries: usize) -> Self {
        self.audit_capacity = entries;
        self
    }

    /// Most recent audit entries included in each snapshot (default 50; 0 for none).
    pub fn snapshot_audit(mut self, entries: usize) -> Self {
        self.snapshot_audit = entries;
        self
    }

    /// Longest `ttl_secs` a change may ask for (default 24 h).
    pub fn max_ttl(mut self, max: Duration) -> Self {
        self.max_ttl = max;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<AdminConfig, ConfigError> {
        if self.tokens.is_empty() {
            return Err(ConfigError::NoTokens);
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let id_ok =
                (1..=64).contains(&t.id.len()) && t.id.bytes().all(|b| b.is_ascii_graphic());
            if !id_ok {
                return Err(ConfigError::BadTokenId(t.id.clone()));
            }
            let secret_ok =
                t.secret.len() >= MIN_SECRET_LEN && t.secret.bytes().all(|b| b.is_ascii_graphic());
            if !secret_ok {
                return Err(ConfigError::WeakSecret {
                    id: t.id.clone(),
                    len: t.secret.len(),
                });
            }
            for other in &self.tokens[..i] {
                if other.id == t.id {
                    return Err(ConfigError::DuplicateTokenId(t.id.clone()));
                }
                if other.secret == t.secret {
                    return Err(ConfigError::DuplicateSecret(other.id.clone(), t.id.clone()));
                }
            }
        }
        for (name, d) in [
            ("stream_interval", self.stream_interval),
            ("keep_alive", self.keep_alive),
            ("max_ttl", self.max_ttl),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        for (name, n) in [
            ("body_limit", self.body_limit),
            ("audit_capacity", self.audit_capacity),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroSize(name));
            }
        }
        Ok(AdminConfig {
            tokens: self.tokens,
            default_backend: self.backend.is_none(),
            backend: self
                .backend
                .unwrap_or_else(|| Arc::new(LocalBackend::new())),
            stream_interval: self.stream_interval,
            keep_alive: self.keep_alive,
            body_limit: self.body_limit,
            audit_capacity: self.audit_capacity,
            snapshot_audit: self.snapshot_audit.min(self.audit_capacity),
            max_ttl: self.max_ttl,
        })
    }
}
