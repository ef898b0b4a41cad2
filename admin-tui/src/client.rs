//! The admin API client: HTTP/1.1 (or HTTPS with rustls, trusting `--ca-file` or the bundled
//! web PKI roots) over hyper-util's pooled client, bearer-token auth, every failure classified
//! so the dashboard can say *why* it is disconnected.
//!
//! | failure                                  | [`ClientError`]               |
//! |------------------------------------------|-------------------------------|
//! | nothing listens on the port              | [`ClientError::Refused`]      |
//! | 401 from the server                      | [`ClientError::Unauthorized`] |
//! | connect, response or stream idle timeout | [`ClientError::Timeout`]      |
//! | other non-2xx (problem+json parsed)      | [`ClientError::Api`]          |
//! | unparsable body or event                 | [`ClientError::Protocol`]     |

use std::collections::VecDeque;
use std::error::Error as _;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
#[cfg(feature = "tls")]
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use palisade::control::model::Snapshot;
use palisade::control::{ComponentKind, FieldError};
use serde::Deserialize;
use serde_json::Value;

use crate::sse::{SseEvent, SseParser};
use crate::token::TokenSource;

/// Why a request to the admin API failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The `--url` is not a usable `http://` or `https://` URL.
    #[error("invalid admin URL `{url}`: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The token file could not be read.
    #[error("{0}")]
    Token(String),
    /// The `--ca-file` could not be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// Nothing accepts connections at the address (server down).
    #[error("connection refused")]
    Refused,
    /// The server refused the bearer token (or none was sent).
    #[error("401 unauthorized: {0}")]
    Unauthorized(String),
    /// Connecting, waiting for a response, or waiting on a silent stream took too long.
    #[error("timed out")]
    Timeout,
    /// The server answered with an error status.
    #[error("{0}")]
    Api(ApiProblem),
    /// The server answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Any other transport failure (reset, DNS, closed stream...).
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// A one-word class for the status line: `refused`, `401`, `timeout`, `http 500`...
    pub fn class(&self) -> String {
        match self {
            Self::InvalidUrl { .. } => "bad url".into(),
            Self::Token(_) => "token".into(),
            Self::CaFile { .. } => "ca file".into(),
            Self::Refused => "refused".into(),
            Self::Unauthorized(_) => "401".into(),
            Self::Timeout => "timeout".into(),
            Self::Api(p) => format!("http {}", p.status),
            Self::Protocol(_) => "protocol".into(),
            Self::Transport(_) => "network".into(),
        }
    }

    /// The status code when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized(_) => Some(401),
            Self::Api(p) => Some(p.status),
            _ => None,
        }
    }
}

/// A problem document (RFC 9457) as returned by the admin API, with its field errors.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ApiProblem {
    /// HTTP status.
    #[serde(default)]
    pub status: u16,
    /// Short summary.
    #[serde(default)]
    pub title: String,
    /// Explanation.
    #[serde(default)]
    pub detail: Option<String>,
    /// Per-field validation errors (400 on invalid settings).
    #[serde(default)]
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if !self.title.is_empty() {
            write!(f, " {}", self.title)?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        for e in &self.errors {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

impl ApiProblem {
    /// Builds the problem from a non-2xx response body, tolerating non-JSON bodies.
    pub fn from_body(status: StatusCode, body: &[u8]) -> Self {
        let mut p: ApiProblem = serde_json::from_slice(body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            ApiProblem {
                detail: (!text.is_empty()).then(|| crate::format::truncate(&text, 200)),
                ..ApiProblem::default()
            }
        });
        p.status = status.as_u16();
        if p.title.is_empty() {
            p.title = status.canonical_reason().unwrap_or("").to_owned();
        }
        p
    }
}

/// A change the dashboard asks the server to make.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// `PUT /admin/v1/{kind}/{name}` with a merge-patch and `If-Match: "<version>"`.
    UpdateSettings {
        /// Component kind.
        kind: ComponentKind,
        /// Component name.
        name: String,
        /// The settings version the patch was made against.
        version: u64,
        /// The JSON merge-patch.
        patch: Value,
    },
    /// `POST /admin/v1/{kind}/{name}/actions/{action}` with a JSON body of arguments.
    Action {
        /// Component kind.
        kind: ComponentKind,
        /// Component name.
        name: String,
        /// The action, e.g. `force_open` or `flush`.
        action: String,
        /// Arguments, e.g. `{"key": "..."}` (`{}` when none).
        args: Value,
    },
    /// `POST /admin/v1/workers/scale` `{"workers": n}`.
    ScaleWorkers {
        /// The new worker count.
        workers: u32,
    },
    /// `POST /admin/v1/workers/restart` (rolling restart).
    RestartWorkers,
    /// `POST /admin/v1/workers/{id}/drain`.
    DrainWorker {
        /// Worker slot id.
        id: u32,
    },
}

impl ApiRequest {
    /// The HTTP method.
    pub fn method(&self) -> Method {
        match self {
            Self::UpdateSettings { .. } => Method::PUT,
            _ => Method::POST,
        }
    }

    /// The path below the base URL.
    pub fn path(&self) -> String {
        match self {
            Self::UpdateSettings { kind, name, .. } => {
                format!("/admin/v1/{}/{}", kind.plural(), encode_segment(name))
            }
            Self::Action {
                kind, name, action, ..
            } => format!(
                "/admin/v1/{}/{}/actions/{}",
                kind.plural(),
                encode_segment(name),
                encode_segment(action)
            ),
            Self::ScaleWorkers { .. } => "/admin/v1/workers/scale".into(),
            Self::RestartWorkers => "/admin/v1/workers/restart".into(),
            Self::DrainWorker { id } => format!("/admin/v1/workers/{id}/drain"),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        match self {
            Self::UpdateSettings { patch, .. } => patch.clone(),
            Self::Action { args, .. } if !args.is_null() => args.clone(),
            Self::ScaleWorkers { workers } => serde_json::json!({ "workers": workers }),
            _ => serde_json::json!({}),
        }
    }

    /// The `If-Match` precondition, for settings updates.
    pub fn if_match(&self) -> Option<String> {
        match self {
            Self::UpdateSettings { version, .. } => Some(format!("\"{version}\"")),
            _ => None,
        }
    }

    /// A short description for notices, e.g. `PUT limits/api`.
    pub fn describe(&self) -> String {
        match self {
            Self::UpdateSettings { kind, name, .. } => format!("update {}/{name}", kind.plural()),
            Self::Action {
                kind, name, action, ..
            } => format!("{action} {}/{name}", kind.plural()),
            Self::ScaleWorkers { workers } => format!("scale to {workers} workers"),
            Self::RestartWorkers => "rolling restart".into(),
            Self::DrainWorker { id } => format!("drain worker {id}"),
        }
    }
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters pass through).
///
/// ```
/// assert_eq!(palisade_top::client::encode_segment("api v2/x"), "api%20v2%2Fx");
/// ```
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Client timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From sending a request to the end of a (non-stream) response body.
    pub request: Duration,
    /// Longest silence on the event stream (events *and* keep-alive comments count).
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(5),
            stream_idle: Duration::from_secs(20),
        }
    }
}

/// The admin API client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct AdminClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    token: TokenSource,
    timeouts: Timeouts,
    http: Client<Connector, Full<Bytes>>,
}

/// The connector: HTTP and HTTPS with the `tls` feature, plain HTTP without.
#[cfg(feature = "tls")]
type Connector = HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.inner.base)
            .field("token", &self.inner.token)
            .field("timeouts", &self.inner.timeouts)
            .finish()
    }
}

/// Normalizes `--url`: adds `http://` when no scheme is given, accepts `http` and `https`,
/// drops a trailing `/`.
///
/// ```
/// use palisade_top::client::normalize_base_url;
/// assert_eq!(normalize_base_url("127.0.0.1:9901").unwrap(), "http://127.0.0.1:9901");
/// assert_eq!(normalize_base_url("http://h:1/p/").unwrap(), "http://h:1/p");
/// assert_eq!(normalize_base_url("https://h:9901").unwrap(), "https://h:9901");
/// assert!(normalize_base_url("ftp://h").is_err());
/// ```
pub fn normalize_base_url(url: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("only http:// and https:// URLs are supported")),
    }
    if uri.authority().is_none() {
        return Err(invalid("no host"));
    }
    if uri.query().is_some() {
        return Err(invalid("a query string is not allowed"));
    }
    Ok(with_scheme)
}

impl AdminClient {
    /// A client for the admin API at `url` (e.g. `http://127.0.0.1:9901`); an `https://` URL
    /// trusts the bundled web PKI roots (see [`with_ca_file`](Self::with_ca_file)).
    pub fn new(url: &str, token: TokenSource, timeouts: Timeouts) -> Result<Self, ClientError> {
        Self::with_ca_file(url, token, timeouts, None)
    }

    /// A client for the admin API at `url`; for an `https://` URL the server certificate must
    /// chain to a CA in the PEM file `ca_file` (`--ca-file`), or, without one, to the bundled
    /// web PKI roots.
    pub fn with_ca_file(
        url: &str,
        token: TokenSource,
        timeouts: Timeouts,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let base = normalize_base_url(url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        #[cfg(feature = "tls")]
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca_file)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        #[cfg(not(feature = "tls"))]
        {
            if base.starts_with("https://") {
                return Err(ClientError::InvalidUrl {
                    url: base,
                    reason: "this palisade-top was built without the `tls` feature".into(),
                });
            }
            if let Some(path) = ca_file {
                return Err(ClientError::CaFile {
                    path: path.display().to_string(),
                    reason: "this palisade-top was built without the `tls` feature".into(),
                });
            }
        }
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                token,
                timeouts,
                http,
            }),
        })
    }

    /// The base URL, normalized.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Where the token comes from.
    pub fn token_source(&self) -> &TokenSource {
        &self.inner.token
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        accept: &'static str,
        body: Option<&Value>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.inner.base))
            .header(header::ACCEPT, accept)
            .header(
                header::USER_AGENT,
                concat!("palisade-top/", env!("CARGO_PKG_VERSION")),
            );
        let token = self
            .inner
            .token
            .load()
            .map_err(|e| ClientError::Token(e.to_string()))?;
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Token("the token contains invalid characters".into()))?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        builder.body(body).map_err(|e| ClientError::InvalidUrl {
            url: format!("{}{path}", self.inner.base),
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        match tokio::time::timeout(self.inner.timeouts.request, self.inner.http.request(req)).await
        {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(res)) => Ok(res),
        }
    }

    async fn read_body(
        &self,
        res: http::Response<Incoming>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let status = res.status();
        match tokio::time::timeout(self.inner.timeouts.request, res.into_body().collect()).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(e)) => Err(ClientError::Transport(error_chain(&e))),
            Ok(Ok(body)) => Ok((status, body.to_bytes())),
        }
    }

    /// `GET /admin/v1/snapshot`.
    pub async fn snapshot(&self) -> Result<Snapshot, ClientError> {
        let req = self.request(Method::GET, "/admin/v1/snapshot", "application/json", None)?;
        let res = self.send(req).await?;
        let (status, body) = self.read_body(res).await?;
        check_status(status, &body)?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("invalid snapshot JSON: {e}")))
    }

    /// `GET /admin/v1/fleet/snapshot`: every node of the server's fleet, fleet-wide traffic.
    pub async fn fleet_snapshot(
        &self,
    ) -> Result<palisade::admin::fleet::FleetSnapshot, ClientError> {
        let req = self.request(
            Method::GET,
            "/admin/v1/fleet/snapshot",
            "application/json",
            None,
        )?;
        let res = self.send(req).await?;
        let (status, body) = self.read_body(res).await?;
        check_status(status, &body)?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("invalid fleet snapshot JSON: {e}")))
    }

    /// Opens `GET /admin/v1/stream`, resuming after `last_event_id` when given.
    ///
    /// Fails with [`ClientError::Api`] and status 404, 405, 406 or 501 — or a
    /// [`ClientError::Protocol`] for a wrong content type — when the server has no event
    /// stream; see [`is_stream_unsupported`].
    pub async fn stream(&self, last_event_id: Option<u64>) -> Result<SnapshotStream, ClientError> {
        let mut req = self.request(Method::GET, "/admin/v1/stream", "text/event-stream", None)?;
        if let Some(id) = last_event_id {
            req.headers_mut()
                .insert("last-event-id", HeaderValue::from(id));
        }
        let res = self.send(req).await?;
        if !res.status().is_success() {
            let (status, body) = self.read_body(res).await?;
            check_status(status, &body)?;
            return Err(ClientError::Protocol(format!("unexpected status {status}")));
        }
        let is_sse = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_sse {
            return Err(ClientError::Protocol(NOT_AN_EVENT_STREAM.into()));
        }
        Ok(SnapshotStream {
            body: res.into_body(),
            parser: SseParser::new(),
            queue: VecDeque::new(),
            idle: self.inner.timeouts.stream_idle,
        })
    }

    /// Performs a change; returns the server's JSON answer (`null` for an empty body).
    pub async fn execute(&self, request: &ApiRequest) -> Result<Value, ClientError> {
        let body = request.body();
        let mut req = self.request(
            request.method(),
            &request.path(),
            "application/json",
            Some(&body),
        )?;
        if let Some(tag) = request.if_match() {
            let v =
                HeaderValue::from_str(&tag).map_err(|e| ClientError::Protocol(e.to_string()))?;
            req.headers_mut().insert(header::IF_MATCH, v);
        }
        let res = self.send(req).await?;
        let (status, body) = self.read_body(res).await?;
        check_status(status, &body)?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())))
    }
}

const NOT_AN_EVENT_STREAM: &str = "the stream endpoint did not answer with text/event-stream";

/// Whether an error from [`AdminClient::stream`] means "this server has no event stream, poll
/// the snapshot instead" rather than "the server is unreachable".
pub fn is_stream_unsupported(e: &ClientError) -> bool {
    match e {
        ClientError::Api(p) => matches!(p.status, 404 | 405 | 406 | 501),
        ClientError::Protocol(m) => m == NOT_AN_EVENT_STREAM,
        _ => false,
    }
}

fn check_status(status: StatusCode, body: &[u8]) -> Result<(), ClientError> {
    if status.is_success() {
        return Ok(());
    }
    let problem = ApiProblem::from_body(status, body);
    if status == StatusCode::UNAUTHORIZED {
        let why = problem
            .detail
            .unwrap_or_else(|| "the admin token was missing or refused".into());
        return Err(ClientError::Unauthorized(why));
    }
    Err(ClientError::Api(problem))
}

/// The rustls client configuration (ring provider): roots from `ca_file`, or the web PKI roots.
#[cfg(feature = "tls")]
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let refused = |reason: String| ClientError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| refused(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refused(e.to_string()))?;
            if certs.is_empty() {
                return Err(refused("no PEM certificate in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| refused(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ring, like the server (deprecated in rustls 0.23.48 for lacking post-quantum key
    // exchange; kept for its small build).
    #[allow(deprecated, reason = "ring provider, as the server uses")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Transport(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Maps a hyper-util client error to a [`ClientError`] by walking its sources.
fn classify(e: &hyper_util::client::legacy::Error) -> ClientError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return ClientError::Refused,
                std::io::ErrorKind::TimedOut => return ClientError::Timeout,
                _ => {}
            }
        }
        source = s.source();
    }
    ClientError::Transport(error_chain(e))
}

/// `outer: inner: innermost`, without repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// An open `/admin/v1/stream`: yields snapshots as events arrive.
pub struct SnapshotStream {
    body: Incoming,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
    idle: Duration,
}

impl fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotStream")
            .field("parser", &self.parser)
            .field("queued", &self.queue.len())
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl SnapshotStream {
    /// The next snapshot; `Ok(None)` when the server ended the stream. Events of types other
    /// than the default (`message`) and `snapshot` are skipped. Silence (not even a keep-alive
    /// comment) longer than the idle timeout is a [`ClientError::Timeout`].
    pub async fn next_snapshot(&mut self) -> Result<Option<Snapshot>, ClientError> {
        loop {
            while let Some(ev) = self.queue.pop_front() {
                if matches!(ev.event.as_deref(), None | Some("snapshot" | "message")) {
                    return serde_json::from_str(&ev.data).map(Some).map_err(|e| {
                        ClientError::Protocol(format!("invalid snapshot event: {e}"))
                    });
                }
            }
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(ClientError::Transport(error_chain(&e))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                let events = self
                    .parser
                    .push(&data)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                self.queue.extend(events);
            }
        }
    }

    /// The last event id received.
    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_map_to_the_documented_endpoints() {
        let put = ApiRequest::UpdateSettings {
            kind: ComponentKind::Limit,
            name: "api".into(),
            version: 3,
            patch: json!({"burst": 5}),
        };
        assert_eq!(
            (put.method(), put.path()),
            (Method::PUT, "/admin/v1/limits/api".into())
        );
        assert_eq!(put.if_match().as_deref(), Some("\"3\""));
        assert_eq!(put.body(), json!({"burst": 5}));
        let act = ApiRequest::Action {
            kind: ComponentKind::Breaker,
            name: "up stream".into(),
            action: "force_open".into(),
            args: Value::Null,
        };
        assert_eq!(
            act.path(),
            "/admin/v1/breakers/up%20stream/actions/force_open"
        );
        assert_eq!(act.body(), json!({}));
        assert_eq!(act.if_match(), None);
        assert_eq!(
            ApiRequest::ScaleWorkers { workers: 3 }.body(),
            json!({"workers": 3})
        );
        assert_eq!(
            ApiRequest::RestartWorkers.path(),
            "/admin/v1/workers/restart"
        );
        assert_eq!(
            ApiRequest::DrainWorker { id: 2 }.path(),
            "/admin/v1/workers/2/drain"
        );
    }

    #[test]
    fn problem_bodies_are_parsed_with_field_errors() {
        let body = br#"{"type":"about:blank","title":"Bad Request","status":400,
            "detail":"invalid settings","errors":[{"field":"burst","reason":"must be at least 1"}]}"#;
        let p = ApiProblem::from_body(StatusCode::BAD_REQUEST, body);
        assert_eq!(
            p.errors,
            vec![FieldError::new("burst", "must be at least 1")]
        );
        assert_eq!(
            p.to_string(),
            "400 Bad Request: invalid settings; burst: must be at least 1"
        );
        let p = ApiProblem::from_body(StatusCode::BAD_GATEWAY, b"upstream says no");
        assert_eq!(p.to_string(), "502 Bad Gateway: upstream says no");
    }

    #[test]
    fn status_401_is_unauthorized_and_others_are_api_errors() {
        assert!(matches!(
            check_status(StatusCode::UNAUTHORIZED, b""),
            Err(ClientError::Unauthorized(_))
        ));
        let e = check_status(StatusCode::PRECONDITION_FAILED, b"{}").unwrap_err();
        assert_eq!(e.status(), Some(412));
        assert!(!is_stream_unsupported(&e));
        let e = check_status(StatusCode::NOT_FOUND, b"").unwrap_err();
        assert!(is_stream_unsupported(&e));
    }
}
