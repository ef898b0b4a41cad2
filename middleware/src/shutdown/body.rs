//! [`DrainBody`]: keeps a request in flight until its response body is done.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::drain::DrainGuard;

pin_project! {
    /// A response body that keeps its request counted as in flight until the body ended, failed
    /// or was dropped.
    #[derive(Debug)]
    pub struct DrainBody<B> {
        #[pin]
        inner: B,
        guard: Option<DrainGuard>,
    }
}

impl<B> DrainBody<B> {
    pub(crate) fn new(inner: B, guard: Option<DrainGuard>) -> Self {
        Self { inner, guard }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body (the request stops counting as in flight).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for DrainBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            _ => {
                this.guard.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
