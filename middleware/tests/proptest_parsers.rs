//! Property tests for everything that parses untrusted input in the `palisade` crate: the L2
//! cache envelope, admin merge-patches and each layer handle's `apply`, the IETF `RateLimit`
//! headers, request ids and W3C `traceparent`.
//!
//! The properties themselves live in `fuzz/src/oracle/*.rs` and are shared with the cargo-fuzz
//! targets of the same names (see fuzz/README.md): proptest explores them here on every test run,
//! libFuzzer explores them for as long as it is given.
#![cfg(all(
    feature = "cache",
    feature = "circuit-breaker",
    feature = "observe",
    feature = "rate-limit"
))]

#[path = "../../fuzz/src/oracle/admin_patch.rs"]
mod admin_patch;
#[path = "../../fuzz/src/oracle/l2_codec.rs"]
mod l2_codec;
#[path = "../../fuzz/src/oracle/ratelimit_headers.rs"]
mod ratelimit_headers;
#[path = "../../fuzz/src/oracle/request_id.rs"]
mod request_id;
#[path = "../../fuzz/proptest/strategies.rs"]
mod strategies;

use std::time::Duration;

use palisade::cache::codec::EnvelopeMeta;
use palisade::rate_limit::{Limits, Mode};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Value};

// === strategies ===

use strategies::json;

fn interesting() -> impl Strategy<Value = Value> {
    proptest::sample::select(admin_patch::interesting_values())
}

fn patch(target: admin_patch::Target) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        7 => proptest::sample::select(admin_patch::settings_keys(target)),
        1 => "\\PC{0,10}",
    ];
    let value = prop_oneof![
        4 => interesting(),
        1 => json(),
        1 => proptest::collection::btree_map("\\PC{0,10}", interesting(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
    ];
    prop_oneof![
        15 => proptest::collection::btree_map(key, value, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => json(),
    ]
}

fn steps(target: admin_patch::Target) -> impl Strategy<Value = Vec<admin_patch::Step>> {
    vec(
        (patch(target), any::<bool>())
            .prop_map(|(patch, dry_run)| admin_patch::Step { patch, dry_run }),
        1..6,
    )
}

fn limits() -> impl Strategy<Value = Limits> {
    const MS: u64 = 1_000_000;
    let mode =
        proptest::sample::select(vec![Mode::Enforce, Mode::Enforce, Mode::Shadow, Mode::Off]);
    // Mostly ordinary quotas (so layers build and requests hit the limit), sometimes values on
    // and past every rule.
    let usual = (
        proptest::sample::select(vec![1u32, 2, 3, 5, 10, 100, 1000]),
        proptest::sample::select(vec![
            MS,
            100 * MS,
            999 * MS,
            1000 * MS,
            1500 * MS,
            60_000 * MS,
        ]),
        proptest::sample::select(vec![1u32, 2, 3, 5, 20]),
    );
    let edge = (
        prop_oneof![
            proptest::sample::select(vec![0u32, 10_000_000, 1_000_000_000, u32::MAX]),
            any::<u32>(),
        ],
        prop_oneof![
            proptest::sample::select(vec![
                0,
                999_999,
                3_600_000 * MS,
                366 * 86_400_000 * MS,
                367 * 86_400_000 * MS,
            ]),
            0..400 * 86_400_000 * MS,
        ],
        prop_oneof![
            proptest::sample::select(vec![0u32, 100, 10_000_000, 10_000_001]),
            any::<u32>(),
        ],
    );
    (prop_oneof![4 => usual, 1 => edge], mode).prop_map(|((rate, per, burst), mode)| Limits {
        rate,
        per: Duration::from_nanos(per),
        burst,
        mode,
    })
}

fn header_case() -> impl Strategy<Value = ratelimit_headers::HeaderCase> {
    let name = prop_oneof![
        8 => proptest::sample::select(vec![
            "api".to_owned(), "login".into(), "a".into(), "x.y-z_1".into(), "API".into(),
            "n".repeat(64),
        ]),
        1 => proptest::sample::select(vec![
            "n".repeat(65), String::new(), "bad name".into(), "é".into(), "\"q\"".into(),
            "a,b".into(),
        ]),
        1 => "[A-Za-z0-9_.-]{1,70}",
    ];
    let policy =
        (name, limits()).prop_map(|(name, limits)| ratelimit_headers::PolicyCase { name, limits });
    let event = prop_oneof![
        8 => Just(ratelimit_headers::Event::Request),
        1 => proptest::sample::select(vec![0u64, 1, 10, 100, 999, 1000, 1001, 60_000, 86_400_000])
            .prop_map(|ms| ratelimit_headers::Event::Advance(Duration::from_millis(ms))),
        1 => (any::<usize>(), limits())
            .prop_map(|(i, l)| ratelimit_headers::Event::SetLimits(i, l)),
    ];
    (
        prop_oneof![1 => Just(Vec::new()), 8 => vec(policy, 1..5)],
        vec(event, 0..40),
    )
        .prop_map(|(policies, events)| ratelimit_headers::HeaderCase { policies, events })
}

fn traceparent() -> impl Strategy<Value = Vec<u8>> {
    let formatted = (
        proptest::sample::select(vec![0u8, 0, 1, 0xfe, 0xff]),
        prop_oneof![9 => any::<[u8; 16]>(), 1 => Just([0u8; 16])],
        prop_oneof![9 => any::<[u8; 8]>(), 1 => Just([0u8; 8])],
        any::<u8>(),
        0..6u8,
        any::<usize>(),
        any::<u8>(),
    )
        .prop_map(|(version, trace, parent, flags, how, at, byte)| {
            let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
            let mut v =
                format!("{version:02x}-{}-{}-{flags:02x}", hex(&trace), hex(&parent)).into_bytes();
            match how {
                0 => v[at % 55] = byte,
                1 => v.extend_from_slice(b"-extra"),
                2 => v.push(byte),
                3 => v.truncate(at % 55),
                4 => v.make_ascii_uppercase(),
                _ => {}
            }
            v
        });
    prop_oneof![3 => formatted, 1 => vec(any::<u8>(), 0..80)]
}

fn request_id_case() -> impl Strategy<Value = request_id::RequestIdCase> {
    let max_len = prop_oneof![
        3 => proptest::sample::select(vec![0usize, 1, 2, 16, 32, 128, 1024, 1025]),
        1 => 0..2048usize,
    ];
    let id = prop_oneof![
        2 => "[A-Za-z0-9._:-]{1,40}".prop_map(String::into_bytes),
        1 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..40),
        1 => (1usize..1100).prop_map(|n| vec![b'a'; n]),
    ];
    let tracestate = prop_oneof![
        vec(any::<u8>(), 0..64),
        Just(b"vendor=value".to_vec()),
        proptest::sample::select(vec![2047usize, 2048, 4095, 4096, 4097])
            .prop_map(|n| vec![b'k'; n]),
    ];
    (
        max_len,
        any::<[bool; 3]>(),
        vec(id, 0..3),
        vec(traceparent(), 0..3),
        vec(tracestate, 0..4),
    )
        .prop_map(|(max_len, [a, t, e], ids, traceparents, tracestates)| {
            request_id::RequestIdCase {
                max_len,
                accept_incoming: a,
                trace_context: t,
                echo_traceparent: e,
                ids,
                traceparents,
                tracestates,
            }
        })
}

fn encode_case() -> impl Strategy<Value = l2_codec::EncodeCase> {
    let meta = (any::<u8>(), any::<bool>(), any::<[u64; 3]>()).prop_map(|(codec, negative, t)| {
        EnvelopeMeta {
            codec,
            negative,
            created_ms: t[0],
            fresh_until_ms: t[1],
            stale_until_ms: t[2],
        }
    });
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(pos, xor)| l2_codec::Mutation::Flip { pos, xor }),
        any::<usize>().prop_map(l2_codec::Mutation::Truncate),
        vec(any::<u8>(), 0..8).prop_map(l2_codec::Mutation::Append),
    ];
    (
        meta,
        vec(any::<u8>(), 0..200),
        vec(any::<u8>(), 0..16),
        mutation,
    )
        .prop_map(|(meta, payload, prefix, mutation)| l2_codec::EncodeCase {
            meta,
            payload,
            prefix,
            mutation,
        })
}

// === properties ===

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes read from L2 never panic `decode` and every refusal is truthful.
    #[test]
    fn l2_decode_never_panics(
        bytes in vec(any::<u8>(), 0..160),
        max in prop_oneof![Just(0usize), 0..256usize, Just(usize::MAX)],
    ) {
        l2_codec::check_decode(&bytes, max);
    }

    /// Entries round-trip exactly; any single corruption is a refusal (a miss).
    #[test]
    fn l2_round_trip_and_corruption(case in encode_case()) {
        l2_codec::check_encode(&case);
    }

    /// `merge_json` is RFC 7396; `merge_patch` into each settings type is stable and truthful.
    #[test]
    fn merge_patch_properties(
        doc in json(),
        p in proptest::sample::select(admin_patch::TARGETS.to_vec()).prop_flat_map(patch),
    ) {
        admin_patch::check_merge_json(&doc, &p);
        admin_patch::check_merge_patch(&p);
    }

    /// A rate-limit policy handle: refusals change nothing, dry runs predict, applies bump once.
    #[test]
    fn limit_handle_apply(steps in steps(admin_patch::Target::Limit)) {
        admin_patch::check_apply(admin_patch::Target::Limit, &steps);
    }

    /// A circuit breaker handle: same properties.
    #[test]
    fn breaker_handle_apply(steps in steps(admin_patch::Target::Breaker)) {
        admin_patch::check_apply(admin_patch::Target::Breaker, &steps);
    }

    /// A cache handle: same properties.
    #[test]
    fn cache_handle_apply(steps in steps(admin_patch::Target::Cache)) {
        admin_patch::check_apply(admin_patch::Target::Cache, &steps);
    }

    /// Every `RateLimit` / `RateLimit-Policy` / `Retry-After` the layer writes is strict RFC 9651
    /// and agrees with the policies; with one enforced policy it follows the GCRA exactly.
    #[test]
    fn ratelimit_headers_are_structured_fields(case in header_case()) {
        ratelimit_headers::check_headers(&case);
    }

    /// Request ids and traceparents: parsers agree with the references; the layer keeps valid
    /// ids and traces and replaces anything else.
    #[test]
    fn request_ids_and_trace_context(case in request_id_case()) {
        request_id::check_parsers(&case);
        request_id::check_layer(&case);
        request_id::check_ready_path(&case);
    }

    /// Formatting and parsing traceparents round-trips.
    #[test]
    fn traceparent_round_trip(
        version in proptest::sample::select(vec![0u8, 1, 0x42, 0xfe, 0xff]),
        trace in prop_oneof![9 => any::<[u8; 16]>(), 1 => Just([0u8; 16])],
        parent in prop_oneof![9 => any::<[u8; 8]>(), 1 => Just([0u8; 8])],
        flags in any::<u8>(),
    ) {
        request_id::check_round_trip(version, trace, parent, flags);
    }
}

/// The structured-field parser used above refuses what it must (so the header property cannot
/// pass vacuously).
#[test]
fn strict_list_parser_refuses_malformed_lists() {
    use ratelimit_headers::{Bare, parse_list};
    let ok = parse_list(b"\"api\";q=100;w=1, \"login\";r=0;t=12").unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].bare, Bare::String("api".into()));
    assert_eq!(ok[1].params[1], ("t".into(), Bare::Integer(12)));
    assert!(matches!(
        parse_list(b"tok;a").unwrap()[0].bare,
        Bare::Token(_)
    ));
    assert_eq!(
        parse_list(b"\"a\";x=?1").unwrap()[0].params[0].1,
        Bare::Boolean(true)
    );
    for bad in [
        &b"\"api\";q=1000000000000000"[..],
        b"\"api\";Q=1",
        b"\"api\";q=1;q=2",
        b"\"api\", ",
        b"\"api\",,\"b\"",
        b"\"a\"b",
        b"\"unterminated",
        b"\"a\\x\"",
        b"\"api\";q=1.5",
        b" \"api\"",
        b"\"api\";q=",
        b"\"\xc3\xa9\"",
    ] {
        assert!(
            parse_list(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}
