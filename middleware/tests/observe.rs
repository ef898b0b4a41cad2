//! The observe stack through a real axum router: request ids, trace context, spans, and the
//! Prometheus exposition parsed line by line.
#![cfg(feature = "observe")]

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use palisade::observe::{
    ObserveConfig, ObserveHandle, ObserveLayer, PrometheusExporter, RequestContextLayer, RequestId,
    RouteLayer, TraceConfig, TraceContext,
};
use tower::{ServiceBuilder, ServiceExt};

/// Runs `f` on a current-thread runtime with a fresh, local Prometheus recorder; returns its
/// output and the rendered exposition.
fn with_metrics<F, Fut>(f: F) -> (Fut::Output, String)
where
    F: FnOnce(PrometheusExporter) -> Fut,
    Fut: Future,
{
    let (recorder, exporter) = PrometheusExporter::build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || rt.block_on(f(exporter.clone())));
    (out, exporter.render())
}

/// Echoes what the handler saw: the request id extension, the x-request-id header and the
/// traceparent header, one per line.
async fn echo(req: Request<Body>) -> String {
    let ext = req
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string)
        .unwrap_or_default();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let trace = req
        .extensions()
        .get::<TraceContext>()
        .map(|c| c.trace_id.to_string())
        .unwrap_or_default();
    format!(
        "{ext}\n{}\n{}\n{trace}",
        header("x-request-id"),
        header("traceparent")
    )
}

fn app(exporter: &PrometheusExporter) -> (Router, ObserveHandle) {
    let (observe, handle) = ObserveLayer::new(ObserveConfig::default());
    let router = Router::new()
        .route("/users/{id}", get(echo))
        .route(
            "/users",
            post(|| async { (http::StatusCode::CREATED, "made") }),
        )
        .route(
            "/boom",
            get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route_service("/metrics", exporter.service())
        .layer(observe);
    (router, handle)
}

async fn send(router: &Router, req: Request<Body>) -> (Response<Body>, String) {
    let res = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get_req(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

fn lines(body: &str) -> Vec<String> {
    body.lines().map(str::to_owned).collect()
}

#[test]
fn a_valid_request_id_is_kept_and_echoed() {
    let ((res, body), _) = with_metrics(|e| async move {
        let (app, _) = app(&e);
        send(
            &app,
            get_req("/users/7", &[("x-request-id", "client-id_1.2:3")]),
        )
        .await
    });
    assert_eq!(res.headers()["x-request-id"], "client-id_1.2:3");
    let seen = lines(&body);
    assert_eq!(seen[0], "client-id_1.2:3", "extension");
    assert_eq!(seen[1], "client-id_1.2:3", "request header");
}

#[test]
fn invalid_or_oversized_request_ids_are_replaced() {
    let long = "a".repeat(129);
    let exactly_max = "b".repeat(128);
    for (bad, kept) in [
        ("has space", false),
        ("quote\"d", false),
        ("semi;colon", false),
        ("slash/ed", false),
        (long.as_str(), false),
        (exactly_max.as_str(), true),
    ] {
        let ((res, body), _) = with_metrics(|e| async move {
            let (app, _) = app(&e);
            send(&app, get_req("/users/7", &[("x-request-id", bad)])).await
        });
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let seen = lines(&body);
        if kept {
            assert_eq!(echoed, bad);
        } else {
            assert_ne!(echoed, bad, "{bad:?} must be replaced");
            assert_eq!(echoed.len(), 32);
            assert!(echoed.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(
            seen[0], echoed,
            "the handler sees the id the client gets back"
        );
        assert_eq!(seen[1], echoed, "the request header was rewritten");
    }
}

#[test]
fn two_request_id_headers_are_replaced() {
    let ((res, _), _) = with_metrics(|e| async move {
        let (app, _) = app(&e);
        let req = Request::get("/users/1")
            .header("x-request-id", "one")
            .header("x-request-id", "two")
            .body(Body::empty())
            .unwrap();
        send(&app, req).await
    });
    let echoed = res.headers()["x-request-id"].to_str().unwrap();
    assert!(echoed != "one" && echoed != "two");
}

#[test]
fn a_missing_request_id_is_generated_and_unique() {
    let (ids, _) = with_metrics(|e| async move {
        let (app, _) = app(&e);
        let mut ids = Vec::new();
        for _ in 0..50 {
            let (res, body) = send(&app, get_req("/users/1", &[])).await;
            let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert_eq!(lines(&body)[0], id);
            ids.push(id);
        }
        ids
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    assert!(ids.iter().all(|id| id.len() == 32));
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_valid_traceparent_is_continued_with_our_span() {
    let ((res, body), _) = with_metrics(|e| async move {
        let (app, _) = app(&e);
        send(
            &app,
            get_req(
                "/users/1",
                &[("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")],
            ),
        )
        .await
    });
    let echoed = res.headers()["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = echoed.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "our own span id");
    assert_eq!(parts[3], "01", "sampled flag kept");
    let seen = lines(&body);
    assert_eq!(
        seen[2], echoed,
        "downstream calls propagate our span as the parent"
    );
    assert_eq!(seen[3], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn an_invalid_traceparent_starts_a_new_trace() {
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "nonsense",
    ] {
        let ((res, body), _) = with_metrics(|e| async move {
            let (app, _) = app(&e);
            send(&app, get_req("/users/1", &[("traceparent", bad)])).await
        });
        let echoed = res.headers()["traceparent"].to_str().unwrap();
        let parts: Vec<&str> = echoed.split('-').collect();
        assert_eq!(parts.len(), 4, "{echoed}");
        assert_ne!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parts[1], "00000000000000000000000000000000");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[3], "00", "a new trace is not marked sampled");
        assert_eq!(lines(&body)[2], echoed);
    }
}

#[test]
fn a_handler_set_request_id_is_not_overwritten() {
    let ((res, _), _) = with_metrics(|_| async move {
        let (observe, _) = ObserveLayer::new(ObserveConfig::default());
        let app = Router::new()
            .route(
                "/",
                get(|| async { ([("x-request-id", "from-handler")], "x") }),
            )
            .layer(observe);
        send(&app, get_req("/", &[("x-request-id", "from-client")])).await
    });
    assert_eq!(res.headers()["x-request-id"], "from-handler");
}

/// One parsed exposition sample: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = Vec::new();
                // Label values here never contain `",` so a simple split is exact.
                for pair in body.split("\",") {
                    let (k, v) = pair.split_once("=\"").expect("k=\"v\"");
                    labels.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        out.push(Sample {
            name,
            labels,
            value: value.parse().expect("numeric value"),
        });
    }
    out
}

#[test]
fn metrics_text_has_buckets_route_templates_and_bounded_methods() {
    let ((), text) = with_metrics(|e| async move {
        let (app, _) = app(&e);
        for id in 0..5 {
            let (res, _) = send(&app, get_req(&format!("/users/{id}"), &[])).await;
            assert_eq!(res.status(), 200);
        }
        let req = Request::post("/users")
            .header("content-length", "11")
            .body(Body::from("hello world"))
            .unwrap();
        assert_eq!(send(&app, req).await.0.status(), 201);
        let junk = Request::builder()
            .method(Method::from_bytes(b"BREW").unwrap())
            .uri("/users/9")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, junk).await.0.status(), 405);
        assert_eq!(
            send(&app, get_req("/no/such/path/123", &[]))
                .await
                .0
                .status(),
            404
        );
        assert_eq!(send(&app, get_req("/boom", &[])).await.0.status(), 503);
        // /metrics itself renders through the same layer.
        let (res, body) = send(&app, get_req("/metrics", &[])).await;
        assert_eq!(
            res.headers()["content-type"],
            palisade::observe::CONTENT_TYPE
        );
        assert!(body.contains("# TYPE http_server_request_duration_seconds histogram"));
    });

    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
    assert!(text.contains("# HELP http_server_request_duration_seconds"));
    let samples = parse_exposition(&text);
    let duration = |suffix: &'static str| {
        samples
            .iter()
            .filter(move |s| s.name == format!("http_server_request_duration_seconds{suffix}"))
    };

    // Explicit OTel buckets, cumulative, ending in +Inf = count.
    let users_get: Vec<&Sample> = duration("_bucket")
        .filter(|s| s.label("http_route") == Some("/users/{id}"))
        .filter(|s| s.label("http_request_method") == Some("GET"))
        .collect();
    let les: Vec<&str> = users_get.iter().map(|s| s.label("le").unwrap()).collect();
    for le in [
        "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5",
        "7.5", "10", "+Inf",
    ] {
        assert!(les.contains(&le), "bucket le={le} missing in {les:?}");
    }
    let inf = users_get
        .iter()
        .find(|s| s.label("le") == Some("+Inf"))
        .unwrap();
    assert_eq!(inf.value, 5.0);
    assert_eq!(inf.label("http_response_status_code"), Some("200"));
    assert_eq!(inf.label("url_scheme"), Some("http"));
    let count = duration("_count")
        .find(|s| {
            s.label("http_route") == Some("/users/{id}")
                && s.label("http_request_method") == Some("GET")
        })
        .unwrap();
    assert_eq!(count.value, 5.0);

    // Route labels are templates (or `unmatched`), never raw paths.
    let routes: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.label("http_route"))
        .collect();
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("/users/0") && !r.contains("123"))
    );
    assert!(routes.contains(&"/users"));
    assert!(routes.contains(&"unmatched"));

    // Unknown methods are `_OTHER`.
    let other = duration("_count")
        .find(|s| s.label("http_request_method") == Some("_OTHER"))
        .expect("a series for the junk method");
    assert_eq!(other.label("http_route"), Some("/users/{id}"));
    assert_eq!(other.label("http_response_status_code"), Some("405"));
    assert!(!text.contains("BREW"));

    // 5xx carry error.type; others do not.
    let boom = duration("_count")
        .find(|s| s.label("http_route") == Some("/boom"))
        .unwrap();
    assert_eq!(boom.label("error_type"), Some("503"));
    assert_eq!(count.label("error_type"), None);

    // Body sizes, with their own buckets.
    let req_size = samples
        .iter()
        .find(|s| {
            s.name == "http_server_request_body_size_bytes_sum"
                && s.label("http_route") == Some("/users")
        })
        .expect("request body size of POST /users");
    assert_eq!(req_size.value, 11.0);
    let res_size = samples
        .iter()
        .find(|s| {
            s.name == "http_server_response_body_size_bytes_sum"
                && s.label("http_route") == Some("/users")
        })
        .expect("response body size of POST /users");
    assert_eq!(res_size.value, 4.0);
    assert!(text.contains("http_server_response_body_size_bytes_bucket"));

    // Active requests went back to zero (the /metrics request itself had ended its count by
    // the time of the final render).
    let active: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "http_server_active_requests")
        .collect();
    assert!(!active.is_empty());
    assert!(active.iter().all(|s| s.value == 0.0), "{active:?}");
    assert!(active.iter().all(|s| s.label("http_route").is_none()));
}

#[test]
fn a_stack_around_the_router_needs_route_layer_for_templates() {
    let ((), text) = with_metrics(|_| async move {
        let (with_route_layer, _) = ObserveLayer::new(ObserveConfig::default());
        let router = Router::new()
            .route("/inner/{x}", get(|| async { "ok" }))
            .route_layer(RouteLayer);
        let svc = ServiceBuilder::new()
            .layer(with_route_layer)
            .service(router);
        let res = svc.oneshot(get_req("/inner/1", &[])).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.extensions()
                .get::<palisade::observe::MatchedRoute>()
                .unwrap()
                .as_str(),
            "/inner/{x}"
        );

        let (without, _) = ObserveLayer::new(ObserveConfig::default());
        let router = Router::new().route("/outer/{x}", get(|| async { "ok" }));
        let svc = ServiceBuilder::new().layer(without).service(router);
        let res = svc.oneshot(get_req("/outer/1", &[])).await.unwrap();
        assert_eq!(res.status(), 200);
    });
    let samples = parse_exposition(&text);
    let routes: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "http_server_request_duration_seconds_count")
        .filter_map(|s| s.label("http_route"))
        .collect();
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(routes.contains(&"/inner/{x}"));
    assert!(
        routes.contains(&"unmatched"),
        "no template without RouteLayer: {routes:?}"
    );
    assert!(!text.contains("/outer/1") && !text.contains("/inner/1"));
}

#[test]
fn live_stats_follow_the_traffic() {
    let (traffic, _) = with_metrics(|e| async move {
        let (app, handle) = app(&e);
        for _ in 0..3 {
            send(&app, get_req("/users/1", &[])).await;
        }
        send(&app, get_req("/boom", &[])).await;
        send(&app, get_req("/missing", &[])).await;
        let snap = handle.stats().snapshot();
        assert_eq!(snap.routes["/users/{id}"].success, 3);
        assert_eq!(snap.routes["unmatched"].client_error, 1);
        assert_eq!(snap.routes["/boom"].server_error, 1);
        handle.traffic()
    });
    assert_eq!(traffic.requests_total, 5);
    assert_eq!(traffic.in_flight, 0);
    assert_eq!(traffic.status.success, 3);
    assert_eq!(traffic.status.client_error, 1);
    assert_eq!(traffic.status.server_error, 1);
    assert_eq!(traffic.latency[0].count, 5);
}

#[test]
fn metrics_can_be_turned_off_while_stats_stay() {
    let (requests, text) = with_metrics(|_| async move {
        let config = ObserveConfig::builder().metrics(false).build().unwrap();
        let (observe, handle) = ObserveLayer::new(config);
        let app = Router::new()
            .route("/", get(|| async { "x" }))
            .layer(observe);
        send(&app, get_req("/", &[])).await;
        handle.traffic().requests_total
    });
    assert_eq!(requests, 1);
    assert!(!text.contains("http_server_request_duration_seconds_count"));
}

/// A `Write` that appends to a shared buffer, for capturing log output.
#[derive(Clone, Default)]
struct Capture(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs(f: impl FnOnce()) -> String {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = capture.0.lock().clone();
    String::from_utf8(bytes).unwrap()
}

fn completion_events(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["message"] == "request completed")
        .collect()
}

#[test]
fn the_span_carries_template_ids_and_the_completion_event_status() {
    let logs = capture_logs(|| {
        with_metrics(|e| async move {
            let (app, _) = app(&e);
            send(
                &app,
                get_req(
                    "/users/42",
                    &[("x-request-id", "log-me"), ("traceparent", PARENT)],
                ),
            )
            .await;
            send(&app, get_req("/nowhere/42", &[])).await;
        });
    });
    let events = completion_events(&logs);
    assert_eq!(events.len(), 2, "{logs}");
    let first = &events[0];
    assert_eq!(first["level"], "DEBUG");
    assert_eq!(first["http.response.status_code"], 200);
    assert!(first["latency_ms"].as_f64().unwrap() >= 0.0);
    let span = &first["span"];
    assert_eq!(span["name"], "http_request");
    assert_eq!(span["http.request.method"], "GET");
    assert_eq!(span["http.route"], "/users/{id}");
    assert_eq!(span["request_id"], "log-me");
    assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(events[1]["span"]["http.route"], "unmatched");
    assert!(
        !logs.contains("/users/42") && !logs.contains("/nowhere/42"),
        "{logs}"
    );
}

#[test]
fn server_errors_are_logged_at_the_configured_level() {
    let logs = capture_logs(|| {
        with_metrics(|_| async move {
            let trace = TraceConfig::default()
                .completion_level(tracing::Level::INFO)
                .server_error_level(tracing::Level::ERROR);
            let (observe, _) =
                ObserveLayer::new(ObserveConfig::builder().trace(trace).build().unwrap());
            let app = Router::new()
                .route("/ok", get(|| async { "ok" }))
                .route(
                    "/bad",
                    get(|| async { (http::StatusCode::BAD_GATEWAY, "x") }),
                )
                .layer(observe);
            send(&app, get_req("/ok", &[])).await;
            send(&app, get_req("/bad", &[])).await;
        });
    });
    let events = completion_events(&logs);
    assert_eq!(events[0]["level"], "INFO");
    assert_eq!(events[1]["level"], "ERROR");
    assert_eq!(events[1]["http.response.status_code"], 502);
}

#[test]
fn the_tower_http_trace_layer_produces_the_same_span() {
    let logs = capture_logs(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let app = Router::new()
                .route("/items/{id}", get(|| async { "ok" }))
                .layer(palisade::observe::trace_layer(TraceConfig::default()))
                .layer(RequestContextLayer::default());
            send(&app, get_req("/items/5", &[("x-request-id", "tower-http")])).await;
        });
    });
    let events = completion_events(&logs);
    assert_eq!(events.len(), 1, "{logs}");
    assert_eq!(events[0]["http.response.status_code"], 200);
    assert_eq!(events[0]["span"]["http.route"], "/items/{id}");
    assert_eq!(events[0]["span"]["request_id"], "tower-http");
}
