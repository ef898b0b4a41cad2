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
