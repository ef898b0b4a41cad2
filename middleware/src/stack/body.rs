//! [`StackBody`]: the response body of a stacked service.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::cache::response::CacheBody;
use crate::shutdown::DrainBody;

pin_project! {
    /// The response body of a [`StackService`](super::StackService): the inner service's body
    /// (or a cached one, or a refusal), counted in flight by the drain until it ends.
    pub struct StackBody<B: Body> {
        #[pin]
        inner: DrainBody<CacheBody<B>>,
    }
}

impl<B: Body> StackBody<B> {
    pub(crate) fn new(inner: DrainBody<CacheBody<B>>) -> Self {
        Self { inner }
    }
}

impl<B: Body> fmt::Debug for StackBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBody").finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for StackBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
