#!/usr/bin/env bash
# Echo over a Unix domain socket against echo over loopback TCP, one server core: msgs/s and
# the server's CPU per message.
#
# The echo example (io_uring driver unless RINGWIRE_DRIVER says otherwise) runs pinned to
# --server-cpu (default 0) and `loadgen plain` to --client-cpu (default 1): one thread, plain
# sockets and epoll, the same loop for both transports but for the connect (`loadgen run`
# takes a TCP address only). Rounds alternate TCP and Unix (TCP first in odd rounds, Unix
# first in even ones), each with a fresh server, so drift hits both alike. Before each run the
# two CPUs must be nearly idle (`loadgen quiet`, unless --no-quiet).
#
# Results land in results/unix-<timestamp>/: runs.jsonl (one JSON line per run), logs/,
# machine.txt and summary.md (medians and ranges per transport, also printed).
#
# Usage:
#   scripts/bench-unix.sh                 5 rounds, 50 connections x 8 in flight, 64 B,
#                                         2 s warm-up + 8 s measured per run
# Options: --rounds N, --connections N, --depth N, --size N, --warmup S, --duration S,
# --server-cpu N, --client-cpu N, --no-build, --bin-dir DIR (default target/release),
# --no-quiet, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 connections=50 depth=8 size=64 warmup=2 duration=8 server_cpu=0 client_cpu=1
build=1 bin_dir=${CARGO_TARGET_DIR:-target}/release quiet=1 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift ;;
        --connections) connections=$2; shift ;;
        --depth) depth=$2; shift ;;
        --size) size=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --duration) duration=$2; shift ;;
        --server-cpu) server_cpu=$2; shift ;;
        --client-cpu) client_cpu=$2; shift ;;
        --no-build) build=0 ;;
        --bin-dir) bin_dir=$2; shift ;;
        --no-quiet) quiet=0 ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-unix: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$build" = 1 ]; then
    cargo build --release --example echo -p ringwire
    cargo build --release -p ringwire-bench --bin loadgen
fi
echo_bin=$bin_dir/examples/echo loadgen=$bin_dir/loadgen
for b in "$echo_bin" "$loadgen"; do
    [ -x "$b" ] || { echo "bench-unix: $b missing (build, or drop --no-build)" >&2; exit 2; }
done

out=${out:-results/unix-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out/logs"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo -)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "rounds $rounds, $connections connections x $depth in flight, $size B, warm-up $warmup s, measured $duration s"
    echo "server CPU $server_cpu, client CPU $client_cpu, driver ${RINGWIRE_DRIVER:-default}"
    lscpu
} > "$out/machine.txt"
echo "bench-unix: results in $out"

sock_dir=$(mktemp -d /tmp/bench-unix.XXXXXX)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
    rm -rf "$sock_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port=7400

# start_server TRANSPORT LOG: the echo example on the server CPU; sets server_pid and target
# (the loadgen's address arguments).
start_server() {
    local transport=$1 log=$2 listen
    if [ "$transport" = unix ]; then
        listen=(--unix "$sock_dir/echo.sock")
        target=(--unix "$sock_dir/echo.sock")
    else
        port=$((port + 1))
        listen=(--addr "127.0.0.1:$port")
        target=(--addr "127.0.0.1:$port")
    fi
    RUST_LOG=warn taskset -c "$server_cpu" "$echo_bin" "${listen[@]}" --cpus "$server_cpu" \
        > "$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench-unix: the $transport server did not start:" >&2
    tail -3 "$log" >&2
    exit 1
}

stop_server() {
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 1 ]; then order="tcp unix"; else order="unix tcp"; fi
    for transport in $order; do
        log=$out/logs/$transport-$round
        start_server "$transport" "$log.server.log"
        if [ "$quiet" = 1 ]; then
            "$loadgen" quiet --cpus "$server_cpu,$client_cpu" --timeout 120 \
                || echo "bench-unix: CPUs not quiet; running anyway (others_cpu in the JSON says how much)" >&2
        fi
        taskset -c "$client_cpu" "$loadgen" plain "${target[@]}" --cpu "$client_cpu" \
            --connections "$connections" --depth "$depth" --size "$size" \
            --warmup "$warmup" --duration "$duration" --server-pid "$server_pid" \
            --server-cpus "$server_cpu" --label "ringwire-$transport" --round "$round" \
            > "$log.load.txt" 2>&1 || echo "bench-unix: $transport round $round reported errors" >&2
        head -1 "$log.load.txt"
        grep '^{' "$log.load.txt" >> "$out/runs.jsonl" || true
        stop_server
    done
done

python3 - "$out/runs.jsonl" > "$out/summary.md" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
rows = [("msgs/s", "msgs_per_sec", "{:,.0f}"),
        ("server process CPU ns/msg", "server_ns_per_msg", "{:,.0f}"),
        ("server CPU busy ns/msg (softirq included)", "server_cpus_ns_per_msg", "{:,.0f}"),
        ("server CPU busy", "server_cpus_busy", "{:.1%}"),
        ("client CPU", "client_cpu", "{:.2f}"),
        ("other processes, cores", "others_cpu", "{:.2f}")]
by = {t: [r for r in runs if r["transport"] == t] for t in ("tcp", "unix")}
print("| | TCP loopback | Unix socket | Unix / TCP |")
print("|---|---|---|---|")
for name, key, fmt in rows:
    cells, med = [], {}
    for t in ("tcp", "unix"):
        v = [r[key] for r in by[t] if key in r]
        if not v:
            cells.append("-"); continue
        med[t] = statistics.median(v)
        cells.append(f"{fmt.format(med[t])} ({fmt.format(min(v))}–{fmt.format(max(v))})")
    ratio = f"×{med['unix'] / med['tcp']:.2f}" if len(med) == 2 and med["tcp"] else "-"
    print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} |")
print(f"\nmedian (min–max) of {len(by['tcp'])} TCP and {len(by['unix'])} Unix runs")
EOF
cat "$out/summary.md"
