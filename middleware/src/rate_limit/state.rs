//! Runtime state shared by the layer, every service clone and the handle.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http::{Extensions, HeaderMap, Method, Uri};
use ipnet::IpNet;
use metrics::Counter;

use super::config::{HeaderMode, Limits, PathPattern, RateLimitConfig, StoreChoice};
use super::gcra::Gcra;
use super::headers::policy_item;
use super::key::{ClientIpConfig, KeySource, KeyValue, RequestInfo};
use super::metrics::{DecisionMetrics, StoreMetrics};
use super::store::{LocalStore, Store};
use bytes::Bytes;
use http::HeaderValue;

/// The current, swappable settings of a policy.
#[derive(Debug)]
pub(crate) struct Current {
    pub(crate) limits: Limits,
    pub(crate) gcra: Gcra,
    /// This policy's `RateLimit-Policy` item.
    pub(crate) policy_item: String,
    /// The same item as a header value, shared by every response that only this policy limits
    /// (the common case: no formatting or allocation per request).
    pub(crate) policy_value: Option<HeaderValue>,
}

impl Current {
    pub(crate) fn new(name: &str, limits: Limits) -> Self {
        let policy_item = policy_item(name, &limits);
        let policy_value = HeaderValue::from_maybe_shared(Bytes::from(policy_item.clone())).ok();
        Self {
            limits,
            gcra: limits.gcra(),
            policy_item,
            policy_value,
        }
    }
}

/// Decision counters of a policy (monotonic).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) allowed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) shadow_rejected: AtomicU64,
}

/// One policy at runtime.
#[derive(Debug)]
pub(crate) struct PolicyState {
    pub(crate) name: Arc<str>,
    pub(crate) key: KeySource,
    pub(crate) paths: Vec<PathPattern>,
    pub(crate) methods: Vec<Method>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) current: ArcSwap<Current>,
    pub(crate) version: AtomicU64,
    /// Serializes writers (readers never take it).
    pub(crate) write: crate::control::ApplyLock,
    pub(crate) counters: Counters,
    pub(crate) metrics: DecisionMetrics,
}

impl PolicyState {
    /// Whether the policy applies to this method and path.
    #[inline]
    pub(crate) fn applies(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }

    /// The key of a request for this policy; `None` when the policy does not count it.
    #[inline]
    pub(crate) fn key_of<'r>(
        &self,
        req: &ReqView<'r>,
        ip: Option<IpAddr>,
        cfg: &ClientIpConfig,
    ) -> Option<KeyValue<'r>> {
        match &self.key {
            KeySource::Global => Some(KeyValue::Global),
            KeySource::ClientIp => Some(match ip {
                Some(ip) => KeyValue::Ip(cfg.key_ip(ip)),
                None => {
                    warn_unknown_peer();
                    KeyValue::Bytes(Cow::Borrowed(b"<unknown-peer>"))
                }
            }),
            KeySource::Header(name) => req
                .headers
                .get(name)
                .map(|v| KeyValue::Bytes(Cow::Borrowed(v.as_bytes()))),
            KeySource::Route => Some(KeyValue::Bytes(Cow::Borrowed(
                req.extensions
                    .get::<axum::extract::MatchedPath>()
                    .map_or(&b"<unmatched>"[..], |m| m.as_str().as_bytes()),
            ))),
            KeySource::Custom(f) => {
                let info = RequestInfo {
                    method: req.method,
                    uri: req.uri,
                    headers: req.headers,
                    extensions: req.extensions,
                    client_ip: ip,
                };
                (f.0)(&info).map(|s| KeyValue::Bytes(Cow::Owned(s.into_bytes())))
            }
        }
    }
}

fn warn_unknown_peer() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            layer = "rate_limit",
            "no peer address on the request (insert PeerAddr or serve with ConnectInfo); \
             client-IP policies put such requests in one shared bucket"
        );
    }
}

/// The borrowed parts of a request the limiter looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReqView<'r> {
    pub(crate) method: &'r Method,
    pub(crate) uri: &'r Uri,
    pub(crate) headers: &'r HeaderMap,
    pub(crate) extensions: &'r Extensions,
}

/// Everything the layer, its services and the handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policies: Box<[Arc<PolicyState>]>,
    /// Policy indexes of synchronous stores, then of asynchronous ones.
    pub(crate) sync_order: Box<[usize]>,
    pub(crate) async_order: Box<[usize]>,
    pub(crate) client_ip: ClientIpConfig,
    pub(crate) needs_ip: bool,
    pub(crate) exempt_paths: Vec<PathPattern>,
    pub(crate) exempt_cidrs: Vec<IpNet>,
    pub(crate) headers: HeaderMode,
    pub(crate) exempt: AtomicU64,
    pub(crate) exempt_metric: Counter,
}

impl Shared {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        let mut policies = Vec::with_capacity(config.policies.len());
        for (p, paths) in config.policies.into_iter().zip(config.policy_paths) {
            let store: Arc<dyn Store> = match p.store {
                StoreChoice::Local { max_keys } => Arc::new(
                    LocalStore::new(max_keys).with_metrics(StoreMetrics::new(&p.name, "local")),
                ),
                #[cfg(unix)]
                StoreChoice::Shm(zone) => match zone.store(&p.name) {
                    Ok(store) => {
                        store.adopt(&p.limits.gcra());
                        Arc::new(store.with_metrics(StoreMetrics::new(&p.name, "shm")))
                    }
                    // `RateLimitConfigBuilder::build` bound the zone to this policy already.
                    Err(error) => {
                        tracing::error!(
                            layer = "rate_limit",
                            policy = %p.name,
                            %error,
                            "shared-memory zone unusable; using a local store"
                        );
                        Arc::new(LocalStore::new(super::config::DEFAULT_MAX_KEYS))
                    }
                },
                #[cfg(feature = "redis")]
                StoreChoice::Redis {
                    store,
                    failure_mode,
                    fallback_max_keys,
                } => Arc::new(store.policy_store(&p.name, failure_mode, fallback_max_keys)),
                StoreChoice::Custom(store) => store,
            };
            policies.push(Arc::new(PolicyState {
                current: ArcSwap::from_pointee(Current::new(&p.name, p.limits)),
                name: p.name.as_str().into(),
                key: p.key,
                paths,
                methods: p.methods,
                store,
                version: AtomicU64::new(1),
                write: crate::control::ApplyLock::new(),
                counters: Counters::default(),
                metrics: DecisionMetrics::new(&p.name),
            }));
        }
        let (sync_order, async_order): (Vec<usize>, Vec<usize>) =
            (0..policies.len()).partition(|&i| !policies[i].store.is_async());
        let needs_ip = !config.exempt_cidrs.is_empty()
            || policies
                .iter()
                .any(|p| matches!(p.key, KeySource::ClientIp | KeySource::Custom(_)));
        Self {
            policies: policies.into(),
            sync_order: sync_order.into(),
            async_order: async_order.into(),
            client_ip: config.client_ip,
            needs_ip,
            exempt_paths: config.exempt_paths,
            exempt_cidrs: config.exempt_cidrs,
            headers: config.headers,
            exempt: AtomicU64::new(0),
            exempt_metric: super::metrics::exempt(),
        }
    }

    pub(crate) fn count_exempt(&self) {
        self.exempt.fetch_add(1, Ordering::Relaxed);
        self.exempt_metric.increment(1);
    }
}
