//! [`LatencyHistogram`]: latencies as an HDR histogram that serializes compactly and merges
//! exactly. Request latency (`observe`) and component statistics (a cache's loader latency)
//! use it, so a supervisor adds its workers' histograms instead of guessing from percentiles.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};

use super::model::LatencyWindow;

/// The smallest latency the histograms tell apart: 1 µs.
pub const LATENCY_LOW_US: u64 = 1;
/// The largest latency recorded exactly: 60 s (larger ones count as 60 s).
pub const LATENCY_HIGH_US: u64 = 60_000_000;
/// Significant decimal digits kept by the histograms (0.1 % relative error).
pub const LATENCY_SIGFIG: u8 = 3;

/// Latencies in microseconds, as an HDR histogram (1 µs .. 60 s, 3 significant digits).
///
/// Serializes as the HdrHistogram V2 binary encoding (readable by other HdrHistogram ports):
/// base64 text in human-readable formats such as JSON, raw bytes otherwise. Histograms *add*
/// exactly, which is how workers' latencies are merged; percentiles are never averaged.
#[derive(Clone, PartialEq)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("max_us", &self.0.max())
            .finish()
    }
}

#[allow(clippy::expect_used, reason = "constant, valid histogram bounds")]
fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(LATENCY_LOW_US, LATENCY_HIGH_US, LATENCY_SIGFIG)
        .expect("1 µs .. 60 s with 3 significant digits is a valid histogram");
    // Merged histograms from other producers may have been configured wider.
    h.auto(true);
    h
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self(new_histogram())
    }

    /// Records one latency (saturating at 60 s).
    pub fn record(&mut self, latency: Duration) {
        self.record_us(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one latency in microseconds (saturating at 60 s).
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.min(LATENCY_HIGH_US));
    }

    /// Adds every sample of `other`.
    pub fn add(&mut self, other: &Self) -> Result<(), MergeError> {
        let (a, b) = (&self.0, &other.0);
        if a.low() == b.low() && a.sigfig() == b.sigfig() {
            // Same buckets: add only what `other` recorded. `Histogram::add` walks (or copies)
            // every one of the ≈ 18 000 counters; the recorded values of a second of requests
            // sit in a few hundred, all below the largest (the live statistics merge a shard
            // into four histograms every second, on a request's path).
            for v in b.iter_recorded() {
                self.0
                    .record_n(v.value_iterated_to(), v.count_at_value())
                    .map_err(|e| MergeError::Histogram(format!("{e:?}")))?;
            }
            return Ok(());
        }
        self.0
            .add(&other.0)
            .map_err(|e| MergeError::Histogram(format!("{e:?}")))
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The latency at quantile `q` (0.0 ..= 1.0); zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.value_at_quantile(q))
    }

    /// The largest sample; zero without samples.
    pub fn max(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.max())
    }

    /// Removes every sample.
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// The underlying histogram (values in microseconds).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }

    /// Percentiles over this histogram, labelled with `window_secs`.
    pub fn window(&self, window_secs: u64) -> LatencyWindow {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        LatencyWindow {
            window_secs,
            count: self.count(),
            p50_ms: ms(self.quantile(0.5)),
            p90_ms: ms(self.quantile(0.9)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max()),
        }
    }

    /// The V2 binary encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut out)
            .map_err(|e| CodecError(format!("{e:?}")))?;
        Ok(out)
    }

    /// Reads the V2 (or V2 + DEFLATE) binary encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| CodecError(format!("{e:?}")))?;
        h.auto(true);
        Ok(Self(h))
    }
}

/// A histogram that could not be encoded or decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("latency histogram codec: {0}")]
pub struct CodecError(String);

/// Two snapshots that cannot be merged.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// Statistics snapshots of different format versions.
    #[error("stats snapshot version {theirs} cannot be merged into version {ours}")]
    Version {
        /// This snapshot's version.
        ours: u32,
        /// The other snapshot's version.
        theirs: u32,
    },
    /// The histograms do not fit together.
    #[error("latency histograms cannot be added: {0}")]
    Histogram(String),
}

impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.to_bytes().map_err(serde::ser::Error::custom)?;
        if serializer.is_human_readable() {
            serializer.serialize_str(&base64_encode(&bytes))
        } else {
            serializer.serialize_bytes(&bytes)
        }
    }
}

impl<'de> Deserialize<'de> for LatencyHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LatencyHistogram;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an HdrHistogram V2 encoding (base64 text or bytes)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let bytes = base64_decode(v).ok_or_else(|| E::custom("invalid base64"))?;
                LatencyHistogram::from_bytes(&bytes).map_err(E::custom)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                LatencyHistogram::from_bytes(v).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                LatencyHistogram::from_bytes(&bytes).map_err(de::Error::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(V)
        } else {
            deserializer.deserialize_bytes(V)
        }
    }
}

// === base64 (standard alphabet, padded) ===

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (ci, chunk) in text.chunks(4).enumerate() {
        let last = ci == text.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if last && i >= 2 => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            if pad > 0 && c != b'=' {
                return None;
            }
            n = n << 6 | u32::from(v);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_recorded_values_equals_adding_every_counter() {
        let mut rng = fastrand::Rng::with_seed(24);
        let mut into = LatencyHistogram::new();
        let mut expected = new_histogram();
        for round in 0..5 {
            let mut from = LatencyHistogram::new();
            for _ in 0..2_000 {
                // Mostly sub-millisecond, a tail up to the upper bound.
                let us = match rng.u8(..100) {
                    0..=89 => rng.u64(1..2_000),
                    90..=98 => rng.u64(2_000..500_000),
                    _ => rng.u64(500_000..=LATENCY_HIGH_US),
                };
                from.record_us(us);
            }
            into.add(&from).unwrap();
            expected.add(&from.0).unwrap();
            assert_eq!(into.0.len(), expected.len(), "round {round}");
            assert_eq!(into.0.max(), expected.max());
            assert_eq!(into.0.min_nz(), expected.min_nz());
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(into.0.value_at_quantile(q), expected.value_at_quantile(q));
            }
            for v in expected.iter_recorded() {
                assert_eq!(
                    into.0.count_at(v.value_iterated_to()),
                    v.count_at_value(),
                    "bucket of {}",
                    v.value_iterated_to()
                );
            }
        }
        // An empty histogram adds nothing.
        let before = into.0.len();
        into.add(&LatencyHistogram::new()).unwrap();
        assert_eq!(into.0.len(), before);
    }
}
