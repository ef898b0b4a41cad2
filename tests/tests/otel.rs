//! OpenTelemetry export of the reference server, end to end: its worker processes send their
//! request spans over OTLP/HTTP to a receiver in the test, which decodes them with
//! `opentelemetry-proto`. One trace id runs from the client's `traceparent` to the exported span
//! and the log lines; the sampling ratio and the caller's sampled flag decide what is exported;
//! a drain flushes what is queued.

use std::collections::BTreeSet;
use std::time::Duration;

use http::Method;
use palisade_tests::http::Client;
use palisade_tests::load::supervisor;
use palisade_tests::otlp::{OtlpReceiver, ReceivedSpan};
use palisade_tests::server::ServerProcess;

const WAIT: Duration = Duration::from_secs(15);

/// A fresh random trace id and parent span id (hex), for a client `traceparent`.
fn ids(n: u64) -> (String, String) {
    let pid = u64::from(std::process::id());
    let trace = format!("{:016x}{:016x}", 0x5a11_5ade_0000_0000 | pid, n + 1);
    let parent = format!("{:016x}", 0xc11e_0000_0000_0000 | (n + 1));
    (trace, parent)
}

/// `GET path` with a `traceparent` (`flags` `01` or `00`); the response's `traceparent`.
async fn traced_get(
    client: &Client,
    server: &ServerProcess,
    path: &str,
    trace: &str,
    parent: &str,
    flags: &str,
) -> String {
    let traceparent = format!("00-{trace}-{parent}-{flags}");
    let res = client
        .request(
            Method::GET,
            &server.url(path),
            &[("traceparent", &traceparent)],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{path}");
    res.header("traceparent").unwrap().to_owned()
}

fn otel_args<'a>(endpoint: &'a str, ratio: &'a str, delay_ms: &'a str) -> Vec<String> {
    vec![
        "--set".into(),
        format!("otel.endpoint={endpoint}"),
        "--set".into(),
        format!("otel.sampling_ratio={ratio}"),
        "--set".into(),
        "otel.service_name=palisade-e2e".into(),
        "--set".into(),
        format!("otel.scheduled_delay_ms={delay_ms}"),
        "--set".into(),
        "otel.headers=[\"x-collector-key: e2e\"]".into(),
    ]
}

#[tokio::test]
async fn workers_export_request_spans_with_the_clients_trace_id() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let args = otel_args(&endpoint, "1.0", "100");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = supervisor(2, &args);
    // A new connection per request, so both workers answer some.
    let client = Client::without_keep_alive();

    let mut workers = BTreeSet::new();
    for n in 0..40 {
        let (trace, parent) = ids(n);
        let ours = traced_get(&client, &server, "/plaintext", &trace, &parent, "01").await;
        // The response names the same trace, our span for the hop, and keeps the sampled flag.
        let parts: Vec<&str> = ours.split('-').collect();
        assert_eq!(parts[1], trace);
        assert_ne!(parts[2], parent);
        assert_eq!(parts[3], "01");

        let span = receiver
            .wait_for(WAIT, |s| s.trace_id == trace)
            .await
            .unwrap_or_else(|| panic!("no span for trace {trace}: {:?}", receiver.spans()));
        // One id system: the exported span is the hop the response names, child of the caller.
        assert_eq!(span.span_id, parts[2], "{span:?}");
        assert_eq!(span.parent_span_id, parent, "{span:?}");
        assert_eq!(span.name, "http_request");
        assert_eq!(span.kind, 2, "server span: {span:?}");
        assert_eq!(span.attributes["http.route"], "/plaintext", "{span:?}");
        assert_eq!(span.attributes["http.request.method"], "GET", "{span:?}");
        assert_eq!(
            span.attributes["http.response.status_code"], "200",
            "{span:?}"
        );
        assert_eq!(span.resource["service.name"], "palisade-e2e", "{span:?}");
        assert_eq!(
            span.resource["service.version"],
            env!("CARGO_PKG_VERSION"),
            "{span:?}"
        );
        let worker = span.resource["palisade.worker.id"].clone();
        assert!(
            span.resource["service.instance.id"].ends_with(&format!("-{worker}")),
            "{span:?}"
        );
        workers.insert(worker);
        if workers.len() == 2 && n >= 4 {
            break;
        }
    }
    assert_eq!(workers.len(), 2, "spans from both workers: {workers:?}");
    assert!(
        receiver
            .headers()
            .iter()
            .all(|h| h.get("x-collector-key").is_some_and(|v| v == "e2e")),
        "every export carries the configured header"
    );
}

#[tokio::test]
async fn ratio_zero_exports_only_what_the_caller_sampled() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let args = otel_args(&endpoint, "0.0", "50");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = supervisor(1, &args);
    // One keep-alive connection: one worker, one export queue, in order.
    let client = Client::new();

    let mut unsampled = Vec::new();
    for n in 0..10 {
        // New traces (no traceparent): sampled by the ratio, 0 → never; the response says so.
        let res = client.get(&server.url("/plaintext")).await.unwrap();
        let tp = res.header("traceparent").unwrap().to_owned();
        assert!(tp.ends_with("-00"), "{tp}");
        unsampled.push(tp.split('-').nth(1).unwrap().to_owned());
        // Continued traces the caller did not sample.
        let (trace, parent) = ids(100 + n);
        let tp = traced_get(&client, &server, "/plaintext", &trace, &parent, "00").await;
        assert!(tp.ends_with("-00"), "{tp}");
        unsampled.push(trace);
    }
    // The caller sampled this one: parent-based sampling exports it.
    let (trace, parent) = ids(999);
    traced_get(&client, &server, "/plaintext", &trace, &parent, "01").await;
    let span = receiver.wait_for(WAIT, |s| s.trace_id == trace).await;
    assert!(span.is_some(), "the sampled trace is exported");
    // Everything before it went through the same queue: nothing unsampled was exported.
    let spans: Vec<ReceivedSpan> = receiver.spans();
    assert!(
        spans.iter().all(|s| !unsampled.contains(&s.trace_id)),
        "unsampled spans exported: {spans:?}"
    );
    assert_eq!(spans.len(), 1, "{spans:?}");
}

#[tokio::test]
async fn a_drain_flushes_queued_spans_before_the_worker_exits() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    // Batches wait a minute: only the flush at exit can send this span in time.
    let args = otel_args(&endpoint, "1.0", "60000");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = supervisor(1, &args);
    let client = Client::new();
    let (trace, parent) = ids(7);
    traced_get(&client, &server, "/plaintext", &trace, &parent, "01").await;
    drop(client);
    assert!(receiver.spans().is_empty());

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait_timeout(Duration::from_secs(20));
    assert!(status.is_some(), "the server exits after its drain");
    let span = receiver.wait_for(WAIT, |s| s.trace_id == trace).await;
    assert!(
        span.is_some(),
        "the queued span is flushed at exit: {:?}",
        receiver.spans()
    );
}

#[tokio::test]
async fn info_log_lines_carry_the_trace_id_and_request_id() {
    let receiver = OtlpReceiver::start().await;
    let dir = palisade_tests::load::temp_dir("otel-log");
    let log = dir.join("stderr.log");
    for with_otel in [false, true] {
        let _ = std::fs::remove_file(&log);
        let mut builder = ServerProcess::builder()
            .args([
                "--single-process",
                "--set",
                "log.format=\"json\"",
                "--set",
                "log.level=\"info\"",
                "--set",
                "log.access=true",
            ])
            // The log level the test is about, whatever the harness's default.
            .env("RUST_LOG", "info")
            .stderr_to(&log);
        if with_otel {
            builder = builder.args([
                "--set".to_owned(),
                format!("otel.endpoint={}", receiver.endpoint()),
            ]);
        }
        let server = builder.spawn();
        let client = Client::new();
        let (trace, parent) = ids(if with_otel { 501 } else { 500 });
        let request_id = format!("req-log-{with_otel}");
        let traceparent = format!("00-{trace}-{parent}-01");
        let res = client
            .request(
                Method::GET,
                &server.url("/plaintext"),
                &[("traceparent", &traceparent), ("x-request-id", &request_id)],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(res.status, 200);

        // The `request completed` line, at info, names the request and its trace.
        let mut line = None;
        let found = palisade_tests::wait_until(WAIT, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            line = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| {
                    v["fields"]["message"] == "request completed"
                        && v.to_string().contains(&request_id)
                });
            line.is_some()
        });
        assert!(found, "no completion line (otel: {with_otel}): {}", {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        let line = line.unwrap();
        assert_eq!(line["level"], "INFO", "{line}");
        let field = |name: &str| {
            line.get(name)
                .or_else(|| line["fields"].get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        assert_eq!(field("trace_id").as_deref(), Some(trace.as_str()), "{line}");
        assert_eq!(
            field("request_id").as_deref(),
            Some(request_id.as_str()),
            "{line}"
        );
        if with_otel {
            // The exported span is the same request.
            let span = receiver.wait_for(WAIT, |s| s.trace_id == trace).await;
            assert!(span.is_some(), "{:?}", receiver.spans());
        }
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
