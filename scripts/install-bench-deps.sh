#!/usr/bin/env bash
# Installs what the benchmark scripts need beyond the test tools (scripts/install-test-deps.sh):
# nginx (the baseline HTTP and https server), ab from apache2-utils (a second HTTP client, for
# cross-checks), openssl (certificates, s_client, s_time) and python3 (bench-tls.sh's idle
# client), when any is missing. Non-interactive and idempotent: with every tool present it
# installs nothing and needs no network. The tests do not need any of these.
# Debian/Ubuntu (apt-get); run as root.
# Usage: scripts/install-bench-deps.sh
set -euo pipefail

# tool -> Debian package
declare -A PKG=([nginx]=nginx [ab]=apache2-utils [openssl]=openssl [python3]=python3)

# Debian puts nginx in /usr/sbin, which is not on every user's PATH.
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
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-bench-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged nginx on port 80; the benchmarks run their own.
$sudo service nginx stop >/dev/null 2>&1 || true
for tool in "${!PKG[@]}"; do
    have "$tool" || { echo "install-bench-deps: $tool still missing" >&2; exit 1; }
done
