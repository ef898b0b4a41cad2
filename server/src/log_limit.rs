//! Rate limiting of protocol-abuse warnings.
//!
//! A hostile client controls how often the HTTP stacks warn: each HTTP/2 rapid-reset
//! connection makes `h2` log `locally-reset streams reached limit` once, so one client can write
//! hundreds of lines a second. [`AbuseLogLimit`] lets the first warning of each kind (each
//! call site of `h2`, `hyper` and `hyper_util` at WARN or ERROR) through per
//! [`WINDOW`], counts the rest, and [`report_suppressed`] logs the count once per window:
//! `repeated protocol warnings suppressed kind=h2::proto::streams::streams:1751 suppressed=846`.
//! Palisade's own events are never limited.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Each kind of warning is logged at most once per window; the rest are counted.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Kind {
    name: String,
    window_start: Instant,
    suppressed: u64,
}

fn kinds() -> &'static Mutex<HashMap<Identifier, Kind>> {
    static KINDS: OnceLock<Mutex<HashMap<Identifier, Kind>>> = OnceLock::new();
    KINDS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn limited(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let ours = ["h2", "hyper", "hyper_util"].iter().any(|crate_name| {
        target
            .strip_prefix(crate_name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    ours && meta.is_event() && *meta.level() <= Level::WARN
}

/// The layer that drops repeats; add it to the subscriber with [`AbuseLogLimit::layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AbuseLogLimit;

impl AbuseLogLimit {
    /// The layer behind its own filter, so it is consulted only for the HTTP stacks' warnings.
    /// Unfiltered, its interest in every callsite would make the subscriber build every span
    /// and event that the output filters out (the per-request `http_request` span at `DEBUG`,
    /// observe's completion event): a few thousand instructions per request for nothing.
    pub fn layer<S>() -> impl Layer<S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let filter = tracing_subscriber::filter::DynFilterFn::new(
            |meta: &Metadata<'_>, _: &Context<'_, S>| limited(meta),
        )
        .with_callsite_filter(|meta: &'static Metadata<'static>| {
            if limited(meta) {
                Interest::sometimes()
            } else {
                Interest::never()
            }
        });
        Self.with_filter(filter)
    }
}

impl<S: Subscriber> Layer<S> for AbuseLogLimit {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if limited(meta) {
            // Asked again for every event, so each one can be counted.
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !limited(meta) {
            return true;
        }
        let now = Instant::now();
        let mut kinds = kinds().lock();
        match kinds.get_mut(&meta.callsite()) {
            Some(kind) if now.duration_since(kind.window_start) < WINDOW => {
                kind.suppressed += 1;
                false
            }
            Some(kind) => {
                kind.window_start = now;
                true
            }
            None => {
                let name = format!("{}:{}", meta.target(), meta.line().unwrap_or(0));
                kinds.insert(
                    meta.callsite(),
                    Kind {
                        name,
                        window_start: now,
                        suppressed: 0,
                    },
                );
                true
            }
        }
    }
}

/// Logs, once, how many warnings of each kind were dropped since the last report; returns the
/// total.
pub fn report_suppressed() -> u64 {
    let counts: Vec<(String, u64)> = kinds()
        .lock()
        .values_mut()
        .filter(|k| k.suppressed > 0)
        .map(|k| (k.name.clone(), std::mem::take(&mut k.suppressed)))
        .collect();
    let mut total = 0;
    for (kind, suppressed) in counts {
        total += suppressed;
        tracing::warn!(
            kind = %kind,
            suppressed,
            window_secs = WINDOW.as_secs(),
            "repeated protocol warnings suppressed"
        );
    }
    total
}

/// Calls [`report_suppressed`] every [`WINDOW`], forever; spawn it on the process's runtime.
pub async fn run_reporter() {
    let mut tick = tokio::time::interval(WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        report_suppressed();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn repeated_protocol_warnings_are_logged_once_with_a_count() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        // Shaped like the server's: the output behind its own level filter, then the limit.
        let output = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(tracing_subscriber::EnvFilter::new("info"));
        let subscriber = tracing_subscriber::registry()
            .with(output)
            .with(AbuseLogLimit::layer());
        tracing::subscriber::with_default(subscriber, || {
            // What the output filters out is not built at all (observe's per-request span).
            assert!(tracing::debug_span!("http_request").is_disabled());
            for _ in 0..500 {
                tracing::warn!(target: "h2::proto::streams", "locally-reset streams reached limit");
            }
            for _ in 0..3 {
                tracing::warn!(target: "palisade_server::serve", "our own warning");
            }
            assert_eq!(report_suppressed(), 499);
            assert_eq!(report_suppressed(), 0, "each suppression is reported once");
        });
        let text = String::from_utf8(buffer.0.lock().clone()).unwrap();
        assert_eq!(
            text.matches("locally-reset streams reached limit").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("our own warning").count(), 3, "{text}");
        assert_eq!(
            text.matches("repeated protocol warnings suppressed")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("suppressed=499"), "{text}");
    }
}
