//! The `[redis]` table: the Redis the server's Redis users share (the caches' L2 and
//! invalidation backplane, `store = "redis"` rate-limit policies, the `redis` readiness check),
//! and the TLS options of a `rediss://` URL.
//!
//! ```toml
//! [redis]
//! url = "rediss://redis.internal:6380/0"          # redis://, redis+unix:// or rediss:// (TLS)
//! ca_file = "/etc/palisade/redis-ca.pem"          # trust this CA instead of the system's roots
//! cert_file = "/etc/palisade/redis-client.pem"    # mutual TLS: client certificate...
//! key_file = "/etc/palisade/redis-client.key"     # ...and its key
//! ```
//!
//! `cache.redis_url` and `[rate_limit.redis] url` still name a Redis for one user and take
//! precedence over `redis.url`; the TLS options apply to every Redis connection, so with any of
//! them set every Redis URL in use must be `rediss://`.

use std::path::PathBuf;

use palisade::redis::{ConnectError, RedisTls};
use serde::{Deserialize, Serialize};

/// The `[redis]` table. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// The Redis of the caches (unless `cache.redis_url` is set) and of `store = "redis"`
    /// policies (unless `[rate_limit.redis] url` is set); unset: no shared Redis.
    pub url: Option<String>,
    /// CA certificates (PEM) trusted for `rediss://` instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl RedisSection {
    /// The TLS options, as the library takes them.
    pub fn tls(&self) -> RedisTls {
        let mut tls = RedisTls::default();
        tls.ca_file.clone_from(&self.ca_file);
        tls.cert_file.clone_from(&self.cert_file);
        tls.key_file.clone_from(&self.key_file);
        tls
    }

    /// One problem message per mistake for the Redis URLs in use, each `(key, url)`: files
    /// that cannot be read or hold no PEM, TLS options with a `redis://` URL or with no URL at
    /// all, `rediss://` in a build without TLS. Empty when all is well.
    pub fn problems<'a>(
        &self,
        in_use: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<String> {
        let tls = self.tls();
        let mut problems: Vec<String> = Vec::new();
        let mut checked: Vec<&str> = Vec::new();
        for (key, url) in in_use {
            if checked.contains(&url) {
                continue;
            }
            checked.push(url);
            let Err(e) = palisade::redis::client(url, &tls) else {
                continue;
            };
            let message = match &e {
                ConnectError::Read { .. } | ConnectError::Pem { .. } => format!("redis.{e}"),
                ConnectError::HalfClientCert { missing } => format!(
                    "redis.cert_file and redis.key_file go together: a client certificate needs \
                     its key (redis.{missing} is missing)"
                ),
                ConnectError::TlsOptionsWithoutTls { .. } => format!(
                    "{key} = {url:?} is not a rediss:// URL, but redis.ca_file, redis.cert_file or \
                     redis.key_file is set (the TLS options apply to every Redis connection)"
                ),
                _ => format!("{key}: {e}"),
            };
            if !problems.contains(&message) {
                problems.push(message);
            }
        }
        if checked.is_empty() && !tls.is_empty() {
            problems.push(
                "redis.ca_file, redis.cert_file or redis.key_file is set, but no Redis is in use \
                 (set redis.url to a rediss:// URL)"
                    .to_owned(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_need_a_rediss_url_in_use() {
        let section = RedisSection {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RedisSection::default()
        };
        let p = section.problems([]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("no Redis is in use"), "{p:?}");
        let p = section.problems([("cache.redis_url", "redis://127.0.0.1:6379/")]);
        assert!(p[0].contains("cache.redis_url"), "{p:?}");
        assert!(p[0].contains("not a rediss:// URL"), "{p:?}");
        assert!(
            RedisSection::default()
                .problems([("redis.url", "redis://127.0.0.1:1/")])
                .is_empty()
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn unreadable_files_name_their_key() {
        let section = RedisSection {
            url: Some("rediss://127.0.0.1:6380/".into()),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RedisSection::default()
        };
        let url = "rediss://127.0.0.1:6380/";
        let p = section.problems([("redis.url", url), ("cache.redis_url", url)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("redis.ca_file \"/nonexistent/ca.pem\": cannot read"),
            "{p:?}"
        );
    }
}
