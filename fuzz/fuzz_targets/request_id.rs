//! `cargo fuzz run request_id`: see fuzz/README.md and the driver `palisade_fuzz::request_id`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::request_id(data));
