//! `Cache-Control` parsing and freshness (RFC 9111 §4.2, §5.2; RFC 5861).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

/// The directives Palisade acts on. Unknown directives are ignored; qualified `no-cache="..."`
/// and `private="..."` are treated as their unqualified (stricter) forms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

/// A delta-seconds value; an invalid one counts as 0 (RFC 9111 §1.2.2: treat as stale).
fn seconds(v: Option<&str>) -> u64 {
    v.map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

impl Directives {
    /// Parses every `Cache-Control` field line.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else {
                // Unreadable directives: be strict.
                d.no_store = true;
                continue;
            };
            for item in split_directives(line) {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (item.trim(), None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => d.max_age = Some(seconds(value)),
                    "s-maxage" => d.s_maxage = Some(seconds(value)),
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = Some(seconds(value)),
                    "stale-if-error" => d.stale_if_error = Some(seconds(value)),
                    _ => {}
                }
            }
        }
        d
    }

    /// Whether a stored response may be served after it went stale (RFC 9111 §4.2.4:
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` and `no-cache` forbid it).
    pub(crate) fn allows_stale(&self) -> bool {
        !(self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache)
    }
}

/// Splits on commas outside quoted strings.
fn split_directives(line: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// Statuses cacheable by default (RFC 9110 §15.1), minus 206 (no range support).
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v).ok()
}

/// The freshness lifetime of a response for a shared cache: `s-maxage`, else `max-age`, else
/// `Expires - Date` (RFC 9111 §4.2.1). `None` when the response gives none.
pub(crate) fn freshness_lifetime(d: &Directives, headers: &HeaderMap) -> Option<Duration> {
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Some(Duration::from_secs(s));
    }
    if let Some(expires) = headers.get(header::EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired.
        let Some(expires) = expires
            .to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return Some(Duration::ZERO);
        };
        let base = date(headers, header::DATE).unwrap_or_else(SystemTime::now);
        return Some(expires.duration_since(base).unwrap_or(Duration::ZERO));
    }
    None
}

/// The `Age` a response arrived with.
pub(crate) fn initial_age(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(header::CACHE_CONTROL, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn parses_directives_case_insensitively_with_quotes() {
        let d = Directives::parse(&cc(
            "Public, MAX-AGE=60, s-maxage=\"30\", no-cache=\"Set-Cookie, X\", stale-while-revalidate=5",
        ));
        assert!(d.public && d.no_cache);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert_eq!(d.stale_while_revalidate, Some(5));
        assert!(!d.allows_stale());
    }

    #[test]
    fn invalid_max_age_is_stale() {
        assert_eq!(Directives::parse(&cc("max-age=abc")).max_age, Some(0));
    }

    #[test]
    fn merges_multiple_lines() {
        let mut h = cc("max-age=5");
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        let d = Directives::parse(&h);
        assert!(d.private);
        assert_eq!(d.max_age, Some(5));
    }

    #[test]
    fn s_maxage_beats_max_age_and_expires_counts() {
        let h = cc("max-age=60, s-maxage=10");
        let d = Directives::parse(&h);
        assert_eq!(freshness_lifetime(&d, &h), Some(Duration::from_secs(10)));
        let mut h = HeaderMap::new();
        h.insert(
            header::DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:50:37 GMT"),
        );
        let d = Directives::parse(&h);
        assert_eq!(freshness_lifetime(&d, &h), Some(Duration::from_secs(60)));
        h.insert(header::EXPIRES, HeaderValue::from_static("0"));
        assert_eq!(freshness_lifetime(&d, &h), Some(Duration::ZERO));
        assert_eq!(freshness_lifetime(&d, &HeaderMap::new()), None);
    }
}
