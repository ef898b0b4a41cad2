//! Properties of the IETF `RateLimit` / `RateLimit-Policy` headers and `Retry-After` written by
//! `palisade::rate_limit` (draft-ietf-httpapi-ratelimit-headers, RFC 9651 structured fields).
//!
//! The formatter is crate-private, so this drives the public layer with arbitrary policies,
//! limits changed at runtime and time, and parses every response header with a strict RFC 9651
//! list parser written here. Shared by the `ratelimit_headers` fuzz target (fuzz/src/lib.rs) and
//! the proptests in middleware/tests/proptest_parsers.rs.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use palisade::rate_limit::{
    HeaderMode, KeySource, Limits, Mode, PolicyConfig, RateLimitConfig, RateLimitLayer,
};
use tower::{Layer as _, Service as _, ServiceExt as _};

// === a strict RFC 9651 list parser (the subset these headers may use) ===

/// An RFC 9651 bare item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bare {
    /// `sf-integer` (at most 15 digits).
    Integer(i64),
    /// `sf-string`.
    String(String),
    /// `sf-token`.
    Token(String),
    /// `sf-boolean`.
    Boolean(bool),
}

/// An item with its parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// The bare item.
    pub(crate) bare: Bare,
    /// `;key=value` parameters (`;key` alone is `true`).
    pub(crate) params: Vec<(String, Bare)>,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bare(&mut self) -> Result<Bare, String> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b'?') => {
                self.i += 1;
                let b = match self.peek() {
                    Some(b'0') => false,
                    Some(b'1') => true,
                    other => return Err(format!("bad boolean {other:?}")),
                };
                self.i += 1;
                Ok(Bare::Boolean(b))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c) {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Ok(Bare::Token(
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
                ))
            }
            other => Err(format!("no bare item at {} ({other:?})", self.i)),
        }
    }

    fn string(&mut self) -> Result<Bare, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Bare::String(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                        other => return Err(format!("bad escape {other:?}")),
                    }
                    self.i += 1;
                }
                Some(c @ 0x20..=0x7e) => {
                    out.push(char::from(c));
                    self.i += 1;
                }
                Some(c) => return Err(format!("byte {c:#x} in a string")),
            }
        }
    }

    fn integer(&mut self) -> Result<Bare, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let n = self.i - digits;
        if n == 0 || n > 15 {
            return Err(format!("integer with {n} digits"));
        }
        if self.peek() == Some(b'.') {
            return Err("decimals are not used by these headers".into());
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        text.parse().map(Bare::Integer).map_err(|e| e.to_string())
    }

    fn key(&mut self) -> Result<String, String> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => self.i += 1,
            other => return Err(format!("bad key start {other:?}")),
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
        {
            self.i += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn item(&mut self) -> Result<Item, String> {
        let bare = self.bare()?;
        let mut params: Vec<(String, Bare)> = Vec::new();
        while self.peek() == Some(b';') {
            self.i += 1;
            while self.peek() == Some(b' ') {
                self.i += 1;
            }
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare()?
            } else {
                Bare::Boolean(true)
            };
            if params.iter().any(|(k, _)| *k == key) {
                return Err(format!("parameter {key} twice"));
            }
            params.push((key, value));
        }
        Ok(Item { bare, params })
    }
}

/// Parses an RFC 9651 list of items (no inner lists), refusing anything not well-formed.
pub(crate) fn parse_list(value: &[u8]) -> Result<Vec<Item>, String> {
    let mut p = Parser { s: value, i: 0 };
    let mut items = Vec::new();
    if value.is_empty() {
        return Ok(items);
    }
    if value.first() == Some(&b' ') || value.last() == Some(&b' ') {
        return Err("leading or trailing space".into());
    }
    loop {
        items.push(p.item()?);
        while matches!(p.peek(), Some(b' ' | b'\t')) {
            p.i += 1;
        }
        match p.peek() {
            None => return Ok(items),
            Some(b',') => {
                p.i += 1;
                while matches!(p.peek(), Some(b' ' | b'\t')) {
                    p.i += 1;
                }
                if p.peek().is_none() {
                    return Err("trailing comma".into());
                }
            }
            Some(c) => return Err(format!("unexpected {:?} at {}", char::from(c), p.i)),
        }
    }
}

// === the scenario ===

/// One policy of the layer under test (key: global, local store).
#[derive(Debug, Clone)]
pub(crate) struct PolicyCase {
    /// Its name (may be invalid: the layer must refuse it).
    pub(crate) name: String,
    /// Its initial limits (may be invalid).
    pub(crate) limits: Limits,
}

/// What happens next.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// One request.
    Request,
    /// Time passes.
    Advance(Duration),
    /// The operator changes a policy's limits (the index is taken modulo the policy count).
    SetLimits(usize, Limits),
}

/// A layer and what is done with it.
#[derive(Debug, Clone)]
pub(crate) struct HeaderCase {
    /// The policies, in order.
    pub(crate) policies: Vec<PolicyCase>,
    /// Events, in order.
    pub(crate) events: Vec<Event>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `rate` per `per` as a whole quota `q` over a whole-second window `w` (the module docs).
fn quota(limits: &Limits) -> (i64, i64) {
    let w = ceil_secs(limits.per).max(1);
    let q = u128::from(limits.rate) * u128::from(w) * 1_000_000_000 / limits.per.as_nanos();
    (
        i64::try_from(q).unwrap_or(i64::MAX),
        i64::try_from(w).unwrap_or(i64::MAX),
    )
}

fn one_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    assert!(all.next().is_none(), "several {name} headers");
    Some(first.as_bytes())
}

fn param(item: &Item, key: &str) -> Option<i64> {
    item.params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| match v {
            Bare::Integer(n) => *n,
            other => panic!("{key} is not an integer: {other:?}"),
        })
}

fn names(items: &[Item]) -> Vec<&str> {
    items
        .iter()
        .map(|i| match &i.bare {
            Bare::String(s) => s.as_str(),
            other => panic!("a policy reference must be a string, got {other:?}"),
        })
        .collect()
}

fn is_subsequence(sub: &[&str], of: &[&str]) -> bool {
    let mut it = of.iter();
    sub.iter().all(|s| it.any(|o| o == s))
}

/// Builds the layer (refused exactly when a name or limit is invalid), then plays the events on
/// a paused clock. Every response's `RateLimit-Policy` and `RateLimit` are strict RFC 9651
/// lists of string items with integer parameters (`q`, `w` / `r`, `t`), naming enforced
/// policies in order with their current quota; a 429 carries `Retry-After` in whole seconds
/// (>= 1) agreeing with its problem body. With one enforced policy and no time passing, the
/// headers follow the GCRA exactly: `r` counts down from `burst - 1`, then 429.
pub(crate) fn check_headers(case: &HeaderCase) {
    let mut builder = RateLimitConfig::builder().headers(HeaderMode::All);
    for p in &case.policies {
        builder = builder.policy(
            PolicyConfig::builder(p.name.clone())
                .limits(p.limits)
                .key(KeySource::Global)
                .local(64),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let valid = case.policies.len() <= palisade::rate_limit::MAX_POLICIES
        && case.policies.iter().all(|p| {
            valid_name(&p.name) && seen.insert(p.name.as_str()) && p.limits.validate().is_ok()
        });
    let built = builder.build();
    assert_eq!(built.is_ok(), valid, "{:?}", built.err());
    let Ok(config) = built else { return };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(play(case, config));
}

async fn play(case: &HeaderCase, config: RateLimitConfig) {
    let (layer, handle) = RateLimitLayer::new(config);
    let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Bytes::new()))
    }));
    let mut limits: Vec<Limits> = case.policies.iter().map(|p| p.limits).collect();
    // Requests since the start while nothing but requests happened (the exact GCRA check).
    let mut exact = Some(0u64);
    for event in &case.events {
        match event {
            Event::Advance(d) => {
                tokio::time::advance(*d).await;
                exact = None;
            }
            Event::SetLimits(i, new) => {
                let i = i % case.policies.len().max(1);
                let Some(p) = case.policies.get(i) else {
                    continue;
                };
                let policy = handle.policy(&p.name).expect("the policy");
                let result = policy.set_limits(*new);
                assert_eq!(result.is_ok(), new.validate().is_ok());
                if result.is_ok() {
                    limits[i] = *new;
                    assert_eq!(policy.limits(), *new);
                }
                exact = None;
            }
            Event::Request => {
                let res = svc
                    .ready()
                    .await
                    .unwrap_or_else(|e: Infallible| match e {})
                    .call(Request::new(()))
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                check_response(case, &limits, &res, exact);
                exact = exact.map(|n| n + 1);
            }
        }
    }
}

fn check_response(case: &HeaderCase, limits: &[Limits], res: &Response<Bytes>, exact: Option<u64>) {
    let enforced: Vec<usize> = (0..case.policies.len())
        .filter(|&i| limits[i].mode == Mode::Enforce)
        .collect();
    let enforced_names: Vec<&str> = enforced
        .iter()
        .map(|&i| case.policies[i].name.as_str())
        .collect();
    let status = res.status();
    assert!(
        status == StatusCode::OK
            || (status == StatusCode::TOO_MANY_REQUESTS && !enforced.is_empty()),
        "status {status} with enforced policies {enforced_names:?}"
    );
    let headers = res.headers();
    let policy = one_value(headers, "ratelimit-policy");
    let limit = one_value(headers, "ratelimit");
    if enforced.is_empty() {
        assert!(policy.is_none() && limit.is_none(), "{headers:?}");
        return;
    }
    let policy = parse_list(policy.expect("RateLimit-Policy")).expect("RateLimit-Policy parses");
    let limit = parse_list(limit.expect("RateLimit")).expect("RateLimit parses");
    assert!(!policy.is_empty() && !limit.is_empty());
    let (pnames, lnames) = (names(&policy), names(&limit));
    assert!(
        is_subsequence(&pnames, &enforced_names),
        "{pnames:?} / {enforced_names:?}"
    );
    assert!(
        is_subsequence(&lnames, &enforced_names),
        "{lnames:?} / {enforced_names:?}"
    );
    assert_eq!(pnames, lnames, "a policy is in both lists or in neither");

    for item in &policy {
        let keys: Vec<&str> = item.params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["q", "w"], "{item:?}");
        let name = &names(std::slice::from_ref(item))[0];
        let i = case
            .policies
            .iter()
            .position(|p| p.name == *name)
            .expect("a policy");
        let (q, w) = (param(item, "q"), param(item, "w"));
        assert_eq!((q, w), {
            let (q, w) = quota(&limits[i]);
            (Some(q), Some(w))
        });
        assert!(q >= Some(1) && w >= Some(1));
    }
    for item in &limit {
        let keys: Vec<&str> = item.params.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys == ["r"] || keys == ["r", "t"], "{item:?}");
        let name = &names(std::slice::from_ref(item))[0];
        let i = case
            .policies
            .iter()
            .position(|p| p.name == *name)
            .expect("a policy");
        let r = param(item, "r").expect("r");
        assert!((0..=i64::from(limits[i].burst)).contains(&r), "{item:?}");
        if let Some(t) = param(item, "t") {
            assert!(t >= 1, "{item:?}");
        }
    }

    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = one_value(headers, "retry-after").expect("Retry-After on a 429");
        let secs = std::str::from_utf8(secs).expect("ASCII");
        assert!(
            secs.bytes().all(|b| b.is_ascii_digit()),
            "Retry-After {secs:?}"
        );
        let secs: u64 = secs.parse().expect("an integer");
        assert!(secs >= 1);
        let body: serde_json::Value = serde_json::from_slice(res.body()).expect("a JSON problem");
        let millis = body["retry_after_ms"].as_u64().expect("retry_after_ms");
        assert_eq!(secs, millis.div_ceil(1000).max(1), "{body}");
        let violated = body["violated-policies"]
            .as_array()
            .expect("violated-policies");
        assert!(!violated.is_empty());
        for v in violated {
            assert!(
                enforced_names.contains(&v.as_str().expect("a name")),
                "{body}"
            );
        }
    } else {
        assert!(headers.get("retry-after").is_none());
    }

    // Exact GCRA: one enforced policy, every request at the same instant.
    if let (Some(k), [only]) = (exact, enforced.as_slice()) {
        let l = limits[*only];
        let t = Duration::from_nanos(
            u64::try_from(l.per.as_nanos() / u128::from(l.rate)).unwrap_or(u64::MAX),
        );
        let burst = u64::from(l.burst);
        let item = &limit[0];
        let r = param(item, "r").expect("r");
        let tt = param(item, "t");
        let want_t = i64::try_from(ceil_secs(t)).ok();
        if k < burst {
            assert_eq!(status, StatusCode::OK, "request {k} of burst {burst}");
            assert_eq!(r, i64::try_from(burst - 1 - k).unwrap_or(-1), "request {k}");
        } else {
            assert_eq!(
                status,
                StatusCode::TOO_MANY_REQUESTS,
                "request {k} of burst {burst}"
            );
            assert_eq!(r, 0);
            let secs: u64 = headers["retry-after"]
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            assert_eq!(secs, ceil_secs(t).max(1));
        }
        assert_eq!(tt, want_t, "request {k}: t");
    }
}
