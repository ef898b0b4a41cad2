//! A fake Palisade admin API with moving traffic, for trying `palisade-top` without a server:
//!
//! ```text
//! cargo run -p palisade-top --example fake_admin -- --port 9901 --token secret
//! PALISADE_ADMIN_TOKEN=secret cargo run -p palisade-top
//! ```
//!
//! Flags: `--port N` (default 9901), `--token T` (default `secret`), `--workers N` (default 2),
//! `--no-stream` (404 on /admin/v1/stream, to exercise polling), `--interval-ms N` (default 1000).

#[path = "../tests/support/fake.rs"]
mod fake;

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
    let token: String = arg(&args, "--token").unwrap_or_else(|| "secret".into());
    let workers: u32 = arg(&args, "--workers").unwrap_or(2);
    let interval: u64 = arg(&args, "--interval-ms").unwrap_or(1000);
    let stream = !args.iter().any(|a| a == "--no-stream");
    let (fake, stop) = fake::Fake::new(&token, workers, stream, Duration::from_millis(interval));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("fake admin API on http://127.0.0.1:{port} (token `{token}`, stream {stream})");
    tokio::select! {
        () = fake::serve(listener, fake) => {}
        _ = tokio::signal::ctrl_c() => { let _ = stop.send(true); }
    }
    Ok(())
}
