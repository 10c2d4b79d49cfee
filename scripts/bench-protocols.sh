#!/usr/bin/env bash
# Side-by-side protocol benchmarks: ringwire's kv example against redis-server, and its http
# example against nginx, both baselines from Debian's packages with the configurations in
# benches/configs/. Each server is pinned to SERVER_CPU (default 0) and runs on one core;
# the client is pinned to CLIENT_CPU (default 1). Servers alternate within each round; every
# figure reported is the median over ROUNDS rounds.
#
# Measured per run: requests/s and latency percentiles (as the client reports them), the
# server's CPU time (utime+stime of all its threads and processes, from /proc, over the run)
# and the client's CPU time (from `times`), each divided by the number of requests.
#
# Also measured: the kv example's two ways of sharing its keys at 2 cores (`--sharding locks`,
# one store behind sharded locks, against `--sharding cores`, each key owned by one core and
# commands sent to it).
#
# Installs redis-server, nginx, redis-tools and wrk when missing (apt-get; run as root).
# Usage: scripts/bench-protocols.sh            (all; ~6 min with the defaults)
#        ROUNDS=3 WRK_SECS=5 scripts/bench-protocols.sh
# Output: a summary on stdout, raw client output and results.tsv under results/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CLIENTS=${CLIENTS:-50}           # redis-benchmark connections
PIPE_N=${PIPE_N:-1000000}        # requests per pipelined redis-benchmark run (-P 16)
PLAIN_N=${PLAIN_N:-150000}       # requests per unpipelined run
WRK_CONNS=${WRK_CONNS:-50}
WRK_SECS=${WRK_SECS:-5}
SHARING=${SHARING:-1}            # 0 skips the 2-core sharding runs
KV_PORT=16379
REDIS_PORT=16380
HTTP_PORT=18080
NGINX_PORT=18081

OUT="results/bench-protocols-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ringwire-bench.XXXXXX)
chmod 755 "$WORK" # nginx's workers run as nobody
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- Setup ---------------------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench-protocols: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the packaged services; the benchmark runs its own.
    service redis-server stop >/dev/null 2>&1 || true
    service nginx stop >/dev/null 2>&1 || true
fi
scripts/install-test-deps.sh
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --example kv --example http >&2
KV=target/release/examples/kv
HTTP=target/release/examples/http
TCK=$(getconf CLK_TCK)

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo || true)"
    echo "ringwire: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)')"
    echo "redis-server: $(redis-server --version) (package $(dpkg-query -W -f '${Version}' redis-server 2>/dev/null))"
    echo "redis-benchmark: $(redis-benchmark --version 2>/dev/null | head -1 || echo '?') (package $(dpkg-query -W -f '${Version}' redis-tools 2>/dev/null))"
    echo "nginx: $("$NGINX" -v 2>&1) (package $(dpkg-query -W -f '${Version}' nginx 2>/dev/null))"
    echo "wrk: $(wrk --version 2>&1 | head -1) (package $(dpkg-query -W -f '${Version}' wrk 2>/dev/null))"
    echo "server CPU $SERVER_CPU, client CPU $CLIENT_CPU, $ROUNDS rounds"
} | tee "$OUT/versions.txt" >&2

# ---- Helpers -------------------------------------------------------------------------------
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# Clock ticks (utime+stime) of the given processes, all threads included.
ticks() {
    local total=0 pid t
    for pid in "$@"; do
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

# Children's CPU seconds from the second line of `times`.
child_cpu() {
    sed -n 2p "$1" | awk '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] }
        printf "%.3f", s
    }'
}

SERVER_PIDS=()
start_server() { # name
    local conf
    case "$1" in
    kv)
        taskset -c "$SERVER_CPU" "$KV" --addr "127.0.0.1:$KV_PORT" --cpus "$SERVER_CPU" >"$WORK/kv.log" 2>&1 &
        SERVER_PIDS=($!); PIDS+=($!); wait_port $KV_PORT ;;
    kv2-locks|kv2-cores)
        "$KV" --addr "127.0.0.1:$KV_PORT" --cores 2 --sharding "${1#kv2-}" >"$WORK/kv.log" 2>&1 &
        SERVER_PIDS=($!); PIDS+=($!); wait_port $KV_PORT ;;
    redis)
        conf="$WORK/redis.conf"
        sed -e "s|@PORT@|$REDIS_PORT|g" -e "s|@DIR@|$WORK|g" benches/configs/redis.conf >"$conf"
        taskset -c "$SERVER_CPU" redis-server "$conf" &
        SERVER_PIDS=($!); PIDS+=($!); wait_port $REDIS_PORT ;;
    http)
        taskset -c "$SERVER_CPU" "$HTTP" --addr "127.0.0.1:$HTTP_PORT" --cpus "$SERVER_CPU" >"$WORK/http.log" 2>&1 &
        SERVER_PIDS=($!); PIDS+=($!); wait_port $HTTP_PORT ;;
    nginx)
        conf="$WORK/nginx.conf"
        sed -e "s|@PORT@|$NGINX_PORT|g" -e "s|@DIR@|$WORK|g" benches/configs/nginx.conf >"$conf"
        taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK" -c "$conf" -e "$WORK/nginx-error.log" &
        local master=$!
        PIDS+=($master); wait_port $NGINX_PORT
        local workers=""
        for _ in $(seq 100); do
            workers=$(pgrep -P "$master" || true)
            [ -n "$workers" ] && break
            sleep 0.05
        done
        # shellcheck disable=SC2206
        SERVER_PIDS=($master $workers) ;;
    esac
}

stop_server() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${SERVER_PIDS[0]}" 2>/dev/null || true
    sleep 0.2
}

port_of() {
    case "$1" in
    kv*) echo $KV_PORT ;; redis) echo $REDIS_PORT ;; http) echo $HTTP_PORT ;; nginx) echo $NGINX_PORT ;;
    esac
}

RESULTS="$OUT/results.tsv"
echo -e "round\tbench\tserver\trequests\trps\tp50_ms\tp99_ms\tserver_cpu_s\tclient_cpu_s" >"$RESULTS"

# redis-benchmark against a running server: round bench server test pipeline n [extra...]
run_redis_bench() {
    local round=$1 bench=$2 server=$3 test=$4 pipe=$5 n=$6
    shift 6
    local name="$OUT/r$round-$bench-$server"
    local t0 t1
    t0=$(ticks "${SERVER_PIDS[@]}")
    (
        taskset -c "$CLIENT_CPU" redis-benchmark -p "$(port_of "$server")" -c "$CLIENTS" -n "$n" \
            -P "$pipe" -t "$test" --csv "$@" >"$name.out" 2>&1
        times >"$name.times"
    )
    t1=$(ticks "${SERVER_PIDS[@]}")
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    local line
    line=$(grep -i "^\"$test\"" "$name.out" | tail -1 | tr -d '"')
    if [ -z "$line" ] || grep -qi error "$name.out"; then
        echo "redis-benchmark failed against $server:" >&2
        cat "$name.out" >&2
        exit 1
    fi
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
    echo -e "$round\t$bench\t$server\t$n\t$rps\t$p50\t$p99\t$(awk "BEGIN{printf \"%.3f\", ($t1-$t0)/$TCK}")\t$(child_cpu "$name.times")" >>"$RESULTS"
}

# wrk against a running server: round server
run_wrk() {
    local round=$1 server=$2
    local name="$OUT/r$round-http-$server"
    local t0 t1
    t0=$(ticks "${SERVER_PIDS[@]}")
    (
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$WRK_CONNS" -d"${WRK_SECS}s" --timeout 5s --latency \
            "http://127.0.0.1:$(port_of "$server")/" >"$name.out" 2>&1
        times >"$name.times"
    )
    t1=$(ticks "${SERVER_PIDS[@]}")
    if grep -qE "Socket errors|Non-2xx" "$name.out"; then
        echo "wrk saw errors against $server:" >&2
        cat "$name.out" >&2
        exit 1
    fi
    local requests rps p50 p99
    requests=$(awk '/ requests in /{print $1}' "$name.out")
    rps=$(awk '/^Requests\/sec:/{print $2}' "$name.out")
    # Latency distribution lines: "50%  312.00us"; to milliseconds.
    to_ms='{ v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
             if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.3f", v }'
    p50=$(awk "/^ +50%/$to_ms" "$name.out")
    p99=$(awk "/^ +99%/$to_ms" "$name.out")
    echo -e "$round\thttp\t$server\t$requests\t$rps\t$p50\t$p99\t$(awk "BEGIN{printf \"%.3f\", ($t1-$t0)/$TCK}")\t$(child_cpu "$name.times")" >>"$RESULTS"
}

# ---- Runs ----------------------------------------------------------------------------------
# Both servers of a comparison run side by side (the idle one costs nothing) and take turns
# test by test, in an order that alternates between rounds, so that each pair of figures is
# measured close in time: this machine's speed drifts (other tenants), and the per-round
# ratios are steadier than the absolute figures.
pair_start() { # a b: both servers, SERVER_PIDS of each kept apart
    start_server "$1"; A_PIDS=("${SERVER_PIDS[@]}")
    start_server "$2"; B_PIDS=("${SERVER_PIDS[@]}")
}
pair_stop() {
    SERVER_PIDS=("${A_PIDS[@]}"); stop_server
    SERVER_PIDS=("${B_PIDS[@]}"); stop_server
}
pair_run() { # round a b command...: runs `command... server` for a and b, order by round
    local round=$1 a=$2 b=$3
    shift 3
    local order=("$a" "$b")
    [ $((round % 2)) -eq 0 ] && order=("$b" "$a")
    local s
    for s in "${order[@]}"; do
        if [ "$s" = "$a" ]; then SERVER_PIDS=("${A_PIDS[@]}"); else SERVER_PIDS=("${B_PIDS[@]}"); fi
        "$@" "$s"
    done
}
redis_test() { # round bench test pipe n extra... server
    local args=("$@")
    local server=${args[-1]}
    unset 'args[-1]'
    run_redis_bench "${args[0]}" "${args[1]}" "$server" "${args[2]}" "${args[3]}" "${args[4]}" "${args[@]:5}"
}
wrk_test() { # round server
    run_wrk "$1" "$2"
}

for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    pair_start kv redis
    for test in get set; do
        pair_run "$round" kv redis redis_test "$round" "$test-P16" "$test" 16 "$PIPE_N"
        pair_run "$round" kv redis redis_test "$round" "$test-P1" "$test" 1 "$PLAIN_N"
    done
    pair_stop
    pair_start http nginx
    pair_run "$round" http nginx wrk_test "$round"
    pair_stop
    if [ "$SHARING" = 1 ]; then
        # Two server cores: the client cannot have a core of its own here; it floats.
        saved_client=$CLIENT_CPU
        CLIENT_CPU=0-$(($(nproc) - 1))
        for b in onekey 100kkeys; do
            extra=()
            [ $b = 100kkeys ] && extra=(-r 100000)
            for test in get set; do
                for server in kv2-locks kv2-cores; do
                    start_server "$server"
                    run_redis_bench "$round" "$test-P16-$b" "$server" "$test" 16 "$PIPE_N" "${extra[@]}"
                    stop_server
                done
            done
        done
        CLIENT_CPU=$saved_client
    fi
done

# ---- Summary: medians over the rounds ------------------------------------------------------
median() { sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { # bench server column
    awk -F'\t' -v b="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == b && $3 == s { print $c }' "$RESULTS" | median
}
per_req() { # bench server column -> microseconds of CPU per request (median of per-run values)
    awk -F'\t' -v b="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == b && $3 == s { printf "%.4f\n", $c / $4 * 1e6 }' "$RESULTS" | median
}
summary() { # bench server...
    local bench=$1
    shift
    local s
    for s in "$@"; do
        printf "| %-17s | %-11s | %10.0f | %7.3f | %7.3f | %8.3f | %8.3f |\n" "$bench" "$s" \
            "$(col "$bench" "$s" 5)" "$(col "$bench" "$s" 6)" "$(col "$bench" "$s" 7)" \
            "$(per_req "$bench" "$s" 8)" "$(per_req "$bench" "$s" 9)"
    done
}
# Median over the rounds of the per-round ratio a/b of column c (per request for CPU).
round_ratio() { # bench a b column per_request(0|1)
    awk -F'\t' -v b="$1" -v x="$2" -v y="$3" -v c="$4" -v pr="$5" '
        NR > 1 && $2 == b && ($3 == x || $3 == y) { v = pr ? $c / $4 : $c; val[$1, $3] = v; rounds[$1] = 1 }
        END { for (r in rounds) if ((r, x) in val && (r, y) in val && val[r, y] > 0) printf "%.4f\n", val[r, x] / val[r, y] }
    ' "$RESULTS" | median
}
ratio() { # bench a b
    awk -v b="$1" -v x="$2" -v y="$3" -v r="$(round_ratio "$1" "$2" "$3" 5 0)" \
        -v c="$(round_ratio "$1" "$2" "$3" 8 1)" -v k="$(round_ratio "$1" "$2" "$3" 9 1)" \
        'BEGIN { printf "| %-17s | %s/%s | %.2fx | %.2fx | %.2fx |\n", b, x, y, r, c, k }'
}
{
    echo
    echo "Medians of $ROUNDS rounds; server CPU $SERVER_CPU, client CPU $CLIENT_CPU."
    echo "CPU columns: microseconds of CPU time per request (utime+stime over the run / requests)."
    echo
    echo "| benchmark         | server      | requests/s |  p50 ms |  p99 ms | srv CPU/req µs | client CPU/req µs |"
    echo "|-------------------|-------------|------------|---------|---------|----------|----------|"
    for b in get-P16 set-P16 get-P1 set-P1; do summary "$b" kv redis; done
    summary http http nginx
    echo
    echo "Ratios: the median over the rounds of each round's ratio."
    echo
    echo "| benchmark         | ratio | requests/s | server CPU/request | client CPU/request |"
    echo "|-------------------|-------|------------|--------------------|--------------------|"
    for b in get-P16 set-P16 get-P1 set-P1; do ratio "$b" kv redis; done
    ratio http http nginx
    if [ "$SHARING" = 1 ]; then
        echo
        echo "Sharding the keys at 2 server cores (client unpinned, same 2 CPUs):"
        echo
        echo "| benchmark         | server      | requests/s |  p50 ms |  p99 ms | srv CPU/req µs | client CPU/req µs |"
        echo "|-------------------|-------------|------------|---------|---------|----------|----------|"
        for b in get-P16-onekey set-P16-onekey get-P16-100kkeys set-P16-100kkeys; do
            summary "$b" kv2-locks kv2-cores
        done
        echo
        echo "| benchmark         | ratio | requests/s | server CPU/request | client CPU/request |"
        echo "|-------------------|-------|------------|--------------------|--------------------|"
        for b in get-P16-onekey set-P16-onekey get-P16-100kkeys set-P16-100kkeys; do
            ratio "$b" kv2-locks kv2-cores
        done
    fi
} | tee "$OUT/summary.md"
echo "raw output in $OUT" >&2
