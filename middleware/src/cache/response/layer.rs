//! [`ResponseCacheLayer`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::config::ResponseCacheConfig;
use super::handle::ResponseCacheHandle;
use super::service::ResponseCache;
use super::shared::Shared;
use super::stored::{HttpCodec, HttpEntry};
use crate::cache::{ConfigError, TwoLevelCache};

/// Adds an HTTP response cache in front of a service; see the [module docs](super).
///
/// Cheap to clone; every service it builds shares one cache, and the handle controls it.
#[derive(Clone)]
pub struct ResponseCacheLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayer")
            .field("cache", &self.shared.config.load().store.name)
            .finish()
    }
}

impl ResponseCacheLayer {
    /// Builds the layer and its handle. Needs no runtime and no Redis (a configured Redis is
    /// connected on first use).
    ///
    /// # Errors
    /// When the configuration breaks a rule (the configuration is a plain, deserializable
    /// struct, so it is validated here).
    pub fn new(config: ResponseCacheConfig) -> Result<(Self, ResponseCacheHandle), ConfigError> {
        config.validate()?;
        let cache: TwoLevelCache<str, HttpEntry> = TwoLevelCache::builder(config.store.clone())
            .weigher(HttpEntry::weight)
            .codec(HttpCodec)
            .build()?;
        let shared = Arc::new(Shared::new(cache, config));
        let handle = ResponseCacheHandle::new(Arc::clone(&shared));
        Ok((Self { shared }, handle))
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
