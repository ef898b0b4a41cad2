//! The key map. One table, [`BINDINGS`], drives both dispatch ([`map_key`]) and the help
//! overlay, so the help can never list a key that does nothing (tokio-console PR #387).
//!
//! Keys in dialogs and text fields (`y`/`n`, typing, `Enter`, `Esc`) are handled by the state
//! directly; they are listed in [`DIALOG_KEYS`] for the help overlay.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::state::Panel;

/// What a key does in normal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the dashboard.
    Quit,
    /// Toggle the help overlay.
    Help,
    /// Next panel.
    NextPanel,
    /// Previous panel.
    PrevPanel,
    /// Go to a panel.
    GoTo(Panel),
    /// Select the previous row.
    Up,
    /// Select the next row.
    Down,
    /// Ten rows up.
    PageUp,
    /// Ten rows down.
    PageDown,
    /// First row.
    Top,
    /// Last row.
    Bottom,
    /// Previous sort column (workers) or field (settings).
    Left,
    /// Next sort column (workers) or field (settings).
    Right,
    /// Invert the sort order.
    InvertSort,
    /// Type a filter for the table.
    Filter,
    /// Clear the filter or the last message.
    Escape,
    /// Edit the selected field.
    Edit,
    /// Drain the selected worker.
    Drain,
    /// One more worker.
    ScaleUp,
    /// One worker fewer.
    ScaleDown,
    /// Rolling restart of all workers.
    RollingRestart,
    /// Force the selected breaker open.
    ForceOpen,
    /// Force the selected breaker closed.
    ForceClosed,
    /// Reset the selected breaker.
    ResetBreaker,
    /// Invalidate one key of the selected cache.
    Invalidate,
    /// Invalidate a key prefix of the selected cache.
    InvalidatePrefix,
    /// Flush the selected cache.
    Flush,
    /// Reconnect now, skipping the backoff.
    Reconnect,
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every panel.
    Global,
    /// Panels with a table (all but Latency and Throughput).
    Tables,
    /// The Workers panel.
    Workers,
    /// Panels with editable settings: Limits, Breakers, Caches.
    Settings,
    /// The Breakers panel.
    Breakers,
    /// The Caches panel.
    Caches,
}

impl Scope {
    /// All scopes in help order.
    pub const ALL: [Scope; 6] = [
        Scope::Global,
        Scope::Tables,
        Scope::Workers,
        Scope::Settings,
        Scope::Breakers,
        Scope::Caches,
    ];

    /// Whether the scope applies on `panel`.
    pub fn applies(self, panel: Panel) -> bool {
        match self {
            Self::Global => true,
            Self::Tables => panel.has_table(),
            Self::Workers => panel == Panel::Workers,
            Self::Settings => panel.kind().is_some(),
            Self::Breakers => panel == Panel::Breakers,
            Self::Caches => panel == Panel::Caches,
        }
    }

    /// Section title in the help overlay.
    pub fn title(self) -> &'static str {
        match self {
            Self::Global => "Global",
            Self::Tables => "Tables",
            Self::Workers => "Workers",
            Self::Settings => "Limits / Breakers / Caches",
            Self::Breakers => "Breakers",
            Self::Caches => "Caches",
        }
    }
}

/// A key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character (Shift allowed, as for `?`, `G`, `+`).
    Char(char),
    /// Ctrl + character.
    Ctrl(char),
    /// A special key (arrows, Tab, Enter...).
    Code(KeyCode),
}

impl Key {
    /// Whether this key is `event`.
    pub fn matches(self, event: &KeyEvent) -> bool {
        let mods = event.modifiers;
        let plain = !mods.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
        match self {
            Key::Char(c) => plain && event.code == KeyCode::Char(c),
            Key::Ctrl(c) => {
                mods.contains(KeyModifiers::CONTROL)
                    && matches!(event.code, KeyCode::Char(k) if k.eq_ignore_ascii_case(&c))
            }
            Key::Code(code) => plain && event.code == code,
        }
    }

    /// A key event for this key (for tests and documentation).
    pub fn event(self) -> KeyEvent {
        match self {
            Key::Char(c) => KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE),
            Key::Ctrl(c) => KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL),
            Key::Code(KeyCode::BackTab) => KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT),
            Key::Code(code) => KeyEvent::new(code, KeyModifiers::NONE),
        }
    }
}

/// One entry of the key map.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// Where it applies.
    pub scope: Scope,
    /// The keys.
    pub keys: &'static [Key],
    /// How the keys are written in the help (empty: listed together with the entry above).
    pub label: &'static str,
    /// What it does.
    pub help: &'static str,
    /// The action.
    pub action: Action,
}

const fn bind(
    scope: Scope,
    keys: &'static [Key],
    label: &'static str,
    help: &'static str,
    action: Action,
) -> Binding {
    Binding {
        scope,
        keys,
        label,
        help,
        action,
    }
}

use Key::{Char, Code, Ctrl};

/// Every normal-mode binding.
pub const BINDINGS: &[Binding] = &[
    bind(
        Scope::Global,
        &[Char('q'), Ctrl('c')],
        "q Ctrl-C",
        "quit",
        Action::Quit,
    ),
    bind(
        Scope::Global,
        &[Char('?')],
        "?",
        "help (this overlay)",
        Action::Help,
    ),
    bind(
        Scope::Global,
        &[Code(KeyCode::Tab)],
        "Tab S-Tab",
        "next / previous panel",
        Action::NextPanel,
    ),
    bind(
        Scope::Global,
        &[Code(KeyCode::BackTab)],
        "",
        "",
        Action::PrevPanel,
    ),
    bind(
        Scope::Global,
        &[Char('1')],
        "1-7",
        "go to panel",
        Action::GoTo(Panel::Workers),
    ),
    bind(
        Scope::Global,
        &[Char('2')],
        "",
        "",
        Action::GoTo(Panel::Latency),
    ),
    bind(
        Scope::Global,
        &[Char('3')],
        "",
        "",
        Action::GoTo(Panel::Throughput),
    ),
    bind(
        Scope::Global,
        &[Char('4')],
        "",
        "",
        Action::GoTo(Panel::Limits),
    ),
    bind(
        Scope::Global,
        &[Char('5')],
        "",
        "",
        Action::GoTo(Panel::Breakers),
    ),
    bind(
        Scope::Global,
        &[Char('6')],
        "",
        "",
        Action::GoTo(Panel::Caches),
    ),
    bind(
        Scope::Global,
        &[Char('7')],
        "",
        "",
        Action::GoTo(Panel::Audit),
    ),
    bind(
        Scope::Global,
        &[Char('8')],
        "",
        "",
        Action::GoTo(Panel::Nodes),
    ),
    bind(
        Scope::Global,
        &[Char('R')],
        "R",
        "reconnect now",
        Action::Reconnect,
    ),
    bind(
        Scope::Global,
        &[Code(KeyCode::Esc)],
        "Esc",
        "clear filter / message",
        Action::Escape,
    ),
    bind(
        Scope::Tables,
        &[Code(KeyCode::Up), Char('k')],
        "↑ k",
        "previous row",
        Action::Up,
    ),
    bind(
        Scope::Tables,
        &[Code(KeyCode::Down), Char('j')],
        "↓ j",
        "next row",
        Action::Down,
    ),
    bind(
        Scope::Tables,
        &[Code(KeyCode::PageUp)],
        "PgUp PgDn",
        "ten rows up / down",
        Action::PageUp,
    ),
    bind(
        Scope::Tables,
        &[Code(KeyCode::PageDown)],
        "",
        "",
        Action::PageDown,
    ),
    bind(
        Scope::Tables,
        &[Code(KeyCode::Home), Char('g')],
        "g G",
        "first / last row",
        Action::Top,
    ),
    bind(
        Scope::Tables,
        &[Code(KeyCode::End), Char('G')],
        "",
        "",
        Action::Bottom,
    ),
    bind(
        Scope::Tables,
        &[Char('/')],
        "/",
        "filter rows",
        Action::Filter,
    ),
    bind(
        Scope::Workers,
        &[Code(KeyCode::Left), Char('h')],
        "← → h l",
        "sort column",
        Action::Left,
    ),
    bind(
        Scope::Workers,
        &[Code(KeyCode::Right), Char('l')],
        "",
        "",
        Action::Right,
    ),
    bind(
        Scope::Workers,
        &[Char('i')],
        "i",
        "invert sort",
        Action::InvertSort,
    ),
    bind(
        Scope::Workers,
        &[Char('d')],
        "d",
        "drain selected worker",
        Action::Drain,
    ),
    bind(
        Scope::Workers,
        &[Char('+'), Char('=')],
        "+ -",
        "scale workers up / down",
        Action::ScaleUp,
    ),
    bind(Scope::Workers, &[Char('-')], "", "", Action::ScaleDown),
    bind(
        Scope::Workers,
        &[Char('r')],
        "r",
        "rolling restart",
        Action::RollingRestart,
    ),
    bind(
        Scope::Settings,
        &[Code(KeyCode::Left), Char('h')],
        "← → h l",
        "choose field",
        Action::Left,
    ),
    bind(
        Scope::Settings,
        &[Code(KeyCode::Right), Char('l')],
        "",
        "",
        Action::Right,
    ),
    bind(
        Scope::Settings,
        &[Char('e'), Code(KeyCode::Enter)],
        "e Enter",
        "edit field",
        Action::Edit,
    ),
    bind(
        Scope::Breakers,
        &[Char('o')],
        "o",
        "force open",
        Action::ForceOpen,
    ),
    bind(
        Scope::Breakers,
        &[Char('c')],
        "c",
        "force closed",
        Action::ForceClosed,
    ),
    bind(
        Scope::Breakers,
        &[Char('r')],
        "r",
        "reset",
        Action::ResetBreaker,
    ),
    bind(
        Scope::Caches,
        &[Char('i')],
        "i",
        "invalidate a key",
        Action::Invalidate,
    ),
    bind(
        Scope::Caches,
        &[Char('p')],
        "p",
        "invalidate a prefix",
        Action::InvalidatePrefix,
    ),
    bind(Scope::Caches, &[Char('f')], "f", "flush", Action::Flush),
];

/// Keys of dialogs and text fields, for the help overlay.
pub const DIALOG_KEYS: &[(&str, &str)] = &[
    ("y Enter", "confirm (Enter: edits)"),
    ("n Esc", "cancel"),
    ("Enter", "apply text / filter"),
    ("j k", "scroll this help"),
    ("Bksp Ctrl-U", "delete char / line"),
];

/// The action for a key press on `panel` in normal mode.
pub fn map_key(panel: Panel, event: &KeyEvent) -> Option<Action> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    BINDINGS
        .iter()
        .filter(|b| b.scope.applies(panel))
        .find(|b| b.keys.iter().any(|k| k.matches(event)))
        .map(|b| b.action)
}

/// Whether the key is Ctrl-C (quits from any mode, even while typing).
pub fn is_interrupt(event: &KeyEvent) -> bool {
    Key::Ctrl('c').matches(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_key_dispatches_to_its_action_where_it_applies() {
        for panel in Panel::ALL {
            for b in BINDINGS.iter().filter(|b| b.scope.applies(panel)) {
                for k in b.keys {
                    assert_eq!(
                        map_key(panel, &k.event()),
                        Some(b.action),
                        "{k:?} on {panel:?} should be {:?}",
                        b.action
                    );
                }
            }
        }
    }

    #[test]
    fn no_key_is_bound_twice_on_any_panel() {
        for panel in Panel::ALL {
            let keys: Vec<Key> = BINDINGS
                .iter()
                .filter(|b| b.scope.applies(panel))
                .flat_map(|b| b.keys.iter().copied())
                .collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(!keys[i + 1..].contains(k), "{k:?} bound twice on {panel:?}");
            }
        }
    }

    #[test]
    fn every_binding_is_documented_or_grouped() {
        assert!(!BINDINGS[0].label.is_empty());
        for b in BINDINGS {
            assert_eq!(b.label.is_empty(), b.help.is_empty(), "{b:?}");
        }
    }

    #[test]
    fn panel_keys_do_nothing_elsewhere() {
        let d = Key::Char('d').event();
        assert_eq!(map_key(Panel::Workers, &d), Some(Action::Drain));
        assert_eq!(map_key(Panel::Limits, &d), None);
        assert_eq!(
            map_key(Panel::Breakers, &Key::Char('r').event()),
            Some(Action::ResetBreaker)
        );
        assert_eq!(
            map_key(Panel::Workers, &Key::Char('r').event()),
            Some(Action::RollingRestart)
        );
        assert_eq!(map_key(Panel::Latency, &Key::Char('j').event()), None);
    }

    #[test]
    fn releases_and_modified_keys_are_ignored() {
        let mut q = Key::Char('q').event();
        q.kind = KeyEventKind::Release;
        assert_eq!(map_key(Panel::Workers, &q), None);
        let alt_q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT);
        assert_eq!(map_key(Panel::Workers, &alt_q), None);
        let shifted = KeyEvent::new(KeyCode::Char('?'), KeyModifiers::SHIFT);
        assert_eq!(map_key(Panel::Audit, &shifted), Some(Action::Help));
        assert!(is_interrupt(&KeyEvent::new(
            KeyCode::Char('C'),
            KeyModifiers::CONTROL
        )));
    }
}
