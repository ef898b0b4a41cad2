//! [`StackService`]: a service wrapped in every layer of a stack.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tower::Service;

use super::future::ResponseFuture;
use super::{Chain, Parts, StackBody};
use crate::problem::Problem;
use crate::timeout::TimeoutBody;

/// A service inside every layer of a [`StackLayer`](super::StackLayer). See the
/// [module docs](super).
///
/// `Clone` when the inner service is; clones share every layer's state.
pub struct StackService<S> {
    chain: Chain<S>,
    parts: Arc<Parts>,
}

impl<S> StackService<S> {
    pub(crate) fn new(inner: S, parts: Arc<Parts>) -> Self {
        Self {
            chain: parts.chain(inner),
            parts,
        }
    }
}

impl<S> Clone for StackService<S>
where
    Chain<S>: Clone,
{
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            parts: Arc::clone(&self.parts),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for StackService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackService")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

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
    type Future = ResponseFuture<<Chain<S> as Service<Request<ReqBody>>>::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.chain.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if self.parts.needs_peer && crate::rate_limit::peer_ip(req.extensions()).is_none() {
            return ResponseFuture::refused(missing_peer(&self.parts));
        }
        ResponseFuture::chain(self.chain.call(req))
    }
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
    let res: Response<crate::cache::response::CacheBody<B>> =
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Peer address missing")
            .detail("the server is not configured to pass the client address to its rate limiter")
            .into_response();
    res.map(|body| StackBody::new(crate::shutdown::DrainBody::new(body, None)))
}
