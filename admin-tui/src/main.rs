//! `palisade-top`: a live terminal dashboard for Palisade servers.

use clap::Parser;

/// A live terminal dashboard for Palisade servers: workers, latency, throughput, status codes,
/// limits, breakers and caches, with limits adjustable at runtime.
#[derive(Debug, Parser)]
#[command(name = "palisade-top", version, about, long_about = None)]
struct Args {
    /// Admin endpoint of the server to watch.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9901",
        env = "PALISADE_TOP_URL"
    )]
    url: String,
    /// File holding the admin bearer token (the server prints its path at first start).
    #[arg(long, env = "PALISADE_TOP_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The admin bearer token itself.
    #[arg(long, env = "PALISADE_TOP_TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
}

fn main() {
    let args = Args::parse();
    eprintln!(
        "palisade-top: the dashboard is not built yet; it will connect to {} (run with --help for options)",
        args.url
    );
    std::process::exit(69);
}
