//! The connection layer: the listening socket and the accept loop.
//!
//! The listener is created once with socket2 (backlog, `SO_REUSEADDR`, optional `SO_REUSEPORT`).
//! Each accepted connection is served by hyper-util's auto builder (HTTP/1.1, and h2c when
//! enabled) with a header-read timeout (slowloris), header count and size limits, and is
//! registered with a [`GracefulShutdown`] watcher so a drain can close keep-alive connections
//! (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) and wait for in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::config::ServerConfig;

/// Creates the listening socket described by `config` (non-blocking, ready for tokio).
pub fn bind(config: &ServerConfig) -> std::io::Result<std::net::TcpListener> {
    let addr = config.bind;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if config.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_tcp_nodelay(config.tcp_nodelay)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(config.backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The outcome of [`serve`] after a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeReport {
    /// Connections still open when the grace period ended (their requests were cut).
    pub cut_connections: usize,
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting and waits up to
/// `grace` for open connections to finish their in-flight requests.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    config: &ServerConfig,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<ServeReport> {
    let listener = TcpListener::from_std(listener)?;
    let builder = Arc::new(connection_builder(config));
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let nodelay = config.tcp_nodelay;

    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if nodelay {
            let _ = stream.set_nodelay(true);
        }
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        let open = Arc::clone(&open);
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        open = open.load(Ordering::Relaxed),
        "stopped accepting; draining connections"
    );
    let cut_connections = tokio::select! {
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(grace) => open.load(Ordering::Relaxed),
    };
    Ok(ServeReport { cut_connections })
}

fn connection_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    {
        let mut h1 = builder.http1();
        h1.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout())
            .max_headers(config.max_headers)
            .max_buf_size(config.max_header_bytes.max(8192))
            .keep_alive(config.keep_alive_timeout().is_some());
    }
    {
        let mut h2 = builder.http2();
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        if let Some(idle) = config.keep_alive_timeout() {
            h2.keep_alive_interval(Some(idle / 2))
                .keep_alive_timeout(Duration::from_secs(20));
        }
    }
    if !config.http2 {
        builder = builder.http1_only();
    }
    builder
}

/// The local address of a std listener, for logs.
pub fn local_addr(listener: &std::net::TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
