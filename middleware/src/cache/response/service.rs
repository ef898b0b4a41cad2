//! [`ResponseCache`]: the service, and the request flow.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;
use tower::Service;

use super::body::CacheBody;
use super::config::ResponseCacheConfig;
use super::directives::{Directives, freshness_lifetime, heuristically_cacheable, initial_age};
use super::future::ResponseFuture;
use super::shared::{Lock, Shared};
use super::stored::{HotHeaders, HttpEntry, StoredResponse};
use crate::cache::CachedEntry;
use crate::cache::two_level::{EntryOptions, Write};

/// The `Cache-Status` field name (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Caches the inner service's responses; see the [module docs](super).
#[derive(Clone)]
pub struct ResponseCache<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for ResponseCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("inner", &self.inner)
            .field("cache", &self.shared.config.load().store.name)
            .finish()
    }
}

impl<S> ResponseCache<S> {
    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseCache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<CacheBody<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        // The fresh-hit path is a small future; everything else (forwarding, storing, stale
        // serving) is boxed separately so hits do not allocate its state.
        ResponseFuture::new(Box::pin(async move {
            match fast_path(&shared, req).await {
                Ok(res) => Ok(res),
                Err(pre) => Box::pin(respond(shared, inner, pre)).await,
            }
        }))
    }
}

// === Cache-Status ===

/// One `Cache-Status` member (RFC 9211).
#[derive(Debug, Default)]
struct Status {
    hit: bool,
    fwd: Option<&'static str>,
    fwd_status: Option<u16>,
    ttl: Option<i64>,
    stored: bool,
    collapsed: bool,
    detail: Option<&'static str>,
}

impl Status {
    fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    fn fwd(reason: &'static str) -> Self {
        Self {
            fwd: Some(reason),
            ..Self::default()
        }
    }

    fn header(&self, name: &str) -> HeaderValue {
        let mut s = String::with_capacity(48);
        s.push_str(name);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(s, "; fwd={fwd}");
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(s, "; fwd-status={status}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            let _ = write!(s, "; detail={detail}");
        }
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("palisade"))
    }
}

fn add_status<B>(res: &mut Response<B>, cfg: &ResponseCacheConfig, status: &Status) {
    res.headers_mut()
        .append(CACHE_STATUS, status.header(&cfg.cache_status_name));
}

// === keys ===

/// `GET {host}{path}?{query} ` — the trailing space ends the URI (a space cannot occur in a
/// request target), so a prefix invalidation of one URI never matches another.
pub(crate) fn primary_key<B>(cfg: &ResponseCacheConfig, req: &Request<B>) -> String {
    let uri = req.uri();
    let mut k = String::with_capacity(64);
    k.push_str("GET ");
    if cfg.include_host {
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        for c in host.chars() {
            k.push(c.to_ascii_lowercase());
        }
    }
    k.push_str(uri.path());
    if let Some(q) = uri.query() {
        k.push('?');
        k.push_str(q);
    }
    k.push(' ');
    k
}

/// The primary key plus the request's values of the `Vary` fields.
fn secondary_key(primary: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut k = String::with_capacity(primary.len() + 32);
    k.push_str(primary);
    for name in names {
        k.push_str(name.as_str());
        k.push('=');
        let mut first = true;
        for v in headers.get_all(name) {
            if !first {
                k.push(',');
            }
            first = false;
            k.push_str(String::from_utf8_lossy(v.as_bytes()).trim());
        }
        k.push('\n');
    }
    k
}

/// The field names of a response's `Vary`; `Err` for `Vary: *`.
fn vary_names(headers: &HeaderMap) -> Result<Vec<HeaderName>, ()> {
    let mut names = Vec::new();
    for line in headers.get_all(header::VARY) {
        let line = line.to_str().map_err(|_| ())?;
        for item in line.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                return Err(());
            }
            let name =
                HeaderName::from_bytes(item.to_ascii_lowercase().as_bytes()).map_err(|_| ())?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(names)
}

// === lookup ===

enum Lookup {
    Found(Arc<StoredResponse>, CachedEntry<HttpEntry>),
    Miss { vary: bool },
    Pass,
}

async fn lookup(shared: &Shared, primary: &str, headers: &HeaderMap) -> Lookup {
    let Some(entry) = shared.cache.get_entry_str(primary).await else {
        return Lookup::Miss { vary: false };
    };
    match entry.value() {
        Some(HttpEntry::Response(r)) => Lookup::Found(Arc::clone(r), entry),
        Some(HttpEntry::Pass) if entry.is_fresh() => Lookup::Pass,
        Some(HttpEntry::Vary(names)) => {
            let key = secondary_key(primary, names, headers);
            match shared.cache.get_entry_str(&key).await {
                Some(e) => match e.value() {
                    Some(HttpEntry::Response(r)) => Lookup::Found(Arc::clone(r), e),
                    _ => Lookup::Miss { vary: true },
                },
                None => Lookup::Miss { vary: true },
            }
        }
        Some(HttpEntry::Pass) | None => Lookup::Miss { vary: false },
    }
}

fn cached_response<B: Body>(
    cfg: &ResponseCacheConfig,
    stored: &StoredResponse,
    entry: &CachedEntry<HttpEntry>,
    head: bool,
    mut status: Status,
) -> Response<CacheBody<B>> {
    let body = if head {
        CacheBody::empty()
    } else {
        CacheBody::full(stored.body.clone())
    };
    let mut res = Response::new(body);
    *res.status_mut() = stored.status;
    *res.headers_mut() = stored.headers.clone();
    res.headers_mut()
        .insert(header::AGE, HeaderValue::from(entry.age().as_secs()));
    status.ttl = Some(entry.ttl_secs());
    add_status(&mut res, cfg, &status);
    res
}

fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

fn wants_reload(req_cc: &Directives, headers: &HeaderMap) -> bool {
    if req_cc.no_cache || req_cc.max_age == Some(0) {
        return true;
    }
    !headers.contains_key(header::CACHE_CONTROL)
        && headers
            .get(header::PRAGMA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"))
}

fn is_origin_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// A fresh hit, with `Age` and `Cache-Status` values reused while they are unchanged.
fn fresh_hit<B: Body>(
    shared: &Shared,
    cfg: &ResponseCacheConfig,
    stored: &StoredResponse,
    entry: &CachedEntry<HttpEntry>,
    head: bool,
) -> Response<CacheBody<B>> {
    let age = entry.age().as_secs();
    let ttl = entry.ttl_secs();
    let version = shared.version.load(Ordering::Relaxed);
    let hot = stored.hot.load();
    let (age_value, status_value) = match hot.as_deref() {
        Some(h) if h.age == age && h.ttl == ttl && h.version == version => {
            (h.age_value.clone(), h.status_value.clone())
        }
        _ => {
            let age_value = HeaderValue::from(age);
            let status_value = Status::hit(ttl).header(&cfg.cache_status_name);
            stored.hot.store(Some(Arc::new(HotHeaders {
                age,
                ttl,
                version,
                age_value: age_value.clone(),
                status_value: status_value.clone(),
            })));
            (age_value, status_value)
        }
    };
    let body = if head {
        CacheBody::empty()
    } else {
        CacheBody::full(stored.body.clone())
    };
    let mut res = Response::new(body);
    *res.status_mut() = stored.status;
    *res.headers_mut() = stored.headers.clone();
    res.headers_mut().insert(header::AGE, age_value);
    res.headers_mut().append(CACHE_STATUS, status_value);
    res
}

/// What the fast path learnt, handed to the slow path.
struct Pre<R> {
    req: Request<R>,
    cfg: Arc<ResponseCacheConfig>,
    looked_up: Option<(String, Lookup)>,
}

/// Answers fresh hits; hands everything else to [`respond`].
async fn fast_path<R, B: Body>(
    shared: &Arc<Shared>,
    req: Request<R>,
) -> Result<Response<CacheBody<B>>, Pre<R>> {
    let cfg = shared.config.load_full();
    let method = req.method();
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return Err(Pre {
            req,
            cfg,
            looked_up: None,
        });
    }
    let req_cc = Directives::parse(req.headers());
    if req_cc.no_store
        || (!cfg.allow_authorized && has_credentials(req.headers()))
        || wants_reload(&req_cc, req.headers())
    {
        return Err(Pre {
            req,
            cfg,
            looked_up: None,
        });
    }
    let primary = primary_key(&cfg, &req);
    let found = lookup(shared, &primary, req.headers()).await;
    if let Lookup::Found(stored, entry) = &found
        && entry.is_fresh()
    {
        shared.stats.hit.inc();
        return Ok(fresh_hit(shared, &cfg, stored, entry, head));
    }
    Err(Pre {
        req,
        cfg,
        looked_up: Some((primary, found)),
    })
}

// === the request flow ===

async fn respond<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    pre: Pre<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let Pre {
        req,
        cfg,
        looked_up,
    } = pre;
    let method = req.method().clone();

    if method != Method::GET && method != Method::HEAD {
        let key = (cfg.invalidate_on_unsafe && !method.is_safe()).then(|| primary_key(&cfg, &req));
        shared.stats.bypass.inc();
        let res = inner.call(req).await?;
        if let Some(key) = key
            && (res.status().is_success() || res.status().is_redirection())
        {
            shared.stats.invalidations.fetch_add(1, Ordering::Relaxed);
            shared.cache.invalidate_prefix(&key).await;
        }
        let mut res = res.map(CacheBody::passthrough);
        add_status(&mut res, &cfg, &Status::fwd("method"));
        return Ok(res);
    }

    let head = method == Method::HEAD;
    let req_cc = Directives::parse(req.headers());
    let credentials = has_credentials(req.headers());
    if req_cc.no_store || (credentials && !cfg.allow_authorized) {
        shared.stats.bypass.inc();
        let mut res = inner.call(req).await?.map(CacheBody::passthrough);
        add_status(&mut res, &cfg, &Status::fwd("bypass"));
        return Ok(res);
    }

    let (primary, looked_up) = match looked_up {
        Some((primary, found)) => (primary, Some(found)),
        None => (primary_key(&cfg, &req), None),
    };
    let mut status = Status::fwd("miss");
    let mut stale_fallback: Option<(Arc<StoredResponse>, CachedEntry<HttpEntry>)> = None;
    let mut pass = false;
    let reload = wants_reload(&req_cc, req.headers());
    if reload {
        status.fwd = Some("request");
    } else {
        let found = match looked_up {
            Some(found) => found,
            None => lookup(&shared, &primary, req.headers()).await,
        };
        match found {
            Lookup::Found(stored, entry) if entry.is_fresh() => {
                shared.stats.hit.inc();
                return Ok(fresh_hit(&shared, &cfg, &stored, &entry, head));
            }
            Lookup::Found(stored, entry) => {
                let stale_for = entry.stale_for();
                if !stored.swr.is_zero() && stale_for <= stored.swr {
                    // stale-while-revalidate: answer now, refresh once in the background.
                    shared.stats.stale.inc();
                    let res = cached_response(
                        &cfg,
                        &stored,
                        &entry,
                        head,
                        Status {
                            hit: true,
                            detail: Some("stale-while-revalidate"),
                            ..Status::default()
                        },
                    );
                    if !head && let Some(lead) = shared.try_lead(&primary) {
                        shared.stats.revalidations.fetch_add(1, Ordering::Relaxed);
                        let shared = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let headers = req.headers().clone();
                            if let Ok(res) = inner.call(req).await {
                                let (_res, _stored) = finish(
                                    &shared,
                                    &cfg,
                                    &primary,
                                    &headers,
                                    Finish::Revalidation,
                                    credentials,
                                    res,
                                )
                                .await;
                            }
                            drop(lead);
                        });
                    }
                    return Ok(res);
                }
                status.fwd = Some("stale");
                if !stored.sie.is_zero() && stale_for <= stored.sie {
                    stale_fallback = Some((stored, entry));
                }
            }
            Lookup::Miss { vary } => {
                if vary {
                    status.fwd = Some("vary-miss");
                }
            }
            Lookup::Pass => pass = true,
        }
    }

    // Collapse concurrent misses: one request fills the cache, the others wait for it.
    let _lead = if reload || pass || head {
        None
    } else {
        match shared.lock(&primary) {
            Lock::Lead(lead) => Some(lead),
            Lock::Wait(mut rx) => {
                shared.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                status.collapsed = true;
                let _ = tokio::time::timeout(cfg.lock_timeout(), rx.changed()).await;
                if let Lookup::Found(stored, entry) = lookup(&shared, &primary, req.headers()).await
                    && entry.is_fresh()
                {
                    shared.stats.hit.inc();
                    let mut st = Status::hit(0);
                    st.collapsed = true;
                    return Ok(cached_response(&cfg, &stored, &entry, head, st));
                }
                None
            }
        }
    };

    let req_headers = if head {
        HeaderMap::new()
    } else {
        req.headers().clone()
    };
    let result = inner.call(req).await;
    let res = match (result, stale_fallback) {
        (Err(error), Some((stored, entry))) => {
            tracing::debug!(cache = %cfg.store.name, key = %primary, "origin failed; serving stale (stale-if-error)");
            let _ = error;
            shared.stats.stale_if_error.inc();
            let st = Status {
                fwd: Some("stale"),
                detail: Some("stale-if-error"),
                ..Status::default()
            };
            return Ok(cached_response(&cfg, &stored, &entry, head, st));
        }
        (Err(error), None) => return Err(error),
        (Ok(res), Some((stored, entry))) if is_origin_error(res.status()) => {
            shared.stats.stale_if_error.inc();
            let st = Status {
                fwd: Some("stale"),
                fwd_status: Some(res.status().as_u16()),
                detail: Some("stale-if-error"),
                ..Status::default()
            };
            return Ok(cached_response(&cfg, &stored, &entry, head, st));
        }
        (Ok(res), _) => res,
    };
    shared.stats.miss.inc();
    let mode = if head { Finish::Head } else { Finish::Client };
    let (mut res, stored) = finish(
        &shared,
        &cfg,
        &primary,
        &req_headers,
        mode,
        credentials,
        res,
    )
    .await;
    status.stored = stored;
    add_status(&mut res, &cfg, &status);
    Ok(res)
}

/// Why a forwarded response is not stored; `None` when it is storable, with its freshness.
struct Storable {
    fresh: Duration,
    age: Duration,
    swr: Duration,
    sie: Duration,
    vary: Vec<HeaderName>,
}

fn storable(
    cfg: &ResponseCacheConfig,
    status: StatusCode,
    headers: &HeaderMap,
    credentials: bool,
) -> Result<Storable, &'static str> {
    if !heuristically_cacheable(status) {
        return Err("status");
    }
    let d = Directives::parse(headers);
    if d.no_store || d.private || d.no_cache {
        return Err("directive");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    if credentials && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
        return Err("credentials");
    }
    let vary = vary_names(headers).map_err(|()| "vary")?;
    let lifetime = freshness_lifetime(&d, headers)
        .or(cfg.default_ttl_ms.map(Duration::from_millis))
        .ok_or("no-freshness")?
        .min(cfg.max_ttl());
    let age = initial_age(headers);
    let fresh = lifetime.saturating_sub(age);
    if fresh.is_zero() {
        return Err("stale");
    }
    let (swr, sie) = if d.allows_stale() {
        let s = |v: Option<u64>| Duration::from_secs(v.unwrap_or(0)).min(cfg.max_ttl());
        (s(d.stale_while_revalidate), s(d.stale_if_error))
    } else {
        (Duration::ZERO, Duration::ZERO)
    };
    Ok(Storable {
        fresh,
        age,
        swr,
        sie,
        vary,
    })
}

/// Hop-by-hop fields and fields recomputed per response are not stored.
fn stored_headers(headers: &HeaderMap, body_len: usize) -> HeaderMap {
    let mut out = headers.clone();
    let connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in connection {
        out.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::AGE,
        HeaderName::from_static("keep-alive"),
    ] {
        out.remove(name);
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    out
}

/// Who receives a forwarded response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// A client's `HEAD`: never stored.
    Head,
    /// A client's `GET`.
    Client,
    /// A background `stale-while-revalidate` refresh.
    Revalidation,
}

/// Decides whether a forwarded response is stored, buffers its body (up to the cap) and stores
/// it. Returns the response to send and whether it was stored.
async fn finish<B>(
    shared: &Shared,
    cfg: &ResponseCacheConfig,
    primary: &str,
    req_headers: &HeaderMap,
    mode: Finish,
    credentials: bool,
    res: Response<B>,
) -> (Response<CacheBody<B>>, bool)
where
    B: Body<Data = Bytes> + Send + 'static,
{
    if mode == Finish::Head {
        return (res.map(CacheBody::passthrough), false);
    }
    // A failed background revalidation must not replace the stale response it was refreshing.
    let may_mark = mode == Finish::Client;
    let plan = match storable(cfg, res.status(), res.headers(), credentials) {
        Ok(plan) => plan,
        Err(reason) => {
            shared.stats.not_stored.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(cache = %cfg.store.name, key = primary, reason, "response not storable");
            if may_mark && reason != "credentials" {
                mark_pass(shared, cfg, primary).await;
            }
            return (res.map(CacheBody::passthrough), false);
        }
    };
    let cap = cfg.max_body_bytes;
    let declared = res
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = res.into_parts();
    if declared.is_some_and(|n| n > cap as u64) || body.size_hint().lower() > cap as u64 {
        shared.stats.too_large.fetch_add(1, Ordering::Relaxed);
        if may_mark {
            mark_pass(shared, cfg, primary).await;
        }
        return (
            Response::from_parts(parts, CacheBody::passthrough(body)),
            false,
        );
    }
    let mut body = Box::pin(body);
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
                    if have + data.len() > cap {
                        shared.stats.too_large.fetch_add(1, Ordering::Relaxed);
                        if may_mark {
                            mark_pass(shared, cfg, primary).await;
                        }
                        let mut prefix = BytesMut::with_capacity(have + data.len());
                        if let Some(f) = first.take() {
                            prefix.extend_from_slice(&f);
                        }
                        prefix.extend_from_slice(&buf);
                        prefix.extend_from_slice(&data);
                        let body = CacheBody::prefixed_boxed(prefix.freeze(), body);
                        return (Response::from_parts(parts, body), false);
                    }
                    if first.is_none() && buf.is_empty() {
                        first = Some(data);
                    } else {
                        if let Some(f) = first.take() {
                            buf.extend_from_slice(&f);
                        }
                        buf.extend_from_slice(&data);
                    }
                }
                Err(frame) => {
                    let prefix = first.take().unwrap_or_else(|| buf.split().freeze());
                    shared.stats.not_stored.fetch_add(1, Ordering::Relaxed);
                    let body = match frame.into_trailers() {
                        Ok(trailers) => CacheBody::with_trailers(prefix, trailers),
                        Err(_) => CacheBody::full(prefix),
                    };
                    return (Response::from_parts(parts, body), false);
                }
            },
            Some(Err(error)) => {
                let prefix = first.take().unwrap_or_else(|| buf.split().freeze());
                return (
                    Response::from_parts(parts, CacheBody::failed(prefix, error)),
                    false,
                );
            }
        }
    }
    let bytes = first.unwrap_or_else(|| buf.freeze());
    let stored = Arc::new(StoredResponse {
        status: parts.status,
        headers: stored_headers(&parts.headers, bytes.len()),
        body: bytes.clone(),
        swr: plan.swr,
        sie: plan.sie,
        hot: arc_swap::ArcSwapOption::empty(),
    });
    let opts = EntryOptions {
        ttl: Some(plan.fresh),
        max_stale: Some(plan.swr.max(plan.sie)),
    };
    let key = if plan.vary.is_empty() {
        primary.to_owned()
    } else {
        let key = secondary_key(primary, &plan.vary, req_headers);
        shared
            .cache
            .set_str(
                primary,
                Some(HttpEntry::Vary(plan.vary.into())),
                opts,
                plan.age,
                Write::Shared,
            )
            .await;
        key
    };
    shared
        .cache
        .set_str(
            &key,
            Some(HttpEntry::Response(stored)),
            opts,
            plan.age,
            Write::Shared,
        )
        .await;
    shared.stats.stored.inc();
    (Response::from_parts(parts, CacheBody::full(bytes)), true)
}

/// Remembers (on this node) that the URI's responses are not storable, so concurrent misses
/// stop queueing behind each other.
async fn mark_pass(shared: &Shared, cfg: &ResponseCacheConfig, primary: &str) {
    let ttl = Duration::from_millis(cfg.pass_ttl_ms.min(cfg.store.ttl_ms));
    shared
        .cache
        .set_str(
            primary,
            Some(HttpEntry::Pass),
            EntryOptions {
                ttl: Some(ttl),
                max_stale: Some(Duration::ZERO),
            },
            Duration::ZERO,
            Write::Local,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_end_the_uri_and_include_vary_values() {
        let cfg = ResponseCacheConfig::default();
        let req = Request::get("http://Example.COM/names?x=1")
            .body(())
            .unwrap();
        let p = primary_key(&cfg, &req);
        assert_eq!(p, "GET example.com/names?x=1 ");
        let mut h = HeaderMap::new();
        h.append("accept-language", HeaderValue::from_static(" en "));
        h.append("accept-language", HeaderValue::from_static("fr"));
        let names = [HeaderName::from_static("accept-language")];
        assert_eq!(
            secondary_key(&p, &names, &h),
            "GET example.com/names?x=1 accept-language=en,fr\n"
        );
        let no_host = ResponseCacheConfig {
            include_host: false,
            ..cfg
        };
        assert_eq!(primary_key(&no_host, &req), "GET /names?x=1 ");
    }

    #[test]
    fn vary_star_is_refused_and_names_are_normalized() {
        let mut h = HeaderMap::new();
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept-Language, accept-encoding"),
        );
        let names = vary_names(&h).unwrap();
        assert_eq!(names[0], "accept-encoding");
        assert_eq!(names[1], "accept-language");
        h.insert(header::VARY, HeaderValue::from_static("*"));
        assert!(vary_names(&h).is_err());
    }

    #[test]
    fn cache_status_members_are_well_formed() {
        let s = Status {
            fwd: Some("stale"),
            fwd_status: Some(503),
            ttl: Some(-4),
            detail: Some("stale-if-error"),
            ..Status::default()
        };
        assert_eq!(
            s.header("palisade"),
            "palisade; fwd=stale; fwd-status=503; ttl=-4; detail=stale-if-error"
        );
        let mut s = Status::fwd("miss");
        s.stored = true;
        assert_eq!(s.header("palisade"), "palisade; fwd=miss; stored");
    }

    #[test]
    fn storability_follows_the_directives() {
        let cfg = ResponseCacheConfig::default();
        let h = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(v));
            h
        };
        let ok = StatusCode::OK;
        assert!(storable(&cfg, ok, &h("max-age=5"), false).is_ok());
        assert_eq!(
            storable(&cfg, ok, &h("no-store, max-age=5"), false).err(),
            Some("directive")
        );
        assert_eq!(
            storable(&cfg, ok, &h("private, max-age=5"), false).err(),
            Some("directive")
        );
        assert_eq!(
            storable(&cfg, ok, &h("no-cache, max-age=5"), false).err(),
            Some("directive")
        );
        assert_eq!(
            storable(&cfg, ok, &h("max-age=5"), true).err(),
            Some("credentials")
        );
        assert!(storable(&cfg, ok, &h("public, max-age=5"), true).is_ok());
        assert_eq!(
            storable(&cfg, ok, &HeaderMap::new(), false).err(),
            Some("no-freshness")
        );
        assert_eq!(
            storable(
                &cfg,
                StatusCode::INTERNAL_SERVER_ERROR,
                &h("max-age=5"),
                false
            )
            .err(),
            Some("status")
        );
        let mut aged = h("max-age=5");
        aged.insert(header::AGE, HeaderValue::from_static("9"));
        assert_eq!(storable(&cfg, ok, &aged, false).err(), Some("stale"));
        let s = storable(
            &cfg,
            ok,
            &h("max-age=5, stale-while-revalidate=3, stale-if-error=60"),
            false,
        )
        .unwrap();
        assert_eq!(
            (s.swr, s.sie),
            (Duration::from_secs(3), Duration::from_secs(60))
        );
        let s = storable(&cfg, ok, &h("s-maxage=5, stale-if-error=60"), false).unwrap();
        assert_eq!(s.sie, Duration::ZERO, "s-maxage forbids serving stale");
    }

    #[test]
    fn hop_by_hop_fields_are_not_stored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-private-hop"),
        );
        h.insert("x-private-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AGE, HeaderValue::from_static("3"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let out = stored_headers(&h, 12);
        assert_eq!(out.len(), 2);
        assert_eq!(out[header::CONTENT_LENGTH], "12");
    }
}
