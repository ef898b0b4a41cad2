//! Route templates for labels and spans.
//!
//! axum puts the matched route template ([`MatchedPath`]) into the request extensions while
//! routing, so a layer added with `Router::layer` sees it. A layer wrapped *around* the router
//! (a `ServiceBuilder` stack, a custom accept loop) runs before routing and does not; for that
//! placement add [`RouteLayer`] inside the router: it copies the template into the response
//! extensions (as a [`MatchedRoute`]), where the outer layers read it. Requests that matched no route are labelled
//! `unmatched`, never with their raw path.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::metrics::UNMATCHED_ROUTE;

/// The route label [`ObserveLayer`](super::ObserveLayer) settled on after the response, left in
/// the response extensions when the route was not known before routing (the layer runs around
/// the router), so outer layers such as [`trace_layer`](super::trace_layer) can use it.
#[derive(Debug, Clone)]
pub struct MatchedRoute(Option<MatchedPath>);

impl MatchedRoute {
    pub(crate) fn new(path: Option<MatchedPath>) -> Self {
        Self(path)
    }

    /// The route template, or `unmatched`.
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
    }

    /// Whether a route template matched.
    pub fn is_matched(&self) -> bool {
        self.0.is_some()
    }
}

/// Copies axum's [`MatchedPath`] from the request into the response extensions, so observe
/// layers wrapped around the router see the route template; see [Placement](super#placement).
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade::observe::{ObserveConfig, ObserveLayer, RouteLayer};
/// use tower::ServiceBuilder;
///
/// let router: Router = Router::new()
///     .route("/users/{id}", get(|| async { "ok" }))
///     .route_layer(RouteLayer);
/// let (observe, _handle) = ObserveLayer::new(ObserveConfig::default());
/// // The outer stack runs before routing; RouteLayer tells it the template afterwards.
/// let _svc = ServiceBuilder::new().layer(observe).service(router);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteLayer;

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route { inner }
    }
}

/// The service built by [`RouteLayer`].
#[derive(Debug, Clone)]
pub struct Route<S> {
    inner: S,
}

impl<S> Route<S> {
    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Route<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let path = req.extensions().get::<MatchedPath>().cloned();
        RouteFuture {
            inner: self.inner.call(req),
            path,
        }
    }
}

pin_project! {
    /// The response future of [`Route`].
    #[derive(Debug)]
    pub struct RouteFuture<F> {
        #[pin]
        inner: F,
        path: Option<MatchedPath>,
    }
}

impl<F, B, E> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        if let Some(path) = this.path.take() {
            res.extensions_mut().insert(MatchedRoute::new(Some(path)));
        }
        Poll::Ready(Ok(res))
    }
}
