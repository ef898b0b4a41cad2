//! An OTLP/HTTP trace receiver for tests: a hyper server on 127.0.0.1 that accepts
//! `POST /v1/traces` (protobuf `ExportTraceServiceRequest`), decodes it with
//! `opentelemetry-proto` and keeps every span with its resource attributes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One span as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// Span id, 16 lowercase hex digits.
    pub span_id: String,
    /// Parent span id (16 hex digits), empty for a root span.
    pub parent_span_id: String,
    /// The span name.
    pub name: String,
    /// Span kind (OTLP enum: 2 = server).
    pub kind: i32,
    /// The span's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// The resource attributes of the batch it came in, values as text.
    pub resource: BTreeMap<String, String>,
    /// The names of the span's events.
    pub events: Vec<String>,
}

/// What one export request carried, and its headers.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    requests: usize,
    headers: Vec<http::HeaderMap>,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1 (on the current tokio runtime).
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let received = Arc::new(Mutex::new(Received::default()));
        let state = Arc::clone(&received);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// The base URL exporters are given (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().spans.clone()
    }

    /// How many export requests arrived (valid or not).
    pub fn requests(&self) -> usize {
        self.received.lock().requests
    }

    /// The headers of every export request.
    pub fn headers(&self) -> Vec<http::HeaderMap> {
        self.received.lock().headers.clone()
    }

    /// Waits (polling) up to `timeout` for a span matching `pred`; returns it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> Option<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| pred(s)) {
                return Some(span);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(req: Request<Incoming>, state: &Mutex<Received>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let reply = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    state.lock().requests += 1;
    if parts.method != http::Method::POST || parts.uri.path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let Ok(body) = body.collect().await else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = Vec::new();
    for rs in &export.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                spans.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    events: span.events.iter().map(|e| e.name.clone()).collect(),
                });
            }
        }
    }
    {
        let mut received = state.lock();
        received.spans.extend(spans);
        received.headers.push(parts.headers);
    }
    reply(
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}
