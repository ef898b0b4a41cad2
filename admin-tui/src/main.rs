//! `palisade-top`: a live terminal dashboard for Palisade servers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use crossterm::event::EventStream;
use palisade_top::app::{self, RunConfig};
use palisade_top::client::{AdminClient, Timeouts};
use palisade_top::connection::ConnectionConfig;
use palisade_top::format::{local_utc_offset_secs, now_ms};
use palisade_top::state::State;
use palisade_top::view::Styles;
use palisade_top::{TokenSource, default_token_path, term};

/// A live terminal dashboard for Palisade servers: workers, latency, throughput, status codes,
/// limits, breakers and caches, with limits adjustable at runtime.
///
/// With no flags it watches the local reference server (http://127.0.0.1:9901) using the
/// token file the server writes ($XDG_STATE_HOME/palisade/admin.token, or
/// ~/.local/state/palisade/admin.token). Press ? inside for every key.
#[derive(Debug, Parser)]
#[command(name = "palisade-top", version, about, long_about)]
struct Args {
    /// Admin endpoint of the server to watch.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9901",
        env = "PALISADE_TOP_URL"
    )]
    url: String,
    /// File holding the admin bearer token (re-read on every reconnect).
    #[arg(long, value_name = "PATH", env = "PALISADE_TOP_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The admin bearer token itself (prefer --token-file or PALISADE_ADMIN_TOKEN: command
    /// lines are visible to other users).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// Snapshot period when the server has no event stream, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    poll_interval_ms: u64,
    /// No colours (same as setting NO_COLOR).
    #[arg(long)]
    no_color: bool,
    /// PEM file with the CA certificate(s) an `https://` admin endpoint's certificate must
    /// chain to (default: the bundled web PKI roots).
    #[arg(long, value_name = "PATH", env = "PALISADE_TOP_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Watch the server's whole fleet (fleet mode): a Nodes panel (key 8) with every node,
    /// fleet-wide traffic and merged latency. Edits made here apply fleet-wide.
    #[arg(long)]
    fleet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let token = TokenSource::resolve(
        args.token,
        args.token_file,
        std::env::var("PALISADE_ADMIN_TOKEN").ok(),
        default_token_path(),
    );
    let client = match AdminClient::with_ca_file(
        &args.url,
        token.clone(),
        Timeouts::default(),
        args.ca_file.as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade-top: {e}");
            return ExitCode::from(64);
        }
    };
    let styles = if args.no_color {
        Styles::new(false)
    } else {
        Styles::from_env()
    };
    let mut state = State::new(client.base_url(), now_ms())
        .with_token_hint(token.describe())
        .with_utc_offset(local_utc_offset_secs());
    if args.fleet {
        state = state.with_fleet();
    }
    let config = RunConfig {
        connection: ConnectionConfig {
            poll_interval: Duration::from_millis(args.poll_interval_ms.max(100)),
            ..ConnectionConfig::default()
        },
        ..RunConfig::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade-top: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let (mut terminal, guard) = term::init()?;
        let result = app::run(
            &mut terminal,
            EventStream::new(),
            state,
            client,
            config,
            styles,
        )
        .await;
        drop(guard);
        result
    });
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-top: {e}");
            ExitCode::FAILURE
        }
    }
}
