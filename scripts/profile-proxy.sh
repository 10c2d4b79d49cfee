#!/usr/bin/env bash
# Where the proxy's time goes: `perf record -g` on the proxy example and on nutcracker, each in
# turn, while redis-benchmark runs GETs (-r KEYS; -P 16, then -P 1) through it. Also counted
# over each recording: the GETs and the reads the backends did (Redis's
# total_reads_processed), which shows how a proxy batches its requests to the backends. The setup is
# scripts/bench-protocols.sh's proxy case: three redis-server backends and the client on CPU 1,
# the proxy (`--cores 1`) and nutcracker on CPU 0, the backends filled with the keys first.
# Needs perf (Debian: linux-perf) and root (or perf_event_paranoid <= 1).
# Usage: scripts/profile-proxy.sh              (SECS=5 KEYS=100000 PIPES="16 1")
# Output: perf.data and reports (by shared object, top symbols, both with the process's
# requests counted) under results/profile-proxy-*/.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-5}
KEYS=${KEYS:-100000}
PIPES=${PIPES:-16 1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PROXY_PORT=16390
NUTCRACKER_PORT=16391
BACKEND_PORTS=(16401 16402 16403)
NUTCRACKER=$(command -v nutcracker || echo /usr/sbin/nutcracker)
command -v perf >/dev/null || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 1; }

OUT="results/profile-proxy-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ringwire-profile.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --example proxy >&2
PROXY=${CARGO_TARGET_DIR:-target}/release/examples/proxy

# Context switches of a process so far, all its threads.
switches() {
    cat /proc/"$1"/task/*/status | awk '/ctxt_switches:/ { s += $2 } END { print s }'
}

# GETs the three backends have executed so far, and the reads they did: "GETS READS".
gets() {
    local port g=0 r=0 n
    for port in "${BACKEND_PORTS[@]}"; do
        n=$(redis-cli -p "$port" info commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_get:/ { print $3 }')
        g=$((g + ${n:-0}))
        n=$(redis-cli -p "$port" info stats | tr -d '\r' | awk -F: '/^total_reads_processed:/ { print $2 }')
        r=$((r + ${n:-0}))
    done
    echo "$g $r"
}

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

backends=()
for port in "${BACKEND_PORTS[@]}"; do
    mkdir -p "$WORK/b$port"
    taskset -c "$CLIENT_CPU" redis-server --port "$port" --bind 127.0.0.1 --save '' \
        --appendonly no --protected-mode no --dir "$WORK/b$port" --logfile "$WORK/b$port/log" &
    PIDS+=($!)
    backends+=(--backend "127.0.0.1:$port")
done
for port in "${BACKEND_PORTS[@]}"; do wait_port "$port"; done

{
    echo "bench:"
    echo "  listen: 127.0.0.1:$NUTCRACKER_PORT"
    echo "  hash: fnv1a_64"
    echo "  distribution: ketama"
    echo "  redis: true"
    echo "  auto_eject_hosts: false"
    echo "  server_connections: 1"
    echo "  servers:"
    for port in "${BACKEND_PORTS[@]}"; do echo "   - 127.0.0.1:$port:1"; done
} >"$WORK/nutcracker.yml"
taskset -c "$SERVER_CPU" "$NUTCRACKER" -c "$WORK/nutcracker.yml" -s 16392 -a 127.0.0.1 \
    -o "$WORK/nutcracker.log" &
NUT_PID=$!
PIDS+=($NUT_PID)
taskset -c "$SERVER_CPU" "$PROXY" --addr "127.0.0.1:$PROXY_PORT" --cores 1 --hash ketama \
    "${backends[@]}" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=($PROXY_PID)
wait_port $NUTCRACKER_PORT
wait_port $PROXY_PORT

taskset -c "$CLIENT_CPU" redis-benchmark -p $NUTCRACKER_PORT -c 50 -n $((KEYS * 10)) -P 16 \
    -r "$KEYS" -t set -q >/dev/null 2>&1

for pipe in $PIPES; do
for server in proxy nutcracker; do
    if [ $server = proxy ]; then pid=$PROXY_PID port=$PROXY_PORT; else pid=$NUT_PID port=$NUTCRACKER_PORT; fi
    name=$server-P$pipe
    # More requests than SECS can take; the client is stopped once perf is done.
    taskset -c "$CLIENT_CPU" redis-benchmark -p $port -c 50 -n 100000000 -P "$pipe" -r "$KEYS" \
        -t get --csv >"$OUT/$name-client.out" 2>&1 &
    client=$!
    sleep 1
    read -r g0 r0 <<<"$(gets)"
    t0=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    x0=$(switches "$pid")
    perf record -F 2000 -g -p "$pid" -o "$OUT/$name.perf.data" -- sleep "$SECS" 2>"$OUT/$name.perf.log"
    t1=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    x1=$(switches "$pid")
    read -r g1 r1 <<<"$(gets)"
    kill "$client" 2>/dev/null || true
    wait "$client" 2>/dev/null || true
    {
        echo "$name: the backends executed $((g1 - g0)) GETs in $((r1 - r0)) reads during the" \
            "recording ($SECS s); $server's CPU time $(( (t1 - t0) * 1000 / $(getconf CLK_TCK) )) ms" \
            "($(awk "BEGIN { printf \"%.2f\", ($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / ($g1 - $g0) }") µs per GET, perf's overhead included);" \
            "$((x1 - x0)) context switches ($(awk "BEGIN { printf \"%.3f\", ($x1 - $x0) / ($g1 - $g0) }") per GET)"
        # (head ends the pipes early: no pipefail here.)
        set +o pipefail
        perf report -i "$OUT/$name.perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -15
        echo
        perf report -i "$OUT/$name.perf.data" --no-children --sort sym --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -40
        set -o pipefail
        echo
    } | tee "$OUT/$name.report.txt"
done
done
echo "raw output in $OUT" >&2
