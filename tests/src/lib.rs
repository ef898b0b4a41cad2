//! Test support for Palisade: real processes, real sockets, a real `redis-server`.
//!
//! Every process spawned here is killed (by PID, never by name) when its guard drops.
//!
//! - [`free_port`]: a free TCP port on 127.0.0.1.
//! - [`redis::RedisServer`]: a private `redis-server` on a free port, which a test may kill and
//!   restart. When the binary is absent, [`redis::RedisServer::start`] returns `None` after a loud
//!   skip message, unless `PALISADE_REQUIRE_REDIS=1`, which makes it panic (CI sets it).
//! - [`postgres::PostgresServer`]: a private PostgreSQL (`initdb` + `pg_ctl`) on a free port,
//!   which a test may kill and restart; skipped like Redis unless `PALISADE_REQUIRE_POSTGRES=1`.
//! - [`server::ServerProcess`]: the `palisade` binary on a free port, waited on until ready, with
//!   a private SQLite database unless the test sets `database.url`.
//! - [`http`]: a small HTTP/1.1 client for tests.
//! - [`tls`]: a throwaway CA (rcgen), certificates it issues, HTTPS exchanges.
//! - [`otlp::OtlpReceiver`]: an OTLP/HTTP trace receiver on a free port that decodes what
//!   exporters send (`ExportTraceServiceRequest`, protobuf) and keeps every span.
//! - [`load`]: a supervisor with its workers waited on, worker pids, single-connection exchanges
//!   that report every outcome, an accounted load generator and the supervisor's counters, for
//!   tests against a supervisor.

pub mod http;
pub mod load;
pub mod netns;
pub mod otlp;
pub mod postgres;
pub mod redis;
pub mod server;
pub mod tls;
pub mod tmux;

use std::future::{Future, ready};
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`load::eventually`] check.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns whether it did.
///
/// Blocks the thread; in async code use [`load::eventually`].
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let blocking = poll_until(
        timeout,
        POLL_INTERVAL,
        || ready(check()),
        |interval| {
            std::thread::sleep(interval);
            ready(())
        },
    );
    // Every future in it is ready at once (the pause blocks the thread instead), so a single
    // poll runs the loop to its end.
    match pin!(blocking).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(held) => held,
        Poll::Pending => unreachable!("a loop over ready futures never waits"),
    }
}

/// The polling loop behind [`wait_until`], [`load::eventually`] and [`load::eventually_async`]:
/// awaits `check` until it holds or `timeout` passes, awaiting `pause(interval)` between checks;
/// returns whether it held.
pub(crate) async fn poll_until<C, P>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> C,
    mut pause: impl FnMut(Duration) -> P,
) -> bool
where
    C: Future<Output = bool>,
    P: Future<Output = ()>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        pause(interval).await;
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn is_listening(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Sends SIGKILL to `pid` (a process this test started) and ignores "no such process".
pub fn kill_pid(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}
