//! `cargo fuzz run l2_codec`: see fuzz/README.md and the driver `palisade_fuzz::l2_codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::l2_codec(data));
