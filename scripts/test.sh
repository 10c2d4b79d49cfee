#!/usr/bin/env bash
# Runs every test of the workspace, once per I/O driver, installing and building what the
# tests need first (the protocol tests drive redis-cli, redis-benchmark, curl and wrk; the backend
# pool's tests start redis-server).
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# The tests raise RLIMIT_NOFILE themselves up to the hard limit; make sure that is high.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Release mode: the suite pushes hundreds of thousands of messages through the engine. Every
# integration test prints the driver it ran on; the io_uring run also builds and runs the unit
# tests, doc tests and examples, which do not depend on the driver.
echo "== io_uring driver"
RINGWIRE_DRIVER=uring cargo test --workspace --release "$@"
echo "== epoll driver"
RINGWIRE_DRIVER=epoll cargo test --workspace --release --tests "$@"
# The model test of the mailbox's sleep protocol (runtime/src/mailbox/loom_tests.rs): about
# two minutes on two cores, most of it building, in a target directory of its own because the
# cfg flag rebuilds every dependency.
echo "== loom model of the mailbox"
RUSTFLAGS="--cfg loom -D warnings" CARGO_TARGET_DIR=target/loom \
    cargo test -p ringwire-runtime --lib --release mailbox::loom
