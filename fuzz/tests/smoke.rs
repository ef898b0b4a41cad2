//! Runs every fuzz driver on stable Rust (no libFuzzer): over the seed files in `fuzz/seeds/`
//! and a few thousand deterministic pseudo-random inputs per target, so the targets keep
//! building and their oracles keep passing without a nightly toolchain.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --release` (set `PALISADE_FUZZ_SMOKE_RUNS` for
//! more inputs per target).

use std::path::Path;

type Driver = fn(&[u8]);

const TARGETS: &[(&str, Driver)] = &[
    ("l2_codec", palisade_fuzz::l2_codec),
    ("control_frame", palisade_fuzz::control_frame),
    ("admin_patch", palisade_fuzz::admin_patch),
    ("ratelimit_headers", palisade_fuzz::ratelimit_headers),
    ("config_loader", palisade_fuzz::config_loader),
    ("request_id", palisade_fuzz::request_id),
];

/// xorshift64*: deterministic inputs, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn run(name: &str, driver: Driver) {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(name);
    let mut count = 0;
    if let Ok(dir) = std::fs::read_dir(&seeds) {
        for entry in dir {
            let path = entry.expect("a seed").path();
            driver(&std::fs::read(&path).expect("readable seed"));
            count += 1;
        }
    }
    let runs: usize = std::env::var("PALISADE_FUZZ_SMOKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let mut buf = Vec::new();
    for _ in 0..runs {
        buf.clear();
        let len = (rng.next() % 600) as usize;
        buf.extend((0..len).map(|_| rng.next() as u8));
        driver(&buf);
    }
    println!("{name}: {count} seeds + {runs} random inputs");
}

#[test]
fn l2_codec() {
    run(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn control_frame() {
    run(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn admin_patch() {
    run(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn ratelimit_headers() {
    run(TARGETS[3].0, TARGETS[3].1);
}

#[test]
fn config_loader() {
    run(TARGETS[4].0, TARGETS[4].1);
}

#[test]
fn request_id() {
    run(TARGETS[5].0, TARGETS[5].1);
}
