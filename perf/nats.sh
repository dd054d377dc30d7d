#!/usr/bin/env bash
# Makes Debian's `nats-server` available for corechat-bench's NATS comparison and its test.
#
# Idempotent: does nothing when nats-server is already installed; otherwise installs the
# `nats-server` package with apt-get (as root, or through sudo). It does not start a server:
# `corechat-bench nats-compare` starts its own on 127.0.0.1 with a random port and stops it
# when done. Prints the path of the nats-server binary on its last line.
#
# Usage: perf/nats.sh          install if missing, print the binary's path
#        perf/nats.sh --check  print the path if installed, exit 1 otherwise (installs nothing)
set -euo pipefail

CHECK=0
for arg in "$@"; do
    case "$arg" in
        --check) CHECK=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "nats.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "nats.sh: $*" >&2; }

export PATH="$PATH:/usr/sbin:/sbin:/usr/local/bin"
find_bin() { command -v nats-server 2>/dev/null || true; }

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
    if [ "$CHECK" = 1 ]; then
        log "nats-server is not installed (run perf/nats.sh to install it)"
        exit 1
    fi
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=(sudo)
    fi
    log "installing nats-server with apt-get"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    # The package ships no init script that starts a server, so nothing runs after install.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends nats-server >&2
    BIN="$(find_bin)"
    if [ -z "$BIN" ]; then
        log "nats-server is still missing after apt-get install"
        exit 1
    fi
fi
echo "$BIN"
