//! `cargo fuzz run config_loader`: see fuzz/README.md and the driver `palisade_fuzz::config_loader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::config_loader(data));
