//! A real Palisade admin API with moving traffic, for trying `palisade-top` without a server:
//! the library's admin router over real rate-limit, circuit-breaker and cache handles, with
//! scripted worker processes.
//!
//! ```text
//! cargo run -p palisade-top --example demo_admin -- --port 9901 --token demo-token-0123456789abcdef &
//! PALISADE_ADMIN_TOKEN=demo-token-0123456789abcdef cargo run -p palisade-top
//! ```
//!
//! Flags: `--port N` (default 9901), `--token T` (at least 16 characters; default
//! `demo-token-0123456789abcdef`), `--workers N` (default 2), `--interval-ms N` (snapshot
//! stream interval, default 1000).

#[path = "../tests/support/server.rs"]
mod server;

use std::sync::Arc;
use std::time::Duration;

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port").unwrap_or(9901);
    let token: String =
        arg(&args, "--token").unwrap_or_else(|| "demo-token-0123456789abcdef".into());
    let workers: u32 = arg(&args, "--workers").unwrap_or(2);
    let interval: u64 = arg(&args, "--interval-ms").unwrap_or(1000);
    let demo = Arc::new(server::Demo::new(
        &token,
        workers,
        Duration::from_millis(interval),
    ));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("admin API on http://127.0.0.1:{port} (token `{token}`)");
    let driver = Arc::clone(&demo);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            driver.drive(fastrand::u32(20..80)).await;
        }
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::select! {
        () = demo.serve(listener, stopped, true) => {}
        _ = tokio::signal::ctrl_c() => { let _ = stop.send(true); }
    }
    Ok(())
}
