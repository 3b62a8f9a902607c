#!/usr/bin/env bash
# Runs Wharf's whole test suite. Installs what the black-box tests drive
# (skopeo, dockerd/containerd, the reference registry, busybox-static,
# apache2-utils for htpasswd -B, Chromium and chromedriver for the web UI,
# and the Python `oras` package) when they are missing, then runs
# `cargo test`.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh

ensure_packages skopeo docker.io docker-registry busybox-static apache2-utils chromium chromium-driver
if ! python3 -c 'import oras' 2>/dev/null; then
    echo "installing the Python oras package"
    python3 -m pip install -q oras
fi

cargo test "$@"
