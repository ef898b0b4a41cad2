//! [`ConcurrencyLimitLayer`].

use std::sync::Arc;

use tower::Layer;

use super::config::ConcurrencyLimitConfig;
use super::handle::ConcurrencyLimitHandle;
use super::service::ConcurrencyLimit;
use super::shared::Shared;

/// Applies [`ConcurrencyLimit`] to a service. Cheap to clone; every clone, every service it
/// makes and the handle share one count of requests in flight, so the limit holds across the
/// per-connection and per-request clones servers make.
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("name", &self.shared.name)
            .field("settings", &**self.shared.settings.load())
            .finish()
    }
}

impl ConcurrencyLimitLayer {
    /// The state every service of this layer shares.
    #[cfg(feature = "stack")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The layer and the handle that reads and changes it at runtime.
    ///
    /// Metric handles are taken here: install the metrics recorder first.
    pub fn new(config: ConcurrencyLimitConfig) -> (Self, ConcurrencyLimitHandle) {
        let shared = Arc::new(Shared::new(config));
        (
            Self {
                shared: Arc::clone(&shared),
            },
            ConcurrencyLimitHandle::new(shared),
        )
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::new(inner, Arc::clone(&self.shared))
    }
}
