#!/usr/bin/env bash
# Install what torpor needs on this machine, skipping whatever is already there.
#
#   scripts/setup.sh [base] [criu] [minio] [venv] [link]     (no argument: base criu venv)
#
# base  Debian packages: runc, iptables (CRIU locks the network with it; agents
#       firewall the runs' networks with it), iproute2 (runs' veth pairs),
#       PostgreSQL 15, zstd.
# criu  a CRIU >= 4.2 that passes `criu check` at $TORPOR_TOOLS/bin/criu (native/).
# minio the S3 server the tests start, built with `go install` at a pinned
#       release into $TORPOR_TOOLS/minio-<version>/ (tests only).
# venv  .venv with torpor installed editable, with its dev extras.
# link  $TORPOR_BIN_DIR/torpor (default /usr/local/bin/torpor) -> this checkout's
#       .venv/bin/torpor, so the README's commands work as written. An existing
#       link is re-pointed here; a file that is not a link is left alone.
#
# Every step checks first and is a no-op when nothing is missing, so running it
# twice costs a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${TORPOR_TOOLS:-/opt/torpor}
PYTHON=${PYTHON:-python3}
BASE_PACKAGES=(runc iptables postgresql zstd ca-certificates iproute2 procps python3-venv)
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c   # RELEASE 2026-02-12, pinned

log() { echo "setup: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "installing $1 needs root: run 'sudo make $2' (or install it yourself)"
        exit 1
    fi
}

step_base() {
    local missing=()
    for p in "${BASE_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "Debian packages present"
        return
    fi
    need_root "${missing[*]}" setup
    log "installing Debian packages: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

step_criu() {
    TORPOR_TOOLS=$TOOLS native/build-criu.sh
}

step_minio() {
    local dir=$TOOLS/minio-$MINIO_VERSION
    if [ -x "$dir/minio" ]; then
        log "MinIO present: $dir/minio"
        return
    fi
    command -v go >/dev/null || { log "Go is needed to build MinIO (go install) and is not on PATH"; exit 1; }
    log "building MinIO $MINIO_VERSION with go install (first time only, a few minutes)"
    mkdir -p "$dir"
    GOBIN=$dir/.partial CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install "$MINIO_MODULE@$MINIO_VERSION"
    mv "$dir/.partial/minio" "$dir/minio"
    rmdir "$dir/.partial"
    mkdir -p "$TOOLS/bin"
    ln -sfn "$dir/minio" "$TOOLS/bin/minio"
    log "MinIO built: $dir/minio"
}

step_venv() {
    local stamp=.venv/.torpor-installed want
    want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        log ".venv up to date"
        return
    fi
    log "creating .venv and installing torpor (editable) with its dev extras"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
}

step_link() {
    local dir=${TORPOR_BIN_DIR:-/usr/local/bin} target
    target="$(pwd)/.venv/bin/torpor"
    local link=$dir/torpor
    [ -x "$target" ] || { log "no $target: run the venv step first"; exit 1; }
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
        log "$link -> $target present"
        return
    fi
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        log "$link exists and is not a link made here; leaving it alone (use $target, or remove it and run 'make install')"
        return
    fi
    mkdir -p "$dir" 2>/dev/null || true
    if ! ln -sfn "$target" "$link" 2>/dev/null; then
        log "cannot write $link: run 'sudo make install', or put $(pwd)/.venv/bin on your PATH"
        return
    fi
    log "linked $link -> $target: 'torpor' is on your PATH"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(base criu venv)
for s in "${steps[@]}"; do
    case $s in
        base|criu|minio|venv|link) "step_$s" ;;
        *) log "unknown step '$s' (known: base criu minio venv link)"; exit 2 ;;
    esac
done
