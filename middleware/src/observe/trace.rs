//! The per-request span, its completion event, a tower-http [`TraceLayer`] built from the same
//! pieces, and [`init_tracing`] for binaries.
//!
//! The span is named `http_request` and carries `http.request.method` (known methods or
//! `_OTHER`), `http.route` (the route *template*; `unmatched` when no route matched; never the raw
//! path), `request_id`, `trace_id` and `span_id`. The completion event (`request completed`, or
//! `request failed` for service errors) is emitted inside the span with
//! `http.response.status_code` and `latency_ms`, at a configurable level ([`TraceConfig`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::MatchedPath;
use http::{Request, Response};
use serde::{Deserialize, Serialize};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{MakeSpan, OnFailure, OnResponse, TraceLayer};
use tracing::{Level, Span};

use super::config::TraceConfig;
use super::context::{RequestId, TraceContext};
use super::metrics::method_label_of;
use super::route::MatchedRoute;

macro_rules! dyn_span {
    ($lvl:expr, $($tt:tt)*) => {
        match $lvl {
            Level::ERROR => tracing::span!(Level::ERROR, $($tt)*),
            Level::WARN => tracing::span!(Level::WARN, $($tt)*),
            Level::INFO => tracing::span!(Level::INFO, $($tt)*),
            Level::DEBUG => tracing::span!(Level::DEBUG, $($tt)*),
            _ => tracing::span!(Level::TRACE, $($tt)*),
        }
    };
}

macro_rules! dyn_event {
    ($lvl:expr, $($tt:tt)*) => {
        match $lvl {
            Level::ERROR => tracing::event!(Level::ERROR, $($tt)*),
            Level::WARN => tracing::event!(Level::WARN, $($tt)*),
            Level::INFO => tracing::event!(Level::INFO, $($tt)*),
            Level::DEBUG => tracing::event!(Level::DEBUG, $($tt)*),
            _ => tracing::event!(Level::TRACE, $($tt)*),
        }
    };
}

/// Builds the `http_request` span; `route` is recorded when already known.
///
/// Every known value goes in at creation: recording later is much slower with formatting
/// subscribers (the JSON one re-parses the span's fields on every `record`).
pub(crate) fn make_span<B>(config: &TraceConfig, req: &Request<B>, route: Option<&str>) -> Span {
    let request_id = req.extensions().get::<RequestId>().map(RequestId::as_str);
    let ctx = req.extensions().get::<TraceContext>();
    let trace_id = ctx.map(|c| tracing::field::display(c.trace_id));
    let span_id = ctx.map(|c| tracing::field::display(c.span_id));
    dyn_span!(
        config.span_level,
        "http_request",
        http.request.method = method_label_of(req.method()),
        http.route = route,
        request_id,
        trace_id,
        span_id,
        http.response.status_code = tracing::field::Empty,
        otel.kind = "server",
    )
}

/// What the completion event carries itself when the `http_request` span is disabled (its level
/// is filtered out), so that a 5xx logged at `WARN` still names its route and request id.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EventContext<'a> {
    pub(crate) method: Option<&'a str>,
    pub(crate) route: Option<&'a str>,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) trace_id: Option<super::context::TraceId>,
}

/// Emits the completion event inside `span`.
pub(crate) fn log_response(
    config: &TraceConfig,
    span: &Span,
    ctx: EventContext<'_>,
    status: u16,
    latency: Duration,
) {
    let level = if status >= 500 {
        config.server_error_level
    } else {
        config.completion_level
    };
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if span.is_disabled() {
        dyn_event!(
            level,
            http.request.method = ctx.method,
            http.route = ctx.route,
            request_id = ctx.request_id,
            trace_id = ctx.trace_id.map(tracing::field::display),
            http.response.status_code = status,
            latency_ms,
            "request completed"
        );
        return;
    }
    span.record("http.response.status_code", status);
    let _entered = span.enter();
    dyn_event!(
        level,
        http.response.status_code = status,
        latency_ms,
        "request completed"
    );
}

/// Emits the failure event (the service returned an error instead of a response) inside `span`.
pub(crate) fn log_failure(
    config: &TraceConfig,
    span: &Span,
    ctx: EventContext<'_>,
    error: &dyn fmt::Display,
    latency: Duration,
) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if span.is_disabled() {
        dyn_event!(
            config.server_error_level,
            http.request.method = ctx.method,
            http.route = ctx.route,
            request_id = ctx.request_id,
            trace_id = ctx.trace_id.map(tracing::field::display),
            error = %error,
            latency_ms,
            "request failed"
        );
        return;
    }
    let _entered = span.enter();
    dyn_event!(
        config.server_error_level,
        error = %error,
        latency_ms,
        "request failed"
    );
}

// === tower-http TraceLayer pieces ===

/// The tower-http [`TraceLayer`] with Palisade's span and events; see [`trace_layer`].
pub type HttpTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    MakeRequestSpan,
    (),
    OnRequestEnd,
    (),
    (),
    OnRequestFailure,
>;

/// A tower-http [`TraceLayer`] producing the same span and completion event as
/// [`ObserveLayer`](super::ObserveLayer), for stacks that want tracing without metrics.
///
/// The route template is read from axum's [`MatchedPath`] in the request (the layer added with
/// `Router::layer`), or from the response extensions when a [`RouteLayer`](super::RouteLayer)
/// runs inside the router. Unlike `ObserveLayer`, a request that matched no route simply has no
/// `http.route` field. Put a [`RequestContextLayer`](super::RequestContextLayer) outside it to get
/// request and trace ids on the span.
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade::observe::{RequestContextLayer, TraceConfig, trace_layer};
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "ok" }))
///     .layer(trace_layer(TraceConfig::default()))
///     .layer(RequestContextLayer::default());
/// ```
pub fn trace_layer(config: TraceConfig) -> HttpTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(MakeRequestSpan { config })
        .on_request(())
        .on_response(OnRequestEnd { config })
        .on_body_chunk(())
        .on_eos(())
        .on_failure(OnRequestFailure { config })
}

/// [`MakeSpan`] for [`trace_layer`].
#[derive(Debug, Clone, Copy)]
pub struct MakeRequestSpan {
    config: TraceConfig,
}

impl<B> MakeSpan<B> for MakeRequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        make_span(&self.config, request, route)
    }
}

/// [`OnResponse`] for [`trace_layer`].
#[derive(Debug, Clone, Copy)]
pub struct OnRequestEnd {
    config: TraceConfig,
}

impl<B> OnResponse<B> for OnRequestEnd {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &Span) {
        let ext = response.extensions();
        let route = ext
            .get::<MatchedRoute>()
            .map(MatchedRoute::as_str)
            .or_else(|| ext.get::<MatchedPath>().map(MatchedPath::as_str));
        if let Some(route) = route {
            span.record("http.route", route);
        }
        let ctx = EventContext {
            route,
            ..EventContext::default()
        };
        log_response(&self.config, span, ctx, response.status().as_u16(), latency);
    }
}

/// [`OnFailure`] for [`trace_layer`]: logs service errors (5xx responses are logged by
/// [`OnRequestEnd`] already).
#[derive(Debug, Clone, Copy)]
pub struct OnRequestFailure {
    config: TraceConfig,
}

impl OnFailure<ServerErrorsFailureClass> for OnRequestFailure {
    fn on_failure(&mut self, class: ServerErrorsFailureClass, latency: Duration, span: &Span) {
        if let ServerErrorsFailureClass::Error(error) = class {
            log_failure(&self.config, span, EventContext::default(), &error, latency);
        }
    }
}

// === init_tracing ===

/// Log output format for [`init_tracing`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Newline-delimited JSON: event fields at the top level, the current span's fields under
    /// `span` (for log shippers).
    Json,
    /// Multi-line, human-friendly output (for development).
    #[default]
    Pretty,
    /// One line per event (for terminals and plain log files).
    Compact,
}

impl FromStr for LogFormat {
    type Err = InitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            "compact" => Ok(Self::Compact),
            other => Err(InitError::Format(other.to_owned())),
        }
    }
}

/// [`init_tracing`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The filter directive does not parse.
    #[error("log filter `{filter}` is invalid: {reason}")]
    Filter {
        /// The directive given.
        filter: String,
        /// Why it was refused.
        reason: String,
    },
    /// Unknown format name.
    #[error("log format must be `json`, `pretty` or `compact` (got `{0}`)")]
    Format(String),
    /// A global subscriber was already installed.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Installs a global `tracing` subscriber writing to stderr in `format`, filtered by `filter`
/// (`EnvFilter` directives such as `info,palisade=debug`; empty means `info`).
///
/// Every event written while [`ObserveLayer`](super::ObserveLayer) serves a request carries
/// the request's `trace_id` and `request_id` ([`WithRequestIds`](super::WithRequestIds)), at any level and whether or
/// not the request span is enabled.
///
/// ```
/// use palisade::observe::{LogFormat, init_tracing};
/// assert!(init_tracing(LogFormat::Json, "not a [valid filter").is_err());
/// init_tracing(LogFormat::Compact, "warn").unwrap();
/// assert!(init_tracing(LogFormat::Compact, "warn").is_err()); // only once per process
/// ```
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<(), InitError> {
    install(format, filter, None)
}

/// [`init_tracing`] plus OpenTelemetry export through `otel` (feature `otel`): the log output
/// keeps `filter`; the exporter gets the same directives plus the request span, whatever its
/// level (see [`OtelExporter::filter`](super::otel::OtelExporter::filter)).
#[cfg(feature = "otel")]
pub fn init_tracing_with_otel(
    format: LogFormat,
    filter: &str,
    otel: &super::otel::OtelExporter,
) -> Result<(), InitError> {
    use tracing_subscriber::Layer as _;
    let otel_filter = otel.filter(filter).map_err(|e| InitError::Filter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })?;
    install(
        format,
        filter,
        Some(otel.layer().with_filter(otel_filter).boxed()),
    )
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The log output for `format` (stderr, request ids added), unfiltered.
pub(crate) fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::fmt::format::format as fmt_format;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Json => layer
            .json()
            .event_format(super::WithRequestIds::json(
                fmt_format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .boxed(),
        LogFormat::Pretty => layer
            .pretty()
            .event_format(super::WithRequestIds::text(fmt_format().pretty()))
            .boxed(),
        LogFormat::Compact => layer
            .compact()
            .event_format(super::WithRequestIds::text(fmt_format().compact()))
            .boxed(),
    }
}

fn install(format: LogFormat, filter: &str, otel: Option<BoxedLayer>) -> Result<(), InitError> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let directives = if filter.trim().is_empty() {
        "info"
    } else {
        filter
    };
    let env_filter = EnvFilter::try_new(directives).map_err(|e| InitError::Filter {
        filter: directives.to_owned(),
        reason: e.to_string(),
    })?;
    let mut layers: Vec<BoxedLayer> = vec![log_layer(format).with_filter(env_filter).boxed()];
    layers.extend(otel);
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| InitError::AlreadyInstalled(e.to_string()))
}
