//! A small async HTTP/1.1 client for tests (hyper, keep-alive pooled), plus raw-socket helpers
//! for malformed input.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A collected response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled HTTP/1.1 client with a per-request timeout.
#[derive(Debug, Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with a 10 s request timeout.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(10),
        }
    }

    /// A client that never reuses connections (each request on a new one).
    pub fn without_keep_alive() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            inner: HyperClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            timeout: Duration::from_secs(10),
        }
    }

    /// Changes the per-request timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends a request; `Err` carries a transport error or a timeout as text.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response, String> {
        let fut = async {
            let res = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("{e:?}"))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Response, String> {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    /// A request with headers and a body.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, String> {
        let mut builder = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    /// A request with a JSON body.
    pub async fn json(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<Response, String> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request(
            method,
            url,
            &all,
            serde_json::to_vec(body).unwrap_or_default(),
        )
        .await
    }
}

/// Writes `raw` bytes to `addr` and reads until the peer closes or `timeout` passes; returns
/// what was read.
pub async fn raw_exchange(addr: std::net::SocketAddr, raw: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the server under test");
    let _ = stream.write_all(raw).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    out
}

/// The status code of the first response in a raw HTTP/1.1 exchange, if any.
pub fn raw_status(raw: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(raw.get(..raw.len().min(64))?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}
