//! The L2 wire format: a fixed, checksummed envelope around a serialized value.
//!
//! ```text
//! offset size field
//!      0    4 magic           b"PLSC"
//!      4    1 version         1
//!      5    1 codec id        which ValueCodec wrote the payload (0 = JSON)
//!      6    1 flags           bit 0: negative entry ("not found"), no payload
//!      7    1 reserved        0
//!      8    8 created_ms      unix milliseconds when the value was stored (big endian)
//!     16    8 fresh_until_ms  unix milliseconds until which the value is fresh
//!     24    8 stale_until_ms  unix milliseconds until which it may be served stale
//!     32    4 payload length  (big endian)
//!     36    4 crc32           CRC-32 (IEEE) of bytes 0..36 and the payload
//!     40    … payload
//! ```
//!
//! [`decode`] checks size, magic, version, length bound and checksum before looking at the
//! payload, so bytes written by another program, an older or newer deployment, a truncated
//! write or bit rot are reported as a [`DecodeError`], never a panic. The checksum detects
//! accidents, not tampering: do not share the Redis instance with untrusted writers.
//!
//! ```
//! use palisade::cache::codec::{self, EnvelopeMeta, DecodeError};
//! let meta = EnvelopeMeta { codec: 0, negative: false, created_ms: 1, fresh_until_ms: 2, stale_until_ms: 3 };
//! let mut buf = Vec::new();
//! codec::encode(&meta, &mut buf, |out| { out.extend_from_slice(b"\"hi\""); Ok(()) }).unwrap();
//! let env = codec::decode(&buf, 1024).unwrap();
//! assert_eq!((env.meta, env.payload), (meta, &b"\"hi\""[..]));
//! let last = buf.len() - 1;
//! buf[last] ^= 1; // flip a payload bit
//! assert!(matches!(codec::decode(&buf, 1024), Err(DecodeError::Checksum { .. })));
//! assert!(matches!(codec::decode(b"hello", 1024), Err(DecodeError::TooShort { .. })));
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A boxed error, as loaders and codecs return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The first four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"PLSC";
/// The envelope layout version this build reads and writes.
pub const VERSION: u8 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 40;
/// Codec id of [`JsonCodec`].
pub const CODEC_JSON: u8 = 0;

const FLAG_NEGATIVE: u8 = 1;

/// The envelope fields other than the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeMeta {
    /// Id of the codec that wrote the payload.
    pub codec: u8,
    /// A negative entry ("not found"); its payload is empty.
    pub negative: bool,
    /// Unix milliseconds when the value was stored.
    pub created_ms: u64,
    /// Unix milliseconds until which the value is fresh.
    pub fresh_until_ms: u64,
    /// Unix milliseconds until which the value may be served stale.
    pub stale_until_ms: u64,
}

/// A decoded envelope borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Header fields.
    pub meta: EnvelopeMeta,
    /// The serialized value.
    pub payload: &'a [u8],
}

/// Why bytes read from L2 were refused. Every variant is treated as a miss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the header.
    #[error("entry is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// Not written by Palisade.
    #[error("entry does not start with the palisade magic")]
    BadMagic,
    /// Written by a build with another envelope layout.
    #[error("entry has envelope version {0}, this build reads version {VERSION}")]
    Version(u8),
    /// Declared or actual size above the configured limit.
    #[error("entry payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The declared payload length does not match the bytes present (truncated or padded).
    #[error("entry declares {declared} payload bytes but has {actual}")]
    Length {
        /// Declared length.
        declared: usize,
        /// Bytes present after the header.
        actual: usize,
    },
    /// The checksum does not match (corruption).
    #[error("entry checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
    /// Written with another codec than this cache uses.
    #[error("entry was written with codec {found}, this cache uses codec {expected}")]
    Codec {
        /// Codec id in the entry.
        found: u8,
        /// Codec id of this cache.
        expected: u8,
    },
    /// The payload did not deserialize.
    #[error("entry payload does not deserialize: {0}")]
    Payload(String),
}

impl DecodeError {
    /// A short label for metrics (`reason` label of `palisade_cache_corrupt_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::BadMagic => "magic",
            Self::Version(_) => "version",
            Self::TooLarge { .. } => "too_large",
            Self::Length { .. } => "length",
            Self::Checksum { .. } => "checksum",
            Self::Codec { .. } => "codec",
            Self::Payload(_) => "payload",
        }
    }
}

fn crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(payload);
    h.finalize()
}

/// Appends an envelope to `out`: the header, then whatever `payload` writes, then fixes up the
/// length and checksum. Fails if `payload` fails or writes more than 4 GiB.
pub fn encode(
    meta: &EnvelopeMeta,
    out: &mut Vec<u8>,
    payload: impl FnOnce(&mut Vec<u8>) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(meta.codec);
    out.push(if meta.negative { FLAG_NEGATIVE } else { 0 });
    out.push(0);
    out.extend_from_slice(&meta.created_ms.to_be_bytes());
    out.extend_from_slice(&meta.fresh_until_ms.to_be_bytes());
    out.extend_from_slice(&meta.stale_until_ms.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    if !meta.negative {
        payload(out)?;
    }
    let len = out.len() - start - HEADER_LEN;
    let len32 = u32::try_from(len).map_err(|_| "payload larger than 4 GiB")?;
    out[start + 32..start + 36].copy_from_slice(&len32.to_be_bytes());
    let sum = crc(&out[start..start + 36], &out[start + HEADER_LEN..]);
    out[start + 36..start + 40].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Validates an envelope and returns its fields; `max_payload` bounds the payload size.
pub fn decode(bytes: &[u8], max_payload: usize) -> Result<Envelope<'_>, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if header[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if header[4] != VERSION {
        return Err(DecodeError::Version(header[4]));
    }
    let declared = be_u32(&header[32..36]) as usize;
    if declared > max_payload {
        return Err(DecodeError::TooLarge {
            len: declared,
            max: max_payload,
        });
    }
    if declared != payload.len() {
        return Err(DecodeError::Length {
            declared,
            actual: payload.len(),
        });
    }
    let stored = be_u32(&header[36..40]);
    let computed = crc(&header[..36], payload);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let negative = header[6] & FLAG_NEGATIVE != 0;
    if negative && !payload.is_empty() {
        return Err(DecodeError::Length {
            declared: 0,
            actual: payload.len(),
        });
    }
    Ok(Envelope {
        meta: EnvelopeMeta {
            codec: header[5],
            negative,
            created_ms: be_u64(&header[8..16]),
            fresh_until_ms: be_u64(&header[16..24]),
            stale_until_ms: be_u64(&header[24..32]),
        },
        payload,
    })
}

/// Serializes values of type `V` into L2 payloads.
///
/// [`JsonCodec`] serves any serde type; the HTTP response cache has its own codec that keeps
/// bodies as raw bytes. Implementations must not panic on any input.
pub trait ValueCodec<V>: Send + Sync + 'static {
    /// A stable id written into the envelope (0 is [`JsonCodec`]); entries written with another
    /// id are refused.
    fn id(&self) -> u8;
    /// Appends the serialized value.
    fn encode(&self, value: &V, out: &mut Vec<u8>) -> Result<(), BoxError>;
    /// Deserializes a payload.
    fn decode(&self, payload: &[u8]) -> Result<V, BoxError>;
}

/// JSON payloads through serde: tolerant to added fields, readable with `redis-cli`.
pub struct JsonCodec<V>(PhantomData<fn() -> V>);

impl<V> JsonCodec<V> {
    /// The codec.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<V> Default for JsonCodec<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Clone for JsonCodec<V> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for JsonCodec<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonCodec")
    }
}

impl<V> ValueCodec<V> for JsonCodec<V>
where
    V: Serialize + DeserializeOwned + 'static,
{
    fn id(&self) -> u8 {
        CODEC_JSON
    }

    fn encode(&self, value: &V, out: &mut Vec<u8>) -> Result<(), BoxError> {
        serde_json::to_writer(out, value).map_err(Into::into)
    }

    fn decode(&self, payload: &[u8]) -> Result<V, BoxError> {
        serde_json::from_slice(payload).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let meta = EnvelopeMeta {
            codec: 0,
            negative: false,
            created_ms: 10,
            fresh_until_ms: 20,
            stale_until_ms: 30,
        };
        let mut buf = Vec::new();
        encode(&meta, &mut buf, |o| {
            o.extend_from_slice(b"{\"a\":1}");
            Ok(())
        })
        .unwrap();
        buf
    }

    #[test]
    fn round_trips() {
        let buf = sample();
        let env = decode(&buf, 100).unwrap();
        assert_eq!(env.payload, b"{\"a\":1}");
        assert_eq!(env.meta.stale_until_ms, 30);
    }

    #[test]
    fn refuses_truncated_foreign_and_oversized() {
        let buf = sample();
        assert_eq!(
            decode(&buf[..buf.len() - 1], 100).unwrap_err().reason(),
            "length"
        );
        let mut padded = buf.clone();
        padded.push(0);
        assert_eq!(decode(&padded, 100).unwrap_err().reason(), "length");
        assert_eq!(decode(b"{\"a\":1}", 100).unwrap_err().reason(), "too_short");
        let mut foreign = buf.clone();
        foreign[0] = b'X';
        assert_eq!(decode(&foreign, 100).unwrap_err().reason(), "magic");
        let mut newer = buf.clone();
        newer[4] = 2;
        assert_eq!(decode(&newer, 100).unwrap_err().reason(), "version");
        assert_eq!(decode(&buf, 3).unwrap_err().reason(), "too_large");
        let mut flipped = buf;
        flipped[20] ^= 0x40;
        assert_eq!(decode(&flipped, 100).unwrap_err().reason(), "checksum");
    }

    #[test]
    fn negative_entries_have_no_payload() {
        let meta = EnvelopeMeta {
            codec: 0,
            negative: true,
            created_ms: 1,
            fresh_until_ms: 2,
            stale_until_ms: 3,
        };
        let mut buf = Vec::new();
        encode(&meta, &mut buf, |o| {
            o.push(1);
            Ok(())
        })
        .unwrap();
        assert_eq!(buf.len(), HEADER_LEN);
        assert!(decode(&buf, 10).unwrap().meta.negative);
    }

    #[test]
    fn json_codec_reports_bad_payloads() {
        let c = JsonCodec::<Vec<u32>>::new();
        let mut out = Vec::new();
        c.encode(&vec![1, 2], &mut out).unwrap();
        assert_eq!(c.decode(&out).unwrap(), vec![1, 2]);
        assert!(c.decode(b"{").is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes, 64);
        }

        #[test]
        fn any_single_bit_flip_is_detected(pos in 0usize..47, bit in 0u8..8) {
            let mut buf = sample();
            prop_assume!(pos < buf.len());
            buf[pos] ^= 1 << bit;
            prop_assert!(decode(&buf, 100).is_err());
        }
    }
}
