//! TLS for the public listener (`[server.tls]`) and the admin endpoint (`[admin.tls]`), with
//! rustls and its `ring` crypto provider.
//!
//! - **Certificates** are PEM files: the chain (leaf first) and its private key (PKCS#8, PKCS#1
//!   or SEC1). A key that does not belong to the leaf certificate is refused when loading.
//! - **ALPN** offers `h2` (when `server.http2` is on) and `http/1.1`; hyper serves whichever was
//!   negotiated.
//! - **Client certificates** (mTLS): with `client_ca` set, clients must present a certificate
//!   that chains to one of its CAs (`client_auth = "required"`, the default), or may present one
//!   (`"optional"`).
//! - **Reload**: the files are read when a process starts. Under the supervisor, SIGHUP reloads
//!   the configuration, which loads (and so checks) the files, then rolls the workers: each new
//!   worker loads the new files, old workers finish their connections with the material they
//!   negotiated. Files that fail to load refuse the reload and the old workers keep serving. In
//!   a single process, and for the admin endpoint, SIGHUP swaps the acceptor's configuration in
//!   place ([`TlsAcceptor::reload`]); open connections are not touched, and a failed load keeps
//!   the previous certificate.
//! - **Handshakes** must finish within `server.header_read_timeout_ms`, so a peer that never
//!   completes one cannot hold a connection slot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{ClientAuth, TlsConfig};

pub use tokio_rustls::server::TlsStream;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which setting the file came from (`cert`, `key`, `client_ca`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("{0}")]
    Rustls(String),
}

/// The crypto provider every Palisade TLS configuration uses: `ring`, chosen explicitly so no
/// process-wide default is needed.
///
/// rustls 0.23.48 deprecates the ring provider because it has no post-quantum key exchange;
/// ring is kept because it builds from a few C files, where aws-lc-rs needs a long C/CMake
/// build. Classic X25519/P-256 key exchange remains what most clients negotiate today.
#[allow(deprecated, reason = "ring provider: see the function docs")]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file (at least one).
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The ALPN protocols a listener offers: `h2` first when HTTP/2 is on, then `http/1.1`.
pub fn alpn(http2: bool) -> Vec<Vec<u8>> {
    let mut protocols = Vec::with_capacity(2);
    if http2 {
        protocols.push(b"h2".to_vec());
    }
    protocols.push(b"http/1.1".to_vec());
    protocols
}

/// Builds a rustls server configuration from `settings`: loads and checks the certificate
/// chain, the key and the client CAs.
pub fn server_config(
    settings: &TlsConfig,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let certs = load_certs("cert", &settings.cert)?;
    let key = load_key(&settings.key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs("client_ca", path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "client_ca",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("client_ca {}: {e}", path.display())))?,
            )
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::Rustls(format!(
            "cert {} with key {}: {e}",
            settings.cert.display(),
            settings.key.display()
        ))
    })?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A TLS acceptor whose configuration can be swapped while it serves.
///
/// Each handshake uses the configuration current when it starts; [`reload`](Self::reload)
/// replaces it for later handshakes only, so open connections are never affected.
#[derive(Debug)]
pub struct TlsAcceptor {
    settings: TlsConfig,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<rustls::ServerConfig>,
}

impl TlsAcceptor {
    /// Loads `settings`, offering `alpn` (see [`alpn`]).
    pub fn new(settings: &TlsConfig, alpn: Vec<Vec<u8>>) -> Result<Self, TlsError> {
        let config = server_config(settings, alpn.clone())?;
        Ok(Self {
            settings: settings.clone(),
            alpn,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// Reads the files again; on success later handshakes use them, on failure the previous
    /// configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings, self.alpn.clone())?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Reloads on every SIGHUP this process receives, logging the outcome, until the runtime
    /// shuts down.
    pub fn reload_on_hangup(self: &Arc<Self>, listener: &'static str) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match this.reload() {
                    Ok(()) => tracing::info!(
                        listener,
                        cert = %this.settings.cert.display(),
                        "SIGHUP: TLS certificate reloaded"
                    ),
                    Err(error) => tracing::error!(
                        listener,
                        %error,
                        "SIGHUP: TLS certificate not reloaded; keeping the previous one"
                    ),
                }
            }
        });
        Ok(())
    }

    /// Performs the server side of a handshake on `io`, failing with `TimedOut` after
    /// `timeout`.
    pub async fn accept<IO>(&self, io: IO, timeout: Duration) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        tokio::time::timeout(timeout, acceptor.accept(io))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}

/// The TLS handshake of [`palisade::serve()`] (`Serve::handshake`): the listener's timeout and
/// the drain around it are the accept loop's; each handshake uses the certificate current
/// when it starts.
impl palisade::serve::Handshake for TlsAcceptor {
    fn handshake(&self, stream: tokio::net::TcpStream) -> palisade::serve::HandshakeFuture {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        Box::pin(async move {
            let stream = acceptor.accept(stream).await?;
            Ok(Box::new(stream) as Box<dyn palisade::serve::Io>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
            client_auth: ClientAuth::Required,
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_a_pair_and_offers_h2_first() {
        let dir = temp("ok");
        let settings = write_pair(&dir);
        let config = server_config(&settings, alpn(true)).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(alpn(false), vec![b"http/1.1".to_vec()]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_a_key_of_another_certificate_and_names_the_files() {
        let dir = temp("mismatch");
        let settings = write_pair(&dir);
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&settings.key, other.serialize_pem()).unwrap();
        let err = server_config(&settings, alpn(true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cert.pem") && err.contains("key.pem"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_reload_keeps_the_previous_configuration() {
        let dir = temp("reload");
        let settings = write_pair(&dir);
        let acceptor = TlsAcceptor::new(&settings, alpn(true)).unwrap();
        let before = acceptor.current.load_full();
        std::fs::write(&settings.cert, "not a certificate").unwrap();
        let err = acceptor.reload().unwrap_err().to_string();
        assert!(
            err.contains("cert") && err.contains("no PEM certificate"),
            "{err}"
        );
        assert!(Arc::ptr_eq(&before, &acceptor.current.load_full()));
        write_pair(&dir);
        acceptor.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &acceptor.current.load_full()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
