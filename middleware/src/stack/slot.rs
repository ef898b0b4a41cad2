//! Pieces of the stack's composition that appear in its types. Using a [`Stack`](crate::Stack)
//! never needs them by name.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::Service;

use crate::cache::response::CacheBody;

/// The response cache's place in a stack built without one: passes requests through and hands
/// the inner body on as a [`CacheBody`], so the layers outside see one body type either way.
#[derive(Debug, Clone)]
pub struct Uncached<S> {
    inner: S,
}

impl<S> Uncached<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }

    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Uncached<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = UncachedFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        UncachedFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`Uncached`].
    #[derive(Debug)]
    pub struct UncachedFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for UncachedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(res.map(CacheBody::passthrough)))
    }
}

/// The request timeout's place in a stack built without one: hands the request body on as an
/// untracked [`TimeoutBody`](crate::timeout::TimeoutBody), so the service sees one request body
/// type either way.
#[derive(Debug, Clone)]
pub struct Untimed<S> {
    inner: S,
}

impl<S> Untimed<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }

    define_inner_service_accessors!();
}

impl<S, ReqBody> Service<Request<ReqBody>> for Untimed<S>
where
    S: Service<Request<crate::timeout::TimeoutBody<ReqBody>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.inner
            .call(req.map(crate::timeout::TimeoutBody::untracked))
    }
}
