//! All dashboard state, and the one function that changes it: [`State::update`].
//!
//! Every input — a key, a connection event, a clock tick, the answer to a change — is a
//! [`Msg`]; `update` applies it and may return an [`Effect`] for the main loop to perform
//! (quit, send a request, reconnect). Nothing here does I/O or reads a clock, so every
//! behaviour is unit-tested by feeding messages.

pub mod components;
pub mod history;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use palisade::admin::fleet::FleetSnapshot;
use palisade::control::model::{AuditEntry, Outcome, Propagation, Snapshot, WorkerInfo};
use palisade::control::{ComponentKind, ComponentSnapshot, FieldError};
use serde_json::Value;

use crate::client::{ApiRequest, ClientError};
use crate::connection::{ConnEvent, Transport};
use crate::format;
use crate::input::{self, Action};

use self::components::{lookup, parse_input, patch_for, setting_paths};
use self::history::{Derived, History, Sample};

/// Each fleet node's answer to a change, for the footer: ` · node1 ✓ 12 ms, node2 ✓ 15 ms`.
fn node_outcomes(p: &Propagation) -> String {
    if p.nodes.is_empty() {
        return String::new();
    }
    let nodes: Vec<String> = p
        .nodes
        .iter()
        .map(|n| {
            let mark = match n.outcome {
                Outcome::Applied => "✓",
                Outcome::Exited => "–",
                Outcome::Refused | Outcome::TimedOut => "✖",
            };
            format!("{} {mark} {} ms", n.node_id, n.elapsed_ms)
        })
        .collect();
    format!(" · {}", nodes.join(", "))
}

/// Fleet-wide data (`--fleet`): the latest fleet snapshot and rates derived from the one
/// before.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetView {
    /// The latest fleet snapshot (kept while the fleet cannot be read).
    pub snapshot: Option<FleetSnapshot>,
    /// When it arrived (ms since the epoch).
    pub updated_ms: Option<u64>,
    /// Fleet-wide requests per second between the latest two snapshots.
    pub rps: Option<f64>,
    /// Each node's requests per second, by node id.
    pub node_rps: BTreeMap<String, f64>,
    /// Why the last fleet read failed (e.g. the fleet's Redis is down), until one succeeds.
    pub error: Option<String>,
}

impl FleetView {
    fn ingest(&mut self, result: Result<Box<FleetSnapshot>, ClientError>, at_ms: u64) {
        let next = match result {
            Ok(s) => *s,
            Err(e) => {
                self.error = Some(match &e {
                    ClientError::Api(p) => p.detail.clone().unwrap_or_else(|| p.title.clone()),
                    other => other.to_string(),
                });
                return;
            }
        };
        self.error = None;
        if let Some(prev) = &self.snapshot {
            let secs = next.taken_at_ms.saturating_sub(prev.taken_at_ms) as f64 / 1000.0;
            if secs > 0.0 {
                let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
                self.rps = Some(rate(
                    next.traffic.requests_total,
                    prev.traffic.requests_total,
                ));
                self.node_rps = next
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        let before = prev.nodes.iter().find(|p| p.node_id == n.node_id)?;
                        Some((
                            n.node_id.clone(),
                            rate(n.requests_total, before.requests_total),
                        ))
                    })
                    .collect();
            }
        }
        self.snapshot = Some(next);
        self.updated_ms = Some(at_ms);
    }
}

/// Without an update for this long, a live connection's data counts as stale.
pub const STALE_AFTER_MS: u64 = 10_000;

/// Rows moved by PgUp / PgDn.
const PAGE: usize = 10;

/// The panels, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Panel {
    /// Worker processes.
    Workers,
    /// Latency percentiles over time.
    Latency,
    /// Requests per second and status classes.
    Throughput,
    /// Rate-limit policies.
    Limits,
    /// Circuit breakers.
    Breakers,
    /// Caches.
    Caches,
    /// Recent admin changes.
    Audit,
    /// The nodes of the fleet (`--fleet` only).
    Nodes,
}

impl Panel {
    /// All panels in tab order (the number keys are 1-based indexes into this); `Nodes` is
    /// shown only with `--fleet`.
    pub const ALL: [Panel; 8] = [
        Panel::Workers,
        Panel::Latency,
        Panel::Throughput,
        Panel::Limits,
        Panel::Breakers,
        Panel::Caches,
        Panel::Audit,
        Panel::Nodes,
    ];

    /// Position in [`Panel::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The tab title.
    pub fn title(self) -> &'static str {
        match self {
            Self::Workers => "Workers",
            Self::Latency => "Latency",
            Self::Throughput => "Throughput",
            Self::Limits => "Limits",
            Self::Breakers => "Breakers",
            Self::Caches => "Caches",
            Self::Audit => "Audit",
            Self::Nodes => "Nodes",
        }
    }

    /// The next panel, wrapping.
    pub fn next(self) -> Self {
        Self::ALL[(self.index() + 1) % Self::ALL.len()]
    }

    /// The previous panel, wrapping.
    pub fn prev(self) -> Self {
        Self::ALL[(self.index() + Self::ALL.len() - 1) % Self::ALL.len()]
    }

    /// The component kind listed on this panel.
    pub fn kind(self) -> Option<ComponentKind> {
        match self {
            Self::Limits => Some(ComponentKind::Limit),
            Self::Breakers => Some(ComponentKind::Breaker),
            Self::Caches => Some(ComponentKind::Cache),
            _ => None,
        }
    }

    /// Whether the panel is a table (selectable rows, filter).
    pub fn has_table(self) -> bool {
        !matches!(self, Self::Latency | Self::Throughput | Self::Nodes)
    }
}

/// Worker table columns (the sort keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerColumn {
    /// Slot id.
    Id,
    /// Process id.
    Pid,
    /// Lifecycle state.
    State,
    /// Process uptime.
    Uptime,
    /// Requests per second.
    Rps,
    /// Requests in flight.
    InFlight,
    /// p99 latency.
    P99,
    /// Resident memory.
    Rss,
    /// Restarts of the slot.
    Restarts,
}

impl WorkerColumn {
    /// In display order.
    pub const ALL: [WorkerColumn; 9] = [
        Self::Id,
        Self::Pid,
        Self::State,
        Self::Uptime,
        Self::Rps,
        Self::InFlight,
        Self::P99,
        Self::Rss,
        Self::Restarts,
    ];

    /// Header text.
    pub fn title(self) -> &'static str {
        match self {
            Self::Id => "ID",
            Self::Pid => "PID",
            Self::State => "STATE",
            Self::Uptime => "UPTIME",
            Self::Rps => "REQ/S",
            Self::InFlight => "INFLIGHT",
            Self::P99 => "P99",
            Self::Rss => "RSS",
            Self::Restarts => "RESTARTS",
        }
    }
}

/// Something that happened to the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// The terminal was resized.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// The clock advanced (ms since the epoch).
    Tick {
        /// Now.
        now_ms: u64,
    },
    /// The connection task reported something at `at_ms`.
    Conn {
        /// What.
        event: ConnEvent,
        /// When (ms since the epoch).
        at_ms: u64,
    },
    /// A fleet snapshot (`GET /admin/v1/fleet/snapshot`) arrived, or failed.
    Fleet {
        /// The answer.
        result: Result<Box<FleetSnapshot>, ClientError>,
        /// When (ms since the epoch).
        at_ms: u64,
    },
    /// A change request finished.
    ApiResult {
        /// The id given in [`Effect::Api`].
        id: u64,
        /// The server's answer.
        result: Result<Value, ClientError>,
        /// When (ms since the epoch).
        at_ms: u64,
    },
}

/// Work for the main loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Restore the terminal and exit.
    Quit,
    /// Send a change request; answer with [`Msg::ApiResult`] carrying `id`.
    Api {
        /// Correlates the answer.
        id: u64,
        /// The request.
        request: ApiRequest,
    },
    /// Ask the connection task to reconnect now.
    Reconnect,
}

/// The connection as the dashboard knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Connecting (`attempt` failures so far).
    Connecting {
        /// Failed attempts in a row.
        attempt: u32,
    },
    /// Data flows.
    Live {
        /// Stream or polling.
        transport: Transport,
        /// Since when (ms since the epoch).
        since_ms: u64,
    },
    /// Disconnected; waiting to retry.
    Down {
        /// Why.
        error: ClientError,
        /// Failed attempts in a row.
        attempt: u32,
        /// When the next attempt starts (ms since the epoch).
        retry_at_ms: u64,
    },
}

/// Per-table UI state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableUi {
    /// Selected row index (fallback when the selected key disappears).
    pub selected: usize,
    /// Key of the selected row (worker id, component name, audit seq), so the selection
    /// follows the item when rows re-sort.
    pub selected_key: Option<String>,
    /// Case-insensitive substring filter.
    pub filter: String,
    /// Sort column (Workers) or selected settings field (Limits, Breakers, Caches).
    pub column: usize,
    /// Sort descending.
    pub descending: bool,
}

/// Importance of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Progress.
    Info,
    /// A change was applied.
    Success,
    /// Something failed.
    Error,
}

/// A message in the footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Importance.
    pub level: Level,
    /// Text.
    pub text: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// An inline edit of one settings field.
#[derive(Debug, Clone, PartialEq)]
pub struct EditState {
    /// Component kind.
    pub kind: ComponentKind,
    /// Component name.
    pub name: String,
    /// Settings version the edit started from (sent as `If-Match`).
    pub version: u64,
    /// Dotted settings path.
    pub field: String,
    /// The value when the edit started.
    pub original: Value,
    /// What has been typed.
    pub buffer: String,
    /// Why the typed value cannot be used (local check or server answer).
    pub error: Option<String>,
    /// Field errors returned by the server for the last attempt.
    pub server_errors: Vec<FieldError>,
}

/// A one-line text prompt (cache key or prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptState {
    /// Component kind.
    pub kind: ComponentKind,
    /// Component name.
    pub name: String,
    /// The action to run with the typed text.
    pub action: String,
    /// The argument name the text goes into (`key`, `prefix`).
    pub arg: String,
    /// Prompt label.
    pub label: String,
    /// What has been typed.
    pub buffer: String,
    /// Why the text cannot be used.
    pub error: Option<String>,
}

/// A yes/no confirmation before a change.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmState {
    /// Dialog title.
    pub title: String,
    /// What will happen.
    pub message: String,
    /// The request sent on "yes".
    pub request: ApiRequest,
    /// Whether Enter also confirms (edits: the value was just typed) — destructive actions
    /// need an explicit `y`.
    pub enter_confirms: bool,
    /// The edit this confirms, restored on "no" or on a validation error.
    pub edit: Option<EditState>,
    /// The prompt this confirms, restored on "no".
    pub prompt: Option<PromptState>,
}

/// What keys do right now.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Mode {
    /// Panel keys ([`input::BINDINGS`]).
    #[default]
    Normal,
    /// The help overlay is open.
    Help,
    /// Typing the current table's filter.
    Filter,
    /// Editing a settings field.
    Edit(EditState),
    /// Typing a prompt's text.
    Prompt(PromptState),
    /// Waiting for yes/no.
    Confirm(Box<ConfirmState>),
}

/// A change request in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The request.
    pub request: ApiRequest,
    /// Human summary, e.g. `limits/api: burst 20 → 50`.
    pub summary: String,
    /// The edit that produced it, reopened if the server refuses the value.
    pub edit: Option<EditState>,
}

/// The whole dashboard state.
#[derive(Debug, Clone)]
pub struct State {
    /// The admin URL, for the header and the connecting screen.
    pub target: String,
    /// Where the token comes from (never the secret).
    pub token_hint: String,
    /// Local UTC offset for clocks (`None`: show UTC).
    pub utc_offset_secs: Option<i32>,
    /// The latest clock tick (ms since the epoch).
    pub now_ms: u64,
    /// The connection.
    pub link: Link,
    /// The most recent connection failure and when, kept until the link is live again.
    pub last_error: Option<(ClientError, u64)>,
    /// The latest snapshot (kept while disconnected).
    pub snapshot: Option<Snapshot>,
    /// When the latest snapshot arrived (ms since the epoch).
    pub last_update_ms: Option<u64>,
    /// Rates between the latest two snapshots.
    pub derived: Derived,
    /// Samples for the charts.
    pub history: History,
    /// The panel shown.
    pub panel: Panel,
    /// Table state per panel ([`Panel::index`]).
    pub tables: [TableUi; 8],
    /// Fleet-wide data, with `--fleet` (`None`: not watching a fleet).
    pub fleet: Option<FleetView>,
    /// What keys do.
    pub mode: Mode,
    /// The footer message.
    pub notice: Option<Notice>,
    /// Change requests in flight by id.
    pub pending: BTreeMap<u64, Pending>,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    /// First help line shown when the help does not fit the screen.
    pub help_scroll: usize,
    next_request_id: u64,
    dirty: bool,
}

impl State {
    /// A fresh state for the dashboard of `target`.
    pub fn new(target: impl Into<String>, now_ms: u64) -> Self {
        Self {
            target: target.into(),
            token_hint: String::new(),
            utc_offset_secs: Some(0),
            now_ms,
            link: Link::Connecting { attempt: 0 },
            last_error: None,
            snapshot: None,
            last_update_ms: None,
            derived: Derived::default(),
            history: History::default(),
            panel: Panel::Workers,
            tables: Default::default(),
            fleet: None,
            mode: Mode::Normal,
            notice: None,
            pending: BTreeMap::new(),
            size: (80, 24),
            help_scroll: 0,
            next_request_id: 1,
            dirty: true,
        }
    }

    /// Watches the fleet too (`--fleet`): the Nodes panel and fleet-wide traffic.
    #[must_use]
    pub fn with_fleet(mut self) -> Self {
        self.fleet = Some(FleetView::default());
        self
    }

    /// Sets the token description shown while connecting.
    #[must_use]
    pub fn with_token_hint(mut self, hint: impl Into<String>) -> Self {
        self.token_hint = hint.into();
        self
    }

    /// Sets the UTC offset for clocks (`None`: UTC, labelled).
    #[must_use]
    pub fn with_utc_offset(mut self, offset_secs: Option<i32>) -> Self {
        self.utc_offset_secs = offset_secs;
        self
    }

    /// Whether something changed since the last [`take_dirty`](Self::take_dirty).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Returns and clears the "needs redraw" flag.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether the link is live.
    pub fn is_live(&self) -> bool {
        matches!(self.link, Link::Live { .. })
    }

    /// Milliseconds since the last snapshot arrived.
    pub fn update_age_ms(&self) -> Option<u64> {
        self.last_update_ms.map(|t| self.now_ms.saturating_sub(t))
    }

    /// Whether the data on screen is stale: disconnected, or no update for
    /// [`STALE_AFTER_MS`].
    pub fn is_stale(&self) -> bool {
        self.snapshot.is_some()
            && (!self.is_live() || self.update_age_ms().is_some_and(|a| a > STALE_AFTER_MS))
    }

    /// Since when the data is stale (the time of the last update), if it is.
    pub fn stale_since_ms(&self) -> Option<u64> {
        if self.is_stale() {
            self.last_update_ms
        } else {
            None
        }
    }

    /// Why the data is stale, for the header: the connection error, or the silence.
    pub fn stale_reason(&self) -> Option<String> {
        if !self.is_stale() {
            return None;
        }
        match (&self.link, &self.last_error) {
            (Link::Down { error, .. }, _) | (Link::Connecting { .. }, Some((error, _))) => {
                Some(error.to_string())
            }
            (Link::Connecting { .. }, None) => Some("reconnecting".into()),
            (Link::Live { .. }, _) => Some(format!(
                "no update for {}",
                format::duration_secs(self.update_age_ms().unwrap_or(0) / 1000)
            )),
        }
    }

    fn table(&self, panel: Panel) -> &TableUi {
        &self.tables[panel.index()]
    }

    fn table_mut(&mut self, panel: Panel) -> &mut TableUi {
        &mut self.tables[panel.index()]
    }

    // ---------------------------------------------------------------- rows

    /// Workers after the filter, in sort order.
    pub fn worker_rows(&self) -> Vec<&WorkerInfo> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let ui = self.table(Panel::Workers);
        let filter = ui.filter.to_lowercase();
        let mut rows: Vec<&WorkerInfo> = s
            .workers
            .iter()
            .filter(|w| {
                filter.is_empty()
                    || w.id.to_string().contains(&filter)
                    || w.pid.to_string().contains(&filter)
                    || w.state.to_lowercase().contains(&filter)
            })
            .collect();
        let col = WorkerColumn::ALL[ui.column.min(WorkerColumn::ALL.len() - 1)];
        rows.sort_by(|a, b| {
            let ord = self.compare_workers(col, a, b);
            let ord = if ui.descending { ord.reverse() } else { ord };
            ord.then(a.id.cmp(&b.id))
        });
        rows
    }

    /// Requests per second of a worker process.
    pub fn worker_rps(&self, w: &WorkerInfo) -> Option<f64> {
        self.derived.worker_rps.get(&(w.id, w.pid)).copied()
    }

    fn compare_workers(&self, col: WorkerColumn, a: &WorkerInfo, b: &WorkerInfo) -> Ordering {
        fn opt(a: Option<f64>, b: Option<f64>) -> Ordering {
            match (a, b) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (a, b) => a.is_some().cmp(&b.is_some()),
            }
        }
        match col {
            WorkerColumn::Id => a.id.cmp(&b.id),
            WorkerColumn::Pid => a.pid.cmp(&b.pid),
            WorkerColumn::State => a.state.cmp(&b.state),
            WorkerColumn::Uptime => a.uptime_secs.cmp(&b.uptime_secs),
            WorkerColumn::Rps => opt(self.worker_rps(a), self.worker_rps(b)),
            WorkerColumn::InFlight => a.in_flight.cmp(&b.in_flight),
            WorkerColumn::P99 => opt(a.p99_ms, b.p99_ms),
            WorkerColumn::Rss => a.rss_bytes.cmp(&b.rss_bytes),
            WorkerColumn::Restarts => a.restarts.cmp(&b.restarts),
        }
    }

    /// The components of a kind, after the filter.
    pub fn component_rows(&self, kind: ComponentKind) -> Vec<&ComponentSnapshot> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let list = match kind {
            ComponentKind::Limit => &s.limits,
            ComponentKind::Breaker => &s.breakers,
            ComponentKind::Cache => &s.caches,
        };
        let filter = self.table(panel_of(kind)).filter.to_lowercase();
        list.iter()
            .filter(|c| filter.is_empty() || c.name.to_lowercase().contains(&filter))
            .collect()
    }

    /// The editable settings fields of a kind (dotted paths), in column order.
    pub fn setting_fields(&self, kind: ComponentKind) -> Vec<String> {
        setting_paths(&self.component_rows(kind))
    }

    /// The settings field under the cursor on a settings panel.
    pub fn selected_field(&self, kind: ComponentKind) -> Option<String> {
        let fields = self.setting_fields(kind);
        let i = self
            .table(panel_of(kind))
            .column
            .min(fields.len().checked_sub(1)?);
        fields.into_iter().nth(i)
    }

    /// Audit entries, newest first, after the filter.
    pub fn audit_rows(&self) -> Vec<&AuditEntry> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let filter = self.table(Panel::Audit).filter.to_lowercase();
        s.audit
            .iter()
            .rev()
            .filter(|a| {
                filter.is_empty()
                    || [&a.actor, &a.action, &a.target]
                        .iter()
                        .any(|f| f.to_lowercase().contains(&filter))
            })
            .collect()
    }

    fn row_keys(&self, panel: Panel) -> Vec<String> {
        match panel {
            Panel::Workers => self
                .worker_rows()
                .iter()
                .map(|w| w.id.to_string())
                .collect(),
            Panel::Audit => self
                .audit_rows()
                .iter()
                .map(|a| a.seq.to_string())
                .collect(),
            p => match p.kind() {
                Some(kind) => self
                    .component_rows(kind)
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// The selected row index on a table panel, following the selected item.
    pub fn selected_index(&self, panel: Panel) -> Option<usize> {
        let keys = self.row_keys(panel);
        if keys.is_empty() {
            return None;
        }
        let ui = self.table(panel);
        ui.selected_key
            .as_ref()
            .and_then(|k| keys.iter().position(|x| x == k))
            .or(Some(ui.selected.min(keys.len() - 1)))
    }

    /// The selected worker.
    pub fn selected_worker(&self) -> Option<&WorkerInfo> {
        let i = self.selected_index(Panel::Workers)?;
        self.worker_rows().get(i).copied()
    }

    /// The selected component of a kind.
    pub fn selected_component(&self, kind: ComponentKind) -> Option<&ComponentSnapshot> {
        let i = self.selected_index(panel_of(kind))?;
        self.component_rows(kind).get(i).copied()
    }

    fn move_selection(&mut self, panel: Panel, to: impl FnOnce(usize, usize) -> usize) {
        let keys = self.row_keys(panel);
        if keys.is_empty() {
            return;
        }
        let current = self.selected_index(panel).unwrap_or(0);
        let next = to(current, keys.len()).min(keys.len() - 1);
        let ui = self.table_mut(panel);
        ui.selected = next;
        ui.selected_key = Some(keys[next].clone());
    }

    // ---------------------------------------------------------------- update

    /// Applies a message; returns work for the main loop.
    pub fn update(&mut self, msg: Msg) -> Option<Effect> {
        match msg {
            Msg::Key(key) => {
                if key.kind == KeyEventKind::Release {
                    return None;
                }
                self.dirty = true;
                self.on_key(key)
            }
            Msg::Resize { width, height } => {
                self.size = (width, height);
                self.dirty = true;
                None
            }
            Msg::Tick { now_ms } => {
                self.now_ms = now_ms;
                self.dirty = true;
                None
            }
            Msg::Conn { event, at_ms } => {
                self.now_ms = self.now_ms.max(at_ms);
                self.dirty = true;
                self.on_conn(event, at_ms);
                None
            }
            Msg::ApiResult { id, result, at_ms } => {
                self.now_ms = self.now_ms.max(at_ms);
                self.dirty = true;
                self.on_api_result(id, result);
                None
            }
            Msg::Fleet { result, at_ms } => {
                self.now_ms = self.now_ms.max(at_ms);
                if let Some(fleet) = &mut self.fleet {
                    self.dirty = true;
                    fleet.ingest(result, at_ms);
                }
                None
            }
        }
    }

    fn notify(&mut self, level: Level, text: impl Into<String>) {
        self.notice = Some(Notice {
            level,
            text: text.into(),
            at_ms: self.now_ms,
        });
    }

    fn on_conn(&mut self, event: ConnEvent, at_ms: u64) {
        match event {
            ConnEvent::Connecting { attempt } => self.link = Link::Connecting { attempt },
            ConnEvent::Connected { transport } => {
                self.link = Link::Live {
                    transport,
                    since_ms: at_ms,
                };
                self.last_error = None;
            }
            ConnEvent::Snapshot(s) => self.ingest(*s, at_ms),
            ConnEvent::Disconnected {
                error,
                attempt,
                retry_in,
            } => {
                let retry_at_ms = at_ms.saturating_add(duration_ms(retry_in));
                self.last_error = Some((error.clone(), at_ms));
                self.link = Link::Down {
                    error,
                    attempt,
                    retry_at_ms,
                };
            }
        }
    }

    /// Takes a new snapshot: derives rates against the previous one and records history.
    fn ingest(&mut self, snapshot: Snapshot, at_ms: u64) {
        self.last_update_ms = Some(at_ms);
        if let Some(prev) = &self.snapshot {
            let duplicate = prev.seq == snapshot.seq
                && prev.server.pid == snapshot.server.pid
                && prev.taken_at_ms == snapshot.taken_at_ms;
            if duplicate {
                return;
            }
        }
        self.derived = Derived::between(self.snapshot.as_ref(), &snapshot);
        self.history
            .push(Sample::new(at_ms, &snapshot, &self.derived));
        self.snapshot = Some(snapshot);
    }

    fn on_api_result(&mut self, id: u64, result: Result<Value, ClientError>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match result {
            Ok(answer) => {
                self.apply_locally(&pending.request, &answer);
                // The server answers once every worker applied the change: say so.
                let outcome = answer
                    .get("propagation")
                    .cloned()
                    .and_then(|p| serde_json::from_value::<Propagation>(p).ok())
                    .filter(|p| !p.workers.is_empty())
                    .map(|p| format!(" · {}{}", p.summary(), node_outcomes(&p)))
                    .unwrap_or_default();
                self.notify(Level::Success, format!("✓ {}{outcome}", pending.summary));
            }
            Err(ClientError::Api(problem)) if problem.status == 412 => self.notify(
                Level::Error,
                format!(
                    "✖ {}: changed on the server meanwhile (412); review and edit again",
                    pending.request.describe()
                ),
            ),
            Err(ClientError::Api(problem)) if problem.status == 400 || problem.status == 422 => {
                let text = problem.to_string();
                if let (Some(mut edit), Mode::Normal) = (pending.edit, &self.mode) {
                    edit.error = Some(
                        problem
                            .detail
                            .clone()
                            .unwrap_or_else(|| problem.title.clone()),
                    );
                    edit.server_errors = problem.errors;
                    self.mode = Mode::Edit(edit);
                }
                self.notify(
                    Level::Error,
                    format!("✖ {} refused: {text}", pending.request.describe()),
                );
            }
            Err(ClientError::Api(problem)) if matches!(problem.status, 409 | 504) => {
                // Refused (or unanswered) by a worker: the server rolled it back everywhere
                // and its detail names the workers.
                self.notify(
                    Level::Error,
                    format!(
                        "✖ {} not applied: {}",
                        pending.request.describe(),
                        problem.detail.as_deref().unwrap_or(&problem.title)
                    ),
                );
            }
            Err(e) => self.notify(
                Level::Error,
                format!("✖ {} failed: {e}", pending.request.describe()),
            ),
        }
    }

    /// Reflects an applied settings change in the snapshot right away, so an edit started
    /// before the next snapshot arrives uses the new version (and does not get a 412 for the
    /// operator's own change). The server's answer wins when it carries `version`/`settings`.
    fn apply_locally(&mut self, request: &ApiRequest, answer: &Value) {
        let ApiRequest::UpdateSettings {
            kind,
            name,
            version,
            patch,
        } = request
        else {
            return;
        };
        let Some(s) = &mut self.snapshot else { return };
        let list = match kind {
            ComponentKind::Limit => &mut s.limits,
            ComponentKind::Breaker => &mut s.breakers,
            ComponentKind::Cache => &mut s.caches,
        };
        let Some(c) = list
            .iter_mut()
            .find(|c| c.name == *name && c.version == *version)
        else {
            return;
        };
        c.version = answer
            .get("version")
            .and_then(Value::as_u64)
            .unwrap_or(version + 1);
        match answer.get("settings") {
            Some(settings @ Value::Object(_)) => c.settings = settings.clone(),
            _ => components::apply_merge_patch(&mut c.settings, patch),
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Option<Effect> {
        if input::is_interrupt(&key) {
            return Some(Effect::Quit);
        }
        match std::mem::take(&mut self.mode) {
            Mode::Normal => self.on_normal_key(&key),
            Mode::Help => {
                self.mode = Mode::Help;
                match key.code {
                    KeyCode::Down | KeyCode::Char('j') => self.help_scroll += 1,
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.help_scroll = self.help_scroll.saturating_sub(1)
                    }
                    KeyCode::PageDown => self.help_scroll += PAGE,
                    KeyCode::PageUp => self.help_scroll = self.help_scroll.saturating_sub(PAGE),
                    _ => match input::map_key(self.panel, &key) {
                        Some(Action::Quit) => return Some(Effect::Quit),
                        Some(Action::Help | Action::Escape) => self.mode = Mode::Normal,
                        _ => {}
                    },
                }
                None
            }
            Mode::Filter => {
                self.on_filter_key(&key);
                None
            }
            Mode::Edit(edit) => self.on_edit_key(edit, &key),
            Mode::Prompt(prompt) => self.on_prompt_key(prompt, &key),
            Mode::Confirm(confirm) => self.on_confirm_key(confirm, &key),
        }
    }

    fn on_filter_key(&mut self, key: &KeyEvent) {
        let panel = self.panel;
        match key.code {
            KeyCode::Esc => self.table_mut(panel).filter.clear(),
            KeyCode::Enter => {}
            code => {
                let ui = self.table_mut(panel);
                if edit_text(&mut ui.filter, code, key.modifiers) {
                    ui.selected = 0;
                    ui.selected_key = None;
                }
                self.mode = Mode::Filter;
            }
        }
    }

    fn on_edit_key(&mut self, mut edit: EditState, key: &KeyEvent) -> Option<Effect> {
        match key.code {
            KeyCode::Esc => None,
            KeyCode::Enter => {
                match parse_input(&edit.original, &edit.buffer) {
                    Err(why) => {
                        edit.error = Some(why);
                        self.mode = Mode::Edit(edit);
                    }
                    Ok(value) if value == edit.original => {
                        self.notify(Level::Info, format!("{} unchanged", edit.field));
                    }
                    Ok(value) => {
                        let message = format!(
                            "{}/{}: {} {} → {}",
                            edit.kind.plural(),
                            edit.name,
                            edit.field,
                            format::value(&edit.original),
                            format::value(&value)
                        );
                        let request = ApiRequest::UpdateSettings {
                            kind: edit.kind,
                            name: edit.name.clone(),
                            version: edit.version,
                            patch: patch_for(&edit.field, value),
                        };
                        self.mode = Mode::Confirm(Box::new(ConfirmState {
                            title: "Apply change".into(),
                            message,
                            request,
                            enter_confirms: true,
                            edit: Some(edit),
                            prompt: None,
                        }));
                    }
                }
                None
            }
            code => {
                if edit_text(&mut edit.buffer, code, key.modifiers) {
                    edit.error = None;
                }
                self.mode = Mode::Edit(edit);
                None
            }
        }
    }

    fn on_prompt_key(&mut self, mut prompt: PromptState, key: &KeyEvent) -> Option<Effect> {
        match key.code {
            KeyCode::Esc => None,
            KeyCode::Enter => {
                let text = prompt.buffer.trim().to_owned();
                if text.is_empty() {
                    prompt.error = Some(format!("enter a {}", prompt.arg));
                    self.mode = Mode::Prompt(prompt);
                    return None;
                }
                let mut args = serde_json::Map::new();
                args.insert(prompt.arg.clone(), Value::String(text.clone()));
                let request = ApiRequest::Action {
                    kind: prompt.kind,
                    name: prompt.name.clone(),
                    action: prompt.action.clone(),
                    args: Value::Object(args),
                };
                self.mode = Mode::Confirm(Box::new(ConfirmState {
                    title: "Confirm".into(),
                    message: format!(
                        "{} `{}` in cache `{}`?",
                        prompt.action.replace('_', " "),
                        text,
                        prompt.name
                    ),
                    request,
                    enter_confirms: true,
                    edit: None,
                    prompt: Some(prompt),
                }));
                None
            }
            code => {
                if edit_text(&mut prompt.buffer, code, key.modifiers) {
                    prompt.error = None;
                }
                self.mode = Mode::Prompt(prompt);
                None
            }
        }
    }

    fn on_confirm_key(&mut self, confirm: Box<ConfirmState>, key: &KeyEvent) -> Option<Effect> {
        let yes = matches!(key.code, KeyCode::Char('y' | 'Y'))
            || (confirm.enter_confirms && key.code == KeyCode::Enter);
        let no = matches!(key.code, KeyCode::Char('n' | 'N') | KeyCode::Esc);
        if yes {
            let id = self.next_request_id;
            self.next_request_id += 1;
            let summary = match confirm.request {
                ApiRequest::UpdateSettings { .. } => confirm.message.clone(),
                ref other => other.describe(),
            };
            self.notify(Level::Info, format!("… {summary}"));
            self.pending.insert(
                id,
                Pending {
                    request: confirm.request.clone(),
                    summary,
                    edit: confirm.edit,
                },
            );
            Some(Effect::Api {
                id,
                request: confirm.request,
            })
        } else if no {
            if let Some(edit) = confirm.edit {
                self.mode = Mode::Edit(edit);
            } else if let Some(prompt) = confirm.prompt {
                self.mode = Mode::Prompt(prompt);
            }
            None
        } else {
            self.mode = Mode::Confirm(confirm);
            None
        }
    }

    fn on_normal_key(&mut self, key: &KeyEvent) -> Option<Effect> {
        let action = input::map_key(self.panel, key)?;
        let panel = self.panel;
        match action {
            Action::Quit => return Some(Effect::Quit),
            Action::Help => {
                self.help_scroll = 0;
                self.mode = Mode::Help;
            }
            Action::NextPanel => {
                self.panel = panel.next();
                if self.panel == Panel::Nodes && self.fleet.is_none() {
                    self.panel = self.panel.next();
                }
            }
            Action::PrevPanel => {
                self.panel = panel.prev();
                if self.panel == Panel::Nodes && self.fleet.is_none() {
                    self.panel = self.panel.prev();
                }
            }
            Action::GoTo(Panel::Nodes) if self.fleet.is_none() => {
                self.notify(Level::Info, "the Nodes panel needs --fleet");
            }
            Action::GoTo(p) => self.panel = p,
            Action::Reconnect => {
                self.notify(Level::Info, "reconnecting…");
                return Some(Effect::Reconnect);
            }
            Action::Escape => {
                let ui = self.table_mut(panel);
                if ui.filter.is_empty() {
                    self.notice = None;
                } else {
                    ui.filter.clear();
                }
            }
            Action::Up => self.move_selection(panel, |i, _| i.saturating_sub(1)),
            Action::Down => self.move_selection(panel, |i, _| i + 1),
            Action::PageUp => self.move_selection(panel, |i, _| i.saturating_sub(PAGE)),
            Action::PageDown => self.move_selection(panel, |i, _| i + PAGE),
            Action::Top => self.move_selection(panel, |_, _| 0),
            Action::Bottom => self.move_selection(panel, |_, n| n - 1),
            Action::Filter => self.mode = Mode::Filter,
            Action::Left | Action::Right => self.move_column(panel, action == Action::Right),
            Action::InvertSort => {
                let ui = self.table_mut(panel);
                ui.descending = !ui.descending;
            }
            Action::Edit => self.start_edit(panel),
            Action::Drain => {
                if let Some(w) = self.selected_worker() {
                    let (id, pid) = (w.id, w.pid);
                    self.confirm(
                        "Drain worker",
                        format!("Drain worker {id} (pid {pid})? It finishes in-flight requests, exits and is replaced."),
                        ApiRequest::DrainWorker { id },
                    );
                }
            }
            Action::ScaleUp | Action::ScaleDown => {
                let n = self.snapshot.as_ref().map_or(0, |s| s.workers.len());
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                if action == Action::ScaleDown && n <= 1 {
                    self.notify(Level::Error, "cannot scale below one worker");
                } else {
                    let to = if action == Action::ScaleUp {
                        n.saturating_add(1)
                    } else {
                        n - 1
                    };
                    self.confirm(
                        "Scale workers",
                        format!("Scale from {n} to {to} workers?"),
                        ApiRequest::ScaleWorkers { workers: to },
                    );
                }
            }
            Action::RollingRestart => {
                let n = self.snapshot.as_ref().map_or(0, |s| s.workers.len());
                self.confirm(
                    "Rolling restart",
                    format!("Restart all {n} workers, one at a time?"),
                    ApiRequest::RestartWorkers,
                );
            }
            Action::ForceOpen => self.breaker_action(
                "force_open",
                "Force breaker `{}` open? Calls through it fail fast.",
            ),
            Action::ForceClosed => self.breaker_action(
                "force_closed",
                "Force breaker `{}` closed? Calls go through whatever the failures.",
            ),
            Action::ResetBreaker => self.breaker_action(
                "reset",
                "Reset breaker `{}` to closed with fresh statistics?",
            ),
            Action::Invalidate => self.start_prompt("invalidate", "key", "Key to invalidate"),
            Action::InvalidatePrefix => {
                self.start_prompt("invalidate_prefix", "prefix", "Key prefix to invalidate")
            }
            Action::Flush => {
                if let Some(c) = self.selected_component(ComponentKind::Cache) {
                    let name = c.name.clone();
                    self.confirm(
                        "Flush cache",
                        format!("Flush every entry of cache `{name}`?"),
                        ApiRequest::Action {
                            kind: ComponentKind::Cache,
                            name,
                            action: "flush".into(),
                            args: Value::Null,
                        },
                    );
                }
            }
        }
        None
    }

    /// Opens a confirmation, unless disconnected (changes need a live link).
    fn confirm(&mut self, title: &str, message: String, request: ApiRequest) {
        if !self.require_live() {
            return;
        }
        self.mode = Mode::Confirm(Box::new(ConfirmState {
            title: title.into(),
            message,
            request,
            enter_confirms: false,
            edit: None,
            prompt: None,
        }));
    }

    fn require_live(&mut self) -> bool {
        if self.is_live() {
            return true;
        }
        self.notify(
            Level::Error,
            "not connected: changes are disabled until the connection is back",
        );
        false
    }

    fn breaker_action(&mut self, action: &str, template: &str) {
        if let Some(c) = self.selected_component(ComponentKind::Breaker) {
            let name = c.name.clone();
            self.confirm(
                "Breaker",
                template.replace("{}", &name),
                ApiRequest::Action {
                    kind: ComponentKind::Breaker,
                    name,
                    action: action.into(),
                    args: Value::Null,
                },
            );
        }
    }

    fn start_prompt(&mut self, action: &str, arg: &str, label: &str) {
        let Some(c) = self.selected_component(ComponentKind::Cache) else {
            return;
        };
        let name = c.name.clone();
        if !self.require_live() {
            return;
        }
        self.mode = Mode::Prompt(PromptState {
            kind: ComponentKind::Cache,
            label: format!("{label} in `{name}`"),
            name,
            action: action.into(),
            arg: arg.into(),
            buffer: String::new(),
            error: None,
        });
    }

    fn move_column(&mut self, panel: Panel, right: bool) {
        let count = match panel.kind() {
            Some(kind) => self.setting_fields(kind).len(),
            None if panel == Panel::Workers => WorkerColumn::ALL.len(),
            None => 0,
        };
        if count == 0 {
            return;
        }
        let ui = self.table_mut(panel);
        let current = ui.column.min(count - 1);
        ui.column = if right {
            (current + 1) % count
        } else {
            (current + count - 1) % count
        };
    }

    fn start_edit(&mut self, panel: Panel) {
        let Some(kind) = panel.kind() else { return };
        let Some(c) = self.selected_component(kind) else {
            return;
        };
        let Some(field) = self.selected_field(kind) else {
            self.notify(
                Level::Error,
                format!("`{}` has no editable settings", c.name),
            );
            return;
        };
        let Some(original) = lookup(&c.settings, &field).cloned() else {
            self.notify(
                Level::Error,
                format!("`{}` has no setting `{field}`", c.name),
            );
            return;
        };
        let edit = EditState {
            kind,
            name: c.name.clone(),
            version: c.version,
            buffer: match &original {
                Value::Null => String::new(),
                v => format::value(v),
            },
            field,
            original,
            error: None,
            server_errors: Vec::new(),
        };
        if self.require_live() {
            self.mode = Mode::Edit(edit);
        }
    }
}

/// The panel listing a component kind.
pub fn panel_of(kind: ComponentKind) -> Panel {
    match kind {
        ComponentKind::Limit => Panel::Limits,
        ComponentKind::Breaker => Panel::Breakers,
        ComponentKind::Cache => Panel::Caches,
    }
}

/// Applies a key to a one-line text buffer; returns whether the text changed.
fn edit_text(buf: &mut String, code: KeyCode, mods: KeyModifiers) -> bool {
    match code {
        KeyCode::Char('u') if mods.contains(KeyModifiers::CONTROL) => {
            let changed = !buf.is_empty();
            buf.clear();
            changed
        }
        KeyCode::Char(c) if !mods.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {
            if buf.chars().count() < 256 {
                buf.push(c);
            }
            true
        }
        KeyCode::Backspace => buf.pop().is_some(),
        _ => false,
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
