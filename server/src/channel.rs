//! The control channel between the supervisor and a worker: a unix socketpair carrying
//! length-prefixed JSON messages (`u32` big-endian length, then the payload).
//!
//! Every message carries the protocol version; a frame that is too large, not JSON, or of
//! another version is an error, which the supervisor answers by replacing the worker (it never
//! crashes the supervisor).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use palisade::control::model::StatusCounts;
use palisade::control::{ComponentKind, ComponentSnapshot};

/// The control protocol version.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame accepted, in bytes.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// A message from a worker to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// First message after start.
    Hello {
        /// Worker slot id.
        worker_id: u32,
        /// Process id.
        pid: u32,
    },
    /// The worker accepts connections.
    Ready,
    /// Periodic liveness and statistics.
    Heartbeat(Heartbeat),
    /// The worker finished draining and is about to exit.
    Drained {
        /// Requests completed during the drain.
        completed: u64,
        /// Connections cut at the deadline.
        cut: u64,
    },
    /// A write changed `key`: drop it from cache `cache` on every other worker, then answer
    /// [`SupervisorMsg::Invalidated`] (used when no Redis backplane carries invalidations).
    Invalidate {
        /// Request id echoed in [`SupervisorMsg::Invalidated`].
        id: u64,
        /// The cache (a component name, e.g. `users`).
        cache: String,
        /// The key, as the cache's key string.
        key: String,
    },
    /// The answer to [`SupervisorMsg::Apply`] / [`SupervisorMsg::Action`].
    Applied {
        /// The request id being answered.
        id: u64,
        /// Error text when the worker refused it.
        error: Option<String>,
    },
}

/// Liveness and statistics reported every heartbeat interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Event-loop lag measured by the worker, milliseconds.
    pub loop_lag_ms: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests completed since the worker started.
    pub requests: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// p99 latency over the last minute, milliseconds.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Completed requests by status class since start.
    #[serde(default)]
    pub status: StatusCounts,
    /// Latency statistics since the previous heartbeat, in the observe module's serialized form.
    #[serde(default)]
    pub stats: Option<Value>,
    /// The worker's layer handles.
    #[serde(default)]
    pub components: Vec<ComponentSnapshot>,
    /// The worker's Prometheus text exposition (the supervisor serves them merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// A message from the supervisor to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMsg {
    /// Apply a settings patch to a layer handle, named by kind and name.
    Apply {
        /// Request id echoed in [`WorkerMsg::Applied`].
        id: u64,
        /// Component kind (a limit and a cache may share a name).
        kind: ComponentKind,
        /// Component name.
        name: String,
        /// JSON merge-patch of the settings.
        patch: Value,
    },
    /// Run an operator action on a layer handle, named by kind and name.
    Action {
        /// Request id echoed in [`WorkerMsg::Applied`].
        id: u64,
        /// Component kind.
        kind: ComponentKind,
        /// Component name.
        name: String,
        /// The action.
        action: String,
        /// Its arguments.
        args: Value,
    },
    /// Drop `key` from cache `cache` (another worker wrote it); answer [`WorkerMsg::Applied`].
    Invalidate {
        /// Request id echoed in [`WorkerMsg::Applied`].
        id: u64,
        /// The cache.
        cache: String,
        /// The key.
        key: String,
    },
    /// Every other worker has dropped the key of [`WorkerMsg::Invalidate`] `id`.
    Invalidated {
        /// The worker's request id.
        id: u64,
    },
    /// Stop accepting, finish in-flight requests within `timeout_ms`, then exit.
    Drain {
        /// Readiness is 503 for this long before accepting stops, milliseconds.
        delay_ms: u64,
        /// Deadline for in-flight requests, milliseconds.
        timeout_ms: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    msg: T,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the channel.
    #[error("control channel closed")]
    Closed,
    /// An I/O error.
    #[error("control channel I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A frame over [`MAX_FRAME`].
    #[error("control frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not a valid message.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("control protocol version {0} is not {PROTOCOL_VERSION}")]
    Version(u32),
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let payload = serde_json::to_vec(&Envelope {
        v: PROTOCOL_VERSION,
        msg,
    })
    .unwrap_or_default();
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&payload);
    frame
}

/// Decodes one frame's payload.
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, FrameError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let v = value
        .get("v")
        .and_then(Value::as_u64)
        .ok_or_else(|| FrameError::Malformed("missing protocol version".into()))?;
    if v != u64::from(PROTOCOL_VERSION) {
        return Err(FrameError::Version(u32::try_from(v).unwrap_or(u32::MAX)));
    }
    serde_json::from_value::<Envelope<T>>(value)
        .map(|e| e.msg)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Writes one message.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> std::io::Result<()> {
    w.write_all(&encode(msg)).await?;
    w.flush().await
}

/// Reads one message.
pub async fn read<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    decode(&payload)
}

/// A frame that is no valid message: a short length prefix and five bytes that are not JSON.
pub const MALFORMED_FRAME: &[u8] = b"\x00\x00\x00\x05hello";

/// Test hook (cargo feature `test-routes`, off by default): writes [`MALFORMED_FRAME`] on this
/// worker's control channel, as a buggy worker might. The supervisor must log it, replace the
/// worker and carry on. Served as `POST /debug/garbage-control`.
///
/// # Errors
/// When this process is not a worker (no control channel) or the write fails.
#[cfg(feature = "test-routes")]
pub fn send_malformed_frame() -> std::io::Result<()> {
    use std::os::fd::{BorrowedFd, RawFd};

    let raw: RawFd = std::env::var(crate::fd::CONTROL_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| std::io::Error::other("not a worker: no control channel"))?;
    #[allow(unsafe_code)]
    // SAFETY: the descriptor named by PALISADE_CONTROL_FD is this worker's end of the control
    // socketpair, owned by the channel tasks for the life of the process; it is only borrowed
    // for the fstat and the one write below, and checked to be a socket before writing.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let stat = nix::sys::stat::fstat(fd)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(std::io::Error::other(
            "the control descriptor is not a socket",
        ));
    }
    // One small write on a stream socket is not interleaved with the writer task's frames.
    let written = nix::unistd::write(fd, MALFORMED_FRAME)?;
    if written == MALFORMED_FRAME.len() {
        Ok(())
    } else {
        Err(std::io::Error::other("short write on the control channel"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let msg = WorkerMsg::Heartbeat(Heartbeat {
            loop_lag_ms: 1.5,
            in_flight: 2,
            requests: 3,
            ..Heartbeat::default()
        });
        write(&mut a, &msg).await.unwrap();
        write(&mut a, &WorkerMsg::Ready).await.unwrap();
        assert_eq!(read::<_, WorkerMsg>(&mut b).await.unwrap(), msg);
        assert_eq!(
            read::<_, WorkerMsg>(&mut b).await.unwrap(),
            WorkerMsg::Ready
        );
        drop(a);
        assert!(matches!(
            read::<_, WorkerMsg>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn the_test_hook_frame_is_malformed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, MALFORMED_FRAME)
            .await
            .unwrap();
        let err = read::<_, WorkerMsg>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[tokio::test]
    async fn malformed_frames_are_errors() {
        for (frame, want) in [
            (b"\x00\x00\x00\x03abc".to_vec(), "malformed"),
            (b"\xff\xff\xff\xff".to_vec(), "exceeds"),
            (b"\x00\x00\x00\x10{\"type\":\"ready\"}".to_vec(), "version"),
            (b"\x00\x00\x00\x11{\"v\":99,\"type\":1}".to_vec(), "version"),
        ] {
            let (mut a, mut b) = tokio::io::duplex(1024);
            tokio::io::AsyncWriteExt::write_all(&mut a, &frame)
                .await
                .unwrap();
            let err = read::<_, WorkerMsg>(&mut b).await.unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
