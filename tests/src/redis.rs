//! A private `redis-server` for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, is_listening, wait_until};

/// A `redis-server` started by a test on a free port with `--save "" --appendonly no`.
/// Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    bin: PathBuf,
    child: Option<Child>,
    /// Addresses listened on besides 127.0.0.1.
    extra_binds: Vec<std::net::IpAddr>,
}

/// Whether `redis-server` is required (`PALISADE_REQUIRE_REDIS=1`, set by CI).
pub fn required() -> bool {
    std::env::var("PALISADE_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

fn find_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PALISADE_REDIS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([
            "/usr/bin".into(),
            "/usr/local/bin".into(),
            "/usr/sbin".into(),
        ])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

impl RedisServer {
    /// Starts a private redis-server, or returns `None` (after a loud message) when the binary is
    /// absent and not required.
    ///
    /// # Panics
    /// When the binary is absent and [`required`], or when the server does not come up.
    pub fn start() -> Option<Self> {
        Self::start_on(&[])
    }

    /// Like [`start`](Self::start), also listening on `extra_binds` (e.g. the host side of
    /// test network namespaces' links), which must exist.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_on(extra_binds: &[std::net::IpAddr]) -> Option<Self> {
        let Some(bin) = find_binary() else {
            if required() {
                panic!("redis-server is required (PALISADE_REQUIRE_REDIS=1) but was not found");
            }
            eprintln!(
                "\n!!!!!!!! SKIPPING: redis-server not found on PATH; install it (apt-get install \
                 redis-server) to run this test !!!!!!!!\n"
            );
            return None;
        };
        let mut server = Self {
            port: free_port(),
            bin,
            child: None,
            extra_binds: extra_binds.to_vec(),
        };
        server.restart();
        Some(server)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis://IP:PORT/` for one of the addresses it listens on.
    pub fn url_on(&self, ip: std::net::IpAddr) -> String {
        format!("redis://{}/", SocketAddr::new(ip, self.port))
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)), waiting until it
    /// accepts connections.
    ///
    /// # Panics
    /// When it does not come up within 10 s.
    pub fn restart(&mut self) {
        self.kill();
        let mut binds = vec!["127.0.0.1".to_owned()];
        binds.extend(self.extra_binds.iter().map(ToString::to_string));
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string()])
            .arg("--bind")
            .args(&binds)
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let addr = self.addr();
        assert!(
            wait_until(Duration::from_secs(10), || is_listening(addr)),
            "redis-server did not start on {addr}"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
