//! Fuzz target `challenge`: see `wharf::fuzzing::challenge` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::challenge(data));
