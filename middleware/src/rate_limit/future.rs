//! [`ResponseFuture`]: a rejection, the inner future (plus headers to add), or the boxed
//! asynchronous path (Redis-backed policies).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;

use super::headers::{RATELIMIT, RATELIMIT_POLICY};

/// A boxed response future (the asynchronous store path).
pub(crate) type BoxResponseFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    pub struct ResponseFuture<F, B>
    where
        F: Future,
    {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B>
    where
        F: Future,
    {
        Rejected { response: Option<Response<B>> },
        Inner { #[pin] fut: F, headers: Option<(HeaderValue, HeaderValue)> },
        Boxed { fut: BoxResponseFuture<F::Output> },
    }
}

impl<F: Future, B> ResponseFuture<F, B> {
    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(fut: F, headers: Option<(HeaderValue, HeaderValue)>) -> Self {
        Self {
            kind: Kind::Inner { fut, headers },
        }
    }

    pub(crate) fn boxed(fut: BoxResponseFuture<F::Output>) -> Self {
        Self {
            kind: Kind::Boxed { fut },
        }
    }
}

impl<F: Future, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Rejected { .. } => "Rejected",
            Kind::Inner { .. } => "Inner",
            Kind::Boxed { .. } => "Boxed",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

/// Adds the `RateLimit-Policy` and `RateLimit` headers to a response.
pub(crate) fn add_headers<B>(res: &mut Response<B>, headers: (HeaderValue, HeaderValue)) {
    let h = res.headers_mut();
    h.append(RATELIMIT_POLICY.clone(), headers.0);
    h.append(RATELIMIT.clone(), headers.1);
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending,
            },
            KindProj::Inner { fut, headers } => {
                let mut res = ready!(fut.poll(cx))?;
                if let Some(h) = headers.take() {
                    add_headers(&mut res, h);
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
