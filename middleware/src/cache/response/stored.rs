//! What the response cache stores, and its compact L2 codec (body bytes stay raw).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::codec::{BoxError, ValueCodec};

/// A value of the response cache.
#[derive(Debug, Clone)]
pub(crate) enum HttpEntry {
    /// A stored response.
    Response(Arc<StoredResponse>),
    /// At the primary key of a URI whose responses vary: the request fields that select them.
    Vary(Arc<[HeaderName]>),
    /// "Hit-for-pass": the last response for this URI was not storable, so concurrent misses
    /// are not made to wait for each other.
    Pass,
}

/// The `Age` and `Cache-Status` values last sent for a stored response; reused while the age,
/// the TTL and the settings version are unchanged (they change at most once a second).
#[derive(Debug)]
pub(crate) struct HotHeaders {
    pub(crate) age: u64,
    pub(crate) ttl: i64,
    pub(crate) version: u64,
    pub(crate) age_value: HeaderValue,
    pub(crate) status_value: HeaderValue,
}

/// A stored response: status, ready-to-send headers and the whole body.
#[derive(Debug)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    /// The origin's headers minus hop-by-hop fields and `Age`, with `Content-Length` set.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// `stale-while-revalidate` window (zero when stale serving is not allowed).
    pub(crate) swr: Duration,
    /// `stale-if-error` window (zero when stale serving is not allowed).
    pub(crate) sie: Duration,
    pub(crate) hot: ArcSwapOption<HotHeaders>,
}

impl HttpEntry {
    pub(crate) fn weight(&self) -> usize {
        match self {
            Self::Response(r) => {
                r.body.len()
                    + r.headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len() + 32)
                        .sum::<usize>()
                    + 64
            }
            Self::Vary(names) => names.iter().map(|n| n.as_str().len() + 24).sum(),
            Self::Pass => 0,
        }
    }
}

/// Codec id of [`HttpCodec`] in the L2 envelope.
pub(crate) const CODEC_HTTP: u8 = 16;

const KIND_RESPONSE: u8 = 0;
const KIND_VARY: u8 = 1;
const KIND_PASS: u8 = 2;

/// Binary layout (big endian):
/// kind u8; response: status u16, swr_ms u32, sie_ms u32, header count u16, per header
/// (name len u16, name, value len u32, value), then the body to the end; vary: count u16, per
/// name (len u16, name).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpCodec;

fn put_u16(out: &mut Vec<u8>, n: usize) -> Result<(), BoxError> {
    out.extend_from_slice(&u16::try_from(n)?.to_be_bytes());
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, n: u64) -> Result<(), BoxError> {
    out.extend_from_slice(&u32::try_from(n)?.to_be_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BoxError> {
        if self.0.len() < n {
            return Err("truncated response entry".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, BoxError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, BoxError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<u32, BoxError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(u64::from(u32::MAX))
}

impl ValueCodec<HttpEntry> for HttpCodec {
    fn id(&self) -> u8 {
        CODEC_HTTP
    }

    fn encode(&self, value: &HttpEntry, out: &mut Vec<u8>) -> Result<(), BoxError> {
        match value {
            HttpEntry::Response(r) => {
                out.push(KIND_RESPONSE);
                out.extend_from_slice(&r.status.as_u16().to_be_bytes());
                put_u32(out, millis(r.swr))?;
                put_u32(out, millis(r.sie))?;
                put_u16(out, r.headers.len())?;
                for (name, value) in &r.headers {
                    put_u16(out, name.as_str().len())?;
                    out.extend_from_slice(name.as_str().as_bytes());
                    put_u32(out, value.len() as u64)?;
                    out.extend_from_slice(value.as_bytes());
                }
                out.extend_from_slice(&r.body);
            }
            HttpEntry::Vary(names) => {
                out.push(KIND_VARY);
                put_u16(out, names.len())?;
                for name in names.iter() {
                    put_u16(out, name.as_str().len())?;
                    out.extend_from_slice(name.as_str().as_bytes());
                }
            }
            HttpEntry::Pass => out.push(KIND_PASS),
        }
        Ok(())
    }

    fn decode(&self, payload: &[u8]) -> Result<HttpEntry, BoxError> {
        let mut r = Reader(payload);
        match r.u8()? {
            KIND_RESPONSE => {
                let b = r.take(2)?;
                let status = StatusCode::from_u16(u16::from_be_bytes([b[0], b[1]]))?;
                let swr = Duration::from_millis(u64::from(r.u32()?));
                let sie = Duration::from_millis(u64::from(r.u32()?));
                let count = r.u16()?;
                let mut headers = HeaderMap::with_capacity(count);
                for _ in 0..count {
                    let n = r.u16()?;
                    let name = HeaderName::from_bytes(r.take(n)?)?;
                    let n = r.u32()? as usize;
                    let value = HeaderValue::from_bytes(r.take(n)?)?;
                    headers.append(name, value);
                }
                Ok(HttpEntry::Response(Arc::new(StoredResponse {
                    status,
                    headers,
                    body: Bytes::copy_from_slice(r.0),
                    swr,
                    sie,
                    hot: ArcSwapOption::empty(),
                })))
            }
            KIND_VARY => {
                let count = r.u16()?;
                let mut names = Vec::with_capacity(count);
                for _ in 0..count {
                    let n = r.u16()?;
                    names.push(HeaderName::from_bytes(r.take(n)?)?);
                }
                if !r.0.is_empty() {
                    return Err("trailing bytes after vary entry".into());
                }
                Ok(HttpEntry::Vary(names.into()))
            }
            KIND_PASS if r.0.is_empty() => Ok(HttpEntry::Pass),
            other => Err(format!("unknown response entry kind {other}").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_responses_and_markers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let entry = HttpEntry::Response(Arc::new(StoredResponse {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"[1,2,3]"),
            swr: Duration::from_secs(5),
            sie: Duration::from_secs(60),
            hot: ArcSwapOption::empty(),
        }));
        let mut buf = Vec::new();
        HttpCodec.encode(&entry, &mut buf).unwrap();
        let HttpEntry::Response(r) = HttpCodec.decode(&buf).unwrap() else {
            panic!("expected a response")
        };
        assert_eq!(r.status, 404);
        assert_eq!(r.body, "[1,2,3]");
        assert_eq!(r.sie, Duration::from_secs(60));
        assert_eq!(r.headers.get_all("x-multi").iter().count(), 2);

        let vary = HttpEntry::Vary(vec![HeaderName::from_static("accept-language")].into());
        buf.clear();
        HttpCodec.encode(&vary, &mut buf).unwrap();
        assert!(matches!(HttpCodec.decode(&buf).unwrap(), HttpEntry::Vary(n) if n.len() == 1));
        buf.clear();
        HttpCodec.encode(&HttpEntry::Pass, &mut buf).unwrap();
        assert!(matches!(HttpCodec.decode(&buf).unwrap(), HttpEntry::Pass));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = HttpCodec.decode(&bytes);
        }
    }
}
