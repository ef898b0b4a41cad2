//! A worker process: the reference app on an inherited listener, reporting to the supervisor
//! over the control channel.
//!
//! A worker dies with its supervisor: it asks the kernel for SIGTERM when the parent exits
//! (`PR_SET_PDEATHSIG`), checks the parent is still the one that started it, and drains when the
//! control channel closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::app::{App, AppState};
use crate::balance::WorkerLoad;
use palisade::observe::PrometheusExporter;

use crate::channel::{self, Heartbeat, SupervisorMsg, WorkerMsg};

/// Environment variable carrying the worker slot id; its presence makes `palisade` a worker.
pub const WORKER_ENV: &str = "PALISADE_WORKER";

/// Runs worker `worker_id` on `listener` until the supervisor drains it or goes away; with
/// `load`, it takes only its share of connections (see [`crate::balance`]).
pub async fn run(
    app: App,
    listener: std::net::TcpListener,
    load: Option<WorkerLoad>,
    control: std::os::unix::net::UnixStream,
) -> std::io::Result<()> {
    let state = Arc::clone(&app.state);
    let config = state.config.clone();
    let worker_id = state.worker_id;
    // Linux also signals the worker when the supervisor dies; everywhere, the control channel
    // closing says the same (see below).
    #[cfg(target_os = "linux")]
    {
        let parent = nix::unistd::getppid();
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
        if nix::unistd::getppid() != parent {
            return Err(std::io::Error::other("supervisor exited during start-up"));
        }
    }
    // Signals go to the supervisor, which drains workers through the control channel; a worker
    // ignores terminal SIGINT (sent to the whole process group) and treats SIGTERM as "drain now".
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let _sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    control.set_nonblocking(true)?;
    let (mut reader, mut writer) = UnixStream::from_std(control)?.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<WorkerMsg>(64);
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if channel::write(&mut writer, &msg).await.is_err() {
                break;
            }
        }
    });
    state.peers.connect(out_tx.clone());
    let _ = out_tx
        .send(WorkerMsg::Hello {
            worker_id,
            pid: std::process::id(),
        })
        .await;

    // Heartbeats, with event-loop lag measured as the tick's lateness.
    let interval = Duration::from_millis(config.workers.heartbeat_interval_ms);
    {
        let state = Arc::clone(&state);
        let out = out_tx.clone();
        tokio::spawn(async move {
            let mut expected = tokio::time::Instant::now() + interval;
            loop {
                tokio::time::sleep_until(expected).await;
                let lag = tokio::time::Instant::now().saturating_duration_since(expected);
                // Merging and serialising the statistics takes about a millisecond: off the
                // event loop, which serves requests meanwhile (a single-threaded worker would
                // otherwise stall every connection for that long each interval).
                let snapshot_of = Arc::clone(&state);
                let Ok(hb) =
                    tokio::task::spawn_blocking(move || heartbeat(&snapshot_of, lag)).await
                else {
                    break;
                };
                if out.send(WorkerMsg::Heartbeat(hb)).await.is_err() {
                    break;
                }
                expected = tokio::time::Instant::now() + interval;
            }
        });
    }

    // Commands from the supervisor; a closed channel means the supervisor is gone: drain.
    {
        let state = Arc::clone(&state);
        let out = out_tx.clone();
        let grace_ms = config.shutdown.graceful_timeout_secs.saturating_mul(1000);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    msg = channel::read::<_, SupervisorMsg>(&mut reader) => msg,
                    _ = sigterm.recv() => Ok(SupervisorMsg::Drain { delay_ms: 0, timeout_ms: grace_ms }),
                };
                match msg {
                    Ok(SupervisorMsg::Apply {
                        id,
                        kind,
                        name,
                        patch,
                    }) => {
                        let error = match state.registry.get_kind(kind, &name) {
                            Some(c) if refuses_changes(worker_id, c.as_ref(), &patch) => {
                                Some("refused by the test hook TEST_PALISADE_REFUSE_CHANGES".into())
                            }
                            Some(c) => c.apply(&patch, false).err().map(|errs| join(&errs)),
                            None => Some(format!("no {} named `{name}`", kind.plural())),
                        };
                        let _ = out.send(WorkerMsg::Applied { id, error }).await;
                    }
                    Ok(SupervisorMsg::Action {
                        id,
                        kind,
                        name,
                        action,
                        args,
                    }) => {
                        let error = match state.registry.get_kind(kind, &name) {
                            Some(c) => c.action(&action, &args).err().map(|errs| join(&errs)),
                            None => Some(format!("no {} named `{name}`", kind.plural())),
                        };
                        let _ = out.send(WorkerMsg::Applied { id, error }).await;
                    }
                    Ok(SupervisorMsg::Invalidate { id, cache, key }) => {
                        let error = invalidate_local(&state, &cache, &key).await;
                        let _ = out.send(WorkerMsg::Applied { id, error }).await;
                    }
                    Ok(SupervisorMsg::Invalidated { id }) => state.peers.confirmed(id),
                    Ok(SupervisorMsg::Drain { delay_ms, .. }) => {
                        state
                            .drain
                            .start_with_delay(Duration::from_millis(delay_ms));
                    }
                    Err(error) => {
                        tracing::warn!(%error, worker_id = state.worker_id, "control channel lost; draining");
                        state.drain.start_with_delay(Duration::ZERO);
                        break;
                    }
                }
            }
        });
    }

    state.set_ready(true);
    let _ = out_tx.send(WorkerMsg::Ready).await;
    tracing::info!(worker_id, pid = std::process::id(), "worker ready");
    // The supervisor decides when to drain (over the control channel), so no signal handling.
    let report = app
        .serve(listener, load, config.server.serve_config(), false)
        .await?;
    tracing::info!(
        worker_id,
        pid = std::process::id(),
        completed = report.completed,
        cut = report.cut,
        "worker drained"
    );
    // A last heartbeat so the final requests' statistics reach the supervisor.
    let _ = out_tx
        .send(WorkerMsg::Heartbeat(heartbeat(&state, Duration::ZERO)))
        .await;
    let _ = out_tx
        .send(WorkerMsg::Drained {
            completed: report.completed,
            cut: report.cut,
        })
        .await;
    // Give the writer a moment to flush the last message.
    drop(out_tx);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

/// Drops `key` from this worker's cache `cache` (another worker wrote it), awaiting the eviction
/// so the acknowledgement means it is gone.
async fn invalidate_local(state: &AppState, cache: &str, key: &str) -> Option<String> {
    if cache == "users"
        && let Ok(id) = key.parse::<u64>()
    {
        state.users_cache.invalidate(&id).await;
        return None;
    }
    match state.registry.get(cache) {
        Some(c) => c
            .action("invalidate", &serde_json::json!({ "key": key }))
            .err()
            .map(|errs| join(&errs)),
        None => Some(format!("no component named `{cache}`")),
    }
}

/// Test hook (cargo feature `test-routes` only, never in a release): the worker whose slot id
/// is in `TEST_PALISADE_REFUSE_CHANGES` refuses every settings change that would change
/// something (a no-op, such as the rollback of the change it refused, is accepted), so tests
/// can check that a change one worker refuses is rolled back everywhere.
#[cfg(feature = "test-routes")]
fn refuses_changes(
    worker_id: u32,
    component: &dyn palisade::control::DynComponent,
    patch: &serde_json::Value,
) -> bool {
    let chosen = std::env::var("TEST_PALISADE_REFUSE_CHANGES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        == Some(worker_id);
    chosen
        && component
            .apply(patch, true)
            .is_ok_and(|change| change.before != change.after)
}

/// Without the `test-routes` feature no worker refuses on purpose.
#[cfg(not(feature = "test-routes"))]
fn refuses_changes(
    _worker_id: u32,
    _component: &dyn palisade::control::DynComponent,
    _patch: &serde_json::Value,
) -> bool {
    false
}

fn join(errors: &[palisade::control::FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn heartbeat(state: &AppState, lag: Duration) -> Heartbeat {
    let traffic = state.observe.traffic();
    let p99_ms = traffic
        .latency
        .iter()
        .max_by_key(|w| w.window_secs)
        .filter(|w| w.count > 0)
        .map(|w| w.p99_ms);
    Heartbeat {
        loop_lag_ms: lag.as_secs_f64() * 1000.0,
        in_flight: state.drain.in_flight(),
        requests: traffic.requests_total,
        rss_bytes: rss_bytes().unwrap_or(0),
        p99_ms,
        status: traffic.status,
        stats: serde_json::to_value(state.observe.take_delta()).ok(),
        components: state.registry.snapshot(),
        metrics: state.exporter.as_ref().map(PrometheusExporter::render),
    }
}

/// This process's resident set size, from `/proc/self/statm` (Linux); elsewhere its peak
/// resident set size (`getrusage`), which only grows, so `max_rss_mb` recycling still works.
pub fn rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    return rss_of("self");
    #[cfg(not(target_os = "linux"))]
    {
        use nix::sys::resource::{UsageWho, getrusage};
        let max_rss = u64::try_from(getrusage(UsageWho::RUSAGE_SELF).ok()?.max_rss()).ok()?;
        // macOS reports bytes, the BSDs kibibytes.
        Some(if cfg!(target_os = "macos") {
            max_rss
        } else {
            max_rss * 1024
        })
    }
}

/// A process's resident set size, from `/proc/PID/statm` (Linux; `None` elsewhere).
pub fn rss_of(pid: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    Some(pages * page)
}
