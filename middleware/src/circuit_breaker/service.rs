//! [`CircuitBreakerService`].

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use tower::Service;

use super::CircuitBreaker;
use super::classify::{Classify, HttpClassifier};
use super::error::CircuitOpen;
use super::future::ResponseFuture;
use super::layer::{Inbound, Mode, SelectBreaker};

/// The service built by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// `poll_ready` refuses early: when the (single) breaker is open it returns ready without
/// polling the inner service, and the following `call` answers with the refusal, so an open
/// breaker never waits on a saturated inner service. Otherwise readiness is the inner
/// service's. `call` takes a permit; when refused the inner service is not called.
pub struct CircuitBreakerService<S, C = HttpClassifier, M = Inbound, B = CircuitBreaker> {
    inner: S,
    breakers: B,
    classifier: C,
    /// A refusal decided in `poll_ready`; per clone, so not cloned.
    shed: Option<CircuitOpen>,
    _mode: PhantomData<fn() -> M>,
}

impl<S, C, M, B> CircuitBreakerService<S, C, M, B> {
    pub(crate) fn new(inner: S, breakers: B, classifier: C) -> Self {
        Self {
            inner,
            breakers,
            classifier,
            shed: None,
            _mode: PhantomData,
        }
    }

    define_inner_service_accessors!();

    /// The breaker (or keyed breakers).
    pub fn breakers(&self) -> &B {
        &self.breakers
    }
}

impl<S: Clone, C: Clone, M, B: Clone> Clone for CircuitBreakerService<S, C, M, B> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.breakers.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C: fmt::Debug, M, B: fmt::Debug> fmt::Debug
    for CircuitBreakerService<S, C, M, B>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breakers", &self.breakers)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, C, M, B, Req> Service<Req> for CircuitBreakerService<S, C, M, B>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
    M: Mode<S::Response, S::Error>,
    B: SelectBreaker<Req>,
{
    type Response = S::Response;
    type Error = M::Error;
    type Future = ResponseFuture<S::Future, C, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.shed.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Some(open) = self.breakers.check_open() {
            self.shed = Some(open);
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(M::inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(open) = self.shed.take() {
            return ResponseFuture::rejected(open);
        }
        match self.breakers.acquire(&req) {
            Ok(permit) => {
                let timeout = permit.breaker().call_timeout();
                let fut = self.inner.call(req);
                ResponseFuture::called(fut, permit, self.classifier.clone(), timeout)
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
