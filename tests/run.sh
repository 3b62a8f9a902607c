#!/usr/bin/env bash
# Runs Wharf's whole test suite. Installs what the black-box tests drive
# (skopeo, dockerd/containerd, the reference registry, busybox-static, and
# the Python `oras` package) when they are missing, then runs `cargo test`.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

packages=(skopeo docker.io docker-registry busybox-static)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import oras' 2>/dev/null; then
    echo "installing the Python oras package"
    python3 -m pip install -q oras
fi

cargo test "$@"
