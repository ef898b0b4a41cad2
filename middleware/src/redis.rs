//! How Palisade connects to Redis: one place for every Redis user (the rate-limit
//! [`RedisStore`](crate::rate_limit::RedisStore), the cache's L2 and its invalidation backplane).
//!
//! A URL is `redis://host:port/db`, `redis+unix:///path`, or `rediss://host:port/db` for Redis
//! over TLS. TLS needs the `redis-tls` feature (rustls with the ring provider); without it a
//! `rediss://` URL is refused with [`ConnectError::TlsDisabled`] when the configuration is
//! checked, never at the first request. [`RedisTls`] names the certificate files: a CA to trust
//! (a private CA; without it the system's roots are used) and, for mutual TLS, a client
//! certificate and its key.
//!
//! ```
//! # #[cfg(feature = "redis")] {
//! use palisade::redis::{ConnectError, RedisTls};
//!
//! // Plain TCP, no TLS options.
//! palisade::redis::client("redis://127.0.0.1:6379/", &RedisTls::default())?;
//!
//! // TLS options with a plain URL are a mistake, reported before anything connects.
//! let tls = RedisTls::default().ca_file("/etc/palisade/redis-ca.pem");
//! let err = palisade::redis::client("redis://127.0.0.1:6379/", &tls).unwrap_err();
//! assert!(matches!(err, ConnectError::TlsOptionsWithoutTls { .. }));
//! # }
//! # Ok::<(), palisade::redis::ConnectError>(())
//! ```
//!
//! With the `redis-tls` feature, `rediss://` and the files:
//!
//! ```no_run
//! # #[cfg(feature = "redis-tls")]
//! # fn main() -> Result<(), palisade::redis::ConnectError> {
//! use palisade::redis::RedisTls;
//! let tls = RedisTls::default()
//!     .ca_file("/etc/palisade/redis-ca.pem")
//!     .client_cert("/etc/palisade/redis-client.pem", "/etc/palisade/redis-client.key");
//! let client = palisade::redis::client("rediss://redis.internal:6380/0", &tls)?;
//! # let _ = client;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "redis-tls"))]
//! # fn main() {}
//! ```

#[cfg(feature = "redis-tls")]
use std::path::Path;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// TLS settings of a `rediss://` connection: certificate files, PEM. All optional; any of them
/// with a URL that is not `rediss://` is an error ([`ConnectError::TlsOptionsWithoutTls`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RedisTls {
    /// CA certificates to trust instead of the system's roots (a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The client certificate (chain) presented for mutual TLS; needs `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1); needs `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl RedisTls {
    /// Whether no option is set (a `rediss://` URL then trusts the system's roots).
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// With a CA file to trust.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// With a client certificate and its key (mutual TLS).
    #[must_use]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }
}

/// Why a Redis client could not be built from a URL and [`RedisTls`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is empty.
    #[error("the Redis URL must not be empty")]
    EmptyUrl,
    /// The URL is malformed.
    #[error("invalid Redis URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `rediss://` URL, but this build has no TLS for Redis.
    #[error(
        "{url:?} is a TLS (rediss://) URL, but this palisade was built without the `redis-tls` \
         feature"
    )]
    TlsDisabled {
        /// The URL.
        url: String,
    },
    /// TLS options were given with a URL that does not use TLS.
    #[error(
        "TLS options (ca_file, cert_file, key_file) are set, but {url:?} is not a rediss:// URL"
    )]
    TlsOptionsWithoutTls {
        /// The URL.
        url: String,
    },
    /// `cert_file` without `key_file`, or the reverse.
    #[error(
        "cert_file and key_file go together: a client certificate needs its key ({missing} is missing)"
    )]
    HalfClientCert {
        /// The missing option.
        missing: &'static str,
    },
    /// A file could not be read.
    #[error("{option} {path:?}: cannot read: {reason}")]
    Read {
        /// `ca_file`, `cert_file` or `key_file`.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A file holds no usable PEM material.
    #[error("{option} {path:?}: {reason}")]
    Pem {
        /// `ca_file`, `cert_file` or `key_file`.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Whether `url` asks for TLS (`rediss://`, or `valkeys://` as the Redis client also accepts).
pub fn is_tls_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

/// A Redis client for `url` with `tls`: checks the URL and the options, and reads and parses
/// the certificate files, so every mistake is reported here and not at the first connection.
/// Connecting stays lazy (the client opens no socket).
///
/// With the `redis-tls` feature this also makes sure rustls has a process-wide crypto provider
/// (ring), installing it when none is; it never replaces one the program installed.
///
/// # Errors
/// [`ConnectError`] names the URL or the option and file at fault.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub fn client(url: &str, tls: &RedisTls) -> Result<::redis::Client, ConnectError> {
    if url.is_empty() {
        return Err(ConnectError::EmptyUrl);
    }
    let url_error = |e: ::redis::RedisError| ConnectError::Url {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    if !is_tls_url(url) {
        if !tls.is_empty() {
            return Err(ConnectError::TlsOptionsWithoutTls {
                url: url.to_owned(),
            });
        }
        return ::redis::Client::open(url).map_err(url_error);
    }
    tls_client(url, tls)
}

#[cfg(all(feature = "redis", not(feature = "redis-tls")))]
fn tls_client(url: &str, _tls: &RedisTls) -> Result<::redis::Client, ConnectError> {
    Err(ConnectError::TlsDisabled {
        url: url.to_owned(),
    })
}

#[cfg(feature = "redis-tls")]
fn tls_client(url: &str, tls: &RedisTls) -> Result<::redis::Client, ConnectError> {
    use ::redis::{ClientTlsConfig, TlsCertificates};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    install_crypto_provider();
    let url_error = |e: ::redis::RedisError| ConnectError::Url {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    if tls.is_empty() {
        return ::redis::Client::open(url).map_err(url_error);
    }
    let pem_error = |option: &'static str, path: &Path, reason: String| ConnectError::Pem {
        option,
        path: path.to_owned(),
        reason,
    };
    let certificates = |option: &'static str, path: &Path| {
        let pem = read(option, path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(option, path, format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(pem_error(
                option,
                path,
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
            ));
        }
        Ok((pem, certs))
    };
    let root_cert = match &tls.ca_file {
        Some(path) => {
            let (pem, certs) = certificates("ca_file", path)?;
            let mut roots = rustls::RootCertStore::empty();
            let (_, rejected) = roots.add_parsable_certificates(certs);
            if roots.is_empty() {
                return Err(pem_error(
                    "ca_file",
                    path,
                    format!("none of its {rejected} certificates is a usable CA certificate"),
                ));
            }
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConnectError::HalfClientCert {
                missing: "key_file",
            });
        }
        (None, Some(_)) => {
            return Err(ConnectError::HalfClientCert {
                missing: "cert_file",
            });
        }
        (Some(cert), Some(key)) => {
            let (client_cert, _) = certificates("cert_file", cert)?;
            let client_key = read("key_file", key)?;
            PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| {
                pem_error("key_file", key, format!("holds no PEM private key: {e}"))
            })?;
            Some(ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
    };
    ::redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(url_error)
}

#[cfg(feature = "redis-tls")]
fn read(option: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|e| ConnectError::Read {
        option,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Installs rustls's ring provider as the process default unless one is installed already (by
/// the program, or by another thread a moment ago: that one is kept, no panic).
#[cfg(feature = "redis-tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        #[allow(
            deprecated,
            reason = "the ring provider: aws-lc-rs stays out of the build"
        )]
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    }
}

/// At most one warning per [`WARN_EVERY`] for a Redis user's failures (a TLS handshake refused
/// by a wrong CA, a refused connection...): the cause is visible in the log without one line
/// per request; the rest go to `debug`.
#[cfg(feature = "redis")]
#[cfg_attr(not(any(feature = "cache", feature = "rate-limit")), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    /// Milliseconds since [`epoch`] of the last warning, plus one (0: never).
    last: std::sync::atomic::AtomicU64,
}

/// The minimum interval between two warnings of one [`Warnings`].
#[cfg(feature = "redis")]
#[cfg_attr(not(any(feature = "cache", feature = "rate-limit")), allow(dead_code))]
pub(crate) const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(feature = "redis")]
#[cfg_attr(not(any(feature = "cache", feature = "rate-limit")), allow(dead_code))]
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[cfg(feature = "redis")]
#[cfg_attr(not(any(feature = "cache", feature = "rate-limit")), allow(dead_code))]
impl Warnings {
    /// Whether this failure should be a warning (the first, or the first after
    /// [`WARN_EVERY`]); claims the slot when it is.
    pub(crate) fn due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = u64::try_from(epoch().elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval() {
        let w = Warnings::default();
        assert!(w.due());
        assert!(!w.due());
        assert!(!w.due());
    }

    #[test]
    fn plain_urls_and_their_mistakes() {
        assert!(client("redis://127.0.0.1:6379/", &RedisTls::default()).is_ok());
        assert_eq!(
            client("", &RedisTls::default()).unwrap_err(),
            ConnectError::EmptyUrl
        );
        assert!(matches!(
            client("http://x/", &RedisTls::default()),
            Err(ConnectError::Url { .. })
        ));
        let tls = RedisTls::default().client_cert("c.pem", "k.pem");
        assert!(matches!(
            client("redis://127.0.0.1:6379/", &tls),
            Err(ConnectError::TlsOptionsWithoutTls { .. })
        ));
        assert!(is_tls_url("rediss://h:1/"));
        assert!(is_tls_url("REDISS://h:1/"));
        assert!(!is_tls_url("redis://h:1/"));
        assert!(!is_tls_url("redis+unix:///tmp/r.sock"));
    }

    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn rediss_without_the_feature_is_a_clear_error() {
        let err = client("rediss://127.0.0.1:6380/", &RedisTls::default()).unwrap_err();
        assert!(err.to_string().contains("redis-tls"), "{err}");
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn rediss_files_are_checked_up_front() {
        let dir = std::env::temp_dir().join(format!("palisade-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = "rediss://127.0.0.1:6380/";
        assert!(client(url, &RedisTls::default()).is_ok());
        let missing = RedisTls::default().ca_file(dir.join("absent.pem"));
        let err = client(url, &missing).unwrap_err();
        assert!(
            matches!(
                &err,
                ConnectError::Read {
                    option: "ca_file",
                    ..
                }
            ),
            "{err}"
        );
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = client(url, &RedisTls::default().ca_file(&junk)).unwrap_err();
        assert!(
            matches!(
                &err,
                ConnectError::Pem {
                    option: "ca_file",
                    ..
                }
            ),
            "{err}"
        );
        let half = RedisTls {
            cert_file: Some(junk),
            ..RedisTls::default()
        };
        assert_eq!(
            client(url, &half).unwrap_err(),
            ConnectError::HalfClientCert {
                missing: "key_file"
            }
        );
        // The provider is installed once and a second call keeps it.
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        install_crypto_provider();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
