//! Readiness contributors: named dependency checks with a policy, for `/health/ready`.
//!
//! A service registers one check per dependency (database, Redis, an upstream) on a
//! [`Readiness`]; [`Readiness::check`] runs them concurrently, each within its own timeout, and
//! returns a [`ReadinessReport`] with per-check detail. The service is ready when every
//! [`CheckPolicy::Required`] check passes; a failing [`CheckPolicy::Optional`] check is
//! reported (status `degraded`) but keeps the service in rotation — use it for dependencies the
//! service can do without, such as a cache's L2.
//!
//! Guarantees:
//!
//! - **Bounded.** A check that hangs is cut at the timeout and reported as failed; a report
//!   never takes much longer than the timeout, however many checks there are.
//! - **Cheap under probing.** With [`Readiness::cache_for`], a report is reused for that long,
//!   so frequent probes from several load balancers do not multiply dependency round trips.
//! - **Liveness stays separate.** Readiness says "send me traffic"; never wire it into a
//!   liveness probe, or a database outage restarts every replica.
//!
//! # Examples
//!
//! ```
//! use palisade::health::{CheckPolicy, Readiness};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let readiness = Readiness::new();
//! readiness.register("database", CheckPolicy::Required, || async { Ok::<_, String>(()) });
//! readiness.register("redis", CheckPolicy::Optional, || async {
//!     Err::<(), _>("connection refused")
//! });
//!
//! let report = readiness.check().await;
//! assert!(report.ready);
//! assert_eq!(report.status(), "degraded");
//! assert_eq!(report.checks[1].name, "redis");
//! assert_eq!(report.checks[1].error.as_deref(), Some("connection refused"));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::time::Instant;

/// Whether a failing check makes the service unready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckPolicy {
    /// The service cannot serve without this dependency: a failure makes it unready (503).
    Required,
    /// The service degrades without it: a failure is reported, the service stays ready.
    Optional,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Its policy.
    pub policy: CheckPolicy,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// Why it failed (its error, or the timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of every check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadinessReport {
    /// Every required check passed.
    pub ready: bool,
    /// Each check, in registration order.
    pub checks: Vec<CheckResult>,
}

impl ReadinessReport {
    /// `ready` (all passed), `degraded` (an optional check failed) or `unready` (a required
    /// one failed).
    pub fn status(&self) -> &'static str {
        if !self.ready {
            "unready"
        } else if self.checks.iter().all(|c| c.ok) {
            "ready"
        } else {
            "degraded"
        }
    }
}

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

struct Check {
    name: String,
    policy: CheckPolicy,
    run: CheckFn,
}

struct Shared {
    checks: RwLock<Vec<Check>>,
    timeout: Duration,
    cache_for: Duration,
    last: Mutex<Option<(Instant, ReadinessReport)>>,
}

/// A set of named readiness checks. Cheap to clone; clones share the checks.
#[derive(Clone)]
pub struct Readiness {
    shared: Arc<Shared>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .shared
            .checks
            .read()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        f.debug_struct("Readiness")
            .field("checks", &names)
            .field("timeout", &self.shared.timeout)
            .field("cache_for", &self.shared.cache_for)
            .finish()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// No checks (always ready), a 1 s timeout per check, no report caching.
    pub fn new() -> Self {
        Self::with(Duration::from_secs(1), Duration::ZERO)
    }

    /// Checks limited to `timeout` each; a report is reused for `cache_for` (zero: never).
    pub fn with(timeout: Duration, cache_for: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                checks: RwLock::new(Vec::new()),
                timeout,
                cache_for,
                last: Mutex::new(None),
            }),
        }
    }

    /// The same checks with reports reused for `cache_for`.
    #[must_use]
    pub fn cache_for(self, cache_for: Duration) -> Self {
        let checks = std::mem::take(&mut *self.shared.checks.write());
        let next = Self::with(self.shared.timeout, cache_for);
        *next.shared.checks.write() = checks;
        next
    }

    /// Adds a check (a check with the same name is replaced). `check` is called for every
    /// report that is not served from the cache; its `Err` is shown as the check's error.
    pub fn register<F, Fut, E>(&self, name: impl Into<String>, policy: CheckPolicy, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let name = name.into();
        let run: CheckFn = Arc::new(move || {
            let fut = check();
            async move { fut.await.map_err(|e| e.to_string()) }.boxed()
        });
        let mut checks = self.shared.checks.write();
        checks.retain(|c| c.name != name);
        checks.push(Check { name, policy, run });
        drop(checks);
        *self.shared.last.lock() = None;
    }

    /// The names of the registered checks.
    pub fn names(&self) -> Vec<String> {
        self.shared
            .checks
            .read()
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// Runs every check concurrently (or reuses a report younger than `cache_for`).
    pub async fn check(&self) -> ReadinessReport {
        let shared = &self.shared;
        if !shared.cache_for.is_zero()
            && let Some((at, report)) = shared.last.lock().as_ref()
            && at.elapsed() < shared.cache_for
        {
            return report.clone();
        }
        let runs: Vec<(String, CheckPolicy, CheckFn)> = shared
            .checks
            .read()
            .iter()
            .map(|c| (c.name.clone(), c.policy, Arc::clone(&c.run)))
            .collect();
        let timeout = shared.timeout;
        let checks = join_all(runs.into_iter().map(|(name, policy, run)| async move {
            let start = Instant::now();
            let outcome = tokio::time::timeout(timeout, run()).await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("timed out after {} ms", timeout.as_millis())),
            };
            CheckResult {
                name,
                policy,
                ok: error.is_none(),
                duration_ms: start.elapsed().as_secs_f64() * 1000.0,
                error,
            }
        }))
        .await;
        let ready = checks
            .iter()
            .all(|c| c.ok || c.policy == CheckPolicy::Optional);
        let report = ReadinessReport { ready, checks };
        if !shared.cache_for.is_zero() {
            *shared.last.lock() = Some((Instant::now(), report.clone()));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_required_check_makes_the_service_unready() {
        let r = Readiness::new();
        r.register("db", CheckPolicy::Required, || async {
            Err::<(), _>("down")
        });
        r.register("cache", CheckPolicy::Optional, || async {
            Ok::<_, String>(())
        });
        let report = r.check().await;
        assert!(!report.ready);
        assert_eq!(report.status(), "unready");
        assert_eq!(report.checks[0].error.as_deref(), Some("down"));
        assert!(report.checks[1].ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_is_cut_at_the_timeout() {
        let r = Readiness::with(Duration::from_millis(200), Duration::ZERO);
        r.register("db", CheckPolicy::Required, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, String>(())
        });
        let start = Instant::now();
        let report = r.check().await;
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert!(!report.ready);
        assert_eq!(
            report.checks[0].error.as_deref(),
            Some("timed out after 200 ms")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reports_are_reused_within_cache_for() {
        let calls = Arc::new(AtomicUsize::new(0));
        let r = Readiness::new().cache_for(Duration::from_secs(1));
        let c = Arc::clone(&calls);
        r.register("db", CheckPolicy::Required, move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, String>(()) }
        });
        assert!(r.check().await.ready);
        assert!(r.check().await.ready);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(r.check().await.ready);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_checks_is_ready_and_names_are_unique() {
        let r = Readiness::new();
        assert!(r.check().await.ready);
        r.register("db", CheckPolicy::Required, || async {
            Ok::<_, String>(())
        });
        r.register("db", CheckPolicy::Optional, || async {
            Ok::<_, String>(())
        });
        assert_eq!(r.names(), vec!["db".to_owned()]);
        let report = r.check().await;
        assert_eq!(report.checks[0].policy, CheckPolicy::Optional);
        assert_eq!(report.status(), "ready");
    }
}
