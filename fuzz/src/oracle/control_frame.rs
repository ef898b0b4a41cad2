//! Properties of the supervisor ↔ worker control channel framing
//! (`palisade_server::channel`: `u32` big-endian length, then a JSON message with `"v"`, the
//! protocol version).
//!
//! Shared by the `control_frame` fuzz target (fuzz/src/lib.rs) and the proptests in
//! server/tests/proptest_config.rs.

use futures_util::FutureExt as _;
use palisade_server::channel::{self, FrameError, MAX_FRAME, SupervisorMsg, WorkerMsg};
use serde_json::Value;

/// Either direction's message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Msg {
    /// Worker → supervisor.
    Worker(WorkerMsg),
    /// Supervisor → worker.
    Supervisor(SupervisorMsg),
}

/// Equality up to JSON number precision: serde_json's default float parser (without its
/// `float_roundtrip` feature) may land a few ulps off, most visibly on subnormals, so floats
/// are equal within 16 ulps (every other value exactly).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y
                        || (x.is_sign_negative() == y.is_sign_negative()
                            && x.to_bits().abs_diff(y.to_bits()) <= 16)
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn as_json(m: &Msg) -> Value {
    match m {
        Msg::Worker(w) => serde_json::to_value(w),
        Msg::Supervisor(s) => serde_json::to_value(s),
    }
    .expect("messages serialize")
}

fn encode(m: &Msg) -> Vec<u8> {
    match m {
        Msg::Worker(w) => channel::encode(w),
        Msg::Supervisor(s) => channel::encode(s),
    }
}

/// Reads one message of the same direction as `like` from `r` (an in-memory reader is always
/// ready, so the future completes at once).
fn read_like(like: &Msg, r: &mut &[u8]) -> Result<Msg, FrameError> {
    let fut = async {
        match like {
            Msg::Worker(_) => channel::read::<_, WorkerMsg>(r).await.map(Msg::Worker),
            Msg::Supervisor(_) => channel::read::<_, SupervisorMsg>(r)
                .await
                .map(Msg::Supervisor),
        }
    };
    fut.now_or_never()
        .expect("an in-memory read completes at once")
}

/// A sequence of messages written back to back reads back in order, equal (floats up to
/// parser precision), then the channel reports `Closed`. Every frame's length prefix is its
/// payload's length and the payload is a JSON object with `"v"` (the protocol version) and a `type`.
pub(crate) fn check_round_trip(msgs: &[Msg]) {
    let mut stream = Vec::new();
    for m in msgs {
        let frame = encode(m);
        let len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(len, frame.len() - 4);
        let payload: Value = serde_json::from_slice(&frame[4..]).expect("JSON payload");
        assert_eq!(payload["v"], channel::PROTOCOL_VERSION);
        assert!(payload["type"].is_string(), "{payload}");
        stream.extend_from_slice(&frame);
    }
    let mut r: &[u8] = &stream;
    for m in msgs {
        let got = read_like(m, &mut r).unwrap_or_else(|e| panic!("{m:?} did not read back: {e}"));
        assert!(same_json(&as_json(&got), &as_json(m)), "{got:?} != {m:?}");
    }
    let like = msgs
        .first()
        .cloned()
        .unwrap_or(Msg::Worker(WorkerMsg::Ready));
    assert!(matches!(read_like(&like, &mut r), Err(FrameError::Closed)));
}

/// Arbitrary bytes as one frame payload: `decode` never panics; a decoded message re-encodes
/// to a frame that reads back as the same message; refusals are `Malformed` or `Version`.
pub(crate) fn check_payload(payload: &[u8]) {
    let results = [
        channel::decode::<WorkerMsg>(payload).map(Msg::Worker),
        channel::decode::<SupervisorMsg>(payload).map(Msg::Supervisor),
    ];
    for result in results {
        match result {
            Ok(m) => check_round_trip(&[m]),
            Err(FrameError::Malformed(why)) => assert!(!why.is_empty()),
            Err(FrameError::Version(v)) => assert_ne!(v, channel::PROTOCOL_VERSION),
            Err(other) => panic!("decode returned {other:?}"),
        }
    }
}

/// Arbitrary bytes as a channel stream: reading frame after frame never panics, never allocates
/// a frame over `MAX_FRAME`, always makes progress, and each outcome matches an independent
/// reading of the bytes (clean end → `Closed`, short frame → I/O error, oversized length →
/// `TooLarge`, otherwise what `decode` says of the payload).
pub(crate) fn check_stream(bytes: &[u8]) {
    for like in [
        Msg::Worker(WorkerMsg::Ready),
        Msg::Supervisor(SupervisorMsg::Drain {
            delay_ms: 0,
            timeout_ms: 0,
        }),
    ] {
        let mut r: &[u8] = bytes;
        loop {
            let before = r.len();
            let result = read_like(&like, &mut r);
            if before < 4 {
                assert!(matches!(result, Err(FrameError::Closed)), "{result:?}");
                break;
            }
            let len = u32::from_be_bytes(bytes[bytes.len() - before..][..4].try_into().expect("4"))
                as usize;
            if len > MAX_FRAME {
                assert!(
                    matches!(result, Err(FrameError::TooLarge(n)) if n == len),
                    "{result:?}"
                );
                break;
            }
            if before - 4 < len {
                assert!(matches!(result, Err(FrameError::Io(_))), "{result:?}");
                break;
            }
            assert_eq!(
                r.len(),
                before - 4 - len,
                "a frame consumed the wrong number of bytes"
            );
            let payload = &bytes[bytes.len() - before + 4..][..len];
            let direct = match &like {
                Msg::Worker(_) => channel::decode::<WorkerMsg>(payload).map(Msg::Worker),
                Msg::Supervisor(_) => {
                    channel::decode::<SupervisorMsg>(payload).map(Msg::Supervisor)
                }
            };
            match (&result, &direct) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(FrameError::Malformed(_)), Err(FrameError::Malformed(_)))
                | (Err(FrameError::Version(_)), Err(FrameError::Version(_))) => {}
                _ => panic!("read {result:?} but decode {direct:?}"),
            }
        }
    }
}
