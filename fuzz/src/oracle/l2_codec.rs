//! Properties of the L2 cache envelope (`palisade::cache::codec`).
//!
//! Shared by the `l2_codec` fuzz target (fuzz/src/lib.rs) and the proptests in
//! middleware/tests/proptest_parsers.rs, so both check exactly the same things.

use palisade::cache::codec::{
    self, DecodeError, Envelope, EnvelopeMeta, HEADER_LEN, JsonCodec, MAGIC, VERSION, ValueCodec,
};

/// Arbitrary bytes read from L2: `decode` never panics; an accepted entry is consistent with
/// its bytes and re-encodes to an entry that decodes to the same fields; a refusal names a
/// reason that is true of the bytes. The JSON payload codec never panics either.
pub(crate) fn check_decode(bytes: &[u8], max_payload: usize) {
    match codec::decode(bytes, max_payload) {
        Ok(env) => {
            assert!(
                bytes.len() >= HEADER_LEN,
                "accepted a {}-byte entry",
                bytes.len()
            );
            assert_eq!(bytes[..4], MAGIC);
            assert_eq!(bytes[4], VERSION);
            assert!(env.payload.len() <= max_payload);
            assert_eq!(env.payload, &bytes[HEADER_LEN..]);
            assert!(!env.meta.negative || env.payload.is_empty());
            let again = encode(&env.meta, env.payload, &[]);
            assert_eq!(codec::decode(&again, max_payload), Ok(env));
        }
        Err(e) => check_refusal(&e, bytes, max_payload),
    }
    let _ = JsonCodec::<serde_json::Value>::new().decode(bytes);
    let _ = JsonCodec::<Vec<u64>>::new().decode(bytes);
    let _ = JsonCodec::<(String, Option<f64>)>::new().decode(bytes);
}

fn check_refusal(e: &DecodeError, bytes: &[u8], max_payload: usize) {
    assert!(!e.reason().is_empty() && !e.to_string().is_empty());
    match *e {
        DecodeError::TooShort { len } => {
            assert_eq!(len, bytes.len());
            assert!(len < HEADER_LEN);
        }
        DecodeError::BadMagic => assert_ne!(bytes[..4], MAGIC),
        DecodeError::Version(v) => assert!(v == bytes[4] && v != VERSION),
        DecodeError::TooLarge { len, max } => assert!(max == max_payload && len > max),
        DecodeError::Length { declared, actual } => {
            assert_eq!(actual, bytes.len() - HEADER_LEN);
            assert_ne!(declared, actual);
        }
        DecodeError::Checksum { stored, computed } => assert_ne!(stored, computed),
        _ => panic!("decode refused with a reason it never gives: {e:?}"),
    }
}

fn encode(meta: &EnvelopeMeta, payload: &[u8], prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    codec::encode(meta, &mut out, |o| {
        o.extend_from_slice(payload);
        Ok(())
    })
    .expect("a payload writer that succeeds");
    out
}

/// One corruption of an encoded entry.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// XOR the byte at `pos % len` with `xor` (0 is taken as 1).
    Flip {
        /// Position (modulo the entry length).
        pos: usize,
        /// Bits to flip.
        xor: u8,
    },
    /// Keep only the first `keep % len` bytes.
    Truncate(usize),
    /// Append these bytes (at least one).
    Append(Vec<u8>),
}

/// An entry to encode after `prefix` (bytes already in the output buffer), then corrupt once.
#[derive(Debug, Clone)]
pub(crate) struct EncodeCase {
    /// Header fields.
    pub(crate) meta: EnvelopeMeta,
    /// The payload (ignored for negative entries).
    pub(crate) payload: Vec<u8>,
    /// Bytes already in the buffer `encode` appends to.
    pub(crate) prefix: Vec<u8>,
    /// The corruption.
    pub(crate) mutation: Mutation,
}

/// Encode → decode round-trips exactly (at the size limit too), leaves the prefix alone and
/// any single corruption (one changed byte, a truncation, trailing bytes) is refused.
pub(crate) fn check_encode(case: &EncodeCase) {
    let out = encode(&case.meta, &case.payload, &case.prefix);
    assert_eq!(out[..case.prefix.len()], case.prefix[..]);
    let entry = &out[case.prefix.len()..];
    let payload: &[u8] = if case.meta.negative {
        &[]
    } else {
        &case.payload
    };
    assert_eq!(entry.len(), HEADER_LEN + payload.len());
    let want = Envelope {
        meta: case.meta,
        payload,
    };
    assert_eq!(codec::decode(entry, payload.len()), Ok(want));
    assert_eq!(codec::decode(entry, usize::MAX), Ok(want));
    if !payload.is_empty() {
        assert!(matches!(
            codec::decode(entry, payload.len() - 1),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    let mut bad = entry.to_vec();
    match &case.mutation {
        Mutation::Flip { pos, xor } => bad[pos % entry.len()] ^= (*xor).max(1),
        Mutation::Truncate(keep) => bad.truncate(keep % entry.len()),
        Mutation::Append(extra) if extra.is_empty() => bad.push(0),
        Mutation::Append(extra) => bad.extend_from_slice(extra),
    }
    let refused = codec::decode(&bad, usize::MAX);
    assert!(
        refused.is_err(),
        "{:?} accepted: {refused:?}",
        case.mutation
    );
    check_decode(&bad, usize::MAX);

    let mut failing = Vec::new();
    let result = codec::encode(&case.meta, &mut failing, |_| Err("writer failed".into()));
    assert_eq!(result.is_ok(), case.meta.negative);
}
