//! `cargo fuzz run admin_patch`: see fuzz/README.md and the driver `palisade_fuzz::admin_patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::admin_patch(data));
