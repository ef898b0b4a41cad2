//! The shared-memory zone: one GCRA cell table in a memory-mapped segment that several worker
//! processes attach to, so they enforce one limit together (nginx `limit_req_zone`).
//!
//! This is the one module of the rate limiter that needs `unsafe`: mapping a file and viewing
//! the mapping as atomics. Every block carries a SAFETY comment. System calls go through `nix`.
//!
//! Unix only. The segment is an anonymous memory file (`memfd_create`) on Linux, Android and
//! FreeBSD, and an unlinked POSIX shared-memory object (`shm_open`) on other unix systems
//! (macOS); any unix system can also use a file ([`ShmZone::create_file`]).
#![allow(unsafe_code)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};

use super::{Check, Store, StoreStats};
use crate::rate_limit::gcra::{Decision, Gcra};
use crate::rate_limit::key::{KeyValue, stable_hash};
use crate::rate_limit::metrics::StoreMetrics;
use crate::rate_limit::table::{Counters, Set, Table, WAYS, lock_word};

const MAGIC: u64 = u64::from_le_bytes(*b"PALRLZ01");
const HEADER_LEN: usize = 128;
/// At most 2^28 sets (~1.9 billion keys, 32 GiB): anything larger is a configuration error.
const MAX_SETS: u64 = 1 << 28;

/// The segment header. `#[repr(C)]`, atomics and plain integers written before `magic`.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    ways: AtomicU64,
    sets: AtomicU64,
    seed: AtomicU64,
    counters: Counters,
    /// Hash of the policy name the zone is bound to (0 = unbound).
    owner: AtomicU64,
    /// Guards `emission_ns`/`burst` and the rescale walk (a lock word, see `lock_word`).
    params_lock: AtomicU64,
    /// The parameters the stored TATs are expressed in (0 = not yet set).
    emission_ns: AtomicU64,
    burst: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);
const _: () = assert!(HEADER_LEN.is_multiple_of(std::mem::align_of::<Set>()));

/// A shared-memory rate-limit zone: the state of one policy, shared by several processes.
///
/// The supervisor creates one zone per shared policy ([`create_anonymous`](Self::create_anonymous)
/// or [`create_file`](Self::create_file)) before starting workers and hands each worker the file
/// descriptor ([`inheritable_fd`](Self::inheritable_fd)) or the path; workers
/// [`attach`](Self::attach) to it and use it with
/// [`PolicyBuilder::shm`](crate::rate_limit::PolicyBuilder::shm) (or
/// the reference server's `BuildContext::with_shm_zone`). All
/// processes then share the policy's buckets: N workers × any traffic = one limit (nginx
/// `limit_req_zone`, which also binds one rate to one zone). A zone is bound to the first policy
/// name that uses it; another name is refused.
///
/// Unix only: where there is no shared memory (Windows), the type does not exist and a policy
/// with `store = "shm"` is a configuration error.
///
/// Time is `CLOCK_MONOTONIC`, common to all processes on the machine. The quota itself is
/// configured in every process (the supervisor's control channel propagates runtime changes);
/// the zone records the parameters its state is expressed in, so when every worker applies the
/// same change, the stored state is rescaled exactly once. Memory is fixed at creation: 128 bytes
/// per 7 keys, plus 128.
///
/// The segment must not be truncated while mapped (that would fault the processes using it).
///
/// ```
/// use palisade::rate_limit::{Gcra, KeyValue, ShmZone};
/// use std::time::Duration;
///
/// let zone = ShmZone::create_anonymous("doc-zone", 7_000).unwrap();
/// let worker = ShmZone::attach(zone.inheritable_fd().unwrap()).unwrap(); // e.g. in a child
/// let (a, b) = (zone.store("api").unwrap(), worker.store("api").unwrap());
/// let gcra = Gcra::new(1, Duration::from_secs(3600), 2);
/// assert!(a.check_key(&KeyValue::Global, &gcra, 1).allowed);
/// assert!(b.check_key(&KeyValue::Global, &gcra, 1).allowed);
/// assert!(!a.check_key(&KeyValue::Global, &gcra, 1).allowed, "both mappings share one bucket");
/// assert!(worker.store("other").is_err(), "one zone, one policy");
/// ```
pub struct ShmZone {
    map: MmapMut,
    file: File,
    sets: usize,
    /// This process's lock token (its pid, read once: `getpid` is a system call).
    token: u64,
}

impl fmt::Debug for ShmZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmZone")
            .field("fd", &self.file.as_raw_fd())
            .field("capacity", &self.capacity())
            .field("keys", &self.header().counters.keys.load(Ordering::Relaxed))
            .finish()
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl ShmZone {
    /// Creates a zone for at least 7 and at most `max_keys` keys (rounded down to a multiple of
    /// 7) in anonymous shared memory: [`create_memfd`](Self::create_memfd) where the system has
    /// `memfd_create` (Linux, Android, FreeBSD), [`create_posix_shm`](Self::create_posix_shm)
    /// elsewhere. The descriptor is close-on-exec; pass [`inheritable_fd`](Self::inheritable_fd)
    /// to children.
    pub fn create_anonymous(name: &str, max_keys: usize) -> io::Result<Arc<Self>> {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        return Self::create_memfd(name, max_keys);
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        return Self::create_posix_shm(name, max_keys);
    }

    /// Creates a zone (see [`create_anonymous`](Self::create_anonymous)) in an anonymous memory
    /// file (`memfd_create`, close-on-exec). Linux, Android and FreeBSD.
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    pub fn create_memfd(name: &str, max_keys: usize) -> io::Result<Arc<Self>> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let cname = std::ffi::CString::new(format!("palisade-{name}"))
            .map_err(|_| invalid("zone name contains a NUL byte"))?;
        let fd = memfd_create(cname.as_c_str(), MFdFlags::MFD_CLOEXEC)?;
        Self::init(File::from(fd), max_keys)
    }

    /// Creates a zone (see [`create_anonymous`](Self::create_anonymous)) in a POSIX
    /// shared-memory object (`shm_open`, mode 0600, close-on-exec) that is unlinked at once:
    /// like a memory file, it lives as long as a descriptor or a mapping of it does, and no
    /// name is left behind. `name` is only used in error messages. Every unix system.
    pub fn create_posix_shm(name: &str, max_keys: usize) -> io::Result<Arc<Self>> {
        use nix::errno::Errno;
        use nix::fcntl::OFlag;
        use nix::sys::mman::{shm_open, shm_unlink};
        use nix::sys::stat::Mode;
        // macOS allows 31 bytes per name: "/palisade-" + pid + "-" + 8 hex digits fits.
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
        let mut attempts = 0;
        let fd = loop {
            let object = format!("/palisade-{}-{:08x}", std::process::id(), fastrand::u32(..));
            match shm_open(object.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR) {
                Ok(fd) => {
                    shm_unlink(object.as_str())?;
                    break fd;
                }
                Err(Errno::EEXIST) if attempts < 8 => attempts += 1,
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("shared-memory object for rate-limit zone `{name}`: {e}"),
                    ));
                }
            }
        };
        Self::init(File::from(fd), max_keys)
    }

    /// Creates (or overwrites) a zone backed by the file at `path` (e.g. under `/dev/shm`).
    pub fn create_file(path: impl AsRef<Path>, max_keys: usize) -> io::Result<Arc<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Self::init(file, max_keys)
    }

    fn init(file: File, max_keys: usize) -> io::Result<Arc<Self>> {
        let sets = ((max_keys / WAYS).max(1)) as u64;
        if sets > MAX_SETS {
            return Err(invalid(format!(
                "rate-limit zone of {max_keys} keys is too large (at most {})",
                MAX_SETS as usize * WAYS
            )));
        }
        file.set_len(HEADER_LEN as u64 + sets * std::mem::size_of::<Set>() as u64)?;
        let zone = Self::map(file, sets as usize)?;
        let h = zone.header();
        h.ways.store(WAYS as u64, Ordering::Relaxed);
        h.sets.store(sets, Ordering::Relaxed);
        h.seed.store(fastrand::u64(..), Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(Arc::new(zone))
    }

    /// Attaches to a zone created by another process, from its file descriptor.
    pub fn attach(fd: OwnedFd) -> io::Result<Arc<Self>> {
        Self::attach_file(File::from(fd))
    }

    /// Attaches to a zone from an open file.
    pub fn attach_file(file: File) -> io::Result<Arc<Self>> {
        let len = file.metadata()?.len();
        if len < HEADER_LEN as u64 {
            return Err(invalid("not a rate-limit zone: file too short"));
        }
        // Some systems (macOS shared-memory objects) report the size rounded up to a page, so
        // the file may hold more than the header's sets: map what the size allows, then narrow
        // the zone to the header's count.
        let room = (len - HEADER_LEN as u64) / std::mem::size_of::<Set>() as u64;
        if room == 0 || room > MAX_SETS {
            return Err(invalid("not a rate-limit zone: bad size"));
        }
        let mut zone = Self::map(file, room as usize)?;
        let h = zone.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(invalid("not a rate-limit zone: bad magic"));
        }
        let sets = h.sets.load(Ordering::Relaxed);
        if h.ways.load(Ordering::Relaxed) != WAYS as u64 || sets == 0 || sets > room {
            return Err(invalid("rate-limit zone layout differs from this build"));
        }
        zone.sets = sets as usize;
        Ok(Arc::new(zone))
    }

    /// Attaches to a zone by path (a file, or on Linux `/proc/self/fd/N` for an inherited
    /// descriptor; elsewhere pass the descriptor to [`attach`](Self::attach)).
    pub fn attach_path(path: impl AsRef<Path>) -> io::Result<Arc<Self>> {
        Self::attach_file(OpenOptions::new().read(true).write(true).open(path)?)
    }

    fn map(file: File, sets: usize) -> io::Result<Self> {
        let len = HEADER_LEN + sets * std::mem::size_of::<Set>();
        // SAFETY: the mapping is shared and only ever accessed through atomics (`Header`,
        // `Set`), so concurrent writes by other processes are not data races. The file was sized
        // to `len` (or checked to be at least `len`) above; the documented contract is that
        // nobody truncates it while mapped.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file)? };
        Ok(Self {
            map,
            file,
            sets,
            token: u64::from(std::process::id()),
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least HEADER_LEN bytes long; `Header` is
        // `repr(C)`, made of atomics (valid for every bit pattern, interior mutability), and
        // fits in HEADER_LEN (checked at compile time). The reference lives no longer than
        // `self`, which owns the mapping.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn sets(&self) -> &[Set] {
        // SAFETY: the sets start HEADER_LEN bytes into a page-aligned mapping, so they are
        // 128-byte aligned (HEADER_LEN is a multiple of `align_of::<Set>()`, checked at compile
        // time); the mapping holds exactly `self.sets` of them (`map` sized it). `Set` is
        // `repr(C)` atomics only, valid for every bit pattern including the zeroes of a new file.
        // The slice lives no longer than `self`.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(HEADER_LEN).cast::<Set>(), self.sets)
        }
    }

    fn table(&self) -> Table<'_> {
        Table::new(self.sets(), &self.header().counters, self.token)
    }

    /// The zone's descriptor (close-on-exec).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// A duplicate of the zone's descriptor without close-on-exec, for a child process to inherit
    /// (pass its number to the child, which attaches with [`attach`](Self::attach), or on Linux
    /// [`attach_path`](Self::attach_path)`("/proc/self/fd/N")`).
    pub fn inheritable_fd(&self) -> io::Result<OwnedFd> {
        // `dup` never copies FD_CLOEXEC: the duplicate survives exec.
        Ok(nix::unistd::dup(self.file.as_fd())?)
    }

    /// Maximum keys.
    pub fn capacity(&self) -> u64 {
        (self.sets * WAYS) as u64
    }

    /// The zone's clock: `CLOCK_MONOTONIC` in nanoseconds, the same in every process.
    pub fn clock_ns() -> u64 {
        use nix::time::{ClockId, clock_gettime};
        // CLOCK_MONOTONIC is always supported; were it to fail, time 0 only makes every key
        // look busy.
        clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
            (ts.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(ts.tv_nsec() as u64)
        })
    }

    /// The store of `policy` in this zone, binding the zone to that policy name if it is not
    /// bound yet. Fails when the zone belongs to another policy.
    pub fn store(self: &Arc<Self>, policy: &str) -> io::Result<ShmStore> {
        let h = self.header();
        let name = stable_hash(policy).max(1);
        match h
            .owner
            .compare_exchange(0, name, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(owner) if owner == name => {}
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("this rate-limit zone belongs to another policy than `{policy}`"),
                ));
            }
        }
        Ok(ShmStore {
            seed: h.seed.load(Ordering::Relaxed),
            zone: Arc::clone(self),
            metrics: None,
        })
    }

    /// Records `gcra` as the zone's parameters if none are recorded yet.
    fn adopt(&self, gcra: &Gcra) {
        let h = self.header();
        let _guard = lock_word(&h.params_lock, self.token);
        if h.emission_ns.load(Ordering::Acquire) == 0 {
            h.burst.store(u64::from(gcra.burst()), Ordering::Release);
            h.emission_ns.store(gcra.emission_ns(), Ordering::Release);
        }
    }

    /// Rescales the zone's state to `new` unless another process already did.
    fn rescale(&self, old: &Gcra, new: &Gcra) {
        let h = self.header();
        let _guard = lock_word(&h.params_lock, self.token);
        let emission = h.emission_ns.load(Ordering::Acquire);
        let burst = u32::try_from(h.burst.load(Ordering::Acquire)).unwrap_or(u32::MAX);
        let from = if emission == 0 {
            *old
        } else {
            Gcra::from_raw(emission, burst)
        };
        if from == *new {
            return;
        }
        self.table().rescale(Self::clock_ns(), &from, new);
        h.burst.store(u64::from(new.burst()), Ordering::Release);
        h.emission_ns.store(new.emission_ns(), Ordering::Release);
    }

    /// Zone-wide counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.header().counters;
        StoreStats {
            keys: c.keys.load(Ordering::Relaxed),
            capacity: self.capacity(),
            evictions_idle: c.evicted_idle.load(Ordering::Relaxed),
            evictions_pressure: c.evicted_pressure.load(Ordering::Relaxed),
            purged: c.purged.load(Ordering::Relaxed),
            ..StoreStats::default()
        }
    }

    /// Frees idle keys of every policy in the zone; returns how many.
    pub fn purge_idle(&self) -> u64 {
        self.table().purge_idle(Self::clock_ns())
    }
}

/// A policy's store in a [`ShmZone`].
#[derive(Debug, Clone)]
pub struct ShmStore {
    zone: Arc<ShmZone>,
    seed: u64,
    metrics: Option<StoreMetrics>,
}

impl ShmStore {
    pub(crate) fn with_metrics(mut self, metrics: StoreMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Records the policy's parameters in the zone if it has none yet.
    pub(crate) fn adopt(&self, gcra: &Gcra) {
        self.zone.adopt(gcra);
    }

    /// The zone.
    pub fn zone(&self) -> &Arc<ShmZone> {
        &self.zone
    }

    /// Checks and consumes synchronously (what [`Store::check`] does, without the enum).
    #[inline]
    pub fn check_key(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Decision {
        let table = self.zone.table();
        let (decision, event) =
            table.check(key.hash_with(self.seed), ShmZone::clock_ns(), gcra, cost);
        if let Some(m) = &self.metrics {
            m.record(
                event,
                self.zone.header().counters.keys.load(Ordering::Relaxed),
            );
        }
        decision
    }
}

impl Store for ShmStore {
    fn kind(&self) -> &'static str {
        "shm"
    }

    #[inline]
    fn check(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Check {
        Check::Ready(self.check_key(key, gcra, cost))
    }

    fn peek(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) -> Option<Decision> {
        let h = key.hash_with(self.seed);
        Some(self.zone.table().peek(h, ShmZone::clock_ns(), gcra, cost))
    }

    fn refund(&self, key: &KeyValue<'_>, gcra: &Gcra, cost: u32) {
        self.zone
            .table()
            .refund(key.hash_with(self.seed), gcra, cost);
    }

    fn rescale(&self, old: &Gcra, new: &Gcra) {
        self.zone.rescale(old, new);
    }

    fn stats(&self) -> StoreStats {
        self.zone.stats()
    }

    fn purge_idle(&self) -> u64 {
        self.zone.purge_idle()
    }

    fn reset(&self) -> Result<u64, &'static str> {
        Ok(self.zone.table().clear())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn attach_validates_the_segment() {
        let dir = std::env::temp_dir().join(format!("palisade-zone-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 4096]).unwrap();
        let err = ShmZone::attach_path(&dir).unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        std::fs::write(&dir, b"short").unwrap();
        assert!(ShmZone::attach_path(&dir).is_err());
        let zone = ShmZone::create_file(&dir, 700).unwrap();
        assert_eq!(zone.capacity(), 700);
        let again = ShmZone::attach_path(&dir).unwrap();
        let g = Gcra::new(1, Duration::from_secs(60), 1);
        assert!(
            zone.store("p")
                .unwrap()
                .check_key(&KeyValue::Global, &g, 1)
                .allowed
        );
        assert!(
            !again
                .store("p")
                .unwrap()
                .check_key(&KeyValue::Global, &g, 1)
                .allowed
        );
        let err = again.store("q").unwrap_err();
        assert!(err.to_string().contains("another policy"), "{err}");
        assert_eq!(again.stats().keys, 1);
        std::fs::remove_file(&dir).unwrap();
    }

    /// The anonymous backings: memfd where the system has it, and the portable POSIX
    /// shared-memory object everywhere (so Linux exercises the macOS code path too).
    type Create = fn(&str, usize) -> io::Result<Arc<ShmZone>>;

    fn backings() -> Vec<(&'static str, Create)> {
        vec![
            ("anonymous", ShmZone::create_anonymous),
            ("posix_shm", ShmZone::create_posix_shm),
        ]
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn inherited_fd_attaches_through_proc() {
        let zone = ShmZone::create_memfd("t", 70).unwrap();
        let fd = zone.inheritable_fd().unwrap();
        let child_view = ShmZone::attach_path(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        let g = Gcra::new(1, Duration::from_secs(60), 1);
        assert!(
            child_view
                .store("p")
                .unwrap()
                .check_key(&KeyValue::Global, &g, 1)
                .allowed
        );
        assert!(
            !zone
                .store("p")
                .unwrap()
                .check_key(&KeyValue::Global, &g, 1)
                .allowed
        );
    }

    #[test]
    fn portable_backing_is_shared_inheritable_and_leaves_no_name() {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let zone = ShmZone::create_posix_shm("portable", 700).unwrap();
        assert_eq!(zone.capacity(), 700);
        let flags =
            |fd: BorrowedFd<'_>| FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(
            flags(zone.fd()).contains(FdFlag::FD_CLOEXEC),
            "the zone's own fd is close-on-exec"
        );
        let inherited = zone.inheritable_fd().unwrap();
        assert!(
            !flags(inherited.as_fd()).contains(FdFlag::FD_CLOEXEC),
            "the child's copy survives exec"
        );
        let child_view = ShmZone::attach(inherited).unwrap();
        assert_eq!(child_view.capacity(), 700);
        let g = Gcra::new(1, Duration::from_secs(60), 1);
        let (a, b) = (zone.store("p").unwrap(), child_view.store("p").unwrap());
        assert!(a.check_key(&KeyValue::Global, &g, 1).allowed);
        assert!(
            !b.check_key(&KeyValue::Global, &g, 1).allowed,
            "one bucket in both mappings"
        );
        assert_eq!(zone.stats().keys, 1);
        let err = child_view.store("q").unwrap_err();
        assert!(err.to_string().contains("another policy"), "{err}");
        // The object was unlinked at creation: nothing named after this process remains.
        #[cfg(target_os = "linux")]
        {
            let prefix = format!("palisade-{}-", std::process::id());
            let left: Vec<_> = std::fs::read_dir("/dev/shm")
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn attach_accepts_a_segment_rounded_up_to_a_page() {
        // macOS reports a shared-memory object's size rounded up to a page.
        let path = std::env::temp_dir().join(format!("palisade-zone-pg-{}", std::process::id()));
        let zone = ShmZone::create_file(&path, 70).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(16_384)
            .unwrap();
        let again = ShmZone::attach_path(&path).unwrap();
        assert_eq!(again.capacity(), zone.capacity());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn rescale_happens_once_across_mappings() {
        for (backing, create) in backings() {
            rescale_once(backing, create("r", 70).unwrap());
        }
    }

    fn rescale_once(backing: &str, zone: Arc<ShmZone>) {
        let other = ShmZone::attach(zone.inheritable_fd().unwrap()).unwrap();
        let (a, b) = (zone.store("p").unwrap(), other.store("p").unwrap());
        let old = Gcra::new(1, Duration::from_secs(1), 20);
        a.adopt(&old);
        b.adopt(&old);
        for _ in 0..10 {
            assert!(a.check_key(&KeyValue::Global, &old, 1).allowed);
        }
        // Both "workers" apply the same change: the debt (10 cells) is rescaled once.
        let new = Gcra::new(2, Duration::from_secs(1), 20);
        a.rescale(&old, &new);
        b.rescale(&old, &new);
        // 10 of 20 used; a peek counts the peeked request too.
        let d = b.peek(&KeyValue::Global, &new, 1).unwrap();
        assert_eq!(d.remaining, 9, "{backing}: {d:?}");
    }

    #[test]
    fn absurd_sizes_are_refused() {
        for (backing, create) in backings() {
            assert!(create("big", usize::MAX).is_err(), "{backing}");
        }
    }
}
