//! Per-request overhead of the observe stack (request id + trace context + span + metrics +
//! live stats) against the same service without it. No network: each iteration builds a
//! request, calls the service and drops the response, so the difference is the layer's cost.
//! A global Prometheus recorder is installed, as in a server, with upkeep on another thread.
//!
//! `cargo bench -p palisade --no-default-features --features observe --bench observe -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use palisade::observe::{
    ObserveConfig, ObserveLayer, PrometheusExporter, RequestContextLayer, StatsRecorder,
    TraceConfig,
};
use tower::{Layer, Service};

fn request() -> Request<Body> {
    Request::get("/users/42")
        .header("x-request-id", "bench-request-0001")
        .body(Body::empty())
        .unwrap()
}

fn router() -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "hello" }))
        .route("/names", get(|| async { "names" }))
}

/// One request through `svc`; handlers never wait, so the future completes on the first poll.
fn call<S>(svc: &mut S)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let res = svc.call(request()).now_or_never().expect("ready").unwrap();
    black_box(res);
}

fn observe(config: ObserveConfig) -> ObserveLayer {
    ObserveLayer::new(config).0
}

fn bench(c: &mut Criterion) {
    let exporter = PrometheusExporter::install().expect("first recorder of this process");
    // Drain histogram buffers off the measured thread, as a scrape or upkeep task would.
    let handle = exporter.handle().clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            handle.run_upkeep();
        }
    });
    let no_metrics = || ObserveConfig::builder().metrics(false).build().unwrap();

    // Through an axum router, layers added with `Router::layer`.
    let mut group = c.benchmark_group("observe/router");
    group.throughput(Throughput::Elements(1));
    let mut bare = router();
    group.bench_function("bare", |b| b.iter(|| call(&mut bare)));
    let mut full = router().layer(observe(ObserveConfig::default()));
    group.bench_function("observe", |b| b.iter(|| call(&mut full)));
    let mut without_metrics = router().layer(observe(no_metrics()));
    group.bench_function("observe_without_metrics", |b| {
        b.iter(|| call(&mut without_metrics))
    });
    let mut ctx = router().layer(RequestContextLayer::default());
    group.bench_function("request_context_only", |b| b.iter(|| call(&mut ctx)));
    // With a JSON log subscriber at INFO and the span raised to INFO (it is DEBUG by default):
    // the span is built and formatted, the DEBUG completion event filtered.
    let span_at_info = ObserveConfig::builder()
        .trace(TraceConfig::default().span_level(tracing::Level::INFO))
        .build()
        .unwrap();
    let mut logged = router().layer(observe(span_at_info));
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("observe_with_json_subscriber", |b| {
            b.iter(|| call(&mut logged))
        });
    });
    group.finish();

    // Around a plain tower service: the layer's own cost, without axum's per-layer boxing.
    let mut group = c.benchmark_group("observe/service");
    group.throughput(Throughput::Elements(1));
    let inner = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
    });
    let mut bare = inner;
    group.bench_function("bare", |b| b.iter(|| call(&mut bare)));
    let mut full = observe(ObserveConfig::default()).layer(inner);
    group.bench_function("observe", |b| b.iter(|| call(&mut full)));
    let mut ctx = RequestContextLayer::default().layer(inner);
    group.bench_function("request_context_only", |b| b.iter(|| call(&mut ctx)));
    group.finish();

    let mut group = c.benchmark_group("observe/stats");
    group.throughput(Throughput::Elements(1));
    let stats = StatsRecorder::default();
    group.bench_function("record", |b| {
        b.iter(|| stats.record(black_box("/users/{id}"), 200, Duration::from_micros(150)))
    });
    group.bench_function("traffic_snapshot", |b| {
        b.iter(|| black_box(stats.traffic()))
    });
    group.finish();
}

/// Requests per measured batch in the loopback group, all in flight at once.
const BATCH: u64 = 64;

/// Whole HTTP/1.1 round trips over loopback (keep-alive, 64 concurrent requests), with the
/// client and the server sharing the machine: the end-to-end throughput cost of the layer.
fn loopback(c: &mut Criterion) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("observe/loopback");
    group.throughput(Throughput::Elements(BATCH));
    let apps = [
        ("bare", router()),
        ("observe", router().layer(observe(ObserveConfig::default()))),
    ];
    for (name, app) in apps {
        let addr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        });
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = format!("http://{addr}/users/42").parse().unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let batch = (0..BATCH).map(|_| {
                            let (client, uri) = (client.clone(), uri.clone());
                            tokio::spawn(async move {
                                let res = client.get(uri).await.unwrap();
                                black_box(res.into_body().collect().await.unwrap());
                            })
                        });
                        for task in futures_util::future::join_all(batch).await {
                            task.unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, loopback);
criterion_main!(benches);
