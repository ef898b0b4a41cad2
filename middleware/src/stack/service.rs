//! [`StackService`]: a service wrapped in every layer of a stack, as one service.
//!
//! The drain, observe, rate-limit, concurrency-limit and circuit-breaker layers do their work
//! inline here, in the stack's order, around one call of the inner service (request timeout and
//! response cache stay services: they own the inner future). Each step calls the same function
//! its own layer calls, so a stack behaves exactly like the layers nested by hand, without a
//! service, a future and a move of the request per layer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use tower::Service;
use tower::util::Either;

use super::future::{BreakerCall, Called, Core, ResponseFuture};
use super::{Parts, StackBody, Timed};
use crate::cache::response::CacheBody;
use crate::circuit_breaker::{CircuitOpen, SelectBreaker};
use crate::observe::{Begun, Scope};
use crate::problem::Problem;
use crate::rate_limit::Admit;
use crate::shutdown::DrainGuard;
use crate::timeout::TimeoutBody;

/// A service inside every layer of a [`StackLayer`](super::StackLayer). See the
/// [module docs](super).
///
/// `Clone` when the inner service is; clones share every layer's state.
pub struct StackService<S> {
    inner: Timed<S>,
    parts: Arc<Parts>,
    /// The single breaker was open when `poll_ready` looked: refuse the next call without
    /// waiting for the inner service.
    shed: Option<CircuitOpen>,
}

impl<S> StackService<S> {
    pub(crate) fn new(inner: S, parts: Arc<Parts>) -> Self {
        Self {
            inner: parts.inner(inner),
            parts,
            shed: None,
        }
    }
}

impl<S> Clone for StackService<S>
where
    Timed<S>: Clone,
{
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            parts: Arc::clone(&self.parts),
            shed: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for StackService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type InnerFuture<S, ReqBody> = <Timed<S> as Service<Request<ReqBody>>>::Future;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StackService<S>
where
    S: Service<Request<TimeoutBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Body + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    type Response = Response<StackBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<InnerFuture<S, ReqBody>, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.shed.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Some((Either::Left(one), _)) = &self.parts.circuit_breaker
            && let Some(open) = SelectBreaker::<()>::check_open(one.breakers())
        {
            self.shed = Some(open);
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shed = self.shed.take();
        let parts = &*self.parts;
        if parts.needs_peer && crate::rate_limit::peer_ip(req.extensions()).is_none() {
            return ResponseFuture::refused(missing_peer(parts));
        }
        let guard = DrainGuard::new(Arc::clone(parts.drain_layer.shared()));
        // `Connection` is an HTTP/1 header; HTTP/2 connections get GOAWAY from the server.
        let http1 = req.version() <= Version::HTTP_11;
        let (state, span, mut ids) = match &parts.observe {
            Some((layer, _)) => {
                let Begun { state, span, ids } = crate::observe::begin(layer.shared(), &mut req);
                (Some(state), span, ids)
            }
            None => (None, tracing::Span::none(), None),
        };
        let core = {
            // The request's ids and span for what the layers log while admitting it.
            let _ids = Scope::enter(&mut ids);
            let _entered = span.enter();
            admit(&self.parts, &mut self.inner, req, shed)
        };
        ResponseFuture::new(core, guard, http1, state, span, ids)
    }
}

/// Rate limit, concurrency limit, breaker, then the call: the core of the request.
fn admit<I, ReqBody, ResBody>(
    parts: &Arc<Parts>,
    inner: &mut I,
    req: Request<ReqBody>,
    shed: Option<CircuitOpen>,
) -> Core<I::Future, ResBody>
where
    I: Service<Request<ReqBody>, Response = Response<CacheBody<ResBody>>> + Clone + Send + 'static,
    I::Future: Send + 'static,
    I::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let headers = match &parts.rate_limit {
        None => None,
        Some((layer, _)) => match crate::rate_limit::admit(layer.shared(), &req) {
            Admit::Pass(headers) => headers,
            Admit::Refused(response) => return Core::refused(response),
            Admit::Async(pending) => {
                // Take the service that was driven to readiness; leave a clone in its place.
                let clone = inner.clone();
                let mut inner = std::mem::replace(inner, clone);
                let parts = Arc::clone(parts);
                return Core::boxed(Box::pin(async move {
                    let headers = match pending.run().await {
                        Ok(headers) => headers,
                        Err(refused) => return Ok(refused),
                    };
                    let mut res = call(&parts, &mut inner, req, shed).await?;
                    if let Some(h) = headers {
                        crate::rate_limit::add_headers(&mut res, h);
                    }
                    Ok(res)
                }));
            }
        },
    };
    Core::called(call(parts, inner, req, shed), headers)
}

/// Concurrency limit, breaker, the call.
fn call<I, ReqBody, ResBody>(
    parts: &Parts,
    inner: &mut I,
    req: Request<ReqBody>,
    shed: Option<CircuitOpen>,
) -> Called<I::Future, ResBody>
where
    I: Service<Request<ReqBody>, Response = Response<CacheBody<ResBody>>>,
    ResBody: Body,
{
    let admitted = match &parts.concurrency_limit {
        None => None,
        Some((layer, _)) => {
            match crate::concurrency::admit::<CacheBody<ResBody>>(layer.shared(), req.uri().path())
            {
                Ok(admitted) => admitted,
                Err(response) => return Called::refused(response, None),
            }
        }
    };
    let permit = match (&parts.circuit_breaker, shed) {
        (None, _) => None,
        (Some(_), Some(open)) => return Called::refused(open.into_response(), admitted),
        (Some((Either::Left(one), _)), None) => Some(one.breakers().acquire(&req)),
        (Some((Either::Right(per_route), _)), None) => Some(per_route.breakers().acquire(&req)),
    };
    let breaker = match permit {
        None => None,
        Some(Ok(permit)) => Some(BreakerCall::new(permit)),
        Some(Err(open)) => return Called::refused(open.into_response(), admitted),
    };
    Called::running(inner.call(req), admitted, breaker)
}

/// The answer to a request without a peer address when a policy keys by client IP: counting
/// every client in one bucket would rate-limit them all together, silently.
fn missing_peer<B: Body>(parts: &Parts) -> Response<StackBody<B>> {
    const HOW: &str = "serve with palisade::serve (or StackLayer::serve), or axum::serve with \
                       into_make_service_with_connect_info::<SocketAddr>(), or insert \
                       palisade::rate_limit::PeerAddr";
    if !parts.warned_no_peer.swap(true, Ordering::Relaxed) {
        tracing::error!(
            layer = "stack",
            fix = HOW,
            "a rate-limit policy keys by client IP but requests carry no peer address; refusing them with 500"
        );
    }
    let res: Response<CacheBody<B>> =
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Peer address missing")
            .detail("the server is not configured to pass the client address to its rate limiter")
            .into_response();
    res.map(|body| StackBody::new(crate::shutdown::DrainBody::new(body, None)))
}
