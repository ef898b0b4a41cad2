//! Things drawn on top of the panels: the help overlay, confirmations and prompts.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::panel_block;
use super::styles::{Styles, Tone};
use crate::input::{BINDINGS, DIALOG_KEYS, Scope};
use crate::state::{Mode, State};

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State, styles: &Styles) {
    match &state.mode {
        Mode::Help => render_help(frame, area, state.help_scroll, styles),
        Mode::Confirm(c) => {
            let mut lines = vec![Line::raw(c.message.clone()), Line::raw("")];
            let mut keys = vec![
                Span::styled("y", styles.key()),
                Span::raw(" yes   "),
                Span::styled("n", styles.key()),
                Span::raw("/"),
                Span::styled("Esc", styles.key()),
                Span::raw(" no"),
            ];
            if c.enter_confirms {
                keys.insert(1, Span::raw("/"));
                keys.insert(2, Span::styled("Enter", styles.key()));
            }
            lines.push(Line::from(keys));
            dialog(frame, area, &format!(" {} ", c.title), lines, styles);
        }
        Mode::Prompt(p) => {
            let mut lines = vec![
                Line::raw(format!("{}:", p.label)),
                Line::styled(format!("> {}▏", p.buffer), styles.input()),
            ];
            if let Some(e) = &p.error {
                lines.push(Line::styled(format!("✖ {e}"), styles.tone(Tone::Bad)));
            }
            lines.push(Line::styled("Enter continue · Esc cancel", styles.muted()));
            dialog(frame, area, " Cache ", lines, styles);
        }
        _ => {}
    }
}

/// A centred box of `width` x `height` within `area`.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

fn dialog(
    frame: &mut Frame<'_>,
    area: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    styles: &Styles,
) {
    let width = area.width.saturating_sub(4).min(64);
    let inner_width = usize::from(width.saturating_sub(2)).max(1);
    let height: usize = lines
        .iter()
        .map(|l| l.width().div_ceil(inner_width).max(1))
        .sum::<usize>()
        + 2;
    let rect = centered(area, width, u16::try_from(height).unwrap_or(u16::MAX));
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .block(panel_block(title.to_owned(), styles))
            .wrap(Wrap { trim: false }),
        rect,
    );
}

/// The help text: one section per scope, then dialog keys; each entry is `(keys, what)`.
pub(crate) fn help_entries() -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    let mut sections: Vec<(String, Vec<(&str, &str)>)> = Scope::ALL
        .iter()
        .map(|scope| {
            let entries = BINDINGS
                .iter()
                .filter(|b| b.scope == *scope && !b.label.is_empty())
                .map(|b| (b.label, b.help))
                .collect();
            (scope.title().to_owned(), entries)
        })
        .collect();
    sections.push(("Dialogs and text fields".into(), DIALOG_KEYS.to_vec()));
    sections
}

fn render_help(frame: &mut Frame<'_>, area: Rect, scroll: usize, styles: &Styles) {
    let sections: Vec<Vec<Line<'static>>> = help_entries()
        .into_iter()
        .map(|(title, entries)| {
            let mut lines = vec![Line::styled(title, styles.title())];
            lines.extend(entries.into_iter().map(|(keys, what)| {
                Line::from(vec![
                    Span::styled(format!("  {keys:<12}"), styles.key()),
                    Span::raw(what),
                ])
            }));
            lines
        })
        .collect();
    // Everything but the footer row, which keeps saying how to close the help.
    let rect = Rect {
        height: area.height.saturating_sub(1),
        ..area
    };
    frame.render_widget(Clear, rect);
    let per_col = usize::from(rect.height.saturating_sub(2)).max(1);
    let max_cols = usize::from(rect.width.saturating_sub(2) / HELP_COLUMN_WIDTH).max(1);
    // Whole sections per column when that fits; otherwise one scrollable flow.
    let packed = pack(&sections, per_col);
    let (columns, scrollable) = if packed.len() <= max_cols {
        (packed, false)
    } else {
        let flow: Vec<Line<'static>> = sections.join(&Line::raw(""));
        let capacity = per_col * max_cols;
        let first = scroll.min(flow.len().saturating_sub(capacity));
        let shown = &flow[first..flow.len().min(first + capacity)];
        (
            shown
                .chunks(per_col)
                .map(<[Line<'static>]>::to_vec)
                .collect(),
            true,
        )
    };
    let title = if scrollable {
        " Help · j/k scroll · ? or Esc closes "
    } else {
        " Help · ? or Esc closes "
    };
    let block = panel_block(title, styles);
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let n = columns.len().max(1);
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, u32::try_from(n).unwrap_or(1)); n])
        .split(inner);
    for (lines, col) in columns.into_iter().zip(areas.iter()) {
        frame.render_widget(Paragraph::new(lines), *col);
    }
}

/// Packs sections into columns of `height` lines, a blank line between sections, starting a
/// new column rather than splitting a section that would fit in one.
fn pack(sections: &[Vec<Line<'static>>], height: usize) -> Vec<Vec<Line<'static>>> {
    let mut columns = Vec::new();
    let mut current: Vec<Line<'static>> = Vec::new();
    for section in sections {
        if !current.is_empty() && current.len() + 1 + section.len() > height {
            columns.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(Line::raw(""));
        }
        for line in section {
            if current.len() >= height {
                columns.push(std::mem::take(&mut current));
            }
            current.push(line.clone());
        }
    }
    if !current.is_empty() {
        columns.push(current);
    }
    columns
}

/// The narrowest help column: key labels plus the longest description.
const HELP_COLUMN_WIDTH: u16 = 38;
