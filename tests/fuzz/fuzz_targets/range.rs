//! Fuzz target `range`: see `wharf::fuzzing::range` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::range(data));
