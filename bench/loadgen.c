/*
 * loadgen.c - WebSocket load generator for Tube's benchmark suite (bench/run.py builds it).
 *
 * One thread, one epoll loop, many non-blocking connections. Every connection does a real
 * opening handshake (random Sec-WebSocket-Key, the 101 status and the Sec-WebSocket-Accept value
 * checked with a built-in SHA-1), masks every frame with a fresh random key, keeps N messages in
 * flight and checks every echo: opcode, length and every payload byte. Any mismatch aborts the run
 * with exit status 2, so a server that corrupts data cannot post a number.
 *
 * Modes
 *   --mode ws     (default) WebSocket: handshake, masked frames out, unmasked frames back.
 *   --mode raw    for a plain TCP echo (the ceiling): no handshake, the same masked frames are
 *                 sent and must come back byte for byte (they are parsed as masked frames).
 *   --idle N      open N connections (8 handshakes in flight at a time, --handshake-concurrency),
 *                 exchange one message on each, and report handshakes/s and the server's RSS growth
 *                 per connection (from /proc/PID/status, --server-pid), measured against a baseline
 *                 taken after --idle-warm connections were opened the same way. The reading is
 *                 taken after every connection has been idle for --idle-hold seconds (3), and
 *                 once right after the last echo (rss_per_conn_kb_at_open).
 *
 * Measurement: after every connection is open, --warmup seconds of load, then --duration seconds
 * measured: echoed messages and payload bytes (one direction), latency of every echo (send of
 * the first byte to the parse of the last), this process's CPU time (getrusage) and the server's
 * (utime + stime of /proc/PID/stat, all threads, dead ones included). Then every connection sends
 * a close frame and waits for the server's (bounded), and the result is printed as one JSON line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

/* ------------------------------------------------------------------ utilities */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
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

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* utime + stime of a whole process (all threads, exited ones included), in seconds; -1 if
   unknown. *user receives utime alone when not NULL. */
static double proc_cpu_split(int pid, double *user) {
    if (pid <= 0) return -1;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p) return -1;
    unsigned long long utime = 0, stime = 0;
    /* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    if (user) *user = (double)utime / (double)sysconf(_SC_CLK_TCK);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double proc_cpu_s(int pid) { return proc_cpu_split(pid, NULL); }

/* VmRSS of a process in KiB; -1 if unknown */
static long proc_rss_kb(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* xorshift64*: mask keys and handshake keys. Seeded from /dev/urandom. */
static uint64_t rng_state;
static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ------------------------------------------------------------------ SHA-1 + base64 (RFC 3174, RFC 4648) */

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

/* RFC 6455 §4.2.2: accept = base64(SHA-1(key + GUID)) */
static void accept_for(const char *key, char out[29]) {
    char buf[128];
    unsigned char digest[20];
    int n = snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1((const unsigned char *)buf, (size_t)n, digest);
    base64(digest, 20, out);
}

/* ------------------------------------------------------------------ configuration */

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static const char *opt_path = "/";
static int opt_raw = 0;
static int opt_conns = 1;
static int opt_inflight = 1;
static size_t opt_size = 16;
static int opt_text = 0;
static double opt_duration = 3.0;
static double opt_warmup = 1.0;
static int opt_server_pid = 0;
static int opt_idle = 0;           /* > 0: idle mode with this many connections */
static int opt_idle_warm = 20;     /* connections opened before the RSS baseline */
static int opt_hs_concurrency = 8; /* handshakes in flight while opening (idle mode) */
static double opt_close_timeout = 5.0;
static double opt_idle_hold = 3.0; /* idle mode: seconds all connections stay idle before the RSS reading */

/* ------------------------------------------------------------------ connections */

enum { C_NEW, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DONE };

struct conn {
    int fd;
    int state;
    int id;
    int epoll_out; /* EPOLLOUT currently registered */
    char key[32];
    char accept[32];
    unsigned char *in;
    size_t in_len, in_cap;
    unsigned char *out;
    size_t out_off, out_len, out_cap;
    /* FIFO of messages in flight: sequence number and send time */
    uint64_t *fifo_seq, *fifo_t;
    int fifo_head, fifo_count;
    uint64_t next_seq;
    long msgs_left; /* messages still to send; < 0 = unlimited */
    int in_msg;     /* inside a fragmented message */
    size_t msg_off;
    int close_sent;
};

static struct conn *conns;
static int nconns;
static int epfd;
static unsigned char *pattern; /* opt_size + 256 bytes; message seq uses pattern + seq_offset(seq) */
static int sending = 0;        /* new messages are sent after each echo */
static int measuring = 0;
static uint64_t stat_msgs, stat_bytes, stat_total_msgs;
static uint64_t *lat;
static size_t lat_len, lat_cap;
static int open_count, done_count, pending_count, echoed_once_count;
static double hs_first_start, hs_last_done;

static size_t seq_offset(uint64_t seq, int id) { return (size_t)((seq * 7 + (uint64_t)id * 13) % 251); }

static void ep_update(struct conn *c) {
    int want_out = c->state == C_CONNECTING || c->out_len > c->out_off;
    if (want_out == c->epoll_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u32 = (uint32_t)c->id};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->epoll_out = want_out;
}

static void out_reserve(struct conn *c, size_t n) {
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_cap - c->out_len >= n) return;
    if (c->out_off > 0) { /* compact */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_cap - c->out_len < n) {
        size_t cap = c->out_cap * 2;
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

/* append one masked frame (fin=1) */
static void put_frame(struct conn *c, int opcode, const unsigned char *payload, size_t len) {
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
    mask_copy(p + h, payload, len, key);
    c->out_len += h + len;
}

static void flush_out(struct conn *c) {
    while (c->out_len > c->out_off) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        die("conn %d: send: %s", c->id, strerror(errno));
    }
    ep_update(c);
}

static void send_message(struct conn *c) {
    uint64_t seq = c->next_seq++;
    int slot = (c->fifo_head + c->fifo_count) % opt_inflight;
    c->fifo_seq[slot] = seq;
    c->fifo_t[slot] = now_ns();
    c->fifo_count++;
    if (c->msgs_left > 0) c->msgs_left--;
    put_frame(c, opt_text ? 1 : 2, pattern + seq_offset(seq, c->id), opt_size);
}

static void fill_pipeline(struct conn *c) {
    while (c->state == C_OPEN && sending && c->msgs_left != 0 && c->fifo_count < opt_inflight)
        send_message(c);
    flush_out(c);
}

static void start_close(struct conn *c) {
    if (c->state == C_DONE || c->close_sent) return;
    if (c->state != C_OPEN) { /* never opened: nothing to close politely */
        close(c->fd);
        c->state = C_DONE;
        done_count++;
        return;
    }
    static const unsigned char code[2] = {0x03, 0xE8}; /* 1000 */
    put_frame(c, 8, code, 2);
    c->close_sent = 1;
    c->state = C_CLOSING;
    flush_out(c);
}

static void finish(struct conn *c) {
    if (c->state == C_DONE) return;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = C_DONE;
    done_count++;
}

static void open_conn(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
    if (inet_pton(AF_INET, opt_host, &sa.sin_addr) != 1) die("bad host %s", opt_host);
    if (pending_count == 0 && hs_first_start == 0) hs_first_start = now_s();
    pending_count++;
    int rc = connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
    if (rc < 0 && errno != EINPROGRESS) die("connect: %s", strerror(errno));
    c->state = C_CONNECTING;
    c->epoll_out = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)c->id};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add: %s", strerror(errno));
}

static void became_open(struct conn *c) {
    c->state = C_OPEN;
    pending_count--;
    open_count++;
    hs_last_done = now_s();
    fill_pipeline(c);
}

static void on_connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) die("conn %d: connect: %s", c->id, strerror(err));
    if (opt_raw) {
        c->state = C_HANDSHAKE; /* transient */
        became_open(c);
        return;
    }
    unsigned char raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next();
        memcpy(raw + i, &r, 8);
    }
    base64(raw, 16, c->key);
    accept_for(c->key, c->accept);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     opt_path, opt_host, opt_port, c->key);
    out_reserve(c, (size_t)n);
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (size_t)n;
    c->state = C_HANDSHAKE;
    flush_out(c);
}

/* returns 1 once the response head was consumed */
static int parse_handshake(struct conn *c) {
    unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len > 16384) die("conn %d: response head too large", c->id);
        return 0;
    }
    size_t head_len = (size_t)(end - c->in) + 4;
    char *head = malloc(head_len + 1);
    memcpy(head, c->in, head_len);
    head[head_len] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(head, "\r\n");
        if (eol) *eol = 0;
        die("conn %d: expected status 101, got \"%s\"", c->id, head);
    }
    int accept_ok = 0;
    for (char *line = strstr(head, "\r\n") + 2; *line && strncmp(line, "\r\n", 2) != 0;) {
        char *eol = strstr(line, "\r\n");
        *eol = 0;
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = 0;
            char *value = colon + 1;
            while (*value == ' ' || *value == '\t') value++;
            char *vend = value + strlen(value);
            while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t')) *--vend = 0;
            if (strcasecmp(line, "Sec-WebSocket-Accept") == 0) {
                if (strcmp(value, c->accept) != 0)
                    die("conn %d: bad Sec-WebSocket-Accept %s (expected %s)", c->id, value, c->accept);
                accept_ok = 1;
            } else if (strcasecmp(line, "Sec-WebSocket-Extensions") == 0) {
                die("conn %d: server negotiated an extension (%s); compression must be off", c->id, value);
            }
        }
        line = eol + 2;
    }
    free(head);
    if (!accept_ok) die("conn %d: no Sec-WebSocket-Accept header", c->id);
    memmove(c->in, c->in + head_len, c->in_len - head_len);
    c->in_len -= head_len;
    became_open(c);
    return 1;
}

static void message_done(struct conn *c) {
    uint64_t t = c->fifo_t[c->fifo_head];
    c->fifo_head = (c->fifo_head + 1) % opt_inflight;
    c->fifo_count--;
    stat_total_msgs++;
    if (measuring) {
        stat_msgs++;
        stat_bytes += opt_size;
        if (lat_len == lat_cap) {
            lat_cap = lat_cap ? lat_cap * 2 : 65536;
            lat = realloc(lat, lat_cap * sizeof *lat);
            if (!lat) die("out of memory");
        }
        lat[lat_len++] = now_ns() - t;
    }
    if (c->next_seq == 1 && c->msgs_left == 0) echoed_once_count++;
}

/* parse every complete frame in c->in */
static void parse_frames(struct conn *c) {
    size_t pos = 0;
    int need_flush = 0;
    while (c->state == C_OPEN || c->state == C_CLOSING) {
        unsigned char *p = c->in + pos;
        size_t avail = c->in_len - pos;
        if (avail < 2) break;
        int fin = p[0] >> 7, rsv = (p[0] >> 4) & 7, opcode = p[0] & 15;
        int masked = p[1] >> 7;
        uint64_t plen = p[1] & 127;
        size_t h = 2;
        if (plen == 126) {
            if (avail < 4) break;
            plen = (uint64_t)p[2] << 8 | p[3];
            h = 4;
        } else if (plen == 127) {
            if (avail < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen << 8 | p[2 + i];
            h = 10;
        }
        if (rsv) die("conn %d: RSV bits set (0x%x)", c->id, rsv);
        if (masked != opt_raw)
            die("conn %d: %s frame from the server", c->id, masked ? "masked" : "unmasked (raw echo)");
        unsigned char key[4] = {0, 0, 0, 0};
        if (masked) {
            if (avail < h + 4) break;
            memcpy(key, p + h, 4);
            h += 4;
        }
        if (plen > c->in_cap - h) die("conn %d: frame of %llu bytes is larger than expected", c->id, (unsigned long long)plen);
        if (avail < h + plen) {
            /* incomplete frame: make room for it if the buffer cannot hold it from here */
            break;
        }
        unsigned char *payload = p + h;
        if (masked) mask_copy(payload, payload, plen, key);
        pos += h + plen;
        if (opcode == 1 || opcode == 2 || opcode == 0) {
            if (opcode == 0 && !c->in_msg) die("conn %d: unexpected continuation frame", c->id);
            if (opcode != 0) {
                if (c->in_msg) die("conn %d: expected a continuation frame, got opcode %d", c->id, opcode);
                if (opcode != (opt_text ? 1 : 2))
                    die("conn %d: echo has opcode %d, sent %d", c->id, opcode, opt_text ? 1 : 2);
                if (c->fifo_count == 0) die("conn %d: message received with none in flight", c->id);
                c->in_msg = 1;
                c->msg_off = 0;
            }
            uint64_t seq = c->fifo_seq[c->fifo_head];
            if (c->msg_off + plen > opt_size)
                die("conn %d: echo longer than the %zu bytes sent", c->id, opt_size);
            if (memcmp(payload, pattern + seq_offset(seq, c->id) + c->msg_off, plen) != 0)
                die("conn %d: echo of message %llu differs from what was sent", c->id, (unsigned long long)seq);
            c->msg_off += plen;
            if (fin) {
                if (c->msg_off != opt_size)
                    die("conn %d: echo has %zu bytes, sent %zu", c->id, c->msg_off, opt_size);
                c->in_msg = 0;
                message_done(c);
                if (c->state == C_OPEN && sending && c->msgs_left != 0) {
                    send_message(c);
                    need_flush = 1;
                }
            }
        } else if (opcode == 9) { /* ping -> pong (RFC 6455 §5.5.2) */
            if (c->state == C_OPEN) {
                put_frame(c, 10, payload, plen);
                need_flush = 1;
            }
        } else if (opcode == 10) {
            /* unsolicited pong: ignored */
        } else if (opcode == 8) {
            if (!c->close_sent) die("conn %d: the server closed the connection", c->id);
            pos = c->in_len;
            finish(c);
            break;
        } else {
            die("conn %d: unknown opcode %d", c->id, opcode);
        }
    }
    if (c->state == C_DONE) return;
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    if (need_flush) flush_out(c);
}

static void on_readable(struct conn *c) {
    if (c->in_len == c->in_cap) die("conn %d: input buffer full", c->id);
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        if (c->state == C_CLOSING) {
            finish(c);
            return;
        }
        die("conn %d: recv: %s", c->id, strerror(errno));
    }
    if (n == 0) {
        if (c->state == C_CLOSING) {
            finish(c);
            return;
        }
        die("conn %d: the server closed the TCP connection (state %d)", c->id, c->state);
    }
    c->in_len += (size_t)n;
    if (c->state == C_HANDSHAKE && !parse_handshake(c)) return;
    parse_frames(c);
}

static void on_event(struct conn *c, uint32_t events) {
    if (c->state == C_DONE) return;
    if (c->state == C_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if (c->state != C_DONE && (events & EPOLLOUT)) flush_out(c);
}

static void run_loop_until(double deadline, int (*cond)(void)) {
    struct epoll_event evs[256];
    for (;;) {
        if (cond && cond()) return;
        double left = deadline - now_s();
        if (left <= 0) return;
        int timeout = (int)(left * 1000) + 1;
        if (timeout > 100) timeout = 100;
        int n = epoll_wait(epfd, evs, 256, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) on_event(&conns[evs[i].data.u32], evs[i].events);
    }
}

/* ------------------------------------------------------------------ phases */

static int idle_target_open, idle_next;

static int cond_all_open(void) { return open_count >= nconns; }
static int cond_all_done(void) { return done_count >= nconns; }
static int cond_all_drained(void) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].fifo_count > 0) return 0;
    return 1;
}
static int cond_idle_open(void) {
    /* keep opening while below the concurrency limit */
    while (idle_next < idle_target_open && pending_count < opt_hs_concurrency) open_conn(&conns[idle_next++]);
    return open_count >= idle_target_open;
}
static int idle_echo_target;
static int cond_idle_echoed(void) { return echoed_once_count >= idle_echo_target; }

static void init_conn(struct conn *c, int id) {
    memset(c, 0, sizeof *c);
    c->id = id;
    c->fd = -1;
    c->in_cap = opt_size + 14 + 65536;
    c->in = malloc(c->in_cap);
    c->out_cap = (size_t)opt_inflight * (opt_size + 14) + 4096;
    c->out = malloc(c->out_cap);
    c->fifo_seq = calloc((size_t)opt_inflight, sizeof(uint64_t));
    c->fifo_t = calloc((size_t)opt_inflight, sizeof(uint64_t));
    c->msgs_left = -1;
    if (!c->in || !c->out || !c->fifo_seq || !c->fifo_t) die("out of memory");
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port N [--host H] [--path P] [--mode ws|raw] [--conns N] [--inflight N]\n"
            "               [--size BYTES] [--text|--binary] [--duration S] [--warmup S] [--server-pid PID]\n"
            "               [--idle N [--idle-warm N] [--handshake-concurrency N] [--idle-hold S]]\n"
            "               [--selftest]\n");
    exit(64);
}

static void selftest(void) {
    char out[32];
    accept_for("dGhlIHNhbXBsZSBub25jZQ==", out); /* RFC 6455 §1.3 example */
    if (strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) die("selftest: accept key %s", out);
    unsigned char d[20];
    sha1((const unsigned char *)"abc", 3, d);
    base64(d, 20, out);
    if (strcmp(out, "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=") != 0) die("selftest: sha1(abc) %s", out);
    printf("{\"selftest\": \"ok\"}\n");
    exit(0);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--host")) opt_host = NEXT();
        else if (!strcmp(a, "--port")) opt_port = atoi(NEXT());
        else if (!strcmp(a, "--path")) opt_path = NEXT();
        else if (!strcmp(a, "--mode")) {
            const char *m = NEXT();
            if (!strcmp(m, "raw")) opt_raw = 1;
            else if (strcmp(m, "ws")) usage();
        } else if (!strcmp(a, "--conns")) opt_conns = atoi(NEXT());
        else if (!strcmp(a, "--inflight")) opt_inflight = atoi(NEXT());
        else if (!strcmp(a, "--size")) opt_size = (size_t)atol(NEXT());
        else if (!strcmp(a, "--text")) opt_text = 1;
        else if (!strcmp(a, "--binary")) opt_text = 0;
        else if (!strcmp(a, "--duration")) opt_duration = atof(NEXT());
        else if (!strcmp(a, "--warmup")) opt_warmup = atof(NEXT());
        else if (!strcmp(a, "--server-pid")) opt_server_pid = atoi(NEXT());
        else if (!strcmp(a, "--idle")) opt_idle = atoi(NEXT());
        else if (!strcmp(a, "--idle-warm")) opt_idle_warm = atoi(NEXT());
        else if (!strcmp(a, "--handshake-concurrency")) opt_hs_concurrency = atoi(NEXT());
        else if (!strcmp(a, "--close-timeout")) opt_close_timeout = atof(NEXT());
        else if (!strcmp(a, "--idle-hold")) opt_idle_hold = atof(NEXT());
        else if (!strcmp(a, "--selftest")) selftest();
        else usage();
    }
    if (opt_port <= 0 || opt_conns <= 0 || opt_inflight <= 0 || opt_hs_concurrency <= 0) usage();

    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&rng_state, sizeof rng_state, 1, ur) != 1) die("cannot read /dev/urandom");
    fclose(ur);
    rng_state |= 1;

    /* payload source: printable ASCII for text (valid UTF-8), any byte for binary */
    pattern = malloc(opt_size + 256);
    for (size_t i = 0; i < opt_size + 256; i++) {
        uint64_t r = rng_next();
        pattern[i] = opt_text ? (unsigned char)(0x20 + r % 95) : (unsigned char)r;
    }

    nconns = opt_idle > 0 ? opt_idle_warm + opt_idle : opt_conns;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)nconns + 64) die("RLIMIT_NOFILE %llu is too low for %d connections", (unsigned long long)rl.rlim_cur, nconns);
    }
    epfd = epoll_create1(0);
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) init_conn(&conns[i], i);

    if (opt_idle > 0) {
        /* each connection sends exactly one message once open */
        for (int i = 0; i < nconns; i++) conns[i].msgs_left = 1;
        sending = 1;
        /* baseline: warm connections */
        idle_target_open = opt_idle_warm;
        idle_next = 0;
        run_loop_until(now_s() + 60, cond_idle_open);
        if (open_count < opt_idle_warm) die("timed out opening the warm-up connections");
        idle_echo_target = opt_idle_warm;
        run_loop_until(now_s() + 30, cond_idle_echoed);
        if (echoed_once_count < idle_echo_target) die("timed out waiting for warm-up echoes");
        long rss0 = proc_rss_kb(opt_server_pid);
        double cpu0 = proc_cpu_s(opt_server_pid), self0 = self_cpu_s();
        /* the measured connections */
        hs_first_start = 0;
        pending_count = 0;
        idle_target_open = nconns;
        double t0 = now_s();
        hs_first_start = t0;
        run_loop_until(t0 + 120, cond_idle_open);
        if (open_count < nconns) die("timed out opening connections: %d of %d open", open_count, nconns);
        double t1 = hs_last_done;
        idle_echo_target = nconns;
        run_loop_until(now_s() + 60, cond_idle_echoed);
        if (echoed_once_count < nconns) die("timed out waiting for echoes: %d of %d", echoed_once_count, nconns);
        long rss_open = proc_rss_kb(opt_server_pid);
        /* hold every connection idle, then read again: servers that release what an idle
           connection holds (a parked reader thread, buffers) get the chance to */
        run_loop_until(now_s() + opt_idle_hold, NULL);
        long rss1 = proc_rss_kb(opt_server_pid);
        double cpu1 = proc_cpu_s(opt_server_pid), self1 = self_cpu_s();
        for (int i = 0; i < nconns; i++) start_close(&conns[i]);
        run_loop_until(now_s() + opt_close_timeout + nconns * 0.005, cond_all_done);
        int unclosed = nconns - done_count;
        for (int i = 0; i < nconns; i++) finish(&conns[i]);
        printf("{\"mode\": \"%s\", \"idle_connections\": %d, \"handshake_seconds\": %.6f, "
               "\"handshakes_per_s\": %.1f, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld, "
               "\"idle_hold_s\": %.1f, \"rss_per_conn_kb_at_open\": %.2f, "
               "\"rss_per_conn_kb\": %.2f, \"server_cpu_s\": %.3f, \"loadgen_cpu_s\": %.3f, "
               "\"server_cpu_us_per_handshake\": %.1f, \"unclean_closes\": %d}\n",
               opt_raw ? "raw" : "ws", opt_idle, t1 - t0, opt_idle / (t1 - t0), rss0, rss1,
               opt_idle_hold, rss0 >= 0 && rss_open >= 0 ? (double)(rss_open - rss0) / opt_idle : -1.0,
               rss0 >= 0 && rss1 >= 0 ? (double)(rss1 - rss0) / opt_idle : -1.0, cpu1 - cpu0,
               self1 - self0, cpu0 >= 0 ? (cpu1 - cpu0) * 1e6 / opt_idle : -1.0, unclosed);
        return 0;
    }

    for (int i = 0; i < nconns; i++) open_conn(&conns[i]);
    run_loop_until(now_s() + 30, cond_all_open);
    if (open_count < nconns) die("timed out opening connections: %d of %d open", open_count, nconns);
    sending = 1;
    for (int i = 0; i < nconns; i++) fill_pipeline(&conns[i]);
    run_loop_until(now_s() + opt_warmup, NULL);

    measuring = 1;
    double user0 = 0, user1 = 0;
    double cpu0 = proc_cpu_split(opt_server_pid, &user0), self0 = self_cpu_s(), t0 = now_s();
    run_loop_until(t0 + opt_duration, NULL);
    double t1 = now_s(), cpu1 = proc_cpu_split(opt_server_pid, &user1), self1 = self_cpu_s();
    measuring = 0;
    sending = 0;

    /* close once the echoes still in flight are back (a close frame overtaking them would make
       some servers log errors about sending after the close) */
    run_loop_until(now_s() + opt_close_timeout, cond_all_drained);
    for (int i = 0; i < nconns; i++) start_close(&conns[i]);
    run_loop_until(now_s() + opt_close_timeout, cond_all_done);
    int unclosed = nconns - done_count;
    for (int i = 0; i < nconns; i++) finish(&conns[i]);

    double wall = t1 - t0;
    double p50 = 0, p99 = 0, mean = 0;
    if (lat_len) {
        qsort(lat, lat_len, sizeof *lat, cmp_u64);
        p50 = lat[lat_len / 2] / 1e3;
        size_t i99 = lat_len * 99 / 100;
        if (i99 >= lat_len) i99 = lat_len - 1;
        p99 = lat[i99] / 1e3;
        double sum = 0;
        for (size_t i = 0; i < lat_len; i++) sum += (double)lat[i];
        mean = sum / (double)lat_len / 1e3;
    }
    double server_cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    printf("{\"mode\": \"%s\", \"conns\": %d, \"inflight\": %d, \"size\": %zu, \"type\": \"%s\", "
           "\"seconds\": %.4f, \"messages\": %llu, \"bytes\": %llu, \"messages_per_s\": %.1f, "
           "\"mb_per_s\": %.3f, \"latency_p50_us\": %.1f, \"latency_p99_us\": %.1f, "
           "\"latency_mean_us\": %.1f, \"loadgen_cpu_s\": %.4f, \"server_cpu_s\": %.4f, "
           "\"server_user_s\": %.4f, "
           "\"server_cpu_us_per_msg\": %.3f, \"total_messages\": %llu, \"unclean_closes\": %d}\n",
           opt_raw ? "raw" : "ws", opt_conns, opt_inflight, opt_size, opt_text ? "text" : "binary", wall,
           (unsigned long long)stat_msgs, (unsigned long long)stat_bytes, stat_msgs / wall,
           stat_bytes / wall / 1e6, p50, p99, mean, self1 - self0, server_cpu, user1 - user0,
           server_cpu >= 0 && stat_msgs ? server_cpu * 1e6 / (double)stat_msgs : -1.0,
           (unsigned long long)stat_total_msgs, unclosed);
    return 0;
}
