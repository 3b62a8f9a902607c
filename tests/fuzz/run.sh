#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 10) with cargo-fuzz on
# the nightly toolchain, installing cargo-fuzz when it is missing. New
# inputs land in tests/fuzz/corpus/<target>/. Without a nightly toolchain it
# says so and exits 0: tests/fuzz_corpus.rs runs the same targets as
# property tests on stable with the test suite.
# Sanitizers are off (-s none): Wharf forbids unsafe code, and without them
# the targets build and run several times faster.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "no nightly toolchain: cargo-fuzz skipped (tests/fuzz_corpus.rs covers the targets on stable)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once, about a minute)"
    cargo install cargo-fuzz --locked
fi
for t in $(cargo +nightly fuzz list --fuzz-dir tests/fuzz); do
    echo "fuzzing $t for ${secs}s"
    cargo +nightly fuzz run --fuzz-dir tests/fuzz -s none "$t" -- \
        -max_total_time="$secs" -max_len=4096 -print_final_stats=1 2>&1 |
        grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread|Done)" || true
    # A crash leaves an artifact behind and fails the run.
    if compgen -G "tests/fuzz/artifacts/$t/*" >/dev/null; then
        echo "fuzz target $t failed: see tests/fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
