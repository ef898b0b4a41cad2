//! [`ObserveLayer`] and its handle.

use std::sync::Arc;

use tower::Layer;

use super::config::ObserveConfig;
use super::metrics::{HttpMetrics, describe_metrics};
use super::service::Observe;
use super::stats::{StatsRecorder, StatsSnapshot};
use crate::control::model::Traffic;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ObserveConfig,
    pub(crate) metrics: Option<HttpMetrics>,
    pub(crate) stats: StatsRecorder,
}

/// Request ids, trace context, a span, metrics and live statistics for every request, in one
/// pass; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

impl ObserveLayer {
    /// The state every service of this layer shares.
    #[cfg(feature = "stack")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A layer with validated settings and its handle (which reads the live statistics).
    ///
    /// Describes the metrics to the recorder current at this moment.
    pub fn new(config: ObserveConfig) -> (Self, ObserveHandle) {
        let stats = StatsRecorder::new(config.stats.clone());
        Self::with_stats(config, stats)
    }

    /// Like [`new`](Self::new), recording into an existing [`StatsRecorder`] (e.g. one shared
    /// by several routers or created before the layers).
    pub fn with_stats(config: ObserveConfig, stats: StatsRecorder) -> (Self, ObserveHandle) {
        let metrics = config.metrics.then(|| {
            describe_metrics();
            HttpMetrics::new(
                &config.url_scheme,
                stats.config().shards(),
                config.max_routes,
            )
        });
        let shared = Arc::new(Shared {
            config,
            metrics,
            stats,
        });
        (
            Self {
                shared: shared.clone(),
            },
            ObserveHandle { shared },
        )
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe::new(inner, self.shared.clone())
    }
}

/// Reads the live statistics of an [`ObserveLayer`]. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct ObserveHandle {
    shared: Arc<Shared>,
}

impl ObserveHandle {
    /// The live statistics recorder.
    pub fn stats(&self) -> &StatsRecorder {
        &self.shared.stats
    }

    /// Totals, in-flight and latency windows in the admin model's shape.
    pub fn traffic(&self) -> Traffic {
        self.shared.stats.traffic()
    }

    /// Statistics since the previous delta (for heartbeats).
    pub fn take_delta(&self) -> StatsSnapshot {
        self.shared.stats.take_delta()
    }

    /// The settings.
    pub fn config(&self) -> &ObserveConfig {
        &self.shared.config
    }
}
