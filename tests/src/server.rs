//! The `palisade` binary, spawned for end-to-end tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, is_listening, wait_until};

/// The `target/<profile>` directory of the running test: test executables live in its `deps`,
/// binaries in it, examples in its `examples`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe.parent().expect("test executable directory");
    if dir.ends_with("deps") {
        dir.parent().expect("target directory").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of the `palisade` binary built next to the running test (or `PALISADE_BIN`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("PALISADE_BIN") {
        return PathBuf::from(p);
    }
    let bin = profile_dir().join("palisade");
    assert!(
        bin.is_file(),
        "{} not found: build it first (cargo build -p palisade-server) or set PALISADE_BIN",
        bin.display()
    );
    bin
}

/// A running `palisade` process on a free port, killed (SIGKILL, by PID) on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    /// The public listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin_addr: Option<SocketAddr>,
    /// The admin token file.
    pub token_file: PathBuf,
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    admin: bool,
    ready_path: Option<String>,
    stderr: Option<PathBuf>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    wrapper: Vec<String>,
}

impl ServerBuilder {
    /// Adds command-line arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Kept for readability: every server binds its admin endpoint on a free port.
    #[must_use]
    pub fn with_admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// Writes the server's standard error (its logs) to `path` instead of the test's.
    #[must_use]
    pub fn stderr_to(mut self, path: &std::path::Path) -> Self {
        self.stderr = Some(path.to_path_buf());
        self
    }

    /// Runs the binary through `wrapper` (e.g. `ip netns exec <ns>`, which execs it, so the
    /// process id stays the server's).
    #[must_use]
    pub fn wrapped<I, S>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// Waits for `GET path` to answer 200 instead of `/health/ready`.
    #[must_use]
    pub fn ready_path(mut self, path: &str) -> Self {
        self.ready_path = Some(path.to_owned());
        self
    }

    /// The server speaks HTTPS: readiness is checked over TLS with `config` (which must offer
    /// `http/1.1` or no ALPN protocol).
    #[must_use]
    pub fn tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Spawns the server and waits (up to 20 s) until it answers 200 on its ready path.
    ///
    /// # Panics
    /// When it does not become ready.
    pub fn spawn(self) -> ServerProcess {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // Every server gets a private admin port and token file, so tests never collide on the
        // default 127.0.0.1:9901 or share the user's token.
        let token_file = std::env::temp_dir().join(format!(
            "palisade-test-{}-{}.token",
            std::process::id(),
            admin_addr.port()
        ));
        // A fresh private database (see `spawn_at`), never one left by an earlier run.
        for ext in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(token_file.with_extension(ext));
        }
        self.spawn_at(addr, admin_addr, token_file)
    }

    /// Like [`spawn`](Self::spawn), on given addresses and token file (e.g. to restart a server
    /// where it was); waits for the addresses to be free first.
    ///
    /// # Panics
    /// When the addresses stay busy or the server does not become ready.
    pub fn spawn_at(
        self,
        addr: SocketAddr,
        admin: SocketAddr,
        token_file: PathBuf,
    ) -> ServerProcess {
        assert!(
            wait_until(Duration::from_secs(20), || !is_listening(addr)
                && !is_listening(admin)),
            "{addr} or {admin} still busy"
        );
        let admin_addr = Some(admin);
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary());
                cmd
            }
            None => Command::new(binary()),
        };
        cmd.arg("--bind").arg(addr.to_string());
        cmd.arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--admin-token-file")
            .arg(&token_file);
        // Unless the test chose a database, a private SQLite file next to the token file (the
        // same one again when a test restarts a server with the same token file).
        let chose_db = self.args.iter().any(|a| a.contains("database.url"))
            || self.env.iter().any(|(k, _)| k == "PALISADE_DATABASE_URL");
        if !chose_db {
            cmd.arg("--set").arg(format!(
                "database.url=sqlite://{}",
                token_file.with_extension("db").display()
            ));
        }
        // The test's own RUST_LOG (default `warn`), unless the builder sets one.
        cmd.args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(match &self.stderr {
                Some(path) => {
                    Stdio::from(std::fs::File::create(path).expect("create the log file"))
                }
                None => Stdio::inherit(),
            });
        let child = cmd.spawn().expect("spawn palisade");
        let mut server = ServerProcess {
            child: Some(child),
            addr,
            admin_addr,
            token_file,
        };
        let admin_enabled = !self
            .args
            .iter()
            .any(|a| a.replace(' ', "") == "admin.enabled=false");
        let path = self
            .ready_path
            .unwrap_or_else(|| "/health/ready".to_owned());
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(status) = server.try_wait() {
                panic!("palisade exited before it was ready: {status}");
            }
            let status = match &self.tls {
                Some(config) => crate::tls::blocking_status(addr, &path, config),
                None => blocking_status(addr, &path),
            };
            is_listening(addr) && status == Some(200) && (!admin_enabled || is_listening(admin))
        });
        assert!(ready, "palisade did not become ready on {addr}");
        server
    }
}

impl ServerProcess {
    /// A builder for a server with extra arguments.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts a single-process server with defaults.
    pub fn start() -> Self {
        Self::builder().spawn()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The admin endpoint URL for `path`.
    ///
    /// # Panics
    /// When the server was started without an admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin_addr.expect("started with_admin"),
            path
        )
    }

    /// The admin bearer token (read from the token file the server wrote).
    ///
    /// # Panics
    /// When the file cannot be read.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .expect("read the admin token file")
            .trim()
            .to_owned()
    }

    /// `Authorization: Bearer …` for the admin API.
    pub fn admin_auth(&self) -> (String, String) {
        (
            "authorization".to_owned(),
            format!("Bearer {}", self.admin_token()),
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        crate::kill_pid(self.pid(), signal);
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                // Kill the whole process group we started, by PID: workers die with the
                // supervisor anyway (PDEATHSIG), this just makes it immediate.
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.token_file);
    }
}

/// A blocking `GET path` over a fresh connection; the status, if any answer came.
pub fn blocking_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    crate::http::raw_status(&buf[..n])
}
