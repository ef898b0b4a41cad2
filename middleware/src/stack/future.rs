//! [`ResponseFuture`] of a stacked service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::StackBody;
use crate::cache::response::CacheBody;
use crate::shutdown::DrainBody;

pin_project! {
    /// The response future of a [`StackService`](super::StackService).
    pub struct ResponseFuture<F, B: Body> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B: Body> {
        Chain { #[pin] inner: F },
        Refused { response: Option<Response<StackBody<B>>> },
    }
}

impl<F, B: Body> ResponseFuture<F, B> {
    pub(crate) fn chain(inner: F) -> Self {
        Self {
            kind: Kind::Chain { inner },
        }
    }

    pub(crate) fn refused(response: Response<StackBody<B>>) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, B: Body> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<DrainBody<CacheBody<B>>>, E>>,
    B: Body,
{
    type Output = Result<Response<StackBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Chain { inner } => {
                let res = ready!(inner.poll(cx))?;
                Poll::Ready(Ok(res.map(StackBody::new)))
            }
            KindProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: the contract allows anything but undefined behaviour.
                None => Poll::Pending,
            },
        }
    }
}
