//! [`CircuitBreakerLayer`], breaker selection ([`SelectBreaker`], [`Keyed`], [`KeyFn`]) and
//! rejection modes ([`Inbound`], [`Outbound`]).

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower::Layer;

use super::classify::HttpClassifier;
use super::config::CircuitBreakerConfig;
use super::error::{CallError, CircuitOpen, timeout_response};
use super::handle::CircuitBreakerHandle;
use super::keyed::KeyedCircuitBreaker;
use super::service::CircuitBreakerService;
use super::{CallPermit, CircuitBreaker};

/// Which breaker guards a request: [`CircuitBreaker`] (one for all requests) or [`Keyed`] (one
/// per key).
pub trait SelectBreaker<Req> {
    /// Asks the request's breaker for a permit.
    fn acquire(&self, req: &Req) -> Result<CallPermit, CircuitOpen>;
    /// A refusal that does not depend on the request (the single breaker is open), so
    /// `poll_ready` can refuse without waiting for the inner service. Counted as rejected.
    fn check_open(&self) -> Option<CircuitOpen> {
        None
    }
}

impl<Req> SelectBreaker<Req> for CircuitBreaker {
    #[inline]
    fn acquire(&self, _req: &Req) -> Result<CallPermit, CircuitOpen> {
        self.try_acquire()
    }

    #[inline]
    fn check_open(&self) -> Option<CircuitOpen> {
        CircuitBreaker::check_open(self)
    }
}

/// Extracts a breaker key from a request: any `Fn(&Req) -> K`, or [`ByHost`].
pub trait KeyFn<Req> {
    /// The key type.
    type Key;
    /// The key of one request.
    fn key(&self, req: &Req) -> Self::Key;
}

impl<Req, K, F> KeyFn<Req> for F
where
    F: Fn(&Req) -> K,
{
    type Key = K;
    fn key(&self, req: &Req) -> K {
        self(req)
    }
}

/// Keys HTTP requests by target host: the URI's host (outbound clients use absolute URIs),
/// else the `Host` header without port, else the empty string.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByHost;

impl<B> KeyFn<Request<B>> for ByHost {
    type Key = String;
    fn key(&self, req: &Request<B>) -> String {
        if let Some(host) = req.uri().host() {
            return host.to_ascii_lowercase();
        }
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// Keys HTTP requests by axum route template (`MatchedPath`, e.g. `/users/{id}`), so a failing
/// route does not open the breaker of the others; requests outside a route share the key
/// `<unmatched>`. Use it inside a `Router` (`Router::layer`), where the template is known.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ByRoute;

#[cfg(feature = "axum")]
impl<B> KeyFn<Request<B>> for ByRoute {
    type Key = String;
    fn key(&self, req: &Request<B>) -> String {
        req.extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| "<unmatched>".to_owned(), |p| p.as_str().to_owned())
    }
}

/// One breaker per request key; see [`CircuitBreakerLayer::keyed`].
pub struct Keyed<F, K> {
    breakers: KeyedCircuitBreaker<K>,
    key: F,
}

impl<F: Clone, K> Clone for Keyed<F, K> {
    fn clone(&self) -> Self {
        Self {
            breakers: self.breakers.clone(),
            key: self.key.clone(),
        }
    }
}

impl<F, K> fmt::Debug for Keyed<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

impl<F, K> Keyed<F, K> {
    /// The keyed breakers.
    pub fn breakers(&self) -> &KeyedCircuitBreaker<K> {
        &self.breakers
    }
}

impl<Req, F, K> SelectBreaker<Req> for Keyed<F, K>
where
    F: KeyFn<Req, Key = K>,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn acquire(&self, req: &Req) -> Result<CallPermit, CircuitOpen> {
        let key = self.key.key(req);
        self.breakers.get(&key).try_acquire()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Inbound {}
    impl Sealed for super::Outbound {}
}

/// How a service answers when the breaker refuses or times out a call; [`Inbound`] or
/// [`Outbound`].
pub trait Mode<Res, E>: sealed::Sealed {
    /// The service's error type.
    type Error;
    /// The result for a refused call.
    fn open(open: CircuitOpen) -> Result<Res, Self::Error>;
    /// The result for a call that ran out of `call_timeout_ms`.
    fn timeout(breaker: &str, after: Duration) -> Result<Res, Self::Error>;
    /// Maps the inner service's error.
    fn inner(error: E) -> Self::Error;
}

/// For servers (the default): a refusal is a `503 Service Unavailable`
/// `application/problem+json` response with `Retry-After`, a timeout a `504`; the inner error
/// type passes through unchanged (so `Infallible` services stay infallible for axum).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inbound;

impl<B, E> Mode<Response<B>, E> for Inbound
where
    B: From<Bytes>,
{
    type Error = E;
    fn open(open: CircuitOpen) -> Result<Response<B>, E> {
        Ok(open.into_response())
    }
    fn timeout(breaker: &str, after: Duration) -> Result<Response<B>, E> {
        Ok(timeout_response(breaker, after))
    }
    fn inner(error: E) -> E {
        error
    }
}

/// For clients and any non-HTTP service: the error becomes [`CallError`], whose `Open` variant
/// carries the [`CircuitOpen`] (with `retry_after`) and `Timeout` a timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outbound;

impl<Res, E> Mode<Res, E> for Outbound {
    type Error = CallError<E>;
    fn open(open: CircuitOpen) -> Result<Res, CallError<E>> {
        Err(CallError::Open(open))
    }
    fn timeout(_breaker: &str, after: Duration) -> Result<Res, CallError<E>> {
        Err(CallError::Timeout(after))
    }
    fn inner(error: E) -> CallError<E> {
        CallError::Inner(error)
    }
}

/// Applies a circuit breaker to a service. See the [module docs](super).
///
/// * `C`: the [`Classify`](super::Classify)er ([`HttpClassifier`] by default).
/// * `M`: [`Inbound`] (refusals are `503` responses; default) or [`Outbound`] (refusals are
///   [`CallError::Open`] errors).
/// * `B`: one [`CircuitBreaker`] (default) or [`Keyed`] breakers.
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
/// use tower::ServiceBuilder;
///
/// let (layer, handle) = CircuitBreakerLayer::new(CircuitBreakerConfig::five_consecutive_failures().with_name("api"));
/// let svc = ServiceBuilder::new().layer(layer).service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
/// });
/// # let _ = (svc, handle);
/// ```
pub struct CircuitBreakerLayer<C = HttpClassifier, M = Inbound, B = CircuitBreaker> {
    breakers: B,
    classifier: C,
    _mode: PhantomData<fn() -> M>,
}

impl<C: Clone, M, B: Clone> Clone for CircuitBreakerLayer<C, M, B> {
    fn clone(&self) -> Self {
        Self {
            breakers: self.breakers.clone(),
            classifier: self.classifier.clone(),
            _mode: PhantomData,
        }
    }
}

impl<C: fmt::Debug, M, B: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C, M, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breakers", &self.breakers)
            .field("classifier", &self.classifier)
            .field("mode", &std::any::type_name::<M>())
            .finish()
    }
}

impl CircuitBreakerLayer {
    /// A layer with one breaker for all requests, the [`HttpClassifier`] and [`Inbound`]
    /// refusals, and its handle.
    pub fn new(config: CircuitBreakerConfig) -> (Self, CircuitBreakerHandle) {
        let breaker = CircuitBreaker::new(config);
        let handle = breaker.handle();
        (Self::from_breaker(breaker), handle)
    }

    /// A layer around an existing breaker (shared with other code or layers).
    pub fn from_breaker(breaker: CircuitBreaker) -> Self {
        Self {
            breakers: breaker,
            classifier: HttpClassifier,
            _mode: PhantomData,
        }
    }
}

impl<F, K> CircuitBreakerLayer<HttpClassifier, Inbound, Keyed<F, K>>
where
    K: Hash + Eq + Clone + Send + Sync + fmt::Display + 'static,
{
    /// A layer with one breaker per key, computed from each request by the closure `key`, at
    /// most `config.max_keys()` keys, and a handle over all keys. For [`ByHost`] use
    /// [`by_host`](CircuitBreakerLayer::by_host); for another [`KeyFn`] type,
    /// [`from_keyed`](Self::from_keyed).
    ///
    /// ```
    /// use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// use tower::{Layer, service_fn};
    ///
    /// let (by_path, _handle) = CircuitBreakerLayer::keyed(
    ///     CircuitBreakerConfig::five_consecutive_failures(),
    ///     |req: &http::Request<()>| req.uri().path().to_owned(),
    /// );
    /// let svc = by_path.layer(service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
    /// }));
    /// # let _ = svc;
    /// ```
    pub fn keyed<Req>(config: CircuitBreakerConfig, key: F) -> (Self, CircuitBreakerHandle)
    where
        F: Fn(&Req) -> K,
    {
        let breakers = KeyedCircuitBreaker::new(config);
        let handle = breakers.handle();
        (Self::from_keyed(breakers, key), handle)
    }

    /// A layer over existing keyed breakers (`K` is fixed by `breakers`).
    pub fn from_keyed(breakers: KeyedCircuitBreaker<K>, key: F) -> Self {
        Self {
            breakers: Keyed { breakers, key },
            classifier: HttpClassifier,
            _mode: PhantomData,
        }
    }
}

impl CircuitBreakerLayer<HttpClassifier, Inbound, Keyed<ByHost, String>> {
    /// A layer with one breaker per target host ([`ByHost`]), for outbound HTTP clients or a
    /// multi-host proxy.
    ///
    /// ```
    /// use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// let (layer, handle) = CircuitBreakerLayer::by_host(CircuitBreakerConfig::five_consecutive_failures());
    /// let layer = layer.outbound(); // refusals as typed errors for a client
    /// # let _ = (layer, handle);
    /// ```
    pub fn by_host(config: CircuitBreakerConfig) -> (Self, CircuitBreakerHandle) {
        let breakers = KeyedCircuitBreaker::new(config);
        let handle = breakers.handle();
        (Self::from_keyed(breakers, ByHost), handle)
    }
}

impl<C, M, B> CircuitBreakerLayer<C, M, B> {
    /// Replaces the classifier (e.g. [`ErrorClassifier`](super::ErrorClassifier) for non-HTTP
    /// services, or [`classify_fn`](super::classify_fn)).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2, M, B> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            classifier,
            _mode: PhantomData,
        }
    }

    /// Refusals and timeouts become [`CallError`] errors instead of responses (for clients and
    /// generic services).
    pub fn outbound(self) -> CircuitBreakerLayer<C, Outbound, B> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            classifier: self.classifier,
            _mode: PhantomData,
        }
    }

    /// The breaker (or [`Keyed`] breakers) this layer uses.
    pub fn breakers(&self) -> &B {
        &self.breakers
    }
}

impl<S, C: Clone, M, B: Clone> Layer<S> for CircuitBreakerLayer<C, M, B> {
    type Service = CircuitBreakerService<S, C, M, B>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breakers.clone(), self.classifier.clone())
    }
}
