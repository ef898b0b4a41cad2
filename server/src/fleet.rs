//! Fleet mode (`[fleet]`): many servers, one control plane on Redis.
//!
//! Every node (a supervisor and its workers, or a single process) registers in Redis with a
//! heartbeat key that expires after three intervals (node id, addresses, version, workers,
//! traffic and its latency histograms, the settings version it runs). A runtime change made
//! through any node's admin API (scope `fleet`, the default):
//!
//! 1. takes the fleet's change lock (one fleet change at a time; another answers 409),
//! 2. goes to this node's own workers through the existing all-or-nothing fan-out,
//! 3. is written to the fleet's settings in Redis under a new fleet version (`INCR`) and
//!    published, in one script,
//! 4. is applied by every other live node through its own fan-out and acknowledged per node
//!    (with each worker's answer) within `fleet.change_timeout`;
//! 5. a refusal or a missing answer rolls it back everywhere: the previous settings are
//!    published as the next version, and the answer is a problem naming the nodes.
//!
//! Pub/sub only shortens the way: each heartbeat also compares the fleet version with the one
//! the node runs and catches up from the settings hash, so a node that missed a message, joins
//! later or comes back after Redis was away ends up with the fleet's settings. Redis down:
//! nodes keep serving with what they run, fleet changes answer 503, `?scope=node` changes still
//! apply locally. A Redis that comes back empty is seeded again from the nodes' settings.
//!
//! Keys (prefix `palisade:fleet:{<name>}`, one hash tag so a cluster keeps them on one slot):
//! `:version` (string), `:settings` (hash `<kind>/<name>` → entry JSON), `:versions` (hash,
//! the same fields → version), `:changes` (channel), `:acks:<version>` (list, expires),
//! `:node:<id>` (string, expires), `:nodes` (sorted set of ids), `:audit` (stream, capped),
//! `:lock` (string, expires).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use palisade::admin::fleet::{FleetAudit, FleetAuditEntry, FleetNodes, FleetSnapshot, NodeInfo};
use palisade::admin::{Admin, AdminBackend, Applied, BackendError, BackendFuture, Scope};
use palisade::control::model::{
    NodeOutcome, Outcome, Propagation, ServerInfo, StatusCounts, Traffic, WorkerInfo,
};
use palisade::control::{Change, ComponentKind};
use palisade::observe::{LatencyHistogram, StatsRecorder};
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::FleetConfig;

/// Bound on one Redis round trip of the control plane (a heartbeat, a read).
const REDIS_TIMEOUT: Duration = Duration::from_millis(800);
/// Audit entries kept in the fleet's stream (approximately).
const AUDIT_MAX: usize = 1000;
/// How long acknowledgement lists stay in Redis.
const ACK_TTL_SECS: i64 = 120;

/// The fleet's settings for one component, as kept in Redis and in each node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    kind: ComponentKind,
    name: String,
    settings: Value,
    version: u64,
}

/// A published change: settings for one component under a fleet version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChangeMsg {
    version: u64,
    origin: String,
    actor: String,
    kind: ComponentKind,
    name: String,
    settings: Value,
    /// `update`, or `rollback` of version `of`.
    phase: String,
    #[serde(default)]
    of: Option<u64>,
}

/// A node's answer, pushed to `:acks:<version>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ack {
    node_id: String,
    outcome: Outcome,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    workers: Vec<palisade::control::model::WorkerOutcome>,
}

/// What a node writes in its heartbeat key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    node_id: String,
    admin_addr: Option<String>,
    listen: Option<String>,
    version: String,
    pid: u32,
    started_at_ms: u64,
    at_ms: u64,
    workers: u64,
    workers_ready: u64,
    requests_total: u64,
    in_flight: u64,
    status: StatusCounts,
    applied_version: u64,
    overrides: Vec<String>,
    /// Latencies over the node's last 10 s (HDR, V2 encoding, base64 in JSON).
    latency_10s: LatencyHistogram,
    /// Latencies over the node's last 60 s.
    latency_60s: LatencyHistogram,
}

/// This node's view of the fleet settings it runs.
#[derive(Debug, Default)]
struct State {
    /// `<kind>/<name>` → the fleet entry this node applied.
    effective: BTreeMap<String, Entry>,
    /// Components overridden here with `?scope=node`.
    overrides: BTreeSet<String>,
    /// Fleet entries this node refused (`<kind>/<name>` → version): not retried on every
    /// heartbeat; a newer version of the component is tried again.
    refused: BTreeMap<String, u64>,
}

fn field(kind: ComponentKind, name: &str) -> String {
    format!("{}/{name}", kind.plural())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The default node id: `<hostname>-<port>`.
pub fn default_node_id(port: u16) -> String {
    let host = nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.nodename().to_str().map(str::to_owned))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{port}")
}

/// Publishes a change: bumps the fleet version (never below `min_version`), stores the entry
/// and its version, publishes the message. Returns the version and the previous entry.
const PUBLISH: &str = r#"
local v = redis.call('INCR', KEYS[1])
local min = tonumber(ARGV[1])
if v <= min then
  v = min + 1
  redis.call('SET', KEYS[1], v)
end
local prev = redis.call('HGET', KEYS[2], ARGV[2])
local entry = '{"version":' .. v .. ',' .. string.sub(ARGV[3], 2)
local msg = '{"version":' .. v .. ',' .. string.sub(ARGV[4], 2)
redis.call('HSET', KEYS[2], ARGV[2], entry)
redis.call('HSET', KEYS[3], ARGV[2], v)
redis.call('PUBLISH', KEYS[4], msg)
return {v, prev or false}
"#;

/// Seeds a Redis that lost the fleet's data with a node's settings: raises the version to
/// the node's and writes every entry newer than what Redis holds.
const SEED: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
local n = 0
for i = 2, #ARGV, 3 do
  local have = tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0')
  if have < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
";

/// Deletes the change lock if this node still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// This node's membership of a fleet: heartbeat, change subscription and catch-up, and the
/// fleet side of admin changes. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.inner.config.name)
            .field("node_id", &self.inner.node_id)
            .field("applied_version", &self.applied_version())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: FleetConfig,
    node_id: String,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    /// Whether the last Redis round trip of the heartbeat succeeded.
    up: AtomicBool,
    /// The fleet settings version this node runs.
    applied: AtomicU64,
    state: parking_lot::Mutex<State>,
    /// Serializes changes arriving from the fleet (messages and catch-up).
    replicate: tokio::sync::Mutex<()>,
    admin: OnceLock<Admin>,
    stats: StatsRecorder,
    admin_addr: OnceLock<SocketAddr>,
    started_ms: u64,
}

impl Fleet {
    /// Joins the fleet described by `config` (`redis_url` must be set). Nothing is contacted
    /// yet: [`start`](Self::start) runs the heartbeat and the subscription.
    ///
    /// # Errors
    /// An invalid Redis URL.
    pub fn new(
        config: &FleetConfig,
        listen_port: u16,
        stats: StatsRecorder,
    ) -> redis::RedisResult<Self> {
        let url = config.redis_url.as_deref().unwrap_or_default();
        let client = redis::Client::open(url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
        let node_id = if config.node_id.is_empty() {
            default_node_id(listen_port)
        } else {
            config.node_id.clone()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                prefix: format!("palisade:fleet:{{{}}}", config.name),
                config: config.clone(),
                node_id,
                client,
                conn,
                up: AtomicBool::new(false),
                applied: AtomicU64::new(0),
                state: parking_lot::Mutex::new(State::default()),
                replicate: tokio::sync::Mutex::new(()),
                admin: OnceLock::new(),
                stats,
                admin_addr: OnceLock::new(),
                started_ms: now_ms(),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The fleet settings version this node runs.
    pub fn applied_version(&self) -> u64 {
        self.inner.applied.load(Ordering::Acquire)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.prefix)
    }

    /// Starts the heartbeat and the change subscription on the current runtime; changes from
    /// the fleet are applied through `admin` (this server's admin API state).
    pub fn start(&self, admin: Admin, source: Arc<dyn AdminBackend>, admin_addr: SocketAddr) {
        let _ = self.inner.admin.set(admin);
        let _ = self.inner.admin_addr.set(admin_addr);
        tracing::info!(
            fleet = %self.inner.config.name,
            node_id = %self.inner.node_id,
            "joining the fleet"
        );
        let fleet = self.clone();
        tokio::spawn(async move { fleet.heartbeat_loop(source).await });
        let fleet = self.clone();
        tokio::spawn(async move { fleet.subscribe_loop().await });
    }

    async fn redis<T, F, Fut>(&self, op: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(REDIS_TIMEOUT, op(self.inner.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
        }
    }

    fn unavailable(&self, error: &str) -> BackendError {
        BackendError::Unavailable(format!(
            "fleet changes are refused while the fleet's Redis is unreachable ({error}); nothing \
             changed. Every node keeps serving with its current settings; retry when Redis is \
             back, or add ?scope=node to change this node only"
        ))
    }

    // === heartbeat and catch-up ===

    async fn heartbeat_loop(&self, source: Arc<dyn AdminBackend>) {
        let mut tick = tokio::time::interval(self.inner.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.heartbeat(source.as_ref()).await;
        }
    }

    fn record(&self, source: &dyn AdminBackend) -> NodeRecord {
        let server = source.server();
        let workers = source.workers();
        let traffic = source.traffic();
        let state = self.inner.state.lock();
        NodeRecord {
            node_id: self.inner.node_id.clone(),
            admin_addr: self.inner.admin_addr.get().map(ToString::to_string),
            listen: server.listen,
            version: server.version,
            pid: server.pid,
            started_at_ms: self.inner.started_ms,
            at_ms: now_ms(),
            workers: workers.len() as u64,
            workers_ready: workers.iter().filter(|w| w.state == "ready").count() as u64,
            requests_total: traffic.requests_total,
            in_flight: traffic.in_flight,
            status: traffic.status,
            applied_version: self.applied_version(),
            overrides: state.overrides.iter().cloned().collect(),
            latency_10s: self.inner.stats.short_window(),
            latency_60s: self.inner.stats.long_window(),
        }
    }

    /// Writes this node's heartbeat; on success, catches up with (or re-seeds) the fleet's
    /// settings when the versions differ.
    async fn heartbeat(&self, source: &dyn AdminBackend) {
        let record = self.record(source);
        let Ok(json) = serde_json::to_string(&record) else {
            return;
        };
        let ttl = u64::try_from(self.inner.config.heartbeat.as_millis() * 3).unwrap_or(3000);
        let node_key = self.key(&format!("node:{}", self.inner.node_id));
        let nodes_key = self.key("nodes");
        let version_key = self.key("version");
        let id = self.inner.node_id.clone();
        let result = self
            .redis(|mut c| async move {
                let (_, _, version): ((), (), Option<u64>) = redis::pipe()
                    .set_options(
                        &node_key,
                        json,
                        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl)),
                    )
                    .zadd(&nodes_key, &id, record.at_ms)
                    .get(&version_key)
                    .query_async(&mut c)
                    .await?;
                Ok(version.unwrap_or(0))
            })
            .await;
        match result {
            Ok(version) => {
                if !self.inner.up.swap(true, Ordering::AcqRel) {
                    tracing::info!(node_id = %self.inner.node_id, "fleet: Redis reachable; in the fleet");
                }
                if version != self.applied_version() {
                    self.catch_up().await;
                }
            }
            Err(error) => {
                if self.inner.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(%error, "fleet: Redis unreachable; serving with the last settings, fleet changes refused");
                }
            }
        }
    }

    /// Brings this node to the fleet's settings: applies every entry newer than the version it
    /// runs. When Redis holds an older version than this node (it lost its data), seeds it
    /// with this node's settings instead.
    async fn catch_up(&self) {
        let Some(admin) = self.inner.admin.get() else {
            return;
        };
        let _serialized = self.inner.replicate.lock().await;
        let (version_key, settings_key, lock_key) =
            (self.key("version"), self.key("settings"), self.key("lock"));
        let read = self
            .redis(|mut c| async move {
                let (version, entries, lock): (
                    Option<u64>,
                    BTreeMap<String, String>,
                    Option<String>,
                ) = redis::pipe()
                    .get(&version_key)
                    .hgetall(&settings_key)
                    .get(&lock_key)
                    .query_async(&mut c)
                    .await?;
                Ok((version.unwrap_or(0), entries, lock.is_some()))
            })
            .await;
        let (version, entries, changing) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "fleet: catch-up read failed");
                return;
            }
        };
        let applied = self.applied_version();
        if changing && version >= applied {
            // A fleet change is in flight: its messages (or its rollback) bring this node
            // along; catching up from the hash now could apply a change about to be undone.
            return;
        }
        if version < applied {
            self.seed(applied).await;
            return;
        }
        let refused = self.inner.state.lock().refused.clone();
        let mut entries: Vec<Entry> = entries
            .values()
            .filter_map(|text| serde_json::from_str(text).ok())
            .filter(|e: &Entry| e.version > applied)
            .collect();
        entries.sort_by_key(|e| e.version);
        let mut all = true;
        let mut changed = 0;
        for entry in entries {
            let f = field(entry.kind, &entry.name);
            if refused.get(&f).is_some_and(|v| *v >= entry.version) {
                // Refused here before: the node stays out of sync (the nodes view shows it)
                // until the fleet changes the component again.
                all = false;
                continue;
            }
            let details = json!({ "fleet_version": entry.version, "catch_up": true });
            match admin
                .apply_replicated(entry.kind, &entry.name, &entry.settings, "fleet", details)
                .await
            {
                Ok(_) => {
                    changed += 1;
                    self.applied_entry(entry);
                }
                Err(error) => {
                    all = false;
                    tracing::warn!(target = %f, version = entry.version, error = %error_text(&error), "fleet: cannot apply the fleet's settings here; this node is out of sync");
                    self.inner.state.lock().refused.insert(f, entry.version);
                }
            }
        }
        if all {
            let before = self.inner.applied.fetch_max(version, Ordering::AcqRel);
            if before < version {
                tracing::info!(
                    version,
                    components = changed,
                    "fleet: caught up with the fleet's settings"
                );
            }
        }
    }

    /// Records an entry this node now runs.
    fn applied_entry(&self, entry: Entry) {
        let mut state = self.inner.state.lock();
        let f = field(entry.kind, &entry.name);
        state.overrides.remove(&f);
        state.refused.remove(&f);
        state.effective.insert(f, entry);
    }

    async fn seed(&self, applied: u64) {
        let entries: Vec<(String, Entry)> = self
            .inner
            .state
            .lock()
            .effective
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let keys = [
            self.key("version"),
            self.key("settings"),
            self.key("versions"),
        ];
        let seeded = self
            .redis(|mut c| async move {
                let script = redis::Script::new(SEED);
                let mut invocation = script.prepare_invoke();
                invocation.key(&keys[0]).key(&keys[1]).key(&keys[2]);
                invocation.arg(applied);
                for (f, entry) in &entries {
                    invocation
                        .arg(f)
                        .arg(entry.version)
                        .arg(serde_json::to_string(entry).unwrap_or_default());
                }
                invocation.invoke_async::<u64>(&mut c).await
            })
            .await;
        match seeded {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                version = applied,
                entries = n,
                "fleet: Redis held an older settings version (it lost its data); seeded it from this node"
            ),
            Err(error) => tracing::debug!(%error, "fleet: seeding failed"),
        }
    }

    // === subscription ===

    async fn subscribe_loop(&self) {
        let channel = self.key("changes");
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = tokio::time::timeout(REDIS_TIMEOUT, async {
                let mut pubsub = self.inner.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let pubsub = match subscribed {
                Ok(Ok(p)) => p,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "fleet: subscribe failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            // Subscribe first, then read: nothing published in between is missed.
            self.catch_up().await;
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                match serde_json::from_slice::<ChangeMsg>(msg.get_payload_bytes()) {
                    Ok(change) if change.origin != self.inner.node_id => {
                        self.on_change(change).await;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "fleet: malformed change message ignored"),
                }
            }
            tracing::debug!("fleet: subscription lost; reconnecting");
        }
    }

    /// Applies a change published by another node and acknowledges it.
    async fn on_change(&self, change: ChangeMsg) {
        let Some(admin) = self.inner.admin.get() else {
            return;
        };
        let _serialized = self.inner.replicate.lock().await;
        let applied = self.applied_version();
        let ack = if change.version <= applied {
            // Already in force (caught up before the message arrived).
            Ack {
                node_id: self.inner.node_id.clone(),
                outcome: Outcome::Applied,
                error: None,
                workers: Vec::new(),
            }
        } else {
            let details = json!({
                "fleet_version": change.version,
                "origin": change.origin,
                "phase": change.phase,
            });
            let actor = format!("fleet:{}/{}", change.origin, change.actor);
            match admin
                .apply_replicated(change.kind, &change.name, &change.settings, &actor, details)
                .await
            {
                Ok(propagation) => {
                    self.applied_entry(Entry {
                        kind: change.kind,
                        name: change.name.clone(),
                        settings: change.settings.clone(),
                        version: change.version,
                    });
                    // Only the next version moves the mark: one missed in between is caught
                    // up from the settings hash on the next heartbeat.
                    if change.version == applied + 1 {
                        let _ = self.inner.applied.compare_exchange(
                            applied,
                            change.version,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                    Ack {
                        node_id: self.inner.node_id.clone(),
                        outcome: Outcome::Applied,
                        error: None,
                        workers: propagation.workers,
                    }
                }
                Err(error) => {
                    tracing::warn!(target = %field(change.kind, &change.name), version = change.version, error = %error_text(&error), "fleet: change refused on this node");
                    self.inner
                        .state
                        .lock()
                        .refused
                        .insert(field(change.kind, &change.name), change.version);
                    let (outcome, workers) = match &error {
                        BackendError::NotApplied(p) => {
                            let timed_out = p.failed().all(|w| w.outcome == Outcome::TimedOut);
                            let outcome = if timed_out {
                                Outcome::TimedOut
                            } else {
                                Outcome::Refused
                            };
                            (outcome, p.workers.clone())
                        }
                        _ => (Outcome::Refused, Vec::new()),
                    };
                    Ack {
                        node_id: self.inner.node_id.clone(),
                        outcome,
                        error: Some(error_text(&error)),
                        workers,
                    }
                }
            }
        };
        let key = self.key(&format!("acks:{}", change.version));
        let Ok(text) = serde_json::to_string(&ack) else {
            return;
        };
        let pushed = self
            .redis(|mut c| async move {
                redis::pipe()
                    .rpush(&key, text)
                    .expire(&key, ACK_TTL_SECS)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(error) = pushed {
            tracing::warn!(%error, version = change.version, "fleet: acknowledgement not sent");
        }
    }

    // === fleet-wide changes (origin side) ===

    async fn live_nodes(&self) -> Result<Vec<NodeRecord>, String> {
        let nodes_key = self.key("nodes");
        let ids: Vec<String> = self
            .redis(|mut c| async move { c.zrange(&nodes_key, 0, -1).await })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&format!("node:{id}")))
            .collect();
        let values: Vec<Option<String>> = self
            .redis(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value.and_then(|v| serde_json::from_str::<NodeRecord>(&v).ok()) {
                Some(record) => live.push(record),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Nodes whose heartbeat expired leave the index too.
            let nodes_key = self.key("nodes");
            let _ = self
                .redis(|mut c| async move { c.zrem::<_, _, ()>(&nodes_key, gone).await })
                .await;
        }
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(live)
    }

    async fn lock(&self) -> Result<String, BackendError> {
        let token = format!("{}:{}", self.inner.node_id, fastrand::u64(..));
        let key = self.key("lock");
        let ttl = u64::try_from(self.inner.config.change_timeout.as_millis() * 3 + 10_000)
            .unwrap_or(60_000);
        let value = token.clone();
        let got: Option<String> = self
            .redis(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(|e| self.unavailable(&e))?;
        if got.is_some() {
            return Ok(token);
        }
        let key = self.key("lock");
        let holder: Option<String> = self
            .redis(|mut c| async move { c.get(&key).await })
            .await
            .unwrap_or(None);
        let holder = holder
            .as_deref()
            .and_then(|h| h.rsplit_once(':'))
            .map_or("another node", |(node, _)| node)
            .to_owned();
        Err(BackendError::Conflict(format!(
            "another fleet-wide change is in progress (from node {holder}); retry when it has \
             finished"
        )))
    }

    async fn unlock(&self, token: String) {
        let key = self.key("lock");
        let _ = self
            .redis(|mut c| async move {
                redis::Script::new(UNLOCK)
                    .key(&key)
                    .arg(&token)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
    }

    /// Writes and publishes settings under the next fleet version; returns it and the entry it
    /// replaced.
    async fn publish(&self, msg: &ChangeMsg) -> Result<(u64, Option<Entry>), String> {
        let entry = Entry {
            kind: msg.kind,
            name: msg.name.clone(),
            settings: msg.settings.clone(),
            version: 0,
        };
        // The script puts the version first; strip ours (the object's first member).
        let entry_json = strip_version(serde_json::to_value(&entry).map_err(|e| e.to_string())?);
        let msg_json = strip_version(serde_json::to_value(msg).map_err(|e| e.to_string())?);
        let keys = [
            self.key("version"),
            self.key("settings"),
            self.key("versions"),
            self.key("changes"),
        ];
        let f = field(msg.kind, &msg.name);
        let min = self.applied_version();
        let (version, prev): (u64, Option<String>) = self
            .redis(|mut c| async move {
                redis::Script::new(PUBLISH)
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .arg(min)
                    .arg(&f)
                    .arg(entry_json)
                    .arg(msg_json)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((version, prev.and_then(|p| serde_json::from_str(&p).ok())))
    }

    /// Waits for every node of `expected` to answer version `version`, until `deadline`. A
    /// node that leaves the fleet meanwhile counts as exited.
    async fn collect(
        &self,
        version: u64,
        expected: &[String],
        started: Instant,
    ) -> Vec<NodeOutcome> {
        let deadline = started + self.inner.config.change_timeout;
        let mut outcomes: BTreeMap<String, NodeOutcome> = BTreeMap::new();
        let key = self.key(&format!("acks:{version}"));
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let mut conn = match self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => Some(c),
            Err(error) => {
                tracing::warn!(%error, "fleet: cannot wait for acknowledgements");
                None
            }
        };
        let mut last_liveness = Instant::now();
        while let Some(c) = conn.as_mut() {
            if expected.iter().all(|n| outcomes.contains_key(n)) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.min(Duration::from_millis(500)).as_secs_f64().max(0.01);
            let popped: redis::RedisResult<Option<(String, String)>> =
                redis::cmd("BLPOP").arg(&key).arg(wait).query_async(c).await;
            match popped {
                Ok(Some((_, text))) => {
                    if let Ok(ack) = serde_json::from_str::<Ack>(&text)
                        && expected.contains(&ack.node_id)
                    {
                        outcomes.insert(
                            ack.node_id.clone(),
                            NodeOutcome {
                                node_id: ack.node_id,
                                outcome: ack.outcome,
                                error: ack.error,
                                elapsed_ms: elapsed_ms(started),
                                workers: ack.workers,
                            },
                        );
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "fleet: waiting for acknowledgements failed");
                    conn = None;
                }
            }
            if last_liveness.elapsed() >= Duration::from_millis(500) {
                last_liveness = Instant::now();
                if let Ok(live) = self.live_nodes().await {
                    for id in expected {
                        if !outcomes.contains_key(id) && !live.iter().any(|n| &n.node_id == id) {
                            outcomes.insert(
                                id.clone(),
                                NodeOutcome {
                                    node_id: id.clone(),
                                    outcome: Outcome::Exited,
                                    error: Some("left the fleet before answering".into()),
                                    elapsed_ms: elapsed_ms(started),
                                    workers: Vec::new(),
                                },
                            );
                        }
                    }
                }
            }
        }
        let timeout = self.inner.config.change_timeout.as_millis();
        expected
            .iter()
            .map(|id| {
                outcomes.remove(id).unwrap_or_else(|| NodeOutcome {
                    node_id: id.clone(),
                    outcome: Outcome::TimedOut,
                    error: Some(format!("no answer within {timeout} ms")),
                    elapsed_ms: elapsed_ms(started),
                    workers: Vec::new(),
                })
            })
            .collect()
    }

    /// Audits a fleet-wide update of `target` with its outcome (`applied`, `rolled_back`).
    async fn audit_update(
        &self,
        version: u64,
        actor: &str,
        target: String,
        change: &Change,
        outcome: &str,
        propagation: &Propagation,
    ) {
        self.audit(&FleetAuditEntry {
            version,
            at_ms: now_ms(),
            origin: self.inner.node_id.clone(),
            actor: actor.to_owned(),
            action: "update".into(),
            target,
            before: change.before.clone(),
            after: change.after.clone(),
            outcome: outcome.into(),
            propagation: propagation.clone(),
        })
        .await;
    }

    async fn audit(&self, entry: &FleetAuditEntry) {
        let key = self.key("audit");
        let Ok(text) = serde_json::to_string(entry) else {
            return;
        };
        let written = self
            .redis(|mut c| async move {
                redis::cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(AUDIT_MAX)
                    .arg("*")
                    .arg("entry")
                    .arg(text)
                    .query_async::<String>(&mut c)
                    .await
            })
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "fleet: audit entry not written");
        }
    }

    /// Carries a settings change made through this node's admin API to the whole fleet (see
    /// the module docs); `local` fans changes out to this node's workers.
    async fn change_fleet<B: AdminBackend>(
        &self,
        local: &B,
        applied: &Applied,
    ) -> Result<Propagation, BackendError> {
        let Applied::Settings {
            kind,
            name,
            change,
            actor,
            ..
        } = applied
        else {
            // Actions run on this node only.
            return local.propagate(applied).await;
        };
        let started = Instant::now();
        let token = self.lock().await?;
        let result = self
            .change_locked(local, applied, *kind, name, change, actor, started)
            .await;
        self.unlock(token).await;
        result
    }

    #[allow(clippy::too_many_arguments, reason = "the pieces of one change")]
    async fn change_locked<B: AdminBackend>(
        &self,
        local: &B,
        applied: &Applied,
        kind: ComponentKind,
        name: &str,
        change: &Change,
        actor: &str,
        started: Instant,
    ) -> Result<Propagation, BackendError> {
        let expected: Vec<String> = self
            .live_nodes()
            .await
            .map_err(|e| self.unavailable(&e))?
            .into_iter()
            .map(|n| n.node_id)
            .filter(|id| *id != self.inner.node_id)
            .collect();
        let mut propagation = local.propagate(applied).await?;
        let msg = ChangeMsg {
            version: 0,
            origin: self.inner.node_id.clone(),
            actor: actor.to_owned(),
            kind,
            name: name.to_owned(),
            settings: change.after.clone(),
            phase: "update".into(),
            of: None,
        };
        let (version, previous) = match self.publish(&msg).await {
            Ok(published) => published,
            Err(error) => {
                self.undo_local(local, applied, kind, name, change).await;
                return Err(self.unavailable(&error));
            }
        };
        let nodes = self.collect(version, &expected, started).await;
        let failed = nodes.iter().any(|n| n.outcome.is_failure());
        propagation.nodes = nodes;
        propagation.elapsed_ms = elapsed_ms(started);
        let target = field(kind, name);
        if !failed {
            self.applied_entry(Entry {
                kind,
                name: name.to_owned(),
                settings: change.after.clone(),
                version,
            });
            self.inner.applied.fetch_max(version, Ordering::AcqRel);
            self.audit_update(version, actor, target, change, "applied", &propagation)
                .await;
            tracing::info!(version, summary = %propagation.summary(), "fleet: change applied on every node");
            return Ok(propagation);
        }
        // Roll back everywhere: this node's workers, then every node through the next version.
        self.undo_local(local, applied, kind, name, change).await;
        let restore = previous.map_or_else(|| change.before.clone(), |p| p.settings);
        let rollback = ChangeMsg {
            settings: restore.clone(),
            phase: "rollback".into(),
            of: Some(version),
            ..msg
        };
        propagation.rolled_back = true;
        match self.publish(&rollback).await {
            Ok((undo_version, _)) => {
                let still: Vec<String> = propagation
                    .nodes
                    .iter()
                    .filter(|n| n.outcome != Outcome::Exited)
                    .map(|n| n.node_id.clone())
                    .collect();
                let undone = self.collect(undo_version, &still, Instant::now()).await;
                for n in undone.iter().filter(|n| n.outcome.is_failure()) {
                    tracing::error!(node_id = %n.node_id, error = n.error.as_deref().unwrap_or(""), "fleet: node did not restore the settings after a failed change; it is out of sync until it catches up");
                }
                self.applied_entry(Entry {
                    kind,
                    name: name.to_owned(),
                    settings: restore.clone(),
                    version: undo_version,
                });
                self.inner.applied.fetch_max(undo_version, Ordering::AcqRel);
            }
            Err(error) => {
                tracing::error!(%error, "fleet: the rollback could not be published; nodes catch up with the fleet's settings when Redis answers");
            }
        }
        propagation.elapsed_ms = elapsed_ms(started);
        self.audit_update(version, actor, target, change, "rolled_back", &propagation)
            .await;
        tracing::warn!(version, summary = %propagation.summary(), "fleet: change rolled back on every node");
        Err(BackendError::NotApplied(propagation))
    }

    /// Restores this node's workers after a fleet change failed (the admin router restores
    /// its own copy when the change answers an error).
    async fn undo_local<B: AdminBackend>(
        &self,
        local: &B,
        applied: &Applied,
        kind: ComponentKind,
        name: &str,
        change: &Change,
    ) {
        let (version, revert, actor) = match applied {
            Applied::Settings {
                version,
                revert,
                actor,
                ..
            } => (*version, *revert, actor.clone()),
            Applied::Action { actor, .. } => (0, false, actor.clone()),
            _ => (0, false, String::new()),
        };
        let undo = Applied::Settings {
            kind,
            name: name.to_owned(),
            patch: change.before.clone(),
            change: Change {
                before: change.after.clone(),
                after: change.before.clone(),
            },
            version,
            revert,
            actor,
            scope: Scope::Replicated,
        };
        if let Err(error) = local.propagate(&undo).await {
            tracing::error!(%error, "fleet: this node's workers did not restore the settings after a failed fleet change");
        }
    }

    // === reads ===

    async fn fleet_version(&self) -> Result<u64, String> {
        let key = self.key("version");
        self.redis(|mut c| async move { c.get::<_, Option<u64>>(&key).await })
            .await
            .map(|v| v.unwrap_or(0))
    }

    fn info(record: &NodeRecord, fleet_version: u64, now: u64) -> NodeInfo {
        NodeInfo {
            node_id: record.node_id.clone(),
            admin_addr: record.admin_addr.clone(),
            listen: record.listen.clone(),
            version: record.version.clone(),
            pid: record.pid,
            uptime_secs: now.saturating_sub(record.started_at_ms) / 1000,
            workers_ready: record.workers_ready,
            workers: record.workers,
            requests_total: record.requests_total,
            in_flight: record.in_flight,
            status: record.status,
            latency: vec![record.latency_10s.window(10), record.latency_60s.window(60)],
            applied_version: record.applied_version,
            in_sync: record.applied_version == fleet_version,
            overrides: record.overrides.clone(),
            last_seen_ms: now.saturating_sub(record.at_ms),
        }
    }

    async fn read_nodes(&self) -> Result<(u64, Vec<NodeRecord>), BackendError> {
        let version = self
            .fleet_version()
            .await
            .map_err(|e| self.read_unavailable(&e))?;
        let nodes = self
            .live_nodes()
            .await
            .map_err(|e| self.read_unavailable(&e))?;
        Ok((version, nodes))
    }

    fn read_unavailable(&self, error: &str) -> BackendError {
        BackendError::Unavailable(format!(
            "the fleet's Redis is unreachable ({error}); this node keeps serving with its \
             current settings (its own view: GET /admin/v1/snapshot)"
        ))
    }

    /// `GET /admin/v1/fleet/nodes`.
    pub async fn nodes(&self) -> Result<FleetNodes, BackendError> {
        let (version, records) = self.read_nodes().await?;
        let now = now_ms();
        Ok(FleetNodes {
            fleet: self.inner.config.name.clone(),
            node_id: self.inner.node_id.clone(),
            version,
            heartbeat_ms: u64::try_from(self.inner.config.heartbeat.as_millis()).unwrap_or(0),
            nodes: records
                .iter()
                .map(|r| Self::info(r, version, now))
                .collect(),
        })
    }

    /// `GET /admin/v1/fleet/snapshot`: totals summed, latency histograms added exactly.
    pub async fn snapshot(&self) -> Result<FleetSnapshot, BackendError> {
        let (version, records) = self.read_nodes().await?;
        let now = now_ms();
        let mut traffic = Traffic::default();
        let mut short = LatencyHistogram::new();
        let mut long = LatencyHistogram::new();
        for r in &records {
            traffic.requests_total += r.requests_total;
            traffic.in_flight += r.in_flight;
            traffic.status.add(&r.status);
            if let Err(error) = short
                .add(&r.latency_10s)
                .and_then(|()| long.add(&r.latency_60s))
            {
                tracing::warn!(node_id = %r.node_id, %error, "fleet: latency histogram not merged");
            }
        }
        traffic.latency = vec![short.window(10), long.window(60)];
        Ok(FleetSnapshot {
            fleet: self.inner.config.name.clone(),
            node_id: self.inner.node_id.clone(),
            version,
            taken_at_ms: now,
            traffic,
            nodes: records
                .iter()
                .map(|r| Self::info(r, version, now))
                .collect(),
        })
    }

    /// `GET /admin/v1/fleet/audit`.
    pub async fn audit_log(&self, limit: usize) -> Result<FleetAudit, BackendError> {
        let key = self.key("audit");
        let raw: Vec<(String, Vec<(String, String)>)> = self
            .redis(|mut c| async move {
                redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(|e| self.read_unavailable(&e))?;
        let mut entries: Vec<FleetAuditEntry> = raw
            .into_iter()
            .filter_map(|(_, fields)| {
                fields
                    .into_iter()
                    .find(|(k, _)| k == "entry")
                    .and_then(|(_, v)| serde_json::from_str(&v).ok())
            })
            .collect();
        entries.reverse();
        Ok(FleetAudit {
            fleet: self.inner.config.name.clone(),
            entries,
        })
    }

    /// Notes a node-local override (`?scope=node`) that this node applied.
    fn overridden(&self, applied: &Applied) {
        if let Applied::Settings { kind, name, .. } = applied {
            self.inner.state.lock().overrides.insert(field(*kind, name));
        }
    }
}

/// The text of a backend error for an acknowledgement: the failed workers, or the field
/// errors.
fn error_text(error: &BackendError) -> String {
    match error {
        BackendError::NotApplied(p) => p
            .failed()
            .map(|w| match &w.error {
                Some(e) => format!("worker {} (pid {}): {e}", w.worker_id, w.pid),
                None => format!("worker {} (pid {}): no answer", w.worker_id, w.pid),
            })
            .collect::<Vec<_>>()
            .join("; "),
        BackendError::Invalid(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.reason))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// A JSON object without its `version` member, as text: `{"kind":...}`.
fn strip_version(mut value: Value) -> String {
    if let Some(map) = value.as_object_mut() {
        map.remove("version");
    }
    value.to_string()
}

/// An admin backend in fleet mode: everything from `inner` (this server), with settings
/// changes carried to the whole fleet and the fleet routes answered from Redis.
#[derive(Debug)]
pub struct FleetBackend<B> {
    inner: Arc<B>,
    fleet: Fleet,
}

impl<B: AdminBackend> FleetBackend<B> {
    /// Wraps this server's backend.
    pub fn new(inner: Arc<B>, fleet: Fleet) -> Self {
        Self { inner, fleet }
    }
}

impl<B: AdminBackend> AdminBackend for FleetBackend<B> {
    fn server(&self) -> ServerInfo {
        self.inner.server()
    }
    fn workers(&self) -> Vec<WorkerInfo> {
        self.inner.workers()
    }
    fn traffic(&self) -> Traffic {
        self.inner.traffic()
    }
    fn scale(&self, workers: u32) -> BackendFuture<'_, Change> {
        self.inner.scale(workers)
    }
    fn restart(&self) -> BackendFuture<'_, Change> {
        self.inner.restart()
    }
    fn drain_worker(&self, id: u32) -> BackendFuture<'_, Change> {
        self.inner.drain_worker(id)
    }
    fn propagate<'a>(&'a self, applied: &'a Applied) -> BackendFuture<'a, Propagation> {
        Box::pin(async move {
            match applied.scope() {
                Scope::Node => {
                    let propagation = self.inner.propagate(applied).await?;
                    self.fleet.overridden(applied);
                    Ok(propagation)
                }
                Scope::Replicated => self.inner.propagate(applied).await,
                _ => self.fleet.change_fleet(self.inner.as_ref(), applied).await,
            }
        })
    }
    fn fleet_nodes(&self) -> BackendFuture<'_, FleetNodes> {
        Box::pin(self.fleet.nodes())
    }
    fn fleet_snapshot(&self) -> BackendFuture<'_, FleetSnapshot> {
        Box::pin(self.fleet.snapshot())
    }
    fn fleet_audit(&self, limit: usize) -> BackendFuture<'_, FleetAudit> {
        Box::pin(self.fleet.audit_log(limit))
    }
}
