//! Keys: what a policy counts requests by, and the trusted-proxy aware client IP.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};
use ipnet::IpNet;

/// The socket peer of a request, inserted as a request extension by servers that do not use
/// axum's [`ConnectInfo`](axum::extract::ConnectInfo) (the Palisade reference server does).
///
/// The rate limiter reads `PeerAddr` first, then `ConnectInfo<SocketAddr>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// What a policy counts requests by.
#[derive(Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// One bucket for all requests.
    Global,
    /// The client IP: the socket peer, or, when the peer is a trusted proxy, the address the proxy
    /// reports (see [`ClientIpConfig`]). IPv6 clients are grouped by
    /// [`ClientIpConfig::ipv6_prefix`].
    ClientIp,
    /// The value of a request header (e.g. an API key). Requests without the header are not
    /// counted by this policy (pair it with a [`ClientIp`](KeySource::ClientIp) policy to cover
    /// them).
    Header(HeaderName),
    /// The route template (axum [`MatchedPath`](axum::extract::MatchedPath)); requests without
    /// one share the bucket `<unmatched>`.
    Route,
    /// A user closure; `None` means the policy does not count this request.
    Custom(KeyFn),
}

impl KeySource {
    /// A key computed by a closure over the request; return `None` to skip the policy.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&RequestInfo<'_>) -> Option<String> + Send + Sync + 'static,
    {
        Self::Custom(KeyFn(Arc::new(f)))
    }

    /// A short label for logs and settings (`global`, `client_ip`, `header:x-api-key`, ...).
    pub fn label(&self) -> String {
        match self {
            Self::Global => "global".into(),
            Self::ClientIp => "client_ip".into(),
            Self::Header(h) => format!("header:{h}"),
            Self::Route => "route".into(),
            Self::Custom(_) => "custom".into(),
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A user key closure (see [`KeySource::custom`]).
#[derive(Clone)]
pub struct KeyFn(pub(crate) Arc<KeyClosure>);

type KeyClosure = dyn Fn(&RequestInfo<'_>) -> Option<String> + Send + Sync;

impl fmt::Debug for KeyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn")
    }
}

/// The parts of a request a key closure may look at.
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (e.g. an authenticated user inserted by an earlier layer).
    pub extensions: &'a Extensions,
    /// The resolved client IP (trusted-proxy aware), when the peer address is known.
    pub client_ip: Option<IpAddr>,
}

/// A policy key for one request. Borrowed from the request where possible, so the local hot path
/// does not allocate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue<'a> {
    /// The single global bucket.
    Global,
    /// A client IP (already reduced to the configured IPv6 prefix).
    Ip(IpAddr),
    /// Raw key bytes (a header value, a route template, a closure's result).
    Bytes(Cow<'a, [u8]>),
}

impl KeyValue<'_> {
    /// An owned copy (for asynchronous stores).
    pub fn into_owned(self) -> KeyValue<'static> {
        match self {
            Self::Global => KeyValue::Global,
            Self::Ip(ip) => KeyValue::Ip(ip),
            Self::Bytes(b) => KeyValue::Bytes(Cow::Owned(b.into_owned())),
        }
    }

    /// Appends a printable form of the key (an IP in text form, raw bytes otherwise).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Global => out.extend_from_slice(b"*"),
            Self::Ip(ip) => out.extend_from_slice(ip.to_string().as_bytes()),
            Self::Bytes(b) => out.extend_from_slice(b),
        }
    }

    /// A 64-bit hash of the key under `seed` (fast, not cryptographic; stable across processes
    /// for the same seed, which the shared-memory zone relies on).
    #[inline]
    pub fn hash_with(&self, seed: u64) -> u64 {
        match self {
            Self::Global => hash_bytes(seed ^ 0x01, b""),
            Self::Ip(IpAddr::V4(v4)) => hash_bytes(seed ^ 0x02, &v4.octets()),
            Self::Ip(IpAddr::V6(v6)) => hash_bytes(seed ^ 0x03, &v6.octets()),
            Self::Bytes(b) => hash_bytes(seed ^ 0x04, b),
        }
    }
}

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// A small keyed hash in the style of foldhash/wyhash: 8 bytes per folded multiply.
#[inline]
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = fold_mul(seed ^ K0, (bytes.len() as u64) ^ K1);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = fold_mul(h ^ u64::from_le_bytes(w), K2);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = fold_mul(h ^ u64::from_le_bytes(w) ^ K1, K2);
    }
    fold_mul(h, K0 ^ seed.rotate_left(17))
}

/// A stable hash of a string with a fixed seed (policy names in the shared zone).
#[cfg(unix)]
pub(crate) fn stable_hash(s: &str) -> u64 {
    hash_bytes(0x7061_6c69_7361_6465, s.as_bytes())
}

/// Which header a trusted proxy uses to report the client address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
    /// Ignore forwarding headers; always use the socket peer.
    None,
}

/// How the client IP is found.
///
/// Forwarding headers are honoured only when the socket peer is in
/// [`trusted_proxies`](Self::trusted_proxies); the header is then read right to left, skipping
/// trusted proxies, and the first untrusted address is the client. The leftmost entry, which any
/// client can write, is used only when every hop is trusted. An unparsable entry stops the walk
/// at the last trusted hop. Only the one configured header is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpConfig {
    /// Proxies whose forwarding header is believed (default: none, so the peer is the client).
    pub trusted_proxies: Vec<IpNet>,
    /// The forwarding header trusted proxies set.
    pub header: ForwardedHeader,
    /// IPv6 clients are keyed by this prefix length (default 64: one subscriber's network).
    pub ipv6_prefix: u8,
    /// At most this many header entries are examined (default 16).
    pub max_hops: usize,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
            ipv6_prefix: 64,
            max_hops: 16,
        }
    }
}

/// The socket peer from [`PeerAddr`] or axum's `ConnectInfo<SocketAddr>`.
pub(crate) fn peer_ip(ext: &Extensions) -> Option<IpAddr> {
    ext.get::<PeerAddr>()
        .map(|p| p.0.ip())
        .or_else(|| {
            ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        })
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses become IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl ClientIpConfig {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// The client IP of a request, or `None` when the peer address is unknown.
    pub(crate) fn resolve(&self, headers: &HeaderMap, ext: &Extensions) -> Option<IpAddr> {
        let peer = peer_ip(ext)?;
        if self.trusted_proxies.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
            ForwardedHeader::None => return Some(peer),
        };
        let mut last_trusted = peer;
        let mut hops = 0;
        // Later header lines were appended by closer proxies: walk lines and entries from the end.
        for line in headers.get_all(name).iter().rev() {
            let Ok(line) = line.to_str() else {
                return Some(last_trusted);
            };
            for entry in line.rsplit(',') {
                hops += 1;
                if hops > self.max_hops {
                    return Some(last_trusted);
                }
                let parsed = match self.header {
                    ForwardedHeader::Forwarded => parse_forwarded_for(entry),
                    _ => parse_node(entry.trim()),
                };
                let Some(ip) = parsed.map(canonical) else {
                    return Some(last_trusted);
                };
                if !self.is_trusted(ip) {
                    return Some(ip);
                }
                last_trusted = ip;
            }
        }
        Some(last_trusted)
    }

    /// The key form of a client IP: IPv6 reduced to the configured prefix.
    pub(crate) fn key_ip(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) if self.ipv6_prefix < 128 => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
            other => other,
        }
    }
}

/// The `for=` node of one `Forwarded` element.
fn parse_forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(v.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(peer: &str) -> Extensions {
        let mut e = Extensions::new();
        e.insert(PeerAddr(peer.parse().unwrap()));
        e
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn trusting(nets: &[&str], header: ForwardedHeader) -> ClientIpConfig {
        ClientIpConfig {
            trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(),
            header,
            ..ClientIpConfig::default()
        }
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let cfg = trusting(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["6.6.6.6"]);
        assert_eq!(
            cfg.resolve(&h, &ext("203.0.113.9:5000")),
            Some("203.0.113.9".parse().unwrap())
        );
        // No trusted proxies at all: the peer, always.
        let cfg = ClientIpConfig::default();
        assert_eq!(
            cfg.resolve(&h, &ext("10.1.1.1:5000")),
            Some("10.1.1.1".parse().unwrap())
        );
    }

    #[test]
    fn trusted_peer_rightmost_untrusted_entry_wins() {
        let cfg = trusting(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // A client forged "1.1.1.1"; the real client is 198.51.100.7, added by proxy 10.0.0.2.
        let h = headers("x-forwarded-for", &["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            cfg.resolve(&h, &ext("10.0.0.1:1234")),
            Some("198.51.100.7".parse().unwrap())
        );
    }

    #[test]
    fn garbage_entries_stop_at_the_last_trusted_hop() {
        let cfg = trusting(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["1.1.1.1, not-an-ip, 10.0.0.5"]);
        assert_eq!(
            cfg.resolve(&h, &ext("10.0.0.1:1")),
            Some("10.0.0.5".parse().unwrap())
        );
        let h = headers("x-forwarded-for", &[""]);
        assert_eq!(
            cfg.resolve(&h, &ext("10.0.0.1:1")),
            Some("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_header_is_parsed() {
        let cfg = trusting(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=1.1.1.1, for=\"[2001:db8::1]:4711\";proto=https, For=10.0.0.3"],
        );
        assert_eq!(
            cfg.resolve(&h, &ext("10.0.0.1:1")),
            Some("2001:db8::1".parse().unwrap())
        );
        let h = headers("forwarded", &["for=unknown"]);
        assert_eq!(
            cfg.resolve(&h, &ext("10.0.0.1:1")),
            Some("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn connect_info_is_a_peer_source_and_mapped_v4_is_canonical() {
        let mut e = Extensions::new();
        e.insert(axum::extract::ConnectInfo::<SocketAddr>(
            "[::ffff:192.0.2.1]:80".parse().unwrap(),
        ));
        assert_eq!(peer_ip(&e), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(peer_ip(&Extensions::new()), None);
    }

    #[test]
    fn ipv6_keys_are_grouped_by_prefix() {
        let cfg = ClientIpConfig::default();
        assert_eq!(
            cfg.key_ip("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        let cfg = ClientIpConfig {
            ipv6_prefix: 128,
            ..ClientIpConfig::default()
        };
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(cfg.key_ip(ip), ip);
        let cfg = ClientIpConfig {
            ipv6_prefix: 0,
            ..ClientIpConfig::default()
        };
        assert_eq!(cfg.key_ip(ip), "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hashes_are_seeded_and_distinguish_kinds() {
        let a = KeyValue::Bytes(Cow::Borrowed(b"abc"));
        assert_eq!(a.hash_with(1), a.hash_with(1));
        assert_ne!(a.hash_with(1), a.hash_with(2));
        assert_ne!(
            a.hash_with(1),
            KeyValue::Bytes(Cow::Borrowed(b"abd")).hash_with(1)
        );
        assert_ne!(
            KeyValue::Global.hash_with(1),
            KeyValue::Bytes(Cow::Borrowed(b"")).hash_with(1)
        );
        let long = vec![7u8; 100];
        assert_ne!(hash_bytes(0, &long), hash_bytes(0, &long[..99]));
    }
}
