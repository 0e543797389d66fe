#!/usr/bin/env bash
# Make a CRIU >= 4.2 that passes `criu check` available at $TORPOR_TOOLS/bin/criu.
#
# Why not Debian 12's own: CRIU 3.17 does not start on current kernels
# ("Unexpected rt vDSO area bounds"), and 4.1.x cannot dump a process holding
# an inet socket on kernels >= 6.16 ("Can't get 1:16 opt", fixed in 4.2). We
# build the pinned upstream tarball of Debian unstable's source package, fetched
# with apt through a private deb-src list that reuses this machine's configured
# mirror (source only: a binary line for a newer suite would upgrade libc).
#
# Idempotent: when $TORPOR_TOOLS/bin/criu already works this costs one
# `criu check`.
set -euo pipefail

CRIU_VERSION=4.2.1
CRIU_DEB_VERSION=4.2.1-1
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
TOOLS=${TORPOR_TOOLS:-/opt/torpor}
PREFIX=$TOOLS/criu-$CRIU_VERSION
LINK=$TOOLS/bin/criu
BUILD_DEPS=(build-essential pkg-config libbsd-dev libcap-dev libgnutls28-dev libnet1-dev
            libnftables-dev libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler
            protobuf-compiler python3-protobuf uuid-dev libdrm-dev xz-utils)

log() { echo "native: $*" >&2; }

version_ok() {  # $1 = criu binary; true when >= 4.2 and `criu check` passes
    local v
    v=$("$1" --version 2>/dev/null | awk '/^Version:/{print $2}') || return 1
    [ -n "$v" ] || return 1
    # sort -V puts the smaller first: 4.2 must not sort after $v
    [ "$(printf '%s\n%s\n' 4.2 "$v" | sort -V | head -1)" = 4.2 ] || { log "$1 is CRIU $v (< 4.2)"; return 1; }
    "$1" check >/dev/null 2>&1 || { log "$1 (CRIU $v) fails 'criu check'"; return 1; }
}

if [ -x "$LINK" ] && version_ok "$LINK"; then
    log "CRIU ok: $LINK ($("$LINK" --version | awk '/^Version:/{print $2}'))"
    exit 0
fi

mkdir -p "$TOOLS/bin"
if command -v criu >/dev/null 2>&1 && version_ok "$(command -v criu)"; then
    ln -sfn "$(command -v criu)" "$LINK"
    log "using the system CRIU: $(command -v criu)"
    exit 0
fi

if [ ! -x "$PREFIX/criu" ] || ! version_ok "$PREFIX/criu"; then
    log "building CRIU $CRIU_VERSION into $PREFIX"
    missing=()
    for p in "${BUILD_DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing build dependencies: ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi

    work=$(mktemp -d /tmp/torpor-criu.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    tarball="$TOOLS/src/criu_$CRIU_VERSION.orig.tar.xz"
    if [ ! -f "$tarball" ] || ! echo "$CRIU_SHA256  $tarball" | sha256sum -c --quiet 2>/dev/null; then
        mkdir -p "$TOOLS/src" "$work/apt/lists/partial"
        # The mirror this machine already uses, from deb822 or one-line sources.
        uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        if [ -z "$uri" ]; then
            uri=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//){print $i; exit}}' /etc/apt/sources.list 2>/dev/null | head -1)
        fi
        [ -n "$uri" ] || { log "no Debian mirror configured in /etc/apt; cannot fetch CRIU's source"; exit 1; }
        echo "deb-src [trusted=yes] $uri sid main" > "$work/apt/sources.list"
        aptopts=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
                 -o Dir::State::Lists="$work/apt/lists" -o APT::Sandbox::User=root)
        apt-get "${aptopts[@]}" update -q >/dev/null
        # Parts of the Debian packaging may 404 on the mirror; the orig tarball is all we need.
        (cd "$work" && apt-get "${aptopts[@]}" source --download-only "criu=$CRIU_DEB_VERSION" >/dev/null 2>&1) || true
        [ -f "$work/criu_$CRIU_VERSION.orig.tar.xz" ] || { log "the mirror did not provide criu_$CRIU_VERSION.orig.tar.xz"; exit 1; }
        echo "$CRIU_SHA256  $work/criu_$CRIU_VERSION.orig.tar.xz" | sha256sum -c --quiet \
            || { log "criu_$CRIU_VERSION.orig.tar.xz has the wrong sha256; refusing to build it"; exit 1; }
        mv "$work/criu_$CRIU_VERSION.orig.tar.xz" "$tarball"
    fi
    tar -C "$work" -xf "$tarball"
    make -C "$work/criu-$CRIU_VERSION" -j"$(nproc)" criu >"$work/build.log" 2>&1 \
        || { tail -30 "$work/build.log" >&2; log "CRIU build failed"; exit 1; }
    mkdir -p "$PREFIX"
    install -m 0755 "$work/criu-$CRIU_VERSION/criu/criu" "$PREFIX/criu.new"
    mv "$PREFIX/criu.new" "$PREFIX/criu"
fi
version_ok "$PREFIX/criu" || { log "the CRIU built in $PREFIX does not pass 'criu check'"; exit 1; }
ln -sfn "$PREFIX/criu" "$LINK"
log "CRIU ok: $LINK -> $PREFIX/criu"
