#!/usr/bin/env bash
# TLS benchmark: ringwire's http example serving https against nginx with ssl, both with the
# same certificate and key (ECDSA P-256, made once per run) and the same 13-byte body, each on
# one core pinned to SERVER_CPU (default 0); the clients are pinned to CLIENT_CPU (default 1).
# The servers alternate within each round; figures are medians (and ranges) over the rounds.
#
# Cases (`--cases a,b`; all by default):
#   keepalive  wrk -t1 -c C -d S --latency https://...: requests over kept-alive TLS
#              connections (one handshake per connection, at the start)
#   handshake  the same with -H 'Connection: close': each request a new TCP connection and TLS
#              handshake. wrk keeps its OpenSSL session across reconnects (SSL_clear), so after
#              each connection's first handshake these are resumed handshakes; the run's start
#              measures how many, against nginx (the summary says)
#   full       full (not resumed) handshakes: openssl s_time -new, one connection at a time, a
#              GET / (HTTP/1.0) on each; connections/s is bound by the client, the figure that
#              counts is server CPU per handshake
#   idle       memory per idle TLS connection: a fresh server, then N connections (--idle-conns,
#              1000), each a full handshake and one GET / and then idle
#              (scripts/bench/tls-idle.py, Python asyncio + ssl); the server's VmRSS before,
#              with half of them and with all, each 1 s after the client has them (nginx: its
#              worker's; the master's is reported apart); per connection over all of them, and
#              over the second half alone (without what the first connections paid once)
#   ab         the keepalive case with a second client, ApacheBench (`ab -k`, HTTP/1.0
#              keep-alive), to cross-check wrk's figures
# The servers' own counts of the connections and requests of each run (nginx's stub_status,
# the figures ringwire's http example prints as it exits) are reported beside the clients'.
#
# Measured per run: requests/s and latency p50/p99 as the client reports them (wrk's latency
# starts when a request is written, after the handshake); the server's CPU time (utime+stime of
# all its threads and processes, from /proc/PID/stat) and the client's (from `times`), each
# divided by the requests.
#
# Usage: scripts/bench-tls.sh [--rounds N] [--duration S] [--connections C]
#            [--cases keepalive,handshake,full,idle,ab] [--idle-conns N]
#            [--servers ringwire,nginx] [--no-build]
# Defaults: 5 rounds of 10 s per run, 50 connections; about 8 min with every case.
# Environment: SERVER_CPU, CLIENT_CPU (0 and 1); ROUNDS, DURATION, CONNS, IDLE_CONNS (as the
# options). Installs nginx, wrk, ab and openssl when missing (scripts/install-bench-deps.sh).
# Needs an http example that takes --tls-cert and --tls-key and speaks TLS; without one it says
# so and stops (`--servers nginx` measures nginx alone).
# Output: a summary on stdout (markdown tables), raw client output, results.tsv, idle.tsv and
# the servers' logs under results/bench-tls-DATE/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh

ALL_CASES=keepalive,handshake,full,idle,ab
usage() { # exit-status
    sed -n '/^# Usage:/,/^# Defaults/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "$1"
}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
IDLE_CONNS=${IDLE_CONNS:-1000}
CASES=$ALL_CASES
SERVERS=ringwire,nginx
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --idle-conns) IDLE_CONNS=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage 0 ;;
    *) echo "bench-tls: unknown argument $1" >&2; usage 2 ;;
    esac
done
for v in ROUNDS DURATION CONNS IDLE_CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-tls: $v must be a positive integer" >&2; exit 2; }
done
has_case() { [[ ",$CASES," == *",$1,"* ]]; }
for c in ${CASES//,/ }; do
    [[ ",$ALL_CASES," == *",$c,"* ]] || { echo "bench-tls: unknown case $c" >&2; exit 2; }
done
read -r -a SERVER_LIST <<<"${SERVERS//,/ }"
for s in "${SERVER_LIST[@]}"; do
    case "$s" in ringwire | nginx) ;; *) echo "bench-tls: unknown server $s" >&2; exit 2 ;; esac
done
has_server() { [[ ",$SERVERS," == *",$1,"* ]]; }

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RINGWIRE_PORT=18440
NGINX_PORT=18441
NGINX_RESUME_PORT=18442 # the same server, logging $ssl_session_reused
NGINX_STATUS_PORT=18443 # plain HTTP, stub_status
BODY="Hello, World!"    # examples/http/service.rs's HELLO; benches/configs/nginx-tls.conf's too
# The clients name the servers "localhost" (which must resolve to 127.0.0.1), as the
# certificate does: wrk and ab send the URL's host as SNI, and an IP address there is not a
# legal SNI name; rustls logs a warning for each such handshake, a cost nginx does not pay.
CLIENT_HOST=localhost

OUT="results/bench-tls-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ringwire-bench-tls.XXXXXX)
chmod 755 "$WORK" # nginx's workers run as nobody and read the key there
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- Setup ---------------------------------------------------------------------------------
scripts/install-test-deps.sh   # wrk, curl
scripts/install-bench-deps.sh  # nginx, ab, openssl, python3
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TARGET=${CARGO_TARGET_DIR:-target}
HTTP=$TARGET/release/examples/http
TCK=$(getconf CLK_TCK)

if ! getent ahostsv4 "$CLIENT_HOST" | grep -q '^127\.0\.0\.1 '; then
    echo "bench-tls: $CLIENT_HOST does not resolve to 127.0.0.1 (see /etc/hosts)" >&2
    exit 1
fi

# One certificate and key for both servers: ECDSA P-256, for localhost and 127.0.0.1.
CERT=$WORK/cert.pem
KEY=$WORK/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$KEY" -out "$CERT" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>"$WORK/openssl-req.log" ||
    { cat "$WORK/openssl-req.log" >&2; exit 1; }
chmod 644 "$KEY"

if has_server ringwire; then
    if [ "$BUILD" = 1 ]; then cargo build --release --example http >&2; fi
    if ! "$HTTP" --help 2>/dev/null | grep -q -- '--tls-cert'; then
        echo "bench-tls: $HTTP has no --tls-cert/--tls-key: the http example at" \
            "$(git rev-parse --short HEAD 2>/dev/null || echo '?') does not serve TLS yet." >&2
        echo "bench-tls: nothing to compare; \`--servers nginx\` measures nginx alone." >&2
        exit 3
    fi
fi

# ---- Servers -------------------------------------------------------------------------------
RINGWIRE_PID=
NGINX_PIDS=() # master, then worker
start_server() { # name log
    case "$1" in
    ringwire)
        taskset -c "$SERVER_CPU" "$HTTP" --addr "127.0.0.1:$RINGWIRE_PORT" --cores 1 \
            --tls-cert "$CERT" --tls-key "$KEY" >"$2" 2>&1 &
        RINGWIRE_PID=$!; PIDS+=("$RINGWIRE_PID")
        wait_port $RINGWIRE_PORT || { cat "$2" >&2; exit 1; } ;;
    nginx)
        sed -e "s|@PORT@|$NGINX_PORT|g" -e "s|@RESUME_PORT@|$NGINX_RESUME_PORT|g" \
            -e "s|@STATUS_PORT@|$NGINX_STATUS_PORT|g" -e "s|@DIR@|$WORK|g" \
            -e "s|@CERT@|$CERT|g" -e "s|@KEY@|$KEY|g" benches/configs/nginx-tls.conf >"$WORK/nginx.conf"
        taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" \
            >"$2" 2>&1 &
        local master=$!
        PIDS+=("$master")
        wait_port $NGINX_PORT || { cat "$2" "$WORK/nginx-error.log" >&2; exit 1; }
        NGINX_PIDS=("$master" "$(nginx_workers "$master")") ;;
    esac
}
stop_server() { # name
    local pid
    case "$1" in
    ringwire) pid=$RINGWIRE_PID ;;
    nginx) pid=${NGINX_PIDS[0]} ;;
    esac
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sleep 0.2
}
server_pids() { # name
    case "$1" in
    ringwire) echo "$RINGWIRE_PID" ;;
    nginx) echo "${NGINX_PIDS[@]}" ;;
    esac
}
port_of() {
    case "$1" in ringwire) echo $RINGWIRE_PORT ;; nginx) echo $NGINX_PORT ;; esac
}
# The server's own counts so far, "connections requests": nginx's stub_status (less the
# status request itself); "- -" for ringwire, whose counts come from its log as it exits.
server_counts() { # name
    if [ "$1" = nginx ]; then
        curl -sS "http://127.0.0.1:$NGINX_STATUS_PORT/status" |
            awk 'NR == 3 { print $1 - 1, $3 - 1 }'
    else
        echo "- -"
    fi
}
# ringwire's http example, as it exits: "stopped after N sessions, M responses in W writes".
# Less one session: wait_port's connection.
ringwire_counts() { # log
    sed -n 's/.*stopped after \([0-9]*\) sessions, \([0-9]*\) responses.*/\1 \2/p' "$1" |
        awk '{ print $1 - 1, $2 }'
}

# Checks that a server answers https with our certificate and body; prints the protocol and
# cipher an OpenSSL client gets, and whether the server resumes a session (a second
# connection offering the first's ticket, openssl s_client -sess_in).
probe_server() { # name
    local port body proto kex resumed
    port=$(port_of "$1")
    if ! body=$(curl -sS --max-time 5 --cacert "$CERT" "https://127.0.0.1:$port/" 2>&1) ||
        [ "$body" != "$BODY" ]; then
        echo "bench-tls: $1 does not answer https://127.0.0.1:$port/ with \"$BODY\": $body" >&2
        return 1
    fi
    local get='GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
    # shellcheck disable=SC2059 # the request is the format
    printf "$get" | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
        -CAfile "$CERT" -sess_out "$WORK/$1.session" -ign_eof >"$OUT/probe-$1-1.txt" 2>&1 || true
    # shellcheck disable=SC2059
    printf "$get" | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
        -CAfile "$CERT" -sess_in "$WORK/$1.session" -ign_eof >"$OUT/probe-$1-2.txt" 2>&1 || true
    proto=$(grep -m1 -E '^New, ' "$OUT/probe-$1-1.txt" | sed 's/^New, //; s/, Cipher is / /')
    kex=$(grep -m1 '^Server Temp Key:' "$OUT/probe-$1-1.txt" | sed 's/^Server Temp Key: //')
    resumed=$(grep -q -E '^Reused, ' "$OUT/probe-$1-2.txt" && echo yes || echo no)
    echo "check: $1 answers https with \"$BODY\"; an OpenSSL client negotiates ${proto:-?}, key exchange ${kex:-?}; $1 resumes a session: $resumed"
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo || true)"
    echo "kernel TLS (tls ULP): $(grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null && echo available || echo 'not available: both servers do TLS in user space')"
    echo "ringwire: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git status --porcelain 2>/dev/null | grep -q . && echo ' (with uncommitted changes)'); rustls $(awk '/^name = "rustls"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock) ($(grep -m1 '^rustls = ' Cargo.toml | grep -o 'features = \[[^]]*\]' | tr -d '"'))"
    echo "nginx: $("$NGINX" -V 2>&1 | grep -E 'nginx version|built with' | paste -sd ';') (package $(dpkg-query -W -f '${Version}' nginx 2>/dev/null))"
    echo "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2) (package $(dpkg-query -W -f '${Version}' wrk 2>/dev/null)); openssl: $(openssl version)"
    echo "ab: $(ab -V | head -1) (package $(dpkg-query -W -f '${Version}' apache2-utils 2>/dev/null)); python: $(python3 -c 'import ssl, sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)')"
    echo "certificate: ECDSA P-256 (prime256v1), CN=localhost, SAN DNS:localhost IP:127.0.0.1"
    echo "servers $SERVERS; cases $CASES; $ROUNDS rounds of ${DURATION} s; $CONNS connections;" \
        "idle case $IDLE_CONNS connections; server CPU $SERVER_CPU, client CPU $CLIENT_CPU"
} | tee "$OUT/versions.txt" >&2

# Once: each server answers https and what it negotiates; and whether wrk resumes sessions
# across its reconnects (nginx's access log of $ssl_session_reused, on the probe port).
for s in "${SERVER_LIST[@]}"; do
    start_server "$s" "$OUT/probe-$s.log"
    if [ "$s" = ringwire ] && ! probe_server ringwire >>"$OUT/versions.txt"; then
        echo "bench-tls: ringwire's http example takes --tls-cert but does not speak TLS (the" \
            "engine's TLS sessions are not in this tree?); its log:" >&2
        cat "$OUT/probe-$s.log" >&2
        exit 3
    fi
    if [ "$s" = nginx ]; then probe_server nginx >>"$OUT/versions.txt"; fi
    if [ "$s" = nginx ] && has_case handshake; then
        taskset -c "$CLIENT_CPU" wrk -t1 -c10 -d1s -H 'Connection: close' \
            "https://$CLIENT_HOST:$NGINX_RESUME_PORT/" >"$OUT/probe-wrk-resume.out" 2>&1
        sleep 0.2 # nginx logs as each request ends
        awk '{ n++; if ($1 == "r") r++ } END {
            printf "check: wrk -c10 -H \"Connection: close\" for 1 s against nginx: %d of %d handshakes resumed a session\n", r, n }' \
            "$WORK/resumed.log" >>"$OUT/versions.txt"
    fi
    stop_server "$s"
    if [ "$s" = ringwire ]; then
        echo "check: ringwire's start-up lines: $(grep -i 'listening' "$OUT/probe-$s.log" | sed 's/^\[[^]]*\] //' | paste -sd '|' | sed 's/|/; /g')" >>"$OUT/versions.txt"
    fi
done
grep '^check:' "$OUT/versions.txt" >&2

# ---- Runs ----------------------------------------------------------------------------------
RESULTS="$OUT/results.tsv"
echo -e "round\tcase\tserver\trequests\trps\tp50_ms\tp99_ms\tserver_cpu_s\tclient_cpu_s\tserver_conns\tserver_reqs\terrors" >"$RESULTS"
IDLE="$OUT/idle.tsv"
echo -e "round\tserver\tconnections\tfailed\trss_before_kib\trss_half_kib\trss_after_kib\tbytes_per_conn\tsecond_half_bytes_per_conn\tmaster_rss_kib\tversions" >"$IDLE"

cpu_s() { awk -v a="$1" -v b="$2" -v t="$TCK" 'BEGIN { printf "%.3f", (b - a) / t }'; }

# One measured run of a client against a running server: round case server; the client's
# command line comes from client_cmd, its figures from client_figures.
CMD=()
client_cmd() { # case port: sets CMD
    local url="https://$CLIENT_HOST:$2/"
    case "$1" in
    keepalive) CMD=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency "$url") ;;
    handshake) CMD=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency -H 'Connection: close' "$url") ;;
    full) CMD=(openssl s_time -connect "127.0.0.1:$2" -new -time "$DURATION" -www /) ;;
    # -n only sizes ab's table of results (its default, 50,000, would end the run early).
    ab) CMD=(ab -k -c "$CONNS" -t "$DURATION" -n 10000000 -q "$url") ;;
    esac
}
# "requests requests/s p50_ms p99_ms errors" from a client's output.
client_figures() { # case output-file wall-seconds
    local n
    case "$1" in
    keepalive | handshake)
        echo "$(wrk_figures "$2") $(grep -E 'Socket errors|Non-2xx' "$2" | tr -s ' ,:' '_' | paste -sd ';' || true)" ;;
    full)
        n=$(grep -m1 -oE '^[0-9]+ connections in' "$2" | cut -d' ' -f1)
        awk -v n="$n" -v w="$3" 'BEGIN { printf "%d %.1f - - ", n, n / w }'
        grep -ciE 'error|fail' "$2" | sed 's/^0$//; s/^[1-9].*/errors_in_output/' ;;
    ab)
        awk '/^Complete requests:/ { n = $3 } /^Failed requests:/ { f = $3 }
             /^Non-2xx responses:/ { x = $3 } /^Requests per second:/ { r = $4 }
             /^  50% / { p50 = $2 } /^  99% / { p99 = $2 }
             END { printf "%d %s %s %s %s\n", n, r, p50, p99,
                   (f > 0 || x > 0) ? "failed_" f "_non2xx_" (x + 0) : "" }' "$2" ;;
    esac
}
run_client() { # round case server
    local round=$1 case=$2 server=$3
    local name="$OUT/r$round-$case-$server" t0 t1 c0 c1 w0 w1 pids
    client_cmd "$case" "$(port_of "$server")"
    read -r -a pids <<<"$(server_pids "$server")"
    c0=$(server_counts "$server")
    t0=$(ticks "${pids[@]}")
    w0=$(date +%s.%N)
    (
        taskset -c "$CLIENT_CPU" "${CMD[@]}" >"$name.out" 2>&1 || echo "exit status $?" >>"$name.out"
        times >"$name.times"
    )
    w1=$(date +%s.%N)
    t1=$(ticks "${pids[@]}")
    c1=$(server_counts "$server")
    local requests rps p50 p99 errors conns=- reqs=-
    read -r requests rps p50 p99 errors <<<"$(client_figures "$case" "$name.out" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')")"
    if [ -z "$requests" ] || [ "$requests" = 0 ]; then
        echo "bench-tls: $case against $server made no requests (${CMD[*]}):" >&2
        cat "$name.out" >&2
        exit 1
    fi
    if grep -q '^exit status' "$name.out"; then errors="${errors:+$errors;}$(grep '^exit status' "$name.out" | tr ' ' '_')"; fi
    if [ -n "$errors" ]; then echo "bench-tls: round $round $case $server: errors: $errors (see $name.out)" >&2; fi
    if [ "$server" = nginx ]; then
        read -r conns reqs <<<"$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); print y[1] - x[1], y[2] - x[2] }')"
    fi
    echo -e "$round\t$case\t$server\t$requests\t$rps\t$p50\t$p99\t$(cpu_s "$t0" "$t1")\t$(child_cpu "$name.times")\t$conns\t$reqs\t${errors:--}" >>"$RESULTS"
}

# ringwire's counts come from its exit line: filled in after each case's servers stop.
fill_ringwire_counts() { # round case log
    local conns reqs
    read -r conns reqs <<<"$(ringwire_counts "$3")"
    [ -n "${conns:-}" ] || return 0
    awk -F'\t' -v OFS='\t' -v r="$1" -v c="$2" -v n="$conns" -v q="$reqs" \
        '$1 == r && $2 == c && $3 == "ringwire" { $10 = n; $11 = q } { print }' "$RESULTS" >"$RESULTS.tmp"
    mv "$RESULTS.tmp" "$RESULTS"
}

# Waits (up to 2 min) for the idle client's line starting with WORD; prints it.
idle_client_line() { # word output-file client-pid
    for _ in $(seq 1200); do
        grep -q "^$1 " "$2" && break
        kill -0 "$3" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep "^$1 " "$2"; then
        echo "bench-tls: the idle client never got its connections ($1):" >&2
        cat "$2" >&2
        return 1
    fi
}

# The idle case on a fresh server: round server. RSS before any connection, with half of them
# and with all of them, each read 1 s after the client has them.
run_idle() {
    local round=$1 server=$2 name="$OUT/r$1-idle-$2" pid master_rss=- before mid after client line
    start_server "$server" "$name.log"
    if [ "$server" = nginx ]; then pid=${NGINX_PIDS[1]}; else pid=$RINGWIRE_PID; fi
    sleep 0.5
    before=$(rss_kib "$pid")
    rm -f "$WORK/idle-continue"
    taskset -c "$CLIENT_CPU" python3 scripts/bench/tls-idle.py --port "$(port_of "$server")" \
        --connections "$IDLE_CONNS" --cafile "$CERT" --pause-file "$WORK/idle-continue" >"$name.out" 2>&1 &
    client=$!
    PIDS+=("$client")
    idle_client_line half "$name.out" "$client" >/dev/null || exit 1
    sleep 1
    mid=$(rss_kib "$pid")
    touch "$WORK/idle-continue"
    line=$(idle_client_line ready "$name.out" "$client") || exit 1
    sleep 1
    after=$(rss_kib "$pid")
    if [ "$server" = nginx ]; then master_rss=$(rss_kib "${NGINX_PIDS[0]}"); fi
    kill -TERM "$client" 2>/dev/null || true
    wait "$client" 2>/dev/null || true
    stop_server "$server"
    local ok failed versions
    read -r _ ok failed versions <<<"$line"
    if [ "$failed" != 0 ]; then echo "bench-tls: round $round idle $server: $failed connections failed (see $name.out)" >&2; fi
    local half=$((IDLE_CONNS / 2))
    echo -e "$round\t$server\t$ok\t$failed\t$before\t$mid\t$after\t$(awk -v a="$before" -v b="$after" -v n="$ok" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')\t$(awk -v a="$mid" -v b="$after" -v n="$((ok - half))" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')\t$master_rss\t$versions" >>"$IDLE"
}

# The servers of a round take turns, first one way, then the other.
round_order() { # round
    if [ $(($1 % 2)) -eq 0 ] && [ ${#SERVER_LIST[@]} -eq 2 ]; then
        echo "${SERVER_LIST[1]} ${SERVER_LIST[0]}"
    else
        echo "${SERVER_LIST[@]}"
    fi
}

for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    read -r -a order <<<"$(round_order "$round")"
    for case in keepalive handshake full ab; do
        has_case "$case" || continue
        # Both servers run side by side (the idle one costs nothing), fresh for each case, so
        # that ringwire's exit counts are the case's.
        for s in "${SERVER_LIST[@]}"; do start_server "$s" "$OUT/r$round-$case-$s.log"; done
        for s in "${order[@]}"; do run_client "$round" "$case" "$s"; done
        for s in "${SERVER_LIST[@]}"; do stop_server "$s"; done
        if has_server ringwire; then fill_ringwire_counts "$round" "$case" "$OUT/r$round-$case-ringwire.log"; fi
    done
    if has_case idle; then
        for s in "${order[@]}"; do run_idle "$round" "$s"; done
    fi
done

# ---- Summary: medians and ranges over the rounds -------------------------------------------
values() { # case server column [per-request scale]: one value per round
    awk -F'\t' -v c="$1" -v s="$2" -v k="$3" -v scale="${4:-}" '
        NR > 1 && $2 == c && $3 == s && $k != "-" { if (scale != "") printf "%.4f\n", $k / $4 * scale; else print $k }' "$RESULTS"
}
ratios() { # case column per_request(0|1): each round's ringwire/nginx
    awk -F'\t' -v c="$1" -v k="$2" -v pr="$3" '
        NR > 1 && $2 == c { val[$1, $3] = pr ? $k / $4 : $k; rounds[$1] = 1 }
        END { for (r in rounds) if ((r, "ringwire") in val && (r, "nginx") in val && val[r, "nginx"] > 0)
                  printf "%.4f\n", val[r, "ringwire"] / val[r, "nginx"] }' "$RESULTS"
}
idle_values() { # server column
    awk -F'\t' -v s="$1" -v k="$2" 'NR > 1 && $2 == s && $k != "-" { print $k }' "$IDLE"
}
idle_ratios() { # column: each round's ringwire/nginx
    awk -F'\t' -v k="$1" 'NR > 1 { v[$1, $2] = $k; r[$1] = 1 }
        END { for (i in r) if ((i, "nginx") in v && (i, "ringwire") in v && v[i, "nginx"] > 0) printf "%.4f\n", v[i, "ringwire"] / v[i, "nginx"] }' "$IDLE"
}
label() {
    case "$1" in
    keepalive) echo "keep-alive, wrk" ;; handshake) echo "new connection per request, wrk" ;;
    full) echo "full handshake, s_time" ;; ab) echo "keep-alive, ab -k" ;;
    esac
}
{
    echo
    echo "TLS: ringwire http against nginx, each on CPU $SERVER_CPU (one core), clients on CPU $CLIENT_CPU."
    echo "$ROUNDS rounds of ${DURATION} s per run, $CONNS connections (s_time: one at a time). Median (min-max) over the rounds."
    echo "CPU columns: microseconds of CPU time per request (utime+stime over the run / requests)."
    echo "srv conns/req, srv reqs/req: the server's own counts of connections and responses over the run, per request the client counted (medians)."
    echo
    grep -E '^kernel TLS|^check:' "$OUT/versions.txt" | sed 's/^check: /- /; s/^kernel/- kernel/'
    case_list=()
    for c in keepalive handshake full ab; do has_case "$c" && case_list+=("$c"); done
    if [ ${#case_list[@]} -gt 0 ]; then
        echo
        echo "| case | server | requests/s | p50 ms | p99 ms | server CPU/req µs | client CPU/req µs | srv conns/req | srv reqs/req |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
        for c in "${case_list[@]}"; do
            for s in "${SERVER_LIST[@]}"; do
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$(label "$c")" "$s" \
                    "$(values "$c" "$s" 5 | spread %.0f)" "$(values "$c" "$s" 6 | spread %.3f | cut -d' ' -f1)" \
                    "$(values "$c" "$s" 7 | spread %.3f | cut -d' ' -f1)" "$(values "$c" "$s" 8 1e6 | spread %.2f)" \
                    "$(values "$c" "$s" 9 1e6 | spread %.2f | cut -d' ' -f1)" "$(values "$c" "$s" 10 1 | spread %.4f | cut -d' ' -f1)" \
                    "$(values "$c" "$s" 11 1 | spread %.4f | cut -d' ' -f1)"
            done
        done
        if has_server ringwire && has_server nginx; then
            echo
            echo "Ratios ringwire/nginx: median (min-max) of the per-round ratios."
            echo
            echo "| case | requests/s | server CPU/request |"
            echo "|---|---:|---:|"
            for c in "${case_list[@]}"; do
                printf "| %s | %s | %s |\n" "$(label "$c")" "$(ratios "$c" 5 0 | spread %.2fx)" "$(ratios "$c" 8 1 | spread %.2fx)"
            done
        fi
        errs=$(awk -F'\t' 'NR > 1 && $12 != "-"' "$RESULTS")
        if [ -n "$errs" ]; then
            echo
            echo "Runs with client errors (in the figures above; see the raw output):"
            echo "$errs" | awk -F'\t' '{ printf "- round %s, %s, %s: %s\n", $1, $2, $3, $12 }'
        fi
    fi
    if has_case idle; then
        echo
        echo "Idle TLS connections: $IDLE_CONNS per run (full handshake and one GET / each, then idle), a fresh server per run;"
        echo "server VmRSS before the first, and 1 s after the last (nginx: its one worker; its master apart)."
        echo "bytes/connection: (holding - before) / connections; second half: the same over the second half of the"
        echo "connections only (RSS read between the halves), which leaves out what the first connections paid once."
        echo
        echo "| server | connections held | RSS before KiB | RSS holding KiB | bytes/connection | second half, bytes/connection | nginx master RSS KiB |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for s in "${SERVER_LIST[@]}"; do
            printf "| %s | %s | %s | %s | %s | %s | %s |\n" "$s" "$(idle_values "$s" 3 | spread %.0f | cut -d' ' -f1)" \
                "$(idle_values "$s" 5 | spread %.0f)" "$(idle_values "$s" 7 | spread %.0f)" \
                "$(idle_values "$s" 8 | spread %.0f)" "$(idle_values "$s" 9 | spread %.0f)" \
                "$(idle_values "$s" 10 | spread %.0f | cut -d' ' -f1)"
        done
        if has_server ringwire && has_server nginx; then
            echo
            echo "ringwire/nginx bytes per idle connection: $(idle_ratios 8 | spread %.2fx); second half: $(idle_ratios 9 | spread %.2fx) (median (min-max) of the per-round ratios)"
        fi
    fi
} | tee "$OUT/summary.md"
echo "raw output in $OUT" >&2
