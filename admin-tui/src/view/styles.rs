//! Every colour and glyph decision, in one place (tokio-console's `view/styles.rs`).
//!
//! The palette is Okabe–Ito, chosen to stay distinguishable with the common forms of colour
//! blindness; state is always written out as text too, so nothing depends on colour alone.
//! With `NO_COLOR` set (<https://no-color.org>), no colour is emitted at all — only bold,
//! dim and reverse video.

use ratatui::style::{Color, Modifier, Style};

/// Okabe–Ito orange.
pub const ORANGE: Color = Color::Rgb(0xE6, 0x9F, 0x00);
/// Okabe–Ito sky blue.
pub const SKY_BLUE: Color = Color::Rgb(0x56, 0xB4, 0xE9);
/// Okabe–Ito bluish green.
pub const BLUISH_GREEN: Color = Color::Rgb(0x00, 0x9E, 0x73);
/// Okabe–Ito yellow.
pub const YELLOW: Color = Color::Rgb(0xF0, 0xE4, 0x42);
/// Okabe–Ito blue.
pub const BLUE: Color = Color::Rgb(0x00, 0x72, 0xB2);
/// Okabe–Ito vermillion.
pub const VERMILLION: Color = Color::Rgb(0xD5, 0x5E, 0x00);
/// Okabe–Ito reddish purple.
pub const REDDISH_PURPLE: Color = Color::Rgb(0xCC, 0x79, 0xA7);

/// How good or bad a state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Healthy.
    Good,
    /// Transitional or informative.
    Info,
    /// Degraded.
    Warn,
    /// Failing.
    Bad,
    /// Unknown or neutral.
    Neutral,
}

/// Styles, with or without colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Styles {
    color: bool,
}

impl Default for Styles {
    fn default() -> Self {
        Self::from_env()
    }
}

impl Styles {
    /// Colour unless `NO_COLOR` is set to a non-empty value.
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
    }

    /// Explicitly with or without colour.
    pub fn new(color: bool) -> Self {
        Self { color }
    }

    /// Whether colours are used.
    pub fn color(&self) -> bool {
        self.color
    }

    /// A foreground colour, or nothing without colour.
    pub fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    /// The colour for a tone.
    pub fn tone(&self, tone: Tone) -> Style {
        match tone {
            Tone::Good => self.fg(BLUISH_GREEN),
            Tone::Info => self.fg(SKY_BLUE),
            Tone::Warn => self.fg(ORANGE),
            Tone::Bad => self.fg(VERMILLION).add_modifier(Modifier::BOLD),
            Tone::Neutral => Style::new(),
        }
    }

    /// Panel titles and the header's product name.
    pub fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// Table headers.
    pub fn header(&self) -> Style {
        self.fg(SKY_BLUE).add_modifier(Modifier::BOLD)
    }

    /// The sorted column's header.
    pub fn sorted_header(&self) -> Style {
        self.header().add_modifier(Modifier::UNDERLINED)
    }

    /// The selected row.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// The selected settings field in the selected row.
    pub fn selected_field(&self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::Black)
                .bg(YELLOW)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }

    /// Text being typed.
    pub fn input(&self) -> Style {
        self.fg(YELLOW).add_modifier(Modifier::BOLD)
    }

    /// Key names in hints.
    pub fn key(&self) -> Style {
        self.fg(SKY_BLUE).add_modifier(Modifier::BOLD)
    }

    /// Secondary text.
    pub fn muted(&self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }

    /// Applied over stale data.
    pub fn stale(&self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }

    /// The active tab.
    pub fn tab_active(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }

    /// Borders of the focused panel.
    pub fn border(&self) -> Style {
        self.fg(BLUE)
    }

    /// Latency percentile lines: p50, p90, p99.
    pub fn percentile(&self, i: usize) -> Style {
        match i {
            0 => self.fg(SKY_BLUE),
            1 => self.fg(ORANGE),
            _ => self.fg(REDDISH_PURPLE),
        }
    }

    /// Status class bars: 1xx..5xx.
    pub fn status_class(&self, i: usize) -> Style {
        match i {
            0 => self.fg(BLUE),
            1 => self.fg(BLUISH_GREEN),
            2 => self.fg(SKY_BLUE),
            3 => self.fg(ORANGE),
            _ => self.fg(VERMILLION),
        }
    }
}

/// Glyph and tone of a breaker state, e.g. `● closed`.
pub fn breaker_state(state: &str) -> (&'static str, Tone) {
    match normalized(state).as_str() {
        "closed" | "forced_closed" => ("●", Tone::Good),
        "half_open" => ("▲", Tone::Warn),
        "open" | "forced_open" => ("✖", Tone::Bad),
        _ => ("?", Tone::Neutral),
    }
}

/// Glyph and tone of a worker state.
pub fn worker_state(state: &str) -> (&'static str, Tone) {
    match normalized(state).as_str() {
        "ready" | "running" | "live" => ("●", Tone::Good),
        "starting" | "spawning" => ("◌", Tone::Info),
        "draining" | "stopping" | "recycling" => ("▼", Tone::Warn),
        "crash_loop" | "crashed" | "dead" | "stuck" | "failed" => ("✖", Tone::Bad),
        "exited" | "stopped" => ("○", Tone::Neutral),
        _ => ("?", Tone::Neutral),
    }
}

/// Glyph and tone of a rate-limit mode.
pub fn limit_mode(mode: &str) -> Tone {
    match normalized(mode).as_str() {
        "enforce" => Tone::Good,
        "shadow" => Tone::Warn,
        "off" => Tone::Neutral,
        _ => Tone::Neutral,
    }
}

fn normalized(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_emits_no_colours() {
        let s = Styles::new(false);
        for t in [Tone::Good, Tone::Info, Tone::Warn, Tone::Bad] {
            assert_eq!(s.tone(t).fg, None);
        }
        assert_eq!(s.selected_field().bg, None);
        assert_eq!(Styles::new(true).tone(Tone::Bad).fg, Some(VERMILLION));
    }

    #[test]
    fn states_have_glyphs_whatever_the_spelling() {
        assert_eq!(breaker_state("Half-Open"), ("▲", Tone::Warn));
        assert_eq!(breaker_state("forced_open").1, Tone::Bad);
        assert_eq!(worker_state("crash_loop").1, Tone::Bad);
        assert_eq!(worker_state("whatever").0, "?");
    }
}
