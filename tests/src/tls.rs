//! TLS test material: a throwaway CA made with rcgen, certificates it issues (written as PEM
//! files for the server), rustls client configurations that trust it, and one-request HTTPS
//! exchanges that report the negotiated protocol and the certificate the server presented.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The ring crypto provider (as the server uses).
#[allow(deprecated, reason = "ring provider, as the server uses")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority that exists only for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    der: CertificateDer<'static>,
}

/// A certificate issued by a [`TestCa`] and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate, DER (what a peer presents).
    pub der: CertificateDer<'static>,
}

impl Issued {
    /// Writes the certificate and the key to `cert` and `key`.
    ///
    /// # Panics
    /// When a file cannot be written.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(key, &self.key_pem).expect("write the key");
    }
}

impl TestCa {
    /// A new CA named `name`.
    ///
    /// # Panics
    /// When rcgen fails (it does not for these parameters).
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `path`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("write the CA certificate");
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1` (a new key and serial each call).
    pub fn server_cert(&self) -> Issued {
        self.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate named `name`.
    pub fn client_cert(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client configuration trusting this CA, offering `alpn`, presenting `client` if given.
    ///
    /// # Panics
    /// When rustls refuses the material.
    pub fn client_config(
        &self,
        alpn: &[&str],
        client: Option<&Issued>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("CA root");
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(issued) => {
                let key =
                    PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("client key");
                builder
                    .with_client_auth_cert(vec![issued.der.clone()], key)
                    .expect("client certificate")
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// Connects to `addr` and completes a TLS handshake for `localhost` (10 s limit).
pub async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").expect("server name");
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| Err("handshake timed out".to_owned()))
}

/// What one HTTPS request saw.
#[derive(Debug)]
pub struct TlsGet {
    /// The status code.
    pub status: u16,
    /// The ALPN protocol the server chose.
    pub alpn: Option<String>,
    /// The HTTP version of the response.
    pub version: http::Version,
    /// The certificate the server presented (leaf).
    pub server_cert: Option<CertificateDer<'static>>,
    /// The body.
    pub body: Bytes,
}

/// `GET path` over a new TLS connection: HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
pub async fn get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<TlsGet, String> {
    let tls = handshake(addr, config).await?;
    let (_, session) = tls.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let server_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let io = TokioIo::new(tls);
    let fut = async {
        let res = if alpn.as_deref() == Some("h2") {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            let req = Request::get(format!("https://localhost:{}{path}", addr.port()))
                .body(Empty::<Bytes>::new())
                .expect("request");
            sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e:?}"))?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            let req = Request::get(path)
                .header(header::HOST, "localhost")
                .body(Empty::<Bytes>::new())
                .expect("request");
            sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e:?}"))?
        };
        let status = res.status().as_u16();
        let version = res.version();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, version, body))
    };
    let (status, version, body) = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| Err("request timed out".to_owned()))?;
    Ok(TlsGet {
        status,
        alpn,
        version,
        server_cert,
        body,
    })
}

/// A blocking `GET path` over a fresh TLS connection; the status, if any answer came (for
/// readiness checks).
pub fn blocking_status(
    addr: SocketAddr,
    path: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Option<u16> {
    use std::io::{Read, Write};
    let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    tcp.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let name = ServerName::try_from("localhost").ok()?;
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = tls.read(&mut buf).ok()?;
    crate::http::raw_status(&buf[..n])
}
