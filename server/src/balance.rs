//! Even load across worker processes: a least-connections accept gate over a shared load table.
//!
//! All workers accept from one inherited listening socket. Left alone, the kernel wakes every
//! worker on a new connection and the first one to run drains the whole accept queue, so a burst
//! of long-lived keep-alive connections lands on one worker and stays there (the other workers
//! serve nothing). nginx answers with `accept_disabled`: a worker over its share stops accepting
//! for a while.
//!
//! Palisade does the same, exactly: the supervisor creates a [`LoadTable`] in an anonymous shared
//! memory file, one cache line per worker process with its state and open-connection count. A
//! worker accepts only while no other accepting worker holds fewer connections than it does; a
//! worker over its share leaves the connection in the shared queue for a less loaded one.
//!
//! Guarantees:
//! - **Balance**: connections arriving while workers are accepting end up within one of each
//!   other per worker (8 connections on 2 workers: 4 and 4).
//! - **Liveness**: the least-loaded worker never gates itself. A gated worker that sees a
//!   connection wait in the queue for longer than [`LIVENESS`] (the less loaded worker is stuck,
//!   or at its `server.max_connections`) takes it anyway.
//! - **Rolling restarts stay lossless**: there is still one kernel accept queue, owned by the
//!   supervisor; a worker that stops accepting marks its slot closed and leaves queued
//!   connections to the others.
//!
//! The table is only ever accessed through atomics; this module is the server's one user of
//! `mmap`, every block carries a SAFETY comment.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapMut, MmapOptions};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Environment variable naming the inherited load-table descriptor.
pub const LOAD_FD_ENV: &str = "PALISADE_LOAD_FD";
/// Environment variable naming this worker's slot in the load table.
pub const LOAD_SLOT_ENV: &str = "PALISADE_LOAD_SLOT";

/// Slots in a table: the supervisor's scale bound (1024 workers) plus room for the replacements
/// of a rolling restart.
pub const CAPACITY: usize = 2048;

const MAGIC: u64 = u64::from_le_bytes(*b"PALLOAD1");

/// How long a gated worker lets a connection wait in the queue for a less loaded worker before
/// it takes the connection itself.
pub const LIVENESS: Duration = Duration::from_millis(50);
/// First and longest pause of a gated worker between two looks at the queue.
const RECHECK_MIN: Duration = Duration::from_millis(1);
const RECHECK_MAX: Duration = Duration::from_millis(8);

/// Slot states.
const FREE: u32 = 0;
/// Assigned to a process that does not accept (yet, or any more).
const IDLE: u32 = 1;
/// The process accepts connections: it counts for the least-loaded comparison.
const ACCEPTING: u32 = 2;

#[repr(C, align(64))]
struct Header {
    magic: AtomicU64,
    capacity: AtomicU64,
    /// One past the highest slot the supervisor has assigned: workers scan `0..high`.
    high: AtomicU64,
}

#[repr(C, align(64))]
struct Slot {
    state: AtomicU32,
    /// Open connections of the process in this slot.
    active: AtomicU32,
    /// The process in this slot (for diagnostics).
    pid: AtomicU32,
    /// Connections accepted over the slot's lifetime.
    accepted: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() == 64);
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

const fn table_len() -> usize {
    std::mem::size_of::<Header>() + CAPACITY * std::mem::size_of::<Slot>()
}

/// The shared load table: one slot per worker process (see the [module docs](self)).
pub struct LoadTable {
    map: MmapMut,
    file: std::fs::File,
}

impl std::fmt::Debug for LoadTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadTable")
            .field("fd", &self.file.as_raw_fd())
            .field("high", &self.high())
            .finish()
    }
}

impl LoadTable {
    /// Creates an empty table in an anonymous memory file (close-on-exec; hand workers
    /// [`inheritable_fd`](Self::inheritable_fd)).
    pub fn create() -> io::Result<Arc<Self>> {
        let fd = nix::sys::memfd::memfd_create(
            c"palisade-load",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        let file = std::fs::File::from(fd);
        file.set_len(table_len() as u64)?;
        let table = Self::map(file)?;
        let h = table.header();
        h.capacity.store(CAPACITY as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(Arc::new(table))
    }

    /// Attaches to a table created by the supervisor, from the inherited descriptor.
    pub fn attach(fd: OwnedFd) -> io::Result<Arc<Self>> {
        let file = std::fs::File::from(fd);
        if file.metadata()?.len() < table_len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a load table: file too short",
            ));
        }
        let table = Self::map(file)?;
        let h = table.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.capacity.load(Ordering::Relaxed) != CAPACITY as u64
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "load table layout differs from this build",
            ));
        }
        Ok(Arc::new(table))
    }

    fn map(file: std::fs::File) -> io::Result<Self> {
        // SAFETY: the mapping is shared and only ever accessed through atomics (`Header`,
        // `Slot`), so writes by other processes are not data races. The file is at least
        // `table_len()` bytes (set or checked by the callers) and is never truncated: only the
        // supervisor creates it, with a fixed size.
        let map = unsafe { MmapOptions::new().len(table_len()).map_mut(&file)? };
        Ok(Self { map, file })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and `table_len()` long, so it holds a `Header` at
        // offset 0; `Header` is `repr(C)` of atomics (valid for any bit pattern, interior
        // mutability). The reference borrows `self`, which owns the mapping.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn slots(&self) -> &[Slot] {
        // SAFETY: `CAPACITY` slots follow the 64-byte header inside the mapping (its length is
        // `table_len()`), each 64-byte aligned since the mapping is page-aligned; `Slot` is
        // `repr(C)` of atomics. The slice borrows `self`, which owns the mapping.
        unsafe {
            std::slice::from_raw_parts(
                self.map
                    .as_ptr()
                    .add(std::mem::size_of::<Header>())
                    .cast::<Slot>(),
                CAPACITY,
            )
        }
    }

    fn high(&self) -> usize {
        (self.header().high.load(Ordering::Acquire) as usize).min(CAPACITY)
    }

    /// A descriptor of the table without close-on-exec, for a child process.
    pub fn inheritable_fd(&self) -> io::Result<OwnedFd> {
        Ok(nix::unistd::dup(self.file.as_fd())?)
    }

    /// Supervisor: assigns slot `index` to a process about to start (not accepting yet, no
    /// connections).
    pub fn assign(&self, index: usize) {
        let Some(slot) = self.slots().get(index) else {
            return;
        };
        slot.active.store(0, Ordering::Relaxed);
        slot.accepted.store(0, Ordering::Relaxed);
        slot.pid.store(0, Ordering::Relaxed);
        slot.state.store(IDLE, Ordering::Release);
        self.header()
            .high
            .fetch_max(index as u64 + 1, Ordering::AcqRel);
    }

    /// Supervisor: frees slot `index` after its process exited (whatever the process left in
    /// it, e.g. a crash with connections counted).
    pub fn release(&self, index: usize) {
        if let Some(slot) = self.slots().get(index) {
            slot.state.store(FREE, Ordering::Release);
            slot.active.store(0, Ordering::Relaxed);
            slot.pid.store(0, Ordering::Relaxed);
        }
    }

    /// The worker handle of slot `index`.
    pub fn worker(self: &Arc<Self>, index: usize) -> io::Result<WorkerLoad> {
        if index >= CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("load slot {index} out of range (capacity {CAPACITY})"),
            ));
        }
        Ok(WorkerLoad {
            table: Arc::clone(self),
            index,
        })
    }

    /// Open connections of the process in slot `index` (0 for a free slot).
    pub fn active(&self, index: usize) -> u32 {
        self.slots()
            .get(index)
            .map_or(0, |s| s.active.load(Ordering::Relaxed))
    }
}

/// One worker's view of the load table: its own slot, written only by itself.
#[derive(Debug, Clone)]
pub struct WorkerLoad {
    table: Arc<LoadTable>,
    index: usize,
}

impl WorkerLoad {
    /// The worker's slot.
    fn slot(&self) -> &Slot {
        &self.table.slots()[self.index]
    }

    /// Whether this worker should take the next connection: no accepting worker holds fewer
    /// connections than it does.
    pub fn admits(&self) -> bool {
        let mine = self.slot().active.load(Ordering::Relaxed);
        let high = self.table.high();
        !self.table.slots()[..high].iter().any(|s| {
            s.state.load(Ordering::Relaxed) == ACCEPTING && s.active.load(Ordering::Relaxed) < mine
        })
    }

    fn set_accepting(&self, accepting: bool) {
        let state = if accepting { ACCEPTING } else { IDLE };
        self.slot().pid.store(std::process::id(), Ordering::Relaxed);
        self.slot().state.store(state, Ordering::Release);
    }

    /// Counts a new connection until the returned guard drops.
    fn open(&self) -> Connection {
        let slot = self.slot();
        slot.active.fetch_add(1, Ordering::Relaxed);
        slot.accepted.fetch_add(1, Ordering::Relaxed);
        Connection(Some(self.clone()))
    }
}

/// An accepted connection counted in the load table until dropped (a no-op guard when the
/// server runs without a table).
#[derive(Debug)]
pub struct Connection(Option<WorkerLoad>);

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(load) = &self.0 {
            load.slot().active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The accept side of the listening socket: plain, or gated by the load table.
#[derive(Debug)]
pub enum Acceptor {
    /// Accept whatever arrives (a single process, or a library user).
    Plain(TcpListener),
    /// Accept only this worker's share (see the [module docs](self)).
    Gated(Gated),
}

/// The gated acceptor of a worker process.
#[derive(Debug)]
pub struct Gated {
    listener: AsyncFd<std::net::TcpListener>,
    load: WorkerLoad,
}

impl Acceptor {
    /// Wraps `listener`; with `load`, the worker takes only its share of connections and its
    /// slot counts as accepting until the acceptor drops.
    pub fn new(listener: std::net::TcpListener, load: Option<WorkerLoad>) -> io::Result<Self> {
        match load {
            None => Ok(Self::Plain(TcpListener::from_std(listener)?)),
            Some(load) => {
                listener.set_nonblocking(true)?;
                // SAFETY: the `TcpListener` owns its descriptor, which stays open and the same
                // until the `AsyncFd` (and the listener inside it) drops; the listener is never
                // replaced through `get_mut`.
                let listener = unsafe {
                    AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE)
                }?;
                load.set_accepting(true);
                Ok(Self::Gated(Gated { listener, load }))
            }
        }
    }

    /// The next connection this process should serve. Cancel-safe: a connection is only taken
    /// from the queue synchronously, right before it is returned.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr, Connection)> {
        match self {
            Self::Plain(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((stream, peer, Connection(None)))
            }
            Self::Gated(gated) => gated.accept().await,
        }
    }
}

impl palisade::serve::Accept for Acceptor {
    type Guard = Connection;

    fn accept(
        &mut self,
    ) -> impl std::future::Future<Output = io::Result<(TcpStream, SocketAddr, Connection)>> + Send
    {
        Acceptor::accept(self)
    }
}

impl Gated {
    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr, Connection)> {
        let mut declined_since: Option<Instant> = None;
        let mut pause = RECHECK_MIN;
        loop {
            let mut ready = self.listener.readable().await?;
            if !self.load.admits() {
                // A less loaded worker was woken too and should take this connection. Look
                // again shortly: when the queue is empty by then, it did; wait for the next one.
                let since = *declined_since.get_or_insert_with(Instant::now);
                if !pending(self.listener.get_ref()) {
                    ready.clear_ready();
                    declined_since = None;
                    pause = RECHECK_MIN;
                    continue;
                }
                if since.elapsed() < LIVENESS {
                    drop(ready);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECHECK_MAX);
                    continue;
                }
                // The connection waited LIVENESS for a less loaded worker: take it.
            }
            match ready.try_io(|l| l.get_ref().accept()) {
                Ok(Ok((stream, peer))) => {
                    let conn = self.load.open();
                    stream.set_nonblocking(true)?;
                    return Ok((TcpStream::from_std(stream)?, peer, conn));
                }
                Ok(Err(error)) => return Err(error),
                // The queue was empty (another worker took it): readiness cleared, wait again.
                Err(_would_block) => {
                    declined_since = None;
                    pause = RECHECK_MIN;
                }
            }
        }
    }
}

#[cfg(test)]
impl Acceptor {
    fn load(&self) -> &WorkerLoad {
        match self {
            Self::Gated(gated) => &gated.load,
            Self::Plain(_) => unreachable!("a plain acceptor has no load slot"),
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        // Stopped accepting (drain): the other workers no longer compare with this one.
        self.load.set_accepting(false);
    }
}

/// Whether the listening socket has a connection waiting to be accepted.
fn pending(listener: &std::net::TcpListener) -> bool {
    let mut fds = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `fds` is one valid, initialised pollfd that outlives the call; the count is 1 and
    // the timeout 0, so poll returns at once without retaining the pointer.
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n > 0 && fds.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_in(table: &Arc<LoadTable>, index: usize) -> WorkerLoad {
        table.assign(index);
        let load = table.worker(index).expect("slot");
        load.set_accepting(true);
        load
    }

    #[test]
    fn the_least_loaded_worker_always_admits() {
        let table = LoadTable::create().expect("table");
        let (a, b) = (worker_in(&table, 0), worker_in(&table, 1));
        assert!(a.admits() && b.admits(), "a tie admits both");
        let c1 = a.open();
        assert!(!a.admits(), "a holds more than b");
        assert!(b.admits());
        let c2 = b.open();
        assert!(a.admits() && b.admits());
        drop(c1);
        assert!(a.admits());
        assert!(!b.admits(), "b now holds more");
        drop(c2);
        assert_eq!(table.active(0) + table.active(1), 0);
    }

    #[test]
    fn workers_that_do_not_accept_are_not_compared() {
        let table = LoadTable::create().expect("table");
        let (a, b) = (worker_in(&table, 0), worker_in(&table, 5));
        let _c = a.open();
        assert!(!a.admits());
        b.set_accepting(false);
        assert!(a.admits(), "a draining worker takes no connections");
        table.release(5);
        assert!(a.admits());
    }

    #[tokio::test]
    async fn two_gated_acceptors_split_a_burst_evenly() {
        let table = LoadTable::create().expect("table");
        table.assign(0);
        table.assign(1);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let second = listener.try_clone().expect("clone");
        let mut a = Acceptor::new(listener, Some(table.worker(0).expect("slot"))).expect("a");
        let mut b = Acceptor::new(second, Some(table.worker(1).expect("slot"))).expect("b");
        // The whole burst is queued before either accepts, as when one worker is woken first.
        let _clients: Vec<_> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
        while to_a.len() + to_b.len() < 8 {
            tokio::select! {
                conn = a.accept() => to_a.push(conn.expect("accept")),
                conn = b.accept() => to_b.push(conn.expect("accept")),
            }
        }
        assert_eq!((to_a.len(), to_b.len()), (4, 4));
        assert_eq!((table.active(0), table.active(1)), (4, 4));
        drop(to_a);
        assert_eq!(table.active(0), 0, "closing a connection uncounts it");
        drop(a);
        assert!(
            b.load().admits(),
            "a worker that stopped accepting is not compared"
        );
    }

    #[test]
    fn an_attached_table_shares_the_slots() {
        let table = LoadTable::create().expect("table");
        let other = LoadTable::attach(table.inheritable_fd().expect("fd")).expect("attach");
        let a = worker_in(&table, 0);
        let b = other.worker(1).expect("slot");
        table.assign(1);
        b.set_accepting(true);
        let _c = b.open();
        assert_eq!(table.active(1), 1);
        assert!(a.admits());
        assert!(!b.admits());
        assert!(LoadTable::attach(nix::unistd::dup(std::io::stdin()).expect("dup")).is_err());
    }
}
