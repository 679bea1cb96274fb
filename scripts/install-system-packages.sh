#!/usr/bin/env bash
# Installs the Debian packages labmig needs, only those that are missing, so it is
# quick on a machine that already has them. Run as root (make setup does).
set -euo pipefail

# Build and core: compiler, Python headers and venv, the xxHash header the compiled
# core includes, and the peers the benchmarks measure against.
PACKAGES=(
    gcc make pkg-config python3-dev python3-venv libxxhash-dev
    rsync coreutils
    ruby shellcheck  # check the Vagrant pair's files (it cannot boot here)
)
# JupyterLab browser tests: Debian's Chromium, driven by Playwright (no browser download).
PACKAGES+=(chromium fonts-dejavu-core)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "labmig setup: missing Debian packages: ${missing[*]}" >&2
        echo "  hint: run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "labmig setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The local two-host lab: libvirt, QEMU from backports, busybox-static, sshd (shared
# with the Vagrant pair's provisioning).
bash "$(dirname "$0")/../labmig/lab/host-packages.sh"
