//! The Audit panel: recent admin changes, newest first.

use palisade::control::model::AuditEntry;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use serde_json::Value;

use super::styles::Styles;
use super::{filter_note, panel_block};
use crate::format;
use crate::state::{Panel, State};

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let rows = state.audit_rows();
    let total = state.snapshot.as_ref().map_or(0, |s| s.audit.len());
    let title = format!(
        " Audit ({}/{total}, newest first){} ",
        rows.len(),
        filter_note(state, Panel::Audit)
    );
    let block = panel_block(title, styles);
    if rows.is_empty() {
        let text = if total == 0 {
            "no changes recorded yet"
        } else {
            "nothing matches the filter (Esc clears it)"
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let header = Row::new(
        ["TIME", "ACTOR", "ACTION", "TARGET", "CHANGE"]
            .into_iter()
            .map(|h| Cell::from(h).style(styles.header())),
    );
    let body = rows.iter().map(|a| {
        Row::new(vec![
            Cell::from(format::clock(a.at_ms, state.utc_offset_secs)),
            Cell::from(a.actor.clone()),
            Cell::from(a.action.clone()),
            Cell::from(a.target.clone()),
            Cell::from(change(a)),
        ])
    });
    let clock_width = if state.utc_offset_secs.is_some() {
        8
    } else {
        12
    };
    let widths = [
        Constraint::Length(clock_width),
        Constraint::Length(10),
        Constraint::Length(18),
        Constraint::Length(18),
        Constraint::Min(10),
    ];
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(styles.selected())
        .highlight_symbol("▶ ");
    let mut ts = TableState::default().with_selected(state.selected_index(Panel::Audit));
    frame.render_stateful_widget(table, area, &mut ts);
}

/// What changed, compactly: `burst 20→50, mode enforce→shadow`.
pub(crate) fn change(a: &AuditEntry) -> String {
    match (&a.before, &a.after) {
        (Value::Null, Value::Null) => match &a.details {
            Value::Null => String::new(),
            d => crate::state::components::flatten(d)
                .iter()
                .map(|(k, v)| format!("{k}={}", format::value(v)))
                .collect::<Vec<_>>()
                .join(" "),
        },
        (Value::Object(b), Value::Object(n)) => {
            let mut parts = Vec::new();
            for (k, v) in n {
                match b.get(k) {
                    Some(old) if old == v => {}
                    Some(old) => {
                        parts.push(format!("{k} {}→{}", format::value(old), format::value(v)))
                    }
                    None => parts.push(format!("{k} →{}", format::value(v))),
                }
            }
            for k in b.keys().filter(|k| !n.contains_key(*k)) {
                parts.push(format!("{k} removed"));
            }
            if parts.is_empty() {
                "no change".into()
            } else {
                parts.join(", ")
            }
        }
        (Value::Null, n) => format::value(n),
        (b, n) => format!("{}→{}", format::value(b), format::value(n)),
    }
}
