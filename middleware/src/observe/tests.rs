use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};

use super::context::{TraceParent, is_valid_request_id};
use super::metrics::{method_index, method_label, method_label_of};
use super::*;
use crate::control::histogram::{base64_decode, base64_encode};

// === request ids ===

#[test]
fn request_id_charset_and_length_are_enforced() {
    assert!(is_valid_request_id(b"abc-DEF_123.x:y", 128));
    assert!(is_valid_request_id(&[b'a'; 128], 128));
    assert!(!is_valid_request_id(&[b'a'; 129], 128));
    assert!(!is_valid_request_id(b"", 128));
    for bad in [
        &b"a b"[..],
        b"a\"b",
        b"a/b",
        b"a;b",
        b"\xc3\xa9",
        b"a\tb",
        b"<script>",
    ] {
        assert!(!is_valid_request_id(bad, 128), "{bad:?} must be refused");
    }
}

#[test]
fn generated_request_ids_are_32_hex_digits_and_distinct() {
    let a = RequestId::generate();
    let b = RequestId::generate();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 32);
    assert!(
        a.as_str()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(RequestId::parse(a.header_value(), 128).is_some());
}

// === traceparent ===

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn traceparent_parses_the_w3c_example() {
    let tp = TraceParent::parse(VALID.as_bytes()).unwrap();
    assert_eq!(tp.version, 0);
    assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(tp.flags, 1);
}

#[test]
fn invalid_traceparents_are_refused() {
    let cases = [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", // short
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // v00 with extra
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // separator
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // non-hex
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // bad version
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // v01 junk after flags
    ];
    for case in cases {
        assert!(
            TraceParent::parse(case.as_bytes()).is_none(),
            "{case} must be refused"
        );
    }
}

#[test]
fn later_traceparent_versions_are_read_as_version_00() {
    let tp =
        TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-stuff")
            .unwrap();
    assert_eq!(tp.version, 1);
    assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn trace_context_continues_a_valid_parent_with_a_new_span() {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(VALID));
    headers.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
    let ctx = TraceContext::from_headers(&headers);
    assert!(ctx.is_continued());
    assert!(ctx.is_sampled());
    assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ctx.parent_id.unwrap().to_string(), "00f067aa0ba902b7");
    assert_ne!(ctx.span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(ctx.tracestate.as_ref().unwrap(), "congo=t61rcWkgMzE");
    let ours = ctx.traceparent();
    let ours = ours.to_str().unwrap();
    assert_eq!(
        ours,
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", ctx.span_id)
    );
    assert!(TraceParent::parse(ours.as_bytes()).is_some());
}

#[test]
fn trace_context_starts_a_new_trace_without_a_valid_parent() {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static("garbage"));
    headers.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
    let ctx = TraceContext::from_headers(&headers);
    assert!(!ctx.is_continued());
    assert_eq!(ctx.flags, 0);
    assert!(
        ctx.tracestate.is_none(),
        "tracestate is dropped with an invalid parent"
    );

    // Two traceparent headers are invalid too.
    let mut headers = HeaderMap::new();
    headers.append("traceparent", HeaderValue::from_static(VALID));
    headers.append("traceparent", HeaderValue::from_static(VALID));
    assert!(!TraceContext::from_headers(&headers).is_continued());
}

#[test]
fn several_tracestate_headers_are_joined() {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(VALID));
    headers.append("tracestate", HeaderValue::from_static("a=1"));
    headers.append("tracestate", HeaderValue::from_static("b=2"));
    let ctx = TraceContext::from_headers(&headers);
    assert_eq!(ctx.tracestate.unwrap(), "a=1,b=2");
}

// === labels ===

#[test]
fn unknown_methods_are_labelled_other() {
    assert_eq!(method_label_of(&Method::GET), "GET");
    assert_eq!(method_label_of(&Method::PATCH), "PATCH");
    assert_eq!(
        method_label_of(&Method::from_bytes(b"PURGE").unwrap()),
        "_OTHER"
    );
    assert_eq!(
        method_label(method_index(&Method::from_bytes(b"get").unwrap())),
        "_OTHER"
    );
}

// === config ===

#[test]
fn config_errors_name_field_and_value() {
    let err = RequestContextConfig::builder()
        .max_len(5000)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "observe.request_id.max_len must be between 1 and 1024 (got 5000)"
    );
    let err = StatsConfig::builder().shards(6).build().unwrap_err();
    assert!(err.to_string().contains("(got 6)"));
    assert!(StatsConfig::builder().max_routes(0).build().is_err());
    assert!(ObserveConfig::builder().max_routes(0).build().is_err());
}

// === base64 ===

#[test]
fn base64_round_trips_and_refuses_garbage() {
    for len in 0..40 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let text = base64_encode(&bytes);
        assert_eq!(text.len() % 4, 0);
        assert_eq!(base64_decode(&text).unwrap(), bytes, "len {len}");
    }
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_encode(b"fo"), "Zm8=");
    assert!(base64_decode("Zm8").is_none());
    assert!(base64_decode("Z=8=").is_none());
    assert!(base64_decode("Zm8=Zm8=").is_none());
    assert!(base64_decode("Zm!=").is_none());
}

// === stats ===

fn recorder() -> StatsRecorder {
    StatsRecorder::new(
        StatsConfig::builder()
            .shards(2)
            .max_routes(3)
            .build()
            .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn short_window_forgets_samples_older_than_ten_seconds() {
    let stats = recorder();
    stats.record("/a", 200, Duration::from_millis(100));
    tokio::time::advance(Duration::from_secs(5)).await;
    stats.record("/a", 200, Duration::from_millis(1));
    assert_eq!(stats.short_window().count(), 2);
    tokio::time::advance(Duration::from_secs(5)).await;
    let short = stats.short_window();
    assert_eq!(short.count(), 1, "the sample from t=0 left the 10 s window");
    assert!(short.max() < Duration::from_millis(2));
    assert_eq!(stats.long_window().count(), 2);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(stats.long_window().count(), 0);
    assert_eq!(stats.traffic().requests_total, 2, "totals never expire");
}

#[tokio::test(start_paused = true)]
async fn long_window_keeps_at_least_the_last_fifty_seconds() {
    let stats = recorder();
    for s in 0..70u64 {
        stats.record("/a", 200, Duration::from_millis(s + 1));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    // now = 70 s; samples were recorded at seconds 0..=69.
    let long = stats.long_window();
    assert!((50..=60).contains(&long.count()), "count {}", long.count());
    assert_eq!(stats.short_window().count(), 9);
    let traffic = stats.traffic();
    assert_eq!(traffic.latency[0].window_secs, 10);
    assert_eq!(traffic.latency[1].window_secs, 60);
    assert_eq!(traffic.latency[1].count, long.count());
}

#[test]
fn routes_beyond_the_bound_are_counted_as_other() {
    let stats = recorder();
    for route in ["/a", "/b", "/c", "/d", "/e"] {
        stats.record(route, 200, Duration::from_millis(1));
    }
    let snap = stats.snapshot();
    assert_eq!(snap.routes.len(), 4);
    assert_eq!(snap.routes["_other"].success, 2);
    assert_eq!(snap.requests(), 5);
}

#[test]
fn failed_requests_count_as_server_errors() {
    let stats = recorder();
    stats.record("/a", 0, Duration::from_millis(1));
    stats.record("/a", 503, Duration::from_millis(1));
    stats.record("/a", 301, Duration::from_millis(1));
    stats.record("/a", 101, Duration::from_millis(1));
    let t = stats.traffic();
    assert_eq!(t.status.server_error, 2);
    assert_eq!(t.status.redirection, 1);
    assert_eq!(t.status.informational, 1);
}

#[test]
fn in_flight_follows_guards_across_threads() {
    let stats = recorder();
    let guards: Vec<_> = (0..4).map(|_| stats.begin()).collect();
    assert_eq!(stats.in_flight(), 4);
    let moved = stats.clone();
    std::thread::spawn(move || {
        moved.start();
        moved.end();
        drop(guards);
    })
    .join()
    .unwrap();
    assert_eq!(stats.in_flight(), 0);
    assert_eq!(stats.take_delta().in_flight, 0);
}

#[test]
fn absorbing_a_delta_adds_to_totals_and_windows() {
    let worker = recorder();
    worker.record("/a", 200, Duration::from_millis(5));
    worker.record("/b", 500, Duration::from_millis(50));
    let delta = worker.take_delta();
    let supervisor = recorder();
    supervisor.absorb(&delta).unwrap();
    supervisor.absorb(&delta).unwrap();
    let t = supervisor.traffic();
    assert_eq!(t.requests_total, 4);
    assert_eq!(t.status.server_error, 2);
    assert_eq!(t.latency[0].count, 4);
    let mut foreign = delta;
    foreign.version = 99;
    assert!(supervisor.absorb(&foreign).is_err());
}

#[test]
fn snapshots_round_trip_through_json_and_bytes() {
    let stats = recorder();
    for i in 0..1000u64 {
        stats.record(
            "/a",
            200 + (i % 3) as u16 * 100,
            Duration::from_micros(i * 97 + 3),
        );
    }
    let snap = stats.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    assert!(json.len() < 4096, "compact: {} bytes", json.len());
    let back: StatsSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["v"], 1);
    assert!(value["latency"].is_string());

    let bytes = snap.latency.to_bytes().unwrap();
    assert_eq!(LatencyHistogram::from_bytes(&bytes).unwrap(), snap.latency);
    assert!(LatencyHistogram::from_bytes(b"not a histogram").is_err());
    assert!(serde_json::from_str::<StatsSnapshot>(r#"{"v":1,"status":{"informational":0,"success":0,"redirection":0,"client_error":0,"server_error":0},"latency":"!!"}"#).is_err());
}
