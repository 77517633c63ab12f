/*
 * relay_peer.c - sender/receiver pairs for the relay benchmark (bench/relay.py builds it).
 *
 * One thread, one epoll loop, N pairs of connections (a sender and a receiver each) through a
 * relay. Every pair pairs up through the relay's own handshake, then the sender sends F binary
 * WebSocket frames of 262,169 bytes (the size of a TRP/1 DATA frame: 1 + 8 + 262,144 + 16), each
 * masked with a fresh random key (RFC 6455), and the receiver checks every frame: opcode,
 * length, the type byte and sequence number embedded at the start of the payload (so a lost,
 * duplicated or reordered frame aborts the run), and one byte in every 512 of the
 * random-looking content. Any mismatch exits with status 2: no number from a relay that
 * corrupts data.
 *
 * Modes (--mode)
 *   tube     POST /v1/nameplates, then two WebSocket connections to /v1/relay/<nameplate> with
 *            subprotocol tube.relay.v1: hello/welcome, wait (sender) and claim (receiver), both
 *            read paired; frames arrive unmasked (the relay re-frames them). At the end both send
 *            {"t":"bye","mood":"happy"} and a close frame and wait for the relay's close frame.
 *            Scale-out: an instance that does not own the nameplate answers hello with
 *            {"t":"redirect","url":"ws://HOST:PORT/v1/relay/<nameplate>"} and closes (1000); the
 *            peer sends its close frame and opens a new WebSocket to that URL (hello again), at
 *            most 3 times; the redirected connection is closed once the pair is paired.
 *   splice   the benchmark's asyncio TCP splice: "pair <token>\n" on both, "ok\n" back; then
 *            the very same masked frames pass through unchanged (the receiver unmasks them).
 *   transit  magic-wormhole's transit relay: "please relay <64 hex> for side <16 hex>\n" on both,
 *            "ok\n" back once both arrived; then the same masked frames, unchanged.
 *
 * Measurement: the clock starts when every pair is paired and stops when every receiver has
 * every frame. The relay's CPU time (utime + stime of /proc/PID/stat) is read at both ends;
 * its RSS is read before the first connection (baseline), and its peak during the transfer is
 * VmHWM after resetting it at the baseline (echo 5 > /proc/PID/clear_refs), with VmRSS sampled
 * every 10 ms as a fallback. Result: one JSON line on stdout.
 *
 * Throttling (slow-receiver runs): --recv-rate and --send-rate bound each receiver's reads and
 * each sender's writes in bytes per second (token bucket per connection).
 *
 * --port P1,P2,...: pair k allocates on and connects to port Pk mod n (direct connections to
 * several relay instances); --cpu-pids A,B,...: also report those processes' CPU time over the
 * measured interval ("cpu_by_pid").
 *
 * Runs (--run; tube mode for churn and latency)
 *   stream   (default) the above: every pair paired first, then all frames at once (epoll).
 *   churn    pairing rate: --pairs short pairs of --size bytes, --concurrency of them in flight,
 *            one thread each (blocking handshake, then poll() while the frames cross, checked as
 *            above, then bye and close); pairs/s over first allocation to last frame.
 *   latency  one pair at a time: the allocation's round trip, the sender's connect until both
 *            read paired (redirects included), and the median of --rtts round trips of a 64-byte
 *            binary frame sender -> receiver -> sender; per-pair values (and ports) in the JSON
 *            line. --port HAPROXY,P1,HAPROXY,P2 interleaves pairs through a proxy and direct.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME 262169u /* TRP/1 DATA frame: 1 + 8 + 262144 + 16 */
#define CHUNK 262144u
#define PATTERN_SPAN 4096u
#define SAMPLE_STEP 512u
#define RECV_BURST 65536.0   /* a throttled receiver may run this far ahead of its rate */
#define RECV_QUANTUM 32768.0 /* and reads only when it may take at least this much */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "relay_peer: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static double proc_cpu_split(int pid, double *user) {
    if (pid <= 0) return -1;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    if (user) *user = (double)utime / (double)sysconf(_SC_CLK_TCK);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* a "Vm...:" line of /proc/PID/status in KiB; -1 if unknown */
static long proc_status_kb(int pid, const char *key) {
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0) {
            kb = strtol(line + klen, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static int reset_hwm(int pid) {
    if (pid <= 0) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", pid);
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    if (fclose(f) != 0) ok = 0;
    return ok;
}

static __thread uint64_t rng_state; /* one generator per thread */
static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ------------------------------------------------------------------ SHA-1 + base64 */

static uint32_t rol32(uint32_t v, int s) { return (v << s) | (v >> (32 - s)); }

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *buf = calloc(total, 1);
    if (!buf) die("out of memory");
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) buf[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)buf[off + 4 * i] << 24 | (uint32_t)buf[off + 4 * i + 1] << 16 |
                   (uint32_t)buf[off + 4 * i + 2] << 8 | buf[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999u;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1u;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDCu;
            else f = b ^ c ^ d, k = 0xCA62C1D6u;
            uint32_t t = rol32(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol32(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(buf);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = 0;
}

/* ------------------------------------------------------------------ configuration */

enum { M_TUBE, M_SPLICE, M_TRANSIT };
static int opt_mode = M_TUBE;
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_pairs = 1;
static uint64_t opt_size = 256ull << 20;
static int opt_server_pid = 0;
static double opt_recv_rate = 0; /* bytes/s per receiver; 0 = unbounded */
static double opt_send_rate = 0; /* bytes/s per sender */
static double opt_timeout = 300; /* whole transfer */
static double opt_close_timeout = 5;
enum { R_STREAM, R_CHURN, R_LATENCY };
static int opt_run = R_STREAM;
#define MAX_PORTS 64
static int opt_ports[MAX_PORTS]; /* --port P[,P...]: pair k allocates on and connects to port k % n */
static int opt_nports;
static int opt_concurrency = 16; /* churn: pairs in flight */
static int opt_rtts = 20;        /* latency: small-frame round trips per pair */
#define RTT_BYTES 64
#define MAX_PIDS 16
static int opt_cpu_pids[MAX_PIDS]; /* --cpu-pids: CPU time of these over the measured window */
static int opt_ncpu_pids;
#define MAX_REDIRECTS 3

/* ------------------------------------------------------------------ connections */

struct conn {
    int fd, id, is_sender;
    struct conn *peer;
    /* input left over from the blocking handshake phase */
    unsigned char pre[4096];
    size_t pre_len, pre_off;
    /* streaming frame parser */
    unsigned char hdr[14];
    size_t hdr_len, hdr_need;
    int in_payload, opcode, masked;
    unsigned char key[4];
    uint64_t plen, ppos;
    unsigned char ctl[8192];
    size_t ctl_len;
    /* receiver */
    uint64_t frames_in, bytes_in;
    /* sender */
    unsigned char *out;
    size_t out_off, out_len, out_cap;
    uint64_t frames_out;
    /* throttle */
    double rate;
    uint64_t counted; /* bytes read (receiver) or written (sender) while throttled */
    int throttled;
    uint32_t ev; /* registered events */
    int in_epoll; /* registered with the stream run's epoll set (else a churn worker polls it) */
    int got_close, sent_close, closed;
    /* tube: where the WebSocket ended up, and the connections left by redirects */
    int port, redirects;
    int stale[MAX_REDIRECTS], nstale;
};

static struct conn *conns;
static int nconns;
static int epfd;
static unsigned char *pattern;
static uint64_t frames_per_pair;
static double t_start;
static int receivers_done, conns_closed;
static int ending;
static unsigned char rbuf[1 << 18];
static long rss_max_kb = -1;

static size_t pat_off(uint64_t seq) { return (size_t)((seq * 131u) % PATTERN_SPAN); }

/* the expected payload byte p of frame seq (before masking) */
static unsigned char expected(uint64_t seq, uint64_t p) {
    if (p == 0) return 0x10;
    if (p < 9) return (unsigned char)(seq >> (8 * (8 - p)));
    return pattern[pat_off(seq) + p];
}

static void set_events(struct conn *c, uint32_t ev) {
    if (ev == c->ev) return;
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)c->id};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl: %s", strerror(errno));
    c->ev = ev;
}

static void update_events(struct conn *c) {
    if (!c->in_epoll) return;
    uint32_t ev = 0;
    if (!c->closed) {
        if (!(c->throttled && !c->is_sender)) ev |= EPOLLIN;
        int has_out = c->out_len > c->out_off ||
                      (c->is_sender && !ending && c->frames_out < frames_per_pair);
        if (has_out && !(c->throttled && c->is_sender)) ev |= EPOLLOUT;
    }
    set_events(c, ev);
}

static void out_reserve(struct conn *c, size_t n) {
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_cap - c->out_len >= n) return;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_cap - c->out_len < n) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap - c->out_len < n) cap *= 2;
        c->out = realloc(c->out, cap);
        if (!c->out) die("out of memory");
        c->out_cap = cap;
    }
}

static void mask_copy(unsigned char *dst, const unsigned char *src, size_t n, const unsigned char key[4]) {
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = (uint64_t)k32 | ((uint64_t)k32 << 32);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ key[i & 3];
}

/* append one masked frame (fin=1); payload NULL: the data frame number seq */
static void put_frame(struct conn *c, int opcode, const unsigned char *payload, size_t len, uint64_t seq) {
    out_reserve(c, len + 14);
    unsigned char *p = c->out + c->out_len;
    size_t h = 0;
    p[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        p[h++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        p[h++] = 0x80 | 126;
        p[h++] = (unsigned char)(len >> 8);
        p[h++] = (unsigned char)len;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) p[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t r = (uint32_t)rng_next();
    unsigned char key[4];
    memcpy(key, &r, 4);
    memcpy(p + h, key, 4);
    h += 4;
    if (payload) {
        mask_copy(p + h, payload, len, key);
    } else {
        mask_copy(p + h, pattern + pat_off(seq), len, key);
        for (int i = 0; i < 9; i++) p[h + i] = expected(seq, (uint64_t)i) ^ key[i & 3];
    }
    c->out_len += h + len;
}

static void put_text(struct conn *c, const char *s) { put_frame(c, 1, (const unsigned char *)s, strlen(s), 0); }

static void put_close(struct conn *c) {
    static const unsigned char code[2] = {0x03, 0xE8}; /* 1000 */
    put_frame(c, 8, code, 2, 0);
    c->sent_close = 1;
}

/* ------------------------------------------------------------------ blocking handshake phase */

static int port_for(int k) { return opt_ports[k % opt_nports]; }

static int connect_to(const char *host, int port) {
    int fd = -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) == 1) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
            die("connect %s:%d: %s", host, port, strerror(errno));
    } else { /* a name (a redirect may carry one) */
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
        char service[16];
        snprintf(service, sizeof service, "%d", port);
        int rc = getaddrinfo(host, service, &hints, &res);
        if (rc != 0) die("%s: %s", host, gai_strerror(rc));
        for (ai = res; ai; ai = ai->ai_next) {
            fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
            if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
            if (fd >= 0) close(fd);
            fd = -1;
        }
        freeaddrinfo(res);
        if (fd < 0) die("connect %s:%d: %s", host, port, strerror(errno));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int connect_blocking(int port) { return connect_to(opt_host, port); }

static void send_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) die("send: %s", strerror(errno));
        p += k, n -= (size_t)k;
    }
}

/* read into c->pre until it contains marker; returns the offset just past it */
static size_t read_until(struct conn *c, const char *marker) {
    for (;;) {
        c->pre[c->pre_len] = 0;
        char *m = memmem(c->pre, c->pre_len, marker, strlen(marker));
        if (m) return (size_t)((unsigned char *)m - c->pre) + strlen(marker);
        if (c->pre_len + 1 >= sizeof c->pre) die("conn %d: handshake answer too long", c->id);
        ssize_t k = recv(c->fd, c->pre + c->pre_len, sizeof c->pre - 1 - c->pre_len, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            die("conn %d: connection ended during the handshake (%s): %.*s", c->id,
                k < 0 ? strerror(errno) : "EOF", (int)c->pre_len, c->pre);
        c->pre_len += (size_t)k;
    }
}

static void consume_pre(struct conn *c, size_t n) {
    memmove(c->pre, c->pre + n, c->pre_len - n);
    c->pre_len -= n;
}

/* read one whole small (unmasked, server-to-client) frame in blocking mode, through c->pre (4 KiB):
   its opcode; the payload goes to out (NUL-terminated, *len its length). EOF: -1 if eof_ok. */
static int read_frame_blocking(struct conn *c, unsigned char *out, size_t cap, size_t *len_out, int eof_ok) {
    while (c->pre_len < 2 || c->pre_len < 2 + ((c->pre[1] & 0x7f) == 126 ? 2u : 0u) +
                                              ((c->pre[1] & 0x7f) == 127 ? 8u : 0u)) {
        ssize_t k = recv(c->fd, c->pre + c->pre_len, sizeof c->pre - 1 - c->pre_len, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0 && eof_ok && c->pre_len == 0) return -1;
        if (k <= 0) die("conn %d: connection ended before a message (%s)", c->id, k < 0 ? strerror(errno) : "EOF");
        c->pre_len += (size_t)k;
    }
    size_t h = 2, len = c->pre[1] & 0x7f;
    if (len == 126) len = (size_t)c->pre[2] << 8 | c->pre[3], h = 4;
    else if (len == 127) die("conn %d: huge frame where a small one was expected", c->id);
    if (c->pre[1] & 0x80) die("conn %d: masked frame from the server", c->id);
    if (h + len >= sizeof c->pre) die("conn %d: control frame too long", c->id);
    while (c->pre_len < h + len) {
        ssize_t k = recv(c->fd, c->pre + c->pre_len, sizeof c->pre - 1 - c->pre_len, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) die("conn %d: connection ended inside a message", c->id);
        c->pre_len += (size_t)k;
    }
    if ((c->pre[0] & 0x80) == 0) die("conn %d: fragmented message", c->id);
    int opcode = c->pre[0] & 0x0f;
    if (len >= cap) die("conn %d: message of %zu bytes too long", c->id, len);
    memcpy(out, c->pre + h, len);
    out[len] = 0;
    *len_out = len;
    consume_pre(c, h + len);
    return opcode;
}

/* read one whole text frame in blocking mode into out; a close frame is fatal, pings ignored
   (none expected before pairing) */
static void read_text_blocking(struct conn *c, char *out, size_t cap) {
    for (;;) {
        size_t len;
        int opcode = read_frame_blocking(c, (unsigned char *)out, cap, &len, 0);
        if (opcode == 8) {
            unsigned code = len >= 2 ? (unsigned)(unsigned char)out[0] << 8 | (unsigned char)out[1] : 0;
            die("conn %d: relay closed the connection during pairing: %u %.*s", c->id, code,
                (int)(len >= 2 ? len - 2 : 0), out + 2);
        }
        if (opcode == 1) return;
    }
}

static void send_out_blocking(struct conn *c) {
    send_all(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    c->out_off = c->out_len = 0;
}

static void send_text_blocking(struct conn *c, const char *s) {
    put_text(c, s);
    send_out_blocking(c);
}

static void expect_type(struct conn *c, const char *type) {
    char msg[4096], want[64];
    read_text_blocking(c, msg, sizeof msg);
    snprintf(want, sizeof want, "\"t\":\"%s\"", type);
    if (!strstr(msg, want)) die("conn %d: expected %s, got %s", c->id, type, msg);
}

static void tube_allocate(int port, char *nameplate, size_t cap) {
    struct conn tmp = {.id = -1};
    tmp.fd = connect_blocking(port);
    char req[256];
    int n = snprintf(req, sizeof req,
                     "POST /v1/nameplates HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     opt_host, port);
    send_all(tmp.fd, req, (size_t)n);
    size_t head = read_until(&tmp, "\r\n\r\n");
    if (strncmp((char *)tmp.pre, "HTTP/1.1 201", 12) != 0)
        die("POST /v1/nameplates: %.*s", (int)head, tmp.pre);
    char *cl = strcasestr((char *)tmp.pre, "\r\ncontent-length:");
    size_t body = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
    while (tmp.pre_len < head + body) {
        ssize_t k = recv(tmp.fd, tmp.pre + tmp.pre_len, sizeof tmp.pre - 1 - tmp.pre_len, 0);
        if (k <= 0) break;
        tmp.pre_len += (size_t)k;
    }
    tmp.pre[tmp.pre_len] = 0;
    char *np = strstr((char *)tmp.pre + head, "\"nameplate\"");
    if (!np) die("no nameplate in %s", tmp.pre + head);
    np = strchr(np + 11, '"');
    if (!np) die("bad nameplate in %s", tmp.pre + head);
    size_t i = 0;
    for (np++; *np && *np != '"' && i + 1 < cap; np++) nameplate[i++] = *np;
    nameplate[i] = 0;
    close(tmp.fd);
}

static void tube_upgrade(struct conn *c, const char *host, int port, const char *path) {
    unsigned char raw[16];
    for (int i = 0; i < 16; i++) raw[i] = (unsigned char)rng_next();
    char key[32], buf[128], accept[32], req[1024];
    base64(raw, 16, key);
    int n = snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char digest[20];
    sha1((unsigned char *)buf, (size_t)n, digest);
    base64(digest, 20, accept);
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: tube.relay.v1\r\n\r\n",
                 path, host, port, key);
    if (n <= 0 || (size_t)n >= sizeof req) die("conn %d: request line too long", c->id);
    send_all(c->fd, req, (size_t)n);
    size_t head = read_until(c, "\r\n\r\n");
    char saved = (char)c->pre[head];
    c->pre[head] = 0;
    if (strncmp((char *)c->pre, "HTTP/1.1 101", 12) != 0) die("conn %d: upgrade refused: %s", c->id, c->pre);
    if (!strstr((char *)c->pre, accept)) die("conn %d: wrong Sec-WebSocket-Accept: %s", c->id, c->pre);
    if (!strcasestr((char *)c->pre, "\r\nsec-websocket-protocol: tube.relay.v1"))
        die("conn %d: subprotocol not selected: %s", c->id, c->pre);
    if (strcasestr((char *)c->pre, "\r\nsec-websocket-extensions:"))
        die("conn %d: an extension was negotiated: %s", c->id, c->pre);
    c->pre[head] = (unsigned char)saved;
    consume_pre(c, head);
}

/* the "url" of a redirect message, ws://HOST[:PORT]/PATH, split */
static void parse_redirect(struct conn *c, const char *msg, char *host, size_t hcap, int *port,
                           char *path, size_t pcap) {
    const char *u = strstr(msg, "\"url\":");
    if (!u) die("conn %d: redirect without a url: %s", c->id, msg);
    u = strchr(u + 6, '"');
    if (!u) die("conn %d: bad redirect: %s", c->id, msg);
    u++;
    if (strncmp(u, "ws://", 5) != 0) die("conn %d: cannot follow a redirect to %s (ws:// only)", c->id, u);
    u += 5;
    size_t hl = strcspn(u, ":/\"");
    if (hl == 0 || hl >= hcap) die("conn %d: bad host in redirect: %s", c->id, msg);
    memcpy(host, u, hl);
    host[hl] = 0;
    u += hl;
    *port = 80;
    if (*u == ':') {
        char *end;
        long p = strtol(u + 1, &end, 10);
        if (end == u + 1 || p <= 0 || p > 65535) die("conn %d: bad port in redirect: %s", c->id, msg);
        *port = (int)p;
        u = end;
    }
    size_t pl = strcspn(u, "\"");
    if (pl == 0) {
        snprintf(path, pcap, "/");
    } else {
        if (*u != '/' || pl >= pcap) die("conn %d: bad path in redirect: %s", c->id, msg);
        memcpy(path, u, pl);
        path[pl] = 0;
    }
}

/* a WebSocket to /v1/relay/<nameplate> on port, hello, and the relay's answer: welcome, or a
   redirect to the owning instance, followed (a new connection, hello again; at most
   MAX_REDIRECTS). The redirected connection gets its close frame and is closed after pairing
   (drop_stale), so no reset crosses the relay's closing handshake. */
static void tube_open(struct conn *c, int port, const char *nameplate, const char *hello) {
    char host[256], path[512], msg[4096];
    snprintf(host, sizeof host, "%s", opt_host);
    snprintf(path, sizeof path, "/v1/relay/%s", nameplate);
    for (;;) {
        c->fd = connect_to(host, port);
        c->pre_len = 0;
        tube_upgrade(c, host, port, path);
        send_text_blocking(c, hello);
        read_text_blocking(c, msg, sizeof msg);
        if (strstr(msg, "\"t\":\"welcome\"")) {
            c->port = port;
            return;
        }
        if (!strstr(msg, "\"t\":\"redirect\""))
            die("conn %d: expected welcome or redirect, got %s", c->id, msg);
        if (c->redirects >= MAX_REDIRECTS) die("conn %d: more than %d redirects (last: %s)", c->id, MAX_REDIRECTS, msg);
        parse_redirect(c, msg, host, sizeof host, &port, path, sizeof path);
        put_close(c);
        send_out_blocking(c);
        c->sent_close = 0;
        c->stale[c->nstale++] = c->fd;
        c->redirects++;
    }
}

/* close the connections that redirects left: the relay has closed them by now */
static void drop_stale(struct conn *c) {
    unsigned char buf[4096];
    for (int i = 0; i < c->nstale; i++) {
        struct timeval tv = {.tv_sec = 2};
        setsockopt(c->stale[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        while (recv(c->stale[i], buf, sizeof buf, 0) > 0) {
        }
        close(c->stale[i]);
    }
    c->nstale = 0;
}

static const char HELLO_SEND[] = "{\"t\":\"hello\",\"v\":1,\"role\":\"send\"}";
static const char HELLO_RECV[] = "{\"t\":\"hello\",\"v\":1,\"role\":\"recv\"}";

/* allocate on port, the sender waits, the receiver claims, both read paired (tube) */
static void tube_pair(struct conn *s, struct conn *r, int port) {
    char nameplate[64];
    tube_allocate(port, nameplate, sizeof nameplate);
    tube_open(s, port, nameplate, HELLO_SEND);
    send_text_blocking(s, "{\"t\":\"wait\"}");
    tube_open(r, port, nameplate, HELLO_RECV);
    send_text_blocking(r, "{\"t\":\"claim\"}");
    expect_type(s, "paired");
    expect_type(r, "paired");
}

static void hex(char *out, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[i] = digits[rng_next() & 15];
    out[n] = 0;
}

static void line_handshake(struct conn *c, const char *line) {
    send_all(c->fd, line, strlen(line));
}

static void line_answer(struct conn *c) {
    size_t end = read_until(c, "\n");
    if (end != 3 || memcmp(c->pre, "ok\n", 3) != 0)
        die("conn %d: expected \"ok\\n\", got %.*s", c->id, (int)end, c->pre);
    consume_pre(c, end);
}

static void pair_up(struct conn *s, struct conn *r, int port) {
    if (opt_mode == M_TUBE) {
        tube_pair(s, r, port);
    } else {
        s->fd = connect_blocking(port);
        r->fd = connect_blocking(port);
        char line[160], token[65], side_s[17], side_r[17];
        hex(token, 64);
        if (opt_mode == M_SPLICE) {
            snprintf(line, sizeof line, "pair %s\n", token);
            line_handshake(s, line);
            line_handshake(r, line);
        } else {
            hex(side_s, 16);
            hex(side_r, 16);
            snprintf(line, sizeof line, "please relay %s for side %s\n", token, side_s);
            line_handshake(s, line);
            snprintf(line, sizeof line, "please relay %s for side %s\n", token, side_r);
            line_handshake(r, line);
        }
        line_answer(s);
        line_answer(r);
    }
}

/* ------------------------------------------------------------------ event loop */

static void flush_out(struct conn *c) {
    for (;;) {
        if (c->out_len == c->out_off) {
            if (!c->is_sender || ending || c->frames_out >= frames_per_pair) break;
            if (c->throttled) break;
            if (c->rate > 0 && (double)c->counted > c->rate * (now_s() - t_start) + FRAME) {
                c->throttled = 1;
                break;
            }
            put_frame(c, 2, NULL, FRAME, c->frames_out);
            c->frames_out++;
        }
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            c->counted += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        die("conn %d (%s): send: %s", c->id, c->is_sender ? "sender" : "receiver", strerror(errno));
    }
    update_events(c);
}

static void close_conn(struct conn *c) {
    if (c->closed) return;
    c->closed = 1;
    update_events(c);
    close(c->fd);
    conns_closed++;
}

static void on_control(struct conn *c) {
    if (c->opcode == 9) { /* ping: pong */
        put_frame(c, 10, c->ctl, c->ctl_len, 0);
        flush_out(c);
    } else if (c->opcode == 8) {
        c->got_close = 1;
        if (!ending) {
            unsigned code = c->ctl_len >= 2 ? (unsigned)c->ctl[0] << 8 | c->ctl[1] : 0;
            die("conn %d (%s): relay closed the connection mid-transfer: %u %.*s", c->id,
                c->is_sender ? "sender" : "receiver", code, (int)(c->ctl_len > 2 ? c->ctl_len - 2 : 0),
                (char *)c->ctl + 2);
        }
        close_conn(c);
    } else if (c->opcode == 1 && !ending) {
        /* a control message mid-transfer (peer lost, error): fatal for the run */
        die("conn %d: unexpected message mid-transfer: %.*s", c->id, (int)c->ctl_len, (char *)c->ctl);
    }
}

static void frame_done(struct conn *c) {
    if (c->opcode == 2) {
        if (c->is_sender) die("conn %d: binary frame to the sender", c->id);
        c->frames_in++;
        c->bytes_in += c->plen;
        if (c->frames_in == frames_per_pair) __atomic_add_fetch(&receivers_done, 1, __ATOMIC_RELAXED);
    } else {
        on_control(c);
    }
    c->in_payload = 0;
    c->hdr_len = 0;
}

static void parse(struct conn *c, const unsigned char *p, size_t n) {
    while (n > 0 && !c->closed) {
        if (!c->in_payload) {
            if (c->hdr_len < 2) {
                c->hdr[c->hdr_len++] = *p++, n--;
                if (c->hdr_len == 2) {
                    size_t l = c->hdr[1] & 0x7f;
                    c->hdr_need = 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
                } else {
                    continue;
                }
            } else {
                c->hdr[c->hdr_len++] = *p++, n--;
            }
            if (c->hdr_len < c->hdr_need) continue;
            /* header complete */
            if ((c->hdr[0] & 0x80) == 0) die("conn %d: fragmented frame", c->id);
            c->opcode = c->hdr[0] & 0x0f;
            c->masked = (c->hdr[1] & 0x80) != 0;
            if (opt_mode == M_TUBE && c->masked) die("conn %d: masked frame from the relay", c->id);
            if (opt_mode != M_TUBE && !c->masked) die("conn %d: frame lost its mask", c->id);
            uint64_t l = c->hdr[1] & 0x7f;
            size_t h = 2;
            if (l == 126) l = (uint64_t)c->hdr[2] << 8 | c->hdr[3], h = 4;
            else if (l == 127) {
                l = 0;
                for (int i = 0; i < 8; i++) l = l << 8 | c->hdr[2 + i];
                h = 10;
            }
            if (c->masked) memcpy(c->key, c->hdr + h, 4);
            c->plen = l;
            c->ppos = 0;
            c->ctl_len = 0;
            c->in_payload = 1;
            if (c->opcode == 2) {
                if (l != FRAME) die("conn %d: binary frame of %llu bytes, expected %u", c->id,
                                    (unsigned long long)l, FRAME);
                if (c->frames_in >= frames_per_pair) die("conn %d: more frames than sent", c->id);
            } else if (c->opcode != 1 && c->opcode != 8 && c->opcode != 9 && c->opcode != 10) {
                die("conn %d: unexpected opcode %d", c->id, c->opcode);
            } else if (l > sizeof c->ctl) {
                die("conn %d: control frame of %llu bytes", c->id, (unsigned long long)l);
            }
            if (l == 0) frame_done(c);
            continue;
        }
        uint64_t take = c->plen - c->ppos;
        if (take > n) take = n;
        if (c->opcode == 2) {
            uint64_t seq = c->frames_in;
            uint64_t a = c->ppos, b = c->ppos + take;
            /* the type byte and the sequence number, then one byte in every SAMPLE_STEP */
            for (uint64_t q = a; q < b && q < 9; q++) {
                unsigned char got = p[q - a] ^ (c->masked ? c->key[q & 3] : 0);
                if (got != expected(seq, q))
                    die("conn %d: frame %llu byte %llu is %u, expected %u (lost or reordered frame?)",
                        c->id, (unsigned long long)seq, (unsigned long long)q, got, expected(seq, q));
            }
            uint64_t q = (a + SAMPLE_STEP - 1) / SAMPLE_STEP * SAMPLE_STEP;
            if (q < 9) q = SAMPLE_STEP;
            for (; q < b; q += SAMPLE_STEP) {
                unsigned char got = p[q - a] ^ (c->masked ? c->key[q & 3] : 0);
                if (got != expected(seq, q))
                    die("conn %d: frame %llu byte %llu corrupted", c->id, (unsigned long long)seq,
                        (unsigned long long)q);
            }
        } else {
            for (uint64_t i = 0; i < take; i++)
                c->ctl[c->ctl_len++] = p[i] ^ (c->masked ? c->key[(c->ppos + i) & 3] : 0);
        }
        c->ppos += take;
        p += take, n -= take;
        if (c->ppos == c->plen) frame_done(c);
    }
}

static void on_readable(struct conn *c) {
    for (int rounds = 0; rounds < 4 && !c->closed; rounds++) {
        size_t want = sizeof rbuf;
        if (!c->is_sender && c->rate > 0 && !ending) {
            double allowed = c->rate * (now_s() - t_start) + RECV_BURST - (double)c->counted;
            if (allowed < RECV_QUANTUM) {
                c->throttled = 1;
                update_events(c);
                return;
            }
            if ((double)want > allowed) want = (size_t)allowed;
        }
        ssize_t n = recv(c->fd, rbuf, want, 0);
        if (n > 0) {
            c->counted += (uint64_t)n;
            parse(c, rbuf, (size_t)n);
            if ((size_t)n < want) return;
            continue;
        }
        if (n == 0) {
            if (!ending) die("conn %d (%s): relay closed the connection mid-transfer", c->id,
                             c->is_sender ? "sender" : "receiver");
            close_conn(c);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        if (ending) {
            close_conn(c);
            return;
        }
        die("conn %d: recv: %s", c->id, strerror(errno));
    }
}

static void unthrottle(void) {
    double t = now_s() - t_start;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (!c->throttled || c->closed) continue;
        double budget = c->is_sender ? c->rate * t + FRAME : c->rate * t + RECV_BURST - RECV_QUANTUM;
        if ((double)c->counted <= budget) {
            c->throttled = 0;
            if (c->is_sender) flush_out(c);
            else update_events(c);
        }
    }
}

static void sample_rss(void) {
    long kb = proc_status_kb(opt_server_pid, "VmRSS:");
    if (kb > rss_max_kb) rss_max_kb = kb;
}

static void loop_until(int (*cond)(void), double deadline, const char *what) {
    struct epoll_event evs[64];
    double next_sample = 0;
    while (!cond()) {
        double t = now_s();
        if (t > deadline) {
            if (ending) return;
            uint64_t got = 0;
            for (int i = 0; i < nconns; i++) got += conns[i].frames_in;
            die("timed out %s (%llu of %llu frames received)", what, (unsigned long long)got,
                (unsigned long long)frames_per_pair * (uint64_t)opt_pairs);
        }
        if (t >= next_sample) {
            sample_rss();
            next_sample = t + 0.01;
        }
        int throttling = opt_recv_rate > 0 || opt_send_rate > 0;
        int n = epoll_wait(epfd, evs, 64, throttling ? 1 : 10);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->closed) continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            if (!c->closed && (evs[i].events & EPOLLOUT)) flush_out(c);
        }
        if (throttling) unthrottle();
    }
}

static int cond_received(void) { return receivers_done >= opt_pairs; }
static int cond_closed(void) { return conns_closed >= nconns; }

/* ------------------------------------------------------------------ churn and latency runs */

static void cpu_of_pids(double *out) {
    for (int i = 0; i < opt_ncpu_pids; i++) out[i] = proc_cpu_split(opt_cpu_pids[i], NULL);
}

/* the whole machine's CPU seconds so far from the first line of /proc/stat: v[0] the tasks'
   (user + nice + system: every process, ours and others'), v[1] irq + softirq (here mostly
   the loopback traffic's own receive processing, charged to no process), v[2] steal */
static int machine_cpu(double v[3]) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long t[8] = {0};
    if (!f) return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &t[0], &t[1], &t[2], &t[3],
                   &t[4], &t[5], &t[6], &t[7]);
    fclose(f);
    if (n < 8) return 0;
    double tck = (double)sysconf(_SC_CLK_TCK);
    v[0] = (double)(t[0] + t[1] + t[2]) / tck;
    v[1] = (double)(t[5] + t[6]) / tck;
    v[2] = (double)t[7] / tck;
    return 1;
}

static void print_machine(int ok, const double a[3], const double b[3]) {
    if (!ok) return;
    printf("\"machine_tasks_s\": %.4f, \"machine_irq_s\": %.4f, \"machine_steal_s\": %.4f, ",
           b[0] - a[0], b[1] - a[1], b[2] - a[2]);
}

static void print_cpu_by_pid(const double *before, const double *after) {
    printf("\"cpu_by_pid\": [");
    for (int i = 0; i < opt_ncpu_pids; i++)
        printf("%s%.4f", i ? ", " : "", before[i] >= 0 && after[i] >= 0 ? after[i] - before[i] : -1.0);
    printf("]");
}

static void set_blocking(int fd, int blocking) {
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
}

static void poll_recv(struct conn *c, unsigned char *buf, size_t cap) {
    for (;;) {
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n > 0) {
            parse(c, buf, (size_t)n);
            if ((size_t)n < cap) return;
            continue;
        }
        if (n == 0) die("conn %d (%s): relay closed the connection mid-transfer", c->id,
                        c->is_sender ? "sender" : "receiver");
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        die("conn %d: recv: %s", c->id, strerror(errno));
    }
}

/* one pair's frames, sender to receiver, checked like the stream run's (poll, no epoll) */
static void transfer_poll(struct conn *s, struct conn *r, unsigned char *buf, size_t cap) {
    set_blocking(s->fd, 0);
    set_blocking(r->fd, 0);
    struct conn *both[2] = {s, r};
    for (int i = 0; i < 2; i++) {
        if (both[i]->pre_len) parse(both[i], both[i]->pre, both[i]->pre_len);
        both[i]->pre_len = 0;
    }
    double deadline = now_s() + opt_timeout;
    while (r->frames_in < frames_per_pair) {
        struct pollfd p[2];
        for (int i = 0; i < 2; i++) {
            struct conn *c = both[i];
            p[i].fd = c->fd;
            p[i].events = POLLIN;
            if (c->out_len > c->out_off || (c->is_sender && c->frames_out < frames_per_pair))
                p[i].events |= POLLOUT;
        }
        int n = poll(p, 2, 1000);
        if (n < 0 && errno != EINTR) die("poll: %s", strerror(errno));
        if (now_s() > deadline)
            die("timed out waiting for the frames (%llu of %llu)", (unsigned long long)r->frames_in,
                (unsigned long long)frames_per_pair);
        for (int i = 0; i < 2; i++) {
            if (p[i].revents & POLLOUT) flush_out(both[i]);
            if (p[i].revents & (POLLIN | POLLERR | POLLHUP)) poll_recv(both[i], buf, cap);
        }
    }
    set_blocking(s->fd, 1);
    set_blocking(r->fd, 1);
}

/* bye and a close frame on both, then wait for the relay's close frame (or its EOF) */
static void tube_finish(struct conn *s, struct conn *r) {
    struct conn *both[2] = {s, r};
    for (int i = 0; i < 2; i++) {
        put_text(both[i], "{\"t\":\"bye\",\"mood\":\"happy\"}");
        put_close(both[i]);
        send_out_blocking(both[i]);
    }
    unsigned char msg[8192];
    for (int i = 0; i < 2; i++) {
        struct conn *c = both[i];
        struct timeval tv = {.tv_sec = (time_t)opt_close_timeout};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        for (;;) {
            size_t len;
            int opcode = read_frame_blocking(c, msg, sizeof msg, &len, 1);
            if (opcode < 0) break;
            if (opcode == 8) {
                c->got_close = 1;
                break;
            }
        }
        close(c->fd);
    }
}

static void free_conn(struct conn *c) {
    free(c->out);
    free(c);
}

static struct conn *new_conn(int id, int is_sender) {
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("out of memory");
    c->id = id;
    c->is_sender = is_sender;
    return c;
}

/* churn: many short pairs through the relay, opt_concurrency of them in flight */
struct churn_result {
    double t0, t_paired, t_last, t_closed;
    int redirects, direct, clean;
};
static struct churn_result *churn;
static int churn_next; /* the next pair to start (atomic) */
static uint64_t churn_seed;

static void *churn_worker(void *arg) {
    rng_state = __atomic_add_fetch(&churn_seed, 0x9E3779B97F4A7C15ull, __ATOMIC_RELAXED) | 1;
    size_t cap = 1 << 18;
    unsigned char *buf = malloc(cap);
    if (!buf) die("out of memory");
    (void)arg;
    for (;;) {
        int k = __atomic_fetch_add(&churn_next, 1, __ATOMIC_RELAXED);
        if (k >= opt_pairs) break;
        struct conn *s = new_conn(2 * k, 1), *r = new_conn(2 * k + 1, 0);
        s->peer = r, r->peer = s;
        struct churn_result *res = &churn[k];
        int port = port_for(k);
        res->t0 = now_s();
        tube_pair(s, r, port);
        res->t_paired = now_s();
        transfer_poll(s, r, buf, cap);
        res->t_last = now_s();
        drop_stale(s);
        drop_stale(r);
        tube_finish(s, r);
        res->t_closed = now_s();
        res->redirects = s->redirects + r->redirects;
        res->direct = s->port != port || r->port != port;
        res->clean = s->got_close + r->got_close;
        free_conn(s);
        free_conn(r);
    }
    free(buf);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, int n, double q) {
    if (n == 0) return -1;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double pos = q * (n - 1);
    int i = (int)pos;
    return i + 1 < n ? v[i] + (v[i + 1] - v[i]) * (pos - i) : v[i];
}

static int run_churn(void) {
    if (opt_mode != M_TUBE) die("--run churn needs --mode tube");
    churn = calloc((size_t)opt_pairs, sizeof *churn);
    if (!churn) die("out of memory");
    churn_seed = rng_next();
    int nthreads = opt_concurrency < opt_pairs ? opt_concurrency : opt_pairs;
    pthread_t *threads = calloc((size_t)nthreads, sizeof *threads);
    if (!threads) die("out of memory");
    double before[MAX_PIDS], after[MAX_PIDS];
    cpu_of_pids(before);
    double m0[3], m1[3];
    int m_ok = machine_cpu(m0);
    double self0 = self_cpu_s();
    double t0 = now_s();
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&threads[i], NULL, churn_worker, NULL) != 0) die("pthread_create failed");
    for (int i = 0; i < nthreads; i++) pthread_join(threads[i], NULL);
    double t_all = now_s();
    cpu_of_pids(after);
    m_ok = m_ok && machine_cpu(m1);
    double self1 = self_cpu_s();
    double t_last = t0;
    double *lat = malloc(sizeof(double) * (size_t)opt_pairs);
    double *paired = malloc(sizeof(double) * (size_t)opt_pairs);
    if (!lat || !paired) die("out of memory");
    int direct = 0, redirects = 0, clean = 0;
    for (int k = 0; k < opt_pairs; k++) {
        struct churn_result *c = &churn[k];
        if (c->t_last > t_last) t_last = c->t_last;
        lat[k] = c->t_last - c->t0;
        paired[k] = c->t_paired - c->t0;
        direct += c->direct;
        redirects += c->redirects;
        clean += c->clean;
    }
    double seconds = t_last - t0;
    printf("{\"run\": \"churn\", \"pairs\": %d, \"concurrency\": %d, \"frames_per_pair\": %llu, "
           "\"seconds\": %.6f, \"seconds_with_closes\": %.6f, \"pairs_per_s\": %.3f, "
           "\"pair_s_median\": %.6f, \"pair_s_p90\": %.6f, \"paired_s_median\": %.6f, "
           "\"redirects\": %d, \"redirected_pairs\": %d, \"clean_closes\": %d, "
           "\"peer_cpu_s\": %.4f, ",
           opt_pairs, nthreads, (unsigned long long)frames_per_pair, seconds, t_all - t0,
           opt_pairs / seconds, quantile(lat, opt_pairs, 0.5), quantile(lat, opt_pairs, 0.9),
           quantile(paired, opt_pairs, 0.5), redirects, direct, clean, self1 - self0);
    print_machine(m_ok, m0, m1);
    print_cpu_by_pid(before, after);
    printf("}\n");
    return 0;
}

/* latency: one pair at a time; per pair the allocation's round trip, the time from the
   sender's connect to both sides' paired (redirects included), and the median of opt_rtts
   small-frame round trips sender -> receiver -> sender */
static void small_frame(struct conn *from, struct conn *to, const unsigned char *payload) {
    put_frame(from, 2, payload, RTT_BYTES, 0);
    send_out_blocking(from);
    unsigned char msg[8192];
    for (;;) {
        size_t len;
        int opcode = read_frame_blocking(to, msg, sizeof msg, &len, 0);
        if (opcode == 2) {
            if (len != RTT_BYTES || memcmp(msg, payload, RTT_BYTES) != 0)
                die("conn %d: the small frame arrived changed", to->id);
            return;
        }
        if (opcode == 9) {
            put_frame(to, 10, msg, len, 0);
            send_out_blocking(to);
        } else if (opcode != 10) {
            die("conn %d: unexpected message (opcode %d) during the round trips: %.*s", to->id,
                opcode, (int)len, (char *)msg);
        }
    }
}

static int run_latency(void) {
    if (opt_mode != M_TUBE) die("--run latency needs --mode tube");
    double *alloc = malloc(sizeof(double) * (size_t)opt_pairs);
    double *paired = malloc(sizeof(double) * (size_t)opt_pairs);
    double *rtt = malloc(sizeof(double) * (size_t)opt_pairs);
    int *redirects = malloc(sizeof(int) * (size_t)opt_pairs);
    double *samples = malloc(sizeof(double) * (size_t)(opt_rtts > 0 ? opt_rtts : 1));
    if (!alloc || !paired || !rtt || !redirects || !samples) die("out of memory");
    unsigned char payload[RTT_BYTES];
    double before[MAX_PIDS], after[MAX_PIDS], m0[3], m1[3];
    cpu_of_pids(before);
    int m_ok = machine_cpu(m0);
    double self0 = self_cpu_s(), t_begin = now_s();
    for (int k = 0; k < opt_pairs; k++) {
        struct conn *s = new_conn(2 * k, 1), *r = new_conn(2 * k + 1, 0);
        s->peer = r, r->peer = s;
        int port = port_for(k);
        char nameplate[64];
        double t0 = now_s();
        tube_allocate(port, nameplate, sizeof nameplate);
        double t1 = now_s();
        tube_open(s, port, nameplate, HELLO_SEND);
        send_text_blocking(s, "{\"t\":\"wait\"}");
        tube_open(r, port, nameplate, HELLO_RECV);
        send_text_blocking(r, "{\"t\":\"claim\"}");
        expect_type(s, "paired");
        expect_type(r, "paired");
        double t2 = now_s();
        drop_stale(s);
        drop_stale(r);
        for (int i = 0; i < opt_rtts; i++) {
            for (int j = 0; j < RTT_BYTES; j++) payload[j] = (unsigned char)rng_next();
            payload[0] = 0x42;
            double a = now_s();
            small_frame(s, r, payload);
            small_frame(r, s, payload);
            samples[i] = now_s() - a;
        }
        tube_finish(s, r);
        alloc[k] = t1 - t0;
        paired[k] = t2 - t1;
        rtt[k] = quantile(samples, opt_rtts, 0.5);
        redirects[k] = s->redirects + r->redirects;
        free_conn(s);
        free_conn(r);
    }
    double seconds = now_s() - t_begin, self1 = self_cpu_s();
    cpu_of_pids(after);
    m_ok = m_ok && machine_cpu(m1);
    printf("{\"run\": \"latency\", \"pairs\": %d, \"rtts_per_pair\": %d, \"rtt_bytes\": %d, "
           "\"seconds\": %.6f, \"peer_cpu_s\": %.4f, ",
           opt_pairs, opt_rtts, RTT_BYTES, seconds, self1 - self0);
    print_machine(m_ok, m0, m1);
    print_cpu_by_pid(before, after);
    const char *names[3] = {"alloc_s", "paired_s", "rtt_s"};
    double *arrays[3] = {alloc, paired, rtt};
    for (int a = 0; a < 3; a++) {
        printf(", \"%s\": [", names[a]);
        for (int k = 0; k < opt_pairs; k++) printf("%s%.6f", k ? ", " : "", arrays[a][k]);
        printf("]");
    }
    printf(", \"redirects\": [");
    for (int k = 0; k < opt_pairs; k++) printf("%s%d", k ? ", " : "", redirects[k]);
    printf("], \"ports\": [");
    for (int k = 0; k < opt_pairs; k++) printf("%s%d", k ? ", " : "", port_for(k));
    printf("]}\n");
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: relay_peer --mode tube|splice|transit --port P[,P...] [--host H] [--pairs N]\n"
            "                  [--size BYTES] [--server-pid PID] [--recv-rate B/s] [--send-rate B/s]\n"
            "                  [--timeout S] [--cpu-pids PID[,PID...]]\n"
            "                  [--run stream|churn|latency] [--concurrency K] [--rtts R]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--mode")) {
            const char *m = NEXT();
            if (!strcmp(m, "tube")) opt_mode = M_TUBE;
            else if (!strcmp(m, "splice")) opt_mode = M_SPLICE;
            else if (!strcmp(m, "transit")) opt_mode = M_TRANSIT;
            else usage();
        } else if (!strcmp(a, "--host")) opt_host = NEXT();
        else if (!strcmp(a, "--port")) {
            char *list = NEXT(), *end;
            opt_nports = 0;
            for (;;) {
                long p = strtol(list, &end, 10);
                if (end == list || p <= 0 || p > 65535 || opt_nports == MAX_PORTS) usage();
                opt_ports[opt_nports++] = (int)p;
                if (*end != ',') break;
                list = end + 1;
            }
            if (*end) usage();
            opt_port = opt_ports[0];
        } else if (!strcmp(a, "--cpu-pids")) {
            char *list = NEXT(), *end;
            opt_ncpu_pids = 0;
            for (;;) {
                long p = strtol(list, &end, 10);
                if (end == list || p <= 0 || opt_ncpu_pids == MAX_PIDS) usage();
                opt_cpu_pids[opt_ncpu_pids++] = (int)p;
                if (*end != ',') break;
                list = end + 1;
            }
            if (*end) usage();
        } else if (!strcmp(a, "--run")) {
            const char *m = NEXT();
            if (!strcmp(m, "stream")) opt_run = R_STREAM;
            else if (!strcmp(m, "churn")) opt_run = R_CHURN;
            else if (!strcmp(m, "latency")) opt_run = R_LATENCY;
            else usage();
        } else if (!strcmp(a, "--concurrency")) opt_concurrency = atoi(NEXT());
        else if (!strcmp(a, "--rtts")) opt_rtts = atoi(NEXT());
        else if (!strcmp(a, "--pairs")) opt_pairs = atoi(NEXT());
        else if (!strcmp(a, "--size")) opt_size = strtoull(NEXT(), NULL, 10);
        else if (!strcmp(a, "--server-pid")) opt_server_pid = atoi(NEXT());
        else if (!strcmp(a, "--recv-rate")) opt_recv_rate = atof(NEXT());
        else if (!strcmp(a, "--send-rate")) opt_send_rate = atof(NEXT());
        else if (!strcmp(a, "--timeout")) opt_timeout = atof(NEXT());
        else usage();
    }
    if (opt_port <= 0 || opt_pairs <= 0 || opt_size == 0 || opt_concurrency <= 0 || opt_rtts < 0) usage();
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&rng_state, sizeof rng_state, 1, ur) != 1) die("no /dev/urandom");
    fclose(ur);
    rng_state |= 1;
    pattern = malloc(PATTERN_SPAN + FRAME);
    if (!pattern) die("out of memory");
    for (size_t i = 0; i < PATTERN_SPAN + FRAME; i++) pattern[i] = (unsigned char)(rng_next() >> 56);
    frames_per_pair = (opt_size + CHUNK - 1) / CHUNK;
    if (opt_run == R_CHURN) return run_churn();
    if (opt_run == R_LATENCY) return run_latency();

    /* baseline before any connection */
    long rss_base = proc_status_kb(opt_server_pid, "VmRSS:");

    nconns = 2 * opt_pairs;
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) die("out of memory");
    double t_pair = now_s();
    for (int p = 0; p < opt_pairs; p++) {
        struct conn *s = &conns[2 * p], *r = &conns[2 * p + 1];
        s->id = 2 * p, r->id = 2 * p + 1;
        s->is_sender = 1;
        s->peer = r, r->peer = s;
        s->rate = opt_send_rate, r->rate = opt_recv_rate;
        pair_up(s, r, port_for(p));
    }
    int redirects = 0, redirected = 0;
    for (int p = 0; p < opt_pairs; p++) {
        struct conn *s = &conns[2 * p], *r = &conns[2 * p + 1];
        redirects += s->redirects + r->redirects;
        redirected += s->redirects + r->redirects > 0;
        drop_stale(s);
        drop_stale(r);
    }
    double pairing_s = now_s() - t_pair;
    long rss_paired = proc_status_kb(opt_server_pid, "VmRSS:");
    int hwm_reset = reset_hwm(opt_server_pid);
    rss_max_kb = rss_paired;

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        int fl = fcntl(c->fd, F_GETFL);
        fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl: %s", strerror(errno));
        c->ev = EPOLLIN;
        c->in_epoll = 1;
    }
    double cpu0_user = 0, cpu1_user = 0;
    double cpu0 = proc_cpu_split(opt_server_pid, &cpu0_user);
    double self0 = self_cpu_s();
    double pids0[MAX_PIDS], pids1[MAX_PIDS];
    cpu_of_pids(pids0);
    double m0[3], m1[3];
    int m_ok = machine_cpu(m0);
    t_start = now_s();
    /* leftovers from the handshake phase (none expected), then go */
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->pre_len) parse(c, c->pre, c->pre_len);
        c->pre_len = 0;
        if (c->is_sender) flush_out(c);
    }
    loop_until(cond_received, t_start + opt_timeout, "waiting for the frames");
    double t_end = now_s();
    double cpu1 = proc_cpu_split(opt_server_pid, &cpu1_user);
    double self1 = self_cpu_s();
    cpu_of_pids(pids1);
    m_ok = m_ok && machine_cpu(m1);
    sample_rss();
    long hwm = proc_status_kb(opt_server_pid, "VmHWM:");
    long rss_end = proc_status_kb(opt_server_pid, "VmRSS:");

    /* the end: bye and close (tube), or just close (raw byte relays) */
    ending = 1;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (opt_mode == M_TUBE) {
            put_text(c, "{\"t\":\"bye\",\"mood\":\"happy\"}");
            put_close(c);
            flush_out(c);
        } else {
            close_conn(c);
        }
    }
    loop_until(cond_closed, now_s() + opt_close_timeout, "closing");
    int clean = 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].got_close || opt_mode != M_TUBE) clean++;
        if (!conns[i].closed) close_conn(&conns[i]);
    }

    double seconds = t_end - t_start;
    uint64_t bytes = 0;
    for (int i = 0; i < nconns; i++) bytes += conns[i].bytes_in;
    long peak = hwm_reset && hwm > 0 ? hwm : rss_max_kb;
    printf("{\"pairs\": %d, \"frames_per_pair\": %llu, \"frame_bytes\": %u, \"bytes\": %llu, "
           "\"seconds\": %.6f, \"mb_per_s\": %.3f, \"pairing_s\": %.4f, "
           "\"server_cpu_s\": %.4f, \"server_user_s\": %.4f, \"peer_cpu_s\": %.4f, "
           "\"rss_base_kb\": %ld, \"rss_paired_kb\": %ld, \"rss_peak_kb\": %ld, "
           "\"rss_sampled_max_kb\": %ld, \"rss_end_kb\": %ld, \"hwm_reset\": %s, "
           "\"clean_closes\": %d, \"redirects\": %d, \"redirected_pairs\": %d, ",
           opt_pairs, (unsigned long long)frames_per_pair, FRAME, (unsigned long long)bytes, seconds,
           (double)bytes / seconds / 1e6, pairing_s, cpu0 >= 0 ? cpu1 - cpu0 : -1.0,
           cpu0 >= 0 ? cpu1_user - cpu0_user : -1.0, self1 - self0, rss_base, rss_paired, peak,
           rss_max_kb, rss_end, hwm_reset ? "true" : "false", clean, redirects, redirected);
    print_machine(m_ok, m0, m1);
    print_cpu_by_pid(pids0, pids1);
    printf("}\n");
    return 0;
}
