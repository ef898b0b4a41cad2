//! [`DrainLayer`] and [`DrainService`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Version};
use tower::{Layer, Service};

use super::drain::{DrainGuard, Shared};
use super::future::ResponseFuture;

/// Counts in-flight requests for a [`Drain`](super::Drain) and adds `Connection: close` to
/// HTTP/1 responses once accept stopped. From [`Drain::layer`](super::Drain::layer).
///
/// A request counts as in flight from `call` until its response body finished or was dropped,
/// so streamed bodies are waited for. The layer never rejects: readiness is a separate probe
/// ([`Drain::readiness`](super::Drain::readiness)).
#[derive(Clone)]
pub struct DrainLayer {
    shared: Arc<Shared>,
}

impl DrainLayer {
    /// The state every service of this layer shares.
    #[cfg(feature = "stack")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A layer with its [`Drain`](super::Drain) coordinator (the handle: readiness, in-flight
    /// count, start), like every other layer's `new`. Same as
    /// [`Drain::new`](super::Drain::new) then [`Drain::layer`](super::Drain::layer).
    ///
    /// ```
    /// use palisade::shutdown::{DrainConfig, DrainLayer};
    /// let (layer, drain) = DrainLayer::new(DrainConfig::default());
    /// assert!(drain.is_ready());
    /// # let _ = layer;
    /// ```
    pub fn new(config: super::DrainConfig) -> (Self, super::Drain) {
        let drain = super::Drain::new(config);
        (drain.layer(), drain)
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl fmt::Debug for DrainLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service built by [`DrainLayer`].
#[derive(Clone)]
pub struct DrainService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for DrainService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> DrainService<S> {
    define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DrainService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<super::DrainBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let guard = DrainGuard::new(self.shared.clone());
        // `Connection` is an HTTP/1 header; HTTP/2 connections get GOAWAY from the server.
        let http1 = req.version() <= Version::HTTP_11;
        ResponseFuture::new(self.inner.call(req), guard, http1)
    }
}
