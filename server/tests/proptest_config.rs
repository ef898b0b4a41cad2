//! Property tests for what the reference server parses from outside: the configuration loader
//! (TOML file + `PALISADE_*` environment) and the supervisor ↔ worker control-channel framing.
//!
//! The properties live in `fuzz/src/oracle/{config_loader,control_frame}.rs` and are shared
//! with the cargo-fuzz targets of the same names (see fuzz/README.md).

#[path = "../../fuzz/src/oracle/config_loader.rs"]
mod config_loader;
#[path = "../../fuzz/src/oracle/control_frame.rs"]
mod control_frame;
#[path = "../../fuzz/proptest/strategies.rs"]
mod strategies;

use palisade::control::model::StatusCounts;
use palisade::control::{ComponentKind, ComponentSnapshot};
use palisade_server::channel::{Heartbeat, SupervisorMsg, WorkerMsg};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};

use config_loader::{SECTIONS, TOML_VALUES};

// === strategies ===

use strategies::json;

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_map(|f| if f.is_finite() { f } else { 0.0 })
}

fn worker_msg() -> impl Strategy<Value = WorkerMsg> {
    let snapshot = (
        "\\PC{0,12}",
        proptest::sample::select(vec![
            ComponentKind::Limit,
            ComponentKind::Breaker,
            ComponentKind::Cache,
        ]),
        any::<u64>(),
        json(),
        json(),
        vec("[a-z_]{0,12}", 0..3),
    )
        .prop_map(
            |(name, kind, version, settings, stats, actions)| ComponentSnapshot {
                name,
                kind,
                version,
                settings,
                stats,
                actions,
            },
        );
    let heartbeat = (
        finite(),
        any::<[u64; 3]>(),
        proptest::option::of(finite()),
        any::<[u64; 5]>(),
        proptest::option::of(json()),
        vec(snapshot, 0..3),
        proptest::option::of("\\PC{0,200}"),
    )
        .prop_map(|(lag, n, p99, s, stats, components, metrics)| {
            WorkerMsg::Heartbeat(Heartbeat {
                loop_lag_ms: lag,
                in_flight: n[0],
                requests: n[1],
                rss_bytes: n[2],
                p99_ms: p99,
                status: StatusCounts {
                    informational: s[0],
                    success: s[1],
                    redirection: s[2],
                    client_error: s[3],
                    server_error: s[4],
                },
                stats,
                components,
                metrics,
            })
        });
    prop_oneof![
        any::<(u32, u32)>().prop_map(|(worker_id, pid)| WorkerMsg::Hello { worker_id, pid }),
        Just(WorkerMsg::Ready),
        heartbeat,
        any::<(u64, u64)>().prop_map(|(completed, cut)| WorkerMsg::Drained { completed, cut }),
        (any::<u64>(), proptest::option::of("\\PC{0,40}"))
            .prop_map(|(id, error)| WorkerMsg::Applied { id, error }),
    ]
}

fn kind() -> impl Strategy<Value = palisade::control::ComponentKind> {
    use palisade::control::ComponentKind;
    prop_oneof![
        Just(ComponentKind::Limit),
        Just(ComponentKind::Breaker),
        Just(ComponentKind::Cache),
    ]
}

fn supervisor_msg() -> impl Strategy<Value = SupervisorMsg> {
    prop_oneof![
        (any::<u64>(), kind(), "\\PC{0,16}", json()).prop_map(|(id, kind, name, patch)| {
            SupervisorMsg::Apply {
                id,
                kind,
                name,
                patch,
            }
        }),
        (any::<u64>(), kind(), "\\PC{0,16}", "\\PC{0,16}", json()).prop_map(
            |(id, kind, name, action, args)| SupervisorMsg::Action {
                id,
                kind,
                name,
                action,
                args,
            }
        ),
        any::<(u64, u64)>().prop_map(|(delay_ms, timeout_ms)| SupervisorMsg::Drain {
            delay_ms,
            timeout_ms
        }),
    ]
}

fn messages() -> impl Strategy<Value = Vec<control_frame::Msg>> {
    prop_oneof![
        vec(worker_msg().prop_map(control_frame::Msg::Worker), 0..5),
        vec(
            supervisor_msg().prop_map(control_frame::Msg::Supervisor),
            0..5
        ),
    ]
}

/// JSON objects shaped like control messages (right and wrong versions, types and fields), so
/// `decode` gets past the version check often.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let version = proptest::sample::select(vec![
        json!(2),
        json!(2),
        json!(0),
        json!(1),
        json!(-1),
        json!("1"),
        json!(1.0),
        Value::Null,
        json!(u64::MAX),
    ]);
    let kind = prop_oneof![
        4 => proptest::sample::select(vec![
            "hello", "ready", "heartbeat", "drained", "applied", "apply", "action", "drain",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,10}",
    ];
    let field = proptest::sample::select(vec![
        "kind",
        "worker_id",
        "pid",
        "loop_lag_ms",
        "in_flight",
        "requests",
        "rss_bytes",
        "p99_ms",
        "status",
        "stats",
        "components",
        "completed",
        "cut",
        "id",
        "error",
        "name",
        "patch",
        "action",
        "args",
        "delay_ms",
        "timeout_ms",
        "v",
        "type",
    ]);
    let object = (
        version,
        kind,
        proptest::collection::btree_map(field, json(), 0..6),
    )
        .prop_map(|(v, kind, fields)| {
            let mut map: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            map.insert("v".into(), v);
            map.insert("type".into(), Value::String(kind));
            serde_json::to_vec(&Value::Object(map)).expect("JSON")
        });
    prop_oneof![3 => object, 1 => vec(any::<u8>(), 0..64)]
}

/// Frames (valid, oversized, truncated) and garbage back to back.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        payload().prop_map(|p| {
            let mut f = u32::try_from(p.len())
                .expect("small")
                .to_be_bytes()
                .to_vec();
            f.extend_from_slice(&p);
            f
        }),
        messages().prop_map(|msgs| {
            msgs.iter()
                .flat_map(|m| match m {
                    control_frame::Msg::Worker(w) => palisade_server::channel::encode(w),
                    control_frame::Msg::Supervisor(s) => palisade_server::channel::encode(s),
                })
                .collect()
        }),
        proptest::sample::select(vec![
            vec![0xff, 0xff, 0xff, 0xff],
            vec![0x00, 0x80, 0x00, 0x01],
            vec![0x00, 0x80, 0x00, 0x00],
            vec![0, 0, 0, 0],
            vec![0, 0],
        ]),
        vec(any::<u8>(), 0..16),
    ];
    vec(piece, 0..5).prop_map(|pieces| pieces.concat())
}

fn toml_line(keys: Vec<String>) -> impl Strategy<Value = String> {
    let key = proptest::sample::select(keys);
    let value = proptest::sample::select(TOML_VALUES);
    prop_oneof![
        2 => proptest::sample::select(SECTIONS).prop_map(|s| format!("[{s}]")),
        1 => Just("[[rate_limit.policy]]".to_owned()),
        1 => "\\PC{0,30}",
        6 => (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k} = {v}")),
        3 => (key.clone(), value.clone()).prop_map(|(k, v)| {
            format!("{} = {v}", k.rsplit('.').next().unwrap_or(&k))
        }),
        1 => (key.clone(), "\\PC{0,16}")
            .prop_map(|(k, s)| format!("{k} = {}", toml::Value::String(s))),
        1 => (key, any::<i64>()).prop_map(|(k, n)| format!("{k} = {n}")),
        1 => ("[a-z_.]{1,12}", value).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

fn config_case() -> impl Strategy<Value = config_loader::ConfigCase> {
    let keys = config_loader::known_keys();
    let env_name = prop_oneof![
        4 => proptest::sample::select(keys.clone())
            .prop_map(|k| palisade_server::config::env_var_for(&k)),
        1 => "PALISADE_[A-Z_]{0,12}",
        1 => proptest::sample::select(vec![
            "PALISADE_CONFIG", "PALISADE_ADMIN_TOKEN", "HOME", "PALISADE_", "palisade_server_backlog",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ];
    let env_value = prop_oneof![
        3 => proptest::sample::select(TOML_VALUES).prop_map(str::to_owned),
        1 => "\\PC{0,16}",
    ];
    // Distinct dotted keys at the top level always parse as TOML, so most of these reach the
    // typed deserialization and the rules; free-form lines exercise the parser and conflicts.
    let assignments = proptest::collection::btree_map(
        proptest::sample::select(keys.clone()),
        proptest::sample::select(TOML_VALUES),
        0..6,
    )
    .prop_map(|m| {
        let lines: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        Some(lines.join("\n"))
    });
    let toml = prop_oneof![
        1 => Just(None),
        5 => assignments,
        4 => vec(toml_line(keys), 0..12).prop_map(|lines| Some(lines.join("\n"))),
        1 => "\\PC{0,200}".prop_map(Some),
    ];
    (toml, vec((env_name, env_value), 0..4))
        .prop_map(|(toml, env)| config_loader::ConfigCase { toml, env })
}

// === properties ===

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary TOML and environment: no panic; Ok only when valid; errors name a key or file.
    #[test]
    fn config_loader_never_panics(case in config_case()) {
        let path = std::env::temp_dir()
            .join(format!("palisade-proptest-config-{}.toml", std::process::id()));
        config_loader::check_load(&case, &path);
        let _ = std::fs::remove_file(&path);
    }

    /// Messages of either direction round-trip through the framing, back to back.
    #[test]
    fn control_messages_round_trip(msgs in messages()) {
        control_frame::check_round_trip(&msgs);
    }

    /// Arbitrary payloads never panic `decode`; what decodes re-encodes to itself.
    #[test]
    fn control_payloads_never_panic(p in payload()) {
        control_frame::check_payload(&p);
    }

    /// Arbitrary byte streams are read frame by frame exactly as an independent reading says.
    #[test]
    fn control_streams_never_panic(bytes in stream()) {
        control_frame::check_stream(&bytes);
    }
}

/// The loader refuses, with a message naming the key, each input that used to panic it:
/// a section set to a value, a value given keys, and an overflowing worker timeout.
#[test]
fn former_config_panics_are_errors() {
    let path = std::env::temp_dir().join(format!(
        "palisade-proptest-config-fixed-{}.toml",
        std::process::id()
    ));
    for (text, key) in [
        ("server = 1", "`server`"),
        ("[cache]\nusers = 3", "`cache.users`"),
        ("[server.backlog]\nx = 1", "`server.backlog.x`"),
        ("[server]\nbacklog = { a = 1 }", "`server.backlog.a`"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = palisade_server::config::load(&palisade_server::config::Overrides {
            file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(key), "{text:?}: {err}");
        assert!(err.contains(&path.display().to_string()), "{text:?}: {err}");
    }
    std::fs::write(
        &path,
        "[workers]\nworker_timeout_secs = 9223372036854775807\n",
    )
    .unwrap();
    let loaded = palisade_server::config::load(&palisade_server::config::Overrides {
        file: Some(path.clone()),
        ..Default::default()
    });
    let _ = std::fs::remove_file(&path);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}
