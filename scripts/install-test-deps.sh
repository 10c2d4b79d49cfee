#!/usr/bin/env bash
# Installs the real clients and servers the protocol tests drive (redis-cli and redis-benchmark
# from redis-tools, redis-server for the backend pool's tests, curl, wrk) when any is missing.
# Non-interactive and idempotent: with every tool present it installs nothing and needs no
# network. Debian/Ubuntu (apt-get); run as root.
# Usage: scripts/install-test-deps.sh
set -euo pipefail

# tool -> Debian package
declare -A PKG=([redis-cli]=redis-tools [redis-benchmark]=redis-tools [redis-server]=redis-server
    [curl]=curl [wrk]=wrk)

missing=()
for tool in "${!PKG[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PKG[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
# Unique package names, stable order.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-test-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for tool in "${!PKG[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still missing" >&2; exit 1; }
done
