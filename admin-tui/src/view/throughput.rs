//! The Throughput panel: requests per second over time, and responses by status class.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Paragraph, RenderDirection, Sparkline};

use super::panel_block;
use super::styles::Styles;
use crate::format;
use crate::state::State;
use crate::state::history::{STATUS_CLASSES, status_array};

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    render_sparkline(frame, top, state, styles);
    render_status(frame, bottom, state, styles);
}

pub(super) fn render_sparkline(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let width = usize::from(area.width.saturating_sub(2));
    let samples: Vec<Option<f64>> = state.history.samples().map(|s| s.rps).collect();
    let shown = &samples[samples.len().saturating_sub(width)..];
    let peak = shown.iter().flatten().copied().fold(0.0_f64, f64::max);
    let now = state.derived.rps;
    let title = format!(
        " Requests/s · now {} · peak {} · last {} samples ",
        now.map_or("-".into(), format::rate),
        format::rate(peak),
        shown.len()
    );
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "display"
    )]
    // Newest first, drawn right to left: the latest sample sits at the right edge.
    let data: Vec<Option<u64>> = shown
        .iter()
        .rev()
        .map(|r| r.map(|r| (r * 10.0).round().max(0.0) as u64))
        .collect();
    let spark = Sparkline::default()
        .block(panel_block(title, styles))
        .data(&data)
        .absent_value_symbol("·")
        .direction(RenderDirection::RightToLeft)
        .style(styles.status_class(1));
    frame.render_widget(spark, area);
}

fn render_status(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let Some(s) = &state.snapshot else {
        return;
    };
    let totals = status_array(&s.traffic.status);
    let rates = state.derived.status_rates;
    let bar_area_width = 5 * 8 + 2;
    let [bars_area, text_area] =
        Layout::horizontal([Constraint::Length(bar_area_width), Constraint::Min(20)]).areas(area);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "display"
    )]
    let bars: Vec<Bar<'_>> = (0..5)
        .map(|i| {
            let r = rates.map_or(0.0, |r| r[i]);
            Bar::default()
                .label(Line::from(STATUS_CLASSES[i]))
                .value((r * 100.0).round().max(0.0) as u64)
                .text_value(format::rate(r))
                .style(styles.status_class(i))
        })
        .collect();
    let chart = BarChart::default()
        .block(panel_block(" Status /s ", styles))
        .data(BarGroup::default().bars(&bars))
        .bar_width(6)
        .bar_gap(2);
    frame.render_widget(chart, bars_area);

    let total_rate: f64 = rates.map_or(0.0, |r| r.iter().sum());
    let mut lines = vec![Line::from(vec![Span::styled(
        format!("{:<5}{:>9}{:>8}{:>10}", "CLASS", "RATE/S", "SHARE", "TOTAL"),
        styles.header(),
    )])];
    for i in 0..5 {
        let r = rates.map(|r| r[i]);
        let share = match r {
            Some(r) if total_rate > 0.0 => format::percent(r / total_rate),
            _ => "-".into(),
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{:<5}", STATUS_CLASSES[i]), styles.status_class(i)),
            Span::raw(format!(
                "{:>9}{:>8}{:>10}",
                r.map_or("-".into(), format::rate),
                share,
                format::count(totals[i])
            )),
        ]));
    }
    lines.push(Line::from(format!(
        "{:<5}{:>9}{:>8}{:>10}",
        "all",
        rates.map_or("-".into(), |_| format::rate(total_rate)),
        "",
        format::count(s.traffic.requests_total)
    )));
    frame.render_widget(
        Paragraph::new(lines).block(panel_block(" Responses by class ", styles)),
        text_area,
    );
}
