//! Fuzz target `route`: see `wharf::fuzzing::route` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::route(data));
