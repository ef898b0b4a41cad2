//! `RateLimit`, `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-09/10 structured
//! fields) and `Retry-After`.
//!
//! ```text
//! RateLimit-Policy: "api";q=100;w=1, "login";q=5;w=60
//! RateLimit: "api";r=42;t=1, "login";r=0;t=12
//! ```
//!
//! `q`/`w` state the policy's sustained quota (`rate` per `per`, `w` in whole seconds; a
//! sub-second or fractional period is scaled to a whole-second window). `r` is the number of
//! requests the key may send right now (the burst headroom, rounded down) and `t` the seconds
//! until one more becomes available, rounded up (omitted when the bucket is full). Shadow-mode
//! policies are never advertised.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::config::Limits;
use super::gcra::{Decision, ceil_secs};
use super::state::Current;

/// `ratelimit`
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `ratelimit-policy`
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The `RateLimit-Policy` item of a policy: `"name";q=Q;w=W`.
pub(crate) fn policy_item(name: &str, limits: &Limits) -> String {
    let (q, w) = quota_window(limits.rate, limits.per);
    format!("\"{name}\";q={q};w={w}")
}

/// `rate` per `per` expressed as an integer quota over a whole-second window.
fn quota_window(rate: u32, per: Duration) -> (u64, u64) {
    let w = ceil_secs(per).max(1);
    let per_ns = per.as_nanos().max(1);
    let q = u128::from(rate) * u128::from(w) * 1_000_000_000 / per_ns;
    (u64::try_from(q).unwrap_or(u64::MAX), w)
}

/// A small inline buffer for one structured-field list (no allocation until the header value is
/// made).
#[derive(Clone, Copy)]
pub(crate) struct ListBuf {
    buf: [u8; 240],
    len: usize,
}

impl ListBuf {
    const fn new() -> Self {
        Self {
            buf: [0; 240],
            len: 0,
        }
    }

    /// Appends one item (with the `, ` separator); an item that does not fit is dropped whole.
    /// Returns whether it was added.
    /// Appends one list item made of `parts` (after a `, ` when not the first); `false`, and
    /// nothing written, when it does not fit.
    fn push_parts(&mut self, parts: &[&[u8]]) -> bool {
        let sep: &[u8] = if self.len == 0 { b"" } else { b", " };
        let needed = sep.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        if self.len + needed > self.buf.len() {
            return false;
        }
        for part in std::iter::once(&sep).chain(parts) {
            self.buf[self.len..self.len + part.len()].copy_from_slice(part);
            self.len += part.len();
        }
        true
    }

    fn value(&self) -> Option<HeaderValue> {
        (self.len > 0)
            .then(|| HeaderValue::from_bytes(&self.buf[..self.len]).ok())
            .flatten()
    }
}

/// The `RateLimit` and `RateLimit-Policy` lists of one request.
#[derive(Clone)]
pub(crate) struct HeaderAcc {
    policy: ListBuf,
    limit: ListBuf,
    /// How many policies were added, and the first one's ready-made `RateLimit-Policy` value.
    count: usize,
    first_policy: Option<HeaderValue>,
}

impl std::fmt::Debug for HeaderAcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderAcc")
            .field(
                "policy",
                &String::from_utf8_lossy(&self.policy.buf[..self.policy.len]),
            )
            .field(
                "limit",
                &String::from_utf8_lossy(&self.limit.buf[..self.limit.len]),
            )
            .finish()
    }
}

impl HeaderAcc {
    pub(crate) const fn new() -> Self {
        Self {
            policy: ListBuf::new(),
            limit: ListBuf::new(),
            count: 0,
            first_policy: None,
        }
    }

    /// Adds one enforced policy's item and its current service limit.
    ///
    /// A policy is in both lists or in neither: when its item does not fit in one of them, it is
    /// left out of the other too, so a client can pair the lists item by item.
    pub(crate) fn push(&mut self, name: &str, current: &Current, d: &Decision) {
        let (policy_before, limit_before) = (self.policy.len, self.limit.len);
        let t = ceil_secs(d.reset_after);
        // Numbers with itoa and bytes copied: `write!` costs more than the limit check itself.
        let (mut r, mut ts) = (itoa::Buffer::new(), itoa::Buffer::new());
        let r = r.format(d.remaining).as_bytes();
        let limit: &[&[u8]] = if t > 0 {
            &[
                b"\"",
                name.as_bytes(),
                b"\";r=",
                r,
                b";t=",
                ts.format(t).as_bytes(),
            ]
        } else {
            &[b"\"", name.as_bytes(), b"\";r=", r]
        };
        let both = self.policy.push_parts(&[current.policy_item.as_bytes()])
            && self.limit.push_parts(limit);
        if !both {
            self.policy.len = policy_before;
            self.limit.len = limit_before;
            return;
        }
        if self.count == 0 {
            self.first_policy.clone_from(&current.policy_value);
        }
        self.count += 1;
    }

    /// The header values, if any policy was added.
    pub(crate) fn values(&self) -> Option<(HeaderValue, HeaderValue)> {
        let policy = match (&self.first_policy, self.count) {
            (Some(value), 1) => value.clone(),
            _ => self.policy.value()?,
        };
        Some((policy, self.limit.value()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::config::Mode;

    fn limits(rate: u32, per: Duration) -> Limits {
        Limits {
            rate,
            per,
            burst: 1,
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn policy_items_use_whole_second_windows() {
        assert_eq!(
            policy_item("api", &limits(100, Duration::from_secs(1))),
            "\"api\";q=100;w=1"
        );
        assert_eq!(
            policy_item("m", &limits(5, Duration::from_secs(60))),
            "\"m\";q=5;w=60"
        );
        assert_eq!(
            policy_item("f", &limits(10, Duration::from_millis(100))),
            "\"f\";q=100;w=1"
        );
        assert_eq!(
            policy_item("g", &limits(3, Duration::from_millis(1500))),
            "\"g\";q=4;w=2"
        );
    }

    #[test]
    fn lists_are_comma_separated_and_t_is_ceil_or_omitted() {
        let mut acc = HeaderAcc::new();
        let single = &Decision {
            allowed: true,
            remaining: 4,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_millis(100),
        };
        let mut one = HeaderAcc::new();
        one.push(
            "a",
            &Current::new("a", limits(10, Duration::from_secs(1))),
            single,
        );
        let (p, l) = one.values().unwrap();
        assert_eq!(p, "\"a\";q=10;w=1");
        assert_eq!(l, "\"a\";r=4;t=1");
        acc.push(
            "a",
            &Current::new("a", limits(10, Duration::from_secs(1))),
            &Decision {
                allowed: true,
                remaining: 4,
                retry_after: Duration::ZERO,
                reset_after: Duration::from_millis(100),
            },
        );
        acc.push(
            "b",
            &Current::new("b", limits(1, Duration::from_secs(60))),
            &Decision {
                allowed: true,
                remaining: 1,
                retry_after: Duration::ZERO,
                reset_after: Duration::ZERO,
            },
        );
        let (p, l) = acc.values().unwrap();
        assert_eq!(p, "\"a\";q=10;w=1, \"b\";q=1;w=60");
        assert_eq!(l, "\"a\";r=4;t=1, \"b\";r=1");
        assert!(HeaderAcc::new().values().is_none());
    }

    #[test]
    fn overflowing_items_are_dropped_whole() {
        let mut acc = HeaderAcc::new();
        let d = Decision {
            allowed: true,
            remaining: 1,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
        };
        let name = "x".repeat(60);
        let current = Current::new(&name, limits(1, Duration::from_secs(1)));
        for _ in 0..10 {
            acc.push(&name, &current, &d);
        }
        let (p, _) = acc.values().unwrap();
        let p = p.to_str().unwrap();
        assert!(p.ends_with(";w=1"), "{p}");
        assert_eq!(p.matches(", ").count() + 1, p.matches(";q=1").count());
    }

    #[test]
    fn a_policy_is_in_both_lists_or_in_neither() {
        // Policy items are longer than limit items here, so the policy list fills first; with
        // other limits the limit list does. Either way the lists pair up item by item.
        for (rate, remaining) in [(4_000_000_000, 1), (1, 4_000_000_000)] {
            let mut acc = HeaderAcc::new();
            let d = Decision {
                allowed: true,
                remaining,
                retry_after: Duration::ZERO,
                reset_after: Duration::from_secs(7),
            };
            for i in 0..20 {
                let name = format!("policy-{i:02}");
                let current = Current::new(&name, limits(rate, Duration::from_secs(1)));
                acc.push(&name, &current, &d);
            }
            let (p, l) = acc.values().unwrap();
            let names = |v: &HeaderValue| -> Vec<String> {
                v.to_str()
                    .unwrap()
                    .split(", ")
                    .map(|item| item.split(';').next().unwrap().to_owned())
                    .collect()
            };
            assert!(names(&p).len() < 20, "the lists overflowed: {p:?}");
            assert_eq!(names(&p), names(&l), "{p:?} / {l:?}");
        }
    }
}
