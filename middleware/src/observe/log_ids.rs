//! The request's ids on every log line, whatever the level of the request span.
//!
//! While [`Observe`](super::Observe) polls a request (and while it calls the inner service), the
//! request's trace id and request id sit in a thread-local slot: two moves per poll, no
//! formatting. [`WithRequestIds`] reads the slot when an event is *written* and adds `trace_id`
//! and `request_id` to the line, so an `info` event of a handler, or the completion event, names
//! its request even when the `http_request` span (at `DEBUG` by default) is filtered out and
//! nothing was formatted for it.

use std::cell::Cell;
use std::fmt::{self, Write as _};

use http::HeaderValue;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::context::TraceId;

/// The ids of the request being polled on this thread.
#[derive(Debug, Clone)]
pub(crate) struct LogIds {
    pub(crate) trace_id: Option<TraceId>,
    pub(crate) request_id: Option<HeaderValue>,
}

thread_local! {
    static CURRENT: Cell<Option<LogIds>> = const { Cell::new(None) };
}

/// Swaps `slot` with the thread's current ids.
fn swap(slot: &mut Option<LogIds>) {
    CURRENT.with(|c| {
        let previous = c.replace(slot.take());
        *slot = previous;
    });
}

/// Makes `slot`'s ids the thread's current ones until dropped (then puts back what was there:
/// nested requests restore their caller's ids).
pub(crate) struct Scope<'a> {
    slot: &'a mut Option<LogIds>,
    installed: bool,
}

impl<'a> Scope<'a> {
    #[inline]
    pub(crate) fn enter(slot: &'a mut Option<LogIds>) -> Self {
        let installed = slot.is_some();
        if installed {
            swap(slot);
        }
        Self { slot, installed }
    }
}

impl Drop for Scope<'_> {
    #[inline]
    fn drop(&mut self) {
        // The slot holds what was current before; swapping again restores both.
        if self.installed {
            swap(self.slot);
        }
    }
}

/// Runs `f` with the current request's ids.
fn with_current<R>(f: impl FnOnce(Option<&LogIds>) -> R) -> R {
    CURRENT.with(|c| {
        let ids = c.take();
        let result = f(ids.as_ref());
        c.set(ids);
        result
    })
}

/// How [`WithRequestIds`] adds the ids to a formatted line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// One JSON object per line: `"trace_id":"…","request_id":"…"` before the closing brace.
    Json,
    /// Text: ` trace_id=… request_id=…` at the end of the line.
    Text,
}

/// Wraps a `tracing-subscriber` event formatter: an event written while a request is being
/// served by [`ObserveLayer`](super::ObserveLayer) gets the request's `trace_id` and `request_id`
/// (unless the event has fields of those names itself). [`init_tracing`](super::init_tracing)
/// uses it; a binary that builds its own subscriber wraps its formatter:
///
/// ```
/// use palisade::observe::WithRequestIds;
/// let subscriber = tracing_subscriber::fmt()
///     .json()
///     .event_format(WithRequestIds::json(tracing_subscriber::fmt::format().json()))
///     .finish();
/// # drop(subscriber);
/// ```
#[derive(Debug, Clone)]
pub struct WithRequestIds<F> {
    inner: F,
    style: Style,
}

impl<F> WithRequestIds<F> {
    /// For a JSON formatter (one object per line).
    pub fn json(inner: F) -> Self {
        Self {
            inner,
            style: Style::Json,
        }
    }

    /// For a text formatter (`full`, `compact`, `pretty`): the ids go at the end of the line.
    pub fn text(inner: F) -> Self {
        Self {
            inner,
            style: Style::Text,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequestIds<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        with_current(|ids| {
            let Some(ids) = ids else {
                return self.inner.format_event(ctx, writer, event);
            };
            let fields = event.metadata().fields();
            let trace_id = ids.trace_id.filter(|_| fields.field("trace_id").is_none());
            let request_id = ids
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .filter(|_| fields.field("request_id").is_none());
            if trace_id.is_none() && request_id.is_none() {
                return self.inner.format_event(ctx, writer, event);
            }
            let mut line = String::with_capacity(256);
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let mut extra = String::with_capacity(96);
            match self.style {
                Style::Json => {
                    // Request ids are `[A-Za-z0-9._:-]` only: nothing to escape.
                    if let Some(id) = trace_id {
                        write!(extra, ",\"trace_id\":\"{id}\"")?;
                    }
                    if let Some(id) = request_id {
                        write!(extra, ",\"request_id\":\"{id}\"")?;
                    }
                    match line.rfind('}') {
                        Some(at) => line.insert_str(at, &extra),
                        None => line.push_str(&extra),
                    }
                }
                Style::Text => {
                    if let Some(id) = trace_id {
                        write!(extra, " trace_id={id}")?;
                    }
                    if let Some(id) = request_id {
                        write!(extra, " request_id={id}")?;
                    }
                    let end = line.trim_end_matches('\n').len();
                    line.insert_str(end, &extra);
                }
            }
            writer.write_str(&line)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::fmt::format::format;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::WithRequestIds;
    use crate::observe::{ObserveConfig, ObserveLayer, TraceConfig};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    async fn serve_one(completion_info: bool) {
        let mut trace = TraceConfig::default();
        if completion_info {
            trace = trace.completion_level(tracing::Level::INFO);
        }
        let (observe, _) =
            ObserveLayer::new(ObserveConfig::builder().trace(trace).build().unwrap());
        let app = Router::new()
            .route(
                "/",
                get(|| async {
                    tracing::info!(user = 7, "handler says hi");
                    tokio::task::yield_now().await;
                    tracing::warn!("after a yield");
                    "ok"
                }),
            )
            .layer(observe);
        let req = http::Request::get("/")
            .header("x-request-id", "req-42")
            .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
        tracing::info!("outside any request");
    }

    /// At `info` the request span (DEBUG) is off; handler events and the completion event still
    /// name the request and its trace, and an event outside a request does not.
    #[tokio::test]
    async fn json_lines_inside_a_request_carry_its_ids() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .event_format(WithRequestIds::json(format().json().flatten_event(true)))
                .with_writer(move || writer.clone())
                .with_filter(LevelFilter::INFO),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        serve_one(true).await;

        let lines: Vec<serde_json::Value> = buffer
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        for line in &lines[..3] {
            assert_eq!(line["trace_id"], TRACE, "{line}");
            assert_eq!(line["request_id"], "req-42", "{line}");
        }
        assert_eq!(lines[0]["message"], "handler says hi");
        assert_eq!(lines[0]["user"], 7);
        assert_eq!(lines[1]["message"], "after a yield");
        assert_eq!(lines[2]["message"], "request completed");
        assert_eq!(lines[2]["level"], "INFO");
        assert_eq!(lines[3]["message"], "outside any request");
        assert!(lines[3].get("trace_id").is_none(), "{}", lines[3]);
        assert!(lines[3].get("request_id").is_none(), "{}", lines[3]);
    }

    #[tokio::test]
    async fn text_lines_end_with_the_ids() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .compact()
                .event_format(WithRequestIds::text(format().compact().with_ansi(false)))
                .with_writer(move || writer.clone())
                .with_filter(LevelFilter::INFO),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        serve_one(false).await;
        let lines = buffer.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].contains("handler says hi")
                && lines[0].ends_with(&format!(" trace_id={TRACE} request_id=req-42")),
            "{}",
            lines[0]
        );
        assert!(!lines[2].contains("trace_id"), "{}", lines[2]);
    }
}
