//! Rendering. Everything here reads `&State` and draws; nothing changes state.
//!
//! Screen layout, top to bottom: header (server, version, mode, uptime, connection), tabs,
//! key figures, a stale banner when the data is not live, the panel, and a footer with the
//! last message or the keys of the panel. Dialogs and the help overlay go on top.

mod audit;
mod components;
mod latency;
mod nodes;
mod overlays;
pub mod styles;
#[cfg(test)]
mod tests;
mod throughput;
mod workers;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Wrap};

use crate::format;
use crate::input::{BINDINGS, Scope};
use crate::state::history::{STATUS_CLASSES, shortest_window, status_array};
use crate::state::{Level, Link, Mode, Panel, State};

pub use self::styles::Styles;

/// Below this size only a "terminal too small" note is drawn.
pub const MIN_SIZE: (u16, u16) = (40, 10);

/// Draws the whole screen.
pub fn render(frame: &mut Frame<'_>, state: &State, styles: &Styles) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let msg = Paragraph::new(format!(
            "terminal too small ({}x{}); need at least {}x{}",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        ))
        .wrap(Wrap { trim: true });
        frame.render_widget(msg, area);
        return;
    }
    let banner = u16::from(state.snapshot.is_some() && state.is_stale());
    let [header, tabs, kpi, banner_area, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(banner),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);

    render_header(frame, header, state, styles);
    render_tabs(frame, tabs, state, styles);
    render_kpis(frame, kpi, state, styles);
    if banner > 0 {
        render_stale_banner(frame, banner_area, state, styles);
    }
    if state.snapshot.is_some() {
        match state.panel {
            Panel::Workers => workers::render(frame, body, state, styles),
            Panel::Latency => latency::render(frame, body, state, styles),
            Panel::Throughput => throughput::render(frame, body, state, styles),
            Panel::Limits | Panel::Breakers | Panel::Caches => {
                components::render(frame, body, state, styles);
            }
            Panel::Audit => audit::render(frame, body, state, styles),
            Panel::Nodes => nodes::render(frame, body, state, styles),
        }
        if state.is_stale() {
            frame.buffer_mut().set_style(kpi, styles.stale());
            frame.buffer_mut().set_style(body, styles.stale());
        }
    } else {
        render_connecting(frame, body, state, styles);
    }
    render_footer(frame, footer, state, styles);
    overlays::render(frame, area, state, styles);
}

/// A bordered panel block with a title.
pub(crate) fn panel_block<'a>(title: impl Into<Line<'a>>, styles: &Styles) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(styles.border())
        .title(title)
        .title_style(styles.title())
}

/// A "filter: text" note for titles when a filter is set.
pub(crate) fn filter_note(state: &State, panel: Panel) -> String {
    let f = &state.tables[panel.index()].filter;
    if f.is_empty() {
        String::new()
    } else {
        format!(" · filter: {f}")
    }
}

fn connection_status(state: &State, styles: &Styles) -> Vec<Span<'static>> {
    match &state.link {
        Link::Live { transport, .. } => vec![
            Span::styled("● LIVE", styles.tone(styles::Tone::Good)),
            Span::raw(format!(" {}", transport.as_str())),
        ],
        Link::Connecting { attempt } => {
            let text = if *attempt == 0 {
                "◌ CONNECTING".to_owned()
            } else {
                format!("◌ CONNECTING #{}", attempt + 1)
            };
            vec![Span::styled(text, styles.tone(styles::Tone::Info))]
        }
        Link::Down {
            error, retry_at_ms, ..
        } => {
            let secs = retry_at_ms.saturating_sub(state.now_ms).div_ceil(1000);
            vec![
                Span::styled(
                    format!("✖ DOWN ({})", error.class()),
                    styles.tone(styles::Tone::Bad),
                ),
                Span::raw(format!(" retry {secs}s")),
            ]
        }
    }
}

fn render_header(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let status = connection_status(state, styles);
    let status_width = status.iter().map(Span::width).sum::<usize>() + 1;
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(u16::try_from(status_width).unwrap_or(u16::MAX)),
    ])
    .areas(area);
    let mut spans = vec![Span::styled(" palisade-top ", styles.title())];
    match &state.snapshot {
        Some(s) => {
            let srv = &s.server;
            let groups = [
                Span::styled(format!("{} {}", srv.name, srv.version), styles.title()),
                Span::raw(srv.mode.clone()),
                Span::raw(format!("up {}", format::duration_secs(srv.uptime_secs))),
                Span::raw(plural(s.workers.len(), "worker")),
                Span::raw(format!("pid {}", srv.pid)),
                Span::styled(target_host(&state.target), styles.muted()),
            ];
            let mut width = spans[0].width();
            for (i, g) in groups.into_iter().enumerate() {
                let sep = if i == 0 { 0 } else { 3 };
                if width + sep + g.width() > usize::from(left.width) {
                    break;
                }
                if sep > 0 {
                    spans.push(Span::styled(" · ", styles.muted()));
                }
                width += sep + g.width();
                spans.push(g);
            }
        }
        None => spans.push(Span::styled(state.target.clone(), styles.muted())),
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), left);
    frame.render_widget(
        Paragraph::new(Line::from(status)).alignment(Alignment::Right),
        right,
    );
}

fn target_host(target: &str) -> String {
    target
        .split_once("://")
        .map_or(target, |(_, rest)| rest)
        .to_owned()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn render_tabs(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let mut spans = Vec::new();
    for (i, p) in Panel::ALL.iter().enumerate() {
        if *p == Panel::Nodes && state.fleet.is_none() {
            continue;
        }
        let text = format!(" {} {} ", i + 1, p.title());
        let style = if *p == state.panel {
            styles.tab_active()
        } else {
            Style::new()
        };
        spans.push(Span::styled(text, style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_kpis(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let Some(s) = &state.snapshot else {
        return;
    };
    let d = &state.derived;
    // In priority order; a group that does not fit is left out.
    let mut groups: Vec<Vec<Span<'static>>> = Vec::new();
    groups.push(vec![
        Span::styled(d.rps.map_or("-".into(), format::rate), styles.title()),
        Span::raw(" req/s"),
    ]);
    if let Some(w) = shortest_window(&s.traffic.latency) {
        groups.push(vec![
            Span::styled("p50", styles.percentile(0)),
            Span::raw("/"),
            Span::styled("p90", styles.percentile(1)),
            Span::raw("/"),
            Span::styled("p99", styles.percentile(2)),
            Span::raw(format!(
                " {}/{}/{}",
                format::millis(w.p50_ms).trim_end_matches("ms"),
                format::millis(w.p90_ms).trim_end_matches("ms"),
                format::millis(w.p99_ms)
            )),
            Span::styled(format!(" ({}s)", w.window_secs), styles.muted()),
        ]);
    }
    if let Some(rates) = d.status_rates {
        let total: f64 = rates.iter().sum();
        let mut g = Vec::new();
        for i in [3usize, 4] {
            let share = if total > 0.0 { rates[i] / total } else { 0.0 };
            let tone = if share > 0.0 && i == 4 {
                styles::Tone::Bad
            } else if share > 0.0 {
                styles::Tone::Warn
            } else {
                styles::Tone::Neutral
            };
            if !g.is_empty() {
                g.push(Span::raw(" "));
            }
            g.push(Span::raw(format!("{} ", STATUS_CLASSES[i])));
            g.push(Span::styled(format::percent(share), styles.tone(tone)));
        }
        groups.push(g);
    } else {
        let counts = status_array(&s.traffic.status);
        groups.push(vec![Span::raw(format!(
            "4xx {} 5xx {} total",
            format::count(counts[3]),
            format::count(counts[4])
        ))]);
    }
    groups.push(vec![Span::raw(format!(
        "in-flight {}",
        s.traffic.in_flight
    ))]);
    if let Some(at) = state.last_update_ms {
        groups.push(vec![Span::styled(
            format!("updated {}", format::clock(at, state.utc_offset_secs)),
            styles.muted(),
        )]);
    }
    let mut line = vec![Span::raw(" ")];
    let mut width = 1;
    for g in groups {
        let sep = if width > 1 { 3 } else { 0 };
        let w: usize = g.iter().map(Span::width).sum::<usize>() + sep;
        if width + w > usize::from(area.width) {
            continue;
        }
        if sep > 0 {
            line.push(Span::styled(" · ", styles.muted()));
        }
        width += w;
        line.extend(g);
    }
    frame.render_widget(Paragraph::new(Line::from(line)), area);
}

fn render_stale_banner(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let since = state
        .stale_since_ms()
        .map_or("-".into(), |t| format::clock(t, state.utc_offset_secs));
    let mut text = format!(" STALE since {since}");
    if let Some(reason) = state.stale_reason() {
        text.push_str(&format!(" — {reason}"));
    }
    match &state.link {
        Link::Down {
            attempt,
            retry_at_ms,
            ..
        } => {
            let secs = retry_at_ms.saturating_sub(state.now_ms).div_ceil(1000);
            text.push_str(&format!(" — retry in {secs}s (attempt {attempt}), R: now"));
        }
        Link::Connecting { attempt } => {
            text.push_str(&format!(" — reconnecting (attempt {})", attempt + 1));
        }
        Link::Live { .. } => {}
    }
    let style = if styles.color() {
        styles
            .tone(styles::Tone::Warn)
            .add_modifier(ratatui::style::Modifier::REVERSED)
    } else {
        styles.tab_active()
    };
    frame.render_widget(
        Paragraph::new(format::truncate(&text, usize::from(area.width))).style(style),
        area,
    );
}

fn render_connecting(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let block = panel_block(" Connecting ", styles);
    let mut lines = vec![
        Line::from(vec![
            Span::raw("Admin API  "),
            Span::styled(state.target.clone(), styles.title()),
        ]),
        Line::from(format!("Token      {}", state.token_hint)),
        Line::raw(""),
    ];
    match &state.link {
        Link::Connecting { attempt } => lines.push(Line::styled(
            format!("Connecting… (attempt {})", attempt + 1),
            styles.tone(styles::Tone::Info),
        )),
        Link::Down {
            error,
            attempt,
            retry_at_ms,
        } => {
            let secs = retry_at_ms.saturating_sub(state.now_ms).div_ceil(1000);
            lines.push(Line::styled(
                format!("✖ {error}"),
                styles.tone(styles::Tone::Bad),
            ));
            lines.push(Line::raw(format!(
                "Retrying in {secs}s (attempt {attempt}); press R to retry now."
            )));
        }
        Link::Live { .. } => lines.push(Line::raw("Connected; waiting for the first snapshot…")),
    }
    if let Some((error, _)) = &state.last_error {
        lines.push(Line::raw(""));
        lines.push(Line::raw(hint_for(error)));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn hint_for(error: &crate::client::ClientError) -> String {
    use crate::client::ClientError as E;
    match error {
        E::Refused => "Nothing listens there. Is the server running? See --url.".into(),
        E::Unauthorized(_) => {
            "The server refused the token: check --token-file, --token or PALISADE_ADMIN_TOKEN."
                .into()
        }
        E::Timeout => {
            "The server did not answer in time; it may be overloaded or firewalled.".into()
        }
        E::Token(_) => "Fix the token file, or pass --token-file / --token.".into(),
        _ => "The dashboard keeps retrying; press q to quit.".into(),
    }
}

fn render_footer(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let line = match &state.mode {
        Mode::Filter => {
            let f = &state.tables[state.panel.index()].filter;
            Line::from(vec![
                Span::styled(" / ", styles.key()),
                Span::styled(format!("{f}▏"), styles.input()),
                Span::styled("  Enter keep · Esc clear", styles.muted()),
            ])
        }
        Mode::Edit(_) => hints(
            &[("Enter", "apply"), ("Esc", "cancel"), ("Bksp", "delete")],
            styles,
        ),
        Mode::Confirm(c) if c.enter_confirms => {
            hints(&[("y/Enter", "confirm"), ("n/Esc", "cancel")], styles)
        }
        Mode::Confirm(_) => hints(&[("y", "confirm"), ("n/Esc", "cancel")], styles),
        Mode::Prompt(_) => hints(&[("Enter", "next"), ("Esc", "cancel")], styles),
        Mode::Help => hints(&[("?/Esc", "close help"), ("q", "quit")], styles),
        Mode::Normal => match &state.notice {
            Some(n) => {
                let style = match n.level {
                    Level::Info => styles.tone(styles::Tone::Info),
                    Level::Success => styles.tone(styles::Tone::Good),
                    Level::Error => styles.tone(styles::Tone::Bad),
                };
                Line::from(vec![
                    Span::styled(format!(" {}", n.text), style),
                    Span::styled("  (Esc)", styles.muted()),
                ])
            }
            None if state.snapshot.is_none() => {
                hints(&[("R", "retry now"), ("?", "help"), ("q", "quit")], styles)
            }
            None => panel_hints(state.panel, usize::from(area.width), styles),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn hints(pairs: &[(&str, &str)], styles: &Styles) -> Line<'static> {
    let mut spans = vec![Span::raw(" ")];
    for (k, v) in pairs {
        spans.push(Span::styled((*k).to_owned(), styles.key()));
        spans.push(Span::raw(format!(" {v}  ")));
    }
    Line::from(spans)
}

/// Footer hints of a panel: its own bindings (as many as fit), then help and quit.
fn panel_hints(panel: Panel, width: usize, styles: &Styles) -> Line<'static> {
    let mut pairs: Vec<(&str, &str)> = BINDINGS
        .iter()
        .filter(|b| !b.label.is_empty() && b.scope != Scope::Global && b.scope.applies(panel))
        .filter(|b| b.scope != Scope::Tables || matches!(b.label, "/"))
        .map(|b| (short_label(b.label), short_help(b.help)))
        .collect();
    let fixed = [("?", "help"), ("q", "quit")];
    let len = |pairs: &[(&str, &str)]| -> usize {
        1 + pairs
            .iter()
            .chain(&fixed)
            .map(|(k, v)| k.chars().count() + v.chars().count() + 3)
            .sum::<usize>()
    };
    while !pairs.is_empty() && len(&pairs) > width {
        pairs.pop();
    }
    pairs.extend(fixed);
    hints(&pairs, styles)
}

fn short_label(label: &str) -> &str {
    match label {
        "← → h l" => "←→",
        "e Enter" => "e",
        other => other,
    }
}

fn short_help(help: &str) -> &str {
    match help {
        "sort column" => "sort",
        "invert sort" => "invert",
        "drain selected worker" => "drain",
        "scale workers up / down" => "scale",
        "rolling restart" => "restart",
        "choose field" => "field",
        "edit field" => "edit",
        "filter rows" => "filter",
        "invalidate a key" => "invalidate",
        "invalidate a prefix" => "prefix",
        other => other,
    }
}
