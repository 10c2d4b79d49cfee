# Sourced by the benchmark scripts: the echo servers they compare, by name.
# server_bin NAME: sets bin (path under the release folder) and envs (for `env`) for NAME;
# returns 1 for an unknown name.
server_bin() {
    envs=""
    case $1 in
        ringwire) bin=examples/echo ;;
        ringwire-epoll) bin=examples/echo; envs=RINGWIRE_DRIVER=epoll ;;
        floor) bin=echo-floor ;;
        tokio) bin=echo-tokio ;;
        tokio-uring) bin=echo-tokio-uring ;;
        # Another build's echo example, copied there by hand, for A/B runs of two commits.
        ringwire-base) bin=examples/echo-base ;;
        *) return 1 ;;
    esac
}
