#!/usr/bin/env bash
# Side-by-side protocol benchmarks: ringwire's kv example against redis-server, its http
# example against nginx, and its Redis proxy against twemproxy (nutcracker) in front of three
# redis-servers; the baselines from Debian's packages with the configurations in
# benches/configs/ (nutcracker's is written here). Each server is pinned to SERVER_CPU
# (default 0) and runs on one core; the client is pinned to CLIENT_CPU (default 1). Servers
# alternate within each round; every figure reported is the median over ROUNDS rounds.
#
# Measured per run: requests/s and latency percentiles (as the client reports them), the
# server's CPU time (utime+stime of all its threads and processes, from /proc, over the run)
# and the client's CPU time (from `times`), each divided by the number of requests.
#
# Cases (`--cases a,b`; all by default):
#   kv       kv against redis-server: redis-benchmark GET and SET, -P 16 and -P 1
#   http     http against nginx: wrk
#   sharing  the kv example's two ways of sharing its keys at 2 cores (`--sharding locks`,
#            one store behind sharded locks, against `--sharding cores`, each key owned by one
#            core and commands sent to it); SHARING=0 also skips it
#   proxy    the proxy example (`--cores 1`) against nutcracker (one pool, fnv1a_64, ketama,
#            server_connections 1), both over the same three redis-server backends, which run
#            on BACKEND_CPU (default CLIENT_CPU) and are filled with the 100,000 keys first;
#            redis-benchmark -r 100000 SET, GET and MGET of 10 keys, -P 16 and -P 1. Also
#            measured: the backends' CPU and the commands they executed, per client request.
#
# Installs redis-server, nginx, redis-tools, nutcracker and wrk when missing (apt-get; run as
# root).
# Usage: scripts/bench-protocols.sh            (all; ~13 min with the defaults)
#        ROUNDS=3 WRK_SECS=5 scripts/bench-protocols.sh
#        ROUNDS=5 scripts/bench-protocols.sh --cases proxy
# Output: a summary on stdout, raw client output and results.tsv under results/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh

CASES=kv,http,sharing,proxy
while [ $# -gt 0 ]; do
    case "$1" in
    --cases) CASES=$2; shift 2 ;;
    --cases=*) CASES=${1#--cases=}; shift ;;
    *) echo "usage: $0 [--cases kv,http,sharing,proxy]" >&2; exit 2 ;;
    esac
done
has_case() { [[ ",$CASES," == *",$1,"* ]]; }
for c in ${CASES//,/ }; do
    case "$c" in kv|http|sharing|proxy) ;; *) echo "unknown case: $c" >&2; exit 2 ;; esac
done

ROUNDS=${ROUNDS:-7}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CLIENTS=${CLIENTS:-50}           # redis-benchmark connections
PIPE_N=${PIPE_N:-1000000}        # requests per pipelined redis-benchmark run (-P 16)
PLAIN_N=${PLAIN_N:-150000}       # requests per unpipelined run
WRK_CONNS=${WRK_CONNS:-50}
WRK_SECS=${WRK_SECS:-5}
SHARING=${SHARING:-1}            # 0 skips the 2-core sharding runs
has_case sharing || SHARING=0
BACKEND_CPU=${BACKEND_CPU:-$CLIENT_CPU} # the proxy case's three redis-server backends
KEYS=${KEYS:-100000}             # the proxy case's key space (redis-benchmark -r)
# Requests per proxy-case run, about 2 to 5 s each here (300k/s and 30k/s through a proxy):
PROXY_PIPE_N=${PROXY_PIPE_N:-1000000}           # SET/GET -P 16
PROXY_PLAIN_N=${PROXY_PLAIN_N:-90000}           # SET/GET -P 1
PROXY_MGET_PIPE_N=${PROXY_MGET_PIPE_N:-200000}  # MGET of 10 keys, -P 16
PROXY_MGET_PLAIN_N=${PROXY_MGET_PLAIN_N:-80000} # MGET of 10 keys, -P 1
KV_PORT=16379
REDIS_PORT=16380
HTTP_PORT=18080
NGINX_PORT=18081
PROXY_PORT=16390
NUTCRACKER_PORT=16391
NUTCRACKER_STATS_PORT=16392
BACKEND_PORTS=(16401 16402 16403)

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
command -v nutcracker >/dev/null || [ -x /usr/sbin/nutcracker ] || missing+=(nutcracker)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench-protocols: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the packaged services; the benchmark runs its own.
    service redis-server stop >/dev/null 2>&1 || true
    service nginx stop >/dev/null 2>&1 || true
    service nutcracker stop >/dev/null 2>&1 || true
fi
scripts/install-test-deps.sh
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
NUTCRACKER=$(command -v nutcracker || echo /usr/sbin/nutcracker)
examples=()
if has_case kv || has_case http || has_case sharing; then examples+=(--example kv --example http); fi
has_case proxy && examples+=(--example proxy)
cargo build --release "${examples[@]}" >&2
TARGET=${CARGO_TARGET_DIR:-target}
KV=$TARGET/release/examples/kv
HTTP=$TARGET/release/examples/http
PROXY=$TARGET/release/examples/proxy
TCK=$(getconf CLK_TCK)

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo || true)"
    echo "ringwire: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)')"
    echo "redis-server: $(redis-server --version) (package $(dpkg-query -W -f '${Version}' redis-server 2>/dev/null))"
    echo "redis-benchmark: $(redis-benchmark --version 2>/dev/null | head -1 || echo '?') (package $(dpkg-query -W -f '${Version}' redis-tools 2>/dev/null))"
    echo "nginx: $("$NGINX" -v 2>&1) (package $(dpkg-query -W -f '${Version}' nginx 2>/dev/null))"
    echo "wrk: $(wrk --version 2>&1 | head -1) (package $(dpkg-query -W -f '${Version}' wrk 2>/dev/null))"
    echo "nutcracker: $("$NUTCRACKER" --version 2>&1 | head -1) (package $(dpkg-query -W -f '${Version}' nutcracker 2>/dev/null))"
    echo "cases $CASES; server CPU $SERVER_CPU, client CPU $CLIENT_CPU, backend CPU $BACKEND_CPU, $ROUNDS rounds"
} | tee "$OUT/versions.txt" >&2

# ---- Helpers (wait_port, ticks, child_cpu, wrk_figures, median, spread: scripts/bench/lib.sh) --
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
        PIDS+=("$master"); wait_port $NGINX_PORT
        local workers
        workers=$(nginx_workers "$master")
        # shellcheck disable=SC2206
        SERVER_PIDS=($master $workers) ;;
    proxy)
        local b backends=()
        for b in "${BACKEND_PORTS[@]}"; do backends+=(--backend "127.0.0.1:$b"); done
        taskset -c "$SERVER_CPU" "$PROXY" --addr "127.0.0.1:$PROXY_PORT" --cores 1 --hash ketama \
            "${backends[@]}" >"$WORK/proxy.log" 2>&1 &
        SERVER_PIDS=($!); PIDS+=($!); wait_port $PROXY_PORT ;;
    nutcracker)
        conf="$WORK/nutcracker.yml"
        {
            echo "bench:"
            echo "  listen: 127.0.0.1:$NUTCRACKER_PORT"
            echo "  hash: fnv1a_64"
            echo "  distribution: ketama"
            echo "  redis: true"
            echo "  auto_eject_hosts: false"
            echo "  server_connections: 1"
            echo "  servers:"
            for b in "${BACKEND_PORTS[@]}"; do echo "   - 127.0.0.1:$b:1"; done
        } >"$conf"
        taskset -c "$SERVER_CPU" "$NUTCRACKER" -c "$conf" -s "$NUTCRACKER_STATS_PORT" -a 127.0.0.1 \
            -o "$WORK/nutcracker.log" &
        SERVER_PIDS=($!); PIDS+=($!); wait_port $NUTCRACKER_PORT ;;
    esac
}

# The proxy case's three redis-servers, on BACKEND_CPU, left running for the whole case.
BACKEND_PIDS=()
start_backends() {
    local port
    for port in "${BACKEND_PORTS[@]}"; do
        mkdir -p "$WORK/backend-$port"
        taskset -c "$BACKEND_CPU" redis-server --port "$port" --bind 127.0.0.1 --save '' \
            --appendonly no --protected-mode no --dir "$WORK/backend-$port" \
            --logfile "$WORK/backend-$port/redis.log" &
        BACKEND_PIDS+=($!); PIDS+=($!)
    done
    for port in "${BACKEND_PORTS[@]}"; do wait_port "$port"; done
}

# Commands the backends have executed so far, summed (INFO commandstats; INFO itself is
# not counted until after its reply).
backend_calls() {
    local port total=0 n
    for port in "${BACKEND_PORTS[@]}"; do
        n=$(redis-cli -p "$port" info commandstats | tr -d '\r' |
            awk -F'[=,:]' '/^cmdstat_/ && $1 != "cmdstat_info" { s += $3 } END { print s + 0 }')
        total=$((total + n))
    done
    echo "$total"
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
    proxy) echo $PROXY_PORT ;; nutcracker) echo $NUTCRACKER_PORT ;;
    esac
}

RESULTS="$OUT/results.tsv"
# backend_cpu_s and backend_cmds (commands the backends executed) are the proxy case's; "-"
# elsewhere.
echo -e "round\tbench\tserver\trequests\trps\tp50_ms\tp99_ms\tserver_cpu_s\tclient_cpu_s\tbackend_cpu_s\tbackend_cmds" >"$RESULTS"

# redis-benchmark against a running server: round bench server test pipe n [extra...]. test is
# one of redis-benchmark's -t tests, or mget10: MGET of 10 keys, each key:__rand_int__ (each
# occurrence drawn on its own; with -r, from the same keys as SET and GET).
run_redis_bench() {
    local round=$1 bench=$2 server=$3 test=$4 pipe=$5 n=$6
    shift 6
    local name="$OUT/r$round-$bench-$server"
    local cmd=(-t "$test")
    if [ "$test" = mget10 ]; then
        cmd=(mget)
        for _ in $(seq 10); do cmd+=(key:__rand_int__); done
    fi
    local t0 t1 b0=0 b1=0 c0=0 c1=0 via_proxy=0
    case "$server" in proxy | nutcracker) via_proxy=1 ;; esac
    [ $via_proxy = 1 ] && c0=$(backend_calls)
    t0=$(ticks "${SERVER_PIDS[@]}")
    [ $via_proxy = 1 ] && b0=$(ticks "${BACKEND_PIDS[@]}")
    (
        taskset -c "$CLIENT_CPU" redis-benchmark -p "$(port_of "$server")" -c "$CLIENTS" -n "$n" \
            -P "$pipe" --csv "$@" "${cmd[@]}" >"$name.out" 2>&1
        times >"$name.times"
    )
    t1=$(ticks "${SERVER_PIDS[@]}")
    [ $via_proxy = 1 ] && b1=$(ticks "${BACKEND_PIDS[@]}")
    [ $via_proxy = 1 ] && c1=$(backend_calls)
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    local line
    line=$(grep '^"' "$name.out" | grep -v '^"test"' | tail -1 | tr -d '"')
    if [ -z "$line" ] || grep -qi error "$name.out"; then
        echo "redis-benchmark failed against $server:" >&2
        cat "$name.out" >&2
        exit 1
    fi
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
    local bcpu=- bcmds=-
    if [ $via_proxy = 1 ]; then
        bcpu=$(awk "BEGIN{printf \"%.3f\", ($b1-$b0)/$TCK}")
        bcmds=$((c1 - c0))
    fi
    echo -e "$round\t$bench\t$server\t$n\t$rps\t$p50\t$p99\t$(awk "BEGIN{printf \"%.3f\", ($t1-$t0)/$TCK}")\t$(child_cpu "$name.times")\t$bcpu\t$bcmds" >>"$RESULTS"
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
    read -r requests rps p50 p99 <<<"$(wrk_figures "$name.out")"
    echo -e "$round\thttp\t$server\t$requests\t$rps\t$p50\t$p99\t$(awk "BEGIN{printf \"%.3f\", ($t1-$t0)/$TCK}")\t$(child_cpu "$name.times")\t-\t-" >>"$RESULTS"
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

if has_case proxy; then
    # The backends stay up for the whole case and hold the key space: the SETs of the warm-up
    # (through nutcracker, which places keys as the proxy does) draw KEYS keys 10 times over,
    # so GET and MGET find nearly every key (all but about KEYS * e^-10).
    start_backends
    echo "proxy case: filling the backends with $KEYS keys" >&2
    start_server nutcracker
    taskset -c "$CLIENT_CPU" redis-benchmark -p $NUTCRACKER_PORT -c "$CLIENTS" -n $((KEYS * 10)) \
        -P 16 -r "$KEYS" -t set -q >"$OUT/warmup.out" 2>&1
    stop_server
    keys_held=0
    for port in "${BACKEND_PORTS[@]}"; do
        n=$(redis-cli -p "$port" dbsize | tr -d '\r')
        echo "backend 127.0.0.1:$port holds $n keys" >&2
        keys_held=$((keys_held + n))
    done
    echo "backends hold $keys_held keys (key space $KEYS)" | tee -a "$OUT/versions.txt" >&2
fi

for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    if has_case kv; then
        pair_start kv redis
        for test in get set; do
            pair_run "$round" kv redis redis_test "$round" "$test-P16" "$test" 16 "$PIPE_N"
            pair_run "$round" kv redis redis_test "$round" "$test-P1" "$test" 1 "$PLAIN_N"
        done
        pair_stop
    fi
    if has_case http; then
        pair_start http nginx
        pair_run "$round" http nginx wrk_test "$round"
        pair_stop
    fi
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
    if has_case proxy; then
        pair_start proxy nutcracker
        sent=0 runs=0
        for pipe in 16 1; do
            for test in set get mget10; do
                case $test-$pipe in
                mget10-16) n=$PROXY_MGET_PIPE_N ;; mget10-1) n=$PROXY_MGET_PLAIN_N ;;
                *-16) n=$PROXY_PIPE_N ;; *) n=$PROXY_PLAIN_N ;;
                esac
                pair_run "$round" proxy nutcracker redis_test "$round" "$test-P$pipe" "$test" \
                    "$pipe" "$n" -r "$KEYS"
                sent=$((sent + n)) runs=$((runs + 1))
            done
        done
        pair_stop
        # A second count: the proxy's own, printed as it exits: the replies it sent its
        # clients (redis-benchmark's requests, plus the CONFIG GET save and appendonly it sends
        # before each run, which the proxy refuses) and the frames it received (the clients'
        # requests and the backends' replies).
        echo "round $round: redis-benchmark sent the proxy $sent requests, plus 2 CONFIG GETs in" \
            "each of $runs runs = $((sent + 2 * runs)); the proxy's counters:" \
            "$(grep -o 'stopped after.*' "$WORK/proxy.log" || echo '(none)')" | tee -a "$OUT/crosscheck.txt" >&2
    fi
done

# ---- Summary: medians over the rounds ------------------------------------------------------
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

# The proxy case's figures: "median (min-max)" over the rounds.
per_req_values() { # bench server column [scale] -> per-request values of each run
    awk -F'\t' -v b="$1" -v s="$2" -v c="$3" -v k="${4:-1e6}" \
        'NR > 1 && $2 == b && $3 == s && $c != "-" { printf "%.4f\n", $c / $4 * k }' "$RESULTS"
}
col_values() { # bench server column
    awk -F'\t' -v b="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == b && $3 == s { print $c }' "$RESULTS"
}
round_ratio_values() { # bench a b column per_request(0|1) -> each round's ratio a/b
    awk -F'\t' -v b="$1" -v x="$2" -v y="$3" -v c="$4" -v pr="$5" '
        NR > 1 && $2 == b && ($3 == x || $3 == y) { v = pr ? $c / $4 : $c; val[$1, $3] = v; rounds[$1] = 1 }
        END { for (r in rounds) if ((r, x) in val && (r, y) in val && val[r, y] > 0) printf "%.4f\n", val[r, x] / val[r, y] }
    ' "$RESULTS"
}
proxy_summary() { # bench
    local s
    for s in proxy nutcracker; do
        printf "| %-10s | %-10s | %s | %s | %s | %s | %s | %s | %s |\n" "$1" "$s" \
            "$(col_values "$1" "$s" 5 | spread %.0f)" "$(col "$1" "$s" 6)" "$(col "$1" "$s" 7)" \
            "$(per_req_values "$1" "$s" 8 | spread %.2f)" "$(per_req_values "$1" "$s" 10 | spread %.2f)" \
            "$(per_req "$1" "$s" 9)" "$(per_req_values "$1" "$s" 11 1 | spread %.2f)"
    done
}
proxy_ratio() { # bench
    local r c
    r=$(round_ratio "$1" proxy nutcracker 5 0)
    c=$(round_ratio "$1" proxy nutcracker 8 1)
    printf "| %-10s | %s | %s | %s | %s |\n" "$1" \
        "$(round_ratio_values "$1" proxy nutcracker 5 0 | spread %.2f)" \
        "$(round_ratio_values "$1" proxy nutcracker 8 1 | spread %.2f)" \
        "$(round_ratio_values "$1" proxy nutcracker 10 1 | spread %.2f)" \
        "$(awk -v r="$r" -v c="$c" 'BEGIN { print (c <= 0.6 && r >= 1.0) ? "met" : "not met" }')"
}
{
    echo
    echo "Medians of $ROUNDS rounds; server CPU $SERVER_CPU, client CPU $CLIENT_CPU."
    echo "CPU columns: microseconds of CPU time per request (utime+stime over the run / requests)."
    if has_case kv || has_case http; then
        echo
        echo "| benchmark         | server      | requests/s |  p50 ms |  p99 ms | srv CPU/req µs | client CPU/req µs |"
        echo "|-------------------|-------------|------------|---------|---------|----------|----------|"
        if has_case kv; then for b in get-P16 set-P16 get-P1 set-P1; do summary "$b" kv redis; done; fi
        if has_case http; then summary http http nginx; fi
        echo
        echo "Ratios: the median over the rounds of each round's ratio."
        echo
        echo "| benchmark         | ratio | requests/s | server CPU/request | client CPU/request |"
        echo "|-------------------|-------|------------|--------------------|--------------------|"
        if has_case kv; then for b in get-P16 set-P16 get-P1 set-P1; do ratio "$b" kv redis; done; fi
        if has_case http; then ratio http http nginx; fi
    fi
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
    if has_case proxy; then
        echo
        echo "Proxy (CPU $SERVER_CPU, one core) against nutcracker (CPU $SERVER_CPU), three redis-server"
        echo "backends on CPU $BACKEND_CPU, redis-benchmark -c $CLIENTS -r $KEYS on CPU $CLIENT_CPU."
        echo "Median (min-max) over the rounds; p50/p99 from redis-benchmark's --csv, medians."
        echo "backend cmds/req: commands the three backends executed (INFO commandstats) per request."
        echo
        echo "| benchmark  | server     | requests/s | p50 ms | p99 ms | proxy CPU/req µs | backends CPU/req µs | client CPU/req µs | backend cmds/req |"
        echo "|------------|------------|-----------:|-------:|-------:|-----------------:|--------------------:|------------------:|-----------------:|"
        for b in set-P16 get-P16 mget10-P16 set-P1 get-P1 mget10-P1; do proxy_summary "$b"; done
        echo
        echo "Ratios proxy/nutcracker, median (min-max) of the per-round ratios; the goal: at most"
        echo "0.6x nutcracker's CPU per request at 1.0x or more of its requests/s (medians)."
        echo
        echo "| benchmark  | requests/s | proxy CPU/request | backends CPU/request | goal |"
        echo "|------------|-----------:|------------------:|---------------------:|------|"
        for b in set-P16 get-P16 mget10-P16 set-P1 get-P1 mget10-P1; do proxy_ratio "$b"; done
        if [ -f "$OUT/crosscheck.txt" ]; then
            echo
            cat "$OUT/crosscheck.txt"
        fi
    fi
} | tee "$OUT/summary.md"
echo "raw output in $OUT" >&2
