//! A private PostgreSQL server for tests: `initdb` into a temp dir, `pg_ctl start` on a free
//! port on 127.0.0.1 (durability off: `fsync`, `synchronous_commit` and `full_page_writes`),
//! stopped and removed on drop. As root the binaries run as the `postgres` user (`initdb`
//! refuses root), through `runuser`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, is_listening, wait_until};

/// Whether PostgreSQL is required (`PALISADE_REQUIRE_POSTGRES=1`, set by CI).
pub fn required() -> bool {
    std::env::var("PALISADE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `PALISADE_PG_BIN`, else `PATH`,
/// else the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Ok(dir) = std::env::var("PALISADE_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_all(d));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/bin"), PathBuf::from("/usr/bin")])
        .find(|d| has_all(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_all(d))
        .collect();
    versions.sort();
    versions.pop()
}

/// A PostgreSQL server started by a test. Stopped (immediate mode) and its directory removed on
/// drop.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    running: bool,
}

impl PostgresServer {
    /// Creates a cluster and starts it, or returns `None` (after a loud message) when the
    /// binaries are absent and not [`required`].
    ///
    /// # Panics
    /// When the binaries are absent and required, or the server does not come up.
    pub fn start() -> Option<Self> {
        let Some(bin) = find_bin_dir() else {
            if required() {
                panic!(
                    "PostgreSQL is required (PALISADE_REQUIRE_POSTGRES=1) but initdb/pg_ctl were not found"
                );
            }
            eprintln!(
                "\n!!!!!!!! SKIPPING: PostgreSQL (initdb, pg_ctl) not found; install it (apt-get \
                 install postgresql) to run this test !!!!!!!!\n"
            );
            return None;
        };
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("palisade-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        // `/proc/self` belongs to this process's effective user.
        let as_postgres = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata("/proc/self").expect("stat /proc/self"),
        ) == 0;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown postgres {}", dir.display());
        }
        let server = Self {
            port,
            bin,
            dir,
            as_postgres,
            running: false,
        };
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = server;
        server.restart();
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(exe);
            cmd
        } else {
            Command::new(exe)
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: every backend is killed, no
    /// checkpoint, crash recovery at the next start) and waits until the port is closed.
    pub fn kill(&mut self) {
        if !self.running {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
        let addr = self.addr();
        wait_until(Duration::from_secs(10), || !is_listening(addr));
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Starts the server (again, after [`kill`](Self::kill)) on the same port and data, waiting
    /// until it accepts connections.
    ///
    /// # Panics
    /// When it does not come up within 30 s.
    pub fn restart(&mut self) {
        self.kill();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        self.running = true;
        let addr = self.addr();
        assert!(
            wait_until(Duration::from_secs(30), || is_listening(addr)),
            "PostgreSQL did not listen on {addr}"
        );
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
