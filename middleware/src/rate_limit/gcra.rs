//! The GCRA math, shared by every store.
//!
//! With `rate` cells per `per` and a burst of `burst` cells: the emission interval is
//! `T = per / rate` and the capacity is `burst × T`. A key's only state is its theoretical arrival
//! time (TAT). A request of cost `n` at `now` conforms iff `max(TAT, now) + n×T - now <= burst × T`;
//! on success the TAT becomes `max(TAT, now) + n×T`. A TAT at or before `now` is a full bucket,
//! the same as a key never seen.

use std::time::Duration;

/// GCRA parameters derived from a validated quota (see [`Limits`](super::Limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    emission_ns: u64,
    burst: u32,
    capacity_ns: u64,
    /// `floor(2^64 / emission_ns)`: divides by a multiplication on the hot path.
    inverse: u64,
}

fn inverse(emission_ns: u64) -> u64 {
    u64::try_from((1u128 << 64) / u128::from(emission_ns)).unwrap_or(u64::MAX)
}

impl Gcra {
    /// Parameters for `rate` cells per `per`, with a burst of `burst` cells.
    ///
    /// Values are clamped so the math cannot overflow or divide by zero (emission interval at
    /// least 1 ns, burst at least 1); [`Limits::validate`](super::Limits::validate) refuses the
    /// values that would need clamping, so a built layer never sees them.
    pub fn new(rate: u32, per: Duration, burst: u32) -> Self {
        let per_ns = u64::try_from(per.as_nanos()).unwrap_or(u64::MAX);
        let emission_ns = (per_ns / u64::from(rate.max(1))).max(1);
        let burst = burst.max(1);
        Self {
            emission_ns,
            burst,
            capacity_ns: emission_ns.saturating_mul(u64::from(burst)),
            inverse: inverse(emission_ns),
        }
    }

    /// Parameters from an emission interval and a burst (as stored in a shared-memory zone).
    #[cfg_attr(
        not(any(unix, feature = "redis")),
        allow(dead_code, reason = "used by the shared-memory and Redis stores")
    )]
    pub(crate) fn from_raw(emission_ns: u64, burst: u32) -> Self {
        let emission_ns = emission_ns.max(1);
        let burst = burst.max(1);
        Self {
            emission_ns,
            burst,
            capacity_ns: emission_ns.saturating_mul(u64::from(burst)),
            inverse: inverse(emission_ns),
        }
    }

    /// The emission interval `T = per / rate`.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_ns)
    }

    /// The emission interval in nanoseconds.
    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    /// The burst, in cells.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// `burst × T` in nanoseconds: how far ahead of `now` a TAT may be.
    pub fn capacity_ns(&self) -> u64 {
        self.capacity_ns
    }

    /// Decides a request of `cost` cells at `now` for a key whose TAT is `tat`.
    ///
    /// Returns the decision and, when allowed, the TAT to store.
    #[inline]
    pub fn decide(&self, tat: u64, now: u64, cost: u32) -> (Decision, Option<u64>) {
        let base = tat.max(now);
        let new_tat = base.saturating_add(self.emission_ns.saturating_mul(u64::from(cost)));
        let limit = now.saturating_add(self.capacity_ns);
        if new_tat <= limit {
            (self.allowed(new_tat - now), Some(new_tat))
        } else {
            (self.rejected(base - now, new_tat - limit), None)
        }
    }

    /// The TAT after returning `cost` cells taken earlier (a refund).
    pub fn refund(&self, tat: u64, cost: u32) -> u64 {
        tat.saturating_sub(self.emission_ns.saturating_mul(u64::from(cost)))
    }

    /// An allowed decision leaving `debt_ns` (= TAT - now) on the key.
    #[inline]
    pub fn allowed(&self, debt_ns: u64) -> Decision {
        let remaining = self.remaining(debt_ns);
        Decision {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_nanos(self.next_cell_ns(debt_ns, remaining)),
        }
    }

    /// A rejected decision for a key with `debt_ns` that conforms again after `wait_ns`.
    #[inline]
    pub fn rejected(&self, debt_ns: u64, wait_ns: u64) -> Decision {
        let remaining = self.remaining(debt_ns);
        let next = self.next_cell_ns(debt_ns, remaining);
        Decision {
            allowed: false,
            remaining,
            retry_after: Duration::from_nanos(wait_ns.max(1)),
            reset_after: Duration::from_nanos(next.max(wait_ns)),
        }
    }

    /// Whole cells a key with `debt_ns` may still take now (floor, so a client never reads
    /// "1 remaining" and then gets rejected).
    #[inline]
    fn remaining(&self, debt_ns: u64) -> u64 {
        self.div(self.capacity_ns.saturating_sub(debt_ns))
    }

    /// `x / emission_ns` without a division instruction (the estimate is low by at most one).
    #[inline]
    fn div(&self, x: u64) -> u64 {
        let q = ((u128::from(x) * u128::from(self.inverse)) >> 64) as u64;
        if x - q * self.emission_ns >= self.emission_ns {
            q + 1
        } else {
            q
        }
    }

    /// Time until one more cell becomes available (0 when the bucket is full).
    #[inline]
    fn next_cell_ns(&self, debt_ns: u64, remaining: u64) -> u64 {
        if remaining >= u64::from(self.burst) {
            return 0;
        }
        let threshold = self
            .capacity_ns
            .saturating_sub((remaining + 1).saturating_mul(self.emission_ns));
        debt_ns.saturating_sub(threshold)
    }
}

/// The outcome of one check against one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request conforms (and, for a consuming check, was counted).
    pub allowed: bool,
    /// Whole cells the key may still take right now.
    pub remaining: u64,
    /// How long until the request would conform; zero when allowed.
    pub retry_after: Duration,
    /// How long until one more cell becomes available (zero when the bucket is full).
    pub reset_after: Duration,
}

impl Decision {
    /// `Retry-After` in whole seconds: rounded up, never 0 (tower-governor#65, redis-cell#56).
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn fresh_key_takes_the_whole_burst_then_waits_one_interval() {
        let g = Gcra::new(10, Duration::from_secs(1), 5);
        let mut tat = 0;
        let now = 1000 * S;
        for expected_remaining in (0..5).rev() {
            let (d, new) = g.decide(tat, now, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = new.unwrap();
        }
        let (d, new) = g.decide(tat, now, 1);
        assert!(!d.allowed);
        assert!(new.is_none());
        assert_eq!(d.retry_after, Duration::from_millis(100));
        assert_eq!(d.retry_after_secs(), 1);
        // Exactly one interval later one cell conforms.
        let (d, _) = g.decide(tat, now + S / 10, 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn reset_after_is_time_to_next_cell() {
        let g = Gcra::new(1, Duration::from_secs(10), 3);
        let (d, tat) = g.decide(0, 100 * S, 1);
        assert_eq!(d.remaining, 2);
        assert_eq!(d.reset_after, Duration::from_secs(10));
        let (d, _) = g.decide(tat.unwrap(), 104 * S, 1);
        assert_eq!(d.remaining, 1);
        assert_eq!(d.reset_after, Duration::from_secs(6));
        let full = g.allowed(0);
        assert_eq!(full.remaining, 3);
        assert_eq!(full.reset_after, Duration::ZERO);
    }

    #[test]
    fn retry_after_secs_rounds_up_and_is_never_zero() {
        for (nanos, secs) in [
            (1, 1),
            (999_999_999, 1),
            (S, 1),
            (S + 1, 2),
            (2_500_000_000, 3),
        ] {
            let d = Decision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_nanos(nanos),
                reset_after: Duration::ZERO,
            };
            assert_eq!(d.retry_after_secs(), secs, "{nanos} ns");
        }
    }

    #[test]
    fn cost_above_burst_never_conforms() {
        let g = Gcra::new(10, Duration::from_secs(1), 2);
        let (d, new) = g.decide(0, S, 3);
        assert!(!d.allowed && new.is_none());
    }

    #[test]
    fn reciprocal_division_is_exact() {
        for t in [1u64, 2, 3, 7, 100, 999, 1_000_000_007, u64::MAX / 3] {
            let g = Gcra::from_raw(t, 1);
            for x in [
                0u64,
                1,
                t - 1,
                t,
                t + 1,
                12_345_678_901,
                u64::MAX - 1,
                u64::MAX,
            ] {
                assert_eq!(g.div(x), x / t, "{x} / {t}");
            }
        }
    }

    #[test]
    fn refund_restores_the_previous_position() {
        let g = Gcra::new(10, Duration::from_secs(1), 5);
        let (_, t1) = g.decide(0, S, 1);
        let (_, t2) = g.decide(t1.unwrap(), S, 1);
        assert_eq!(g.refund(t2.unwrap(), 1), t1.unwrap());
    }
}
