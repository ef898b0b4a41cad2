//! A real Palisade admin API for the dashboard's tests and for trying `palisade-top` without a
//! server (`cargo run -p palisade-top --example demo_admin`).
//!
//! It serves the library's admin router (`palisade::admin`) over real layer handles — two
//! rate-limit policies, two circuit breakers and a two-level cache, registered in a real
//! `Registry` — so every shape the dashboard reads (settings, stats, problems, audit entries)
//! is the one a Palisade server serves and cannot drift. Only the worker processes are scripted
//! (a library process has none): scale, drain and restart change a list of workers and answer
//! like the reference server's supervisor. Traffic is real: [`Demo::drive`] sends requests
//! through the rate limiter and the breakers and loads through the cache, and records them
//! for the snapshot's traffic section.
//!
//! Shared by `tests/connection.rs` and `examples/demo_admin.rs` through `#[path]`.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use palisade::admin::{Admin, AdminBackend, AdminConfig, BackendError, BackendFuture};
use palisade::cache::{CacheConfig, TwoLevelCache};
use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitBreakerLayer};
use palisade::control::model::{ServerInfo, Traffic, WorkerInfo};
use palisade::control::{Change, ComponentKind, DynComponent, FieldError, Registry};
use palisade::observe::{StatsConfig, StatsRecorder};
use palisade::rate_limit::{
    Mode, PeerAddr, PolicyConfig, RateLimitConfig, RateLimitHandle, RateLimitLayer,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::{Layer, ServiceExt, service_fn};

/// Worker processes, scripted: what a supervisor would report and do.
#[derive(Debug)]
pub struct Workers {
    started: tokio::time::Instant,
    list: Mutex<Vec<WorkerInfo>>,
    next_pid: Mutex<u32>,
    stats: StatsRecorder,
}

impl Workers {
    fn new(count: u32, stats: StatsRecorder) -> Self {
        let workers = Self {
            started: tokio::time::Instant::now(),
            list: Mutex::new(Vec::new()),
            next_pid: Mutex::new(4243),
            stats,
        };
        for id in 0..count {
            workers.spawn(id, 0);
        }
        workers
    }

    fn spawn(&self, id: u32, restarts: u32) -> u32 {
        let pid = {
            let mut next = self.next_pid.lock();
            *next += 7;
            *next
        };
        let worker = WorkerInfo {
            id,
            pid,
            state: "ready".into(),
            restarts,
            rss_bytes: 22_000_000 + u64::from(id) * 1_300_000,
            ..WorkerInfo::default()
        };
        let mut list = self.list.lock();
        match list.iter_mut().find(|w| w.id == id) {
            Some(slot) => *slot = worker,
            None => list.push(worker),
        }
        pid
    }

    pub fn count(&self) -> usize {
        self.list.lock().len()
    }
}

impl AdminBackend for Workers {
    fn server(&self) -> ServerInfo {
        ServerInfo {
            name: "palisade".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            mode: "supervisor".into(),
            uptime_secs: self.started.elapsed().as_secs(),
            listen: Some("127.0.0.1:8080".into()),
        }
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        let traffic = self.stats.traffic();
        let list = self.list.lock();
        let n = u64::try_from(list.len().max(1)).unwrap_or(1);
        list.iter()
            .map(|w| WorkerInfo {
                uptime_secs: self.started.elapsed().as_secs(),
                requests: traffic.requests_total / n,
                ..w.clone()
            })
            .collect()
    }

    fn traffic(&self) -> Traffic {
        self.stats.traffic()
    }

    fn scale(&self, workers: u32) -> BackendFuture<'_, Change> {
        Box::pin(async move {
            if !(1..=64).contains(&workers) {
                return Err(BackendError::Invalid(vec![FieldError::new(
                    "workers",
                    format!("must be between 1 and 64, got {workers}"),
                )]));
            }
            let before = self.count();
            self.list.lock().retain(|w| w.id < workers);
            for id in 0..workers {
                if !self.list.lock().iter().any(|w| w.id == id) {
                    self.spawn(id, 0);
                }
            }
            Ok(Change {
                before: json!({ "workers": before }),
                after: json!({ "workers": self.count() }),
            })
        })
    }

    fn restart(&self) -> BackendFuture<'_, Change> {
        Box::pin(async move {
            let old: Vec<(u32, u32, u32)> = self
                .list
                .lock()
                .iter()
                .map(|w| (w.id, w.pid, w.restarts))
                .collect();
            for (id, _, restarts) in &old {
                self.spawn(*id, *restarts);
            }
            let pids: Vec<u32> = old.iter().map(|(_, pid, _)| *pid).collect();
            Ok(Change {
                before: json!({ "pids": pids }),
                after: json!({ "rolling_restart": true, "replacing": pids.len() }),
            })
        })
    }

    fn drain_worker(&self, id: u32) -> BackendFuture<'_, Change> {
        Box::pin(async move {
            let worker = self
                .list
                .lock()
                .iter()
                .find(|w| w.id == id && w.state == "ready")
                .cloned()
                .ok_or_else(|| BackendError::NotFound(format!("no ready worker with id {id}")))?;
            self.spawn(id, worker.restarts + 1);
            Ok(Change {
                before: json!({ "id": id, "pid": worker.pid }),
                after: json!({ "id": id, "replaced": true }),
            })
        })
    }
}

/// Requests received, per `METHOD /path`.
type Hits = Arc<Mutex<BTreeMap<String, u32>>>;

async fn count_hits(State(hits): State<Hits>, req: Request, next: Next) -> Response {
    let key = format!("{} {}", req.method(), req.uri().path());
    *hits.lock().entry(key).or_default() += 1;
    next.run(req).await
}

async fn hide_stream(req: Request, next: Next) -> Response {
    if req.uri().path() == "/admin/v1/stream" {
        return http::Response::builder()
            .status(http::StatusCode::NOT_FOUND)
            .body(Body::empty())
            .expect("response");
    }
    next.run(req).await
}

/// The admin API over real handles, and the handles themselves.
pub struct Demo {
    pub admin: Admin,
    pub registry: Registry,
    pub workers: Arc<Workers>,
    pub limits: RateLimitHandle,
    pub breakers: Vec<CircuitBreakerHandle>,
    pub cache: TwoLevelCache<str, String>,
    limit_layer: RateLimitLayer,
    breaker_layers: Vec<CircuitBreakerLayer>,
    stats: StatsRecorder,
    hits: Hits,
}

impl Demo {
    /// Limits `api` (100/s, burst 20, enforce) and `login` (5 per minute, burst 5, shadow);
    /// breakers `users-db` and `payments`; cache `responses`; `workers` scripted workers.
    pub fn new(token: &str, workers: u32, stream_interval: Duration) -> Self {
        let (limit_layer, limits) = RateLimitLayer::new(
            RateLimitConfig::builder()
                .policy(
                    PolicyConfig::builder("api")
                        .rate(100)
                        .per(Duration::from_secs(1))
                        .burst(20),
                )
                .policy(
                    PolicyConfig::builder("login")
                        .rate(5)
                        .per(Duration::from_secs(60))
                        .burst(5)
                        .mode(Mode::Shadow),
                )
                .build()
                .expect("valid rate limits"),
        );
        let (breaker_layers, breakers): (Vec<_>, Vec<_>) = ["users-db", "payments"]
            .into_iter()
            .map(|name| {
                CircuitBreakerLayer::new(
                    CircuitBreakerConfig::builder()
                        .name(name)
                        .count_window(10)
                        .minimum_calls(5)
                        .build()
                        .expect("valid breaker"),
                )
            })
            .unzip();
        let cache: TwoLevelCache<str, String> = TwoLevelCache::new(
            CacheConfig::builder()
                .name("responses")
                .build()
                .expect("valid cache"),
        )
        .expect("cache");
        let registry = Registry::new();
        registry.add(&limits).expect("unique names");
        for b in &breakers {
            registry.add(b).expect("unique names");
        }
        registry.add(&cache.handle()).expect("unique names");
        let stats = StatsRecorder::new(StatsConfig::default());
        let workers = Arc::new(Workers::new(workers, stats.clone()));
        let config = AdminConfig::builder()
            .read_write_token("ops", token)
            .backend(Arc::clone(&workers))
            .stream_interval(stream_interval)
            .build()
            .expect("valid admin config");
        Self {
            admin: Admin::new(registry.clone(), config),
            registry,
            workers,
            limits,
            breakers,
            cache,
            limit_layer,
            breaker_layers,
            stats,
            hits: Hits::default(),
        }
    }

    /// Requests the admin API received as `METHOD /path`, e.g. `GET /admin/v1/stream`.
    pub fn hits(&self, key: &str) -> u32 {
        self.hits.lock().get(key).copied().unwrap_or(0)
    }

    /// A component's current settings.
    pub fn settings(&self, kind: ComponentKind, name: &str) -> Value {
        self.registry
            .get_kind(kind, name)
            .map_or(Value::Null, |c| DynComponent::settings(&*c))
    }

    /// Sends `n` requests from a few clients through the rate limiter and each breaker (the
    /// `payments` upstream fails one call in three), and looks `n` keys up in the cache.
    pub async fn drive(&self, n: u32) {
        for i in 0..n {
            for (b, layer) in self.breaker_layers.iter().enumerate() {
                let failing = b == 1 && i % 3 == 0;
                let upstream = service_fn(move |_req: http::Request<Body>| async move {
                    let status = if failing { 503 } else { 200 };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Body::empty())
                            .expect("response"),
                    )
                });
                let svc = self.limit_layer.layer(layer.layer(upstream));
                let mut req = http::Request::get("/users/1")
                    .body(Body::empty())
                    .expect("request");
                let peer: SocketAddr = ([10, 0, 0, (i % 4) as u8 + 1], 40_000).into();
                req.extensions_mut().insert(PeerAddr(peer));
                let started = tokio::time::Instant::now();
                let status = svc
                    .oneshot(req)
                    .await
                    .map_or(500, |res| res.status().as_u16());
                self.stats.record("/users/{id}", status, started.elapsed());
            }
            let key = format!("user:{}", i % 16);
            let value = format!("value of {key}");
            let _ = self
                .cache
                .get_or_load(
                    key.as_str(),
                    move || async move { Ok::<_, Infallible>(value) },
                )
                .await;
        }
    }

    /// The admin router, counting requests.
    pub fn router(&self) -> axum::Router {
        self.admin.router().layer(middleware::from_fn_with_state(
            Arc::clone(&self.hits),
            count_hits,
        ))
    }

    /// Serves until `stop` turns true; open event streams end first, so the graceful shutdown
    /// does not wait for them. Without `stream`, `GET /admin/v1/stream` answers 404, as a
    /// proxy that does not pass event streams would (the dashboard then polls).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        mut stop: watch::Receiver<bool>,
        stream: bool,
    ) {
        let admin = self.admin.clone();
        let mut router = self.router();
        if !stream {
            router = router.layer(middleware::from_fn(hide_stream));
        }
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
                admin.close_streams();
            })
            .await;
    }
}
