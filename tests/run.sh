#!/usr/bin/env bash
# Runs Wharf's whole test suite. Installs what the black-box tests drive
# (skopeo, dockerd/containerd, the reference registry, busybox-static,
# apache2-utils for htpasswd -B, Chromium and chromedriver for the web UI,
# the Python `oras` package, and Garage for --storage s3) when they are
# missing, then runs `cargo test` on the filesystem backend, and the
# real-client, fault and store tests again with --storage s3 on Garage
# (WHARF_TEST_STORAGE=s3).
# Extra arguments go to both `cargo test` runs (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh

ensure_packages skopeo docker.io docker-registry busybox-static apache2-utils chromium chromium-driver
if ! python3 -c 'import oras' 2>/dev/null; then
    echo "installing the Python oras package"
    python3 -m pip install -q oras
fi

ensure_garage

cargo test "$@"

echo "the same tests again on --storage s3 (Garage):"
WHARF_TEST_STORAGE=s3 cargo test \
    --test real_clients --test docker --test mirror_clients --test auth_clients \
    --test faults --test durability --test store_limits --test mirror \
    --test api_blobs --test api_manifests --test bundle "$@"
