/* An independent check of the load generator's echo figures: closed-loop echo load from one
 * thread, in C with epoll, over a Unix socket path or 127.0.0.1:PORT. Every payload byte is
 * 'x'; a message completes when its size's worth of bytes has come back. Counts the messages
 * completed in the measured window and prints msgs/s; the caller measures the server's CPU.
 *
 *   cc -O2 -o /tmp/echo_load benches/scripts/echo_load.c
 *   /tmp/echo_load unix:/tmp/echo.sock 50 8 64 2 8     (connections depth size warmup seconds)
 *   /tmp/echo_load tcp:7000 50 8 64 2 8
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct conn { int fd; long partial, owed; int waiting; };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int dial(const char *target) {
    int fd;
    if (strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strncpy(a.sun_path, target + 5, sizeof a.sun_path - 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(target + 4))};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) return -1;
    return fd;
}

static void send_owed(int ep, struct conn *c, long idx, const char *payload, long max) {
    while (c->owed > 0) {
        ssize_t n = send(c->fd, payload, c->owed < max ? c->owed : max, MSG_NOSIGNAL);
        if (n > 0) { c->owed -= n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        perror("send"); exit(1);
    }
    int want = c->owed > 0;
    if (want != c->waiting) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u64 = idx};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->waiting = want;
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s unix:PATH|tcp:PORT conns depth size warmup seconds\n", argv[0]);
        return 2;
    }
    long conns = atol(argv[2]), depth = atol(argv[3]), size = atol(argv[4]);
    double warmup = atof(argv[5]), seconds = atof(argv[6]);
    long max = depth * size > 65536 ? depth * size : 65536;
    char *payload = malloc(max), *buf = malloc(65536);
    memset(payload, 'x', max);
    struct conn *cs = calloc(conns, sizeof *cs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (long i = 0; i < conns; i++) {
        cs[i].fd = dial(argv[1]);
        if (cs[i].fd < 0) { perror("connect"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        cs[i].owed = depth * size;
        send_owed(ep, &cs[i], i, payload, max);
    }
    struct epoll_event evs[1024];
    double start = now(), measure_from = start + warmup, end = measure_from + seconds;
    double t = start, measured_at = 0;
    long msgs = 0, bad = 0;
    while (t < end) {
        if (!measured_at && t >= measure_from) { measured_at = t; msgs = 0; }
        int n = epoll_wait(ep, evs, 1024, 100);
        for (int k = 0; k < n; k++) {
            long i = evs[k].data.u64;
            struct conn *c = &cs[i];
            if (evs[k].events & EPOLLOUT) send_owed(ep, c, i, payload, max);
            if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            ssize_t r = recv(c->fd, buf, 65536, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) { fprintf(stderr, "connection %ld closed\n", i); return 1; }
            for (ssize_t j = 0; j < r; j++) bad += buf[j] != 'x';
            long done = (c->partial + r) / size;
            c->partial = (c->partial + r) % size;
            msgs += done;
            c->owed += done * size;
            if (!c->waiting) send_owed(ep, c, i, payload, max);
        }
        t = now();
    }
    double window = t - measured_at;
    printf("%ld msgs in %.3f s: %.0f msgs/s, %ld bad bytes\n", msgs, window, msgs / window, bad);
    return bad != 0;
}
