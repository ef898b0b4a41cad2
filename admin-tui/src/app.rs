//! The main loop: `tokio::select!` over terminal input, connection events, answers to change
//! requests, a one-second clock and a fixed-rate redraw tick that draws only when the state
//! changed.
//!
//! [`run`] is generic over the ratatui backend and the input stream, so the whole loop runs in
//! tests against a `TestBackend` and scripted key events.

use std::fmt;
use std::io;
use std::time::Duration;

use crossterm::event::Event;
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::client::{AdminClient, ClientError};
use crate::connection::{self, ConnectionConfig, Control};
use crate::format::now_ms;
use crate::state::{Effect, Msg, State};
use crate::view::{self, Styles};

/// Loop settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunConfig {
    /// Redraw at most this often (and only when something changed).
    pub frame_interval: Duration,
    /// Clock tick (ages, countdowns).
    pub clock_interval: Duration,
    /// The connection task's settings.
    pub connection: ConnectionConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            frame_interval: Duration::from_millis(50),
            clock_interval: Duration::from_secs(1),
            connection: ConnectionConfig::default(),
        }
    }
}

/// Runs the dashboard until the user quits or the input stream ends; returns the final state.
pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    mut input: S,
    mut state: State,
    client: AdminClient,
    config: RunConfig,
    styles: Styles,
) -> io::Result<State>
where
    B: Backend,
    B::Error: fmt::Display,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    let (conn_tx, mut conn_rx) = mpsc::channel(64);
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    let (api_tx, mut api_rx) = mpsc::unbounded_channel::<(u64, Result<Value, ClientError>)>();
    let conn_task = tokio::spawn(connection::run(
        client.clone(),
        config.connection,
        conn_tx,
        ctl_rx,
    ));
    // With --fleet, the fleet snapshot is polled next to the server's own data.
    let (fleet_tx, mut fleet_rx) = mpsc::channel(4);
    let fleet_task = state.fleet.is_some().then(|| {
        let client = client.clone();
        let period = config.connection.poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let result = client.fleet_snapshot().await.map(Box::new);
                if fleet_tx.send(result).await.is_err() {
                    return;
                }
            }
        })
    });

    let mut redraw = tokio::time::interval(config.frame_interval);
    redraw.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut clock = tokio::time::interval(config.clock_interval);
    clock.set_missed_tick_behavior(MissedTickBehavior::Skip);
    if let Ok(size) = terminal.size() {
        state.update(Msg::Resize {
            width: size.width,
            height: size.height,
        });
    }

    let result = loop {
        let msg = tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(Event::Key(key))) => Some(Msg::Key(key)),
                Some(Ok(Event::Resize(width, height))) => Some(Msg::Resize { width, height }),
                Some(Ok(_)) => None,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            Some(event) = conn_rx.recv() => Some(Msg::Conn { event, at_ms: now_ms() }),
            Some((id, result)) = api_rx.recv() => Some(Msg::ApiResult { id, result, at_ms: now_ms() }),
            Some(result) = fleet_rx.recv() => Some(Msg::Fleet { result, at_ms: now_ms() }),
            _ = clock.tick() => Some(Msg::Tick { now_ms: now_ms() }),
            _ = redraw.tick() => {
                if state.take_dirty()
                    && let Err(e) = terminal.draw(|f| view::render(f, &state, &styles)) {
                        break Err(io::Error::other(e.to_string()));
                    }
                None
            }
        };
        let Some(msg) = msg else { continue };
        match state.update(msg) {
            None => {}
            Some(Effect::Quit) => break Ok(()),
            Some(Effect::Reconnect) => {
                // A full channel means a reconnect is already requested.
                let _ = ctl_tx.try_send(Control::ReconnectNow);
            }
            Some(Effect::Api { id, request }) => {
                let client = client.clone();
                let tx = api_tx.clone();
                tokio::spawn(async move {
                    let result = client.execute(&request).await;
                    let _ = tx.send((id, result));
                });
            }
        }
    };
    conn_task.abort();
    if let Some(task) = fleet_task {
        task.abort();
    }
    result.map(|()| state)
}
