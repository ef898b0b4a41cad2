//! Connection settings of the accept loop.

use std::net::SocketAddr;
use std::time::Duration;

/// How [`serve`](super::serve) treats connections, and where [`bind`](super::bind) listens.
///
/// The defaults suit a public-facing service: 10 s to send request headers, 10 s between
/// two reads of a request body, 75 s keep-alive,
/// 100 headers of at most 16 KiB in total, 25 000 open connections (lowered to what the
/// open-file limit allows), HTTP/2 over cleartext next to HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Address and port [`bind`](super::bind) listens on.
    pub bind: SocketAddr,
    /// Listen backlog (`listen(2)`); the kernel caps it at `net.core.somaxconn`.
    pub backlog: u32,
    /// Disable Nagle's algorithm on accepted connections.
    pub tcp_nodelay: bool,
    /// Set `SO_REUSEPORT` on the listener (unix only).
    pub reuse_port: bool,
    /// Keep-alive idle timeout; `None` serves one request per connection. HTTP/2 connections
    /// are pinged every half of it; an idle HTTP/1.1 connection is closed after
    /// [`header_read_timeout`](Self::header_read_timeout).
    pub keep_alive_timeout: Option<Duration>,
    /// Close connections whose request headers have not all arrived within this long
    /// (slowloris protection).
    pub header_read_timeout: Duration,
    /// Answer 408 and close the connection when a request body sends nothing for this long
    /// while the handler waits for it (the gap between two reads, like nginx's
    /// `client_body_timeout`, not a deadline for the whole body).
    pub body_read_timeout: Duration,
    /// Most request headers accepted (more → 431).
    pub max_headers: usize,
    /// Largest request head (request line + headers) in bytes (more → 431).
    pub max_header_bytes: usize,
    /// Serve HTTP/2 over cleartext (h2c, prior knowledge) next to HTTP/1.1.
    pub http2: bool,
    /// Most concurrently open client connections; more wait in the backlog.
    pub max_connections: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backlog: 4096,
            tcp_nodelay: true,
            reuse_port: false,
            keep_alive_timeout: Some(Duration::from_secs(75)),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            http2: true,
            max_connections: 25_000,
        }
    }
}
