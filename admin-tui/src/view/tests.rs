use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use insta::assert_snapshot;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use serde_json::json;

use super::styles::{self, Styles};
use super::*;
use crate::client::{ApiProblem, ClientError};
use crate::connection::ConnEvent;
use crate::fixtures::{T0, live_state, snapshot};
use crate::state::{Msg, State};

fn draw(state: &State, width: u16, height: u16, styles: &Styles) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| render(f, state, styles)).unwrap();
    terminal
}

/// Snapshots live in `admin-tui/src/snapshots/`.
macro_rules! snap {
    ($name:expr, $terminal:expr) => {{
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../snapshots");
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| assert_snapshot!($name, $terminal.backend()));
    }};
}

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn on_panel(n: char) -> State {
    let mut state = live_state(90);
    state.update(key(n));
    state
}

fn color() -> Styles {
    Styles::new(true)
}

#[test]
fn workers_panel() {
    let state = on_panel('1');
    snap!("workers_120x40", draw(&state, 120, 40, &color()));
    snap!("workers_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn latency_panel() {
    let state = on_panel('2');
    snap!("latency_120x40", draw(&state, 120, 40, &color()));
    snap!("latency_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn throughput_panel() {
    let state = on_panel('3');
    snap!("throughput_120x40", draw(&state, 120, 40, &color()));
    snap!("throughput_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn limits_panel() {
    let state = on_panel('4');
    snap!("limits_120x40", draw(&state, 120, 40, &color()));
    snap!("limits_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn breakers_panel() {
    let mut state = on_panel('5');
    state.update(key('j'));
    snap!("breakers_120x40", draw(&state, 120, 40, &color()));
    snap!("breakers_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn caches_panel() {
    let state = on_panel('6');
    snap!("caches_120x40", draw(&state, 120, 40, &color()));
    snap!("caches_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn audit_panel() {
    let state = on_panel('7');
    snap!("audit_120x40", draw(&state, 120, 40, &color()));
    snap!("audit_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn help_overlay() {
    let mut state = on_panel('1');
    state.update(key('?'));
    snap!("help_120x40", draw(&state, 120, 40, &color()));
    snap!("help_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn inline_edit_with_a_server_validation_error() {
    let mut state = on_panel('4');
    state.update(key('l'));
    state.update(key('l'));
    state.update(key('e'));
    state.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    state.update(key('0'));
    snap!("limits_editing_80x24", draw(&state, 80, 24, &color()));
    state.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    snap!("limits_confirm_80x24", draw(&state, 80, 24, &color()));
    let Some(crate::state::Effect::Api { id, .. }) = state.update(key('y')) else {
        panic!("no request")
    };
    state.update(Msg::ApiResult {
        id,
        result: Err(ClientError::Api(ApiProblem {
            status: 400,
            title: "Bad Request".into(),
            detail: Some("invalid settings for limits/api".into()),
            errors: vec![palisade::control::FieldError::new(
                "burst",
                "must be at least 1 (got 0)",
            )],
        })),
        at_ms: T0 + 90_000,
    });
    snap!("limits_rejected_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn an_edit_reports_its_outcome_on_every_worker() {
    use palisade::control::model::{Outcome, Propagation, WorkerOutcome};
    let worker = |id: u32, outcome: Outcome, error: Option<&str>| WorkerOutcome {
        worker_id: id,
        pid: 4243 + id,
        outcome,
        error: error.map(str::to_owned),
        elapsed_ms: 14,
    };
    let edit = |state: &mut State, value: char| {
        state.update(key('e'));
        state.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('u'),
            KeyModifiers::CONTROL,
        )));
        state.update(key(value));
        state.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
        let Some(crate::state::Effect::Api { id, .. }) = state.update(key('y')) else {
            panic!("no request")
        };
        id
    };
    let mut state = on_panel('4');
    let id = edit(&mut state, '7');
    let applied = Propagation {
        workers: vec![
            worker(0, Outcome::Applied, None),
            worker(1, Outcome::Applied, None),
        ],
        elapsed_ms: 14,
        rolled_back: false,
        nodes: Vec::new(),
    };
    state.update(Msg::ApiResult {
        id,
        result: Ok(json!({"name": "api", "version": 4, "propagation": applied})),
        at_ms: T0 + 90_000,
    });
    let text = screen_text(draw(&state, 120, 40, &color()).backend().buffer());
    assert!(text.contains("applied on 2/2 workers in 14 ms"), "{text}");

    let id = edit(&mut state, '8');
    let refused = Propagation {
        workers: vec![
            worker(0, Outcome::Applied, None),
            worker(1, Outcome::Refused, Some("rate: too low")),
        ],
        elapsed_ms: 14,
        rolled_back: true,
        nodes: Vec::new(),
    };
    state.update(Msg::ApiResult {
        id,
        result: Err(ClientError::Api(ApiProblem {
            status: 409,
            title: "Refused by a worker".into(),
            detail: Some(refused.summary()),
            errors: vec![],
        })),
        at_ms: T0 + 91_000,
    });
    let text = screen_text(draw(&state, 160, 40, &color()).backend().buffer());
    assert!(
        text.contains("not applied: refused by worker 1 (pid 4244): rate: too low; rolled back"),
        "{text}"
    );
}

#[test]
fn drain_confirmation() {
    let mut state = on_panel('1');
    state.update(key('d'));
    snap!(
        "workers_confirm_drain_80x24",
        draw(&state, 80, 24, &color())
    );
}

#[test]
fn disconnected_keeps_dimmed_data_and_says_why() {
    let mut state = on_panel('1');
    let at = T0 + 95_000;
    state.update(Msg::Conn {
        event: ConnEvent::Disconnected {
            error: ClientError::Refused,
            attempt: 3,
            retry_in: Duration::from_secs(2),
        },
        at_ms: at,
    });
    state.update(Msg::Tick { now_ms: at });
    let terminal = draw(&state, 80, 24, &color());
    snap!("workers_disconnected_80x24", terminal);
    // Data is dimmed, the banner is not.
    let buf = terminal.backend().buffer();
    let row_y = 6; // first worker row
    assert!(buf[(4, row_y)].modifier.contains(Modifier::DIM));
    assert!(!buf[(2, 3)].modifier.contains(Modifier::DIM));
    state.update(key('2'));
    snap!(
        "latency_disconnected_120x40",
        draw(&state, 120, 40, &color())
    );
}

#[test]
fn unauthorized_before_any_data() {
    let mut state = State::new("http://127.0.0.1:9901", T0)
        .with_utc_offset(Some(0))
        .with_token_hint("token file /home/ops/.local/state/palisade/admin.token");
    state.update(Msg::Conn {
        event: ConnEvent::Disconnected {
            error: ClientError::Unauthorized("invalid bearer token".into()),
            attempt: 2,
            retry_in: Duration::from_secs(1),
        },
        at_ms: T0,
    });
    snap!("unauthorized_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn timeout_while_reconnecting() {
    let mut state = on_panel('4');
    state.update(Msg::Conn {
        event: ConnEvent::Disconnected {
            error: ClientError::Timeout,
            attempt: 1,
            retry_in: Duration::from_millis(500),
        },
        at_ms: T0 + 91_000,
    });
    state.update(Msg::Conn {
        event: ConnEvent::Connecting { attempt: 1 },
        at_ms: T0 + 91_500,
    });
    snap!("limits_reconnecting_80x24", draw(&state, 80, 24, &color()));
}

#[test]
fn tiny_terminal_does_not_panic() {
    let state = on_panel('1');
    for (w, h) in [(1, 1), (20, 5), (39, 30), (60, 10), (80, 9)] {
        let _ = draw(&state, w, h, &color());
    }
    snap!("too_small", draw(&state, 30, 5, &color()));
}

#[test]
fn every_panel_renders_at_small_sizes_without_panicking() {
    for n in '1'..='7' {
        let mut state = on_panel(n);
        state.update(key('?'));
        for (w, h) in [(40, 10), (50, 12), (80, 24), (200, 60)] {
            let _ = draw(&state, w, h, &color());
        }
    }
}

#[test]
fn breaker_state_has_colour_and_text() {
    let mut state = on_panel('5');
    state.update(key('j'));
    let terminal = draw(&state, 120, 40, &color());
    let buf = terminal.backend().buffer();
    let (x, y) = find(buf, "✖ OPEN");
    assert_eq!(buf[(x, y)].fg, styles::VERMILLION);
    let (x, y) = find(buf, "● CLOSED");
    assert_eq!(buf[(x, y)].fg, styles::BLUISH_GREEN);
    // NO_COLOR: same text, no colours anywhere.
    let terminal = draw(&state, 120, 40, &Styles::new(false));
    let buf = terminal.backend().buffer();
    let (x, y) = find(buf, "✖ OPEN");
    assert_eq!(buf[(x, y)].fg, Color::Reset);
    assert!(
        buf.content()
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset)
    );
}

#[test]
fn help_lists_every_documented_binding() {
    let mut state = on_panel('1');
    state.update(key('?'));
    let terminal = draw(&state, 200, 60, &color());
    let text = screen_text(terminal.backend().buffer());
    for b in crate::input::BINDINGS
        .iter()
        .filter(|b| !b.label.is_empty())
    {
        assert!(text.contains(b.help), "help misses `{}`", b.help);
    }
}

#[test]
fn generic_settings_show_new_fields_without_code_changes() {
    let mut state = live_state(2);
    let mut s = snapshot(2);
    s.limits[0].settings = json!({"rate": 100, "window": {"size": 3, "unit": "s"}, "tags": ["a"]});
    s.limits[0].stats = json!({"allowed": 1, "weird": {"nested": true}});
    state.update(Msg::Conn {
        event: ConnEvent::Snapshot(Box::new(s)),
        at_ms: T0 + 2000,
    });
    state.update(key('4'));
    let text = screen_text(draw(&state, 160, 30, &color()).backend().buffer());
    // New settings become (editable) columns; new stats appear in the detail pane.
    for needle in [
        "WINDOW.SIZE",
        "WINDOW.UNIT",
        "weird.nested=true",
        "tags=[\"a\"]",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
}

fn screen_text(buf: &ratatui::buffer::Buffer) -> String {
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

fn find(buf: &ratatui::buffer::Buffer, needle: &str) -> (u16, u16) {
    let text = screen_text(buf);
    for (y, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let n: Vec<char> = needle.chars().collect();
        if let Some(x) = chars.windows(n.len()).position(|w| w == n.as_slice()) {
            return (u16::try_from(x).unwrap(), u16::try_from(y).unwrap());
        }
    }
    panic!("`{needle}` not on screen:\n{text}");
}

#[test]
fn the_nodes_panel_shows_every_node_and_fleet_wide_traffic() {
    use palisade::admin::fleet::{FleetSnapshot, NodeInfo};
    use palisade::control::model::{LatencyWindow, Traffic};

    let node = |id: &str, requests: u64, in_sync: bool| NodeInfo {
        node_id: id.into(),
        admin_addr: Some(format!("10.0.0.{}:9901", id.len())),
        version: "0.1.0".into(),
        workers_ready: 2,
        workers: 2,
        requests_total: requests,
        latency: vec![LatencyWindow {
            window_secs: 10,
            count: 10,
            p50_ms: 1.5,
            p99_ms: 9.0,
            ..LatencyWindow::default()
        }],
        applied_version: if in_sync { 3 } else { 2 },
        in_sync,
        overrides: if in_sync {
            vec![]
        } else {
            vec!["limits/api".into()]
        },
        ..NodeInfo::default()
    };
    let fleet = |at: u64, scale: u64| FleetSnapshot {
        fleet: "prod".into(),
        node_id: "alpha".into(),
        version: 3,
        taken_at_ms: at,
        traffic: Traffic {
            requests_total: 600 * scale,
            latency: vec![LatencyWindow {
                window_secs: 10,
                count: 30,
                p50_ms: 1.5,
                p90_ms: 4.0,
                p99_ms: 9.0,
                ..LatencyWindow::default()
            }],
            ..Traffic::default()
        },
        nodes: vec![
            node("alpha", 100 * scale, true),
            node("beta", 200 * scale, true),
            node("gamma", 300 * scale, false),
        ],
    };
    let mut state = live_state(90).with_fleet();
    // Without --fleet the Nodes tab is hidden; with it, key 8 shows the panel.
    assert!(
        !screen_text(draw(&live_state(90), 160, 30, &color()).backend().buffer())
            .contains("8 Nodes")
    );
    state.update(key('8'));
    assert_eq!(state.panel, crate::state::Panel::Nodes);
    for (at, scale) in [(T0, 1), (T0 + 2000, 2)] {
        state.update(Msg::Fleet {
            result: Ok(Box::new(fleet(at, scale))),
            at_ms: at,
        });
    }
    let text = screen_text(draw(&state, 160, 30, &color()).backend().buffer());
    assert!(text.contains("8 Nodes"), "{text}");
    assert!(
        text.contains("fleet prod · settings v3 · 3 nodes"),
        "{text}"
    );
    // 600 requests more over 2 s, over the whole fleet.
    assert!(text.contains("300.0 req/s"), "{text}");
    assert!(text.contains("(10s, merged)"), "{text}");
    for id in ["alpha", "beta", "gamma"] {
        assert!(text.contains(id), "{text}");
    }
    assert!(text.contains("v2 ✖ behind"), "{text}");
    assert!(text.contains("limits/api"), "{text}");
    assert_eq!(
        state
            .fleet
            .as_ref()
            .and_then(|f| f.node_rps.get("gamma"))
            .copied(),
        Some(150.0)
    );

    // The fleet going unreadable keeps the last data, marked.
    state.update(Msg::Fleet {
        result: Err(ClientError::Api(ApiProblem {
            status: 503,
            title: "Service Unavailable".into(),
            detail: Some("the fleet's Redis is unreachable".into()),
            errors: vec![],
        })),
        at_ms: T0 + 3000,
    });
    let text = screen_text(draw(&state, 160, 30, &color()).backend().buffer());
    assert!(
        text.contains("stale: the fleet's Redis is unreachable"),
        "{text}"
    );
    assert!(text.contains("gamma"), "{text}");
}
