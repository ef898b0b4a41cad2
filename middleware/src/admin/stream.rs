//! `GET /admin/v1/stream`: Server-Sent Events of snapshots.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use http::{HeaderMap, HeaderValue};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use super::Shared;

/// How long an `EventSource` waits before reconnecting, sent with the first event.
const RETRY: Duration = Duration::from_secs(1);

/// Parses `Last-Event-ID`; anything but a decimal `u64` is ignored.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

struct Cursor {
    shared: Arc<Shared>,
    ticker: Interval,
    closed: watch::Receiver<bool>,
    first: bool,
}

/// One snapshot event at once, then one per interval, each with `id:` equal to the snapshot's
/// `seq`. A reconnecting client's `Last-Event-ID` only moves the sequence forward, so ids it
/// sees keep increasing even across a server restart.
pub(crate) async fn stream(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(last) = last_event_id(&headers) {
        shared.seq.fetch_max(last, Ordering::AcqRel);
    }
    let mut ticker = tokio::time::interval(shared.config.stream_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let keep_alive = KeepAlive::new()
        .interval(shared.config.keep_alive)
        .text("keep-alive");
    let cursor = Cursor {
        closed: shared.closed.subscribe(),
        shared,
        ticker,
        first: true,
    };
    let events = stream::unfold(cursor, |mut cursor| async move {
        if *cursor.closed.borrow() {
            return None;
        }
        tokio::select! {
            _ = cursor.ticker.tick() => {}
            _ = cursor.closed.changed() => return None,
        }
        let snapshot = cursor.shared.snapshot();
        let mut event = Event::default()
            .event("snapshot")
            .id(snapshot.seq.to_string());
        if cursor.first {
            event = event.retry(RETRY);
            cursor.first = false;
        }
        let event = event.json_data(&snapshot).unwrap_or_else(|error| {
            tracing::warn!(%error, "admin snapshot could not be serialized");
            Event::default().comment("snapshot unavailable")
        });
        Some((Ok::<_, Infallible>(event), cursor))
    });
    let mut res = Sse::new(events).keep_alive(keep_alive).into_response();
    // Tell buffering reverse proxies (nginx) to pass events through as they come.
    res.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
