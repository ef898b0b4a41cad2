//! The bounded GCRA cell table shared by the local store (heap memory) and the shared-memory zone
//! (an mmap'd segment used by several processes).
//!
//! Layout: a fixed array of 128-byte [`Set`]s; a key hash selects one set; a set holds
//! [`WAYS`] cells of `(key hash, TAT)` and a small lock word. Memory never grows: when a set is
//! full, an insert evicts, in this order, a cell whose TAT is in the past (idle: indistinguishable
//! from a fresh key, governor's `retain_recent` rule) or else the cell with the oldest TAT (the key
//! closest to being idle, an approximate LRU as in nginx `limit_req_zone`).
//!
//! Concurrency: checks of a key that is already present are lock-free (a CAS loop on its TAT).
//! Inserting, evicting and purging take the set's lock word, so two threads or processes can never
//! create the same key twice. A lock word left behind by a process that died inside the few
//! instructions of the critical section is stolen after it stayed unchanged for a long spin.
//!
//! Precision: keys are identified by a 64-bit hash only (as nginx stores binary keys); two keys
//! colliding share a bucket (probability ~ n²/2⁶⁵ for n live keys). A key evicted while a
//! request of it is between its lookup and its CAS may have that one request counted against the
//! newcomer; both effects are bounded by one request and only happen under eviction pressure.

use std::sync::atomic::{AtomicU64, Ordering};

use super::gcra::{Decision, Gcra};

/// Cells per set: 7 × (8-byte hash + 8-byte TAT) + 8-byte lock = 120 bytes, padded to 128.
pub(crate) const WAYS: usize = 7;
/// A hash value marking a cell being rewritten under the set lock.
const RESERVED: u64 = u64::MAX;
/// Spins with an unchanged lock word after which its holder is presumed dead.
const STEAL_AFTER_SPINS: u32 = 1 << 20;

/// One set of cells. `#[repr(C)]` with atomics only, so it can live in shared memory.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Set {
    lock: AtomicU64,
    hashes: [AtomicU64; WAYS],
    tats: [AtomicU64; WAYS],
}

impl Set {
    pub(crate) const fn new() -> Self {
        Self {
            lock: AtomicU64::new(0),
            hashes: [const { AtomicU64::new(0) }; WAYS],
            tats: [const { AtomicU64::new(0) }; WAYS],
        }
    }
}

/// Table-wide counters. `#[repr(C)]` with atomics only, so it can live in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Occupied cells.
    pub(crate) keys: AtomicU64,
    /// Idle cells replaced by a new key.
    pub(crate) evicted_idle: AtomicU64,
    /// Active cells replaced by a new key because their set was full.
    pub(crate) evicted_pressure: AtomicU64,
    /// Idle cells freed by [`Table::purge_idle`].
    pub(crate) purged: AtomicU64,
}

/// What a check did to the table, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The key was present (or a rejected fresh key was not stored).
    None,
    /// The key took a free cell.
    Inserted,
    /// The key replaced an idle key.
    EvictedIdle,
    /// The key replaced an active key (set full).
    EvictedPressure,
}

/// A view over a set array and its counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table<'a> {
    sets: &'a [Set],
    counters: &'a Counters,
    /// Written into a set's lock word while held; distinct per process.
    token: u64,
}

/// Maps a hash to a value that is neither "empty" (0) nor [`RESERVED`].
#[inline]
fn normalize(hash: u64) -> u64 {
    match hash {
        0 | RESERVED => hash ^ 0x5bd1_e995_9e37_79b9,
        h => h,
    }
}

impl<'a> Table<'a> {
    pub(crate) fn new(sets: &'a [Set], counters: &'a Counters, token: u64) -> Self {
        debug_assert!(!sets.is_empty());
        Self {
            sets,
            counters,
            token: token.max(1),
        }
    }

    /// Total cells.
    pub(crate) fn capacity(&self) -> u64 {
        (self.sets.len() * WAYS) as u64
    }

    #[inline]
    fn set_of(&self, h: u64) -> &'a Set {
        // Lemire's multiply-shift range reduction: no power-of-two size needed.
        let idx = ((u128::from(h) * self.sets.len() as u128) >> 64) as usize;
        &self.sets[idx]
    }

    #[inline]
    fn find(set: &Set, h: u64) -> Option<usize> {
        set.hashes
            .iter()
            .position(|c| c.load(Ordering::Acquire) == h)
    }

    /// Checks and, when allowed, consumes `cost` cells for the key hashed to `hash`.
    #[inline]
    pub(crate) fn check(&self, hash: u64, now: u64, gcra: &Gcra, cost: u32) -> (Decision, Event) {
        let h = normalize(hash);
        let set = self.set_of(h);
        loop {
            if let Some(i) = Self::find(set, h) {
                if let Some(decision) = Self::update(set, i, h, |tat| gcra.decide(tat, now, cost)) {
                    return (decision, Event::None);
                }
                // The cell changed owner under us: look again.
                continue;
            }
            if let Some(result) = self.insert(set, h, now, gcra, cost) {
                return result;
            }
        }
    }

    /// The decision a check would make, without consuming anything.
    pub(crate) fn peek(&self, hash: u64, now: u64, gcra: &Gcra, cost: u32) -> Decision {
        let h = normalize(hash);
        let set = self.set_of(h);
        let tat = Self::find(set, h).map_or(0, |i| set.tats[i].load(Ordering::Acquire));
        gcra.decide(tat, now, cost).0
    }

    /// Returns `cost` cells taken earlier by an allowed check.
    pub(crate) fn refund(&self, hash: u64, gcra: &Gcra, cost: u32) {
        let h = normalize(hash);
        let set = self.set_of(h);
        if let Some(i) = Self::find(set, h) {
            // If the cell changed owner, the key was evicted and its debt is gone anyway.
            let _ = Self::update(set, i, h, |tat| ((), Some(gcra.refund(tat, cost))));
        }
    }

    /// The key's TAT, if present (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn tat(&self, hash: u64) -> Option<u64> {
        let h = normalize(hash);
        let set = self.set_of(h);
        Self::find(set, h).map(|i| set.tats[i].load(Ordering::Acquire))
    }

    /// CAS loop on cell `i` while it still belongs to `h`. `None` when it changed owner.
    #[inline]
    fn update<R>(
        set: &Set,
        i: usize,
        h: u64,
        mut f: impl FnMut(u64) -> (R, Option<u64>),
    ) -> Option<R> {
        let tat_cell = &set.tats[i];
        let mut tat = tat_cell.load(Ordering::Acquire);
        loop {
            // Checked after loading the TAT: a rewrite stores RESERVED before the new TAT, so a
            // TAT that belongs to a newcomer can never pass this check (Release/Acquire pairs).
            if set.hashes[i].load(Ordering::Acquire) != h {
                return None;
            }
            let (result, new) = f(tat);
            let Some(new) = new else {
                return Some(result);
            };
            match tat_cell.compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(result),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Inserts `h` under the set lock. `None` when another thread inserted it meanwhile.
    fn insert(
        &self,
        set: &Set,
        h: u64,
        now: u64,
        gcra: &Gcra,
        cost: u32,
    ) -> Option<(Decision, Event)> {
        let (decision, new_tat) = gcra.decide(0, now, cost);
        let Some(new_tat) = new_tat else {
            // A fresh key that does not conform (cost above burst) leaves no state.
            return Some((decision, Event::None));
        };
        let _guard = self.lock(set);
        if Self::find(set, h).is_some() {
            return None;
        }
        let mut slot = None;
        let mut oldest = (u64::MAX, 0);
        for i in 0..WAYS {
            if set.hashes[i].load(Ordering::Acquire) == 0 {
                slot = Some(i);
                break;
            }
            let tat = set.tats[i].load(Ordering::Acquire);
            if tat < oldest.0 {
                oldest = (tat, i);
            }
        }
        let event = match slot {
            Some(_) => {
                self.counters.keys.fetch_add(1, Ordering::Relaxed);
                Event::Inserted
            }
            None if oldest.0 <= now => {
                self.counters.evicted_idle.fetch_add(1, Ordering::Relaxed);
                Event::EvictedIdle
            }
            None => {
                self.counters
                    .evicted_pressure
                    .fetch_add(1, Ordering::Relaxed);
                Event::EvictedPressure
            }
        };
        let i = slot.unwrap_or(oldest.1);
        Self::rewrite(set, i, new_tat, h);
        Some((decision, event))
    }

    /// Rewrites cell `i` to `(hash, tat)`; the caller holds the set lock.
    fn rewrite(set: &Set, i: usize, tat: u64, hash: u64) {
        set.hashes[i].store(RESERVED, Ordering::Release);
        set.tats[i].store(tat, Ordering::Release);
        set.hashes[i].store(hash, Ordering::Release);
    }

    /// Re-expresses every key's debt (`TAT - now`) from `old` to `new` parameters: the number of
    /// cells a key has used is kept (debt × T'/T), capped at the new capacity, so a quota change
    /// neither refills nor locks out anyone. Returns how many keys carried debt.
    pub(crate) fn rescale(&self, now: u64, old: &Gcra, new: &Gcra) -> u64 {
        let mut rescaled = 0;
        for set in self.sets {
            for i in 0..WAYS {
                let h = set.hashes[i].load(Ordering::Acquire);
                if h == 0 || h == RESERVED {
                    continue;
                }
                let changed = Self::update(set, i, h, |tat| {
                    if tat <= now {
                        return (false, None);
                    }
                    let debt = u128::from(tat - now) * u128::from(new.emission_ns())
                        / u128::from(old.emission_ns());
                    let debt = debt.min(u128::from(new.capacity_ns())) as u64;
                    (true, Some(now + debt))
                });
                rescaled += u64::from(changed == Some(true));
            }
        }
        rescaled
    }

    /// Frees every cell whose TAT is at or before `now` (a full bucket carries no information).
    /// Returns how many were freed.
    pub(crate) fn purge_idle(&self, now: u64) -> u64 {
        let mut freed = 0;
        for set in self.sets {
            let has_idle = (0..WAYS).any(|i| {
                set.hashes[i].load(Ordering::Acquire) != 0
                    && set.tats[i].load(Ordering::Acquire) <= now
            });
            if !has_idle {
                continue;
            }
            let _guard = self.lock(set);
            for i in 0..WAYS {
                let hash = set.hashes[i].load(Ordering::Acquire);
                if hash != 0 && set.tats[i].load(Ordering::Acquire) <= now {
                    Self::rewrite(set, i, 0, 0);
                    freed += 1;
                }
            }
        }
        self.counters.keys.fetch_sub(freed, Ordering::Relaxed);
        self.counters.purged.fetch_add(freed, Ordering::Relaxed);
        freed
    }

    /// Frees every cell (an operator reset). Returns how many were occupied.
    pub(crate) fn clear(&self) -> u64 {
        let mut freed = 0;
        for set in self.sets {
            let _guard = self.lock(set);
            for i in 0..WAYS {
                if set.hashes[i].load(Ordering::Acquire) != 0 {
                    Self::rewrite(set, i, 0, 0);
                    freed += 1;
                }
            }
        }
        self.counters.keys.fetch_sub(freed, Ordering::Relaxed);
        freed
    }

    fn lock(&self, set: &'a Set) -> WordGuard<'a> {
        lock_word(&set.lock, self.token)
    }
}

/// Takes a spin lock word (0 = free; the holder writes its `token`). A word that stays unchanged
/// through a million spins belongs to a process that died in its critical section and is stolen.
pub(crate) fn lock_word(word: &AtomicU64, token: u64) -> WordGuard<'_> {
    let token = token.max(1);
    let mut spins = 0u32;
    let mut seen = word.load(Ordering::Relaxed);
    loop {
        if seen == 0 {
            match word.compare_exchange_weak(0, token, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return WordGuard { word },
                Err(actual) => {
                    seen = actual;
                    continue;
                }
            }
        }
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        let now_seen = word.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            spins = 0;
        } else if spins >= STEAL_AFTER_SPINS
            && word
                .compare_exchange(seen, token, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            // A half-written cell of the dead holder is either rewritten by our own critical
            // section or left RESERVED (never matched, evicted later).
            tracing::warn!(layer = "rate_limit", "stole a lock held by a dead process");
            return WordGuard { word };
        }
    }
}

/// Releases a lock word on drop.
pub(crate) struct WordGuard<'a> {
    word: &'a AtomicU64,
}

impl Drop for WordGuard<'_> {
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn table(sets: usize, counters: &'static Counters) -> Table<'static> {
        // Tests leak small arrays so the view can be 'static.
        let sets: &'static [Set] = Box::leak(
            (0..sets)
                .map(|_| Set::new())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        Table::new(sets, counters, 1)
    }

    fn counters() -> &'static Counters {
        Box::leak(Box::default())
    }

    #[test]
    fn set_is_128_bytes() {
        assert_eq!(std::mem::size_of::<Set>(), 128);
        assert_eq!(std::mem::align_of::<Set>(), 128);
    }

    #[test]
    fn burst_then_reject_per_key() {
        let c = counters();
        let t = table(2, c);
        let g = Gcra::new(1, Duration::from_secs(1), 3);
        let now = 10_000_000_000;
        for _ in 0..3 {
            assert!(t.check(42, now, &g, 1).0.allowed);
        }
        assert!(!t.check(42, now, &g, 1).0.allowed);
        assert!(
            t.check(43, now, &g, 1).0.allowed,
            "other keys are independent"
        );
        assert_eq!(c.keys.load(Ordering::Relaxed), 2);
        assert!(!t.peek(42, now, &g, 1).allowed);
        assert!(t.peek(42, now + 1_000_000_000, &g, 1).allowed);
    }

    #[test]
    fn full_set_evicts_idle_before_active() {
        let c = counters();
        let t = table(1, c);
        let g = Gcra::new(1, Duration::from_secs(1), 1);
        let now = 100_000_000_000;
        // Key 1 goes idle (its TAT is now + 1 s, and we look 2 s later); the others stay active.
        t.check(1, now, &g, 1);
        for k in 2..=WAYS as u64 {
            t.check(k, now + 2_000_000_000, &g, 1);
        }
        let later = now + 2_000_000_000;
        let (_, event) = t.check(100, later, &g, 1);
        assert_eq!(event, Event::EvictedIdle);
        assert!(t.tat(1).is_none(), "the idle key went first");
        for k in 2..=WAYS as u64 {
            assert!(t.tat(k).is_some());
        }
        let (_, event) = t.check(101, later, &g, 1);
        assert_eq!(event, Event::EvictedPressure);
        assert_eq!(c.keys.load(Ordering::Relaxed), WAYS as u64);
        assert_eq!(c.evicted_idle.load(Ordering::Relaxed), 1);
        assert_eq!(c.evicted_pressure.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn purge_frees_idle_cells_only() {
        let c = counters();
        let t = table(2, c);
        let g = Gcra::new(1, Duration::from_secs(1), 1);
        t.check(1, 0, &g, 1);
        t.check(2, 5_000_000_000, &g, 1);
        assert_eq!(t.purge_idle(3_000_000_000), 1);
        assert!(t.tat(1).is_none() && t.tat(2).is_some());
        assert_eq!(c.keys.load(Ordering::Relaxed), 1);
        assert_eq!(t.clear(), 1);
        assert_eq!(c.keys.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn rescale_keeps_used_cells_and_caps_at_the_new_burst() {
        let c = counters();
        let t = table(4, c);
        let s = 1_000_000_000;
        let old = Gcra::new(1, Duration::from_secs(1), 20);
        let now = 1000 * s;
        for _ in 0..10 {
            assert!(t.check(1, now, &old, 1).0.allowed);
        }
        for _ in 0..20 {
            t.check(2, now, &old, 1);
        }
        // Ten times the rate: key 1 still has 10 of 20 cells used, key 2 all 20.
        let new = Gcra::new(10, Duration::from_secs(1), 20);
        assert_eq!(t.rescale(now, &old, &new), 2);
        assert_eq!(t.tat(1), Some(now + s));
        assert_eq!(
            t.peek(1, now, &new, 1).remaining,
            9,
            "10 used + the peeked one"
        );
        assert_eq!(t.tat(2), Some(now + 2 * s));
        let d = t.peek(2, now, &new, 1);
        assert!(!d.allowed);
        assert_eq!(
            d.retry_after,
            Duration::from_millis(100),
            "one new interval, no lock-out"
        );
        // A burst of 5 caps key 1's debt at 5 cells.
        let small = Gcra::new(10, Duration::from_secs(1), 5);
        t.rescale(now, &new, &small);
        assert_eq!(t.tat(1), Some(now + s / 2));
    }

    #[test]
    fn hash_zero_and_reserved_are_usable_keys() {
        let c = counters();
        let t = table(1, c);
        let g = Gcra::new(1, Duration::from_secs(1), 1);
        assert!(t.check(0, 1, &g, 1).0.allowed);
        assert!(!t.check(0, 1, &g, 1).0.allowed);
        assert!(t.check(u64::MAX, 1, &g, 1).0.allowed);
        assert!(!t.check(u64::MAX, 1, &g, 1).0.allowed);
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_burst() {
        let c = counters();
        let t = table(64, c);
        let g = Gcra::new(1, Duration::from_secs(3600), 1000);
        let allowed = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..5000u64 {
                        // 10 keys, all threads racing to insert each of them.
                        let h = crate::rate_limit::key::hash_bytes(7, &(i % 10).to_le_bytes());
                        if t.check(h, 1_000, &g, 1).0.allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 10 * 1000);
        assert_eq!(c.keys.load(Ordering::Relaxed), 10);
    }
}
