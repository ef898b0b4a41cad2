//! [`AuditLog`]: a bounded, in-memory record of admin changes.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::control::model::AuditEntry;

/// The most recent admin changes, oldest dropped first. Every entry is also emitted as a
/// `tracing` event (target `palisade::admin::audit`, level `info`).
///
/// ```
/// use palisade::admin::AuditLog;
/// use palisade::control::model::AuditEntry;
///
/// let log = AuditLog::new(2);
/// for action in ["scale", "restart", "drain"] {
///     log.record(AuditEntry { actor: "ops".into(), action: action.into(), ..Default::default() });
/// }
/// let entries = log.recent(10);
/// assert_eq!(entries.len(), 2);
/// assert_eq!((entries[0].seq, entries[1].seq), (2, 3));
/// assert_eq!(log.since(2, 10)[0].action, "drain");
/// ```
#[derive(Debug)]
pub struct AuditLog {
    capacity: usize,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    entries: VecDeque<AuditEntry>,
    last_seq: u64,
}

impl AuditLog {
    /// A log keeping at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            ring: Mutex::new(Ring {
                entries: VecDeque::with_capacity(capacity.min(1024)),
                last_seq: 0,
            }),
        }
    }

    /// Appends an entry, assigning its `seq` and, when zero, its time; returns it as stored.
    pub fn record(&self, mut entry: AuditEntry) -> AuditEntry {
        if entry.at_ms == 0 {
            entry.at_ms = now_ms();
        }
        {
            let mut ring = self.ring.lock();
            ring.last_seq += 1;
            entry.seq = ring.last_seq;
            if ring.entries.len() == self.capacity {
                ring.entries.pop_front();
            }
            ring.entries.push_back(entry.clone());
        }
        tracing::info!(
            target: "palisade::admin::audit",
            seq = entry.seq,
            actor = %entry.actor,
            action = %entry.action,
            target_name = %entry.target,
            before = %entry.before,
            after = %entry.after,
            details = %entry.details,
            "admin change"
        );
        entry
    }

    /// The last `n` entries, oldest first.
    pub fn recent(&self, n: usize) -> Vec<AuditEntry> {
        let ring = self.ring.lock();
        let skip = ring.entries.len().saturating_sub(n);
        ring.entries.iter().skip(skip).cloned().collect()
    }

    /// Up to `limit` entries with `seq` greater than `after`, oldest first.
    pub fn since(&self, after: u64, limit: usize) -> Vec<AuditEntry> {
        let ring = self.ring.lock();
        ring.entries
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The largest `seq` assigned so far (0 before the first entry).
    pub fn last_seq(&self) -> u64 {
        self.ring.lock().last_seq
    }

    /// Most entries kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Milliseconds since the Unix epoch (wall clock).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
