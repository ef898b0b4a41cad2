//! [`RateLimit`]: the service. Evaluates every policy that applies; all must pass.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::Service;

use super::config::{HeaderMode, Mode};
use super::future::{ResponseFuture, add_headers};
use super::gcra::{Decision, Gcra};
use super::headers::HeaderAcc;
use super::key::KeyValue;
use super::state::{PolicyState, ReqView, Shared};
use super::store::Check;
use crate::problem::Problem;

/// The RFC 9457 problem type of a 429 (draft-ietf-httpapi-ratelimit-headers §5.1).
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// Rate-limits an inner service; see the [module docs](super).
///
/// Cloning shares all state (one `Arc`), so per-request clones, as axum makes, never reset a
/// limit.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    define_inner_service_accessors!();
}

/// What the synchronous stage decided.
enum Stage {
    /// Exempt, or no policy applied: call the inner service as is.
    Pass,
    /// Synchronous policies passed; `pending` lists asynchronous policies still to check.
    Allowed {
        allowed_mask: u64,
        acc: HeaderAcc,
        pending: bool,
    },
    /// Rejected, already refunded and counted.
    Rejected {
        violated: Vec<Arc<str>>,
        retry_after: Duration,
        acc: HeaderAcc,
    },
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match admit(&self.shared, &req) {
            Admit::Pass(headers) => ResponseFuture::inner(self.inner.call(req), headers),
            Admit::Refused(response) => ResponseFuture::rejected(response),
            Admit::Async(pending) => {
                // Take the service that was driven to readiness; leave a clone in its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::boxed(Box::pin(async move {
                    let headers = match pending.run().await {
                        Ok(headers) => headers,
                        Err(refused) => return Ok(refused),
                    };
                    let mut res = inner.call(req).await?;
                    if let Some(h) = headers {
                        add_headers(&mut res, h);
                    }
                    Ok(res)
                }))
            }
        }
    }
}

/// The `RateLimit-Policy` and `RateLimit` values to add to an admitted request's response.
pub(crate) type LimitHeaders = Option<(HeaderValue, HeaderValue)>;

/// The rate limiter's decision on a request, as far as it can be taken without waiting.
pub(crate) enum Admit<B> {
    /// Admitted (or exempt, or no policy applies): go on, then add these headers.
    Pass(LimitHeaders),
    /// Refused: answer this (`429`).
    Refused(Response<B>),
    /// Every synchronous policy admitted it; policies with a remote store still have to.
    /// Boxed: only requests to a remote store take this path, and it is large.
    Async(Box<Pending>),
}

/// Decides on a request with every synchronous store; see [`Admit`]. Shared by [`RateLimit`]
/// and the stack's one service.
pub(crate) fn admit<ReqBody, B: From<Bytes>>(
    shared: &Arc<Shared>,
    req: &Request<ReqBody>,
) -> Admit<B> {
    let view = ReqView {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        extensions: req.extensions(),
    };
    let ip = if shared.needs_ip {
        shared.client_ip.resolve(view.headers, view.extensions)
    } else {
        None
    };
    match evaluate_sync(shared, &view, ip) {
        Stage::Pass => Admit::Pass(None),
        Stage::Rejected {
            violated,
            retry_after,
            acc,
        } => Admit::Refused(rejection(shared, &violated, retry_after, &acc)),
        Stage::Allowed {
            allowed_mask,
            acc,
            pending,
        } => {
            let checks = if pending {
                async_checks(shared, &view, ip)
            } else {
                Vec::new()
            };
            if checks.is_empty() {
                count_allowed(shared, allowed_mask);
                return Admit::Pass(match shared.headers {
                    HeaderMode::All => acc.values(),
                    _ => None,
                });
            }
            Admit::Async(Box::new(Pending {
                shared: Arc::clone(shared),
                refunds: owned_keys(shared, &view, ip, allowed_mask),
                allowed_mask,
                acc,
                checks,
            }))
        }
    }
}

/// The checks of a request against policies with a remote store, still to be made.
pub(crate) struct Pending {
    shared: Arc<Shared>,
    allowed_mask: u64,
    acc: HeaderAcc,
    refunds: Vec<(usize, KeyValue<'static>)>,
    checks: Vec<(usize, KeyValue<'static>)>,
}

impl Pending {
    /// Makes the remaining checks: the headers to add when every policy admits the request,
    /// else the `429` (and what the synchronous policies took is refunded).
    pub(crate) async fn run<B: From<Bytes>>(self: Box<Self>) -> Result<LimitHeaders, Response<B>> {
        let Self {
            shared,
            mut allowed_mask,
            mut acc,
            refunds,
            checks,
        } = *self;
        let mut taken: Vec<(usize, &KeyValue<'static>, Gcra)> = Vec::new();
        for (i, key) in &checks {
            let p = &shared.policies[*i];
            let cur = p.current.load_full();
            let d = match p.store.check(key, &cur.gcra, 1) {
                Check::Ready(d) => d,
                Check::Pending(fut) => fut.await,
            };
            let mode = cur.limits.mode;
            if d.allowed {
                allowed_mask |= 1 << i;
                taken.push((*i, key, cur.gcra));
                if mode == Mode::Enforce {
                    acc.push(&p.name, &cur, &d);
                }
            } else if mode == Mode::Shadow {
                count_shadow(p, key);
            } else {
                acc.push(&p.name, &cur, &d);
                for (j, k, g) in &taken {
                    shared.policies[*j].store.refund(k, g, 1);
                }
                for (j, k) in &refunds {
                    let q = &shared.policies[*j];
                    q.store.refund(k, &q.current.load().gcra, 1);
                }
                p.counters.rejected.fetch_add(1, Ordering::Relaxed);
                p.metrics.rejected.increment(1);
                tracing::debug!(layer = "rate_limit", policy = %p.name, "request rejected");
                return Err(rejection(
                    &shared,
                    std::slice::from_ref(&p.name),
                    d.retry_after,
                    &acc,
                ));
            }
        }
        count_allowed(&shared, allowed_mask);
        Ok(match shared.headers {
            HeaderMode::All => acc.values(),
            _ => None,
        })
    }
}

fn evaluate_sync(shared: &Shared, view: &ReqView<'_>, ip: Option<IpAddr>) -> Stage {
    let path = view.uri.path();
    if shared.exempt_paths.iter().any(|p| p.matches(path))
        || ip.is_some_and(|ip| shared.exempt_cidrs.iter().any(|n| n.contains(&ip)))
    {
        shared.count_exempt();
        return Stage::Pass;
    }
    let mut acc = HeaderAcc::new();
    let mut allowed_mask = 0u64;
    let mut any = false;
    for (pos, &i) in shared.sync_order.iter().enumerate() {
        let p = &shared.policies[i];
        let cur = p.current.load();
        let mode = cur.limits.mode;
        if mode == Mode::Off || !p.applies(view.method, path) {
            continue;
        }
        let Some(key) = p.key_of(view, ip, &shared.client_ip) else {
            continue;
        };
        any = true;
        let d = match p.store.check(&key, &cur.gcra, 1) {
            Check::Ready(d) => d,
            // A synchronous store answering asynchronously is a bug in that store; do not block
            // the request on it.
            Check::Pending(_) => continue,
        };
        if d.allowed {
            allowed_mask |= 1 << i;
            if mode == Mode::Enforce {
                acc.push(&p.name, &cur, &d);
            }
        } else if mode == Mode::Shadow {
            count_shadow(p, &key);
        } else {
            acc.push(&p.name, &cur, &d);
            drop(cur);
            refund_mask(shared, view, ip, allowed_mask);
            let (violated, retry_after) =
                violations(shared, view, ip, p, d, &shared.sync_order[pos + 1..]);
            return Stage::Rejected {
                violated,
                retry_after,
                acc,
            };
        }
    }
    let pending = shared.async_order.iter().any(|&i| {
        let p = &shared.policies[i];
        p.current.load().limits.mode != Mode::Off && p.applies(view.method, path)
    });
    if !any && !pending {
        return Stage::Pass;
    }
    Stage::Allowed {
        allowed_mask,
        acc,
        pending,
    }
}

fn count_shadow(p: &PolicyState, key: &KeyValue<'_>) {
    p.counters.shadow_rejected.fetch_add(1, Ordering::Relaxed);
    p.metrics.shadow_rejected.increment(1);
    tracing::debug!(layer = "rate_limit", policy = %p.name, key = ?key, "shadow rejection");
}

fn count_allowed(shared: &Shared, mut mask: u64) {
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let p = &shared.policies[i];
        p.counters.allowed.fetch_add(1, Ordering::Relaxed);
        p.metrics.allowed.increment(1);
    }
}

/// Gives back the cells taken by synchronous policies of an eventually rejected request.
fn refund_mask(shared: &Shared, view: &ReqView<'_>, ip: Option<IpAddr>, mut mask: u64) {
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let p = &shared.policies[i];
        if let Some(key) = p.key_of(view, ip, &shared.client_ip) {
            p.store.refund(&key, &p.current.load().gcra, 1);
        }
    }
}

/// Counts the rejection and, without consuming, finds other enforced synchronous policies that
/// would reject too, so `Retry-After` is the longest wait (pubky-homeserver#548).
fn violations(
    shared: &Shared,
    view: &ReqView<'_>,
    ip: Option<IpAddr>,
    rejecting: &PolicyState,
    d: Decision,
    rest: &[usize],
) -> (Vec<Arc<str>>, Duration) {
    rejecting.counters.rejected.fetch_add(1, Ordering::Relaxed);
    rejecting.metrics.rejected.increment(1);
    tracing::debug!(layer = "rate_limit", policy = %rejecting.name, "request rejected");
    let mut violated = vec![Arc::clone(&rejecting.name)];
    let mut wait = d.retry_after;
    for &i in rest {
        let p = &shared.policies[i];
        let cur = p.current.load();
        if cur.limits.mode != Mode::Enforce || !p.applies(view.method, view.uri.path()) {
            continue;
        }
        let Some(key) = p.key_of(view, ip, &shared.client_ip) else {
            continue;
        };
        if let Some(peek) = p.store.peek(&key, &cur.gcra, 1).filter(|d| !d.allowed) {
            violated.push(Arc::clone(&p.name));
            wait = wait.max(peek.retry_after);
        }
    }
    (violated, wait)
}

/// The 429 response.
fn rejection<B: From<Bytes>>(
    shared: &Shared,
    violated: &[Arc<str>],
    retry_after: Duration,
    acc: &HeaderAcc,
) -> Response<B> {
    let secs = super::gcra::ceil_secs(retry_after).max(1);
    let millis = retry_after.as_nanos().div_ceil(1_000_000).max(1);
    let names: Vec<&str> = violated.iter().map(|n| &**n).collect();
    let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
        .detail(format!("Rate limit exceeded; retry after {secs} s."))
        .with("violated-policies", &names)
        .with("retry_after_ms", millis);
    problem.kind = QUOTA_EXCEEDED;
    let mut res = problem.into_response::<B>();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    if shared.headers != HeaderMode::None
        && let Some(h) = acc.values()
    {
        add_headers(&mut res, h);
    }
    res
}

/// Owned keys of the asynchronous policies that apply.
fn async_checks(
    shared: &Shared,
    view: &ReqView<'_>,
    ip: Option<IpAddr>,
) -> Vec<(usize, KeyValue<'static>)> {
    shared
        .async_order
        .iter()
        .filter_map(|&i| {
            let p = &shared.policies[i];
            if p.current.load().limits.mode == Mode::Off || !p.applies(view.method, view.uri.path())
            {
                return None;
            }
            p.key_of(view, ip, &shared.client_ip)
                .map(|k| (i, k.into_owned()))
        })
        .collect()
}

/// Owned keys of the policies in `mask` (for refunds after an asynchronous rejection).
fn owned_keys(
    shared: &Shared,
    view: &ReqView<'_>,
    ip: Option<IpAddr>,
    mut mask: u64,
) -> Vec<(usize, KeyValue<'static>)> {
    let mut out = Vec::new();
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        if let Some(k) = shared.policies[i].key_of(view, ip, &shared.client_ip) {
            out.push((i, k.into_owned()));
        }
    }
    out
}
