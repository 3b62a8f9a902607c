//! Fuzz target `names`: see `wharf::fuzzing::names` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::names(data));
