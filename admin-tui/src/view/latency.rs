//! The Latency panel: p50/p90/p99 over the last minutes, and the server's windows.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Cell, Chart, Dataset, GraphType, LegendPosition, Paragraph, Row, Table,
};

use super::panel_block;
use super::styles::Styles;
use crate::format;
use crate::state::State;

/// The most history the chart shows.
pub(crate) const CHART_SPAN_MS: u64 = 5 * 60 * 1000;

/// The chart's time span: the history collected so far, in whole minutes, from one minute up
/// to [`CHART_SPAN_MS`].
fn span_ms(state: &State) -> u64 {
    let oldest = state
        .history
        .samples()
        .next()
        .map_or(state.now_ms, |s| s.at_ms);
    let age = state.now_ms.saturating_sub(oldest);
    age.div_ceil(60_000).clamp(1, CHART_SPAN_MS / 60_000) * 60_000
}

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let windows = state
        .snapshot
        .as_ref()
        .map(|s| s.traffic.latency.clone())
        .unwrap_or_default();
    let table_height = u16::try_from(windows.len())
        .unwrap_or(0)
        .saturating_add(3)
        .min(8);
    let table_height = if area.height >= table_height + 8 {
        table_height
    } else {
        0
    };
    let [chart_area, table_area] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(table_height)]).areas(area);
    render_chart(frame, chart_area, state, styles);
    if table_height > 0 {
        render_windows(frame, table_area, &windows, styles);
    }
}

pub(super) fn render_chart(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let now = state.now_ms;
    #[allow(clippy::cast_precision_loss, reason = "chart coordinates")]
    let x = |at: u64| -((now.saturating_sub(at)) as f64 / 1000.0);
    let mut series: [Vec<(f64, f64)>; 3] = Default::default();
    let span = span_ms(state);
    for s in state.history.since(now, span) {
        if let Some(l) = &s.latency {
            series[0].push((x(s.at_ms), l.p50_ms));
            series[1].push((x(s.at_ms), l.p90_ms));
            series[2].push((x(s.at_ms), l.p99_ms));
        }
    }
    let minutes = span / 60_000;
    let block = panel_block(
        format!(
            " Latency · last {} (ms) ",
            if minutes == 1 {
                "minute".to_owned()
            } else {
                format!("{minutes} minutes")
            }
        ),
        styles,
    );
    if series[0].is_empty() {
        frame.render_widget(
            Paragraph::new("no latency samples yet (no requests in the latency window)")
                .block(block),
            area,
        );
        return;
    }
    let y_max = series[2]
        .iter()
        .chain(&series[1])
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(0.001)
        * 1.1;
    // Without colour the three lines differ by marker.
    let markers = if styles.color() {
        [Marker::Braille; 3]
    } else {
        [Marker::Dot, Marker::Braille, Marker::Block]
    };
    let names = ["p50", "p90", "p99"];
    let datasets = (0..3)
        .map(|i| {
            Dataset::default()
                .name(names[i])
                .marker(markers[i])
                .graph_type(GraphType::Line)
                .style(styles.percentile(i))
                .data(&series[i])
        })
        .collect();
    #[allow(clippy::cast_precision_loss, reason = "chart bounds")]
    let span_secs = (span / 1000) as f64;
    let half = crate::format::duration_secs(span / 2000);
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .bounds([-span_secs, 0.0])
                .labels([format!("-{minutes}m"), format!("-{half}"), "now".to_owned()])
                .style(styles.muted()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, y_max])
                .labels([
                    Line::from("0"),
                    Line::from(format::millis(y_max / 2.0)),
                    Line::from(format::millis(y_max)),
                ])
                .style(styles.muted()),
        )
        .legend_position(Some(LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Ratio(1, 3), Constraint::Ratio(1, 2)));
    frame.render_widget(chart, area);
}

fn render_windows(
    frame: &mut Frame<'_>,
    area: Rect,
    windows: &[palisade::control::model::LatencyWindow],
    styles: &Styles,
) {
    let header = Row::new(
        ["WINDOW", "COUNT", "P50", "P90", "P99", "P99.9", "MAX"]
            .into_iter()
            .map(|h| Cell::from(h).style(styles.header())),
    );
    let rows = windows.iter().map(|w| {
        Row::new(vec![
            Cell::from(format::duration_secs(w.window_secs)),
            Cell::from(format::count(w.count)),
            Cell::from(Span::styled(format::millis(w.p50_ms), styles.percentile(0))),
            Cell::from(Span::styled(format::millis(w.p90_ms), styles.percentile(1))),
            Cell::from(Span::styled(format::millis(w.p99_ms), styles.percentile(2))),
            Cell::from(format::millis(w.p999_ms)),
            Cell::from(format::millis(w.max_ms)),
        ])
    });
    let table = Table::new(rows, [Constraint::Length(8); 7])
        .header(header)
        .block(panel_block(" Windows (merged over all workers) ", styles));
    frame.render_widget(table, area);
}
