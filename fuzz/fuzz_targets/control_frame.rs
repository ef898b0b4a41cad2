//! `cargo fuzz run control_frame`: see fuzz/README.md and the driver `palisade_fuzz::control_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::control_frame(data));
