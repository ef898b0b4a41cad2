//! The connection layer: the listening socket and the accept loop.
//!
//! The listener is created once with socket2 (backlog, `SO_REUSEADDR`, optional `SO_REUSEPORT`).
//! Each accepted connection is served by hyper-util's auto builder (HTTP/1.1, and h2c when
//! enabled) with a header-read timeout (slowloris), header count and size limits, and is
//! registered with a [`GracefulShutdown`] watcher so a drain can close keep-alive connections
//! (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) and wait for in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use palisade::shutdown::{Drain, DrainReport};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt as _};

use crate::config::ServerConfig;

/// How long a draining worker waits for idle keep-alive (and accepted, unread) connections to
/// send one more request before closing them.
const IDLE_GRACE: Duration = Duration::from_secs(1);

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

/// Serves `app` on `listener` until `drain` stops accepting, then waits (up to the drain's grace
/// period) for in-flight requests and reports what completed and what was cut.
pub async fn serve<S, B>(
    listener: std::net::TcpListener,
    app: S,
    config: &ServerConfig,
    drain: Drain,
) -> std::io::Result<DrainReport>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::from_std(listener)?;
    let builder = Arc::new(connection_builder(config));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(connection_slots(config.max_connections)));
    let nodelay = config.tcp_nodelay;
    let stopped = drain.accept_stopped();
    tokio::pin!(stopped);

    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stopped => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stopped => break,
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
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let stream = VersionDeadline::new(stream, config.header_read_timeout());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(in_flight = drain.in_flight(), "stopped accepting; draining");
    let deadline = tokio::time::Instant::now() + drain.config().grace();
    // Responses now carry `Connection: close` (DrainLayer), so a busy HTTP/1 connection closes
    // right after its current response. A connection that is between two requests, or accepted
    // but not read yet, gets IDLE_GRACE to send its next request (answered, with `Connection:
    // close`): closing it at once races with a request already on its way, which the client
    // then sees reset and loses.
    let idle_until = (tokio::time::Instant::now() + IDLE_GRACE).min(deadline);
    while graceful.count() > 0 && tokio::time::Instant::now() < idle_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then close what is still idle (HTTP/2: GOAWAY) and wait for every connection, not only
    // every request: returning earlier lets process exit reset the connections still open.
    let closed = tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_ok();
    let report = drain.wait_until(deadline).await;
    if !closed {
        tracing::warn!("connections still open at the drain deadline");
    }
    Ok(report)
}

/// hyper's own HTTP/1 header-count limit when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn connection_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    {
        let mut h1 = builder.http1();
        h1.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout())
            .max_buf_size(config.max_header_bytes.max(8192))
            .keep_alive(config.keep_alive_timeout().is_some());
        // hyper parses into an uninitialised inline array when no maximum is set; setting one,
        // even its default, makes it initialise an array of that size on every request.
        if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            h1.max_headers(config.max_headers);
        }
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

/// Descriptors kept free for everything that is not a client connection: the listener, Redis,
/// the admin endpoint, the control channel, log files.
const FD_RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard limit, as nginx's `worker_rlimit_nofile` and Go's
/// runtime do: the usual soft default (1024) is far below what `server.max_connections` needs,
/// and the hard limit is what the operator allowed. Worker processes inherit it.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%error, soft, hard, "could not raise the open-file limit");
    }
}

/// The connection cap actually enforced: `max_connections`, lowered to what the open-file limit
/// can hold (minus [`FD_RESERVE`]) so that a flood of connections waits in the backlog instead of
/// failing `accept` with `EMFILE` and starving Redis and admin sockets.
fn connection_slots(max_connections: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max_connections;
    };
    let usable = usize::try_from(soft.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX);
    if max_connections > usable {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            cap = usable,
            "server.max_connections is above what the open-file limit allows; capping (raise `ulimit -Hn`, LimitNOFILE= under systemd)"
        );
        usable
    } else {
        max_connections
    }
}

/// The HTTP/2 client preface; hyper-util's auto builder reads until the bytes received differ
/// from it (HTTP/1) or it is complete (HTTP/2).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection that must tell its protocol version within `header_read_timeout`.
///
/// hyper-util's auto builder reads the version (up to the 24-byte HTTP/2 preface) before
/// hyper's HTTP/1 header-read timer starts, and has no timeout of its own: a client that sends
/// nothing, or a prefix of the preface, would hold a connection slot forever. Reads fail with
/// `TimedOut` once the deadline passes while every byte received is still a strict prefix of
/// the preface; the first byte that decides the version disarms the deadline for good.
struct VersionDeadline {
    io: tokio::net::TcpStream,
    seen: usize,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl VersionDeadline {
    fn new(io: tokio::net::TcpStream, timeout: Duration) -> Self {
        Self {
            io,
            seen: 0,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl tokio::io::AsyncRead for VersionDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.deadline.is_some() {
                    let new = &buf.filled()[before..];
                    let at = this.seen.min(H2_PREFACE.len());
                    let want = &H2_PREFACE[at..];
                    let n = new.len().min(want.len());
                    this.seen += new.len();
                    // Decided: EOF, a byte that is not the preface, or the whole preface.
                    if new.is_empty() || new[..n] != want[..n] || this.seen >= H2_PREFACE.len() {
                        this.deadline = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for VersionDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
