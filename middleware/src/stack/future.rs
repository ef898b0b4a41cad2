//! [`ResponseFuture`] of a stacked service: one future for every layer of the stack.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Response, header};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::StackBody;
use crate::cache::response::CacheBody;
use crate::circuit_breaker::{CallPermit, Classify, HttpClassifier};
use crate::concurrency::Admitted;
use crate::observe::{LogIds, Scope, State};
use crate::rate_limit::{LimitHeaders, add_headers};
use crate::shutdown::{DrainBody, DrainGuard};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of a [`StackService`](super::StackService).
    pub struct ResponseFuture<F: Future, B: Body> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F: Future, B: Body> {
        Run {
            #[pin]
            core: Core<F, B>,
            // The drain counts the request until its body ends.
            guard: Option<DrainGuard>,
            http1: bool,
            // Observe: what it finishes with the response, and what it logs with.
            observe: Option<State>,
            span: tracing::Span,
            ids: Option<LogIds>,
        },
        Refused { response: Option<Response<StackBody<B>>> },
    }
}

impl<F: Future, B: Body> ResponseFuture<F, B> {
    pub(crate) fn new(
        core: Core<F, B>,
        guard: DrainGuard,
        http1: bool,
        observe: Option<State>,
        span: tracing::Span,
        ids: Option<LogIds>,
    ) -> Self {
        Self {
            kind: Kind::Run {
                core,
                guard: Some(guard),
                http1,
                observe,
                span,
                ids,
            },
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

impl<F: Future, B: Body> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<CacheBody<B>>, E>>,
    B: Body<Data = bytes::Bytes>,
    E: fmt::Display,
{
    type Output = Result<Response<StackBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Run {
                core,
                guard,
                http1,
                observe,
                span,
                ids,
            } => {
                // The request's ids for every event written while it is polled (see `log_ids`).
                let _ids = Scope::enter(ids);
                let mut result = {
                    let _entered = span.enter();
                    ready!(core.poll(cx))
                };
                if let Some(state) = observe.take() {
                    state.complete(span, &mut result);
                }
                let mut res = result?;
                let guard = guard.take();
                if *http1 && guard.as_ref().is_some_and(|g| g.shared().is_closing()) {
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Poll::Ready(Ok(
                    res.map(|body| StackBody::new(DrainBody::new(body, guard)))
                ))
            }
            KindProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: the contract allows anything but undefined behaviour.
                None => Poll::Pending,
            },
        }
    }
}

pin_project! {
    /// The rate-limited part of a request: the call with the limiter's headers to add, or the
    /// whole rest of the request boxed when a policy's store answers asynchronously.
    #[project = CoreProj]
    pub(crate) enum Core<F: Future, B: Body> {
        Called { #[pin] called: Called<F, B>, headers: LimitHeaders },
        Boxed { fut: BoxFuture<F::Output> },
    }
}

impl<F: Future, B: Body> Core<F, B> {
    pub(crate) fn called(called: Called<F, B>, headers: LimitHeaders) -> Self {
        Self::Called { called, headers }
    }

    pub(crate) fn boxed(fut: BoxFuture<F::Output>) -> Self {
        Self::Boxed { fut }
    }

    /// The limiter's refusal: a refused call, with no headers to add.
    pub(crate) fn refused(response: Response<CacheBody<B>>) -> Self {
        Self::called(Called::refused(response, None), None)
    }
}

impl<F, B, E> Future for Core<F, B>
where
    F: Future<Output = Result<Response<CacheBody<B>>, E>>,
    B: Body,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CoreProj::Called { called, headers } => {
                let mut res = ready!(called.poll(cx))?;
                if let Some(h) = headers.take() {
                    add_headers(&mut res, h);
                }
                Poll::Ready(Ok(res))
            }
            CoreProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

/// A call the breaker admitted: its permit, and its own deadline when the breaker has a
/// `call_timeout`.
pub(crate) struct BreakerCall {
    permit: Option<CallPermit>,
    // Boxed: `Sleep` is large and would make every response future (and its moves) large even
    // without a timeout; only calls with `call_timeout_ms` allocate it.
    sleep: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl BreakerCall {
    pub(crate) fn new(permit: CallPermit) -> Self {
        let timeout = permit.breaker().call_timeout();
        Self {
            permit: Some(permit),
            sleep: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            timeout: timeout.unwrap_or_default(),
        }
    }
}

pin_project! {
    /// The call past the concurrency limit and the breaker, or their refusal.
    #[project = CalledProj]
    pub(crate) enum Called<F, B: Body> {
        Running {
            #[pin]
            fut: F,
            admitted: Option<Admitted>,
            breaker: Option<BreakerCall>,
        },
        Refused {
            response: Option<Response<CacheBody<B>>>,
            admitted: Option<Admitted>,
        },
    }
}

impl<F, B: Body> Called<F, B> {
    pub(crate) fn running(
        fut: F,
        admitted: Option<Admitted>,
        breaker: Option<BreakerCall>,
    ) -> Self {
        Self::Running {
            fut,
            admitted,
            breaker,
        }
    }

    pub(crate) fn refused(response: Response<CacheBody<B>>, admitted: Option<Admitted>) -> Self {
        Self::Refused {
            response: Some(response),
            admitted,
        }
    }
}

impl<F, B, E> Future for Called<F, B>
where
    F: Future<Output = Result<Response<CacheBody<B>>, E>>,
    B: Body,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (out, admitted) = match self.project() {
            CalledProj::Running {
                fut,
                admitted,
                breaker,
            } => match fut.poll(cx) {
                Poll::Ready(out) => {
                    if let Some(permit) = breaker.as_mut().and_then(|b| b.permit.take()) {
                        permit.record(HttpClassifier.classify(&out));
                    }
                    (out, admitted)
                }
                Poll::Pending => {
                    let Some(call) = breaker.as_mut() else {
                        return Poll::Pending;
                    };
                    let Some(sleep) = call.sleep.as_mut() else {
                        return Poll::Pending;
                    };
                    ready!(sleep.as_mut().poll(cx));
                    let name = match call.permit.take() {
                        Some(permit) => {
                            let name = permit.breaker().name().to_owned();
                            permit.record_timeout();
                            name
                        }
                        None => String::new(),
                    };
                    (
                        Ok(crate::circuit_breaker::timeout_response(
                            &name,
                            call.timeout,
                        )),
                        admitted,
                    )
                }
            },
            CalledProj::Refused { response, admitted } => match response.take() {
                Some(response) => (Ok(response), admitted),
                None => return Poll::Pending,
            },
        };
        if let Some(admitted) = admitted.take() {
            admitted.finish(&out);
        }
        Poll::Ready(out)
    }
}
