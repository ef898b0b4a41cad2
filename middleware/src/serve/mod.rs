//! Serving: a drain-aware accept loop for any HTTP service, with the client address attached.
//!
//! [`serve`] runs an axum `Router` (or any `Service<Request<TimedBody<Incoming>>>`) on a listener
//! and owns
//! what a production accept loop needs, so the layers around the service get what they rely on:
//!
//! - **Connect info.** Every request carries the socket peer as axum's
//!   `ConnectInfo<SocketAddr>` and as [`PeerAddr`](crate::rate_limit::PeerAddr), so client-IP
//!   rate-limit keys work without `into_make_service_with_connect_info`.
//! - **Graceful drain.** It stops accepting when the [`Drain`] says so, lets idle keep-alive
//!   connections send one more request, closes the rest (HTTP/1.1 `Connection: close`, HTTP/2
//!   GOAWAY), waits up to the drain's grace period and returns the [`DrainReport`].
//! - **Signals.** Unless turned off ([`Serve::with_signals`]), the first SIGTERM/SIGINT starts
//!   the drain and a second one exits at once ([`shutdown_signal`](crate::shutdown::shutdown_signal)).
//! - **Connection hygiene** ([`ServeConfig`]): a header-read timeout that also covers the
//!   HTTP/1-or-2 sniffing (slowloris), a request-body read timeout (a body that stalls longer
//!   than [`ServeConfig::body_read_timeout`] fails with [`BodyReadTimeout`]; the request then
//!   answers 408 and its connection closes), header count and size limits, a cap on open connections
//!   that keeps descriptors free, `TCP_NODELAY`, HTTP/2 over cleartext next to HTTP/1.1.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use palisade::shutdown::{Drain, DrainConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let report = palisade::serve(listener, app)
//!     .drain(Drain::new(DrainConfig::default()))
//!     .await?;
//! println!("{} requests completed during the drain, {} cut", report.completed, report.cut);
//! # Ok(())
//! # }
//! ```
//!
//! A [`Stack`](crate::Stack) user calls [`StackLayer::serve`](crate::stack::StackLayer::serve),
//! which passes the stack's own drain.

mod config;
#[cfg(test)]
mod tests;

pub use self::config::ServeConfig;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use crate::shutdown::{Drain, DrainConfig, DrainReport};
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt as _};

/// Where [`serve`] takes its connections from: a [`TcpListener`], or an acceptor of your own
/// that decides which connections this process takes (e.g. a pre-fork server's worker that
/// leaves a connection to a less loaded sibling, like nginx's `accept_mutex`).
pub trait Accept: Send + 'static {
    /// Kept alive as long as its connection is served (e.g. a per-worker connection count);
    /// `()` when nothing needs to be.
    type Guard: Send + 'static;

    /// The next connection, its peer address and its guard. Must be cancel-safe: the accept
    /// loop drops the future when the drain stops accepting.
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr, Self::Guard)>> + Send;
}

impl Accept for TcpListener {
    type Guard = ();

    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr, ())> {
        let (stream, peer) = TcpListener::accept(self).await?;
        Ok((stream, peer, ()))
    }
}

/// A byte stream [`serve`] can speak HTTP over: what a [`Handshake`] returns.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The boxed future of a [`Handshake`].
pub type HandshakeFuture = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send>>;

/// A per-connection handshake before HTTP, typically TLS (`tokio_rustls::TlsAcceptor` behind a
/// small adapter; the reference server's `[server.tls]` is one). [`serve`] runs it in the
/// connection's own task, never in the accept loop, bounded by
/// [`ServeConfig::header_read_timeout`]; a connection whose handshake fails or times out is
/// closed and logged at DEBUG. With TLS, ALPN decides HTTP/2 or HTTP/1.1: the accept loop reads
/// the client's first bytes either way.
pub trait Handshake: Send + Sync + 'static {
    /// Turns an accepted TCP stream into the stream HTTP is served over.
    fn handshake(&self, stream: TcpStream) -> HandshakeFuture;
}

/// How long a draining worker waits for idle keep-alive (and accepted, unread) connections to
/// send one more request before closing them.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Creates the listening socket described by `config` (non-blocking, ready for tokio).
pub fn bind(config: &ServeConfig) -> std::io::Result<std::net::TcpListener> {
    let addr = config.bind;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if config.reuse_port {
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        #[cfg(not(unix))]
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "SO_REUSEPORT is only available on unix",
        ));
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

/// Serves `app` on `listener`: see the [module docs](self).
///
/// The returned [`Serve`] is a future (`.await` it) that can be configured first: the drain it
/// follows ([`Serve::drain`]; by default a new one with [`DrainConfig::default`]), the connection
/// settings ([`Serve::config`]) and whether it listens for termination signals
/// ([`Serve::with_signals`]). It resolves once the drain is over, with its report.
pub fn serve<L, S, B>(listener: L, app: S) -> Serve<S, L>
where
    L: Accept,
    S: Service<Request<TimedBody<Incoming>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Serve {
        listener,
        handshake: None,
        app,
        config: ServeConfig::default(),
        drain: None,
        signals: true,
    }
}

/// A configured server; `.await` it to serve. Built by [`serve`].
#[must_use = "a Serve does nothing until awaited"]
pub struct Serve<S, L = TcpListener> {
    listener: L,
    handshake: Option<Arc<dyn Handshake>>,
    app: S,
    config: ServeConfig,
    drain: Option<Drain>,
    signals: bool,
}

impl<S, L> std::fmt::Debug for Serve<S, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("config", &self.config)
            .field("drain", &self.drain)
            .field("signals", &self.signals)
            .field("handshake", &self.handshake.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, L> Serve<S, L> {
    /// Follows `drain`: accept stops when it says so and the wait is bounded by its grace period.
    /// Pass the drain whose [`DrainLayer`](crate::shutdown::DrainLayer) wraps the service, so
    /// readiness, in-flight accounting and `Connection: close` agree with the accept loop.
    pub fn drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Connection settings (timeouts, limits, HTTP/2); [`ServeConfig::default`] otherwise.
    pub fn config(mut self, config: ServeConfig) -> Self {
        self.config = config;
        self
    }

    /// Whether the first SIGTERM/SIGINT (Ctrl-C) starts the drain and a second one exits at once
    /// (default `true`). Turn it off when something else decides when to drain, e.g. a
    /// supervisor talking to its workers over a control channel.
    pub fn with_signals(mut self, signals: bool) -> Self {
        self.signals = signals;
        self
    }

    /// Runs `handshake` (e.g. TLS) on every accepted connection before serving HTTP on it.
    pub fn handshake(mut self, handshake: Arc<dyn Handshake>) -> Self {
        self.handshake = Some(handshake);
        self
    }
}

impl<L, S, B> IntoFuture for Serve<S, L>
where
    L: Accept,
    S: Service<Request<TimedBody<Incoming>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = std::io::Result<DrainReport>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let Self {
            listener,
            handshake,
            app,
            config,
            drain,
            signals,
        } = self;
        let drain = drain.unwrap_or_else(|| Drain::new(DrainConfig::default()));
        Box::pin(async move {
            if signals {
                tokio::spawn(crate::shutdown::shutdown_signal(drain.clone()));
            }
            accept_loop(listener, handshake, app, &config, drain).await
        })
    }
}

/// Serves `app` on `listener` until `drain` stops accepting, then waits (up to the drain's grace
/// period) for in-flight requests and reports what completed and what was cut.
async fn accept_loop<L, S, B>(
    mut listener: L,
    handshake: Option<Arc<dyn Handshake>>,
    app: S,
    config: &ServeConfig,
    drain: Drain,
) -> std::io::Result<DrainReport>
where
    S: Service<Request<TimedBody<Incoming>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    L: Accept,
{
    let builder = Arc::new(connection_builder(config));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(connection_slots(config.max_connections)));
    let nodelay = config.tcp_nodelay;
    let body_timeout = config.body_read_timeout;
    let stopped = drain.accept_stopped();
    tokio::pin!(stopped);

    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stopped => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (stream, peer, guard) = tokio::select! {
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
        let clock = Arc::new(HeadClock::new());
        let requests = Arc::clone(&clock);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            // The head arrived: no head deadline until this response has been sent.
            let in_flight = requests.begin();
            let connect = req.method() == http::Method::CONNECT;
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let (body, timed_out) = TimedBody::new(body, body_timeout);
            let response = app.clone().oneshot(Request::from_parts(parts, body));
            async move {
                let response = response.await?;
                let response = match timed_out {
                    Some(flag) if flag.load(Ordering::Acquire) => {
                        request_timeout().map(Either::Right)
                    }
                    _ => response.map(Either::Left),
                };
                // An upgraded connection (WebSocket, CONNECT tunnel) reads no more heads.
                let status = response.status();
                if status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
                    in_flight.0.upgraded.store(true, Ordering::Release);
                }
                Ok::<_, Infallible>(response.map(|body| InFlightBody { body, in_flight }))
            }
        });
        if let Some(handshake) = &handshake {
            // The handshake runs in the connection's task, never in the accept loop; the
            // watcher counts the connection for the drain from now on.
            let (handshake, builder, watcher) = (
                Arc::clone(handshake),
                Arc::clone(&builder),
                graceful.watcher(),
            );
            let timeout = config.header_read_timeout;
            tokio::spawn(async move {
                let io = tokio::time::timeout(timeout, handshake.handshake(stream)).await;
                match io {
                    Ok(Ok(io)) => {
                        let stream = ConnDeadline::new(io, timeout, clock);
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        if let Err(error) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, error = %error, "connection ended with an error");
                        }
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "handshake failed"),
                    Err(_elapsed) => tracing::debug!(%peer, "handshake timed out"),
                }
                drop((permit, guard));
            });
            continue;
        }
        let stream = ConnDeadline::new(stream, config.header_read_timeout, clock);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            drop((permit, guard));
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

fn connection_builder(config: &ServeConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    {
        let mut h1 = builder.http1();
        // The header-read deadline is the connection's own (`ConnDeadline`): hyper's arms and
        // cancels a boxed timer for every request head.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(config.max_header_bytes.max(8192))
            .keep_alive(config.keep_alive_timeout.is_some());
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
        if let Some(idle) = config.keep_alive_timeout {
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
#[cfg(unix)]
const FD_RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard limit, as nginx's `worker_rlimit_nofile` and Go's
/// runtime do: the usual soft default (1024) is far below what `server.max_connections` needs,
/// and the hard limit is what the operator allowed. Worker processes inherit it.
#[cfg(unix)]
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%error, soft, hard, "could not raise the open-file limit");
    }
}

/// The connection cap actually enforced: `max_connections` (on unix lowered to what the
/// open-file limit can hold, so that a flood of connections waits in the backlog instead of
/// failing `accept` with `EMFILE` and starving Redis and admin sockets).
#[cfg(not(unix))]
fn connection_slots(max_connections: usize) -> usize {
    max_connections
}

/// See the other platforms' version; on unix the cap follows `RLIMIT_NOFILE`.
#[cfg(unix)]
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

/// When an HTTP/1 connection began to wait for its next request head, shared by the
/// connection's reads ([`ConnDeadline`]) and its requests: a request in flight stops the clock,
/// its response body's end (or drop) restarts it.
#[derive(Debug)]
struct HeadClock {
    origin: tokio::time::Instant,
    in_flight: std::sync::atomic::AtomicU32,
    /// Nanoseconds from `origin` to the end of the last response.
    idle_since: std::sync::atomic::AtomicU64,
    /// The connection was upgraded to another protocol: no more heads to wait for.
    upgraded: AtomicBool,
}

impl HeadClock {
    fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            in_flight: std::sync::atomic::AtomicU32::new(0),
            idle_since: std::sync::atomic::AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// When the head being waited for must have arrived; `None` while a request is in flight.
    fn deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 || self.upgraded.load(Ordering::Acquire) {
            return None;
        }
        let idle = Duration::from_nanos(self.idle_since.load(Ordering::Acquire));
        Some(self.origin + idle + timeout)
    }
}

/// A request of the connection in flight; dropped with its response body.
#[derive(Debug)]
struct InFlight(Arc<HeadClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        let since = tokio::time::Instant::now().saturating_duration_since(clock.origin);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        clock.idle_since.fetch_max(nanos, Ordering::AcqRel);
        clock.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's place in the connection's [`HeadClock`].
    struct InFlightBody<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The read deadlines of a connection, with one timer for its whole life.
///
/// 1. **Version.** hyper-util's auto builder reads the version (up to the 24-byte HTTP/2
///    preface) before HTTP/1 starts, and has no timeout of its own: a client that sends nothing,
///    or a prefix of the preface, would hold a connection slot forever. Reads fail with
///    `TimedOut` once `header_read_timeout` passes while every byte received is still a strict
///    prefix of the preface.
/// 2. **HTTP/1 request heads** (slowloris protection and the keep-alive idle limit). A head must
///    arrive within `header_read_timeout` of the connection's start or of the end of the
///    previous response ([`HeadClock`]); reads fail with `TimedOut` after that. HTTP/2 has no
///    head deadline (its streams are multiplexed; keep-alive pings watch the connection).
///
/// The timer is re-armed only when it fires: a keep-alive request moves the clock with two
/// atomic updates and one clock read, where hyper's own header-read timeout allocates, arms and
/// cancels a timer for every request head.
struct ConnDeadline<IO = tokio::net::TcpStream> {
    io: IO,
    seen: usize,
    version_decided: bool,
    version_deadline: tokio::time::Instant,
    /// `None` once the connection turned out to be HTTP/2.
    heads: Option<Arc<HeadClock>>,
    timeout: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<IO> ConnDeadline<IO> {
    fn new(io: IO, timeout: Duration, heads: Arc<HeadClock>) -> Self {
        let version_deadline = tokio::time::Instant::now() + timeout;
        Self {
            io,
            seen: 0,
            version_decided: false,
            version_deadline,
            heads: Some(heads),
            timeout,
            sleep: Box::pin(tokio::time::sleep_until(version_deadline)),
        }
    }

    /// The deadline the connection is under now, if any.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        if !self.version_decided {
            return Some(self.version_deadline);
        }
        self.heads.as_ref()?.deadline(self.timeout)
    }

    /// Whether the current deadline has passed; otherwise the timer will wake the task at it.
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        use std::future::Future as _;
        let Some(deadline) = self.deadline() else {
            // A request in flight: no deadline now, but the end of its response restarts the
            // clock without a read, so the timer must come back later to look again.
            let watching = self
                .heads
                .as_ref()
                .is_some_and(|h| !h.upgraded.load(Ordering::Acquire));
            if watching && self.sleep.as_mut().poll(cx).is_ready() {
                let next = tokio::time::Instant::now() + self.timeout.max(Duration::from_millis(1));
                self.sleep.as_mut().reset(next);
                let _ = self.sleep.as_mut().poll(cx);
            }
            return false;
        };
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.sleep.deadline() >= deadline {
                return true;
            }
            // An earlier deadline that has moved on (requests were served since): re-arm.
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ConnDeadline<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !this.version_decided {
                    let new = &buf.filled()[before..];
                    let at = this.seen.min(H2_PREFACE.len());
                    let want = &H2_PREFACE[at..];
                    let n = new.len().min(want.len());
                    this.seen += new.len();
                    // Decided: EOF, a byte that is not the preface, or the whole preface.
                    let differs = new[..n] != want[..n];
                    if new.is_empty() || differs || this.seen >= H2_PREFACE.len() {
                        this.version_decided = true;
                        if !new.is_empty() && !differs {
                            this.heads = None;
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.expired(cx) {
                    Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ConnDeadline<IO> {
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

/// A request body that fails with [`BodyReadTimeout`] when no data arrives for the timeout while
/// the handler waits for it (nginx's `client_body_timeout`: the time between two reads, not the
/// whole upload). A body known to be empty gets no timer.
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    timer: Option<BodyTimer>,
}

#[derive(Debug)]
struct BodyTimer {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

impl<B: Body> TimedBody<B> {
    /// Wraps `inner`; the flag (`None` for an empty body) turns true when the timeout fires.
    pub fn new(inner: B, timeout: Duration) -> (Self, Option<Arc<AtomicBool>>) {
        if inner.is_end_stream() {
            return (Self { inner, timer: None }, None);
        }
        let fired = Arc::new(AtomicBool::new(false));
        let timer = BodyTimer {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            fired: Arc::clone(&fired),
        };
        (
            Self {
                inner,
                timer: Some(timer),
            },
            Some(fired),
        )
    }
}

/// The request body stalled for longer than the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing within the body read timeout")]
pub struct BodyReadTimeout;

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = &mut this.timer {
                    let next = tokio::time::Instant::now() + t.timeout;
                    t.sleep.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => {
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let expired = this
                    .timer
                    .as_mut()
                    .is_some_and(|t| std::future::Future::poll(t.sleep.as_mut(), cx).is_ready());
                match this.timer.take() {
                    Some(t) if expired => {
                        t.fired.store(true, Ordering::Release);
                        Poll::Ready(Some(Err(Box::new(BodyReadTimeout))))
                    }
                    timer => {
                        this.timer = timer;
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body timed out: 408, and the connection closes.
fn request_timeout() -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Request Timeout",
        "status": 408,
        "detail": "the request body sent nothing within the body read timeout",
    });
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    res
}
