#!/usr/bin/env bash
# The per-core echo benchmark: ringwire against the floor (plain io-uring), tokio, tokio-uring
# and ringwire on its epoll driver, with ringwire's own load generator.
#
# For each server core count N (1, 2, 4, 8 where the machine has 2N CPUs), every server runs
# pinned to CPUs 0..N-1 and the load generator to CPUs N..2N-1 (taskset plus the programs' own
# --cpus). Servers run alternately (A B C D E A B C D E ...) so that drift hits all alike; each
# run starts a fresh server, warms up, then measures. Results land in results/echo-<timestamp>/:
# runs.jsonl (one loadgen JSON line per run), idle.jsonl, logs/, hist/ (.hist and .hgrm per
# run), one SVG per case and core count, machine.txt and summary.md (the tables, also printed).
#
# Cases (names fixed: the summary's targets refer to them):
#   raw64      closed loop, raw, 64 B, 50 connections per server core x 8 in flight
#   raw4k      closed loop, raw, 4 KiB, 50 connections per server core x 2 in flight
#   len32-512  closed loop, len32, 512 B payload, 50 connections per server core x 8 in flight
#   low-load   open loop, raw, 64 B, 60,000 msgs/s in all over 50 connections
#   half-max   open loop, raw, 64 B, half of tokio's median raw64 msgs/s (this run's), 50 per core
# Then 10,000 idle connections per server: RSS per connection and idle CPU over 10 s.
#
# Usage:
#   scripts/bench-echo.sh            full: 5 rounds, 2 s warm-up + 8 s measured per run
#   scripts/bench-echo.sh --quick    smoke run: 1 round, 1 s + 2 s per run
#   scripts/bench-echo.sh --device   16-core machine, about 6 minutes: raw64 and low-load at
#                                    1, 2, 4, 8 cores, 3 rounds, no epoll row, no idle test
# Options: --no-build (use the binaries in --bin-dir, fail if missing), --bin-dir DIR
# (default target/release), --stage DIR (build, copy stripped binaries to DIR, exit),
# --rounds N, --warmup S, --duration S, --cores "1 2", --cases "raw64 low-load",
# --servers "ringwire tokio" (also ringwire-base: another build's echo example placed at
# <bin-dir>/examples/echo-base, for an A/B of two commits), --no-idle, --no-quiet (do not wait for idle CPUs before runs),
# --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full build=1 bin_dir=target/release stage="" out=""
rounds="" warmup="" duration="" cores="" cases="" servers="" idle=1 quiet=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) mode=quick ;;
        --device) mode=device ;;
        --no-build) build=0 ;;
        --bin-dir) bin_dir=$2; shift ;;
        --stage) stage=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --duration) duration=$2; shift ;;
        --cores) cores=$2; shift ;;
        --cases) cases=$2; shift ;;
        --servers) servers=$2; shift ;;
        --no-idle) idle=0 ;;
        --no-quiet) quiet=0 ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-echo: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ncpu=$(nproc)
all_cases="raw64 raw4k len32-512 low-load half-max"
all_servers="ringwire ringwire-epoll floor tokio tokio-uring"
case $mode in
    full)   : "${rounds:=5}" "${warmup:=2}" "${duration:=8}"; idle_measure=10 ;;
    quick)  : "${rounds:=1}" "${warmup:=1}" "${duration:=2}"; idle_measure=3 ;;
    device) : "${rounds:=3}" "${warmup:=1}" "${duration:=2}"; idle_measure=10
            : "${cases:=raw64 low-load}" "${servers:=ringwire floor tokio tokio-uring}"
            : "${cores:=1 2 4 8}"; idle=0; quiet=0 ;;
esac
: "${cases:=$all_cases}" "${servers:=$all_servers}"
if [ -z "$cores" ]; then
    for n in 1 2 4 8; do [ $((2 * n)) -le "$ncpu" ] && cores="$cores $n"; done
    cores=${cores# }
fi
[ -n "$cores" ] || { echo "bench-echo: needs at least 2 CPUs" >&2; exit 2; }

bins="examples/echo loadgen echo-floor echo-tokio echo-tokio-uring"
if [ "$build" = 1 ]; then
    cargo build --release --example echo -p ringwire
    cargo build --release -p ringwire-bench --bins
fi
if [ -n "$stage" ]; then
    mkdir -p "$stage/examples"
    for b in $bins; do cp "target/release/$b" "$stage/$b"; strip "$stage/$b" 2>/dev/null || true; done
    du -sh "$stage"
    exit 0
fi
for b in $bins; do
    [ -x "$bin_dir/$b" ] || { echo "bench-echo: $bin_dir/$b missing (build, or drop --no-build)" >&2; exit 2; }
done
loadgen=$bin_dir/loadgen

out=${out:-results/echo-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out/logs" "$out/hist"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo -)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "mode: $mode, rounds $rounds, warm-up $warmup s, measured $duration s, server cores: $cores"
    echo "rustc: $(rustc --version 2>/dev/null || echo -)"
    lscpu
} > "$out/machine.txt"
[ "$mode" = device ] && cat "$out/machine.txt"
echo "bench-echo: $mode mode; results in $out"

port=7300
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
. scripts/bench/servers.sh

# start_server NAME CPUS FRAMING LOG: starts the server pinned to CPUS; sets server_pid, addr.
start_server() {
    local name=$1 cpus=$2 framing=$3 log=$4 bin envs
    port=$((port + 1)); [ $port -gt 7900 ] && port=7301
    addr=127.0.0.1:$port
    server_bin "$name" || { echo "bench-echo: unknown server $name" >&2; exit 2; }
    RUST_LOG=warn taskset -c "$cpus" env $envs "$bin_dir/$bin" --addr "$addr" --cpus "$cpus" \
        --framing "$framing" > "$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench-echo: $name did not start; skipped:" >&2; tail -3 "$log" >&2
    kill -9 "$server_pid" 2>/dev/null || true
    server_pid=""
    return 1
}

stop_server() {
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# The median msgs/s of tokio in raw64 at N cores, from this run's lines.
tokio_max() {
    grep '"case":"raw64"' "$out/runs.jsonl" 2>/dev/null | grep '"label":"tokio"' \
        | grep "\"server_cpus\":\[$(seq -s, 0 $(($1 - 1)))\]" \
        | sed 's/.*"msgs_per_sec":\([0-9.]*\).*/\1/' | sort -g \
        | awk '{v[NR]=$1} END {if (NR) print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'
}

total=0
for n in $cores; do for c in $cases; do total=$((total + rounds * $(echo $servers | wc -w))); done; done
done_runs=0
for n in $cores; do
    scpus=$(seq -s, 0 $((n - 1)))
    if [ $((2 * n)) -le "$ncpu" ]; then ccpus=$(seq -s, "$n" $((2 * n - 1))); else ccpus=$(seq -s, "$n" $((ncpu - 1))); fi
    nclient=$(echo "$ccpus" | tr ',' '\n' | wc -l)
    for case in $cases; do
        framing=raw size=64 depth=8 conns=$((50 * n)) rate=""
        case $case in
            raw64) ;;
            raw4k) size=4096 depth=2 ;;
            len32-512) framing=len32 size=512 ;;
            low-load) conns=50 rate=60000 ;;
            half-max)
                max=$(tokio_max "$n")
                if [ -z "$max" ]; then echo "bench-echo: half-max needs tokio's raw64 runs first; skipped" >&2; continue; fi
                rate=$(awk -v m="$max" 'BEGIN {printf "%.0f", m / 2}') ;;
            *) echo "bench-echo: unknown case $case" >&2; exit 2 ;;
        esac
        # Connections must split evenly over the client's CPUs.
        conns=$(( (conns + nclient - 1) / nclient * nclient ))
        for r in $(seq "$rounds"); do
            for s in $servers; do
                done_runs=$((done_runs + 1))
                tag=$case-${n}c-$s-r$r
                # A run during which other processes used over 10% of a CPU is set aside in
                # disturbed.jsonl and run again, twice at most.
                for attempt in 1 2 3; do
                    if [ "$quiet" = 1 ]; then
                        "$loadgen" quiet --cpus "$(seq -s, 0 $((ncpu - 1)))" --max-busy 0.1 --timeout 10 \
                            || echo "bench-echo: machine busy before $tag; running anyway" >&2
                    fi
                    start_server "$s" "$scpus" "$framing" "$out/logs/$tag.server.log" || break
                    load=(--addr "$addr" --cpus "$ccpus" --connections "$conns" --size "$size"
                          --framing "$framing" --warmup "$warmup" --duration "$duration"
                          --label "$s" --case "$case" --round "$r"
                          --server-pid "$server_pid" --server-cpus "$scpus"
                          --hist-out "$out/hist/$tag.hist" --hgrm "$out/hist/$tag.hgrm")
                    if [ -n "$rate" ]; then load+=(--rate "$rate"); else load+=(--depth "$depth"); fi
                    if ! taskset -c "$ccpus" "$loadgen" "${load[@]}" > "$out/logs/$tag.log" 2>&1; then
                        echo "bench-echo: loadgen failed for $tag:" >&2; tail -5 "$out/logs/$tag.log" >&2
                    fi
                    stop_server
                    line=$(grep '^{' "$out/logs/$tag.log" || true)
                    others=$(echo "$line" | sed -n 's/.*"others_cpu":\([0-9.]*\).*/\1/p')
                    if [ "$quiet" = 1 ] && [ "$attempt" -lt 3 ] && [ -n "$others" ] \
                        && awk -v o="$others" 'BEGIN {exit !(o > 0.1)}'; then
                        echo "$line" >> "$out/disturbed.jsonl"
                        echo "bench-echo: $tag disturbed (other processes used $others cores); again" >&2
                        continue
                    fi
                    [ -n "$line" ] && echo "$line" >> "$out/runs.jsonl"
                    break
                done
                printf '[%d/%d] %-28s %s\n' "$done_runs" "$total" "$tag" \
                    "$(grep -o '^[0-9]* messages: [0-9]* msgs/s' "$out/logs/$tag.log" || echo '(no result)')"
            done
        done
        plot=()
        for s in $servers; do
            for f in "$out"/hist/"$case-${n}c-$s"-r*.hist; do [ -s "$f" ] && plot+=("$s=$f"); done
        done
        [ ${#plot[@]} -gt 0 ] && "$loadgen" plot --title "echo $case, $n server core(s), all rounds" \
            --out "$out/$case-${n}c.svg" "${plot[@]}"
    done
done

if [ "$idle" = 1 ]; then
    ccpus=$(seq -s, 1 $((ncpu - 1)))
    for s in $servers; do
        [ "$quiet" = 1 ] && { "$loadgen" quiet --cpus "$(seq -s, 0 $((ncpu - 1)))" --max-busy 0.1 --timeout 30 || true; }
        start_server "$s" 0 raw "$out/logs/idle-$s.server.log" || continue
        sleep 0.5
        if ! taskset -c "$ccpus" "$loadgen" idle --addr "$addr" --cpus "$ccpus" --connections 10000 \
            --server-pid "$server_pid" --measure "$idle_measure" --hold 0 --label "$s" \
            > "$out/logs/idle-$s.log" 2>&1; then
            echo "bench-echo: idle test failed for $s:" >&2; tail -5 "$out/logs/idle-$s.log" >&2
        fi
        grep '^{' "$out/logs/idle-$s.log" >> "$out/idle.jsonl" || true
        stop_server
        echo "idle $s: $(grep -E 'bytes per connection|while idle' "$out/logs/idle-$s.log" | tr '\n' ' ')"
    done
fi

"$loadgen" summarize "$out" | tee "$out/summary.md"
echo
echo "bench-echo: results in $out"
