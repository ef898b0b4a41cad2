//! Prometheus text exposition of the [`metrics`] facade, through metrics-exporter-prometheus.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::metrics::{
    BODY_SIZE_BUCKETS, DURATION_BUCKETS, REQUEST_BODY_SIZE, REQUEST_DURATION, RESPONSE_BODY_SIZE,
    describe_metrics,
};

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A [`PrometheusBuilder`] configured for Palisade: recommended naming (unit suffixes such as
/// `_seconds`, `_total` on counters), explicit buckets for the HTTP duration
/// ([`DURATION_BUCKETS`]) and body size ([`BODY_SIZE_BUCKETS`]) histograms, and the duration
/// buckets for every other histogram ending in `_seconds`, so none renders as a summary.
///
/// Start here to add global labels or more bucket overrides, then build with
/// [`PrometheusExporter::from_builder`].
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION.to_owned()),
            &DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_BODY_SIZE.to_owned()),
            &BODY_SIZE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(RESPONSE_BODY_SIZE.to_owned()),
            &BODY_SIZE_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &DURATION_BUCKETS)
}

/// Renders the metrics recorded through the [`metrics`] facade as Prometheus text.
///
/// The HTTP duration histogram renders as `http_server_request_duration_seconds_bucket{le=..}`,
/// `_sum` and `_count`, with labels `http_request_method`, `http_route`,
/// `http_response_status_code` and `url_scheme`.
///
/// The recorder buffers histogram samples until they are drained, which [`render`](Self::render)
/// does; if nothing scrapes, call [`spawn_upkeep`](Self::spawn_upkeep) so memory stays bounded.
///
/// ```
/// use palisade::observe::PrometheusExporter;
///
/// // In a binary: `let exporter = PrometheusExporter::install()?;` (once per process).
/// // In tests, keep the recorder local:
/// let (recorder, exporter) = PrometheusExporter::build().unwrap();
/// metrics::with_local_recorder(&recorder, || {
///     palisade::observe::metrics::describe_metrics();
///     metrics::histogram!("http.server.request.duration", "http.route" => "/x").record(0.02);
/// });
/// let text = exporter.render();
/// assert!(text.contains(r#"http_server_request_duration_seconds_bucket{http_route="/x",le="0.025"} 1"#));
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusExporter {
    handle: PrometheusHandle,
}

impl PrometheusExporter {
    /// Installs the global `metrics` recorder (see [`prometheus_builder`]) and describes the
    /// HTTP metrics. Fails if a global recorder is already installed.
    pub fn install() -> Result<Self, BuildError> {
        Self::install_builder(prometheus_builder()?)
    }

    /// Installs a recorder built from `builder` as the global one and describes the HTTP metrics.
    pub fn install_builder(builder: PrometheusBuilder) -> Result<Self, BuildError> {
        let (recorder, exporter) = Self::from_builder(builder);
        metrics::set_global_recorder(recorder)?;
        Ok(exporter)
    }

    /// Builds a recorder without installing it, for `metrics::with_local_recorder`, a fan-out
    /// recorder, or tests. The HTTP metrics are already described to it.
    pub fn build() -> Result<(PrometheusRecorder, Self), BuildError> {
        Ok(Self::from_builder(prometheus_builder()?))
    }

    /// Builds a recorder from a custom builder (start from [`prometheus_builder`]) without
    /// installing it; the HTTP metrics are described to it.
    pub fn from_builder(builder: PrometheusBuilder) -> (PrometheusRecorder, Self) {
        let recorder = builder.build_recorder();
        metrics::with_local_recorder(&recorder, describe_metrics);
        let handle = recorder.handle();
        (recorder, Self { handle })
    }

    /// Wraps an existing handle.
    pub fn from_handle(handle: PrometheusHandle) -> Self {
        Self { handle }
    }

    /// The exporter's handle.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// A `200 OK` response with the exposition and the Prometheus content type, in any body
    /// type made from [`Bytes`].
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        let mut res = Response::new(B::from(Bytes::from(self.render())));
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        res
    }

    /// A tower service answering every request with the exposition: mount it at `/metrics`
    /// (`Router::route_service("/metrics", exporter.service())` in axum).
    pub fn service(&self) -> MetricsService {
        MetricsService {
            exporter: self.clone(),
        }
    }

    /// Spawns a task draining buffered histogram samples every `every`, for processes that are
    /// not scraped often. Must be called inside a Tokio runtime; abort the handle to stop it.
    pub fn spawn_upkeep(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    }
}

/// Serves the Prometheus exposition for every request; see [`PrometheusExporter::service`].
#[derive(Debug, Clone)]
pub struct MetricsService {
    exporter: PrometheusExporter,
}

impl<B> tower::Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok(self.exporter.response()))
    }
}

/// Merges the text expositions of several processes into one, adding the label
/// `label="<source>"` to every sample so each process keeps its own series: the exposition a
/// supervisor serves for its workers.
///
/// Lines of one metric family stay together (the text format requires it): each family's
/// `# HELP` and `# TYPE` come once, from the first source that has them, followed by the samples
/// of every source in order. A source's samples whose family has no `# TYPE` line are kept under
/// their own name. Counters of a source that restarts (a replaced worker) start again from zero
/// under the same label, which Prometheus reads as a counter reset.
///
/// ```
/// use palisade::observe::merge_expositions;
/// let a = "# TYPE hits counter\nhits{route=\"/x\"} 3\n";
/// let b = "# TYPE hits counter\nhits{route=\"/x\"} 4\nhits 1\n";
/// let merged = merge_expositions("worker", &[("0", a), ("1", b)]);
/// assert_eq!(
///     merged,
///     "# TYPE hits counter\nhits{worker=\"0\",route=\"/x\"} 3\n\
///      hits{worker=\"1\",route=\"/x\"} 4\nhits{worker=\"1\"} 1\n"
/// );
/// ```
pub fn merge_expositions(label: &str, sources: &[(&str, &str)]) -> String {
    // Families in order of first appearance: (name, HELP/TYPE lines, samples).
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (source, text) in sources {
        let escaped = escape_label_value(source);
        let mut current: Option<usize> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let mut words = rest.split_whitespace();
                let (Some(kind @ ("HELP" | "TYPE")), Some(name)) = (words.next(), words.next())
                else {
                    continue; // other comments are dropped
                };
                let at = family(&mut families, &mut index, name);
                current = Some(at);
                let meta = &mut families[at].1;
                if !meta
                    .iter()
                    .any(|m| m.split_whitespace().nth(1) == Some(kind))
                {
                    meta.push(line.to_owned());
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let at = match current {
                Some(at) if belongs_to(name, &families[at].0) => at,
                _ => {
                    let at = family(&mut families, &mut index, name);
                    current = Some(at);
                    at
                }
            };
            let rest = &line[name_end..];
            let sample = match rest.strip_prefix('{') {
                Some(labels) if labels.starts_with('}') => {
                    format!("{name}{{{label}=\"{escaped}\"{labels}")
                }
                Some(labels) => format!("{name}{{{label}=\"{escaped}\",{labels}"),
                None => format!("{name}{{{label}=\"{escaped}\"}}{rest}"),
            };
            families[at].2.push(sample);
        }
    }
    let mut out = String::new();
    for (_, meta, samples) in families {
        for line in meta.iter().chain(&samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn family(
    families: &mut Vec<(String, Vec<String>, Vec<String>)>,
    index: &mut std::collections::HashMap<String, usize>,
    name: &str,
) -> usize {
    *index.entry(name.to_owned()).or_insert_with(|| {
        families.push((name.to_owned(), Vec::new(), Vec::new()));
        families.len() - 1
    })
}

/// Whether sample `name` is part of family `family` (histogram and summary series carry
/// suffixes).
fn belongs_to(name: &str, family: &str) -> bool {
    name.strip_prefix(family).is_some_and(|s| {
        matches!(
            s,
            "" | "_bucket" | "_sum" | "_count" | "_total" | "_created"
        )
    })
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::merge_expositions;

    #[test]
    fn families_stay_together_across_sources_and_meta_comes_once() {
        let a = "# HELP d Latency.\n# TYPE d histogram\nd_bucket{le=\"1\"} 1\nd_sum 0.5\nd_count 1\n\
                 # TYPE c counter\nc 2\n";
        let b = "# TYPE c counter\nc 5\n# HELP d Latency.\n# TYPE d histogram\n\
                 d_bucket{le=\"1\"} 0\nd_sum 0\nd_count 0\n# EOF-like comment\nlone 1\n";
        let merged = merge_expositions("worker", &[("0", a), ("1", b)]);
        let expected = "# HELP d Latency.\n# TYPE d histogram\n\
             d_bucket{worker=\"0\",le=\"1\"} 1\nd_sum{worker=\"0\"} 0.5\nd_count{worker=\"0\"} 1\n\
             d_bucket{worker=\"1\",le=\"1\"} 0\nd_sum{worker=\"1\"} 0\nd_count{worker=\"1\"} 0\n\
             # TYPE c counter\nc{worker=\"0\"} 2\nc{worker=\"1\"} 5\n\
             lone{worker=\"1\"} 1\n";
        assert_eq!(merged, expected);
    }

    #[test]
    fn source_names_are_escaped_and_empty_label_sets_handled() {
        let merged = merge_expositions("w", &[("a\"b", "x{} 1\n")]);
        assert_eq!(merged, "x{w=\"a\\\"b\"} 1\n");
        assert_eq!(merge_expositions("w", &[]), "");
    }
}
