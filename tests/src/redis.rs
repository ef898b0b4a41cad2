//! A private `redis-server` for tests, plain or TLS-only (`rediss://`, certificates from a
//! throwaway [`TestCa`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tls::TestCa;
use crate::{free_port, is_listening, wait_until};

/// A `redis-server` started by a test on a free port with `--save "" --appendonly no`.
/// Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    bin: PathBuf,
    child: Option<Child>,
    tls: Option<RedisTlsFiles>,
    /// Addresses listened on besides 127.0.0.1.
    extra_binds: Vec<std::net::IpAddr>,
}

/// Whether a TLS redis-server asks clients for a certificate (`--tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients need no certificate (`no`).
    No,
    /// Clients must present one the CA issued (`yes`): mutual TLS.
    Required,
}

/// The PEM files of a TLS [`RedisServer`], in a private temp dir (removed on drop): the CA that
/// issued the server's certificate, a client certificate and key it issued, and an unrelated
/// CA (a wrong one to trust).
#[derive(Debug)]
pub struct RedisTlsFiles {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA certificate that issued the server's and the client's certificates.
    pub ca: PathBuf,
    /// A client certificate (for mutual TLS).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    /// A CA that issued nothing here: trusting it must fail the handshake.
    pub wrong_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    auth: ClientAuth,
}

impl Drop for RedisTlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
        let mut server = Self::start_stopped()?;
        server.extra_binds = extra_binds.to_vec();
        server.restart();
        Some(server)
    }

    /// Starts a private redis-server that speaks TLS only (`--port 0 --tls-port PORT`), with a
    /// certificate for `localhost` and `127.0.0.1` from a new test CA; `None` like
    /// [`start`](Self::start).
    ///
    /// # Panics
    /// Like [`start`](Self::start), or when the files cannot be written.
    pub fn start_tls(auth: ClientAuth) -> Option<Self> {
        let mut server = Self::start_stopped()?;
        let dir = std::env::temp_dir().join(format!(
            "palisade-test-redis-tls-{}-{}",
            std::process::id(),
            server.port
        ));
        std::fs::create_dir_all(&dir).expect("create the TLS dir");
        let ca = TestCa::new("palisade redis test CA");
        let wrong = TestCa::new("palisade unrelated CA");
        let files = RedisTlsFiles {
            ca: dir.join("ca.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            wrong_ca: dir.join("wrong-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
            auth,
        };
        ca.write(&files.ca);
        wrong.write(&files.wrong_ca);
        ca.server_cert()
            .write(&files.server_cert, &files.server_key);
        ca.client_cert("palisade")
            .write(&files.client_cert, &files.client_key);
        server.tls = Some(files);
        server.restart();
        Some(server)
    }

    fn start_stopped() -> Option<Self> {
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
        Some(Self {
            port: free_port(),
            bin,
            child: None,
            tls: None,
            extra_binds: Vec::new(),
        })
    }

    /// The certificate files of a TLS server ([`start_tls`](Self::start_tls)).
    pub fn tls(&self) -> Option<&RedisTlsFiles> {
        self.tls.as_ref()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT/`, or `rediss://127.0.0.1:PORT/` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
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
        let mut command = Command::new(&self.bin);
        match &self.tls {
            None => {
                command.args(["--port", &self.port.to_string()]);
            }
            Some(tls) => {
                let path = |p: &PathBuf| p.to_str().expect("UTF-8 temp path").to_owned();
                let auth = match tls.auth {
                    ClientAuth::No => "no",
                    ClientAuth::Required => "yes",
                };
                command
                    .args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .args(["--tls-cert-file", &path(&tls.server_cert)])
                    .args(["--tls-key-file", &path(&tls.server_key)])
                    .args(["--tls-ca-cert-file", &path(&tls.ca)])
                    .args(["--tls-auth-clients", auth]);
            }
        }
        let mut binds = vec!["127.0.0.1".to_owned()];
        binds.extend(self.extra_binds.iter().map(ToString::to_string));
        let child = command
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
