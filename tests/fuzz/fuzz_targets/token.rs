//! Fuzz target `token`: see `wharf::fuzzing::token` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::token(data));
