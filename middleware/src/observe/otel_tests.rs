use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use opentelemetry_sdk::trace::ShouldSample as _;
use palisade_tests::otlp::OtlpReceiver;
use tower::ServiceExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;
use crate::Stack;
use crate::observe::ObserveConfig;
use crate::rate_limit::PeerAddr;

#[test]
fn config_validation_names_the_bad_value() {
    assert!(matches!(
        OtelConfig::builder("ftp://collector").build(),
        Err(OtelError::Endpoint(_))
    ));
    assert!(matches!(
        OtelConfig::builder("not a url").build(),
        Err(OtelError::Endpoint(_))
    ));
    assert!(matches!(
        OtelConfig::builder("http://c:4318")
            .sampling_ratio(1.5)
            .build(),
        Err(OtelError::SamplingRatio(_))
    ));
    assert!(matches!(
        OtelConfig::builder("http://c:4318")
            .sampling_ratio(f64::NAN)
            .build(),
        Err(OtelError::SamplingRatio(_))
    ));
    assert!(matches!(
        OtelConfig::builder("http://c:4318")
            .service_name(" ")
            .build(),
        Err(OtelError::ServiceName)
    ));
    assert!(matches!(
        OtelConfig::builder("http://c:4318")
            .header("bad name", "v")
            .build(),
        Err(OtelError::Header(_))
    ));
    assert!(matches!(
        OtelConfig::builder("http://c:4318")
            .max_queue_size(0)
            .build(),
        Err(OtelError::Zero("max_queue_size"))
    ));
    let base = OtelConfig::builder("http://127.0.0.1:4318")
        .build()
        .unwrap();
    assert_eq!(
        base.endpoint().to_string(),
        "http://127.0.0.1:4318/v1/traces"
    );
    let full = OtelConfig::builder("http://127.0.0.1:4318/custom/traces")
        .build()
        .unwrap();
    assert_eq!(full.endpoint().path(), "/custom/traces");
}

#[test]
fn root_sampling_matches_the_sdk_ratio_sampler() {
    for ratio in [0.0, 0.01, 0.25, 0.5, 0.9, 1.0] {
        let sdk = Sampler::TraceIdRatioBased(ratio);
        let mut sampled = 0;
        for _ in 0..2000 {
            let id = context::TraceId::generate();
            let ours = context::ratio_samples(ratio, id);
            let theirs = sdk.should_sample(
                None,
                opentelemetry::trace::TraceId::from_bytes(id.to_bytes()),
                "x",
                &opentelemetry::trace::SpanKind::Server,
                &[],
                &[],
            );
            let theirs = matches!(
                theirs.decision,
                opentelemetry_sdk::trace::SamplingDecision::RecordAndSample
            );
            assert_eq!(ours, theirs, "ratio {ratio}");
            sampled += usize::from(ours);
        }
        let expected = ratio * 2000.0;
        assert!(
            (sampled as f64 - expected).abs() <= 200.0,
            "ratio {ratio}: {sampled} of 2000"
        );
    }
}

/// The request span of a `Stack` with observe reaches an OTLP receiver with the caller's trace
/// id, the span id the response names, and the resource attributes; a new trace gets the ids
/// and the sampled flag the response shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_spans_are_exported_with_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let exporter = OtelExporter::new(
        OtelConfig::builder(receiver.endpoint())
            .service_name("stack-test")
            .service_version("9.9.9")
            .worker_id(3)
            .scheduled_delay(Duration::from_millis(50))
            .build()
            .unwrap(),
    )
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(
        exporter
            .layer()
            .with_filter(exporter.filter("warn").unwrap()),
    );
    let _default = tracing::subscriber::set_default(subscriber);

    let stack = Stack::new()
        .observe(ObserveConfig::default())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/users/{id}", get(|| async { "hi" }))
        .layer(stack);
    let request = |traceparent: Option<&str>| {
        let mut req = http::Request::get("/users/7");
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(PeerAddr("192.0.2.1:5000".parse().unwrap()));
        req
    };

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let res = app
        .clone()
        .oneshot(request(Some(&format!("00-{trace}-{parent}-01"))))
        .await
        .unwrap();
    let ours = res.headers()["traceparent"].to_str().unwrap().to_owned();
    // A new trace, sampled with ratio 1: the response says `01` and the span is exported.
    let res = app.clone().oneshot(request(None)).await.unwrap();
    let root = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(root.ends_with("-01"), "{root}");
    let root_trace = root.split('-').nth(1).unwrap().to_owned();
    let root_span = root.split('-').nth(2).unwrap().to_owned();

    let flusher = exporter.clone();
    tokio::task::spawn_blocking(move || flusher.force_flush())
        .await
        .unwrap()
        .unwrap();
    let span = receiver
        .wait_for(Duration::from_secs(10), |s| s.trace_id == trace)
        .await
        .expect("the continued trace's span");
    assert_eq!(span.parent_span_id, parent);
    assert_eq!(span.span_id, ours.split('-').nth(2).unwrap());
    assert_eq!(span.attributes["http.route"], "/users/{id}");
    assert_eq!(span.resource["service.name"], "stack-test");
    assert_eq!(span.resource["service.version"], "9.9.9");
    assert_eq!(span.resource["palisade.worker.id"], "3");
    let root = receiver
        .wait_for(Duration::from_secs(10), |s| s.trace_id == root_trace)
        .await
        .expect("the new trace's span");
    assert_eq!(root.span_id, root_span);
    assert_eq!(root.parent_span_id, "");

    let shutdown = exporter.clone();
    tokio::task::spawn_blocking(move || shutdown.shutdown())
        .await
        .unwrap()
        .unwrap();
}

/// A collector that does not answer costs nothing to the requests: they are served at once and
/// the queue is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_never_slows_requests() {
    // A port nothing listens on.
    let port = palisade_tests::free_port();
    let exporter = OtelExporter::new(
        OtelConfig::builder(format!("http://127.0.0.1:{port}"))
            .max_queue_size(16)
            .scheduled_delay(Duration::from_millis(10))
            .export_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(
        exporter
            .layer()
            .with_filter(exporter.filter("warn").unwrap()),
    );
    let _default = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(crate::observe::ObserveLayer::new(ObserveConfig::default()).0);
    let started = std::time::Instant::now();
    for _ in 0..500 {
        let res = app
            .clone()
            .oneshot(http::Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Shutting down with a dead collector ends within the export deadline, never hangs.
    let shutdown = exporter.clone();
    let started = std::time::Instant::now();
    let _ = tokio::task::spawn_blocking(move || shutdown.shutdown())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
