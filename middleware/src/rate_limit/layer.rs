//! [`RateLimitLayer`].

use std::sync::Arc;

use tower::Layer;

use super::config::RateLimitConfig;
use super::handle::RateLimitHandle;
use super::service::RateLimit;
use super::state::Shared;

/// Applies [`RateLimit`] to a service. Cheap to clone; every clone and every service it makes
/// share one state.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// The state every service of this layer shares.
    #[cfg(feature = "stack")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The layer and the handle that reads and changes it at runtime.
    ///
    /// Metric handles are taken here: install the metrics recorder first.
    pub fn new(config: RateLimitConfig) -> (Self, RateLimitHandle) {
        let shared = Arc::new(Shared::new(config));
        (
            Self {
                shared: Arc::clone(&shared),
            },
            RateLimitHandle::new(shared),
        )
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.shared))
    }
}
