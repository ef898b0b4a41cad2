//! OpenTelemetry export (feature `otel`): the `http_request` span of [`ObserveLayer`] and the
//! events inside it, sent over OTLP/HTTP (protobuf) by a batch exporter.
//!
//! **One trace id.** The exported span *is* Palisade's span for the hop: its trace id is the
//! incoming `traceparent`'s (or the one Palisade drew for a new trace), its span id is the one the
//! response's `traceparent` names, its parent is the caller's span. The same ids are on the log
//! lines ([`init_tracing`](super::init_tracing) adds `trace_id` and `request_id` to every event of
//! a request). Palisade draws the ids; the exporter's tracer takes them
//! ([`OtelExporter`] installs the id generator that does so).
//!
//! **Sampling**: parent-based, then a ratio. A caller's sampled flag decides for its traces; a
//! trace that starts here is sampled with [`OtelConfig::sampling_ratio`], by its trace id, and
//! the response's `traceparent` carries that decision (`-01` or `-00`), so downstream services
//! agree. Unsampled spans are never exported.
//!
//! **Never in the way.** Spans go to a bounded queue ([`OtelConfig::max_queue_size`]); a
//! background thread exports them in batches with its own HTTP client on its own small runtime.
//! A collector that is down, slow or refusing costs dropped spans (and a rate-limited
//! diagnostic), never a slower or failed request. [`OtelExporter::shutdown`] flushes what is
//! queued.
//!
//! Export is off unless an exporter is built: the feature alone changes nothing at run time.
//!
//! # Examples
//!
//! ```no_run
//! use palisade::observe::otel::{OtelConfig, OtelExporter};
//! use palisade::observe::{LogFormat, ObserveConfig, init_tracing_with_otel};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let otel = OtelExporter::new(
//!     OtelConfig::builder("http://127.0.0.1:4318")
//!         .service_name("checkout")
//!         .service_version(env!("CARGO_PKG_VERSION"))
//!         .sampling_ratio(0.25)
//!         .build()?,
//! )?;
//! init_tracing_with_otel(LogFormat::Json, "info", &otel)?;
//! // ... serve with ObserveLayer (or Stack::observe) ...
//! otel.shutdown()?; // flush before exit
//! # Ok(())
//! # }
//! ```
//!
//! [`ObserveLayer`]: super::ObserveLayer

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Tracer,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::registry::LookupSpan;

use super::context::{self, TraceContext};

/// The default OTLP/HTTP traces path, appended to an endpoint given without a path.
pub const TRACES_PATH: &str = "/v1/traces";

/// Why an OpenTelemetry configuration or exporter was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The endpoint is not an `http://` URL with a host.
    #[error("otel endpoint must be an http:// URL with a host (got `{0}`)")]
    Endpoint(String),
    /// The sampling ratio is not within 0 to 1.
    #[error("otel sampling ratio must be between 0 and 1 (got {0})")]
    SamplingRatio(f64),
    /// The service name is empty.
    #[error("otel service name must not be empty")]
    ServiceName,
    /// A header name or value is not valid in HTTP.
    #[error("otel header `{0}` is not a valid HTTP header name and value")]
    Header(String),
    /// A size or duration is zero.
    #[error("otel {0} must be at least 1")]
    Zero(&'static str),
    /// The exporter could not be built, or its flush or shutdown failed.
    #[error("otel exporter: {0}")]
    Exporter(String),
}

/// Configuration of an [`OtelExporter`]; see [`OtelConfig::builder`].
#[derive(Debug, Clone)]
pub struct OtelConfig {
    endpoint: Uri,
    service_name: String,
    service_version: String,
    worker_id: Option<u32>,
    sampling_ratio: f64,
    headers: Vec<(String, String)>,
    max_queue_size: usize,
    max_export_batch_size: usize,
    scheduled_delay: Duration,
    export_timeout: Duration,
}

impl OtelConfig {
    /// A builder exporting to `endpoint`: an `http://host:port` base (the OTLP traces path
    /// [`TRACES_PATH`] is appended) or a full URL with its own path.
    pub fn builder(endpoint: impl Into<String>) -> OtelConfigBuilder {
        OtelConfigBuilder {
            endpoint: endpoint.into(),
            service_name: "palisade".to_owned(),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            worker_id: None,
            sampling_ratio: 1.0,
            headers: Vec::new(),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
        }
    }

    /// The URL spans are posted to.
    pub fn endpoint(&self) -> &Uri {
        &self.endpoint
    }

    /// The ratio of new traces (no sampled caller) that are sampled.
    pub fn sampling_ratio(&self) -> f64 {
        self.sampling_ratio
    }

    /// The spans held for export at most; more are dropped.
    pub fn max_queue_size(&self) -> usize {
        self.max_queue_size
    }
}

/// Builds an [`OtelConfig`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
#[must_use]
pub struct OtelConfigBuilder {
    endpoint: String,
    service_name: String,
    service_version: String,
    worker_id: Option<u32>,
    sampling_ratio: f64,
    headers: Vec<(String, String)>,
    max_queue_size: usize,
    max_export_batch_size: usize,
    scheduled_delay: Duration,
    export_timeout: Duration,
}

impl OtelConfigBuilder {
    /// `service.name` (default `palisade`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// `service.version` (default: this crate's version).
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = version.into();
        self
    }

    /// The worker process's id: resource attributes `palisade.worker.id` and
    /// `service.instance.id` (`<pid>-<worker id>`).
    pub fn worker_id(mut self, id: u32) -> Self {
        self.worker_id = Some(id);
        self
    }

    /// The ratio (0 to 1, default 1) of traces started here that are sampled. Traces continued
    /// from a caller follow the caller's sampled flag.
    pub fn sampling_ratio(mut self, ratio: f64) -> Self {
        self.sampling_ratio = ratio;
        self
    }

    /// A header sent with every export (e.g. an API key for the collector).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The spans held for export at most (default 2048); beyond, new spans are dropped.
    pub fn max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = size;
        self
    }

    /// The most spans in one export request (default 512; at most the queue size).
    pub fn max_export_batch_size(mut self, size: usize) -> Self {
        self.max_export_batch_size = size;
        self
    }

    /// How long spans wait for a batch to fill (default 1 s).
    pub fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = delay;
        self
    }

    /// The deadline of one export request (default 10 s).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// Validates and builds the configuration.
    ///
    /// # Errors
    ///
    /// [`OtelError`] names the first invalid value.
    pub fn build(self) -> Result<OtelConfig, OtelError> {
        let endpoint = parse_endpoint(&self.endpoint)?;
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(OtelError::SamplingRatio(self.sampling_ratio));
        }
        if self.service_name.trim().is_empty() {
            return Err(OtelError::ServiceName);
        }
        for (name, value) in &self.headers {
            let ok = http::HeaderName::try_from(name.as_str()).is_ok()
                && http::HeaderValue::try_from(value.as_str()).is_ok();
            if !ok {
                return Err(OtelError::Header(name.clone()));
            }
        }
        for (what, n) in [
            ("max_queue_size", self.max_queue_size),
            ("max_export_batch_size", self.max_export_batch_size),
        ] {
            if n == 0 {
                return Err(OtelError::Zero(what));
            }
        }
        for (what, d) in [
            ("scheduled_delay", self.scheduled_delay),
            ("export_timeout", self.export_timeout),
        ] {
            if d.is_zero() {
                return Err(OtelError::Zero(what));
            }
        }
        Ok(OtelConfig {
            endpoint,
            service_name: self.service_name,
            service_version: self.service_version,
            worker_id: self.worker_id,
            sampling_ratio: self.sampling_ratio,
            headers: self.headers,
            max_queue_size: self.max_queue_size,
            max_export_batch_size: self.max_export_batch_size.min(self.max_queue_size),
            scheduled_delay: self.scheduled_delay,
            export_timeout: self.export_timeout,
        })
    }
}

/// `http://host[:port][/path]`; an empty path becomes [`TRACES_PATH`].
fn parse_endpoint(endpoint: &str) -> Result<Uri, OtelError> {
    let bad = || OtelError::Endpoint(endpoint.to_owned());
    let uri: Uri = endpoint.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    let path = uri.path();
    if path.is_empty() || path == "/" {
        let authority = uri.authority().ok_or_else(bad)?;
        return format!("http://{authority}{TRACES_PATH}")
            .parse()
            .map_err(|_| bad());
    }
    Ok(uri)
}

/// The OpenTelemetry pipeline: a tracer provider with Palisade's ids and sampling, a batch
/// processor and an OTLP/HTTP exporter. See the [module docs](self).
///
/// Building one also makes Palisade's [`TraceContext`] sample new traces with the configured
/// ratio (process-wide), so response `traceparent` flags match what is exported.
#[derive(Clone)]
pub struct OtelExporter {
    provider: SdkTracerProvider,
    tracer: Tracer,
    config: Arc<OtelConfig>,
}

impl fmt::Debug for OtelExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelExporter")
            .field("endpoint", &self.config.endpoint)
            .field("sampling_ratio", &self.config.sampling_ratio)
            .finish_non_exhaustive()
    }
}

impl OtelExporter {
    /// Builds the pipeline; starts the export thread. Needs no async runtime.
    ///
    /// # Errors
    ///
    /// [`OtelError::Exporter`] when the exporter or its client cannot be built.
    pub fn new(config: OtelConfig) -> Result<Self, OtelError> {
        let client = HyperClient::new(config.export_timeout)?;
        let headers: HashMap<String, String> = config.headers.iter().cloned().collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.endpoint.to_string())
            .with_timeout(config.export_timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_export_batch_size)
            .with_scheduled_delay(config.scheduled_delay)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let mut attributes = vec![KeyValue::new(
            "service.version",
            config.service_version.clone(),
        )];
        let pid = std::process::id();
        attributes.push(KeyValue::new("process.pid", i64::from(pid)));
        if let Some(worker) = config.worker_id {
            attributes.push(KeyValue::new("palisade.worker.id", i64::from(worker)));
            attributes.push(KeyValue::new(
                "service.instance.id",
                format!("{pid}-{worker}"),
            ));
        }
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(attributes)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_id_generator(PalisadeIds)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("palisade");
        context::set_root_sampling(Some(config.sampling_ratio));
        Ok(Self {
            provider,
            tracer,
            config: Arc::new(config),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &OtelConfig {
        &self.config
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans, for a subscriber built by
    /// hand (otherwise see [`init_tracing_with_otel`](super::init_tracing_with_otel)).
    ///
    /// Give it its own filter (`Layer::with_filter`) that enables the `http_request` span
    /// (target `palisade::observe::trace`, level `DEBUG` by default) even when the log output is
    /// at `info`: [`filter`](Self::filter) is one.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, Tracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
    }

    /// A per-layer filter for [`layer`](Self::layer): `directives` (as for the log output) plus
    /// Palisade's request span at any level.
    ///
    /// # Errors
    ///
    /// [`OtelError::Exporter`] when `directives` do not parse.
    pub fn filter(&self, directives: &str) -> Result<tracing_subscriber::EnvFilter, OtelError> {
        let base = if directives.trim().is_empty() {
            "info"
        } else {
            directives
        };
        tracing_subscriber::EnvFilter::try_new(format!("{base},palisade::observe::trace=trace"))
            .map_err(|e| OtelError::Exporter(format!("filter `{base}`: {e}")))
    }

    /// Exports every finished span still queued, waiting for the collector's answers.
    ///
    /// # Errors
    ///
    /// [`OtelError::Exporter`] when an export failed or timed out.
    pub fn force_flush(&self) -> Result<(), OtelError> {
        self.provider
            .force_flush()
            .map_err(|e| OtelError::Exporter(e.to_string()))
    }

    /// Flushes and stops the export thread; later spans are dropped. Call before the process
    /// exits (the reference server does so after its drain).
    ///
    /// # Errors
    ///
    /// [`OtelError::Exporter`] when the last export failed or it was already shut down.
    pub fn shutdown(&self) -> Result<(), OtelError> {
        context::set_root_sampling(None);
        self.provider
            .shutdown()
            .map_err(|e| OtelError::Exporter(e.to_string()))
    }
}

// === one id system: the exported span takes Palisade's ids ===

thread_local! {
    /// The ids Palisade drew for the span being started on this thread (taken once).
    static NEXT_TRACE_ID: Cell<Option<[u8; 16]>> = const { Cell::new(None) };
    static NEXT_SPAN_ID: Cell<Option<[u8; 8]>> = const { Cell::new(None) };
}

/// The tracer's id generator: the ids [`start_span`] put aside for the span being started, or
/// random ones for any other span (a handler's own child spans).
#[derive(Debug, Clone, Copy)]
struct PalisadeIds;

impl opentelemetry_sdk::trace::IdGenerator for PalisadeIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        let id = NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| context::TraceId::generate().to_bytes());
        opentelemetry::trace::TraceId::from_bytes(id)
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        let id = NEXT_SPAN_ID
            .with(Cell::take)
            .unwrap_or_else(|| context::SpanId::generate().to_bytes());
        opentelemetry::trace::SpanId::from_bytes(id)
    }
}

/// Starts the OpenTelemetry side of the request `span` with Palisade's ids (`ctx`): the
/// caller's span as remote parent, our span id, and for a new trace our trace id. A no-op when
/// the span is disabled or no OpenTelemetry layer is installed.
pub(crate) fn start_span(span: &Span, ctx: &TraceContext) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = ctx.parent_id {
        let state = ctx
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        let remote = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(ctx.trace_id.to_bytes()),
            opentelemetry::trace::SpanId::from_bytes(parent.to_bytes()),
            opentelemetry::trace::TraceFlags::new(ctx.flags),
            true,
            state,
        );
        if span
            .set_parent(Context::new().with_remote_span_context(remote))
            .is_err()
        {
            // No OpenTelemetry layer: nothing to start.
            return;
        }
    } else {
        NEXT_TRACE_ID.with(|c| c.set(Some(ctx.trace_id.to_bytes())));
    }
    NEXT_SPAN_ID.with(|c| c.set(Some(ctx.span_id.to_bytes())));
    // Builds the OpenTelemetry span now, on this thread, so it takes the ids set aside above.
    let _ = span.context();
    NEXT_TRACE_ID.with(|c| c.set(None));
    NEXT_SPAN_ID.with(|c| c.set(None));
}

// === the exporter's HTTP client ===

/// Plain-HTTP client for the exporter: hyper on a one-thread runtime of its own, so exports
/// neither need nor load the application's runtime, and the exporter's thread can block on them.
struct HyperClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
}

impl fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The largest collector answer read (an OTLP partial-success message is small).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

impl HyperClient {
    fn new(timeout: Duration) -> Result<Self, OtelError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("palisade-otlp")
            .enable_all()
            .build()
            .map_err(|e| OtelError::Exporter(format!("export runtime: {e}")))?;
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
        Ok(Self {
            client,
            runtime: Some(runtime),
            timeout,
        })
    }

    async fn send(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        let runtime = self.runtime.as_ref().ok_or("the export runtime is gone")?;
        let client = self.client.clone();
        let timeout = self.timeout;
        let request = request.map(Full::new);
        let task = runtime.spawn(async move {
            let exchange = async {
                let response = client.request(request).await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, opentelemetry_http::HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}").into()),
            }
        });
        task.await?
    }
}

impl Drop for HyperClient {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropped on the exporter's thread, never inside a runtime; don't wait for stragglers.
            runtime.shutdown_background();
        }
    }
}

impl opentelemetry_http::HttpClient for HyperClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<Response<Bytes>, opentelemetry_http::HttpError>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
#[path = "otel_tests.rs"]
mod tests;
