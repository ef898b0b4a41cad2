//! The [`Observe`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::{Request, Response, header};
use http_body::Body;
use tokio::time::Instant;
use tracing::Instrument;

use super::context::{self, TraceContext};
use super::future::{ResponseFuture, State};
use super::layer::Shared;
use super::log_ids::{LogIds, Scope};
use super::metrics::method_index;
use super::trace::make_span;

/// The service built by [`ObserveLayer`](super::ObserveLayer).
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Observe<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    define_inner_service_accessors!();
}

/// The request body size when known without reading it and not zero.
fn request_size<B: Body>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| req.body().size_hint().exact())
        .filter(|n| *n > 0)
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Observe<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Begun {
            state,
            span,
            mut ids,
        } = begin(&self.shared, &mut req);
        let future = {
            let _ids = Scope::enter(&mut ids);
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture::new(future.instrument(span), state, ids)
    }
}

/// What observe keeps of a request between its start and its response: the live state, the
/// request's span and the ids its log lines carry.
pub(crate) struct Begun {
    pub(crate) state: State,
    pub(crate) span: tracing::Span,
    pub(crate) ids: Option<LogIds>,
}

/// Starts observing a request: its ids and trace context (written into the request), its span,
/// its place in the in-flight count. Shared by [`Observe`] and the stack's one service.
pub(crate) fn begin<B: Body>(shared: &Arc<Shared>, req: &mut Request<B>) -> Begun {
    let start = Instant::now();
    let config = &shared.config;
    let echo = config
        .request_context
        .as_ref()
        .map(|c| context::prepare(c, req));
    let method = method_index(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let span = make_span(&config.trace, req, route.as_ref().map(MatchedPath::as_str));
    let trace_ctx = req.extensions().get::<TraceContext>();
    #[cfg(feature = "otel")]
    if let Some(ctx) = trace_ctx {
        super::otel::start_span(&span, ctx);
    }
    let ids = echo.as_ref().map(|e| LogIds {
        trace_id: trace_ctx.map(|c| c.trace_id),
        request_id: Some(e.request_id_value().clone()),
    });
    let request_size = if config.body_sizes {
        request_size(req)
    } else {
        None
    };
    let state = State::begin(
        shared.clone(),
        start,
        method,
        route,
        echo,
        trace_ctx.map(|c| c.trace_id),
        request_size,
    );
    Begun { state, span, ids }
}
