//! HTTPS for an axum app with Palisade layers: rustls (ring provider) through tokio-rustls,
//! h2 and HTTP/1.1 by ALPN, certificates reloaded on SIGHUP without dropping a connection.
//!
//! `axum::serve` speaks plain TCP only, so the accept loop is written out (about 30 lines):
//!
//! 1. build a rustls `ServerConfig` from the PEM files, with `alpn_protocols = [h2, http/1.1]`;
//! 2. keep it in an [`ArcSwap`]: each accepted connection takes the current one, SIGHUP stores a
//!    new one (a file that fails to load is logged and the old certificate stays), so open
//!    connections keep what they negotiated and only new handshakes see the new certificate;
//! 3. handshake with a timeout (a peer that never finishes must not hold a task), then serve the
//!    TLS stream with hyper-util's auto builder, which runs h2 or HTTP/1.1 as negotiated;
//! 4. the app is an ordinary `Router` with Palisade's drain layer, so SIGTERM drains it.
//!
//! ```text
//! cargo run -p examples --example tls_axum -- --cert cert.pem --key key.pem --port 8443
//! curl --cacert ca.pem --http2 https://localhost:8443/
//! ```
//!
//! Without `--cert`/`--key` it makes a throwaway CA and certificate with rcgen and writes the CA
//! to `tls_axum-ca.pem` in the temp dir. With `EXAMPLE_SMOKE=1` (or `--once`) it also sends one
//! request over h2 and one over HTTP/1.1 to itself, prints the results and exits.
#![forbid(unsafe_code)]

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::shutdown::{Drain, DrainConfig, shutdown_signal};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tower::ServiceExt as _;

type BoxError = Box<dyn Error + Send + Sync>;

/// The ring provider, chosen explicitly (no process-wide default needed).
#[allow(
    deprecated,
    reason = "ring: a small build; rustls 0.23.48 deprecates it for lacking post-quantum key exchange"
)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificate chain and key and builds the server configuration.
fn server_config(cert: &PathBuf, key: &PathBuf) -> Result<rustls::ServerConfig, BoxError> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?; // fails when the key is not the certificate's
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A throwaway CA and a `localhost` certificate it signs, written to the temp dir; the paths
/// of the CA, the certificate and the key.
fn throwaway_material() -> Result<(PathBuf, PathBuf, PathBuf), BoxError> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
        .signed_by(&key, &issuer)?;
    let dir = std::env::temp_dir().join(format!("tls_axum-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

/// `--name value` from the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Serves `app` over TLS on `listener` until the drain stops accepting.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    drain: Drain,
) {
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        TokioExecutor::new(),
    ));
    let stopped = drain.accept_stopped();
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
        };
        // The configuration current now: a reload later does not affect this connection.
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.load_full());
        let (app, builder) = (app.clone(), Arc::clone(&builder));
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    _ => return tracing::debug!(%peer, "TLS handshake failed or timed out"),
                };
            let service = hyper::service::service_fn(move |req| app.clone().oneshot(req));
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One `GET /` over a new TLS connection offering only `alpn`; `(protocol, status, body)`.
async fn get_once(
    addr: std::net::SocketAddr,
    ca: &PathBuf,
    alpn: &str,
) -> Result<(String, u16, String), BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let negotiated =
        String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or(&b"none"[..]))
            .into_owned();
    let io = TokioIo::new(tls);
    let res = if negotiated == "h2" {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://localhost:{}/", addr.port()))
            .body(Empty::<Bytes>::new())?;
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let req = http::Request::get("/")
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())?;
        send.send_request(req).await?
    };
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((
        negotiated,
        status,
        String::from_utf8_lossy(&body).trim().to_owned(),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke =
        std::env::var_os("EXAMPLE_SMOKE").is_some() || std::env::args().any(|a| a == "--once");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    palisade::observe::init_tracing(palisade::observe::LogFormat::Compact, &filter)?;
    let (ca, cert, key) = match (arg("--cert"), arg("--key")) {
        (Some(cert), Some(key)) => (None, PathBuf::from(cert), PathBuf::from(key)),
        _ => {
            let (ca, cert, key) = throwaway_material()?;
            println!("throwaway CA written to {}", ca.display());
            (Some(ca), cert, key)
        }
    };
    let port: u16 = match arg("--port") {
        Some(p) => p.parse()?,
        None if smoke => 0,
        None => 8443,
    };

    let tls = Arc::new(ArcSwap::from_pointee(server_config(&cert, &key)?));
    // SIGHUP: load the files again; keep the old certificate if they do not load.
    {
        let (tls, cert, key) = (Arc::clone(&tls), cert.clone(), key.clone());
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match server_config(&cert, &key) {
                    Ok(config) => {
                        tls.store(Arc::new(config));
                        println!("certificate reloaded");
                    }
                    Err(error) => {
                        println!("certificate not reloaded, keeping the old one: {error}")
                    }
                }
            }
        });
    }

    let drain = Drain::new(DrainConfig::builder().delay(Duration::ZERO).build()?);
    let app = Router::new()
        .route("/", get(|| async { "hello over TLS\n" }))
        .layer(drain.layer());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on https://{addr}");
    let server = tokio::spawn(serve_tls(listener, app, Arc::clone(&tls), drain.clone()));

    if smoke {
        let ca = ca.ok_or("smoke mode makes its own CA; do not pass --cert/--key")?;
        for alpn in ["h2", "http/1.1"] {
            let (negotiated, status, body) = get_once(addr, &ca, alpn).await?;
            println!("GET / offering {alpn}: negotiated {negotiated} -> {status} {body:?}");
        }
        drain.start();
    } else {
        tokio::spawn(shutdown_signal(drain.clone()));
    }
    let report = drain.run(server).await?;
    println!(
        "stopped: {} completed, {} cut",
        report.completed, report.cut
    );
    Ok(())
}
