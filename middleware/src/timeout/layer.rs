//! [`TimeoutLayer`].

use std::sync::Arc;

use tower::Layer;

use super::config::TimeoutConfig;
use super::handle::TimeoutHandle;
use super::service::Timeout;
use super::shared::Shared;

/// Applies [`Timeout`] to a service. Cheap to clone; every clone, every service it makes and
/// the handle share one state, so a runtime change reaches requests already being served by
/// other clones.
#[derive(Clone)]
pub struct TimeoutLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TimeoutLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("name", &self.shared.name)
            .field("settings", &self.shared.settings())
            .finish()
    }
}

impl TimeoutLayer {
    /// The layer and the handle that reads and changes it at runtime.
    ///
    /// Metric handles are taken here: install the metrics recorder first.
    pub fn new(config: TimeoutConfig) -> (Self, TimeoutHandle) {
        let shared = Arc::new(Shared::new(config));
        (
            Self {
                shared: Arc::clone(&shared),
            },
            TimeoutHandle::new(shared),
        )
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, Arc::clone(&self.shared))
    }
}
