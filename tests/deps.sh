# Sourced by tests/run.sh and benches/run.sh: installs what they need when
# it is missing (Debian packages through apt-get, as root or with sudo).

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages PACKAGE...: installs the Debian packages not installed yet.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        sudo_if_needed apt-get update -qq
        sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# ensure_garage: Garage, the S3-compatible object store the S3 tests and
# benchmarks run against, built from crates.io when it is missing.
ensure_garage() {
    export PATH="$HOME/.cargo/bin:$PATH"
    if ! command -v garage >/dev/null 2>&1; then
        echo "installing Garage (cargo install garage --locked): this builds it from source once, about 10-15 minutes on 2 cores"
        cargo install garage --locked --quiet
    fi
}
