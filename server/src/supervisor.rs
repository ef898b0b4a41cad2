//! The supervisor: binds the listener once, runs worker processes (fork+exec of this binary with
//! the listener and a control channel inherited), and keeps them healthy.
//!
//! - **Crash** → the slot restarts with exponential backoff; repeated crashes put the slot in a
//!   visible `crash_loop` state instead of hiding it.
//! - **Stuck** (no heartbeat, or event-loop lag over `workers.worker_timeout_secs`) → SIGKILL and
//!   replace.
//! - **Recycling** after `max_requests` (+ jitter), `max_age_secs` or `max_rss_mb`: a replacement
//!   starts first, the old worker drains once it is ready.
//! - **SIGHUP** → reload the config file (an invalid one is refused and the old workers keep
//!   running), then a rolling restart: for each worker, start a new one, wait for Ready, drain the
//!   old. The listener is shared by all workers, so no connection is refused meanwhile.
//! - **SIGTTIN / SIGTTOU** → one worker more / less. **SIGUSR1** → reopen log files.
//! - **Bounded**: never more than `workers.max` workers (four per CPU by default, at most
//!   1024), at most `workers.max_starting` starting at once; one lifecycle operation (admin
//!   scale, restart or drain, SIGHUP reload) at a time, the admin API answering 409 meanwhile
//!   from the shared [`Lifecycle`] slot without waiting for this loop.
//! - **SIGTERM / SIGINT** → readiness 503 everywhere, after `shutdown.drain_delay_ms` the listener
//!   closes, in-flight requests finish within `shutdown.graceful_timeout_secs`; exit 0. A second
//!   signal kills the workers and exits at once.
//!
//! The supervisor never handles requests and never closes the listener while running.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use parking_lot::RwLock;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use palisade::admin::BackendError;
use palisade::control::ComponentKind;
use palisade::control::model::{Outcome, Propagation, StatusCounts, WorkerInfo, WorkerOutcome};
use palisade::observe::{StatsConfig, StatsRecorder, StatsSnapshot};
use palisade::rate_limit::ShmZone;

use crate::balance::{self, LoadTable};
use crate::channel::{self, Heartbeat, SupervisorMsg, WorkerMsg};
use crate::config::{self, Config, Overrides};
use crate::fd::{self, CONTROL_FD_ENV, LISTEN_FD_ENV};
use crate::worker::WORKER_ENV;

/// Consecutive crashes within [`CRASH_WINDOW`] that mark a slot as crash-looping.
const CRASH_LOOP_AFTER: u32 = 5;

/// Exit code when no worker ever became ready and one crashed `CRASH_LOOP_AFTER` times in a row
/// (`EX_SOFTWARE`).
pub const EXIT_BOOT_FAILED: u8 = 70;
/// A worker up at least this long resets its slot's crash count.
const CRASH_WINDOW: Duration = Duration::from_secs(30);

/// How long the supervisor waits for every worker to answer a change before it rolls the
/// change back.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// A change's answer: every worker's outcome, as `Err` when the change was not applied
/// everywhere (and, for settings, rolled back).
pub type ChangeReply = oneshot::Sender<Result<Propagation, Propagation>>;

/// A request from the admin API to the supervisor loop.
#[derive(Debug)]
pub enum Command {
    /// Run this many workers; answers the new count once the workers are started or draining.
    Scale(usize, oneshot::Sender<Result<usize, BackendError>>),
    /// Rolling restart of every worker; answers how many workers will be replaced.
    Restart(oneshot::Sender<Result<usize, BackendError>>),
    /// Gracefully replace one worker (start a new one, then drain this one).
    Drain(u32, oneshot::Sender<Result<(), BackendError>>),
    /// Carry new settings to every live worker (and to future ones), all or nothing.
    Apply {
        /// Component kind.
        kind: ComponentKind,
        /// Component name.
        name: String,
        /// The complete new settings.
        settings: Value,
        /// The complete settings to restore when a worker refuses or times out.
        rollback: Value,
        /// Where the outcome goes.
        reply: ChangeReply,
    },
    /// Run an operator action on every live worker (reported, never rolled back).
    Action {
        /// Component kind.
        kind: ComponentKind,
        /// Component name.
        name: String,
        /// The action.
        action: String,
        /// Its arguments.
        args: Value,
        /// Where the outcome goes.
        reply: ChangeReply,
    },
}

/// A change waiting for the workers' answers.
#[derive(Debug)]
struct FanOut {
    kind: ComponentKind,
    name: String,
    /// Settings to restore on failure (`None` for an action).
    rollback: Option<Value>,
    /// The replay entry before this change, restored on failure.
    previous: Option<Value>,
    started: Instant,
    /// When the current phase (the change, then its rollback) started.
    phase_started: Instant,
    /// Request id → (worker slot, pid) still to answer.
    waiting: HashMap<u64, (u32, u32)>,
    /// Each worker's answer to the change.
    outcomes: Vec<WorkerOutcome>,
    /// The change failed and the old settings are on their way back to every worker.
    rolling_back: bool,
    reply: ChangeReply,
}

impl FanOut {
    /// Records one worker's answer: to the change, or to its rollback.
    fn answer(&mut self, worker_id: u32, pid: u32, outcome: Outcome, error: Option<String>) {
        if !self.rolling_back {
            self.outcomes.push(WorkerOutcome {
                worker_id,
                pid,
                outcome,
                error,
                elapsed_ms: elapsed_ms(self.started),
            });
            return;
        }
        if outcome.is_failure() {
            tracing::error!(worker_id, pid, kind = ?self.kind, name = %self.name, error = error.as_deref().unwrap_or(""), "worker did not restore the settings after a failed change");
            if let Some(w) = self.outcomes.iter_mut().find(|w| w.pid == pid) {
                let note = format!(
                    "rollback not acknowledged: {}",
                    error.as_deref().unwrap_or("no answer")
                );
                w.error = Some(match w.error.take() {
                    Some(e) => format!("{e}; {note}"),
                    None => note,
                });
            }
        }
    }
}

/// What the supervisor shows the admin API; refreshed by the supervisor loop.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Live worker processes.
    pub workers: Vec<WorkerInfo>,
    /// Requests completed by all workers, including exited ones (monotonic).
    pub requests_total: u64,
    /// Requests in flight over all workers.
    pub in_flight: u64,
    /// Status classes over all workers, including exited ones (monotonic).
    pub status: StatusCounts,
    /// The last heartbeat of each live, ready worker (for merging stats and components).
    pub heartbeats: Vec<Heartbeat>,
    /// The last Prometheus exposition of each ready worker, by worker id (one per id: the
    /// newest process of the slot).
    pub metrics: Vec<(u32, Arc<str>)>,
}

/// A lifecycle operation (scale, rolling restart, drain, reload): at most one runs at a time.
#[derive(Debug, Clone)]
pub struct Operation {
    /// What runs: `scale`, `restart`, `drain`, `reload`.
    pub kind: &'static str,
    /// For humans: `scale to 4 workers`.
    pub detail: String,
    /// When it was accepted.
    pub started: Instant,
    /// Set once the supervisor loop has taken the operation up; only then can it end it.
    acknowledged: bool,
}

/// The one-operation-at-a-time slot and the worker cap, shared by the supervisor loop and the
/// admin API (which answers from it without waiting for the loop).
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// The operation running, if any.
    pub running: Option<Operation>,
    /// `workers.max` in force.
    pub max_workers: usize,
}

impl Lifecycle {
    /// Claims the slot for `kind`, or tells what runs.
    ///
    /// # Errors
    /// The description of the running operation.
    pub fn claim(&mut self, kind: &'static str, detail: String) -> Result<(), String> {
        if let Some(op) = &self.running {
            return Err(format!(
                "another lifecycle operation is running: {} (`{}`, started {} ms ago); retry when \
                 it has finished (GET /admin/v1/workers shows the workers)",
                op.detail,
                op.kind,
                op.started.elapsed().as_millis()
            ));
        }
        self.running = Some(Operation {
            kind,
            detail,
            started: Instant::now(),
            acknowledged: false,
        });
        Ok(())
    }
}

/// A handle to a running supervisor: its view and its command queue.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    /// The latest view.
    pub view: Arc<RwLock<View>>,
    /// The lifecycle operation running and the worker cap.
    pub lifecycle: Arc<parking_lot::Mutex<Lifecycle>>,
    /// Latency and status statistics merged from every worker's heartbeats (exact HDR merge).
    pub stats: StatsRecorder,
    /// Commands to the supervisor loop.
    pub commands: mpsc::Sender<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcState {
    Starting,
    Ready,
    Draining,
    /// Killed by the supervisor (stuck, or failed to start): restarted like a crash.
    Killed,
}

impl ProcState {
    fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Killed => "killed",
        }
    }
}

#[derive(Debug)]
struct Proc {
    id: u32,
    pid: u32,
    state: ProcState,
    started: Instant,
    state_since: Instant,
    last_seen: Instant,
    hb: Heartbeat,
    /// The last exposition this worker sent (kept apart from `hb`, which is cloned often).
    metrics: Option<Arc<str>>,
    tx: mpsc::Sender<SupervisorMsg>,
    /// This process's slot in the load table.
    load_slot: Option<usize>,
    recycle_after_requests: Option<u64>,
    recycle_after_age: Option<Duration>,
}

#[derive(Debug, Default)]
struct Slot {
    restarts: u32,
    failures: u32,
    crash_loop: bool,
    restart_at: Option<Instant>,
}

#[derive(Debug)]
enum Event {
    Msg(u32, WorkerMsg),
    ChannelError(u32, String),
    Exited(u32, String),
}

#[derive(Debug, Clone, Copy)]
struct RollStep {
    old_pid: u32,
    new_pid: u32,
}

/// The supervisor's state.
#[derive(Debug)]
struct Supervisor {
    config: Config,
    /// `config` as a TOML document in an anonymous memory file; see [`config_snapshot`].
    config_file: std::fs::File,
    overrides: Overrides,
    listener: Option<std::net::TcpListener>,
    listen_fd: i32,
    target: usize,
    procs: HashMap<u32, Proc>,
    slots: BTreeMap<u32, Slot>,
    rolling: VecDeque<u32>,
    roll: Option<RollStep>,
    shutting_down: Option<Instant>,
    /// The lifecycle slot shared with the admin API.
    lifecycle: Arc<parking_lot::Mutex<Lifecycle>>,
    /// A SIGHUP that arrived while another lifecycle operation ran; carried out after it.
    reload_pending: bool,
    /// Whether any worker has become ready since the supervisor started.
    ever_ready: bool,
    /// Set when workers cannot boot at all: the supervisor shuts down and exits with this code.
    boot_failed: bool,
    events: mpsc::Sender<Event>,
    retired_requests: u64,
    retired_status: StatusCounts,
    /// The effective settings of every component changed at runtime, replayed to new workers.
    settings_changes: BTreeMap<(ComponentKind, String), Value>,
    /// Changes waiting for the workers' answers.
    fanouts: Vec<FanOut>,
    next_request_id: u64,
    view: Arc<RwLock<View>>,
    stats: StatsRecorder,
    zones_env: String,
    /// The binary workers run, resolved once at start: a rebuilt binary at the same path is
    /// picked up by the next worker (upgrade by SIGHUP), where `/proc/self/exe` would point at
    /// the deleted old file.
    exe: std::path::PathBuf,
    _zone_fds: Vec<std::os::fd::OwnedFd>,
    /// Cache invalidations between workers, in flight.
    invalidations: Invalidations,
    /// Open connections per worker process, shared with the workers (see [`balance`]).
    load: Option<Balance>,
}

/// Cache invalidations fanned out between workers (see `crate::db::invalidate`).
#[derive(Debug, Default)]
struct Invalidations {
    /// Acknowledgement id → (the worker it was sent to, the writer, the writer's request id).
    acks: HashMap<u64, (u32, u32, u64)>,
    /// (writer pid, writer's request id) → acknowledgements still expected.
    waiting: HashMap<(u32, u64), usize>,
    /// Workers owed a flush of a cache (an invalidation found their control queue full).
    flush: std::collections::BTreeSet<(u32, String)>,
}

/// The supervisor's side of the load table: the table, the descriptor workers inherit, and
/// which slots are taken.
#[derive(Debug)]
struct Balance {
    table: Arc<LoadTable>,
    fd: std::os::fd::OwnedFd,
    used: Vec<bool>,
}

/// Runs the supervisor until every worker has drained after SIGTERM/SIGINT; returns the exit
/// code.
pub async fn run(
    config: Config,
    overrides: Overrides,
    listener: std::net::TcpListener,
    zones: &[(String, Arc<ShmZone>)],
    handle_tx: Option<oneshot::Sender<SupervisorHandle>>,
) -> std::io::Result<u8> {
    fd::set_inheritable(&listener, true)?;
    let mut zone_fds = Vec::new();
    let mut zones_env = Vec::new();
    for (name, zone) in zones {
        let fd = zone.inheritable_fd()?;
        zones_env.push(format!("{name}={}", fd.as_raw_fd()));
        zone_fds.push(fd);
    }
    let stats = StatsRecorder::new(
        StatsConfig::builder()
            .shards(1)
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    let load = match LoadTable::create() {
        Ok(table) => Some(Balance {
            fd: table.inheritable_fd()?,
            table,
            used: vec![false; balance::CAPACITY],
        }),
        Err(error) => {
            tracing::warn!(%error, "no shared load table; workers accept without balancing");
            None
        }
    };
    let (events_tx, mut events) = mpsc::channel(1024);
    let (commands_tx, mut commands) = mpsc::channel(64);
    let view = Arc::new(RwLock::new(View::default()));
    let lifecycle = Arc::new(parking_lot::Mutex::new(Lifecycle {
        running: None,
        max_workers: config.max_workers(),
    }));
    if let Some(tx) = handle_tx {
        let _ = tx.send(SupervisorHandle {
            view: Arc::clone(&view),
            lifecycle: Arc::clone(&lifecycle),
            stats: stats.clone(),
            commands: commands_tx,
        });
    }
    let mut sup = Supervisor {
        target: config.worker_count(),
        listen_fd: listener.as_raw_fd(),
        listener: Some(listener),
        config_file: config_snapshot(&config)?,
        config,
        overrides,
        procs: HashMap::new(),
        slots: BTreeMap::new(),
        rolling: VecDeque::new(),
        roll: None,
        shutting_down: None,
        lifecycle,
        reload_pending: false,
        ever_ready: false,
        boot_failed: false,
        events: events_tx,
        retired_requests: 0,
        retired_status: StatusCounts::default(),
        settings_changes: BTreeMap::new(),
        fanouts: Vec::new(),
        next_request_id: 0,
        view,
        stats,
        zones_env: zones_env.join(","),
        exe: std::env::current_exe()?,
        _zone_fds: zone_fds,
        invalidations: Invalidations::default(),
        load,
    };

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    tracing::info!(
        workers = sup.target,
        pid = std::process::id(),
        "supervisor starting"
    );
    sup.fill();

    loop {
        tokio::select! {
            Some(event) = events.recv() => sup.on_event(event),
            Some(command) = commands.recv() => sup.on_command(command),
            _ = hup.recv() => sup.on_signal_operation("reload"),
            _ = term.recv() => if sup.shutdown_or_force() { return Ok(1) },
            _ = int.recv() => if sup.shutdown_or_force() { return Ok(1) },
            _ = ttin.recv() => sup.on_signal_operation("scale_up"),
            _ = ttou.recv() => sup.on_signal_operation("scale_down"),
            _ = usr1.recv() => tracing::info!("SIGUSR1: logs go to stderr; nothing to reopen"),
            _ = tick.tick() => sup.housekeeping(),
        }
        if sup.shutting_down.is_some() && sup.procs.is_empty() {
            if sup.boot_failed {
                return Ok(EXIT_BOOT_FAILED);
            }
            tracing::info!("all workers exited; supervisor done");
            return Ok(0);
        }
        sup.end_finished_operation();
        sup.refresh_view();
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Writes `config` as a TOML document to an anonymous file (close-on-exec): a memory file
/// (`memfd`) on Linux, elsewhere a private temporary file unlinked as soon as it is open.
///
/// Workers get it as `--config /proc/self/fd/N` (`/dev/fd/N` elsewhere), so a worker always
/// starts with the configuration the supervisor holds: editing the file on disk, or a reload the
/// supervisor refused, never changes what a replacement, recycled or added worker runs. Only a
/// successful SIGHUP reload replaces the snapshot.
fn config_snapshot(config: &Config) -> std::io::Result<std::fs::File> {
    let text = toml::to_string(config).map_err(std::io::Error::other)?;
    #[cfg(target_os = "linux")]
    let mut file = std::fs::File::from(nix::sys::memfd::memfd_create(
        c"palisade-config",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?);
    #[cfg(not(target_os = "linux"))]
    let mut file = fd::unlinked_temp_file("palisade-config")?;
    file.write_all(text.as_bytes())?;
    Ok(file)
}

impl Supervisor {
    fn live_for(&self, id: u32) -> usize {
        self.procs
            .values()
            .filter(|p| p.id == id && matches!(p.state, ProcState::Starting | ProcState::Ready))
            .count()
    }

    fn spawn_or_backoff(&mut self, id: u32) -> Option<u32> {
        if self.shutting_down.is_some() {
            return None;
        }
        match self.spawn(id) {
            Ok(pid) => Some(pid),
            Err(error) => {
                tracing::error!(worker_id = id, %error, "cannot start worker");
                // Never at once: a spawn that failed would fail again right away.
                let slot = self.slots.entry(id).or_default();
                slot.failures = slot.failures.max(1);
                self.schedule_restart(id);
                None
            }
        }
    }

    fn spawn(&mut self, id: u32) -> std::io::Result<u32> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        fd::set_inheritable(&theirs, true)?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        // The worker's whole configuration is the supervisor's current one: it reads the
        // snapshot and nothing else (not the file, which may have been edited or refused since,
        // nor a `PALISADE_*` variable that a command-line flag overrode here).
        cmd.arg("--config")
            .arg(fd::path_of(self.config_file.as_raw_fd()));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PALISADE_") {
                cmd.env_remove(name);
            }
        }
        cmd.env(WORKER_ENV, id.to_string())
            .env(LISTEN_FD_ENV, self.listen_fd.to_string())
            .env(CONTROL_FD_ENV, theirs.as_raw_fd().to_string())
            .env(fd::SHM_ZONES_ENV, &self.zones_env)
            .stdin(std::process::Stdio::null());
        let load_slot = self.load.as_mut().and_then(|b| {
            let index = b.used.iter().position(|used| !used)?;
            b.used[index] = true;
            b.table.assign(index);
            cmd.env(balance::LOAD_FD_ENV, b.fd.as_raw_fd().to_string())
                .env(balance::LOAD_SLOT_ENV, index.to_string());
            Some(index)
        });
        fd::set_inheritable(&self.config_file, true)?;
        let spawned = cmd.spawn();
        fd::set_inheritable(&self.config_file, false)?;
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                self.release_load_slot(load_slot);
                return Err(error);
            }
        };
        drop(theirs);
        let pid = child.id().unwrap_or(0);

        ours.set_nonblocking(true)?;
        let (mut reader, mut writer) = UnixStream::from_std(ours)?.into_split();
        let (tx, mut rx) = mpsc::channel::<SupervisorMsg>(64);
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                match channel::read::<_, WorkerMsg>(&mut reader).await {
                    Ok(msg) => {
                        if events.send(Event::Msg(pid, msg)).await.is_err() {
                            break;
                        }
                    }
                    Err(channel::FrameError::Closed) => break,
                    Err(error) => {
                        let _ = events
                            .send(Event::ChannelError(pid, error.to_string()))
                            .await;
                        break;
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if channel::write(&mut writer, &msg).await.is_err() {
                    break;
                }
            }
        });
        let events = self.events.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(error) => error.to_string(),
            };
            let _ = events.send(Event::Exited(pid, status)).await;
        });

        let w = &self.config.workers;
        let recycle_after_requests =
            (w.max_requests > 0).then(|| w.max_requests + fastrand::u64(0..=w.max_requests_jitter));
        let recycle_after_age = (w.max_age_secs > 0).then(|| {
            let base = Duration::from_secs(w.max_age_secs);
            base + base.mul_f64(fastrand::f64() * 0.1)
        });
        let now = Instant::now();
        self.procs.insert(
            pid,
            Proc {
                id,
                pid,
                state: ProcState::Starting,
                started: now,
                state_since: now,
                last_seen: now,
                hb: Heartbeat::default(),
                metrics: None,
                tx,
                load_slot,
                recycle_after_requests,
                recycle_after_age,
            },
        );
        self.slots.entry(id).or_default().restart_at = None;
        tracing::info!(worker_id = id, pid, "worker spawned");
        Ok(pid)
    }

    fn release_load_slot(&mut self, index: Option<usize>) {
        if let (Some(b), Some(index)) = (self.load.as_mut(), index) {
            b.table.release(index);
            b.used[index] = false;
        }
    }

    fn send(&self, pid: u32, msg: SupervisorMsg) {
        if let Some(p) = self.procs.get(&pid) {
            let _ = p.tx.try_send(msg);
        }
    }

    fn kill(&mut self, pid: u32, why: &str) {
        if let Some(p) = self.procs.get_mut(&pid) {
            tracing::warn!(worker_id = p.id, pid, why, "killing worker");
            p.state = ProcState::Killed;
            p.state_since = Instant::now();
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }

    fn drain(&mut self, pid: u32, delay: Duration) {
        let timeout = self.config.shutdown.graceful_timeout();
        if let Some(p) = self.procs.get_mut(&pid) {
            if p.state == ProcState::Draining || p.state == ProcState::Killed {
                return;
            }
            tracing::info!(worker_id = p.id, pid, "draining worker");
            p.state = ProcState::Draining;
            p.state_since = Instant::now();
        }
        self.send(
            pid,
            SupervisorMsg::Drain {
                delay_ms: delay.as_millis() as u64,
                timeout_ms: timeout.as_millis() as u64,
            },
        );
    }

    /// Schedules the restart of slot `id` after its backoff; returns the backoff.
    fn schedule_restart(&mut self, id: u32) -> Duration {
        let max = Duration::from_millis(self.config.workers.restart_backoff_max_ms);
        let slot = self.slots.entry(id).or_default();
        slot.failures += 1;
        slot.restarts += 1;
        // First restart at once, then 100 ms, 200 ms, ... up to the maximum.
        let backoff = match slot.failures {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis(100u64.saturating_mul(1 << (n - 2).min(16))).min(max),
        };
        if slot.failures >= CRASH_LOOP_AFTER && !slot.crash_loop {
            slot.crash_loop = true;
            tracing::error!(
                worker_id = id,
                failures = slot.failures,
                "worker is crash-looping"
            );
            if !self.ever_ready && self.shutting_down.is_none() {
                // Not one worker ever served: the binary or its environment is broken, and
                // retrying forever would hide it from systemd or Kubernetes (gunicorn halts on
                // a worker boot error too).
                tracing::error!(
                    failures = CRASH_LOOP_AFTER,
                    code = EXIT_BOOT_FAILED,
                    "no worker ever became ready; shutting down"
                );
                self.boot_failed = true;
                let _ = self.shutdown_or_force();
                return Duration::MAX;
            }
        }
        slot.restart_at = Some(Instant::now() + backoff);
        backoff
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Msg(pid, msg) => self.on_message(pid, msg),
            Event::ChannelError(pid, error) => {
                tracing::error!(pid, %error, "malformed control message; replacing worker");
                self.kill(pid, "malformed control message");
            }
            Event::Exited(pid, status) => self.on_exit(pid, &status),
        }
    }

    fn on_message(&mut self, pid: u32, msg: WorkerMsg) {
        let now = Instant::now();
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        p.last_seen = now;
        match msg {
            WorkerMsg::Hello {
                worker_id,
                pid: reported,
            } => {
                if worker_id != p.id || reported != pid {
                    tracing::warn!(pid, reported, worker_id, "worker hello does not match");
                }
                // Replay runtime changes so a new worker starts with the live settings.
                let replay: Vec<_> = self
                    .settings_changes
                    .iter()
                    .map(|((kind, name), v)| (*kind, name.clone(), v.clone()))
                    .collect();
                for (kind, name, patch) in replay {
                    self.next_request_id += 1;
                    let id = self.next_request_id;
                    self.send(
                        pid,
                        SupervisorMsg::Apply {
                            id,
                            kind,
                            name,
                            patch,
                        },
                    );
                }
            }
            WorkerMsg::Ready => {
                self.ever_ready = true;
                if p.state == ProcState::Starting {
                    p.state = ProcState::Ready;
                    p.state_since = now;
                }
                let id = p.id;
                tracing::info!(worker_id = id, pid, "worker ready");
                self.fill();
                if let Some(step) = self.roll.filter(|s| s.new_pid == pid) {
                    self.roll = None;
                    self.drain(step.old_pid, Duration::ZERO);
                    self.advance_roll();
                }
            }
            WorkerMsg::Heartbeat(mut hb) => {
                // Statistics arrive as deltas: merge each exactly once, then drop them.
                if let Some(delta) = hb.stats.take() {
                    match serde_json::from_value::<StatsSnapshot>(delta) {
                        Ok(delta) => {
                            if let Err(error) = self.stats.absorb(&delta) {
                                tracing::warn!(pid, %error, "worker statistics not merged");
                            }
                        }
                        Err(error) => tracing::warn!(pid, %error, "malformed worker statistics"),
                    }
                }
                if let Some(text) = hb.metrics.take() {
                    p.metrics = Some(text.into());
                }
                // A worker's periodic heartbeat is built off its event loop and can reach us
                // after its final one (sent at drain): a counter never goes back.
                hb.requests = hb.requests.max(p.hb.requests);
                p.hb = hb;
            }
            WorkerMsg::Drained { completed, cut } => {
                tracing::info!(worker_id = p.id, pid, completed, cut, "worker drained");
            }
            WorkerMsg::Applied { id, .. } if self.invalidations.acks.contains_key(&id) => {
                self.invalidation_acked(id);
            }
            WorkerMsg::Applied { id, error } => {
                if let Some(error) = &error {
                    tracing::warn!(worker_id = p.id, pid, %error, "worker refused a settings change");
                }
                self.answered(id, error);
            }
            WorkerMsg::Invalidate { id, cache, key } => self.invalidate_peers(pid, id, &cache, key),
        }
    }

    /// Has every worker but `from` drop `key` from cache `cache`, and answers `from` once all
    /// have (at once when there are none). A worker whose control queue is full is not waited
    /// for: it gets a `flush` of that cache on the next tick instead.
    fn invalidate_peers(&mut self, from: u32, request: u64, cache: &str, key: String) {
        let pids: Vec<u32> = self.procs.keys().copied().filter(|p| *p != from).collect();
        let mut waiting = 0;
        for pid in pids {
            self.next_request_id += 1;
            let id = self.next_request_id;
            let msg = SupervisorMsg::Invalidate {
                id,
                cache: cache.to_owned(),
                key: key.clone(),
            };
            let sent = self.procs.get(&pid).map(|p| p.tx.try_send(msg).is_ok());
            match sent {
                Some(true) => {
                    self.invalidations.acks.insert(id, (pid, from, request));
                    waiting += 1;
                }
                Some(false) => {
                    self.invalidations.flush.insert((pid, cache.to_owned()));
                }
                None => {}
            }
        }
        if waiting == 0 {
            self.send(from, SupervisorMsg::Invalidated { id: request });
        } else {
            self.invalidations.waiting.insert((from, request), waiting);
        }
    }

    /// One acknowledgement (or the exit of the worker it was expected from) for an
    /// invalidation; the writer is answered when none is outstanding.
    fn invalidation_acked(&mut self, ack: u64) {
        let Some((_, from, request)) = self.invalidations.acks.remove(&ack) else {
            return;
        };
        let left = self
            .invalidations
            .waiting
            .get_mut(&(from, request))
            .map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
        if left == Some(0) {
            self.invalidations.waiting.remove(&(from, request));
            self.send(from, SupervisorMsg::Invalidated { id: request });
        }
    }

    /// Retries, as a flush, invalidations that found a worker's control queue full.
    fn retry_flushes(&mut self) {
        for (pid, cache) in std::mem::take(&mut self.invalidations.flush) {
            self.next_request_id += 1;
            let msg = SupervisorMsg::Action {
                id: self.next_request_id,
                kind: ComponentKind::Cache,
                name: cache.clone(),
                action: "flush".to_owned(),
                args: serde_json::json!({}),
            };
            if let Some(p) = self.procs.get(&pid)
                && p.tx.try_send(msg).is_err()
            {
                self.invalidations.flush.insert((pid, cache));
            }
        }
    }

    /// Records a worker's answer to a fanned-out change (or to its rollback).
    fn answered(&mut self, request: u64, error: Option<String>) {
        let Some(f) = self
            .fanouts
            .iter_mut()
            .find(|f| f.waiting.contains_key(&request))
        else {
            // A replay: nobody waits for it.
            return;
        };
        if let Some((worker_id, pid)) = f.waiting.remove(&request) {
            let outcome = if error.is_some() {
                Outcome::Refused
            } else {
                Outcome::Applied
            };
            f.answer(worker_id, pid, outcome, error);
        }
        self.finish_fanouts(false);
    }

    /// Marks the pending answers of an exited worker.
    fn worker_gone(&mut self, pid: u32) {
        for f in &mut self.fanouts {
            let gone: Vec<u64> = f
                .waiting
                .iter()
                .filter(|(_, (_, p))| *p == pid)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                if let Some((worker_id, pid)) = f.waiting.remove(&id) {
                    let error = Some("the worker exited before answering".to_owned());
                    f.answer(worker_id, pid, Outcome::Exited, error);
                }
            }
        }
        self.finish_fanouts(false);
    }

    /// Sends `message` to every worker; returns the request ids live workers must answer.
    fn send_all(&mut self, message: &dyn Fn(u64) -> SupervisorMsg) -> HashMap<u64, (u32, u32)> {
        let mut waiting = HashMap::new();
        let mut targets: Vec<(u32, u32, ProcState)> = self
            .procs
            .values()
            .map(|p| (p.id, p.pid, p.state))
            .collect();
        targets.sort_unstable_by_key(|(id, pid, _)| (*id, *pid));
        for (worker_id, pid, state) in targets {
            self.next_request_id += 1;
            let id = self.next_request_id;
            match state {
                // Live workers must answer; a draining one gets the change but is leaving.
                ProcState::Starting | ProcState::Ready => {
                    waiting.insert(id, (worker_id, pid));
                    self.send(pid, message(id));
                }
                ProcState::Draining => self.send(pid, message(id)),
                ProcState::Killed => {}
            }
        }
        waiting
    }

    /// Sends a change to every live worker; [`finish_fanouts`](Self::finish_fanouts) answers
    /// once they all did.
    fn fan_out(
        &mut self,
        kind: ComponentKind,
        name: String,
        rollback: Option<Value>,
        previous: Option<Value>,
        message: impl Fn(u64) -> SupervisorMsg,
        reply: ChangeReply,
    ) {
        let waiting = self.send_all(&message);
        let now = Instant::now();
        self.fanouts.push(FanOut {
            kind,
            name,
            rollback,
            previous,
            started: now,
            phase_started: now,
            waiting,
            outcomes: Vec::new(),
            rolling_back: false,
            reply,
        });
        self.finish_fanouts(false);
    }

    /// Moves every change whose workers all answered (or, with `deadline`, timed out) on:
    /// applied everywhere → answered; refused or timed out somewhere → rolled back on every
    /// worker, then answered once the rollback was acknowledged (or timed out).
    fn finish_fanouts(&mut self, deadline: bool) {
        let mut i = 0;
        while i < self.fanouts.len() {
            let f = &mut self.fanouts[i];
            if deadline && !f.waiting.is_empty() && f.phase_started.elapsed() >= CHANGE_TIMEOUT {
                let error = format!("no answer within {} ms", CHANGE_TIMEOUT.as_millis());
                let late: Vec<(u32, u32)> = f.waiting.drain().map(|(_, w)| w).collect();
                for (worker_id, pid) in late {
                    f.answer(worker_id, pid, Outcome::TimedOut, Some(error.clone()));
                }
            }
            if !self.fanouts[i].waiting.is_empty() {
                i += 1;
                continue;
            }
            let f = self.fanouts.remove(i);
            if let Some(f) = self.conclude(f) {
                // Now waiting for the rollback: stays in the list, at the same index.
                self.fanouts.insert(i, f);
                i += 1;
            }
        }
    }

    /// Answers a change all of whose workers answered, or starts its rollback (returned, to
    /// wait for the workers' acknowledgements).
    fn conclude(&mut self, mut f: FanOut) -> Option<FanOut> {
        f.outcomes.sort_by_key(|w| (w.worker_id, w.pid));
        let propagation = Propagation {
            workers: f.outcomes.clone(),
            elapsed_ms: elapsed_ms(f.started),
            rolled_back: f.rolling_back,
            nodes: Vec::new(),
        };
        if f.rolling_back || propagation.failed().next().is_none() {
            if f.rolling_back {
                tracing::warn!(kind = ?f.kind, name = %f.name, summary = %propagation.summary(), "change rolled back on every worker");
                let _ = f.reply.send(Err(propagation));
            } else {
                let _ = f.reply.send(Ok(propagation));
            }
            return None;
        }
        let Some(rollback) = f.rollback.clone() else {
            // An action: reported, not undone.
            let _ = f.reply.send(Err(propagation));
            return None;
        };
        let key = (f.kind, f.name.clone());
        match f.previous.take() {
            Some(previous) => self.settings_changes.insert(key, previous),
            None => self.settings_changes.remove(&key),
        };
        // Every live process gets the old settings back: the ones that applied the change, the
        // one that refused it (a no-op there) and any started meanwhile.
        let (kind, name) = (f.kind, f.name.clone());
        f.waiting = self.send_all(&|id| SupervisorMsg::Apply {
            id,
            kind,
            name: name.clone(),
            patch: rollback.clone(),
        });
        f.rolling_back = true;
        f.phase_started = Instant::now();
        Some(f)
    }

    fn on_exit(&mut self, pid: u32, status: &str) {
        let Some(p) = self.procs.remove(&pid) else {
            return;
        };
        // An exited worker holds no cache: what it owed counts as done; what it asked is moot.
        let owed: Vec<u64> = (self.invalidations.acks.iter())
            .filter(|(_, (to, _, _))| *to == pid)
            .map(|(ack, _)| *ack)
            .collect();
        for ack in owed {
            self.invalidation_acked(ack);
        }
        self.invalidations
            .acks
            .retain(|_, (_, from, _)| *from != pid);
        self.invalidations
            .waiting
            .retain(|(from, _), _| *from != pid);
        self.invalidations.flush.retain(|(to, _)| *to != pid);
        self.release_load_slot(p.load_slot);
        self.worker_gone(pid);
        self.retired_requests += p.hb.requests;
        self.retired_status.add(&p.hb.status);
        let intended = p.state == ProcState::Draining;
        if intended {
            tracing::info!(worker_id = p.id, pid, status, "worker exited after drain");
        } else {
            tracing::warn!(
                worker_id = p.id,
                pid,
                status,
                state = p.state.name(),
                "worker died"
            );
        }
        if self.roll.is_some_and(|s| s.new_pid == pid) {
            tracing::error!(
                worker_id = p.id,
                pid,
                "replacement worker died before ready; rolling restart stopped"
            );
            self.roll = None;
            self.rolling.clear();
        }
        if self.shutting_down.is_some() || intended {
            return;
        }
        if p.started.elapsed() >= CRASH_WINDOW {
            let slot = self.slots.entry(p.id).or_default();
            slot.failures = 0;
            slot.crash_loop = false;
        }
        if (p.id as usize) < self.target
            && self.live_for(p.id) == 0
            && self.schedule_restart(p.id).is_zero()
        {
            // A first failure restarts at once rather than on the next housekeeping tick.
            self.fill();
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Scale(n, reply) => {
                let result = if n == 0 || n > self.config.max_workers() {
                    Err(BackendError::Invalid(vec![
                        palisade::control::FieldError::new(
                            "workers",
                            format!(
                                "must be between 1 and {} (workers.max; got {n})",
                                self.config.max_workers()
                            ),
                        ),
                    ]))
                } else if self.shutting_down.is_some() {
                    Err(BackendError::Unavailable(
                        "the server is shutting down".to_owned(),
                    ))
                } else {
                    self.scale(n);
                    Ok(n)
                };
                self.acknowledge_operation(result.is_ok());
                let _ = reply.send(result);
            }
            Command::Restart(reply) => {
                let result = if self.shutting_down.is_some() {
                    Err(BackendError::Unavailable(
                        "the server is shutting down".to_owned(),
                    ))
                } else {
                    let n = self.start_rolling_restart();
                    self.advance_roll();
                    Ok(n)
                };
                self.acknowledge_operation(result.is_ok());
                let _ = reply.send(result);
            }
            Command::Drain(id, reply) => {
                let pid = self
                    .procs
                    .values()
                    .find(|p| p.id == id && p.state == ProcState::Ready)
                    .map(|p| p.pid);
                let result = match pid {
                    Some(pid) if self.shutting_down.is_none() => {
                        self.rolling.push_back(pid);
                        Ok(())
                    }
                    Some(_) => Err(BackendError::Unavailable(
                        "the server is shutting down".to_owned(),
                    )),
                    None => Err(BackendError::NotFound(format!(
                        "no ready worker with id {id}"
                    ))),
                };
                self.acknowledge_operation(result.is_ok());
                let _ = reply.send(result);
                self.advance_roll();
            }
            Command::Apply {
                kind,
                name,
                settings,
                rollback,
                reply,
            } => {
                // Replayed to workers that start from now on; restored if the change fails.
                let previous = self
                    .settings_changes
                    .insert((kind, name.clone()), settings.clone());
                let message = |id| SupervisorMsg::Apply {
                    id,
                    kind,
                    name: name.clone(),
                    patch: settings.clone(),
                };
                self.fan_out(kind, name.clone(), Some(rollback), previous, message, reply);
            }
            Command::Action {
                kind,
                name,
                action,
                args,
                reply,
            } => {
                let message = |id| SupervisorMsg::Action {
                    id,
                    kind,
                    name: name.clone(),
                    action: action.clone(),
                    args: args.clone(),
                };
                self.fan_out(kind, name.clone(), None, None, message, reply);
            }
        }
    }

    fn scale(&mut self, n: usize) {
        if self.shutting_down.is_some() {
            return;
        }
        let n = n.clamp(1, self.config.max_workers());
        tracing::info!(from = self.target, to = n, "scaling workers");
        self.target = n;
        self.fill();
        let extra: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.id as usize >= n)
            .map(|p| p.pid)
            .collect();
        for pid in extra {
            self.drain(pid, Duration::ZERO);
        }
        self.slots.retain(|id, _| (*id as usize) < n);
    }

    /// Starts workers for the slots below the target that have none (and are not waiting out a
    /// restart backoff), at most `workers.max_starting` starting at once: the rest start as
    /// earlier ones become ready (or on the next housekeeping tick), so the loop stays
    /// responsive and the machine is not flooded with processes that all miss their startup
    /// timeout.
    fn fill(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        let now = Instant::now();
        let budget = self.config.max_starting();
        let mut starting = self
            .procs
            .values()
            .filter(|p| p.state == ProcState::Starting)
            .count();
        for id in 0..self.target.min(self.config.max_workers()) as u32 {
            if starting >= budget {
                break;
            }
            let waiting = self
                .slots
                .get(&id)
                .and_then(|s| s.restart_at)
                .is_some_and(|t| t > now);
            if waiting || self.live_for(id) > 0 {
                continue;
            }
            if self.spawn_or_backoff(id).is_some() {
                starting += 1;
            }
        }
    }

    /// Whether nothing a lifecycle operation started is still in progress: no worker starting,
    /// no rolling step queued or running, no slot waiting for its first worker.
    fn settled(&self) -> bool {
        let now = Instant::now();
        self.roll.is_none()
            && self.rolling.is_empty()
            && !self.procs.values().any(|p| p.state == ProcState::Starting)
            && !(0..self.target as u32).any(|id| {
                self.live_for(id) == 0
                    && self
                        .slots
                        .get(&id)
                        .is_none_or(|s| s.restart_at.is_none_or(|t| t <= now) && !s.crash_loop)
            })
    }

    /// Marks the claimed operation as taken up (it ends once [`settled`](Self::settled)), or
    /// frees the slot when the command was refused.
    fn acknowledge_operation(&mut self, accepted: bool) {
        let mut lifecycle = self.lifecycle.lock();
        if accepted {
            if let Some(op) = &mut lifecycle.running {
                op.acknowledged = true;
            }
        } else {
            lifecycle.running = None;
        }
    }

    /// Frees the lifecycle slot once the operation in it has finished; then runs a SIGHUP that
    /// waited for it.
    fn end_finished_operation(&mut self) {
        let settled = self.settled() || self.shutting_down.is_some();
        {
            let mut lifecycle = self.lifecycle.lock();
            let done = settled && lifecycle.running.as_ref().is_some_and(|op| op.acknowledged);
            if done && let Some(op) = lifecycle.running.take() {
                tracing::info!(
                    operation = op.kind,
                    detail = %op.detail,
                    took_ms = op.started.elapsed().as_millis() as u64,
                    "lifecycle operation finished"
                );
            }
        }
        if self.reload_pending && self.shutting_down.is_none() {
            self.on_signal_operation("reload");
        }
    }

    /// SIGHUP, SIGTTIN and SIGTTOU. A reload (and its rolling restart) is a lifecycle operation
    /// like the admin API's: it waits for a running one to end. SIGTTIN and SIGTTOU act at once
    /// (they are the operator's own, one worker at a time), within `workers.max` and paced like
    /// any scale-up.
    fn on_signal_operation(&mut self, which: &'static str) {
        if self.shutting_down.is_some() {
            return;
        }
        match which {
            "reload" => {
                let claimed = self
                    .lifecycle
                    .lock()
                    .claim("reload", "SIGHUP reload and rolling restart".to_owned());
                if let Err(running) = claimed {
                    if !self.reload_pending {
                        tracing::info!(%running, "SIGHUP: reload deferred until the running operation ends");
                    }
                    self.reload_pending = true;
                    return;
                }
                self.reload_pending = false;
                self.reload();
                self.acknowledge_operation(true);
            }
            "scale_up" if self.target >= self.config.max_workers() => {
                tracing::warn!(
                    workers = self.target,
                    max = self.config.max_workers(),
                    "SIGTTIN ignored: already at workers.max"
                );
            }
            "scale_up" => self.scale(self.target + 1),
            _ => self.scale(self.target.saturating_sub(1).max(1)),
        }
    }

    fn start_rolling_restart(&mut self) -> usize {
        let mut pids: Vec<(u32, u32)> = self
            .procs
            .values()
            .filter(|p| matches!(p.state, ProcState::Ready | ProcState::Starting))
            .map(|p| (p.id, p.pid))
            .collect();
        pids.sort_unstable();
        for (_, pid) in &pids {
            if !self.rolling.contains(pid) {
                self.rolling.push_back(*pid);
            }
        }
        tracing::info!(workers = pids.len(), "rolling restart");
        pids.len()
    }

    fn reload(&mut self) {
        match config::load(&self.overrides) {
            Ok(loaded) => {
                let file = match config_snapshot(&loaded.config) {
                    Ok(file) => file,
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: cannot hand the new configuration to workers; keeping the old one");
                        return;
                    }
                };
                tracing::info!("SIGHUP: configuration reloaded");
                let target = loaded.config.worker_count();
                self.config = loaded.config;
                self.config_file = file;
                self.lifecycle.lock().max_workers = self.config.max_workers();
                if target != self.target {
                    self.scale(target);
                }
                self.start_rolling_restart();
                self.advance_roll();
            }
            Err(error) => {
                tracing::error!(%error, "SIGHUP: new configuration refused; workers keep running the old one");
            }
        }
    }

    /// Starts a graceful shutdown; on a second signal kills everything. Returns true when the
    /// supervisor must exit now.
    fn shutdown_or_force(&mut self) -> bool {
        if self.shutting_down.is_some() {
            tracing::warn!("second signal: killing workers and exiting");
            for pid in self.procs.keys() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    Signal::SIGKILL,
                );
            }
            return true;
        }
        tracing::info!("shutting down: draining all workers");
        self.shutting_down = Some(Instant::now());
        self.rolling.clear();
        self.roll = None;
        let delay = self.config.shutdown.drain_delay();
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            self.drain(pid, delay);
        }
        false
    }

    fn housekeeping(&mut self) {
        self.finish_fanouts(true);
        let now = Instant::now();
        let w = self.config.workers.clone();
        let timeout = Duration::from_secs(w.worker_timeout_secs);
        let startup = Duration::from_secs(w.startup_timeout_secs);
        let grace = self.config.shutdown.graceful_timeout() + self.config.shutdown.drain_delay();
        if !self.invalidations.flush.is_empty() {
            self.retry_flushes();
        }

        if let Some(since) = self.shutting_down {
            if self.listener.is_some() && since.elapsed() >= self.config.shutdown.drain_delay() {
                // Accepting stops everywhere: close our copy so new connections are refused.
                self.listener = None;
            }
            if since.elapsed() > grace + Duration::from_secs(2) {
                let left: Vec<u32> = self.procs.keys().copied().collect();
                for pid in left {
                    self.kill(pid, "graceful timeout exceeded");
                }
            }
            return;
        }

        let mut to_kill = Vec::new();
        let mut to_recycle = Vec::new();
        for p in self.procs.values() {
            match p.state {
                ProcState::Starting if p.state_since.elapsed() > startup => {
                    to_kill.push((p.pid, "not ready within workers.startup_timeout_secs"));
                }
                ProcState::Ready if now.duration_since(p.last_seen) > timeout => {
                    to_kill.push((p.pid, "no heartbeat within workers.worker_timeout_secs"));
                }
                ProcState::Ready if p.hb.loop_lag_ms > timeout.as_secs_f64() * 1000.0 => {
                    to_kill.push((p.pid, "event-loop lag over workers.worker_timeout_secs"));
                }
                ProcState::Ready => {
                    let by_requests = p.recycle_after_requests.is_some_and(|n| p.hb.requests >= n);
                    let by_age = p
                        .recycle_after_age
                        .is_some_and(|a| p.started.elapsed() >= a);
                    let by_rss = w.max_rss_mb > 0 && p.hb.rss_bytes > w.max_rss_mb * 1024 * 1024;
                    if by_requests || by_age || by_rss {
                        to_recycle.push((p.pid, p.id, by_requests, by_age, by_rss));
                    }
                }
                ProcState::Draining if p.state_since.elapsed() > grace + Duration::from_secs(2) => {
                    to_kill.push((p.pid, "drain exceeded the graceful timeout"));
                }
                _ => {}
            }
        }
        for (pid, why) in to_kill {
            self.kill(pid, why);
        }
        for (pid, id, by_requests, by_age, by_rss) in to_recycle {
            if !self.rolling.contains(&pid) && self.roll.is_none_or(|s| s.old_pid != pid) {
                tracing::info!(
                    worker_id = id,
                    pid,
                    by_requests,
                    by_age,
                    by_rss,
                    "recycling worker"
                );
                self.rolling.push_back(pid);
            }
        }

        for s in self.slots.values_mut() {
            if s.restart_at.is_some_and(|t| t <= now) {
                s.restart_at = None;
            }
        }
        self.fill();

        self.advance_roll();
    }

    /// Starts the next step of a rolling restart (spawn the replacement of the next queued
    /// worker), unless a step is in progress. Called as soon as work is queued or a step
    /// finishes, so a roll does not wait for housekeeping ticks.
    fn advance_roll(&mut self) {
        if self.roll.is_some() || self.shutting_down.is_some() {
            return;
        }
        while let Some(old_pid) = self.rolling.pop_front() {
            let Some(old) = self.procs.get(&old_pid) else {
                continue;
            };
            if !matches!(old.state, ProcState::Ready | ProcState::Starting) {
                continue;
            }
            let id = old.id;
            if let Some(new_pid) = self.spawn_or_backoff(id) {
                self.roll = Some(RollStep { old_pid, new_pid });
            }
            break;
        }
    }

    fn refresh_view(&self) {
        let mut workers: Vec<WorkerInfo> = self
            .procs
            .values()
            .map(|p| {
                let slot = self.slots.get(&p.id);
                let state = if slot.is_some_and(|s| s.crash_loop) && p.state != ProcState::Ready {
                    "crash_loop"
                } else {
                    p.state.name()
                };
                WorkerInfo {
                    id: p.id,
                    pid: p.pid,
                    state: state.to_owned(),
                    uptime_secs: p.started.elapsed().as_secs(),
                    requests: p.hb.requests,
                    in_flight: p.hb.in_flight,
                    rss_bytes: p.hb.rss_bytes,
                    restarts: slot.map_or(0, |s| s.restarts),
                    loop_lag_ms: p.hb.loop_lag_ms,
                    p99_ms: p.hb.p99_ms,
                }
            })
            .collect();
        workers.sort_by_key(|w| (w.id, w.pid));
        let mut status = self.retired_status;
        let mut requests_total = self.retired_requests;
        let mut in_flight = 0;
        let mut heartbeats = Vec::new();
        let mut newest: BTreeMap<u32, (Instant, Arc<str>)> = BTreeMap::new();
        for p in self.procs.values() {
            status.add(&p.hb.status);
            requests_total += p.hb.requests;
            in_flight += p.hb.in_flight;
            if p.state == ProcState::Ready {
                heartbeats.push(p.hb.clone());
                if let Some(text) = &p.metrics
                    && newest
                        .get(&p.id)
                        .is_none_or(|(started, _)| *started < p.started)
                {
                    newest.insert(p.id, (p.started, Arc::clone(text)));
                }
            }
        }
        let metrics = newest
            .into_iter()
            .map(|(id, (_, text))| (id, text))
            .collect();
        *self.view.write() = View {
            workers,
            requests_total,
            in_flight,
            status,
            heartbeats,
            metrics,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_snapshot(config: &Config) -> Config {
        let file = config_snapshot(config).expect("snapshot");
        let overrides = Overrides {
            file: Some(fd::path_of(file.as_raw_fd()).into()),
            env: Vec::new(),
            cli: Vec::new(),
        };
        config::load(&overrides).expect("a snapshot loads").config
    }

    #[test]
    fn the_config_snapshot_is_what_a_worker_loads() {
        let config = Config::default();
        assert_eq!(load_snapshot(&config), config);

        let mut config = Config::default();
        config.workers.count = 3;
        config.workers.max_requests = 1000;
        config.shutdown.drain_delay_ms = 1234;
        config.server.bind = "0.0.0.0:9000".parse().expect("address");
        config.admin.token_file = Some("/var/lib/palisade/admin.token".into());
        assert_eq!(load_snapshot(&config), config);
    }
}
