#!/usr/bin/env bash
# Runs the side-by-side benchmarks: installs the reference registry,
# skopeo, apache2-utils (htpasswd), GNU time and nginx when they are
# missing, then `cargo bench --bench compare` (the mirror against
# distribution's proxy mode and nginx) and `cargo bench --bench secure`
# (TLS and logins against distribution with htpasswd and TLS, and nginx
# over TLS), `cargo bench --bench eviction` (the cache bound and hit
# latency under sustained fills), `cargo bench --bench scale` (stores of
# 2,000 to 100,000 images beside distribution: start-up, memory, bytes,
# gc and verify) and `cargo bench --bench s3` (--storage s3 against
# distribution's S3 driver, both on Garage, which is built when missing);
# all build Wharf in release mode. WHARF_BENCH_QUICK=1, WHARF_BENCH_RUNS=N
# and WHARF_BENCH_SYSTEMS=... as in benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh

ensure_packages docker-registry skopeo apache2-utils time
# nginx is only the ceiling column: without it, measure the other two.
if ! ensure_packages nginx-light; then
    echo "nginx-light could not be installed: measuring wharf and distribution only" >&2
    export WHARF_BENCH_SYSTEMS="${WHARF_BENCH_SYSTEMS:-wharf,distribution}"
fi
cargo bench --bench compare "$@"
cargo bench --bench secure "$@"
cargo bench --bench eviction "$@"
cargo bench --bench scale "$@"
ensure_garage
cargo bench --bench s3 "$@"
