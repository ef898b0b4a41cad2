//! The response future of [`Observe`](super::Observe).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::MatchedPath;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::instrument::Instrumented;

use super::context::Echo;
use super::layer::Shared;
use super::log_ids::{LogIds, Scope};
use super::metrics::method_label;
use super::metrics::{Outcome, UNMATCHED_ROUTE};
use super::route::MatchedRoute;
use super::trace::{EventContext, log_failure, log_response};

/// Per-request state; dropping it ends the request's in-flight count (also when the future is
/// dropped before completion).
#[derive(Debug)]
pub(crate) struct State {
    shared: Arc<Shared>,
    start: Instant,
    method: u8,
    route: Option<MatchedPath>,
    echo: Option<Echo>,
    trace_id: Option<super::context::TraceId>,
    request_size: Option<u64>,
}

impl State {
    /// The completion event's own fields, used when the request span is disabled.
    fn event_context<'a>(&'a self, route: &'a str) -> EventContext<'a> {
        EventContext {
            method: Some(method_label(self.method)),
            route: Some(route),
            request_id: self.echo.as_ref().map(Echo::request_id),
            trace_id: self.trace_id,
        }
    }

    pub(crate) fn begin(
        shared: Arc<Shared>,
        start: Instant,
        method: u8,
        route: Option<MatchedPath>,
        echo: Option<Echo>,
        trace_id: Option<super::context::TraceId>,
        request_size: Option<u64>,
    ) -> Self {
        shared.stats.start();
        if let Some(m) = &shared.metrics {
            m.active(method).increment(1.0);
        }
        Self {
            shared,
            start,
            method,
            route,
            echo,
            trace_id,
            request_size,
        }
    }

    fn finish(
        &self,
        route: &str,
        status: u16,
        response_size: Option<u64>,
        now: Instant,
        latency: Duration,
    ) {
        if let Some(m) = &self.shared.metrics {
            m.record(&Outcome {
                method: self.method,
                route,
                status,
                seconds: latency.as_secs_f64(),
                request_size: self.request_size,
                response_size,
            });
        }
        self.shared.stats.record_at(route, status, latency, now);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.shared.stats.end();
        if let Some(m) = &self.shared.metrics {
            m.active(self.method).decrement(1.0);
        }
    }
}

pin_project! {
    /// The response future of [`Observe`](super::Observe).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        state: Option<State>,
        ids: Option<LogIds>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: Instrumented<F>, state: State, ids: Option<LogIds>) -> Self {
        Self {
            inner,
            state: Some(state),
            ids,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The request's ids for every event written while it is polled (see `log_ids`).
        let _ids = Scope::enter(this.ids);
        let result = std::task::ready!(this.inner.as_mut().poll(cx));
        let Some(state) = this.state.take() else {
            return Poll::Ready(result);
        };
        let mut result = result;
        state.complete(this.inner.span(), &mut result);
        Poll::Ready(result)
    }
}

impl State {
    /// Ends observing a request with its result: logs, metrics, live statistics, the echoed
    /// ids on the response.
    pub(crate) fn complete<B: Body, E: fmt::Display>(
        mut self,
        span: &tracing::Span,
        result: &mut Result<Response<B>, E>,
    ) {
        let state = &mut self;
        let now = Instant::now();
        let latency = now.saturating_duration_since(state.start);
        let trace = &state.shared.config.trace;
        match result {
            Ok(res) => {
                let status = res.status().as_u16();
                let response_size = if state.shared.config.body_sizes {
                    res.body().size_hint().exact().filter(|n| *n > 0)
                } else {
                    None
                };
                // Known at request time (layer inside the router); or told by RouteLayer, which
                // leaves a `MatchedRoute` (kept as it is); or read from a `MatchedPath`.
                let mut told = false;
                let late = if state.route.is_some() {
                    None
                } else if let Some(route) = res.extensions().get::<MatchedRoute>() {
                    told = true;
                    Some(route.clone())
                } else {
                    Some(MatchedRoute::new(
                        res.extensions().get::<MatchedPath>().cloned(),
                    ))
                };
                let route = match (&state.route, &late) {
                    (Some(p), _) => p.as_str(),
                    (None, Some(r)) => r.as_str(),
                    (None, None) => UNMATCHED_ROUTE,
                };
                if late.is_some() {
                    span.record("http.route", route);
                }
                let ctx = state.event_context(route);
                log_response(trace, span, ctx, status, latency);
                state.finish(route, status, response_size, now, latency);
                if let Some(echo) = state.echo.take() {
                    echo.apply(res);
                }
                if let Some(late) = late.filter(|_| !told) {
                    res.extensions_mut().insert(late);
                }
            }
            Err(error) => {
                let route = state
                    .route
                    .as_ref()
                    .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
                if state.route.is_none() {
                    span.record("http.route", route);
                }
                let ctx = state.event_context(route);
                log_failure(trace, span, ctx, &*error, latency);
                state.finish(route, 0, None, now, latency);
            }
        }
    }
}
