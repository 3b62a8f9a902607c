#!/usr/bin/env bash
# Runs the side-by-side benchmark (benches/compare.rs): installs the
# reference registry, skopeo and nginx when they are missing, then
# `cargo bench --bench compare` (which builds Wharf in release mode).
# WHARF_BENCH_QUICK=1, WHARF_BENCH_RUNS=N and WHARF_BENCH_SYSTEMS=... as in
# benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh

ensure_packages docker-registry skopeo nginx-light
cargo bench --bench compare "$@"
