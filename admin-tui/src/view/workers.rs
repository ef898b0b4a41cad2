//! The Workers panel: a sortable, selectable table of worker processes.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::styles::{self, Styles, Tone};
use super::{filter_note, panel_block};
use crate::format;
use crate::state::{Panel, State, WorkerColumn};

/// Lines the overview under the table needs to be worth drawing.
const OVERVIEW_MIN: u16 = 12;

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    // With room to spare, the home screen also shows latency and throughput at a glance.
    let wanted = u16::try_from(state.worker_rows().len())
        .unwrap_or(u16::MAX)
        .saturating_add(4)
        .max(6);
    let area = if area.height >= wanted + OVERVIEW_MIN {
        let [table, overview] =
            Layout::vertical([Constraint::Length(wanted), Constraint::Min(OVERVIEW_MIN)])
                .areas(area);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(overview);
        super::latency::render_chart(frame, left, state, styles);
        super::throughput::render_sparkline(frame, right, state, styles);
        table
    } else {
        area
    };
    let rows = state.worker_rows();
    let ui = &state.tables[Panel::Workers.index()];
    let sort = WorkerColumn::ALL[ui.column.min(WorkerColumn::ALL.len() - 1)];
    let total = state.snapshot.as_ref().map_or(0, |s| s.workers.len());
    let title = format!(
        " Workers ({}/{total}) · sort {} {}{} ",
        rows.len(),
        sort.title(),
        if ui.descending { "▼" } else { "▲" },
        filter_note(state, Panel::Workers)
    );
    let mut block = panel_block(title, styles);
    let selected = state.selected_index(Panel::Workers);
    if let Some(w) = state.selected_worker() {
        block = block.title_bottom(Line::from(vec![Span::styled(
            format!(
                " worker {} · pid {} · {} requests · loop lag {} ",
                w.id,
                w.pid,
                format::count(w.requests),
                format::millis(w.loop_lag_ms)
            ),
            styles.muted(),
        )]));
    }
    if rows.is_empty() {
        let text = if total == 0 {
            "no workers reported"
        } else {
            "no worker matches the filter (Esc clears it)"
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let header = Row::new(WorkerColumn::ALL.iter().map(|c| {
        let style = if *c == sort {
            styles.sorted_header()
        } else {
            styles.header()
        };
        Cell::from(c.title()).style(style)
    }));
    let body = rows.iter().map(|w| {
        let (glyph, tone) = styles::worker_state(&w.state);
        let restarts_tone = if w.restarts > 0 {
            Tone::Warn
        } else {
            Tone::Neutral
        };
        Row::new(vec![
            Cell::from(w.id.to_string()),
            Cell::from(w.pid.to_string()),
            Cell::from(format!("{glyph} {}", w.state)).style(styles.tone(tone)),
            Cell::from(format::duration_secs(w.uptime_secs)),
            Cell::from(state.worker_rps(w).map_or("-".into(), format::rate)),
            Cell::from(w.in_flight.to_string()),
            Cell::from(w.p99_ms.map_or("-".into(), format::millis)),
            Cell::from(format::bytes(w.rss_bytes)),
            Cell::from(w.restarts.to_string()).style(styles.tone(restarts_tone)),
        ])
    });
    let widths = [
        Constraint::Length(3),
        Constraint::Length(7),
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(styles.selected())
        .highlight_symbol("▶ ");
    let mut ts = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut ts);
}
