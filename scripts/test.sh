#!/usr/bin/env bash
# Runs every test of the workspace, building what the tests need first.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests raise RLIMIT_NOFILE themselves up to the hard limit; make sure that is high.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Release mode: the suite pushes hundreds of thousands of messages through the engine.
cargo test --workspace --release "$@"
