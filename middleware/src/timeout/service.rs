//! [`Timeout`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::body::{BodyState, TimeoutBody};
use super::future::ResponseFuture;
use super::shared::Shared;

/// The service built by [`TimeoutLayer`](super::TimeoutLayer): races each call against the
/// current deadline. See the [module docs](super).
///
/// Readiness is the inner service's (the deadline starts at `call`). The request body reaches
/// the inner service as a [`TimeoutBody`].
pub struct Timeout<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Timeout<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    define_inner_service_accessors!();
}

impl<S: Clone> Clone for Timeout<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), Arc::clone(&self.shared))
    }
}

impl<S: fmt::Debug> fmt::Debug for Timeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Timeout<S>
where
    S: Service<Request<TimeoutBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body,
    ResB: From<Bytes>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.shared.timeout_for(req.uri().path()) {
            None => ResponseFuture::passthrough(self.inner.call(req.map(TimeoutBody::untracked))),
            Some(timeout_ms) => {
                // A request without a body (most GETs) never waits for its client: no state.
                let (req, body) = if req.body().is_end_stream() {
                    (req.map(TimeoutBody::untracked), None)
                } else {
                    let body = Arc::new(BodyState::new(false));
                    (
                        req.map(|b| TimeoutBody::tracked(b, Arc::clone(&body))),
                        Some(body),
                    )
                };
                let fut = self.inner.call(req);
                ResponseFuture::timed(fut, body, Arc::clone(&self.shared), timeout_ms)
            }
        }
    }
}
