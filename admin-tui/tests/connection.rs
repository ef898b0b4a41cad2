//! The client and the connection task against the real admin API (`palisade::admin` over real
//! layer handles, see `support/server.rs`): SSE parsing, polling fallback, error
//! classification (refused, 401, timeout), reconnect with backoff, changes with If-Match and
//! validation errors — and the whole main loop on a `TestBackend`.

#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use palisade::control::ComponentKind;
use palisade_top::TokenSource;
use palisade_top::app::{self, RunConfig};
use palisade_top::client::{AdminClient, ApiRequest, ClientError, Timeouts};
use palisade_top::connection::{self, Backoff, ConnEvent, ConnectionConfig, Control, Transport};
use palisade_top::state::{Level, State};
use palisade_top::view::Styles;
use ratatui::Terminal;
use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};
use serde_json::json;
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "test-token-0123456789abcdef";
/// Upper bound for anything to happen; tests normally finish far sooner.
const DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    demo: std::sync::Arc<server::Demo>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(stream: bool) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), stream).await
    }

    async fn start_on(addr: SocketAddr, stream: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let demo = std::sync::Arc::new(server::Demo::new(TOKEN, 2, Duration::from_millis(50)));
        let (stop, stopped) = watch::channel(false);
        let serving = std::sync::Arc::clone(&demo);
        let task = tokio::spawn(async move { serving.serve(listener, stopped, stream).await });
        Self {
            addr,
            demo,
            stop,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("admin server did not shut down")
            .unwrap();
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(2),
        stream_idle: Duration::from_secs(2),
    }
}

fn client(url: &str, token: Option<&str>) -> AdminClient {
    let token = token.map_or(TokenSource::None, |t| TokenSource::Literal(t.into()));
    AdminClient::new(url, token, timeouts()).unwrap()
}

fn fast_config() -> ConnectionConfig {
    ConnectionConfig {
        poll_interval: Duration::from_millis(50),
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(160),
            jitter: 0.0,
        },
    }
}

async fn next_event(rx: &mut mpsc::Receiver<ConnEvent>) -> ConnEvent {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("no connection event in time")
        .expect("connection task ended")
}

/// Waits for the first event matching `pred`, returning it and everything skipped.
async fn wait_for(
    rx: &mut mpsc::Receiver<ConnEvent>,
    pred: impl Fn(&ConnEvent) -> bool,
) -> (ConnEvent, Vec<ConnEvent>) {
    let mut skipped = Vec::new();
    loop {
        let ev = next_event(rx).await;
        if pred(&ev) {
            return (ev, skipped);
        }
        skipped.push(ev);
    }
}

fn spawn_connection(
    c: AdminClient,
) -> (
    mpsc::Receiver<ConnEvent>,
    mpsc::Sender<Control>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(256);
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    let task = tokio::spawn(connection::run(c, fast_config(), tx, ctl_rx));
    (rx, ctl_tx, task)
}

#[tokio::test]
async fn snapshot_and_event_stream_are_parsed() {
    let server = Server::start(true).await;
    let c = client(&server.url(), Some(TOKEN));
    let first = c.snapshot().await.unwrap();
    assert_eq!(first.server.name, "palisade");
    assert_eq!(first.workers.len(), 2);
    let mut stream = c.stream(Some(first.seq)).await.unwrap();
    let mut last = first.seq;
    for _ in 0..3 {
        let s = stream.next_snapshot().await.unwrap().expect("stream ended");
        assert!(s.seq > last, "seq must increase: {} after {last}", s.seq);
        assert_eq!(stream.last_event_id(), Some(s.seq.to_string().as_str()));
        assert_eq!(s.limits.len(), 2);
        last = s.seq;
    }
    assert_eq!(server.demo.hits("GET /admin/v1/stream"), 1);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_classified_as_401() {
    let server = Server::start(true).await;
    let err = client(&server.url(), Some("nope"))
        .snapshot()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ClientError::Unauthorized("the bearer token is not valid for this server".into())
    );
    assert_eq!(err.class(), "401");
    let err = client(&server.url(), None).stream(None).await.unwrap_err();
    let ClientError::Unauthorized(why) = &err else {
        panic!("{err:?}")
    };
    assert!(why.contains("Authorization: Bearer"), "{why}");
    // The connection task reports it and keeps retrying.
    let (mut rx, _ctl, task) = spawn_connection(client(&server.url(), Some("nope")));
    let (ev, _) = wait_for(&mut rx, |e| {
        matches!(e, ConnEvent::Disconnected { attempt: 2, .. })
    })
    .await;
    assert!(matches!(
        ev,
        ConnEvent::Disconnected {
            error: ClientError::Unauthorized(_),
            ..
        }
    ));
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn nothing_listening_is_classified_as_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client(&format!("http://{addr}"), Some(TOKEN))
        .snapshot()
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::Refused);
    assert_eq!(err.class(), "refused");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    // Accepts connections and reads nothing back.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let c = AdminClient::new(
        &format!("http://{addr}"),
        TokenSource::Literal(TOKEN.into()),
        Timeouts {
            request: Duration::from_millis(200),
            ..timeouts()
        },
    )
    .unwrap();
    assert_eq!(c.snapshot().await.unwrap_err(), ClientError::Timeout);
    hold.abort();
}

#[tokio::test]
async fn a_silent_event_stream_times_out() {
    // Serves a snapshot, then an event stream that sends headers and nothing else.
    let server = Server::start(true).await;
    let snapshot = client(&server.url(), Some(TOKEN)).snapshot().await.unwrap();
    let app = axum::Router::new().route(
        "/admin/v1/stream",
        axum::routing::get(|| async {
            let silent = futures_util::stream::pending::<
                Result<axum::response::sse::Event, std::convert::Infallible>,
            >();
            axum::response::sse::Sse::new(silent)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = AdminClient::new(
        &format!("http://{addr}"),
        TokenSource::Literal(TOKEN.into()),
        Timeouts {
            stream_idle: Duration::from_millis(200),
            ..timeouts()
        },
    )
    .unwrap();
    let mut stream = c.stream(Some(snapshot.seq)).await.unwrap();
    assert_eq!(
        stream.next_snapshot().await.unwrap_err(),
        ClientError::Timeout
    );
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn without_an_event_stream_it_polls_the_snapshot() {
    let server = Server::start(false).await;
    let (mut rx, _ctl, task) = spawn_connection(client(&server.url(), Some(TOKEN)));
    let (ev, _) = wait_for(&mut rx, |e| matches!(e, ConnEvent::Connected { .. })).await;
    assert_eq!(
        ev,
        ConnEvent::Connected {
            transport: Transport::Polling
        }
    );
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        if let ConnEvent::Snapshot(s) = next_event(&mut rx).await {
            seqs.push(s.seq);
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert!(server.demo.hits("GET /admin/v1/snapshot") >= 3);
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn reconnects_with_backoff_after_the_server_goes_away() {
    let server = Server::start(true).await;
    let addr = server.addr;
    let (mut rx, _ctl, task) = spawn_connection(client(&server.url(), Some(TOKEN)));
    let (ev, _) = wait_for(&mut rx, |e| matches!(e, ConnEvent::Connected { .. })).await;
    assert_eq!(
        ev,
        ConnEvent::Connected {
            transport: Transport::Stream
        }
    );
    wait_for(&mut rx, |e| matches!(e, ConnEvent::Snapshot(_))).await;

    server.stop().await;
    // The stream ends, then connection attempts are refused with growing delays.
    let (first_down, _) = wait_for(&mut rx, |e| matches!(e, ConnEvent::Disconnected { .. })).await;
    assert!(
        matches!(first_down, ConnEvent::Disconnected { attempt: 1, retry_in, .. } if retry_in == Duration::from_millis(20))
    );
    let mut delays = Vec::new();
    while delays.len() < 4 {
        if let ConnEvent::Disconnected {
            error,
            attempt,
            retry_in,
        } = next_event(&mut rx).await
        {
            assert_eq!(error, ClientError::Refused);
            assert_eq!(attempt as usize, delays.len() + 2);
            delays.push(retry_in.as_millis());
        }
    }
    assert_eq!(delays, [40, 80, 160, 160]);

    // Back on the same port: it reconnects by itself and data flows again.
    let server = Server::start_on(addr, true).await;
    let (ev, skipped) = wait_for(&mut rx, |e| matches!(e, ConnEvent::Connected { .. })).await;
    assert_eq!(
        ev,
        ConnEvent::Connected {
            transport: Transport::Stream
        }
    );
    assert!(
        skipped
            .iter()
            .any(|e| matches!(e, ConnEvent::Connecting { .. }))
    );
    wait_for(&mut rx, |e| matches!(e, ConnEvent::Snapshot(_))).await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn reconnect_now_skips_the_backoff() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (tx, mut rx) = mpsc::channel(64);
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    let config = ConnectionConfig {
        backoff: Backoff {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
            jitter: 0.0,
        },
        ..fast_config()
    };
    let task = tokio::spawn(connection::run(
        client(&format!("http://{addr}"), Some(TOKEN)),
        config,
        tx,
        ctl_rx,
    ));
    wait_for(&mut rx, |e| matches!(e, ConnEvent::Disconnected { .. })).await;
    ctl_tx.send(Control::ReconnectNow).await.unwrap();
    // Without the command the next attempt would be an hour away.
    let (ev, _) = wait_for(&mut rx, |e| matches!(e, ConnEvent::Connecting { .. })).await;
    assert_eq!(ev, ConnEvent::Connecting { attempt: 0 });
    task.abort();
}

#[tokio::test]
async fn changes_carry_if_match_and_surface_validation_errors() {
    let server = Server::start(true).await;
    let c = client(&server.url(), Some(TOKEN));
    let update = |version, patch| ApiRequest::UpdateSettings {
        kind: ComponentKind::Limit,
        name: "api".into(),
        version,
        patch,
    };
    let v0 = c.snapshot().await.unwrap().limits[0].version;
    // Invalid value: 400 with the field named, nothing changed.
    let err = c
        .execute(&update(v0, json!({"burst": 0})))
        .await
        .unwrap_err();
    let ClientError::Api(problem) = err else {
        panic!("{err:?}")
    };
    assert_eq!(problem.status, 400);
    assert_eq!(problem.errors[0].field, "burst");
    assert!(problem.errors[0].reason.contains("at least 1"), "{problem}");
    assert_eq!(
        server.demo.settings(ComponentKind::Limit, "api")["burst"],
        20
    );
    // Stale version: 412.
    let err = c
        .execute(&update(v0 + 7, json!({"burst": 30})))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(412));
    // Valid: applied, version bumped, audited.
    let ok = c.execute(&update(v0, json!({"burst": 30}))).await.unwrap();
    assert_eq!(ok["version"], v0 + 1);
    assert_eq!(ok["propagation"]["workers"][0]["outcome"], "applied");
    let s = c.snapshot().await.unwrap();
    let api = s.limits.iter().find(|l| l.name == "api").unwrap();
    assert_eq!((api.version, &api.settings["burst"]), (v0 + 1, &json!(30)));
    assert_eq!(s.audit.last().unwrap().target, "limits/api");
    // Actions and worker commands.
    let act = ApiRequest::Action {
        kind: ComponentKind::Breaker,
        name: "payments".into(),
        action: "force_open".into(),
        args: serde_json::Value::Null,
    };
    c.execute(&act).await.unwrap();
    c.execute(&ApiRequest::ScaleWorkers { workers: 3 })
        .await
        .unwrap();
    c.execute(&ApiRequest::DrainWorker { id: 0 }).await.unwrap();
    c.execute(&ApiRequest::RestartWorkers).await.unwrap();
    let s = c.snapshot().await.unwrap();
    assert_eq!(s.workers.len(), 3);
    let payments = s.breakers.iter().find(|b| b.name == "payments").unwrap();
    assert_eq!(payments.stats["state"], "forced_open");
    server.stop().await;
}

/// A `TestBackend` that publishes the screen after every frame, so a test can wait for what
/// the user would see.
struct Mirror {
    inner: TestBackend,
    screen: std::sync::Arc<parking_lot::Mutex<String>>,
}

impl Backend for Mirror {
    type Error = std::convert::Infallible;

    fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.inner.draw(content)
    }
    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.hide_cursor()
    }
    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.show_cursor()
    }
    fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
        self.inner.get_cursor_position()
    }
    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Self::Error> {
        self.inner.set_cursor_position(position)
    }
    fn clear(&mut self) -> Result<(), Self::Error> {
        self.inner.clear()
    }
    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Self::Error> {
        self.inner.clear_region(clear_type)
    }
    fn size(&self) -> Result<Size, Self::Error> {
        self.inner.size()
    }
    fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
        self.inner.window_size()
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()?;
        *self.screen.lock() = self.inner.to_string();
        Ok(())
    }
}

fn key(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn special(code: KeyCode, mods: KeyModifiers) -> Event {
    Event::Key(KeyEvent::new(code, mods))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(DEADLINE / 2, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn the_main_loop_edits_a_limit_end_to_end() {
    let server = Server::start(true).await;
    let c = client(&server.url(), Some(TOKEN));
    let (keys_tx, mut keys_rx) = mpsc::unbounded_channel::<std::io::Result<Event>>();
    let input = futures_util::stream::poll_fn(move |cx| keys_rx.poll_recv(cx));
    let screen = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
    let mut terminal = Terminal::new(Mirror {
        inner: TestBackend::new(100, 30),
        screen: std::sync::Arc::clone(&screen),
    })
    .unwrap();
    let state = State::new(c.base_url(), palisade_top::format::now_ms());
    let config = RunConfig {
        frame_interval: Duration::from_millis(10),
        connection: fast_config(),
        ..RunConfig::default()
    };
    let demo = std::sync::Arc::clone(&server.demo);
    let last_screen = std::sync::Arc::clone(&screen);
    let shown = move |text: &str| screen.lock().contains(text);
    let script = tokio::spawn(async move {
        eventually("the workers on screen", || shown("Workers (2/2)")).await;
        // Limits panel, third column (burst: the panel leads with rate, per, burst, mode),
        // edit, clear, type 50, Enter, confirm.
        for ev in [key('4'), key('l'), key('l'), key('e')] {
            keys_tx.send(Ok(ev)).unwrap();
        }
        keys_tx
            .send(Ok(special(KeyCode::Char('u'), KeyModifiers::CONTROL)))
            .unwrap();
        for ev in [
            key('5'),
            key('0'),
            special(KeyCode::Enter, KeyModifiers::NONE),
            key('y'),
        ] {
            keys_tx.send(Ok(ev)).unwrap();
        }
        eventually("the limit to change", || {
            demo.settings(ComponentKind::Limit, "api")["burst"] == 50
        })
        .await;
        eventually("the success message", || {
            shown("✓ limits/api: burst 20 → 50")
        })
        .await;
        // An invalid value right away: refused by the server with the reason on screen, and
        // not a 412, although no new snapshot may have arrived yet.
        for ev in [
            key('e'),
            special(KeyCode::Char('u'), KeyModifiers::CONTROL),
            key('0'),
        ] {
            keys_tx.send(Ok(ev)).unwrap();
        }
        keys_tx
            .send(Ok(special(KeyCode::Enter, KeyModifiers::NONE)))
            .unwrap();
        keys_tx.send(Ok(key('y'))).unwrap();
        // The edit stays open with the refusal (the reasons are in the notice, checked below).
        eventually("the validation error", || {
            shown("✖ 1 field was refused; nothing changed")
        })
        .await;
        keys_tx
            .send(Ok(special(KeyCode::Esc, KeyModifiers::NONE)))
            .unwrap();
        keys_tx.send(Ok(key('q'))).unwrap();
    });
    let state = tokio::time::timeout(
        DEADLINE,
        app::run(&mut terminal, input, state, c, config, Styles::new(false)),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the dashboard did not quit; screen:\n{}",
            last_screen.lock()
        )
    })
    .unwrap();
    script.await.unwrap();
    let screen = terminal.backend().inner.to_string();
    let notice = state
        .notice
        .clone()
        .unwrap_or_else(|| panic!("no notice; mode {:?}\n{screen}", state.mode));
    assert_eq!(notice.level, Level::Error, "{}", notice.text);
    assert!(
        notice.text.contains("burst: must be at least 1 (got 0)"),
        "{}",
        notice.text
    );
    assert_eq!(
        server.demo.settings(ComponentKind::Limit, "api")["burst"],
        50
    );
    let snapshot = state.snapshot.expect("data");
    assert_eq!(
        snapshot
            .limits
            .iter()
            .find(|l| l.name == "api")
            .unwrap()
            .version,
        2
    );
    let screen = terminal.backend().inner.to_string();
    assert!(screen.contains("Limits (2/2)"), "{screen}");
    assert!(screen.contains("LIVE"), "{screen}");
    server.stop().await;
}
