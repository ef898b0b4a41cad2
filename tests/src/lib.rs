//! Test support for Palisade: real processes, real sockets, a real `redis-server`.
//!
//! Every process spawned here is killed (by PID, never by name) when its guard drops.
//!
//! - [`free_port`]: a free TCP port on 127.0.0.1.
//! - [`redis::RedisServer`]: a private `redis-server` on a free port, which a test may kill and
//!   restart. When the binary is absent, [`redis::RedisServer::start`] returns `None` after a loud
//!   skip message, unless `PALISADE_REQUIRE_REDIS=1`, which makes it panic (CI sets it).
//! - [`server::ServerProcess`]: the `palisade` binary on a free port, waited on until ready.
//! - [`http`]: a small HTTP/1.1 client for tests.
//! - [`load`]: worker pids, single-connection exchanges that report every outcome, an accounted
//!   load generator and the supervisor's counters, for tests against a supervisor.

pub mod http;
pub mod load;
pub mod redis;
pub mod server;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
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
