//! The response future of [`DrainService`](super::DrainService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Response, header};
use pin_project_lite::pin_project;

use super::body::DrainBody;
use super::drain::DrainGuard;

pin_project! {
    /// The response future of [`DrainService`](super::DrainService).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<DrainGuard>,
        http1: bool,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, guard: DrainGuard, http1: bool) -> Self {
        Self {
            inner,
            guard: Some(guard),
            http1,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<DrainBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        let (mut parts, body) = res.into_parts();
        if *this.http1 && guard.as_ref().is_some_and(|g| g.shared().is_closing()) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(Response::from_parts(parts, DrainBody::new(body, guard))))
    }
}
