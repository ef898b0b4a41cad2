//! The Limits, Breakers and Caches panels: one generic table of components of a kind, with
//! a field cursor for inline edits, and a detail pane for the selected component.

use palisade::control::{ComponentKind, ComponentSnapshot};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};
use serde_json::Value;

use super::styles::{self, Styles, Tone};
use super::{filter_note, panel_block};
use crate::format;
use crate::state::components::{
    Column, ColumnSource, L2Health, breaker_state, cache_levels, cache_store, columns, flatten,
    lookup, typed_cache,
};
use crate::state::{Mode, State, panel_of};

/// Widest a column gets.
const MAX_COL: usize = 18;

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    let Some(kind) = state.panel.kind() else {
        return;
    };
    let rows = state.component_rows(kind);
    let selected = state.selected_component(kind);
    let detail = selected
        .map(|c| detail_lines(state, kind, c, styles))
        .unwrap_or_default();
    let detail_height = if detail.is_empty() {
        0
    } else {
        u16::try_from(detail.len() + 2).unwrap_or(12).min(12)
    };
    let detail_height = if area.height >= detail_height + 6 {
        detail_height
    } else {
        0
    };
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(detail_height)]).areas(area);

    let panel = panel_of(kind);
    let total = state.snapshot.as_ref().map_or(0, |s| match kind {
        ComponentKind::Limit => s.limits.len(),
        ComponentKind::Breaker => s.breakers.len(),
        ComponentKind::Cache => s.caches.len(),
    });
    let title = format!(
        " {} ({}/{total}){} ",
        panel.title(),
        rows.len(),
        filter_note(state, panel)
    );
    if rows.is_empty() {
        let block = panel_block(title, styles);
        let text = if total == 0 {
            format!("no {} registered on this server", kind.plural())
        } else {
            "nothing matches the filter (Esc clears it)".to_owned()
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }

    let cols = columns(kind, &rows);
    let field = state.selected_field(kind);
    let field_col = field.as_ref().and_then(|f| {
        cols.iter()
            .position(|c| matches!(&c.source, ColumnSource::Setting(p) if p == f))
    });
    let editing = match &state.mode {
        Mode::Edit(e) if e.kind == kind => Some(e),
        _ => None,
    };

    // Every cell's text and style, name first.
    let matrix: Vec<Vec<(String, Style)>> = rows
        .iter()
        .map(|c| {
            let mut cells = vec![(c.name.clone(), Style::new())];
            for col in &cols {
                let edit_here = editing.filter(|e| {
                    e.name == c.name
                        && matches!(&col.source, ColumnSource::Setting(p) if *p == e.field)
                });
                cells.push(match edit_here {
                    Some(e) => (format!("{}▏", e.buffer), styles.input()),
                    None => cell(state, kind, c, col, styles),
                });
            }
            cells
        })
        .collect();
    let mut widths: Vec<usize> = std::iter::once(4)
        .chain(cols.iter().map(|c| c.title.chars().count()))
        .collect();
    for cells in &matrix {
        for (w, (text, _)) in widths.iter_mut().zip(cells) {
            *w = (*w).max(text.chars().count()).min(MAX_COL);
        }
    }
    // Columns that fit, scrolled right just enough to show the selected field.
    let avail = usize::from(table_area.width.saturating_sub(4)).saturating_sub(widths[0]);
    let fits = |from: usize, to: usize| {
        widths[from + 1..=to + 1]
            .iter()
            .map(|w| w + 1)
            .sum::<usize>()
            <= avail
    };
    let mut offset = 0;
    if let Some(fc) = field_col {
        while offset < fc && !fits(offset, fc) {
            offset += 1;
        }
    }
    let mut visible = Vec::new();
    let mut used = 0;
    for i in offset..cols.len() {
        if used + widths[i + 1] + 1 > avail {
            break;
        }
        used += widths[i + 1] + 1;
        visible.push(i);
    }
    let hidden_right = cols.len() - offset - visible.len();
    let mut title = title;
    if offset > 0 || hidden_right > 0 {
        let left = if offset > 0 {
            format!("◀{offset} ")
        } else {
            String::new()
        };
        let right = if hidden_right > 0 {
            format!("{hidden_right}▶ ")
        } else {
            String::new()
        };
        title.push_str(&format!("· more columns {left}{right}"));
    }
    let block = panel_block(title, styles);

    let mut header_cells = vec![Cell::from("NAME").style(styles.header())];
    for &i in &visible {
        let style = if Some(i) == field_col {
            styles.sorted_header()
        } else {
            styles.header()
        };
        header_cells.push(Cell::from(format::truncate(&cols[i].title, widths[i + 1])).style(style));
    }
    let body: Vec<Row<'_>> = matrix
        .into_iter()
        .map(|cells| {
            let pick = std::iter::once(0).chain(visible.iter().map(|i| i + 1));
            Row::new(pick.map(|j| {
                let (text, style) = &cells[j];
                Cell::from(format::truncate(text, widths[j])).style(*style)
            }))
        })
        .collect();
    let constraints: Vec<Constraint> = std::iter::once(0)
        .chain(visible.iter().map(|i| i + 1))
        .map(|j| Constraint::Length(u16::try_from(widths[j]).unwrap_or(8)))
        .collect();
    let table = Table::new(body, constraints)
        .header(Row::new(header_cells))
        .block(block)
        .row_highlight_style(styles.selected())
        .cell_highlight_style(styles.selected_field())
        .highlight_symbol("▶ ");
    let selected_col = field_col
        .and_then(|fc| visible.iter().position(|i| *i == fc))
        .map(|p| p + 1);
    let mut ts = TableState::default()
        .with_selected(state.selected_index(panel))
        .with_selected_column(selected_col);
    frame.render_stateful_widget(table, table_area, &mut ts);

    if detail_height > 0
        && let Some(c) = selected
    {
        let title = format!(" {} · version {} ", c.name, c.version);
        frame.render_widget(
            Paragraph::new(detail)
                .block(panel_block(title, styles))
                .wrap(Wrap { trim: false }),
            detail_area,
        );
    }
}

/// The text and style of one cell.
fn cell(
    state: &State,
    kind: ComponentKind,
    c: &ComponentSnapshot,
    col: &Column,
    styles: &Styles,
) -> (String, Style) {
    match &col.source {
        ColumnSource::Setting(path) => match lookup(&c.settings, path) {
            Some(Value::String(s)) if path == "mode" => {
                (s.clone(), styles.tone(styles::limit_mode(s)))
            }
            Some(v) => (format::value(v), Style::new()),
            None => ("-".into(), styles.muted()),
        },
        ColumnSource::Stat(path) => match lookup(&c.stats, path) {
            Some(Value::Number(n)) if path.ends_with("_rate") || path.ends_with("ratio") => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if (0.0..=1.0).contains(&f) {
                    let tone = if f >= 0.5 {
                        Tone::Bad
                    } else if f > 0.0 {
                        Tone::Warn
                    } else {
                        Tone::Neutral
                    };
                    (format::percent(f), styles.tone(tone))
                } else {
                    (n.to_string(), Style::new())
                }
            }
            Some(v) => (format::value(v), Style::new()),
            None => ("-".into(), styles.muted()),
        },
        ColumnSource::Rate(path) => match state.derived.component_rate(kind, &c.name, path) {
            Some(r) => {
                let tone = if path.contains("rejected") && r > 0.0 {
                    Tone::Warn
                } else {
                    Tone::Neutral
                };
                (format::rate(r), styles.tone(tone))
            }
            None => ("-".into(), styles.muted()),
        },
        ColumnSource::BreakerState => match breaker_state(&c.stats) {
            Some(text) => {
                let word = text.split_whitespace().next().unwrap_or_default();
                let (glyph, tone) = styles::breaker_state(word);
                (
                    format!("{glyph} {}", text.to_uppercase()),
                    styles.tone(tone),
                )
            }
            None => ("-".into(), styles.muted()),
        },
        ColumnSource::Percent(path) => match lookup(&c.stats, path).and_then(Value::as_f64) {
            Some(p) => {
                let tone = if p >= 50.0 {
                    Tone::Bad
                } else if p > 0.0 {
                    Tone::Warn
                } else {
                    Tone::Neutral
                };
                (format::percent(p / 100.0), styles.tone(tone))
            }
            None => ("-".into(), styles.muted()),
        },
        ColumnSource::Millis(path) => match lookup(&c.stats, path).and_then(Value::as_f64) {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "whole seconds for display"
            )]
            Some(ms) => (
                format::duration_secs((ms / 1000.0).ceil().max(0.0) as u64),
                styles.tone(Tone::Warn),
            ),
            None => ("-".into(), styles.muted()),
        },
        ColumnSource::CacheStat(path) => match lookup(cache_store(&c.stats), path) {
            Some(v) if !v.is_null() => (format::value(v), Style::new()),
            _ => ("-".into(), styles.muted()),
        },
        ColumnSource::CacheSize => {
            let l1 = cache_store(&c.stats).get("l1");
            let field = |k: &str| l1.and_then(|l| l.get(k)).and_then(Value::as_u64);
            let sizes = match typed_cache(&c.stats) {
                Some(t) => (Some(t.l1.weighted_bytes), Some(t.l1.capacity_bytes)),
                None => (field("weighted_bytes"), field("capacity_bytes")),
            };
            match sizes {
                (Some(used), Some(cap)) => {
                    #[allow(clippy::cast_precision_loss, reason = "a ratio for colour")]
                    let full = cap > 0 && used as f64 >= cap as f64 * 0.95;
                    let tone = if full { Tone::Warn } else { Tone::Neutral };
                    (
                        format!("{}/{}", format::bytes(used), format::bytes(cap)),
                        styles.tone(tone),
                    )
                }
                (Some(used), None) => (format::bytes(used), Style::new()),
                _ => ("-".into(), styles.muted()),
            }
        }
        ColumnSource::L2Health => {
            let health = L2Health::of(&c.stats);
            let tone = match health {
                L2Health::Off => Tone::Neutral,
                L2Health::Ok => Tone::Good,
                L2Health::Probing => Tone::Warn,
                L2Health::Open => Tone::Bad,
            };
            let text = match health {
                L2Health::Open => "✖ open".to_owned(),
                L2Health::Probing => "▲ probing".to_owned(),
                L2Health::Ok => "● ok".to_owned(),
                L2Health::Off => "off".to_owned(),
            };
            (text, styles.tone(tone))
        }
        ColumnSource::StoreHealth => {
            let store = lookup(&c.stats, "store").map_or_else(|| "-".to_owned(), format::value);
            let errors = lookup(&c.stats, "errors")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if errors > 0 {
                (format!("✖ {store} ({errors} err)"), styles.tone(Tone::Bad))
            } else {
                (format!("● {store}"), styles.tone(Tone::Good))
            }
        }
        ColumnSource::HitRatio(level) => {
            let typed = typed_cache(&c.stats);
            let ratio = match (typed, level.as_str()) {
                (Some(t), "l1") => t.l1_hit_ratio(),
                (Some(t), "l2") => t.l2_hit_ratio(),
                _ => cache_levels(&c.stats)
                    .into_iter()
                    .find(|l| l.name == *level)
                    .and_then(|l| l.hit_ratio()),
            };
            match ratio {
                Some(r) => {
                    let tone = if r >= 0.8 {
                        Tone::Good
                    } else if r >= 0.5 {
                        Tone::Neutral
                    } else {
                        Tone::Warn
                    };
                    (format::percent(r), styles.tone(tone))
                }
                None => ("-".into(), styles.muted()),
            }
        }
    }
}

fn kv_line(label: &str, value: &Value, styles: &Styles) -> Line<'static> {
    let mut spans = vec![Span::styled(format!("{label:<9}"), styles.header())];
    let fields = flatten(value);
    if fields.is_empty() {
        spans.push(Span::raw(format::value(value)));
    }
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(format!("{k}="), styles.muted()));
        spans.push(Span::raw(format::value(v)));
    }
    Line::from(spans)
}

fn detail_lines(
    state: &State,
    kind: ComponentKind,
    c: &ComponentSnapshot,
    styles: &Styles,
) -> Vec<Line<'static>> {
    let mut lines = vec![kv_line("settings", &c.settings, styles)];
    if kind != ComponentKind::Limit && !matches!(&state.mode, Mode::Edit(e) if e.kind == kind) {
        // Breaker and cache settings are not table columns: the field ←→ selects is named here.
        if let Some(field) = state.selected_field(kind) {
            let value = lookup(&c.settings, &field).map_or_else(|| "-".to_owned(), format::value);
            lines.push(Line::from(vec![
                Span::styled(format!("{:<9}", "field"), styles.header()),
                Span::styled(format!("{field} = {value}"), styles.selected_field()),
                Span::styled("  ←→ choose · e edit", styles.muted()),
            ]));
        }
    }
    if kind == ComponentKind::Cache {
        for l in cache_levels(&c.stats) {
            let name = if l.name.is_empty() {
                "stats".to_owned()
            } else {
                l.name.to_uppercase()
            };
            let mut spans = vec![Span::styled(format!("{name:<9}"), styles.header())];
            spans.push(Span::raw(format!(
                "hit {}",
                l.hit_ratio().map_or("-".into(), format::percent)
            )));
            for (k, v) in &l.fields {
                spans.push(Span::styled(format!("  {k}="), styles.muted()));
                spans.push(Span::raw(format::value(v)));
            }
            lines.push(Line::from(spans));
        }
    } else {
        lines.push(kv_line("stats", &c.stats, styles));
    }
    if let Some(rates) = state.derived.component_rates.get(&(kind, c.name.clone())) {
        let mut keys: Vec<_> = rates.iter().filter(|(_, r)| **r > 0.0).collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        if !keys.is_empty() {
            let mut spans = vec![Span::styled(format!("{:<9}", "rates/s"), styles.header())];
            for (i, (k, r)) in keys.iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw("  "));
                }
                spans.push(Span::styled(format!("{k}="), styles.muted()));
                spans.push(Span::raw(format::rate(**r)));
            }
            lines.push(Line::from(spans));
        }
    }
    if !c.actions.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<9}", "actions"), styles.header()),
            Span::raw(c.actions.join(", ")),
        ]));
    }
    if let Mode::Edit(e) = &state.mode
        && e.kind == kind
        && e.name == c.name
    {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<9}", "edit"), styles.header()),
            Span::raw(format!("{} = ", e.field)),
            Span::styled(format!("{}▏", e.buffer), styles.input()),
            Span::styled(
                format!(
                    "  (was {})  Enter apply · Esc cancel",
                    format::value(&e.original)
                ),
                styles.muted(),
            ),
        ]));
        if let Some(err) = &e.error {
            lines.push(Line::styled(format!("✖ {err}"), styles.tone(Tone::Bad)));
        }
        for fe in &e.server_errors {
            lines.push(Line::styled(format!("✖ {fe}"), styles.tone(Tone::Bad)));
        }
    }
    lines
}
