//! The `palisade` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use toml::Value;

use crate::app;
use crate::config::{self, Config, LogFormat, Overrides};
use crate::settings::rate_limit::BuildContext;
use palisade::observe::PrometheusExporter;
use palisade::observe::otel::OtelExporter;
use palisade::rate_limit::ShmZone;

use crate::worker::WORKER_ENV;
use crate::{admin, balance, fd, supervisor, worker};
use palisade::serve;

/// Exit code for invalid configuration or usage (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// The Palisade reference server: the seed REST API behind every Palisade layer.
///
/// Configuration comes from embedded defaults, then the TOML file (`--config` or
/// `PALISADE_CONFIG`), then `PALISADE_*` environment variables, then these flags.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, long_about)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (server.bind).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Number of worker processes, 0 for one per CPU (workers.count).
    #[arg(long, short = 'w', value_name = "N")]
    pub workers: Option<u64>,
    /// Serve in this process, without a supervisor (workers.single_process).
    #[arg(long)]
    pub single_process: bool,
    /// Listen backlog (server.backlog).
    #[arg(long, value_name = "N")]
    pub backlog: Option<u64>,
    /// Admin endpoint address (admin.addr).
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// Admin bearer token file (admin.token_file).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Log format: pretty, compact or json (log.format).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. `info` or `palisade=debug` (log.level).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Sets any configuration key, e.g. `--set server.max_headers=50` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Prints the effective configuration with the source of every value, then exits.
    #[arg(long)]
    pub print_config: bool,
}

impl Args {
    /// The command-line settings as (dotted key, value, flag).
    pub fn settings(&self) -> Result<Vec<(String, Value, String)>, String> {
        let mut out = Vec::new();
        let mut push = |key: &str, value: Value, flag: &str| {
            out.push((key.to_owned(), value, flag.to_owned()));
        };
        if let Some(v) = &self.bind {
            push("server.bind", Value::String(v.clone()), "--bind");
        }
        if let Some(v) = self.workers {
            push("workers.count", int(v), "--workers");
        }
        if self.single_process {
            push(
                "workers.single_process",
                Value::Boolean(true),
                "--single-process",
            );
        }
        if let Some(v) = self.backlog {
            push("server.backlog", int(v), "--backlog");
        }
        if let Some(v) = &self.admin_addr {
            push("admin.addr", Value::String(v.clone()), "--admin-addr");
        }
        if let Some(v) = &self.admin_token_file {
            push(
                "admin.token_file",
                Value::String(v.display().to_string()),
                "--admin-token-file",
            );
        }
        if let Some(v) = &self.log_format {
            push("log.format", Value::String(v.clone()), "--log-format");
        }
        if let Some(v) = &self.log_level {
            push("log.level", Value::String(v.clone()), "--log-level");
        }
        for item in &self.set {
            let (key, raw) = item
                .split_once('=')
                .ok_or_else(|| format!("--set expects KEY=VALUE (got {item:?})"))?;
            push(key.trim(), config::parse_value(raw.trim()), "--set");
        }
        Ok(out)
    }
}

fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Runs the `palisade` command line; returns the process exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cli = match args.settings() {
        Ok(cli) => cli,
        Err(message) => return usage_error(&message),
    };
    let overrides = Overrides {
        file: args.config.clone().or_else(|| config::default_file(&env)),
        env,
        cli,
    };
    let loaded = match config::load(&overrides) {
        Ok(loaded) => loaded,
        Err(error) => return usage_error(&error.to_string()),
    };
    if args.print_config {
        print!("{}", loaded.render());
        return ExitCode::SUCCESS;
    }
    let worker_id = std::env::var(WORKER_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    // Processes that serve requests export spans: a worker, or the single process (id 0).
    let serving = worker_id.or(loaded.config.workers.single_process.then_some(0));
    let otel = init_tracing(&loaded.config, serving);
    let config = loaded.config;
    serve::raise_fd_limit();
    // Migrations run once, here, before any worker starts; workers only connect.
    if worker_id.is_none()
        && let Err(code) = prepare_database(&config)
    {
        return ExitCode::from(code);
    }
    let result = match worker_id {
        Some(id) => runtime(config.workers.threads.max(1))
            .and_then(|rt| rt.block_on(run_worker(config, id)).map(|()| 0)),
        None if config.workers.single_process => runtime(config.workers.threads)
            .and_then(|rt| rt.block_on(run_single(config)).map(|()| 0)),
        None => runtime(1).and_then(|rt| rt.block_on(run_supervisor(config, overrides))),
    };
    flush_otel(otel);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            tracing::error!(%error, "server failed");
            eprintln!("palisade: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to the database and applies pending migrations, on a runtime of its own that is
/// gone before any worker is spawned. Returns the exit code on failure: 69 when the database
/// cannot be reached, 65 when its schema is newer than this binary (or a migration fails).
fn prepare_database(config: &Config) -> Result<(), u8> {
    let rt = runtime(1).map_err(|error| {
        eprintln!("palisade: {error}");
        1
    })?;
    let target = config.database.target().map(|t| t.redacted());
    match rt.block_on(crate::db::prepare(&config.database)) {
        Ok(applied) => {
            let database = target.unwrap_or_default();
            if applied.from == applied.to {
                tracing::info!(%database, schema = applied.to, "database ready");
            } else {
                tracing::info!(%database, from = applied.from, to = applied.to, "database migrated");
            }
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, "database not ready");
            eprintln!("palisade: {error}");
            Err(error.exit_code())
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("palisade: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Installs logging (and, for a process that serves requests, `worker`, the OpenTelemetry
/// exporter of `[otel]`). Log lines of a request carry its `trace_id` and `request_id` at any
/// level; the request span reaches the exporter even when the log level hides it.
fn init_tracing(config: &Config, worker: Option<u32>) -> Option<OtelExporter> {
    use palisade::observe::WithRequestIds;
    use tracing_subscriber::fmt::format::format as fmt_format;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};

    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    let filter = EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| EnvFilter::new(config.log.level.clone()));
    let ansi = std::io::stderr().is_terminal();
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let output = match config.log.format {
        LogFormat::Json => output
            .json()
            .event_format(WithRequestIds::json(fmt_format().json().with_ansi(ansi)))
            .boxed(),
        LogFormat::Pretty => output
            .pretty()
            .event_format(WithRequestIds::text(fmt_format().pretty().with_ansi(ansi)))
            .boxed(),
        LogFormat::Compact => output
            .compact()
            .event_format(WithRequestIds::text(fmt_format().compact().with_ansi(ansi)))
            .boxed(),
    };
    let mut failure = None;
    let otel = match worker.map(|id| config.otel.config(id)) {
        Some(Ok(Some(settings))) => match OtelExporter::new(settings) {
            Ok(exporter) => Some(exporter),
            Err(error) => {
                failure = Some(error.to_string());
                None
            }
        },
        // Validated at load; the supervisor exports nothing.
        _ => None,
    };
    let otel_layer = otel.as_ref().and_then(|exporter| {
        let filter = exporter.filter(&directives).ok()?;
        Some(exporter.layer().with_filter(filter))
    });
    // Protocol-abuse warnings from the HTTP stacks are rate limited (log_limit).
    let limit = crate::log_limit::AbuseLogLimit::layer();
    let registry = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(limit);
    // Not `.with(Option<_>)`: a `None` layer is interested in every callsite, so the
    // subscriber would build every span and event the output filters out.
    let _ = match otel_layer {
        Some(otel) => registry.with(otel).try_init(),
        None => registry.try_init(),
    };
    if let Some(error) = failure {
        tracing::error!(%error, "OpenTelemetry export not started");
    }
    if let Some(exporter) = &otel {
        let settings = exporter.config();
        tracing::info!(
            endpoint = %settings.endpoint(),
            sampling_ratio = settings.sampling_ratio(),
            "exporting spans over OTLP/HTTP"
        );
    }
    otel
}

/// Flushes the spans still queued (a worker or single process at exit).
fn flush_otel(otel: Option<OtelExporter>) {
    if let Some(exporter) = otel
        && let Err(error) = exporter.shutdown()
    {
        tracing::warn!(%error, "OpenTelemetry: last export failed");
    }
}

/// Serves in this process until SIGTERM/SIGINT, then drains.
async fn run_single(config: Config) -> std::io::Result<()> {
    let exporter = install_metrics();
    let listener = serve::bind(&config.server.serve_config())?;
    let addr = serve::local_addr(&listener);
    let zones = app::create_zones(&config)?;
    let app = app::build(config.clone(), 0, &app::context(&zones), exporter.as_ref())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if config.admin.enabled {
        let stats = app.state.observe.stats().clone();
        let backend = std::sync::Arc::new(admin::local_backend(stats.clone(), addr));
        let metrics = exporter
            .clone()
            .map_or(admin::Metrics::None, admin::Metrics::Local);
        serve_admin(
            &config,
            app.state.registry.clone(),
            backend,
            stats,
            addr,
            metrics,
        )
        .await?;
    }
    tokio::spawn(crate::log_limit::run_reporter());
    app.state.set_ready(true);
    tracing::info!(addr = ?addr, pid = std::process::id(), "palisade serving (single process)");
    let report = app
        .serve(listener, None, config.server.serve_config(), true)
        .await?;
    tracing::info!(completed = report.completed, cut = report.cut, "drained");
    Ok(())
}

/// Serves the admin API over `backend`; in fleet mode (`[fleet]`) joins the fleet first, so
/// changes apply fleet-wide and changes from other nodes apply here.
async fn serve_admin<B: palisade::admin::AdminBackend>(
    config: &Config,
    registry: palisade::control::Registry,
    backend: std::sync::Arc<B>,
    stats: palisade::observe::StatsRecorder,
    listen: Option<std::net::SocketAddr>,
    metrics: admin::Metrics,
) -> std::io::Result<()> {
    if !config.fleet.enabled() {
        admin::spawn(config, registry, backend, metrics).await?;
        return Ok(());
    }
    let port = listen.map_or(config.server.bind.port(), |a| a.port());
    let fleet = crate::fleet::Fleet::new(&config.fleet, port, stats)
        .map_err(|e| std::io::Error::other(format!("fleet: {e}")))?;
    let fleet_backend =
        crate::fleet::FleetBackend::new(std::sync::Arc::clone(&backend), fleet.clone());
    let (admin_addr, state) = admin::spawn(config, registry, fleet_backend, metrics).await?;
    fleet.start(state, backend, admin_addr);
    Ok(())
}

/// Installs the Prometheus recorder for this process (`/metrics`).
fn install_metrics() -> Option<PrometheusExporter> {
    match PrometheusExporter::install() {
        Ok(exporter) => {
            exporter.spawn_upkeep(std::time::Duration::from_secs(5));
            Some(exporter)
        }
        Err(error) => {
            tracing::warn!(%error, "metrics recorder not installed; /metrics disabled");
            None
        }
    }
}

/// A runtime with `threads` worker threads: one means a current-thread runtime (one event loop
/// per process, the pre-fork model), zero means one thread per CPU.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

async fn run_worker(config: Config, id: u32) -> std::io::Result<()> {
    // Test hook (feature `test-routes` only): a worker that cannot boot.
    #[cfg(feature = "test-routes")]
    if std::env::var_os("TEST_PALISADE_WORKER_BOOT_FAILS").is_some() {
        return Err(std::io::Error::other(
            "boot failure requested by the test hook",
        ));
    }
    let missing = |what: &str| std::io::Error::other(format!("worker started without {what}"));
    let listener = fd::take_from_env(fd::LISTEN_FD_ENV)?.ok_or_else(|| missing("a listener"))?;
    let control =
        fd::take_from_env(fd::CONTROL_FD_ENV)?.ok_or_else(|| missing("a control channel"))?;
    let mut ctx = BuildContext::new();
    for (name, fd) in fd::take_zones_from_env()? {
        ctx = ctx.with_shm_zone(name, ShmZone::attach(fd)?);
    }
    let load = match (
        fd::take_from_env(balance::LOAD_FD_ENV)?,
        std::env::var(balance::LOAD_SLOT_ENV).ok(),
    ) {
        (Some(table), Some(slot)) => {
            let slot = slot.parse().map_err(|_| missing("a valid load slot"))?;
            Some(balance::LoadTable::attach(table)?.worker(slot)?)
        }
        _ => None,
    };
    let listener = std::net::TcpListener::from(listener);
    listener.set_nonblocking(true)?;
    let control = std::os::unix::net::UnixStream::from(control);
    let exporter = install_metrics();
    let app = app::build(config, id, &ctx, exporter.as_ref())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::spawn(crate::log_limit::run_reporter());
    worker::run(app, listener, load, control).await
}

async fn run_supervisor(config: Config, overrides: Overrides) -> std::io::Result<u8> {
    let listener = match fd::systemd_listener()? {
        Some(fd) => {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            listener
        }
        None => serve::bind(&config.server.serve_config())?,
    };
    let addr = serve::local_addr(&listener);
    tracing::info!(addr = ?addr, "listening");
    let zones = app::create_zones(&config)?;
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let supervisor = supervisor::run(config.clone(), overrides, listener, &zones, Some(handle_tx));
    tokio::pin!(supervisor);
    let handle = tokio::select! {
        handle = handle_rx => handle.map_err(|_| std::io::Error::other("supervisor did not start"))?,
        code = &mut supervisor => return code,
    };
    if config.admin.enabled {
        // The supervisor's own copies of the layer handles hold the authoritative settings.
        let control = app::build(config.clone(), u32::MAX, &app::context(&zones), None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let registry = admin::Aggregated::registry(&control.state.registry, &handle);
        let metrics = admin::Metrics::Workers(std::sync::Arc::clone(&handle.view));
        let stats = handle.stats.clone();
        let backend = std::sync::Arc::new(admin::SupervisorBackend::new(handle, addr));
        serve_admin(&config, registry, backend, stats, addr, metrics).await?;
        // Keep the control copies alive as long as the supervisor runs.
        let code = supervisor.await;
        drop(control);
        return code;
    }
    supervisor.await
}
