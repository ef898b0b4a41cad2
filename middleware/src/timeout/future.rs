//! [`ResponseFuture`]: the inner call, raced against the deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::body::BodyState;
use super::shared::Shared;
use crate::problem::Problem;

pin_project! {
    /// The response future of [`Timeout`](super::Timeout): the inner future alone (timeout off
    /// or path exempt), or the inner future raced against a timer. At the deadline the inner
    /// future is dropped at once (releasing whatever it holds) and the future answers `504`, or
    /// `408` when the service was waiting for the request body. Dropping it before either
    /// happens counts the request as cancelled.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let KindProj::Timed { shared, .. } = this.project().kind.project() {
                shared.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    #[project_replace = KindReplace]
    enum Kind<F> {
        Passthrough { #[pin] fut: F },
        Timed {
            #[pin]
            fut: F,
            #[pin]
            sleep: Sleep,
            body: Option<Arc<BodyState>>,
            shared: Arc<Shared>,
            timeout_ms: u64,
        },
        Done,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Timed { .. } => "timed",
            Kind::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn passthrough(fut: F) -> Self {
        Self {
            kind: Kind::Passthrough { fut },
        }
    }

    #[inline]
    pub(crate) fn timed(
        fut: F,
        body: Option<Arc<BodyState>>,
        shared: Arc<Shared>,
        timeout_ms: u64,
    ) -> Self {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        Self {
            kind: Kind::Timed {
                fut,
                sleep: tokio::time::sleep_until(deadline),
                body,
                shared,
                timeout_ms,
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<Bytes>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        let (client, shared, timeout_ms) = match kind.as_mut().project() {
            KindProj::Passthrough { fut } => return fut.poll(cx),
            KindProj::Timed {
                fut,
                sleep,
                body,
                shared,
                timeout_ms,
            } => {
                if let Poll::Ready(out) = fut.poll(cx) {
                    shared.counters.completed.fetch_add(1, Ordering::Relaxed);
                    kind.project_replace(Kind::Done);
                    return Poll::Ready(out);
                }
                if sleep.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                (
                    body.as_ref().is_some_and(|b| b.waiting_for_client()),
                    Arc::clone(shared),
                    *timeout_ms,
                )
            }
            KindProj::Done => {
                // Polled after completion (a caller bug): never resolve twice, never panic.
                return Poll::Pending;
            }
        };
        // Drop the inner future now: whatever it holds (a connection, a permit) is released
        // before the refusal is even written.
        kind.project_replace(Kind::Done);
        let res = if client {
            shared
                .counters
                .client_timed_out
                .fetch_add(1, Ordering::Relaxed);
            shared.metrics.client_timed_out.increment(1);
            tracing::debug!(layer = "timeout", name = %shared.name, timeout_ms, "request body not received in time");
            let mut res = Problem::new(StatusCode::REQUEST_TIMEOUT, "Request Timeout")
                .detail(format!(
                    "the request body did not arrive within {timeout_ms} ms"
                ))
                .with("timeout_ms", timeout_ms)
                .into_response::<B>();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        } else {
            shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            shared.metrics.timed_out.increment(1);
            tracing::debug!(layer = "timeout", name = %shared.name, timeout_ms, "request timed out");
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
                .detail(format!(
                    "the request did not complete within {timeout_ms} ms"
                ))
                .with("timeout_ms", timeout_ms)
                .into_response::<B>()
        };
        Poll::Ready(Ok(res))
    }
}
