//! The Nodes panel (`--fleet`): fleet-wide traffic with latency merged over every node's HDR
//! histograms, then one row per node of the fleet.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::panel_block;
use super::styles::{Styles, Tone};
use crate::format;
use crate::state::State;

const COLUMNS: [&str; 11] = [
    "NODE",
    "ADMIN",
    "WORKERS",
    "REQ/S",
    "IN-FL",
    "P50",
    "P99",
    "5XX",
    "VERSION",
    "OVERRIDES",
    "SEEN",
];

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let Some(fleet) = &state.fleet else {
        return;
    };
    let Some(snap) = &fleet.snapshot else {
        let text = match &fleet.error {
            Some(e) => format!("fleet not readable: {e}"),
            None => "waiting for the fleet snapshot…".to_owned(),
        };
        frame.render_widget(
            Paragraph::new(text).block(panel_block(" Nodes ", styles)),
            area,
        );
        return;
    };
    let [summary, table] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3)]).areas(area);
    let mut spans = vec![
        Span::styled(format!(" fleet {}", snap.fleet), styles.title()),
        Span::raw(format!(" · settings v{}", snap.version)),
        Span::raw(format!(" · {} nodes", snap.nodes.len())),
        Span::raw(" · "),
        Span::styled(fleet.rps.map_or("-".into(), format::rate), styles.title()),
        Span::raw(" req/s"),
    ];
    if let Some(w) = snap.traffic.latency.first() {
        spans.push(Span::raw(format!(
            " · p50/p90/p99 {}/{}/{} ({}s, merged)",
            format::millis(w.p50_ms),
            format::millis(w.p90_ms),
            format::millis(w.p99_ms),
            w.window_secs
        )));
    }
    if let Some(e) = &fleet.error {
        spans.push(Span::styled(
            format!(" · stale: {e}"),
            styles.tone(Tone::Bad),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), summary);

    let header = Row::new(
        COLUMNS
            .iter()
            .map(|c| Cell::from(*c).style(styles.header())),
    );
    let rows = snap.nodes.iter().map(|n| {
        let p = n.latency.first();
        let (sync, tone) = if n.in_sync {
            ("✓", Tone::Good)
        } else {
            ("✖ behind", Tone::Bad)
        };
        let overrides = if n.overrides.is_empty() {
            "-".to_owned()
        } else {
            n.overrides.join(",")
        };
        Row::new(vec![
            Cell::from(n.node_id.clone()).style(if n.node_id == snap.node_id {
                styles.title()
            } else {
                styles.tone(Tone::Neutral)
            }),
            Cell::from(n.admin_addr.clone().unwrap_or_default()),
            Cell::from(format!("{}/{}", n.workers_ready, n.workers)),
            Cell::from(
                fleet
                    .node_rps
                    .get(&n.node_id)
                    .map_or("-".into(), |r| format::rate(*r)),
            ),
            Cell::from(n.in_flight.to_string()),
            Cell::from(
                p.filter(|w| w.count > 0)
                    .map_or("-".into(), |w| format::millis(w.p50_ms)),
            ),
            Cell::from(
                p.filter(|w| w.count > 0)
                    .map_or("-".into(), |w| format::millis(w.p99_ms)),
            ),
            Cell::from(format::count(n.status.server_error)),
            Cell::from(format!("v{} {sync}", n.applied_version)).style(styles.tone(tone)),
            Cell::from(overrides).style(if n.overrides.is_empty() {
                styles.muted()
            } else {
                styles.tone(Tone::Warn)
            }),
            Cell::from(format!("{} ms", n.last_seen_ms)),
        ])
    });
    let widths = [
        Constraint::Length(14),
        Constraint::Length(21),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(11),
        Constraint::Length(14),
        Constraint::Length(8),
    ];
    let title = format!(
        " Nodes ({}) · node answering: {} ",
        snap.nodes.len(),
        snap.node_id
    );
    let table_widget = Table::new(rows, widths)
        .header(header)
        .block(panel_block(title, styles));
    frame.render_widget(table_widget, table);
}
