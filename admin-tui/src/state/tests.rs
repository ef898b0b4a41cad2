use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use palisade::control::{ComponentKind, FieldError};
use serde_json::{Value, json};

use super::*;
use crate::client::{ApiProblem, ApiRequest, ClientError};
use crate::connection::{ConnEvent, Transport};
use crate::fixtures::{T0, live_state, snapshot};

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn code(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn typed(state: &mut State, text: &str) {
    for c in text.chars() {
        assert_eq!(state.update(key(c)), None);
    }
}

fn disconnect(state: &mut State, error: ClientError, at_ms: u64) {
    state.update(Msg::Conn {
        event: ConnEvent::Disconnected {
            error,
            attempt: 1,
            retry_in: Duration::from_millis(500),
        },
        at_ms,
    });
}

// ------------------------------------------------------------------ rates and snapshots

#[test]
fn rates_come_from_counter_deltas_over_server_time() {
    let state = live_state(2);
    let d = &state.derived;
    assert_eq!(d.dt_ms, 1000);
    assert_eq!(d.rps, Some(500.0));
    assert_eq!(d.status_rates, Some([0.0, 480.0, 0.0, 15.0, 5.0]));
    assert_eq!(d.worker_rps.get(&(0, 4243)), Some(&300.0));
    assert_eq!(d.worker_rps.get(&(1, 4250)), Some(&200.0));
    assert_eq!(
        d.component_rate(ComponentKind::Limit, "api", "allowed"),
        Some(450.0)
    );
    assert_eq!(
        d.component_rate(ComponentKind::Limit, "api", "rejected"),
        Some(12.0)
    );
    assert_eq!(
        d.component_rate(ComponentKind::Cache, "users", "l1.hits"),
        Some(90.0)
    );
}

#[test]
fn rates_use_the_snapshot_timestamps_not_arrival_times() {
    let mut state = State::new("x", T0);
    let a = snapshot(0);
    let mut b = snapshot(4); // 2000 requests more...
    b.taken_at_ms = a.taken_at_ms + 2000; // ...over two seconds of server time
    for (s, at) in [(a, T0), (b, T0 + 100)] {
        state.update(Msg::Conn {
            event: ConnEvent::Snapshot(Box::new(s)),
            at_ms: at,
        });
    }
    assert_eq!(state.derived.rps, Some(1000.0));
}

#[test]
fn first_snapshot_has_no_rates() {
    let state = live_state(1);
    assert_eq!(state.derived.rps, None);
    assert!(state.derived.worker_rps.is_empty());
    assert_eq!(state.history.len(), 1);
}

#[test]
fn a_restarted_server_gives_no_negative_rates() {
    let mut state = live_state(3);
    let mut restarted = snapshot(0);
    restarted.server.pid = 9999;
    restarted.taken_at_ms = T0 + 10_000;
    restarted.seq = 1;
    state.update(Msg::Conn {
        event: ConnEvent::Snapshot(Box::new(restarted.clone())),
        at_ms: T0 + 10_000,
    });
    assert_eq!(state.derived.rps, None);
    // Same pid but counters went backwards (e.g. a reset): still no rate.
    let mut next = restarted;
    next.seq = 2;
    next.taken_at_ms += 1000;
    next.traffic.requests_total = 10;
    state.update(Msg::Conn {
        event: ConnEvent::Snapshot(Box::new(next)),
        at_ms: T0 + 11_000,
    });
    assert_eq!(state.derived.rps, None);
    assert_eq!(state.derived.worker_rps.get(&(0, 4243)), Some(&0.0));
}

#[test]
fn a_replaced_worker_process_starts_its_rate_over() {
    let mut state = live_state(1);
    let mut s = snapshot(1);
    s.workers[1].pid = 5000;
    s.workers[1].requests = 10;
    state.update(Msg::Conn {
        event: ConnEvent::Snapshot(Box::new(s)),
        at_ms: T0 + 1000,
    });
    assert_eq!(state.derived.worker_rps.get(&(0, 4243)), Some(&300.0));
    assert!(!state.derived.worker_rps.contains_key(&(1, 5000)));
}

#[test]
fn duplicate_snapshot_is_not_counted_twice() {
    let mut state = live_state(2);
    let rps = state.derived.rps;
    state.update(Msg::Conn {
        event: ConnEvent::Snapshot(Box::new(snapshot(1))),
        at_ms: T0 + 1500,
    });
    assert_eq!(state.history.len(), 2);
    assert_eq!(state.derived.rps, rps);
    assert_eq!(state.last_update_ms, Some(T0 + 1500));
}

#[test]
fn history_keeps_latency_of_the_shortest_window() {
    let state = live_state(3);
    let latest = state.history.latest().unwrap();
    assert_eq!(latest.latency.as_ref().unwrap().window_secs, 10);
    assert_eq!(latest.at_ms, T0 + 2000);
}

// ------------------------------------------------------------------ connection states

#[test]
fn disconnect_keeps_data_and_marks_it_stale_with_the_reason() {
    let mut state = live_state(2);
    assert!(!state.is_stale());
    disconnect(&mut state, ClientError::Refused, T0 + 5000);
    assert!(state.snapshot.is_some());
    assert!(state.is_stale());
    assert_eq!(state.stale_since_ms(), Some(T0 + 1000));
    assert_eq!(state.stale_reason().as_deref(), Some("connection refused"));
    assert!(matches!(state.link, Link::Down { retry_at_ms, .. } if retry_at_ms == T0 + 5500));
    // Reconnecting keeps the reason until data flows again.
    state.update(Msg::Conn {
        event: ConnEvent::Connecting { attempt: 1 },
        at_ms: T0 + 5500,
    });
    assert_eq!(state.stale_reason().as_deref(), Some("connection refused"));
    state.update(Msg::Conn {
        event: ConnEvent::Connected {
            transport: Transport::Polling,
        },
        at_ms: T0 + 6000,
    });
    state.update(Msg::Conn {
        event: ConnEvent::Snapshot(Box::new(snapshot(6))),
        at_ms: T0 + 6000,
    });
    assert!(!state.is_stale());
    assert!(state.last_error.is_none());
}

#[test]
fn a_silent_live_connection_goes_stale_after_the_threshold() {
    let mut state = live_state(1);
    state.update(Msg::Tick {
        now_ms: T0 + STALE_AFTER_MS,
    });
    assert!(!state.is_stale());
    state.update(Msg::Tick {
        now_ms: T0 + STALE_AFTER_MS + 1,
    });
    assert!(state.is_stale());
    assert_eq!(state.stale_reason().as_deref(), Some("no update for 10s"));
}

#[test]
fn unauthorized_is_reported_as_such() {
    let mut state = State::new("x", T0);
    disconnect(
        &mut state,
        ClientError::Unauthorized("bad token".into()),
        T0,
    );
    let Link::Down { error, .. } = &state.link else {
        panic!("not down")
    };
    assert_eq!(error.class(), "401");
    assert!(!state.is_stale(), "nothing to be stale without data");
}

// ------------------------------------------------------------------ keys: navigation

#[test]
fn quit_keys_quit_and_ctrl_c_quits_even_while_typing() {
    let mut state = live_state(1);
    assert_eq!(state.update(key('q')), Some(Effect::Quit));
    state.update(key('/'));
    assert_eq!(state.mode, Mode::Filter);
    assert_eq!(state.update(key('q')), None, "q is text in the filter");
    let ctrl_c = Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(state.update(ctrl_c), Some(Effect::Quit));
}

#[test]
fn tab_and_digits_switch_panels() {
    let mut state = live_state(1);
    state.update(code(KeyCode::Tab));
    assert_eq!(state.panel, Panel::Latency);
    state.update(Msg::Key(KeyEvent::new(
        KeyCode::BackTab,
        KeyModifiers::SHIFT,
    )));
    state.update(Msg::Key(KeyEvent::new(
        KeyCode::BackTab,
        KeyModifiers::SHIFT,
    )));
    assert_eq!(state.panel, Panel::Audit);
    for (c, p) in ('1'..='7').zip(Panel::ALL) {
        state.update(key(c));
        assert_eq!(state.panel, p);
    }
}

#[test]
fn help_opens_and_closes() {
    let mut state = live_state(1);
    state.update(key('?'));
    assert_eq!(state.mode, Mode::Help);
    state.update(key('j'));
    assert_eq!(state.mode, Mode::Help, "other keys keep help open");
    state.update(code(KeyCode::Esc));
    assert_eq!(state.mode, Mode::Normal);
}

#[test]
fn selection_moves_and_clamps() {
    let mut state = live_state(1);
    assert_eq!(state.selected_index(Panel::Workers), Some(0));
    state.update(key('j'));
    state.update(key('j'));
    assert_eq!(state.selected_worker().unwrap().id, 1);
    state.update(key('g'));
    assert_eq!(state.selected_index(Panel::Workers), Some(0));
    state.update(key('G'));
    assert_eq!(state.selected_index(Panel::Workers), Some(1));
    state.update(code(KeyCode::PageUp));
    assert_eq!(state.selected_index(Panel::Workers), Some(0));
}

#[test]
fn selection_follows_the_worker_when_rows_resort() {
    let mut state = live_state(2);
    state.update(key('j')); // worker 1 selected
    // Sort by REQ/S descending: worker 0 (300/s) first.
    for _ in 0..4 {
        state.update(key('l'));
    }
    state.update(key('i'));
    let ids: Vec<u32> = state.worker_rows().iter().map(|w| w.id).collect();
    assert_eq!(ids, [0, 1]);
    state.update(key('i'));
    let ids: Vec<u32> = state.worker_rows().iter().map(|w| w.id).collect();
    assert_eq!(ids, [1, 0]);
    assert_eq!(state.selected_worker().unwrap().id, 1);
}

#[test]
fn sort_column_wraps_both_ways() {
    let mut state = live_state(1);
    state.update(key('h'));
    assert_eq!(state.tables[0].column, WorkerColumn::ALL.len() - 1);
    state.update(code(KeyCode::Right));
    assert_eq!(state.tables[0].column, 0);
}

#[test]
fn filter_narrows_rows_and_esc_clears_it() {
    let mut state = live_state(1);
    state.update(key('4'));
    state.update(key('/'));
    typed(&mut state, "log");
    assert_eq!(state.component_rows(ComponentKind::Limit).len(), 1);
    state.update(code(KeyCode::Backspace));
    state.update(code(KeyCode::Enter));
    assert_eq!(state.mode, Mode::Normal);
    assert_eq!(state.tables[Panel::Limits.index()].filter, "lo");
    assert_eq!(
        state.selected_component(ComponentKind::Limit).unwrap().name,
        "login"
    );
    state.update(code(KeyCode::Esc));
    assert_eq!(state.component_rows(ComponentKind::Limit).len(), 2);
}

// ------------------------------------------------------------------ keys: edits

fn api_request(effect: Option<Effect>) -> (u64, ApiRequest) {
    match effect {
        Some(Effect::Api { id, request }) => (id, request),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn editing_a_limit_sends_a_merge_patch_with_the_version() {
    let mut state = live_state(2);
    state.update(key('4'));
    // Fields: rate, per, burst, mode → move to burst.
    state.update(key('l'));
    state.update(key('l'));
    assert_eq!(
        state.selected_field(ComponentKind::Limit).as_deref(),
        Some("burst")
    );
    state.update(key('e'));
    let Mode::Edit(edit) = &state.mode else {
        panic!("not editing: {:?}", state.mode)
    };
    assert_eq!((edit.buffer.as_str(), edit.version), ("20", 3));
    state.update(code(KeyCode::Backspace));
    state.update(code(KeyCode::Backspace));
    typed(&mut state, "50");
    state.update(code(KeyCode::Enter));
    let Mode::Confirm(c) = &state.mode else {
        panic!("no confirmation")
    };
    assert_eq!(c.message, "limits/api: burst 20 → 50");
    let (id, request) = api_request(state.update(code(KeyCode::Enter)));
    assert_eq!(
        request,
        ApiRequest::UpdateSettings {
            kind: ComponentKind::Limit,
            name: "api".into(),
            version: 3,
            patch: json!({"burst": 50}),
        }
    );
    assert_eq!(state.mode, Mode::Normal);
    state.update(Msg::ApiResult {
        id,
        result: Ok(Value::Null),
        at_ms: T0 + 3000,
    });
    let n = state.notice.as_ref().unwrap();
    assert_eq!(
        (n.level, n.text.as_str()),
        (Level::Success, "✓ limits/api: burst 20 → 50")
    );
    assert!(state.pending.is_empty());
    // The change shows at once, with the next version, before the next snapshot.
    let api = state.selected_component(ComponentKind::Limit).unwrap();
    assert_eq!((api.version, &api.settings["burst"]), (4, &json!(50)));
    state.update(key('e'));
    assert!(matches!(&state.mode, Mode::Edit(e) if e.version == 4 && e.buffer == "50"));
}

#[test]
fn the_servers_answer_sets_the_new_version() {
    let mut state = live_state(1);
    state.update(key('4'));
    state.update(key('e'));
    typed(&mut state, "0");
    state.update(code(KeyCode::Enter));
    let (id, _) = api_request(state.update(key('y')));
    state.update(Msg::ApiResult {
        id,
        result: Ok(json!({"version": 9, "settings": {"rate": 1000}})),
        at_ms: T0,
    });
    let api = state.selected_component(ComponentKind::Limit).unwrap();
    assert_eq!(
        (api.version, api.settings.clone()),
        (9, json!({"rate": 1000}))
    );
}

#[test]
fn a_value_of_the_wrong_type_is_refused_locally() {
    let mut state = live_state(1);
    state.update(key('4'));
    state.update(key('e'));
    state.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    typed(&mut state, "lots");
    state.update(code(KeyCode::Enter));
    let Mode::Edit(edit) = &state.mode else {
        panic!("edit closed")
    };
    assert_eq!(edit.error.as_deref(), Some("`lots` is not a number"));
}

#[test]
fn server_validation_errors_reopen_the_edit_with_the_reasons() {
    let mut state = live_state(1);
    state.update(key('4'));
    state.update(key('e'));
    state.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    typed(&mut state, "0");
    state.update(code(KeyCode::Enter));
    let (id, _) = api_request(state.update(key('y')));
    let problem = ApiProblem {
        status: 400,
        title: "Bad Request".into(),
        detail: Some("invalid settings".into()),
        errors: vec![FieldError::new("rate", "must be at least 1 (got 0)")],
    };
    state.update(Msg::ApiResult {
        id,
        result: Err(ClientError::Api(problem)),
        at_ms: T0,
    });
    let Mode::Edit(edit) = &state.mode else {
        panic!("edit not reopened")
    };
    assert_eq!(edit.buffer, "0");
    assert_eq!(edit.server_errors[0].reason, "must be at least 1 (got 0)");
    let n = state.notice.as_ref().unwrap();
    assert_eq!(n.level, Level::Error);
    assert!(
        n.text.contains("rate: must be at least 1 (got 0)"),
        "{}",
        n.text
    );
}

#[test]
fn a_stale_version_is_explained() {
    let mut state = live_state(1);
    state.update(key('4'));
    state.update(key('e'));
    typed(&mut state, "0");
    state.update(code(KeyCode::Enter));
    let (id, _) = api_request(state.update(key('y')));
    let problem = ApiProblem {
        status: 412,
        title: "Precondition Failed".into(),
        ..ApiProblem::default()
    };
    state.update(Msg::ApiResult {
        id,
        result: Err(ClientError::Api(problem)),
        at_ms: T0,
    });
    assert_eq!(state.mode, Mode::Normal);
    assert!(state.notice.as_ref().unwrap().text.contains("412"));
}

#[test]
fn cancelling_a_confirmation_returns_to_the_edit() {
    let mut state = live_state(1);
    state.update(key('4'));
    state.update(key('e'));
    typed(&mut state, "5");
    state.update(code(KeyCode::Enter));
    assert!(matches!(state.mode, Mode::Confirm(_)));
    state.update(key('n'));
    assert!(matches!(&state.mode, Mode::Edit(e) if e.buffer == "1005"));
    state.update(code(KeyCode::Esc));
    assert_eq!(state.mode, Mode::Normal);
    assert!(state.pending.is_empty());
}

#[test]
fn unchanged_value_sends_nothing() {
    let mut state = live_state(1);
    state.update(key('4'));
    state.update(key('e'));
    assert_eq!(state.update(code(KeyCode::Enter)), None);
    assert_eq!(state.mode, Mode::Normal);
    assert!(state.notice.as_ref().unwrap().text.contains("unchanged"));
}

#[test]
fn changes_are_disabled_while_disconnected() {
    let mut state = live_state(1);
    disconnect(&mut state, ClientError::Timeout, T0 + 2000);
    state.update(key('4'));
    state.update(key('e'));
    assert_eq!(state.mode, Mode::Normal);
    state.update(key('1'));
    state.update(key('d'));
    assert_eq!(state.mode, Mode::Normal);
    assert_eq!(state.notice.as_ref().unwrap().level, Level::Error);
}

// ------------------------------------------------------------------ keys: actions

#[test]
fn drain_needs_an_explicit_yes() {
    let mut state = live_state(1);
    state.update(key('j'));
    state.update(key('d'));
    let Mode::Confirm(c) = &state.mode else {
        panic!("no confirmation")
    };
    assert!(
        c.message.starts_with("Drain worker 1 (pid 4250)?"),
        "{}",
        c.message
    );
    assert_eq!(
        state.update(code(KeyCode::Enter)),
        None,
        "Enter does not confirm a drain"
    );
    let (_, request) = api_request(state.update(key('y')));
    assert_eq!(request, ApiRequest::DrainWorker { id: 1 });
}

#[test]
fn scale_up_and_down_from_the_current_count() {
    let mut state = live_state(1);
    state.update(key('+'));
    assert_eq!(
        api_request(state.update(key('y'))).1,
        ApiRequest::ScaleWorkers { workers: 3 }
    );
    state.update(key('-'));
    assert_eq!(
        api_request(state.update(key('y'))).1,
        ApiRequest::ScaleWorkers { workers: 1 }
    );
    state.update(key('r'));
    assert_eq!(
        api_request(state.update(key('y'))).1,
        ApiRequest::RestartWorkers
    );
}

#[test]
fn cannot_scale_below_one_worker() {
    let mut state = State::new("x", T0);
    state.update(Msg::Conn {
        event: ConnEvent::Connected {
            transport: Transport::Stream,
        },
        at_ms: T0,
    });
    let mut s = snapshot(0);
    s.workers.truncate(1);
    state.update(Msg::Conn {
        event: ConnEvent::Snapshot(Box::new(s)),
        at_ms: T0,
    });
    state.update(key('-'));
    assert_eq!(state.mode, Mode::Normal);
    assert_eq!(
        state.notice.as_ref().unwrap().text,
        "cannot scale below one worker"
    );
}

#[test]
fn breaker_actions_target_the_selected_breaker() {
    let mut state = live_state(1);
    state.update(key('5'));
    state.update(key('j'));
    for (k, action) in [('o', "force_open"), ('c', "force_closed"), ('r', "reset")] {
        state.update(key(k));
        let (_, request) = api_request(state.update(key('y')));
        assert_eq!(
            request,
            ApiRequest::Action {
                kind: ComponentKind::Breaker,
                name: "search".into(),
                action: action.into(),
                args: Value::Null,
            }
        );
    }
}

#[test]
fn cache_invalidate_prompts_for_the_key() {
    let mut state = live_state(1);
    state.update(key('6'));
    state.update(key('i'));
    assert!(matches!(state.mode, Mode::Prompt(_)));
    state.update(code(KeyCode::Enter));
    assert!(matches!(&state.mode, Mode::Prompt(p) if p.error.as_deref() == Some("enter a key")));
    typed(&mut state, "user:42");
    state.update(code(KeyCode::Enter));
    let (_, request) = api_request(state.update(key('y')));
    assert_eq!(
        request,
        ApiRequest::Action {
            kind: ComponentKind::Cache,
            name: "users".into(),
            action: "invalidate".into(),
            args: json!({"key": "user:42"}),
        }
    );
    state.update(key('p'));
    typed(&mut state, "user:");
    state.update(code(KeyCode::Enter));
    let (_, request) = api_request(state.update(code(KeyCode::Enter)));
    assert!(
        matches!(request, ApiRequest::Action { ref action, ref args, .. }
        if action == "invalidate_prefix" && args == &json!({"prefix": "user:"}))
    );
    state.update(key('f'));
    let (_, request) = api_request(state.update(key('y')));
    assert!(matches!(request, ApiRequest::Action { ref action, .. } if action == "flush"));
}

#[test]
fn failed_action_is_reported() {
    let mut state = live_state(1);
    state.update(key('r'));
    let (id, _) = api_request(state.update(key('y')));
    state.update(Msg::ApiResult {
        id,
        result: Err(ClientError::Timeout),
        at_ms: T0,
    });
    let n = state.notice.as_ref().unwrap();
    assert_eq!(n.text, "✖ rolling restart failed: timed out");
    state.update(code(KeyCode::Esc));
    assert!(state.notice.is_none());
}

#[test]
fn reconnect_key_asks_the_connection_to_retry() {
    let mut state = live_state(1);
    assert_eq!(state.update(key('R')), Some(Effect::Reconnect));
}

#[test]
fn redraw_only_when_dirty() {
    let mut state = live_state(1);
    assert!(state.take_dirty());
    assert!(!state.take_dirty());
    state.update(Msg::Resize {
        width: 100,
        height: 30,
    });
    assert_eq!(state.size, (100, 30));
    assert!(state.take_dirty());
}
