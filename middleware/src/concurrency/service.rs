//! [`ConcurrencyLimit`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::Service;

use super::future::ResponseFuture;
use super::shared::{Permit, Sample, Shared};
use crate::problem::Problem;

/// The service built by [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer). See the
/// [module docs](super).
///
/// Readiness is the inner service's: the slot is taken in `call`, never in `poll_ready`, so a
/// connection that is merely open (hyper polls readiness before a request arrives) holds no
/// slot, and a request over the limit is refused at once instead of waiting.
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    define_inner_service_accessors!();
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), Arc::clone(&self.shared))
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ConcurrencyLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: From<Bytes>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match admit(&self.shared, req.uri().path()) {
            Ok(None) => ResponseFuture::passthrough(self.inner.call(req)),
            Ok(Some(admitted)) => ResponseFuture::admitted(self.inner.call(req), admitted),
            Err(response) => ResponseFuture::rejected(response),
        }
    }
}

/// A request admitted under the limit: holds its place until dropped.
pub(crate) struct Admitted {
    permit: Permit,
    /// Set only for AIMD, which needs the latency.
    started: Option<tokio::time::Instant>,
}

impl Admitted {
    /// Releases the place, telling AIMD how the request went.
    pub(crate) fn finish<B, E>(self, out: &Result<Response<B>, E>) {
        let Self { permit, started } = self;
        if let Some(started) = started {
            let slow = permit
                .shared
                .aimd_threshold()
                .is_some_and(|t| started.elapsed() > t);
            let overloaded = matches!(
                out,
                Ok(res) if res.status() == StatusCode::SERVICE_UNAVAILABLE
                    || res.status() == StatusCode::GATEWAY_TIMEOUT
            );
            let sample = if slow || overloaded || out.is_err() {
                Sample::Drop
            } else {
                Sample::Good {
                    in_flight: permit.in_flight,
                }
            };
            permit.shared.sample(sample);
        }
    }
}

/// Admits a request to `path` (`Ok(None)`: the path bypasses the limit) or sheds it with a
/// `503`. Shared by [`ConcurrencyLimit`] and the stack's one service.
#[inline]
pub(crate) fn admit<B: From<Bytes>>(
    shared: &Arc<Shared>,
    path: &str,
) -> Result<Option<Admitted>, Response<B>> {
    if shared.bypass(path) {
        return Ok(None);
    }
    match shared.try_acquire() {
        Some(in_flight) => Ok(Some(Admitted {
            started: shared.aimd_threshold().map(|_| tokio::time::Instant::now()),
            permit: Permit {
                shared: Arc::clone(shared),
                in_flight,
            },
        })),
        None => Err(overloaded(shared)),
    }
}

fn overloaded<B: From<Bytes>>(shared: &Shared) -> Response<B> {
    let retry_after = shared.settings.load().retry_after_secs;
    let limit = shared.limit.load(std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(layer = "concurrency", name = %shared.name, limit, "request shed");
    let mut res = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        .detail(format!(
            "{limit} requests are already in flight; retry after {retry_after} s"
        ))
        .with("limit", limit)
        .with("retry_after_ms", u64::from(retry_after) * 1000)
        .into_response::<B>();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    res
}
