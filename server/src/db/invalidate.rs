//! Cache invalidation across workers without Redis: a worker that wrote a user tells the
//! supervisor ([`WorkerMsg::Invalidate`]), which has every other worker drop the key from its L1
//! ([`SupervisorMsg::Invalidate`](crate::channel::SupervisorMsg::Invalidate)) and answers once
//! all have ([`SupervisorMsg::Invalidated`](crate::channel::SupervisorMsg::Invalidated)). The
//! writing request waits for that answer (up to [`ACK_TIMEOUT`]), so a client that reads after
//! its write returned sees the write on every worker. With a Redis L2 the cache's own pub/sub
//! backplane does this instead.
//!
//! Should an answer not come in time (a worker stuck or restarting), the write still succeeds
//! and the L1 TTL (`cache.users.l1_ttl_ms`) bounds how long another worker may serve the old
//! copy.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::channel::WorkerMsg;

/// How long a write waits for the other workers to drop their copy.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// This worker's way to the supervisor, for invalidations (unset in a single process).
#[derive(Debug, Default)]
pub struct Peers {
    tx: OnceLock<mpsc::Sender<WorkerMsg>>,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl Peers {
    /// Connects to the supervisor's control channel (once; later calls are ignored).
    pub fn connect(&self, tx: mpsc::Sender<WorkerMsg>) {
        let _ = self.tx.set(tx);
    }

    /// Whether invalidations reach other workers through the supervisor.
    pub fn is_connected(&self) -> bool {
        self.tx.get().is_some()
    }

    /// Has every other worker drop `key` from cache `cache`, waiting (up to [`ACK_TIMEOUT`])
    /// until they have. Returns whether all confirmed; a single process returns `true` at once.
    pub async fn invalidate(&self, cache: &str, key: String) -> bool {
        let Some(tx) = self.tx.get() else {
            return true;
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, wait) = oneshot::channel();
        self.waiting.lock().insert(id, done);
        let msg = WorkerMsg::Invalidate {
            id,
            cache: cache.to_owned(),
            key,
        };
        let confirmed = tx.send(msg).await.is_ok()
            && matches!(tokio::time::timeout(ACK_TIMEOUT, wait).await, Ok(Ok(())));
        self.waiting.lock().remove(&id);
        if !confirmed {
            tracing::warn!(
                cache,
                "other workers did not confirm an invalidation in time"
            );
        }
        confirmed
    }

    /// The supervisor confirmed invalidation `id`.
    pub fn confirmed(&self, id: u64) {
        if let Some(done) = self.waiting.lock().remove(&id) {
            let _ = done.send(());
        }
    }
}
