//! Fuzz target `manifest`: see `wharf::fuzzing::manifest_parse` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::manifest_parse(data));
