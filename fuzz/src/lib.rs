//! Fuzz drivers for Palisade: each turns fuzzer bytes into inputs for an oracle in
//! `src/oracle/`, the same oracles the workspace proptests use
//! (middleware/tests/proptest_parsers.rs, server/tests/proptest_config.rs).
//!
//! The first input byte picks a mode; most targets have a "raw" mode that hands the remaining
//! bytes straight to the parser (so seeds can be readable files) and a "structured" mode that
//! builds well-formed inputs near the rules and then breaks them.

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value};

mod oracle {
    pub(crate) mod admin_patch;
    pub(crate) mod config_loader;
    pub(crate) mod control_frame;
    pub(crate) mod l2_codec;
    pub(crate) mod ratelimit_headers;
    pub(crate) mod request_id;
}

use oracle::config_loader::{SECTIONS, TOML_VALUES};
use oracle::*;

/// Runs a driver on `data`; running out of bytes just ends the input early.
fn drive(data: &[u8], f: impl FnOnce(&mut Unstructured<'_>) -> Result<()>) {
    let mut u = Unstructured::new(data);
    let _ = f(&mut u);
}

fn pick<'a, T>(u: &mut Unstructured<'_>, items: &'a [T]) -> Result<&'a T> {
    u.choose(items)
}

fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n)?.to_vec())
}

/// Everything left (an `Unstructured` behind `&mut` cannot be consumed whole).
fn rest<'a>(u: &mut Unstructured<'a>) -> &'a [u8] {
    let n = u.len();
    u.bytes(n).unwrap_or_default()
}

fn string(u: &mut Unstructured<'_>, max: usize) -> Result<String> {
    Ok(String::from_utf8_lossy(&bytes(u, max)?).into_owned())
}

/// Arbitrary JSON, at most `depth` levels of nesting.
fn json(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let top = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<u64>()?),
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(string(u, 24)?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| json(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(string(u, 12)?, json(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

// === l2_codec ===

/// `l2_codec`: decode arbitrary entries; encode, round-trip and corrupt structured ones.
pub fn l2_codec(data: &[u8]) {
    use palisade::cache::codec::EnvelopeMeta;
    drive(data, |u| {
        if u.arbitrary::<bool>()? {
            let max = *pick(u, &[0usize, 1, 16, 64, 4096, usize::MAX])?;
            l2_codec::check_decode(rest(u), max);
            return Ok(());
        }
        let case = l2_codec::EncodeCase {
            meta: EnvelopeMeta {
                codec: u.arbitrary()?,
                negative: u.arbitrary()?,
                created_ms: u.arbitrary()?,
                fresh_until_ms: u.arbitrary()?,
                stale_until_ms: u.arbitrary()?,
            },
            prefix: bytes(u, 16)?,
            mutation: match u.int_in_range(0..=2)? {
                0 => l2_codec::Mutation::Flip {
                    pos: u.arbitrary()?,
                    xor: u.arbitrary()?,
                },
                1 => l2_codec::Mutation::Truncate(u.arbitrary()?),
                _ => l2_codec::Mutation::Append(bytes(u, 8)?),
            },
            payload: rest(u).to_vec(),
        };
        l2_codec::check_encode(&case);
        Ok(())
    });
}

// === control_frame ===

fn worker_msg(u: &mut Unstructured<'_>) -> Result<palisade_server::channel::WorkerMsg> {
    use palisade::control::model::StatusCounts;
    use palisade::control::{ComponentKind, ComponentSnapshot};
    use palisade_server::channel::{Heartbeat, WorkerMsg};
    Ok(match u.int_in_range(0..=4)? {
        0 => WorkerMsg::Hello {
            worker_id: u.arbitrary()?,
            pid: u.arbitrary()?,
        },
        1 => WorkerMsg::Ready,
        2 => {
            let lag: f64 = u.arbitrary()?;
            let components = (0..u.int_in_range(0..=2)?)
                .map(|_| {
                    Ok(ComponentSnapshot {
                        name: string(u, 16)?,
                        kind: *pick(
                            u,
                            &[
                                ComponentKind::Limit,
                                ComponentKind::Breaker,
                                ComponentKind::Cache,
                            ],
                        )?,
                        version: u.arbitrary()?,
                        settings: json(u, 2)?,
                        stats: json(u, 2)?,
                        actions: vec![string(u, 8)?],
                    })
                })
                .collect::<Result<_>>()?;
            WorkerMsg::Heartbeat(Heartbeat {
                loop_lag_ms: if lag.is_finite() { lag } else { 0.0 },
                in_flight: u.arbitrary()?,
                requests: u.arbitrary()?,
                rss_bytes: u.arbitrary()?,
                status: StatusCounts {
                    informational: u.arbitrary()?,
                    success: u.arbitrary()?,
                    redirection: u.arbitrary()?,
                    client_error: u.arbitrary()?,
                    server_error: u.arbitrary()?,
                },
                stats: if u.arbitrary()? {
                    Some(json(u, 3)?)
                } else {
                    None
                },
                components,
                metrics: if u.arbitrary()? {
                    Some(string(u, 64)?)
                } else {
                    None
                },
                p99_ms: match u.arbitrary::<Option<f64>>()? {
                    Some(p) if p.is_finite() => Some(p),
                    _ => None,
                },
            })
        }
        3 => WorkerMsg::Drained {
            completed: u.arbitrary()?,
            cut: u.arbitrary()?,
        },
        _ => WorkerMsg::Applied {
            id: u.arbitrary()?,
            error: if u.arbitrary()? {
                Some(string(u, 32)?)
            } else {
                None
            },
        },
    })
}

fn component_kind(u: &mut Unstructured<'_>) -> Result<palisade::control::ComponentKind> {
    use palisade::control::ComponentKind;
    Ok(*u.choose(&[
        ComponentKind::Limit,
        ComponentKind::Breaker,
        ComponentKind::Cache,
    ])?)
}

fn supervisor_msg(u: &mut Unstructured<'_>) -> Result<palisade_server::channel::SupervisorMsg> {
    use palisade_server::channel::SupervisorMsg;
    Ok(match u.int_in_range(0..=2)? {
        0 => SupervisorMsg::Apply {
            id: u.arbitrary()?,
            kind: component_kind(u)?,
            name: string(u, 16)?,
            patch: json(u, 3)?,
        },
        1 => SupervisorMsg::Action {
            id: u.arbitrary()?,
            kind: component_kind(u)?,
            name: string(u, 16)?,
            action: string(u, 16)?,
            args: json(u, 3)?,
        },
        _ => SupervisorMsg::Drain {
            delay_ms: u.arbitrary()?,
            timeout_ms: u.arbitrary()?,
        },
    })
}

/// `control_frame`: arbitrary payloads and byte streams; structured messages round-trip.
pub fn control_frame(data: &[u8]) {
    use control_frame::Msg;
    drive(data, |u| {
        match u.int_in_range(0..=2)? {
            0 => control_frame::check_payload(rest(u)),
            1 => control_frame::check_stream(rest(u)),
            _ => {
                let worker = u.arbitrary::<bool>()?;
                let mut msgs = Vec::new();
                for _ in 0..u.int_in_range(0..=4)? {
                    msgs.push(if worker {
                        Msg::Worker(worker_msg(u)?)
                    } else {
                        Msg::Supervisor(supervisor_msg(u)?)
                    });
                }
                control_frame::check_round_trip(&msgs);
            }
        }
        Ok(())
    });
}

// === admin_patch ===

fn keys_of(target: admin_patch::Target) -> &'static [String] {
    static KEYS: [OnceLock<Vec<String>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = admin_patch::TARGETS
        .iter()
        .position(|t| *t == target)
        .expect("a target");
    KEYS[i].get_or_init(|| admin_patch::settings_keys(target))
}

fn values() -> &'static [Value] {
    static VALUES: OnceLock<Vec<Value>> = OnceLock::new();
    VALUES.get_or_init(admin_patch::interesting_values)
}

fn patch(u: &mut Unstructured<'_>, keys: &[String]) -> Result<Value> {
    if u.ratio(1, 16)? {
        return json(u, 2);
    }
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let key = if u.ratio(7, 8)? {
            pick(u, keys)?.clone()
        } else {
            string(u, 12)?
        };
        let value = match u.int_in_range(0..=5)? {
            0 => json(u, 2)?,
            1 => {
                let mut inner = Map::new();
                for _ in 0..u.int_in_range(0..=3)? {
                    inner.insert(string(u, 12)?, pick(u, values())?.clone());
                }
                Value::Object(inner)
            }
            _ => pick(u, values())?.clone(),
        };
        map.insert(key, value);
    }
    Ok(Value::Object(map))
}

/// `admin_patch`: merge-patches into typed settings and `Component::apply` sequences.
pub fn admin_patch(data: &[u8]) {
    drive(data, |u| {
        let target = *pick(u, &admin_patch::TARGETS)?;
        let keys = keys_of(target);
        if u.ratio(1, 4)? {
            let Ok(p) = serde_json::from_slice::<Value>(rest(u)) else {
                return Ok(());
            };
            admin_patch::check_merge_patch(&p);
            admin_patch::check_apply(
                target,
                &[
                    admin_patch::Step {
                        patch: p.clone(),
                        dry_run: true,
                    },
                    admin_patch::Step {
                        patch: p,
                        dry_run: false,
                    },
                ],
            );
            return Ok(());
        }
        let doc = json(u, 3)?;
        let p = patch(u, keys)?;
        admin_patch::check_merge_json(&doc, &p);
        admin_patch::check_merge_patch(&p);
        let mut steps = vec![admin_patch::Step {
            patch: p,
            dry_run: u.arbitrary()?,
        }];
        for _ in 0..u.int_in_range(0..=5)? {
            steps.push(admin_patch::Step {
                patch: patch(u, keys)?,
                dry_run: u.arbitrary()?,
            });
        }
        admin_patch::check_apply(target, &steps);
        Ok(())
    });
}

// === ratelimit_headers ===

fn limits(u: &mut Unstructured<'_>) -> Result<palisade::rate_limit::Limits> {
    use palisade::rate_limit::{Limits, Mode};
    const MS: u64 = 1_000_000;
    // Mostly ordinary quotas (so layers build and requests hit the limit), sometimes values on
    // and past every rule.
    let (rate, per_ns, burst) = if u.ratio(4, 5)? {
        (
            *pick(u, &[1u32, 2, 3, 5, 10, 100, 1000])?,
            *pick(
                u,
                &[MS, 100 * MS, 999 * MS, 1000 * MS, 1500 * MS, 60_000 * MS],
            )?,
            *pick(u, &[1u32, 2, 3, 5, 20])?,
        )
    } else {
        (
            if u.arbitrary()? {
                *pick(u, &[0u32, 10_000_000, 1_000_000_000, u32::MAX])?
            } else {
                u.arbitrary()?
            },
            if u.arbitrary()? {
                *pick(
                    u,
                    &[
                        0,
                        999_999,
                        3_600_000 * MS,
                        366 * 86_400_000 * MS,
                        367 * 86_400_000 * MS,
                    ],
                )?
            } else {
                u.int_in_range(0..=400 * 86_400_000 * MS)?
            },
            if u.arbitrary()? {
                *pick(u, &[0u32, 100, 10_000_000, 10_000_001])?
            } else {
                u.arbitrary()?
            },
        )
    };
    Ok(Limits {
        rate,
        per: Duration::from_nanos(per_ns),
        burst,
        mode: *pick(u, &[Mode::Enforce, Mode::Enforce, Mode::Shadow, Mode::Off])?,
    })
}

/// `ratelimit_headers`: layers with arbitrary policies, requests, time and limit changes.
pub fn ratelimit_headers(data: &[u8]) {
    use ratelimit_headers::{Event, HeaderCase, PolicyCase};
    drive(data, |u| {
        let long = "n".repeat(64);
        let too_long = "n".repeat(65);
        let names = [
            "api",
            "login",
            "a",
            "x.y-z_1",
            "API",
            long.as_str(),
            "api",
            "login",
            "a",
            "b",
            too_long.as_str(),
            "",
            "bad name",
            "é",
            "\"q\"",
            "a,b",
            "a;b",
        ];
        let mut policies = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let name = if u.ratio(15, 16)? {
                (*pick(u, &names)?).to_owned()
            } else {
                string(u, 70)?
            };
            policies.push(PolicyCase {
                name,
                limits: limits(u)?,
            });
        }
        let mut events = Vec::new();
        for _ in 0..u.int_in_range(0..=48)? {
            events.push(match u.int_in_range(0..=9)? {
                0 => Event::Advance(Duration::from_millis(*pick(
                    u,
                    &[0u64, 1, 10, 100, 999, 1000, 1001, 60_000, 86_400_000],
                )?)),
                1 => Event::SetLimits(u.arbitrary()?, limits(u)?),
                _ => Event::Request,
            });
        }
        ratelimit_headers::check_headers(&HeaderCase { policies, events });
        Ok(())
    });
}

// === request_id ===

fn id_bytes(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    const CHARSET: &[u8] = b"abcXYZ019._:-";
    Ok(match u.int_in_range(0..=3)? {
        0 => bytes(u, 40)?,
        1 => {
            let n = *pick(u, &[1usize, 2, 31, 32, 33, 128, 129, 1024, 1025])?;
            (0..n)
                .map(|_| pick(u, CHARSET).copied())
                .collect::<Result<_>>()?
        }
        2 => {
            let mut v = (0..u.int_in_range(1..=40)?)
                .map(|_| pick(u, CHARSET).copied())
                .collect::<Result<Vec<u8>>>()?;
            let at = u.choose_index(v.len())?;
            v[at] = u.arbitrary()?;
            v
        }
        _ => b"0123456789abcdef0123456789abcdef".to_vec(),
    })
}

fn traceparent_bytes(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        return bytes(u, 80);
    }
    let version: u8 = *pick(u, &[0u8, 0, 1, 0xfe, 0xff])?;
    let trace: [u8; 16] = if u.ratio(1, 8)? {
        [0; 16]
    } else {
        u.arbitrary()?
    };
    let parent: [u8; 8] = if u.ratio(1, 8)? {
        [0; 8]
    } else {
        u.arbitrary()?
    };
    let flags: u8 = u.arbitrary()?;
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut v = format!("{version:02x}-{}-{}-{flags:02x}", hex(&trace), hex(&parent)).into_bytes();
    match u.int_in_range(0..=5)? {
        0 => {
            let at = u.choose_index(v.len())?;
            v[at] = u.arbitrary()?;
        }
        1 => v.extend_from_slice(b"-extra"),
        2 => v.push(u.arbitrary()?),
        3 => v.truncate(u.int_in_range(0..=54)?),
        4 => v.make_ascii_uppercase(),
        _ => {}
    }
    Ok(v)
}

/// `request_id`: request ids and trace context through the parsers and the layer.
pub fn request_id(data: &[u8]) {
    drive(data, |u| {
        let max_len = if u.ratio(3, 4)? {
            *pick(u, &[0usize, 1, 2, 16, 32, 128, 1024, 1025])?
        } else {
            u.int_in_range(0..=2048)?
        };
        let mut case = request_id::RequestIdCase {
            max_len,
            accept_incoming: !u.ratio(1, 8)?,
            trace_context: !u.ratio(1, 8)?,
            echo_traceparent: u.arbitrary()?,
            ids: Vec::new(),
            traceparents: Vec::new(),
            tracestates: Vec::new(),
        };
        for _ in 0..*pick(u, &[0usize, 1, 1, 1, 2])? {
            case.ids.push(id_bytes(u)?);
        }
        for _ in 0..*pick(u, &[0usize, 1, 1, 1, 2])? {
            case.traceparents.push(traceparent_bytes(u)?);
        }
        for _ in 0..u.int_in_range(0..=3)? {
            case.tracestates.push(match u.int_in_range(0..=3)? {
                0 => bytes(u, 64)?,
                1 => b"vendor=value".to_vec(),
                2 => vec![b'k'; *pick(u, &[2047usize, 2048, 4095, 4096, 4097])?],
                _ => b"a=1,b=2".to_vec(),
            });
        }
        request_id::check_parsers(&case);
        request_id::check_layer(&case);
        request_id::check_ready_path(&case);
        request_id::check_round_trip(
            *pick(u, &[0u8, 1, 0xfe, 0xff])?,
            if u.ratio(1, 8)? {
                [0; 16]
            } else {
                u.arbitrary()?
            },
            if u.ratio(1, 8)? {
                [0; 8]
            } else {
                u.arbitrary()?
            },
            u.arbitrary()?,
        );
        Ok(())
    });
}

// === config_loader ===

fn known_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(config_loader::known_keys)
}

fn toml_line(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        0 => format!("[{}]", pick(u, SECTIONS)?),
        1 => "[[rate_limit.policy]]".to_owned(),
        2 => string(u, 40)?,
        3 => {
            let key = pick(u, known_keys())?;
            format!("{key} = {}", pick(u, TOML_VALUES)?)
        }
        4 => format!("{} = {}", string(u, 12)?, pick(u, TOML_VALUES)?),
        5 => {
            let key = pick(u, known_keys())?;
            let v = toml::Value::String(string(u, 24)?);
            format!("{key} = {v}")
        }
        6 => {
            let key = pick(u, known_keys())?;
            format!("{key} = {}", u.arbitrary::<i64>()?)
        }
        _ => {
            let key = pick(u, known_keys())?;
            let leaf = key.rsplit('.').next().unwrap_or(key);
            format!("{leaf} = {}", pick(u, TOML_VALUES)?)
        }
    })
}

/// `config_loader`: arbitrary config files and `PALISADE_*` environments.
pub fn config_loader(data: &[u8]) {
    let path =
        std::env::temp_dir().join(format!("palisade-fuzz-config-{}.toml", std::process::id()));
    drive(data, |u| {
        let mut case = config_loader::ConfigCase {
            toml: None,
            env: Vec::new(),
        };
        match u.int_in_range(0..=3)? {
            0 => case.toml = Some(String::from_utf8_lossy(rest(u)).into_owned()),
            1 => {
                let lines = (0..u.int_in_range(0..=12)?)
                    .map(|_| toml_line(u))
                    .collect::<Result<Vec<_>>>()?;
                case.toml = Some(lines.join("\n"));
            }
            _ => {
                if u.arbitrary()? {
                    let lines = (0..u.int_in_range(0..=6)?)
                        .map(|_| toml_line(u))
                        .collect::<Result<Vec<_>>>()?;
                    case.toml = Some(lines.join("\n"));
                }
            }
        }
        for _ in 0..u.int_in_range(0..=4)? {
            let name = match u.int_in_range(0..=4)? {
                0 => format!("PALISADE_{}", string(u, 16)?),
                1 => (*pick(
                    u,
                    &[
                        "PALISADE_CONFIG",
                        "PALISADE_ADMIN_TOKEN",
                        "HOME",
                        "PALISADE_",
                        "palisade_server_backlog",
                    ],
                )?)
                .to_owned(),
                _ => palisade_server::config::env_var_for(pick(u, known_keys())?),
            };
            let value = if u.ratio(3, 4)? {
                (*pick(u, TOML_VALUES)?).to_owned()
            } else {
                string(u, 24)?
            };
            case.env.push((name, value));
        }
        config_loader::check_load(&case, &path);
        Ok(())
    });
}
