# shellcheck shell=bash
# Shared by qemu/build-image and qemu/run-fleet (sourced, not run).

# The repository this script lives in, and where generated files go: next to Cargo's output
# (CARGO_TARGET_DIR is honoured, so a shared target directory holds one cache), or
# OXROOT_QEMU_DIR when set.
OXROOT_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OXROOT_QEMU_DIR=${OXROOT_QEMU_DIR:-${CARGO_TARGET_DIR:-$OXROOT_REPO/target}/qemu}
export OXROOT_QEMU_DIR

die() {
    echo "${0##*/}: error: $*" >&2
    exit 1
}

note() { echo "${0##*/}: $*" >&2; }

# Installs the Debian packages that are missing, as tests/run does: apt-get when root (or with
# sudo), otherwise a clear message naming them.
ensure_packages() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    local sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null ||
            die "missing Debian packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})"
        sudo_cmd=(sudo)
    fi
    note "installing Debian packages: ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# Seconds since the epoch with centiseconds, for durations.
now() { date +%s.%N | cut -c1-13; }

# b - a, two decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
