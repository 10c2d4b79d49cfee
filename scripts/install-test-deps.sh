#!/usr/bin/env bash
# Installs the real clients and servers the protocol tests drive (redis-cli and redis-benchmark
# from redis-tools, curl, wrk, and openssl's s_client for the TLS tests; redis-server and
# nutcracker (twemproxy), which the backend pool's and the proxy's tests start as backends and
# as the placement reference) when any is missing. Non-interactive and idempotent: with every
# tool present it installs nothing and needs no network.
# Debian/Ubuntu (apt-get); run as root.
# Usage: scripts/install-test-deps.sh
set -euo pipefail

# tool -> Debian package
declare -A PKG=([redis-cli]=redis-tools [redis-benchmark]=redis-tools [curl]=curl [wrk]=wrk
    [openssl]=openssl [redis-server]=redis-server [nutcracker]=nutcracker)

# Debian puts nutcracker in /usr/sbin, which is not on every user's PATH.
have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

missing=()
for tool in "${!PKG[@]}"; do
    have "$tool" || missing+=("${PKG[$tool]}")
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
# Debian starts the packaged services (on 6379 and 22121); the tests run their own.
for service in redis-server nutcracker; do
    $sudo service "$service" stop >/dev/null 2>&1 || true
done
for tool in "${!PKG[@]}"; do
    have "$tool" || { echo "install-test-deps: $tool still missing" >&2; exit 1; }
done
