#!/usr/bin/env bash
# Where an echo server's time goes: runs one server pinned to CPU 0 under the load generator
# on CPU 1, and during the measured window counts, on CPU 0, the syscalls and io_uring events
# per message (perf stat tracepoints), and optionally samples where CPU 0 spends its time
# (perf record, call graphs; software clock, as VMs often lack a PMU).
#
#   scripts/bench/profile-echo.sh SERVER [--record] [--framing raw|len32] [--size B]
#       [--depth D] [--connections N] [--duration S] [--rate R] [--out DIR]
#   SERVER: ringwire, ringwire-epoll, floor, tokio, tokio-uring
#
# Needs perf (apt-get install linux-perf) and the release binaries (scripts/bench-echo.sh
# builds them). Prints the loadgen summary, the events per message, and with --record the
# top symbols on CPU 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

server=${1:?usage: $0 SERVER [options]}; shift
framing=raw size=64 depth=8 conns=50 duration=5 warmup=2 rate="" record=0 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --record) record=1 ;;
        --framing) framing=$2; shift ;;
        --size) size=$2; shift ;;
        --depth) depth=$2; shift ;;
        --connections) conns=$2; shift ;;
        --duration) duration=$2; shift ;;
        --rate) rate=$2; shift ;;
        --out) out=$2; shift ;;
        *) echo "profile-echo: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
bin_dir=target/release
out=${out:-results/profile-$server-$(date +%H%M%S)}
mkdir -p "$out"
. scripts/bench/servers.sh
server_bin "$server" || { echo "profile-echo: unknown server $server" >&2; exit 2; }
addr=127.0.0.1:7290
RUST_LOG=warn taskset -c 0 env $envs "$bin_dir/$bin" --addr $addr --cpus 0 --framing "$framing" \
    > "$out/server.log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$out/server.log" && break; sleep 0.05; done

load=(--addr $addr --cpus 1 --connections "$conns" --size "$size" --framing "$framing"
      --warmup "$warmup" --duration "$duration" --label "$server" --server-pid "$pid" --server-cpus 0)
if [ -n "$rate" ]; then load+=(--rate "$rate"); else load+=(--depth "$depth"); fi
taskset -c 1 target/release/loadgen "${load[@]}" > "$out/loadgen.log" 2>&1 &
lg=$!
sleep "$warmup"
events=syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_queue_async_work,io_uring:io_uring_poll_arm,io_uring:io_uring_task_work_run,io_uring:io_uring_local_work_run,context-switches
span=$(awk -v d="$duration" 'BEGIN {print d - 0.5}')
perf stat -a -C 0 -x, -e "$events" -o "$out/perf-stat.csv" -- sleep "$span" &
ps=$!
if [ "$record" = 1 ]; then
    perf record -a -C 0 -g -F 2999 -o "$out/perf.data" -- sleep "$span" > /dev/null 2>&1 &
    pr=$!
fi
wait $ps
[ "$record" = 1 ] && wait $pr
wait $lg || true
kill -TERM $pid 2>/dev/null || true
wait $pid 2>/dev/null || true

grep -v '^{' "$out/loadgen.log"
msgs_per_sec=$(sed -n 's/.*"msgs_per_sec":\([0-9.]*\).*/\1/p' "$out/loadgen.log")
echo
echo "events on CPU 0 per message ($msgs_per_sec msgs/s, over $span s):"
awk -F, -v r="$msgs_per_sec" -v s="$span" '$1 ~ /^[0-9]+$/ && $1 > 0 {
    printf "  %-40s %10.3f per msg %14d\n", $3, $1 / (r * s), $1 }' "$out/perf-stat.csv"
if [ "$record" = 1 ]; then
    echo
    echo "top symbols on CPU 0 (self time):"
    perf report -i "$out/perf.data" --no-children --sort sym --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -40 | tee "$out/top.txt"
fi
