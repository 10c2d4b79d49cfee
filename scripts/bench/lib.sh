# shellcheck shell=bash
# Sourced by the whole-server benchmark scripts (bench-protocols.sh, bench-tls.sh): waiting for
# a port, the CPU time a server and a client spent, wrk's figures, and medians over rounds.
# Everything here reads files or /proc and prints; nothing starts or stops a process.

# Waits (up to 10 s) until something accepts on 127.0.0.1:PORT.
wait_port() { # port
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# Clock ticks (utime+stime) of the given processes, all threads included.
ticks() { # pid...
    local total=0 pid t
    for pid in "$@"; do
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

# The worker processes of an nginx master (waits up to 5 s for them to appear).
nginx_workers() { # master-pid
    local workers=""
    for _ in $(seq 100); do
        workers=$(pgrep -P "$1" || true)
        [ -n "$workers" ] && break
        sleep 0.05
    done
    [ -n "$workers" ] || { echo "nginx (pid $1) has no workers" >&2; return 1; }
    echo "$workers"
}

# Resident set size of a process, in KiB.
rss_kib() { # pid
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Children's CPU seconds from the second line of `times`.
child_cpu() { # times-file
    sed -n 2p "$1" | awk '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] }
        printf "%.3f", s
    }'
}

# wrk's output (run with --latency) as "requests requests/s p50_ms p99_ms".
wrk_figures() { # wrk-output-file
    local requests rps p50 p99 to_ms
    requests=$(awk '/ requests in /{print $1}' "$1")
    rps=$(awk '/^Requests\/sec:/{print $2}' "$1")
    # Latency distribution lines: "50%  312.00us"; to milliseconds.
    # shellcheck disable=SC2016 # awk's fields, not the shell's
    to_ms='{ v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
             if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.3f", v }'
    p50=$(awk "/^ +50%/$to_ms" "$1")
    p99=$(awk "/^ +99%/$to_ms" "$1")
    echo "$requests $rps $p50 $p99"
}

# The median of the numbers on stdin.
median() {
    sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The numbers on stdin as "median (min-max)", each printed with the printf format given.
spread() { # format
    sort -g | awk -v f="$1" '{ v[NR] = $1 } END {
        if (NR == 0) { printf "-"; exit }
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf f " (" f "-" f ")", m, v[1], v[NR] }'
}
