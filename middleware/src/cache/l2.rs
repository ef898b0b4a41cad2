//! The Redis L2 and the pub/sub invalidation backplane.
//!
//! Every call goes through a circuit breaker and an outer timeout: a dead or slow Redis costs
//! one timeout per breaker window, never an error for the caller. The connection is a
//! `ConnectionManager` (one multiplexed socket that reconnects by itself); the backplane has its
//! own pub/sub connection and a loop that re-subscribes with backoff, clearing L1 after every
//! reconnect because messages may have been lost meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::codec::{self, EnvelopeMeta, ValueCodec};
use super::config::{CacheConfig, ConfigError, RedisConfig};
use super::entry::{Entry, MIN_PHYSICAL};
use super::stats::{BackplaneStats, Counters, L2Stats};
use super::two_level::{Inner, Inval};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig};

/// Most invalidations remembered while L2 is unreachable; beyond it the whole namespace is
/// flushed on recovery instead.
const MAX_PENDING: usize = 1024;
/// How often the backplane pings its subscriber connection to detect a dead socket.
const PING_EVERY: Duration = Duration::from_secs(5);
const SCAN_COUNT: usize = 512;

pub(crate) enum L2Read<V> {
    Hit(Entry<V>),
    Miss,
    Unavailable,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn breaker_for(name: &str, redis: &RedisConfig) -> CircuitBreaker {
    CircuitBreaker::new(
        CircuitBreakerConfig::consecutive_failures(
            redis.breaker_failures,
            Duration::from_millis(redis.breaker_open_ms),
        )
        .with_name(format!("cache_l2_{name}")),
    )
}

/// Escapes a literal for a Redis glob pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(crate) struct L2<V> {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    codec: Arc<dyn ValueCodec<V>>,
    /// `{key_prefix}:{namespace}:`
    key_base: String,
    /// `{key_prefix}:inval:{namespace}`
    channel: String,
    node_id: String,
    breaker: ArcSwap<CircuitBreaker>,
    breaker_settings: Mutex<(u32, u64)>,
    pending: Mutex<VecDeque<Inval>>,
    replaying: AtomicBool,
    stats: Arc<Counters>,
    warnings: crate::redis::Warnings,
}

impl<V> L2<V>
where
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(
        config: &CacheConfig,
        redis: &RedisConfig,
        codec: Arc<dyn ValueCodec<V>>,
        stats: Arc<Counters>,
    ) -> Result<Self, ConfigError> {
        let client = crate::redis::client(&redis.url, &redis.tls)?;
        Ok(Self {
            client,
            conn: Mutex::new(None),
            codec,
            key_base: format!("{}:{}:", redis.key_prefix, config.namespace),
            channel: format!("{}:inval:{}", redis.key_prefix, config.namespace),
            node_id: format!("{:016x}", fastrand::u64(..)),
            breaker: ArcSwap::from_pointee(breaker_for(&config.name, redis)),
            breaker_settings: Mutex::new((redis.breaker_failures, redis.breaker_open_ms)),
            pending: Mutex::new(VecDeque::new()),
            replaying: AtomicBool::new(false),
            stats,
            warnings: crate::redis::Warnings::default(),
        })
    }

    fn redis_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.key_base.len() + key.len());
        k.push_str(&self.key_base);
        k.push_str(key);
        k
    }

    /// Rebuilds the breaker when its settings changed at runtime.
    pub(crate) fn reconfigure(&self, config: &CacheConfig) {
        let Some(redis) = &config.redis else { return };
        let mut current = self.breaker_settings.lock();
        let next = (redis.breaker_failures, redis.breaker_open_ms);
        if *current != next {
            *current = next;
            self.breaker
                .store(Arc::new(breaker_for(&config.name, redis)));
        }
    }

    fn connection(&self, redis: &RedisConfig) -> redis::RedisResult<ConnectionManager> {
        let mut conn = self.conn.lock();
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis.connect_timeout()))
            .set_response_timeout(Some(redis.timeout()))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let c = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Runs one Redis operation through the breaker and the timeout.
    async fn call<T, F, Fut>(&self, inner: &Arc<Inner<V>>, op: F) -> Result<T, ()>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let cfg = inner.config.load_full();
        let Some(redis) = cfg.redis.as_ref() else {
            return Err(());
        };
        let breaker = self.breaker.load_full();
        let Ok(permit) = breaker.try_acquire() else {
            self.stats.l2_open.inc();
            return Err(());
        };
        let conn = match self.connection(redis) {
            Ok(c) => c,
            Err(error) => {
                permit.failure();
                self.stats.l2_errors.inc();
                tracing::debug!(cache = %cfg.name, %error, "cache L2 connection failed");
                return Err(());
            }
        };
        match tokio::time::timeout(redis.timeout(), op(conn)).await {
            Ok(Ok(v)) => {
                permit.success();
                if !self.pending.lock().is_empty() {
                    self.spawn_replay(inner);
                }
                Ok(v)
            }
            Ok(Err(error)) => {
                permit.failure();
                self.stats.l2_errors.inc();
                if self.warnings.due() {
                    tracing::warn!(cache = %cfg.name, %error, "cache L2 call failed; serving from L1 and the loader");
                } else {
                    tracing::debug!(cache = %cfg.name, %error, "cache L2 call failed");
                }
                Err(())
            }
            Err(_) => {
                permit.record_timeout();
                self.stats.l2_timeouts.inc();
                tracing::debug!(cache = %cfg.name, timeout = ?redis.timeout(), "cache L2 call timed out");
                Err(())
            }
        }
    }

    pub(crate) async fn get(&self, inner: &Arc<Inner<V>>, key: &str) -> L2Read<V> {
        let rk = self.redis_key(key);
        let read = self
            .call(inner, |mut c| async move {
                redis::cmd("GET")
                    .arg(&rk)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            })
            .await;
        match read {
            Ok(Some(bytes)) => match self.decode(inner, key, &bytes) {
                Some(entry) => L2Read::Hit(entry),
                None => L2Read::Miss,
            },
            Ok(None) => L2Read::Miss,
            Err(()) => L2Read::Unavailable,
        }
    }

    fn decode(&self, inner: &Inner<V>, key: &str, bytes: &[u8]) -> Option<Entry<V>> {
        let cfg = inner.config.load();
        let max = cfg.redis.as_ref().map_or(0, |r| r.max_entry_bytes);
        let refuse = |reason: &'static str, error: &dyn std::fmt::Display| {
            self.stats.corrupt(reason);
            tracing::debug!(cache = %cfg.name, key, reason, %error, "cache L2 entry refused");
        };
        let env = match codec::decode(bytes, max) {
            Ok(env) => env,
            Err(e) => {
                refuse(e.reason(), &e);
                return None;
            }
        };
        if env.meta.codec != self.codec.id() {
            let e = codec::DecodeError::Codec {
                found: env.meta.codec,
                expected: self.codec.id(),
            };
            refuse(e.reason(), &e);
            return None;
        }
        let value = if env.meta.negative {
            None
        } else {
            match self.codec.decode(env.payload) {
                Ok(v) => Some(v),
                Err(e) => {
                    refuse("payload", &e);
                    return None;
                }
            }
        };
        let now_ms = unix_ms();
        if env.meta.stale_until_ms <= now_ms {
            return None;
        }
        let now = Instant::now();
        let until = |ms: u64| now + Duration::from_millis(ms.saturating_sub(now_ms));
        let fresh_until = until(env.meta.fresh_until_ms);
        let stale_until = until(env.meta.stale_until_ms);
        Some(Entry {
            weight: inner.weigh(key, value.as_ref()),
            value,
            stored_at: now,
            initial_age: Duration::from_millis(now_ms.saturating_sub(env.meta.created_ms)),
            l1_fresh_until: (now + cfg.l1_ttl()).min(fresh_until),
            fresh_until,
            stale_until,
            physical: stale_until.saturating_duration_since(now).max(MIN_PHYSICAL),
        })
    }

    fn encode(&self, inner: &Inner<V>, entry: &Entry<V>) -> Option<(Vec<u8>, u64)> {
        let cfg = inner.config.load();
        let now = Instant::now();
        let now_ms = unix_ms();
        let ms_until = |t: Instant| {
            now_ms + u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(0)
        };
        let age = entry.initial_age + now.saturating_duration_since(entry.stored_at);
        let meta = EnvelopeMeta {
            codec: self.codec.id(),
            negative: entry.value.is_none(),
            created_ms: now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(0)),
            fresh_until_ms: ms_until(entry.fresh_until),
            stale_until_ms: ms_until(entry.stale_until),
        };
        let px = meta.stale_until_ms.saturating_sub(now_ms);
        if px == 0 {
            return None;
        }
        let mut buf = Vec::new();
        let written = codec::encode(&meta, &mut buf, |out| match &entry.value {
            Some(v) => self.codec.encode(v, out),
            None => Ok(()),
        });
        if let Err(error) = written {
            tracing::debug!(cache = %cfg.name, %error, "cache value not encodable; kept in L1 only");
            return None;
        }
        let max = cfg.redis.as_ref().map_or(0, |r| r.max_entry_bytes);
        if buf.len() - codec::HEADER_LEN > max {
            self.stats.l2_oversize.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some((buf, px))
    }

    fn message(&self, what: &Inval) -> Vec<u8> {
        let (op, arg) = match what {
            Inval::Key(k) => ("k", k.as_str()),
            Inval::Prefix(p) => ("p", p.as_str()),
            Inval::All => ("a", ""),
        };
        format!("{}|{op}|{arg}", self.node_id).into_bytes()
    }

    fn backplane_on(inner: &Inner<V>) -> bool {
        inner
            .config
            .load()
            .redis
            .as_ref()
            .is_some_and(|r| r.backplane)
    }

    /// Writes an entry (and, for explicit writes, publishes an invalidation so other nodes drop
    /// their L1 copy). If `discard` gets set while writing, the write is undone.
    pub(crate) async fn store(
        &self,
        inner: &Arc<Inner<V>>,
        key: &str,
        entry: &Entry<V>,
        publish: bool,
        discard: Option<&AtomicBool>,
    ) {
        if discard.is_some_and(|d| d.load(Ordering::SeqCst)) {
            return;
        }
        let Some((bytes, px)) = self.encode(inner, entry) else {
            return;
        };
        let rk = self.redis_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&rk)
            .arg(bytes)
            .arg("PX")
            .arg(px)
            .ignore();
        let publish = publish && Self::backplane_on(inner);
        if publish {
            pipe.cmd("PUBLISH")
                .arg(&self.channel)
                .arg(self.message(&Inval::Key(key.to_owned())))
                .ignore();
        }
        let written = self
            .call(inner, |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        if written.is_ok() {
            self.stats.l2_writes.fetch_add(1, Ordering::Relaxed);
            if publish {
                self.stats.backplane_out.inc();
            }
            if discard.is_some_and(|d| d.load(Ordering::SeqCst)) {
                self.invalidate(inner, &Inval::Key(key.to_owned())).await;
            }
        } else if publish {
            self.remember(Inval::Key(key.to_owned()));
        }
    }

    /// Deletes matching keys from L2 and publishes the invalidation. Failures are remembered
    /// and replayed when Redis answers again.
    pub(crate) async fn invalidate(&self, inner: &Arc<Inner<V>>, what: &Inval) {
        if self.try_invalidate(inner, what).await.is_err() {
            self.remember(what.clone());
        }
    }

    async fn try_invalidate(&self, inner: &Arc<Inner<V>>, what: &Inval) -> Result<(), ()> {
        let publish = Self::backplane_on(inner);
        match what {
            Inval::Key(k) => {
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(self.redis_key(k)).ignore();
                if publish {
                    pipe.cmd("PUBLISH")
                        .arg(&self.channel)
                        .arg(self.message(what))
                        .ignore();
                }
                self.call(inner, |mut c| async move {
                    pipe.query_async::<()>(&mut c).await
                })
                .await?;
            }
            Inval::Prefix(_) | Inval::All => {
                let prefix = match what {
                    Inval::Prefix(p) => p.as_str(),
                    _ => "",
                };
                let pattern = format!("{}*", glob_escape(&self.redis_key(prefix)));
                let mut cursor: u64 = 0;
                loop {
                    let pat = pattern.clone();
                    let (next, keys): (u64, Vec<Vec<u8>>) = self
                        .call(inner, |mut c| async move {
                            redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(&pat)
                                .arg("COUNT")
                                .arg(SCAN_COUNT)
                                .query_async(&mut c)
                                .await
                        })
                        .await?;
                    if !keys.is_empty() {
                        self.call(inner, |mut c| async move {
                            redis::cmd("UNLINK")
                                .arg(keys)
                                .query_async::<()>(&mut c)
                                .await
                        })
                        .await?;
                    }
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                if publish {
                    let msg = self.message(what);
                    let channel = self.channel.clone();
                    self.call(inner, |mut c| async move {
                        redis::cmd("PUBLISH")
                            .arg(channel)
                            .arg(msg)
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await?;
                }
            }
        }
        if publish {
            self.stats.backplane_out.inc();
        }
        Ok(())
    }

    fn remember(&self, what: Inval) {
        let mut pending = self.pending.lock();
        if pending.contains(&what) || pending.front() == Some(&Inval::All) {
            return;
        }
        if pending.len() >= MAX_PENDING || what == Inval::All {
            pending.clear();
            pending.push_back(Inval::All);
        } else {
            pending.push_back(what);
        }
        self.stats
            .l2_pending
            .store(pending.len() as u64, Ordering::Relaxed);
    }

    fn spawn_replay(&self, inner: &Arc<Inner<V>>) {
        if self.replaying.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            if let Some(l2) = &inner.l2 {
                l2.replay(&inner).await;
                l2.replaying.store(false, Ordering::Release);
            }
        });
    }

    /// Replays invalidations that failed during an outage, oldest first.
    async fn replay(&self, inner: &Arc<Inner<V>>) {
        loop {
            let Some(next) = self.pending.lock().front().cloned() else {
                break;
            };
            if self.try_invalidate(inner, &next).await.is_err() {
                break;
            }
            let mut pending = self.pending.lock();
            if pending.front() == Some(&next) {
                pending.pop_front();
            }
            self.stats
                .l2_pending
                .store(pending.len() as u64, Ordering::Relaxed);
            tracing::debug!(cache = %self.stats.name, "cache L2 invalidation replayed");
        }
    }

    pub(crate) fn stats(&self, inner: &Inner<V>) -> L2Stats {
        let counters = &inner.stats;
        L2Stats {
            hits: counters.l2_hits.get(),
            misses: counters.l2_misses.get(),
            corrupt: counters.corrupt.load(Ordering::Relaxed),
            errors: counters.l2_errors.get(),
            timeouts: counters.l2_timeouts.get(),
            skipped_open: counters.l2_open.get(),
            writes: counters.l2_writes.load(Ordering::Relaxed),
            oversize: counters.l2_oversize.load(Ordering::Relaxed),
            breaker: self.breaker.load().state().as_str().to_owned(),
            pending_invalidations: counters.l2_pending.load(Ordering::Relaxed),
            backplane: BackplaneStats {
                enabled: Self::backplane_on(inner),
                connected: counters.backplane_connected.load(Ordering::Relaxed),
                received: counters.backplane_in.get(),
                published: counters.backplane_out.get(),
                reconnects: counters.backplane_reconnects.load(Ordering::Relaxed),
            },
        }
    }
}

/// Starts the backplane subscriber (once, on the current runtime).
pub(crate) fn start_background<V>(inner: &Arc<Inner<V>>)
where
    V: Clone + Send + Sync + 'static,
{
    if inner.started.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(l2) = &inner.l2 else { return };
    if !L2::backplane_on(inner) {
        return;
    }
    let weak = Arc::downgrade(inner);
    let client = l2.client.clone();
    let channel = l2.channel.clone();
    let node_id = l2.node_id.clone();
    let task = tokio::spawn(backplane(weak, client, channel, node_id));
    *inner.background.lock() = Some(task);
}

fn parse_message(payload: &[u8]) -> Option<(&str, Inval)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, '|');
    let node = parts.next()?;
    let op = parts.next()?;
    let arg = parts.next()?;
    let what = match op {
        "k" => Inval::Key(arg.to_owned()),
        "p" => Inval::Prefix(arg.to_owned()),
        "a" => Inval::All,
        _ => return None,
    };
    Some((node, what))
}

async fn backplane<V>(weak: Weak<Inner<V>>, client: redis::Client, channel: String, node_id: String)
where
    V: Clone + Send + Sync + 'static,
{
    let mut backoff = Duration::from_millis(100);
    let warnings = crate::redis::Warnings::default();
    // Set once anything could have been missed: a failed attempt or a lost connection.
    let mut missed = false;
    loop {
        let Some(connect_timeout) = weak.upgrade().map(|i| {
            i.config
                .load()
                .redis
                .as_ref()
                .map_or(Duration::from_secs(1), RedisConfig::connect_timeout)
        }) else {
            return;
        };
        let subscribed = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(p)) => p,
            Ok(Err(error)) => {
                if warnings.due() {
                    tracing::warn!(%error, channel, "cache backplane subscribe failed; retrying");
                } else {
                    tracing::debug!(%error, channel, "cache backplane subscribe failed");
                }
                missed = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(_) => {
                tracing::debug!(channel, "cache backplane subscribe timed out");
                missed = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        {
            let Some(inner) = weak.upgrade() else { return };
            inner
                .stats
                .backplane_connected
                .store(true, Ordering::Relaxed);
            if missed {
                // Invalidations published while we were away are lost: start from L2.
                inner
                    .stats
                    .backplane_reconnects
                    .fetch_add(1, Ordering::Relaxed);
                inner.evict_local(&Inval::All).await;
                tracing::info!(cache = %inner.stats.name, "cache backplane reconnected; L1 cleared");
                if let Some(l2) = &inner.l2 {
                    l2.spawn_replay(&inner);
                }
            }
        }
        missed = true;
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Some(inner) = weak.upgrade() else { return };
                    match parse_message(msg.get_payload_bytes()) {
                        Some((node, _)) if node == node_id => {}
                        Some((_, what)) => {
                            inner.stats.backplane_in.inc();
                            inner.evict_local(&what).await;
                        }
                        None => {
                            tracing::debug!(cache = %inner.stats.name, "cache backplane message ignored");
                        }
                    }
                }
                _ = ping.tick() => {
                    if weak.strong_count() == 0 {
                        return;
                    }
                    let alive = tokio::time::timeout(connect_timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        if let Some(inner) = weak.upgrade() {
            inner
                .stats
                .backplane_connected
                .store(false, Ordering::Relaxed);
            tracing::warn!(cache = %inner.stats.name, "cache backplane connection lost; reconnecting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn parses_messages() {
        let (node, what) = parse_message(b"00ff|k|user:1|x").unwrap();
        assert_eq!(node, "00ff");
        assert_eq!(what, Inval::Key("user:1|x".into()));
        assert_eq!(parse_message(b"n|a|").unwrap().1, Inval::All);
        assert!(parse_message(b"n|z|").is_none());
        assert!(parse_message(b"garbage").is_none());
        assert!(parse_message(&[0xff, 0xfe]).is_none());
    }
}
