//! `cargo fuzz run ratelimit_headers`: see fuzz/README.md and the driver `palisade_fuzz::ratelimit_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::ratelimit_headers(data));
