//! Lock-free sliding windows of call outcomes for the closed state.
//!
//! * [`CountWindow`]: a ring of `size` outcome bytes. A writer takes a slot with `fetch_add` on a
//!   sequence number, `swap`s its outcome in and adjusts one packed totals word by the difference
//!   to the outcome it replaced. The totals are exact once writers are done; a reader racing a
//!   writer may see a call a moment early or late. A steady stream of successes over successes
//!   writes only the slot (the totals do not change).
//! * [`TimeWindow`]: `n` buckets of `window / n` each (`n = clamp(window_secs, 10, 60)`), with
//!   atomic counters. Recording is `fetch_add` on the current bucket; moving a bucket to a new
//!   period (once per bucket width) takes a small mutex. A window of `w` seconds counts the
//!   calls of the last `w - w/n` to `w` seconds (the current bucket is partial).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::config::WindowKind;

/// Outcome bits of one call: present, failed, slow.
pub(crate) const CALL: u8 = 1;
pub(crate) const FAILED: u8 = 2;
pub(crate) const SLOW: u8 = 4;

/// Totals of a window at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Counts {
    /// Failure rate in percent, if there is any call.
    pub(crate) fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.failures as f64 * 100.0 / self.calls as f64)
    }

    /// Slow-call rate in percent, if there is any call.
    pub(crate) fn slow_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.slow as f64 * 100.0 / self.calls as f64)
    }
}

pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, size) = self.spec();
        f.debug_struct("Window")
            .field("kind", &kind)
            .field("size", &size)
            .finish_non_exhaustive()
    }
}

impl Window {
    pub(crate) fn new(kind: WindowKind, size: u32) -> Self {
        match kind {
            WindowKind::Count => Self::Count(CountWindow::new(size)),
            WindowKind::Time => Self::Time(TimeWindow::new(size)),
        }
    }

    pub(crate) fn spec(&self) -> (WindowKind, u32) {
        match self {
            Self::Count(w) => (WindowKind::Count, w.slots.len() as u32),
            Self::Time(w) => (WindowKind::Time, w.secs),
        }
    }

    /// Records one outcome at `now` (nanoseconds, only used by time windows). Returns the
    /// totals after the write when the outcome was a failure or slow (only those can trip the
    /// breaker), `None` otherwise.
    #[inline]
    pub(crate) fn record(&self, now: u64, bits: u8) -> Option<Counts> {
        match self {
            Self::Count(w) => w.record(bits),
            Self::Time(w) => w.record(now, bits),
        }
    }

    pub(crate) fn counts(&self, now: u64) -> Counts {
        match self {
            Self::Count(w) => w.counts(),
            Self::Time(w) => w.counts(now),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Self::Count(w) => w.clear(),
            Self::Time(w) => w.clear(),
        }
    }
}

const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
/// Each packed field carries this bias so that a transiently negative field (a writer that
/// subtracts an outcome before the writer that stored it has added it) never borrows from the
/// next field. Window sizes are capped far below it.
const BIAS: u64 = 1 << 19;
const TOTALS_ZERO: u64 = BIAS | (BIAS << FIELD_BITS) | (BIAS << (2 * FIELD_BITS));

#[inline]
fn packed(bits: u8) -> u64 {
    u64::from(bits & CALL)
        | (u64::from((bits & FAILED) >> 1) << FIELD_BITS)
        | (u64::from((bits & SLOW) >> 2) << (2 * FIELD_BITS))
}

fn field(totals: u64, i: u32) -> u64 {
    ((totals >> (i * FIELD_BITS)) & FIELD_MASK).saturating_sub(BIAS)
}

fn decode(totals: u64) -> Counts {
    let calls = field(totals, 0);
    Counts {
        calls,
        failures: field(totals, 1).min(calls),
        slow: field(totals, 2).min(calls),
    }
}

pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    seq: AtomicU32,
    totals: AtomicU64,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        let size = size.max(1);
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            seq: AtomicU32::new(0),
            totals: AtomicU64::new(TOTALS_ZERO),
        }
    }

    #[inline]
    fn record(&self, bits: u8) -> Option<Counts> {
        let len = self.slots.len() as u32;
        let i = self.seq.fetch_add(1, Ordering::Relaxed) % len;
        let slot = &self.slots[i as usize];
        let evaluate = bits & (FAILED | SLOW) != 0;
        // The same outcome over the same outcome (the steady state) changes nothing: skip the
        // write. Otherwise `swap` returns exactly what is replaced, keeping totals exact.
        let same = slot.load(Ordering::Acquire) == bits;
        let old = if same {
            bits
        } else {
            slot.swap(bits, Ordering::AcqRel)
        };
        if old != bits {
            let delta = packed(bits).wrapping_sub(packed(old));
            let after = self
                .totals
                .fetch_add(delta, Ordering::AcqRel)
                .wrapping_add(delta);
            return evaluate.then(|| decode(after));
        }
        evaluate.then(|| decode(self.totals.load(Ordering::Acquire)))
    }

    fn counts(&self) -> Counts {
        decode(self.totals.load(Ordering::Acquire))
    }

    fn clear(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        self.totals.store(TOTALS_ZERO, Ordering::Release);
    }
}

struct Bucket {
    /// The bucket's period number plus one; 0 = never used.
    period: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

pub(crate) struct TimeWindow {
    secs: u32,
    width: u64,
    buckets: Box<[Bucket]>,
    roll: Mutex<()>,
}

impl TimeWindow {
    fn new(secs: u32) -> Self {
        let secs = secs.max(1);
        let n = secs.clamp(10, 60);
        Self {
            secs,
            width: u64::from(secs) * 1_000_000_000 / u64::from(n),
            buckets: (0..n)
                .map(|_| Bucket {
                    period: AtomicU64::new(0),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    slow: AtomicU64::new(0),
                })
                .collect(),
            roll: Mutex::new(()),
        }
    }

    #[inline]
    fn record(&self, now: u64, bits: u8) -> Option<Counts> {
        let period = now / self.width + 1;
        let bucket = &self.buckets[(period % self.buckets.len() as u64) as usize];
        if bucket.period.load(Ordering::Acquire) != period {
            self.roll(bucket, period);
        }
        bucket.calls.fetch_add(1, Ordering::AcqRel);
        if bits & FAILED != 0 {
            bucket.failures.fetch_add(1, Ordering::AcqRel);
        }
        if bits & SLOW != 0 {
            bucket.slow.fetch_add(1, Ordering::AcqRel);
        }
        (bits & (FAILED | SLOW) != 0).then(|| self.counts(now))
    }

    #[cold]
    fn roll(&self, bucket: &Bucket, period: u64) {
        let _guard = self.roll.lock();
        // A newer period already owns the bucket when this writer was delayed by a whole
        // window: its call then counts in the newer period.
        if bucket.period.load(Ordering::Acquire) < period {
            bucket.calls.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
            bucket.slow.store(0, Ordering::Relaxed);
            bucket.period.store(period, Ordering::Release);
        }
    }

    fn counts(&self, now: u64) -> Counts {
        let current = now / self.width + 1;
        let n = self.buckets.len() as u64;
        let mut c = Counts::default();
        for b in self.buckets.iter() {
            let p = b.period.load(Ordering::Acquire);
            if p != 0 && p <= current && p + n > current {
                c.calls += b.calls.load(Ordering::Acquire);
                c.failures += b.failures.load(Ordering::Acquire);
                c.slow += b.slow.load(Ordering::Acquire);
            }
        }
        c.failures = c.failures.min(c.calls);
        c.slow = c.slow.min(c.calls);
        c
    }

    fn clear(&self) {
        let _guard = self.roll.lock();
        for b in self.buckets.iter() {
            b.period.store(0, Ordering::Release);
            b.calls.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
            b.slow.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_only_the_last_n_outcomes() {
        let w = Window::new(WindowKind::Count, 4);
        for _ in 0..4 {
            assert_eq!(w.record(0, CALL), None);
        }
        let c = w.record(0, CALL | FAILED).unwrap();
        assert_eq!((c.calls, c.failures), (4, 1));
        for _ in 0..3 {
            w.record(0, CALL | FAILED);
        }
        assert_eq!(w.counts(0).failures, 4);
        // A success replaces the oldest failure.
        w.record(0, CALL);
        assert_eq!(
            w.counts(0),
            Counts {
                calls: 4,
                failures: 3,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.counts(0), Counts::default());
    }

    #[test]
    fn count_window_totals_never_borrow_between_fields() {
        let w = CountWindow::new(2);
        // Simulate a writer subtracting an outcome before its producer added it.
        let delta = 0u64.wrapping_sub(packed(CALL | FAILED));
        w.totals.fetch_add(delta, Ordering::AcqRel);
        assert_eq!(w.counts(), Counts::default());
        w.totals.fetch_add(packed(CALL | FAILED), Ordering::AcqRel);
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn time_window_expires_old_buckets() {
        let w = Window::new(WindowKind::Time, 10); // 10 buckets of 1 s
        let sec = 1_000_000_000;
        w.record(0, CALL | FAILED);
        w.record(5 * sec, CALL | SLOW);
        assert_eq!(
            w.counts(5 * sec),
            Counts {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.counts(9 * sec + sec / 2).calls, 2);
        // Bucket 0 (period [0, 1 s)) leaves the window at 10 s.
        assert_eq!(
            w.counts(10 * sec),
            Counts {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        // Reusing the slot of period 0 resets it.
        w.record(10 * sec, CALL);
        assert_eq!(w.counts(10 * sec).calls, 2);
        assert_eq!(w.counts(16 * sec).calls, 1);
    }
}
