//! [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::CallPermit;
use super::classify::Classify;
use super::error::CircuitOpen;
use super::layer::Mode;

pin_project! {
    /// The response future of [`CircuitBreakerService`](super::CircuitBreakerService): either a
    /// ready refusal or the inner call holding its permit (and, with `call_timeout_ms`, a boxed
    /// timer; without a timeout nothing is boxed). Dropping it before completion counts the call
    /// as cancelled.
    #[project = Proj]
    pub struct ResponseFuture<F, C, M> {
        #[pin]
        kind: Kind<F, C>,
        _mode: PhantomData<fn() -> M>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Rejected { open: CircuitOpen },
        Called {
            #[pin]
            fut: F,
            // Boxed: `Sleep` is large and would make every response future (and its moves)
            // large even without a timeout; only calls with `call_timeout_ms` allocate it.
            sleep: Option<Pin<Box<Sleep>>>,
            permit: Option<CallPermit>,
            classifier: C,
            timeout: Duration,
        },
    }
}

impl<F, C, M> fmt::Debug for ResponseFuture<F, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Called { .. } => "called",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, C, M> ResponseFuture<F, C, M> {
    #[inline]
    pub(crate) fn rejected(open: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { open },
            _mode: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn called(
        fut: F,
        permit: CallPermit,
        classifier: C,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            kind: Kind::Called {
                fut,
                sleep: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
                permit: Some(permit),
                classifier,
                timeout: timeout.unwrap_or_default(),
            },
            _mode: PhantomData,
        }
    }
}

impl<F, C, M, Res, E> Future for ResponseFuture<F, C, M>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
    M: Mode<Res, E>,
{
    type Output = Result<Res, M::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { open } => Poll::Ready(M::open(open.clone())),
            KindProj::Called {
                fut,
                sleep,
                permit,
                classifier,
                timeout,
            } => {
                if let Poll::Ready(result) = fut.poll(cx) {
                    if let Some(permit) = permit.take() {
                        permit.record(classifier.classify(&result));
                    }
                    return Poll::Ready(result.map_err(M::inner));
                }
                if let Some(sleep) = sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                    let name = match permit.take() {
                        Some(permit) => {
                            let name = permit.breaker().name().to_owned();
                            permit.record_timeout();
                            name
                        }
                        None => String::new(),
                    };
                    return Poll::Ready(M::timeout(&name, *timeout));
                }
                Poll::Pending
            }
        }
    }
}
