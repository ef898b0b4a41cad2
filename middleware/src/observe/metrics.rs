//! HTTP server metrics with OpenTelemetry names, recorded through the [`metrics`] facade.
//!
//! | name (facade)                      | kind      | unit      | labels                                                   | Prometheus name                          |
//! |------------------------------------|-----------|-----------|----------------------------------------------------------|------------------------------------------|
//! | `http.server.request.duration`     | histogram | seconds   | method, route, status code, scheme, `error.type` on 5xx  | `http_server_request_duration_seconds`   |
//! | `http.server.active_requests`      | gauge     | requests  | method, scheme                                           | `http_server_active_requests`            |
//! | `http.server.request.body.size`    | histogram | bytes     | method, route, status code, scheme                       | `http_server_request_body_size_bytes`    |
//! | `http.server.response.body.size`   | histogram | bytes     | method, route, status code, scheme                       | `http_server_response_body_size_bytes`   |
//!
//! Label keys are `http.request.method` (the nine RFC 9110 methods plus `PATCH`, anything else
//! `_OTHER`), `http.route` (the route *template*, or `unmatched`; never the raw path),
//! `http.response.status_code`, `url.scheme` and `error.type` (the status code for 5xx, `_OTHER`
//! when the service failed without a response). The Prometheus exporter maps dots to underscores
//! and adds the unit suffix (see [`PrometheusExporter`](super::PrometheusExporter)).
//!
//! Body sizes are recorded only when known without reading the body and not empty: the
//! request's `Content-Length` (or an exact size hint), the response body's exact size hint. So a
//! `GET` without a body, a `204` or a streamed response of unknown length adds no sample.
//!
//! Metric handles are cached per layer and per thread shard, so a request costs one uncontended
//! lock and a map lookup instead of a registry lookup per metric. A consequence: the handles stay
//! bound to the recorder that was current when they were first used. Do not configure an
//! `idle_timeout` on histograms for these metrics (a removed series would not come back).

use std::sync::OnceLock;

use http::Method;
use metrics::{Gauge, Histogram, Label, SharedString, Unit};
use parking_lot::Mutex;

use super::stats::{Padded, shard_index};

/// `http.server.request.duration`: seconds from receiving the request to the response head.
pub const REQUEST_DURATION: &str = "http.server.request.duration";
/// `http.server.active_requests`: requests received whose response head is not yet produced.
pub const ACTIVE_REQUESTS: &str = "http.server.active_requests";
/// `http.server.request.body.size`: request body bytes, when known up front.
pub const REQUEST_BODY_SIZE: &str = "http.server.request.body.size";
/// `http.server.response.body.size`: response body bytes, when known up front.
pub const RESPONSE_BODY_SIZE: &str = "http.server.response.body.size";

/// The route label for requests that matched no route template.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The method label for methods outside RFC 9110 + `PATCH`.
pub const OTHER_METHOD: &str = "_OTHER";
/// The `error.type` label of a request whose service failed without a response.
pub const OTHER_ERROR: &str = "_OTHER";

/// The OpenTelemetry advisory bucket boundaries for `http.server.request.duration`, seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket boundaries for the body size histograms, bytes (64 B to 16 MiB, ×4).
pub const BODY_SIZE_BUCKETS: [f64; 10] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
];

/// Describes every metric of this module to the current recorder (name, unit, help text).
///
/// [`PrometheusExporter`](super::PrometheusExporter) and [`ObserveLayer::new`](super::ObserveLayer::new)
/// call it; call it yourself after installing another recorder. Describing twice is harmless.
pub fn describe_metrics() {
    metrics::describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests, until the response head"
    );
    metrics::describe_gauge!(
        ACTIVE_REQUESTS,
        Unit::Count,
        "HTTP server requests being handled"
    );
    metrics::describe_histogram!(
        REQUEST_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP server request bodies, when known up front"
    );
    metrics::describe_histogram!(
        RESPONSE_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP server response bodies, when known up front"
    );
}

const METHODS: [(Method, &str); 9] = [
    (Method::GET, "GET"),
    (Method::HEAD, "HEAD"),
    (Method::POST, "POST"),
    (Method::PUT, "PUT"),
    (Method::DELETE, "DELETE"),
    (Method::CONNECT, "CONNECT"),
    (Method::OPTIONS, "OPTIONS"),
    (Method::TRACE, "TRACE"),
    (Method::PATCH, "PATCH"),
];

/// The number of distinct method labels (nine methods plus `_OTHER`).
pub(crate) const METHOD_LABELS: usize = METHODS.len() + 1;

/// The label index of a method: 0..9 for known methods, 9 for `_OTHER`.
pub(crate) fn method_index(method: &Method) -> u8 {
    METHODS
        .iter()
        .position(|(m, _)| m == method)
        .unwrap_or(METHODS.len()) as u8
}

/// The label of a method index.
pub(crate) fn method_label(index: u8) -> &'static str {
    METHODS
        .get(usize::from(index))
        .map_or(OTHER_METHOD, |(_, label)| label)
}

/// The `http.request.method` label for a method: its name, or `_OTHER`.
///
/// ```
/// use palisade::observe::metrics::method_label_of;
/// assert_eq!(method_label_of(&http::Method::PATCH), "PATCH");
/// assert_eq!(method_label_of(&http::Method::from_bytes(b"BREW").unwrap()), "_OTHER");
/// ```
pub fn method_label_of(method: &Method) -> &'static str {
    method_label(method_index(method))
}

/// The cached handles of one (route, method, status) series.
#[derive(Debug)]
struct Series {
    method: u8,
    status: u16,
    duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

/// Cached series of one shard, by route.
type SeriesCache = super::stats::RouteMap<Vec<Series>>;

/// Per-layer metric handle caches.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    scheme: SharedString,
    max_routes: usize,
    active: [OnceLock<Gauge>; METHOD_LABELS],
    shards: Box<[Padded<Mutex<SeriesCache>>]>,
}

/// What one finished request reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    pub(crate) method: u8,
    pub(crate) route: &'a str,
    /// The status code, or 0 when the service failed without a response.
    pub(crate) status: u16,
    pub(crate) seconds: f64,
    pub(crate) request_size: Option<u64>,
    pub(crate) response_size: Option<u64>,
}

impl HttpMetrics {
    pub(crate) fn new(scheme: &str, shards: usize, max_routes: usize) -> Self {
        Self {
            scheme: SharedString::from(scheme.to_owned()),
            max_routes,
            active: std::array::from_fn(|_| OnceLock::new()),
            shards: (0..shards.max(1))
                .map(|_| Padded(Mutex::new(SeriesCache::default())))
                .collect(),
        }
    }

    /// The `http.server.active_requests` gauge of a method.
    pub(crate) fn active(&self, method: u8) -> &Gauge {
        let slot = usize::from(method).min(METHOD_LABELS - 1);
        self.active[slot].get_or_init(|| {
            metrics::gauge!(
                ACTIVE_REQUESTS,
                "http.request.method" => method_label(method),
                "url.scheme" => self.scheme.clone()
            )
        })
    }

    pub(crate) fn record(&self, outcome: &Outcome<'_>) {
        let shard = &self.shards[shard_index(self.shards.len() - 1)].0;
        let mut map = shard.lock();
        if !map.contains_key(outcome.route) && map.len() >= self.max_routes {
            // Far more routes than any router has: drop the cache, handles are re-registered.
            map.clear();
        }
        let series = match map.get_mut(outcome.route) {
            Some(list) => list,
            None => map.entry(outcome.route.into()).or_default(),
        };
        let idx = match series
            .iter()
            .position(|s| s.method == outcome.method && s.status == outcome.status)
        {
            Some(i) => i,
            None => {
                series.push(self.register(outcome));
                series.len() - 1
            }
        };
        let s = &series[idx];
        s.duration.record(outcome.seconds);
        if let Some(n) = outcome.request_size {
            s.request_size.record(n as f64);
        }
        if let Some(n) = outcome.response_size {
            s.response_size.record(n as f64);
        }
    }

    fn register(&self, outcome: &Outcome<'_>) -> Series {
        let mut labels = vec![
            Label::new("http.request.method", method_label(outcome.method)),
            Label::new("http.route", outcome.route.to_owned()),
            Label::new("url.scheme", self.scheme.clone()),
        ];
        if outcome.status != 0 {
            labels.push(Label::new(
                "http.response.status_code",
                outcome.status.to_string(),
            ));
        }
        if outcome.status == 0 {
            labels.push(Label::new("error.type", OTHER_ERROR));
        } else if outcome.status >= 500 {
            labels.push(Label::new("error.type", outcome.status.to_string()));
        }
        let size_labels: Vec<Label> = labels
            .iter()
            .filter(|l| l.key() != "error.type")
            .cloned()
            .collect();
        Series {
            method: outcome.method,
            status: outcome.status,
            duration: metrics::histogram!(REQUEST_DURATION, labels),
            request_size: metrics::histogram!(REQUEST_BODY_SIZE, size_labels.clone()),
            response_size: metrics::histogram!(RESPONSE_BODY_SIZE, size_labels),
        }
    }
}
