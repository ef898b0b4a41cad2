//! Request ids (`x-request-id`) and W3C trace context (`traceparent` / `tracestate`).
//!
//! [`RequestContextLayer`] runs first on every request:
//!
//! - an incoming `x-request-id` is kept when it is 1 to `max_len` bytes of `[A-Za-z0-9._:-]`;
//!   anything else (too long, spaces, quotes, non-ASCII, several values) is replaced by a fresh id
//!   (32 lowercase hex digits from a random 128-bit number). The id is written back into the
//!   request headers, stored as a [`RequestId`] extension and echoed on the response.
//! - a valid `traceparent` is continued: the trace id is kept, the caller's span id becomes our
//!   parent, and a new span id is drawn for this hop. An invalid or missing one starts a new trace.
//!   The request's `traceparent` header is rewritten to name *our* span, so a handler that forwards
//!   headers downstream propagates the trace correctly; `tracestate` is kept only with a valid
//!   `traceparent`. The context is stored as a [`TraceContext`] extension and, unless disabled,
//!   echoed as `traceparent` on the response so a client can find the trace.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// `x-request-id`, the default request id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent` (W3C Trace Context).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C Trace Context).
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` (all header values joined) that is propagated; longer ones are
/// dropped, which the W3C specification allows.
pub const MAX_TRACESTATE_LEN: usize = 4096;

/// The largest accepted [`RequestContextConfig::max_len`].
pub const MAX_REQUEST_ID_LEN: usize = 1024;

// === RequestId ===

/// The id of one request, as accepted from the client or generated.
///
/// Available as a request extension after [`RequestContextLayer`] (or the
/// [`ObserveLayer`](super::ObserveLayer)) ran:
///
/// ```
/// use palisade::observe::RequestId;
/// # let req = http::Request::new(());
/// if let Some(id) = req.extensions().get::<RequestId>() {
///     tracing::info!(request_id = %id, "handling");
/// }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh id: 32 lowercase hex digits of a random 128-bit number.
    pub fn generate() -> Self {
        let mut buf = [0u8; 32];
        hex_into(&fastrand::u128(..).to_be_bytes(), &mut buf);
        Self(hex_header(buf))
    }

    /// Accepts `value` when it is 1 to `max_len` bytes of `[A-Za-z0-9._:-]`.
    pub fn parse(value: &HeaderValue, max_len: usize) -> Option<Self> {
        is_valid_request_id(value.as_bytes(), max_len).then(|| Self(value.clone()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ids made of the safe charset are ever constructed.
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

/// Whether `id` is 1 to `max_len` bytes of `[A-Za-z0-9._:-]`.
pub fn is_valid_request_id(id: &[u8], max_len: usize) -> bool {
    !id.is_empty()
        && id.len() <= max_len
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

// === Trace ids ===

/// A W3C trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// A random, non-zero trace id.
    pub fn generate() -> Self {
        loop {
            let v = fastrand::u128(..);
            if v != 0 {
                return Self(v.to_be_bytes());
            }
        }
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex_into(&self.0, &mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// A W3C span (parent) id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl SpanId {
    /// A random, non-zero span id.
    pub fn generate() -> Self {
        Self(fastrand::u64(1..).to_be_bytes())
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 16];
        hex_into(&self.0, &mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A parsed `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The format version (`00` today; later versions are read as `00`).
    pub version: u8,
    /// The trace id.
    pub trace_id: TraceId,
    /// The caller's span id.
    pub parent_id: SpanId,
    /// Trace flags (`0x01` = sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value following W3C Trace Context: lowercase hex only, version
    /// `ff` and all-zero ids refused, version `00` exactly 55 bytes, later versions 55 bytes or
    /// more with a `-` after the flags (extra fields ignored).
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < 55 {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff {
            return None;
        }
        if version == 0 && value.len() != 55 {
            return None;
        }
        if value.len() > 55 && value[55] != b'-' {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace = [0u8; 16];
        for (i, out) in trace.iter_mut().enumerate() {
            *out = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent = [0u8; 8];
        for (i, out) in parent.iter_mut().enumerate() {
            *out = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace == [0; 16] || parent == [0; 8] {
            return None;
        }
        Some(Self {
            version,
            trace_id: TraceId(trace),
            parent_id: SpanId(parent),
            flags,
        })
    }
}

/// The W3C trace context of one request, for this hop.
///
/// Available as a request extension after [`RequestContextLayer`] (or the
/// [`ObserveLayer`](super::ObserveLayer)) ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id: the caller's, or a new one when this request started the trace.
    pub trace_id: TraceId,
    /// Our span id for this hop (a new one per request).
    pub span_id: SpanId,
    /// The caller's span id; `None` when this request started the trace.
    pub parent_id: Option<SpanId>,
    /// Trace flags (`0x01` = sampled): the caller's; for a new trace `01` when the trace is
    /// sampled under an OpenTelemetry exporter's ratio (feature `otel`), else `00`.
    pub flags: u8,
    /// The caller's `tracestate`, kept only with a valid `traceparent`.
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// A new trace started here; sampled (flags `01`) when an OpenTelemetry exporter's ratio
    /// picks its trace id.
    pub fn new_root() -> Self {
        let trace_id = TraceId::generate();
        Self {
            trace_id,
            span_id: SpanId::generate(),
            parent_id: None,
            flags: u8::from(root_sampled(trace_id)),
            tracestate: None,
        }
    }

    /// Continues the trace named by `headers` (a valid `traceparent`), or starts a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let parent = match (values.next(), values.next()) {
            (Some(v), None) => TraceParent::parse(v.as_bytes()),
            // Several traceparent headers are invalid.
            _ => None,
        };
        let Some(parent) = parent else {
            return Self::new_root();
        };
        Self {
            trace_id: parent.trace_id,
            span_id: SpanId::generate(),
            parent_id: Some(parent.parent_id),
            flags: parent.flags,
            tracestate: join_tracestate(headers),
        }
    }

    /// Whether the caller sent a valid `traceparent` that this context continues.
    pub fn is_continued(&self) -> bool {
        self.parent_id.is_some()
    }

    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// The `traceparent` naming this hop (`00-<trace id>-<our span id>-<flags>`), for the
    /// response and for requests sent downstream.
    pub fn traceparent(&self) -> HeaderValue {
        let mut buf = [0u8; 55];
        self.write_traceparent(&mut buf);
        hex_header(buf)
    }

    fn write_traceparent(&self, buf: &mut [u8; 55]) {
        buf[0] = b'0';
        buf[1] = b'0';
        buf[2] = b'-';
        hex_into(&self.trace_id.0, &mut buf[3..35]);
        buf[35] = b'-';
        hex_into(&self.span_id.0, &mut buf[36..52]);
        buf[52] = b'-';
        hex_into(&[self.flags], &mut buf[53..55]);
    }
}

fn join_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(&TRACESTATE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return (first.len() <= MAX_TRACESTATE_LEN).then(|| first.clone());
    };
    // Several tracestate headers are one list (RFC 9110 field combination).
    let mut joined = Vec::with_capacity(first.len() + second.len() + 1);
    joined.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
        if joined.len() > MAX_TRACESTATE_LEN {
            return None;
        }
    }
    HeaderValue::from_bytes(&joined).ok()
}

// === root sampling ===

/// The sampling ratio for new traces as `f64` bits; `u64::MAX` (a NaN) when none is set.
static ROOT_SAMPLING: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets (or clears) the ratio of new traces marked sampled; an OpenTelemetry exporter sets its
/// own, so the flags Palisade propagates match what it exports.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) fn set_root_sampling(ratio: Option<f64>) {
    let bits = ratio.map_or(u64::MAX, f64::to_bits);
    ROOT_SAMPLING.store(bits, Ordering::Relaxed);
}

/// Whether a new trace with `trace_id` is sampled: the OpenTelemetry SDK's trace-id ratio rule
/// (the low 63 bits of the id's last eight bytes against `ratio × 2^63`), so both sides agree.
fn root_sampled(trace_id: TraceId) -> bool {
    let bits = ROOT_SAMPLING.load(Ordering::Relaxed);
    if bits == u64::MAX {
        return false;
    }
    ratio_samples(f64::from_bits(bits), trace_id)
}

pub(crate) fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    // Truncation is the rule being matched.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id.0[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

// === hex helpers ===

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(hex_nibble(two[0])? << 4 | hex_nibble(two[1])?)
}

#[allow(
    clippy::expect_used,
    reason = "lowercase hex digits and '-' are valid header bytes"
)]
fn hex_header<const N: usize>(bytes: [u8; N]) -> HeaderValue {
    // One allocation holding the digits; the copies this value gets (request header, extension,
    // response echo) share it. `HeaderValue::from_bytes` would copy into a vector-backed `Bytes`
    // that allocates again on its first clone.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(bytes))
        .expect("hex is a valid header value")
}

// === config ===

/// Settings of [`RequestContextLayer`]; see the [module docs](self).
///
/// ```
/// use palisade::observe::RequestContextConfig;
/// let config = RequestContextConfig::builder().max_len(64).build().unwrap();
/// assert_eq!(config.max_len(), 64);
/// assert!(RequestContextConfig::builder().max_len(0).build().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct RequestContextConfig {
    header: HeaderName,
    max_len: usize,
    accept_incoming: bool,
    trace_context: bool,
    echo_traceparent: bool,
}

impl Default for RequestContextConfig {
    fn default() -> Self {
        Self {
            header: X_REQUEST_ID.clone(),
            max_len: 128,
            accept_incoming: true,
            trace_context: true,
            echo_traceparent: true,
        }
    }
}

impl RequestContextConfig {
    /// A builder starting from the defaults: `x-request-id`, at most 128 bytes, incoming ids
    /// accepted, trace context on and echoed.
    pub fn builder() -> RequestContextConfigBuilder {
        RequestContextConfigBuilder {
            config: Self::default(),
        }
    }

    /// The request id header.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The longest incoming request id kept.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

/// Builds a validated [`RequestContextConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestContextConfigBuilder {
    config: RequestContextConfig,
}

impl RequestContextConfigBuilder {
    /// The request id header (default `x-request-id`).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.config.header = header;
        self
    }

    /// The longest incoming id kept (default 128, at most [`MAX_REQUEST_ID_LEN`]).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.config.max_len = max_len;
        self
    }

    /// Whether valid incoming ids are kept (default `true`). Edge servers facing untrusted
    /// clients may prefer to always generate their own.
    pub fn accept_incoming(mut self, accept: bool) -> Self {
        self.config.accept_incoming = accept;
        self
    }

    /// Whether W3C trace context is parsed and propagated (default `true`).
    pub fn trace_context(mut self, enabled: bool) -> Self {
        self.config.trace_context = enabled;
        self
    }

    /// Whether the response carries our `traceparent` (default `true`).
    pub fn echo_traceparent(mut self, enabled: bool) -> Self {
        self.config.echo_traceparent = enabled;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RequestContextConfig, super::ConfigError> {
        let max_len = self.config.max_len;
        if max_len == 0 || max_len > MAX_REQUEST_ID_LEN {
            return Err(super::ConfigError::RequestIdMaxLen(max_len));
        }
        Ok(self.config)
    }
}

// === the per-request work, shared with ObserveLayer ===

/// What to echo on the response.
#[derive(Debug)]
pub(crate) struct Echo {
    header: HeaderName,
    request_id: HeaderValue,
    traceparent: Option<HeaderValue>,
}

impl Echo {
    /// The request id echoed on the response.
    pub(crate) fn request_id_value(&self) -> &HeaderValue {
        &self.request_id
    }

    pub(crate) fn request_id(&self) -> &str {
        // Validated visible ASCII when it was accepted or generated.
        self.request_id.to_str().unwrap_or_default()
    }

    pub(crate) fn apply<B>(self, res: &mut Response<B>) {
        let headers = res.headers_mut();
        // One lookup: a request id the service set itself is kept.
        headers.entry(self.header).or_insert(self.request_id);
        if let Some(tp) = self.traceparent {
            headers.insert(TRACEPARENT.clone(), tp);
        }
    }
}

/// Validates or generates the request id and the trace context, rewrites the request headers,
/// stores both extensions and returns what the response should echo.
pub(crate) fn prepare<B>(config: &RequestContextConfig, req: &mut Request<B>) -> Echo {
    let incoming = if config.accept_incoming {
        let mut values = req.headers().get_all(&config.header).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => RequestId::parse(v, config.max_len),
            _ => None,
        }
    } else {
        None
    };
    let ctx = config
        .trace_context
        .then(|| TraceContext::from_headers(req.headers()));
    let (generated, ours) = format_ids(incoming.is_none(), ctx.as_ref());
    let id = match (incoming, generated) {
        (Some(id), _) => id,
        (None, generated) => {
            let id = generated.unwrap_or_else(RequestId::generate);
            req.headers_mut()
                .insert(config.header.clone(), id.header_value().clone());
            id
        }
    };
    let request_id = id.header_value().clone();
    req.extensions_mut().insert(id);

    let mut traceparent = None;
    if let (Some(ctx), Some(ours)) = (ctx, ours) {
        let headers = req.headers_mut();
        headers.insert(TRACEPARENT.clone(), ours.clone());
        match &ctx.tracestate {
            Some(ts) => {
                headers.insert(TRACESTATE.clone(), ts.clone());
            }
            None => {
                headers.remove(&TRACESTATE);
            }
        }
        if config.echo_traceparent {
            traceparent = Some(ours);
        }
        req.extensions_mut().insert(ctx);
    }
    Echo {
        header: config.header.clone(),
        request_id,
        traceparent,
    }
}

/// A new request id (when `new_id`) and our `traceparent` (for `ctx`), formatted into one
/// shared allocation: both values travel to the request headers, the extensions and the
/// response, and each clone only bumps the allocation's count.
fn format_ids(
    new_id: bool,
    ctx: Option<&TraceContext>,
) -> (Option<RequestId>, Option<HeaderValue>) {
    const ID: usize = 32;
    const TP: usize = 55;
    if !new_id {
        return (None, ctx.map(TraceContext::traceparent));
    }
    let mut buf = [0u8; ID + TP];
    hex_into(&fastrand::u128(..).to_be_bytes(), &mut buf[..ID]);
    if let Some(ctx) = ctx {
        let mut tp = [0u8; TP];
        ctx.write_traceparent(&mut tp);
        buf[ID..].copy_from_slice(&tp);
    }
    let shared = bytes::Bytes::from_owner(buf);
    let value =
        |range: std::ops::Range<usize>| HeaderValue::from_maybe_shared(shared.slice(range)).ok();
    let id = value(0..ID).map(RequestId);
    let ours = ctx.and_then(|_| value(ID..ID + TP));
    (id, ours)
}

// === layer, service, future ===

/// Accepts or generates request ids and continues W3C traces; see the [module docs](self).
///
/// ```
/// use palisade::observe::{RequestContextLayer, RequestId};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio_test_block_on(async {
/// let svc = ServiceBuilder::new()
///     .layer(RequestContextLayer::default())
///     .service_fn(|req: http::Request<()>| async move {
///         let id = req.extensions().get::<RequestId>().unwrap().to_string();
///         Ok::<_, std::convert::Infallible>(http::Response::new(id))
///     });
/// let req = http::Request::builder().header("x-request-id", "abc-123").body(()).unwrap();
/// let res = svc.oneshot(req).await.unwrap();
/// assert_eq!(res.headers()["x-request-id"], "abc-123");
/// assert_eq!(res.body(), "abc-123");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequestContextLayer {
    config: std::sync::Arc<RequestContextConfig>,
}

impl RequestContextLayer {
    /// A layer with validated settings.
    pub fn new(config: RequestContextConfig) -> Self {
        Self {
            config: std::sync::Arc::new(config),
        }
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service built by [`RequestContextLayer`].
#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
    config: std::sync::Arc<RequestContextConfig>,
}

impl<S> RequestContext<S> {
    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestContext<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let echo = prepare(&self.config, &mut req);
        ResponseFuture {
            inner: self.inner.call(req),
            echo: Some(echo),
        }
    }
}

pin_project! {
    /// The response future of [`RequestContext`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        echo: Option<Echo>,
    }
}

impl<F, B, E> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        if let Some(echo) = this.echo.take() {
            echo.apply(&mut res);
        }
        Poll::Ready(Ok(res))
    }
}
