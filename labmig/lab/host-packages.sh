#!/usr/bin/env bash
# Host set-up shared by the local lab and the Vagrant pair: the Debian packages a
# labmig migration host needs, with QEMU taken from the stable release's backports.
#
# Debian 12's QEMU 7.2 corrupts TCG guests after a multi-pass live migration, so the
# backports suite is added, derived from the machine's own Debian apt source (same
# mirror, same keyring), and QEMU is installed from it. Only what is missing is
# installed; a second run does nothing. Run as root.
#
#   bash host-packages.sh            install what is missing
#   bash host-packages.sh --check    exit 1 (and list them) when something is missing
#   bash host-packages.sh --print-backports   print the backports source it would add
set -euo pipefail

CHECK_ONLY=0
PRINT_BACKPORTS=0
[[ ${1:-} == --check ]] && CHECK_ONLY=1
[[ ${1:-} == --print-backports ]] && PRINT_BACKPORTS=1
APT_DIR=${LABMIG_APT_DIR:-/etc/apt}

# shellcheck source=/dev/null
. /etc/os-release
CODENAME=${VERSION_CODENAME:-bookworm}
BACKPORTS="${CODENAME}-backports"
BACKPORTS_LIST=$APT_DIR/sources.list.d/labmig-backports.sources

# From backports: QEMU (the emulator and qemu-img).
QEMU_PACKAGES=(qemu-system-x86 qemu-utils)
# From the release: libvirt without its systemd glue, the bindings' build needs, the
# guest's userland, sshd for host-to-host copies, tc/ip.
PACKAGES=(
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
    busybox-static openssh-server openssh-client iproute2 gcc libc6-dev
)
QEMU_MIN_MAJOR=8

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

qemu_major() {
    local v
    v=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
    v=${v#*:}
    echo "${v%%.*}"
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
qemu_missing=()
for pkg in "${QEMU_PACKAGES[@]}"; do
    installed "$pkg" || qemu_missing+=("$pkg")
done
major=$(qemu_major)
if [[ -n $major && $major -lt $QEMU_MIN_MAJOR ]]; then
    qemu_missing=("${QEMU_PACKAGES[@]}")
fi
# libvirtd checks that this account exists even when QEMU runs as root.
need_user=0
getent passwd libvirt-qemu >/dev/null || need_user=1

if ((!PRINT_BACKPORTS && ${#missing[@]} == 0 && ${#qemu_missing[@]} == 0 && need_user == 0)); then
    exit 0
fi
if ((CHECK_ONLY)); then
    echo "missing: ${missing[*]} ${qemu_missing[*]}$( ((need_user)) && echo ' user:libvirt-qemu')"
    exit 1
fi
if ((!PRINT_BACKPORTS)) && [[ $(id -u) -ne 0 ]]; then
    echo "labmig lab: missing Debian packages: ${missing[*]} ${qemu_missing[*]}" >&2
    echo "  hint: run as root (sudo labmig lab up, or sudo make setup)" >&2
    exit 1
fi

add_backports() {
    if ((!PRINT_BACKPORTS)); then
        [[ -e $BACKPORTS_LIST ]] && return 0
    fi
    if ((!PRINT_BACKPORTS)) && grep -rqs -- "$BACKPORTS" "$APT_DIR/sources.list" "$APT_DIR/sources.list.d/"; then
        return 0
    fi
    local uri="" keyring=""
    # deb822 sources: the stanza whose Suites include the release itself.
    local f
    for f in "$APT_DIR"/sources.list.d/*.sources; do
        [[ -e $f ]] || continue
        uri=$(awk -v c="$CODENAME" '
            BEGIN { RS = ""; FS = "\n" }
            {
                u = ""; s = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
                    if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == c) s = 1 }
                }
                if (s && u != "" && u !~ /security/) { print u; exit }
            }' "$f")
        if [[ -n $uri ]]; then
            keyring=$(awk -v c="$CODENAME" '
                BEGIN { RS = ""; FS = "\n" }
                $0 ~ ("Suites:.*[ \t]" c "([ \t]|$)") {
                    for (i = 1; i <= NF; i++) if ($i ~ /^Signed-By:/) { k = $i; sub(/^Signed-By:[ \t]*/, "", k); print k; exit }
                }' "$f")
            break
        fi
    done
    # One-line sources.list format.
    if [[ -z $uri ]]; then
        keyring=$(grep -hsE "^deb[[:space:]].*[[:space:]]${CODENAME}[[:space:]]" "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*.list \
            | grep -v security | grep -oE 'signed-by=[^] ]+' | head -n1 | cut -d= -f2 || true)
        uri=$(grep -hsE "^deb[[:space:]].*[[:space:]]${CODENAME}[[:space:]]" "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*.list \
            | grep -v security | sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1; exit}' || true)
    fi
    if [[ -z $uri ]]; then
        echo "labmig lab: no Debian apt source for '$CODENAME' found to derive '$BACKPORTS' from" >&2
        echo "  hint: add the $BACKPORTS suite to your apt sources, then run this again" >&2
        exit 1
    fi
    local target=$BACKPORTS_LIST
    if ((PRINT_BACKPORTS)); then
        target=/dev/stdout
    else
        echo "labmig lab: adding $BACKPORTS from $uri"
    fi
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: $BACKPORTS"
        echo "Components: main"
        if [[ -n $keyring ]]; then echo "Signed-By: $keyring"; fi
    } >"$target"
    apt_update_needed=1
}

if ((PRINT_BACKPORTS)); then
    add_backports
    exit 0
fi

apt_get() {
    # Another apt run may hold the lock for a while; wait for it rather than fail.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

apt_update_needed=0
((${#qemu_missing[@]})) && add_backports
if ((apt_update_needed)) || { ((${#qemu_missing[@]})) && ! apt-cache policy qemu-system-x86 2>/dev/null | grep -q -- "$BACKPORTS"; }; then
    apt_get update -qq
fi

# Keep package scripts from starting daemons (sshd, libvirtd) on the machine itself;
# the lab starts its own, inside its namespaces.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
fi
cleanup_policy() { if ((made_policy)); then rm -f "$policy"; fi; }
trap cleanup_policy EXIT

if ((${#missing[@]})); then
    echo "labmig lab: installing ${missing[*]}"
    apt_get install -y -qq --no-install-recommends "${missing[@]}" || {
        apt_get update -qq
        apt_get install -y -qq --no-install-recommends "${missing[@]}"
    }
fi
if ((${#qemu_missing[@]})); then
    echo "labmig lab: installing QEMU from $BACKPORTS"
    apt_get install -y -qq --no-install-recommends -t "$BACKPORTS" "${QEMU_PACKAGES[@]}"
fi
if ! getent passwd libvirt-qemu >/dev/null; then
    getent group kvm >/dev/null || groupadd --system kvm
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
        -g libvirt-qemu -G kvm libvirt-qemu
fi
major=$(qemu_major)
if [[ -z $major || $major -lt $QEMU_MIN_MAJOR ]]; then
    echo "labmig lab: QEMU ${major:-?} installed; $QEMU_MIN_MAJOR or newer is needed (TCG guests break after live migration on 7.2)" >&2
    exit 1
fi
