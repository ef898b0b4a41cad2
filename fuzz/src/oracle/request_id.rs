//! Properties of request ids and W3C `traceparent` handling (`palisade::observe`).
//!
//! Shared by the `request_id` fuzz target (fuzz/src/lib.rs) and the proptests in
//! middleware/tests/proptest_parsers.rs. The reference parsers below are written from the
//! specifications (W3C Trace Context level 1, the documented request-id charset), not from the
//! implementation.

use std::convert::Infallible;

use futures_util::FutureExt as _;
use http::{HeaderMap, HeaderValue, Request, Response};
use palisade::observe::{
    MAX_REQUEST_ID_LEN, MAX_TRACESTATE_LEN, RequestContextConfig, RequestContextLayer, RequestId,
    TraceContext, TraceParent,
};
use tower::{Layer as _, Service as _, ServiceExt as _};

/// A request as it may arrive: any number of id, `traceparent` and `tracestate` values (raw
/// bytes; those that are not valid header values are left out, as hyper would refuse them).
#[derive(Debug, Clone)]
pub(crate) struct RequestIdCase {
    /// `RequestContextConfig::max_len` (0 and values above 1024 must be refused).
    pub(crate) max_len: usize,
    /// Keep valid incoming ids.
    pub(crate) accept_incoming: bool,
    /// Parse and propagate trace context.
    pub(crate) trace_context: bool,
    /// Echo `traceparent` on the response.
    pub(crate) echo_traceparent: bool,
    /// `x-request-id` values.
    pub(crate) ids: Vec<Vec<u8>>,
    /// `traceparent` values.
    pub(crate) traceparents: Vec<Vec<u8>>,
    /// `tracestate` values.
    pub(crate) tracestates: Vec<Vec<u8>>,
}

/// A parsed traceparent: version, trace id, parent id, flags.
type Parsed = (u8, [u8; 16], [u8; 8], u8);

fn lower_hex(bytes: &[u8]) -> Option<Vec<u8>> {
    let pairs = bytes.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            if !s
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            {
                return None;
            }
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// W3C Trace Context: `version-traceid-parentid-flags`, lowercase hex; version `ff` invalid;
/// version `00` is exactly 55 characters; a later version may be followed by `-` and more
/// fields, which are ignored; all-zero trace or parent ids are invalid.
fn reference_traceparent(value: &[u8]) -> Option<Parsed> {
    let head = value.get(..55)?;
    let fields: Vec<&[u8]> = head.split(|b| *b == b'-').collect();
    let [version, trace, parent, flags] = fields.as_slice() else {
        return None;
    };
    if (version.len(), trace.len(), parent.len(), flags.len()) != (2, 32, 16, 2) {
        return None;
    }
    let version = lower_hex(version)?[0];
    let trace: [u8; 16] = lower_hex(trace)?.try_into().ok()?;
    let parent: [u8; 8] = lower_hex(parent)?.try_into().ok()?;
    let flags = lower_hex(flags)?[0];
    let rest = &value[55..];
    let valid = version != 0xff
        && (rest.is_empty() || (version != 0 && rest[0] == b'-'))
        && trace != [0; 16]
        && parent != [0; 8];
    valid.then_some((version, trace, parent, flags))
}

fn reference_request_id(id: &[u8], max_len: usize) -> bool {
    (1..=max_len).contains(&id.len())
        && id.iter().all(|b| {
            b.is_ascii_digit()
                || b.is_ascii_lowercase()
                || b.is_ascii_uppercase()
                || b".-_:".contains(b)
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fields(tp: &TraceParent) -> Parsed {
    (
        tp.version,
        tp.trace_id.to_bytes(),
        tp.parent_id.to_bytes(),
        tp.flags,
    )
}

/// The parsers agree with the references on every input and never panic.
pub(crate) fn check_parsers(case: &RequestIdCase) {
    for id in &case.ids {
        let want = reference_request_id(id, case.max_len);
        if let Ok(value) = HeaderValue::from_bytes(id) {
            let parsed = RequestId::parse(&value, case.max_len);
            assert_eq!(parsed.is_some(), want, "{id:?}");
            if let Some(parsed) = parsed {
                assert_eq!(parsed.as_str().as_bytes(), &id[..]);
                assert_eq!(parsed.header_value(), &value);
            }
        }
    }
    for tp in &case.traceparents {
        let got = TraceParent::parse(tp);
        assert_eq!(
            got.as_ref().map(fields),
            reference_traceparent(tp),
            "{tp:?}"
        );
    }
}

/// Formatting and parsing a traceparent round-trip; a context names its own span.
pub(crate) fn check_round_trip(version: u8, trace: [u8; 16], parent: [u8; 8], flags: u8) {
    let text = format!("{version:02x}-{}-{}-{flags:02x}", hex(&trace), hex(&parent));
    let parsed = TraceParent::parse(text.as_bytes());
    let valid = version != 0xff && trace != [0; 16] && parent != [0; 8];
    assert_eq!(
        parsed.as_ref().map(fields),
        valid.then_some((version, trace, parent, flags))
    );
    let Some(parsed) = parsed else { return };
    assert_eq!(parsed.trace_id.to_string(), hex(&trace));
    assert_eq!(parsed.parent_id.to_string(), hex(&parent));
    if version != 0 {
        let longer = format!("{text}-future-field");
        assert_eq!(TraceParent::parse(longer.as_bytes()), Some(parsed));
    }
    let ctx = TraceContext {
        trace_id: parsed.trace_id,
        span_id: parsed.parent_id,
        parent_id: None,
        flags,
        tracestate: None,
    };
    let ours = ctx.traceparent();
    let want = format!("00-{}-{}-{flags:02x}", hex(&trace), hex(&parent));
    assert_eq!(ours.to_str().ok(), Some(want.as_str()));
    assert_eq!(ctx.is_sampled(), flags & 1 == 1);
}

/// What the inner service saw.
type Seen = (Option<RequestId>, Option<TraceContext>, HeaderMap);

/// Through `RequestContextLayer`: a valid single incoming id is kept, anything else replaced
/// by a fresh 32-hex-digit id; a valid single traceparent is continued, anything else starts a
/// new trace; tracestate survives only with a continued trace and within 4096 bytes.
pub(crate) fn check_layer(case: &RequestIdCase) {
    let built = RequestContextConfig::builder()
        .max_len(case.max_len)
        .accept_incoming(case.accept_incoming)
        .trace_context(case.trace_context)
        .echo_traceparent(case.echo_traceparent)
        .build();
    assert_eq!(
        built.is_ok(),
        (1..=MAX_REQUEST_ID_LEN).contains(&case.max_len)
    );
    let Ok(config) = built else { return };

    let values = |raw: &[Vec<u8>]| -> Vec<HeaderValue> {
        raw.iter()
            .filter_map(|v| HeaderValue::from_bytes(v).ok())
            .collect()
    };
    let (ids, tps, states) = (
        values(&case.ids),
        values(&case.traceparents),
        values(&case.tracestates),
    );
    let mut req = Request::new(());
    for (name, list) in [
        ("x-request-id", &ids),
        ("traceparent", &tps),
        ("tracestate", &states),
    ] {
        for v in list {
            req.headers_mut().append(name, v.clone());
        }
    }

    let svc = RequestContextLayer::new(config).layer(tower::service_fn(|req: Request<()>| {
        let seen: Seen = (
            req.extensions().get::<RequestId>().cloned(),
            req.extensions().get::<TraceContext>().cloned(),
            req.headers().clone(),
        );
        async move { Ok::<_, Infallible>(Response::new(seen)) }
    }));
    let res = svc
        .oneshot(req)
        .now_or_never()
        .expect("the layer completes at once around a ready service")
        .unwrap_or_else(|e: Infallible| match e {});
    let (id, ctx, headers) = res.body().clone();

    let id = id.expect("a RequestId extension");
    let kept = match ids.as_slice() {
        [one] if case.accept_incoming && reference_request_id(one.as_bytes(), case.max_len) => {
            Some(one)
        }
        _ => None,
    };
    match kept {
        Some(one) => assert_eq!(id.header_value(), one),
        None => {
            let s = id.as_str();
            assert!(
                s.len() == 32
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "generated id {s:?}"
            );
        }
    }
    let seen_ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
    match kept {
        Some(_) => assert_eq!(seen_ids.len(), 1),
        None => assert_eq!(seen_ids, [id.header_value()]),
    }
    assert_eq!(res.headers().get("x-request-id"), Some(id.header_value()));

    if !case.trace_context {
        assert!(ctx.is_none());
        assert_eq!(headers.get_all("traceparent").iter().count(), tps.len());
        assert!(res.headers().get("traceparent").is_none());
        return;
    }
    let ctx = ctx.expect("a TraceContext extension");
    let continued = match tps.as_slice() {
        [one] => reference_traceparent(one.as_bytes()),
        _ => None,
    };
    match continued {
        Some((_, trace, parent, flags)) => {
            assert_eq!(ctx.trace_id.to_bytes(), trace);
            assert_eq!(ctx.parent_id.map(|p| p.to_bytes()), Some(parent));
            assert_eq!(ctx.flags, flags);
            let mut joined = Vec::new();
            for (i, v) in states.iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(v.as_bytes());
            }
            let want = (!states.is_empty() && joined.len() <= MAX_TRACESTATE_LEN).then_some(joined);
            let got: Vec<_> = headers.get_all("tracestate").iter().collect();
            match want {
                Some(want) => assert_eq!(got, [want.as_slice()]),
                None => assert!(got.is_empty(), "tracestate kept: {got:?}"),
            }
            assert_eq!(
                ctx.tracestate.as_ref().map(HeaderValue::as_bytes),
                got.first().map(|v| v.as_bytes())
            );
        }
        None => {
            assert!(!ctx.is_continued());
            assert_eq!(ctx.flags, 0);
            assert!(headers.get("tracestate").is_none());
            assert!(ctx.tracestate.is_none());
        }
    }
    let ours: Vec<_> = headers.get_all("traceparent").iter().collect();
    assert_eq!(ours, [&ctx.traceparent()]);
    let (version, trace, span, flags) =
        reference_traceparent(ours[0].as_bytes()).expect("our traceparent is valid");
    assert_eq!((version, flags), (0, ctx.flags));
    assert_eq!(
        (trace, span),
        (ctx.trace_id.to_bytes(), ctx.span_id.to_bytes())
    );
    let echoed = res.headers().get("traceparent");
    assert_eq!(echoed, case.echo_traceparent.then_some(ours[0]));
}

/// Runs the layer once more as a `Service` that is polled for readiness first (the path a
/// server takes), with the same expectations on the id.
pub(crate) fn check_ready_path(case: &RequestIdCase) {
    let Ok(config) = RequestContextConfig::builder()
        .max_len(case.max_len.clamp(1, MAX_REQUEST_ID_LEN))
        .build()
    else {
        panic!("a clamped max_len is valid");
    };
    let mut svc = RequestContextLayer::new(config).layer(tower::service_fn(|req: Request<()>| {
        let id = req.extensions().get::<RequestId>().cloned();
        async move { Ok::<_, Infallible>(Response::new(id)) }
    }));
    for raw in &case.ids {
        let Ok(value) = HeaderValue::from_bytes(raw) else {
            continue;
        };
        let mut req = Request::new(());
        req.headers_mut().insert("x-request-id", value.clone());
        let ready = svc.ready().now_or_never().expect("ready at once");
        let res = ready
            .unwrap_or_else(|e: Infallible| match e {})
            .call(req)
            .now_or_never()
            .expect("completes at once")
            .unwrap_or_else(|e: Infallible| match e {});
        let id = res.body().clone().expect("a RequestId extension");
        let valid = reference_request_id(raw, case.max_len.clamp(1, MAX_REQUEST_ID_LEN));
        assert_eq!(*id.header_value() == value, valid, "{raw:?} -> {id:?}");
    }
}
