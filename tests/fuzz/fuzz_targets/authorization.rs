//! Fuzz target `authorization`: see `wharf::fuzzing::authorization` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::authorization(data));
