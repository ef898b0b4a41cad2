//! [`ResponseFuture`]: a refusal, or the inner call holding its slot.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::service::Admitted;

pin_project! {
    /// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit): a ready `503`
    /// refusal, the inner future alone (limit off or path exempt), or the inner future holding
    /// its slot. The slot is given back when the response head is ready, or when this future
    /// is dropped (a client that went away, a timeout around it).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Rejected { response: Option<Response<B>> },
        Passthrough { #[pin] fut: F },
        Admitted {
            #[pin]
            fut: F,
            admitted: Option<Admitted>,
        },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Passthrough { .. } => "passthrough",
            Kind::Admitted { .. } => "admitted",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B> ResponseFuture<F, B> {
    #[inline]
    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }

    #[inline]
    pub(crate) fn passthrough(fut: F) -> Self {
        Self {
            kind: Kind::Passthrough { fut },
        }
    }

    #[inline]
    pub(crate) fn admitted(fut: F, admitted: Admitted) -> Self {
        Self {
            kind: Kind::Admitted {
                fut,
                admitted: Some(admitted),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                // Polled after completion (a caller bug): never resolve twice, never panic.
                None => Poll::Pending,
            },
            KindProj::Passthrough { fut } => fut.poll(cx),
            KindProj::Admitted { fut, admitted } => {
                let out = std::task::ready!(fut.poll(cx));
                if let Some(admitted) = admitted.take() {
                    admitted.finish(&out);
                }
                Poll::Ready(out)
            }
        }
    }
}
