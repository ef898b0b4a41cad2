//! `bench-bare ADDR`: the benchmark routes on axum with no middleware at all.

#[tokio::main]
async fn main() {
    let addr = palisade_bench_apps::addr_from_args();
    let listener = palisade_bench_apps::listen(addr).await;
    eprintln!("bench-bare listening on {addr}");
    axum::serve(listener, palisade_bench_apps::routes())
        .await
        .expect("server failed");
}
