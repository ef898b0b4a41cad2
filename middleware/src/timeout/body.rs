//! [`TimeoutBody`]: the request body, watched so a timeout can tell a slow client (408) from a
//! slow handler (504).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// What the handler last saw of the request body.
#[derive(Debug)]
pub(crate) struct BodyState(AtomicU8);

const IDLE: u8 = 0;
const WAITING: u8 = 1;
const DONE: u8 = 2;

impl BodyState {
    pub(crate) fn new(done: bool) -> Self {
        Self(AtomicU8::new(if done { DONE } else { IDLE }))
    }

    /// Whether the handler is waiting for body bytes the client has not sent yet.
    pub(crate) fn waiting_for_client(&self) -> bool {
        self.0.load(Ordering::Acquire) == WAITING
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }
}

pin_project! {
    /// The request body handed to the service inside a [`Timeout`](super::Timeout): the
    /// original body, unchanged, remembering whether the handler is waiting for the client.
    #[derive(Debug)]
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        state: Option<Arc<BodyState>>,
    }
}

impl<B> TimeoutBody<B> {
    pub(crate) fn untracked(inner: B) -> Self {
        Self { inner, state: None }
    }

    pub(crate) fn tracked(inner: B, state: Arc<BodyState>) -> Self {
        Self {
            inner,
            state: Some(state),
        }
    }

    /// The original body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for TimeoutBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(state) = this.state {
            match &polled {
                Poll::Pending => state.set(WAITING),
                Poll::Ready(None | Some(Err(_))) => state.set(DONE),
                Poll::Ready(Some(Ok(_))) => state.set(IDLE),
            }
        }
        polled
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
