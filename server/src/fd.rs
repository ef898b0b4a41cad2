//! Inheriting file descriptors across exec: the listening socket and the control channel.
//!
//! The supervisor clears `FD_CLOEXEC` on the descriptors a worker must inherit and names them in
//! the worker's environment (`PALISADE_LISTEN_FD`, `PALISADE_CONTROL_FD`). systemd socket
//! activation (`LISTEN_FDS`/`LISTEN_PID`, first descriptor 3) is accepted for the supervisor's
//! own listener.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Environment variable naming the inherited listener descriptor.
pub const LISTEN_FD_ENV: &str = "PALISADE_LISTEN_FD";
/// Environment variable naming the inherited control-channel descriptor.
pub const CONTROL_FD_ENV: &str = "PALISADE_CONTROL_FD";

/// Marks `fd` inheritable (clears `FD_CLOEXEC`) or not.
pub fn set_inheritable(fd: impl AsFd, inheritable: bool) -> std::io::Result<()> {
    let flags = if inheritable {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Takes ownership of the descriptor named by environment variable `var`, if set and open.
///
/// Call once per variable: the descriptor is owned by the returned value afterwards.
pub fn take_from_env(var: &str) -> std::io::Result<Option<OwnedFd>> {
    let Some(raw) = std::env::var(var).ok() else {
        return Ok(None);
    };
    let fd: RawFd = raw.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{var}={raw:?} is not a descriptor"),
        )
    })?;
    take_raw(fd).map(Some)
}

/// The systemd socket-activation listener (descriptor 3), if `LISTEN_FDS` names one for this
/// process.
pub fn systemd_listener() -> std::io::Result<Option<OwnedFd>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok());
    match (for_us, count) {
        (true, Some(n)) if n >= 1 => take_raw(3).map(Some),
        _ => Ok(None),
    }
}

/// A path that opens descriptor `fd` of this process: `/proc/self/fd/N` on Linux (a new open
/// file, its own offset), `/dev/fd/N` elsewhere (on macOS a duplicate sharing the offset, which
/// is why [`read_from_start`] reads by position).
pub fn path_of(fd: RawFd) -> String {
    if cfg!(target_os = "linux") {
        format!("/proc/self/fd/{fd}")
    } else {
        format!("/dev/fd/{fd}")
    }
}

/// Reads the whole file at `path` from its first byte, by position (`pread`): the same text
/// whoever else has the file open, even through a `/dev/fd/N` duplicate whose shared offset the
/// supervisor or another worker moved.
pub fn read_from_start(path: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::open(path)?;
    let mut text = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match file.read_at(&mut buf, text.len() as u64) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))
}

/// A new private (0600), close-on-exec temporary file, unlinked as soon as it is open: it lives
/// while a descriptor refers to it and leaves nothing behind. The portable stand-in for a memory
/// file where there is no `memfd_create`.
pub fn unlinked_temp_file(prefix: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = std::env::temp_dir();
    let mut attempts = 0;
    loop {
        let path = dir.join(format!(
            "{prefix}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        // Rust opens files close-on-exec; `create_new` refuses a name that exists (or a
        // symlink planted there).
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Environment variable listing inherited shared-memory zones as `policy=fd,policy=fd`.
pub const SHM_ZONES_ENV: &str = "PALISADE_SHM_ZONES";

/// Takes ownership of the shared-memory zone descriptors named by [`SHM_ZONES_ENV`].
pub fn take_zones_from_env() -> std::io::Result<Vec<(String, OwnedFd)>> {
    let Some(list) = std::env::var(SHM_ZONES_ENV).ok() else {
        return Ok(Vec::new());
    };
    let mut zones = Vec::new();
    for item in list.split(',').filter(|i| !i.is_empty()) {
        let (name, raw) = item.rsplit_once('=').ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad zone entry {item:?}"),
            )
        })?;
        let fd: RawFd = raw.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad zone descriptor {raw:?}"),
            )
        })?;
        zones.push((name.to_owned(), take_raw(fd)?));
    }
    Ok(zones)
}

fn take_raw(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: the descriptor is only borrowed for this one fcntl call, which checks that it is
    // open (EBADF otherwise) before we claim it.
    fcntl(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        FcntlArg::F_GETFD,
    )?;
    // SAFETY: the descriptor was inherited from our parent for this purpose, is open (checked
    // above), and nothing else in this process refers to it: `take_*` is called once per
    // descriptor at start-up.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_inheritable(&owned, false)?;
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn an_unlinked_snapshot_reads_whole_through_dev_fd_whatever_the_offset() {
        let prefix = "palisade-fd-test";
        let mut file = unlinked_temp_file(prefix).expect("temp file");
        // The writer's offset is at the end, as the supervisor's is after writing a snapshot.
        file.write_all(b"[workers]\ncount = 2\n").expect("write");
        let path = format!("/dev/fd/{}", file.as_raw_fd());
        for _ in 0..2 {
            let text = read_from_start(std::path::Path::new(&path)).expect("read");
            assert_eq!(text, "[workers]\ncount = 2\n");
        }
        let mine = format!("{prefix}-{}-", std::process::id());
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .expect("temp dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&mine))
            .collect();
        assert!(left.is_empty(), "the file is unlinked at once: {left:?}");
        assert!(path_of(3).ends_with("fd/3"));
    }
}
