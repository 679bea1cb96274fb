/*
 * labmig-workload: the lab guest's memory workload, memory checker and heartbeat.
 *
 * It keeps a working set of pages in which every 64-bit word of page i holds
 * (generation << 32 | i). It rewrites pages round-robin at a set dirty rate,
 * bumping that page's generation, and re-reads the whole working set over and
 * over, reporting every page that does not hold what it last wrote (a page a
 * migration lost or delivered stale). It also keeps a boot counter in the first
 * sector of its disk, prints heartbeats on the serial console and answers UDP:
 *
 *   PING <x>       -> PONG <x>             (the client probe's echo)
 *   RATE <bytes/s> -> OK RATE <n>          (change the dirty rate)
 *   WSS <bytes>    -> OK WSS <n>           (shrink/grow up to the size set at boot)
 *   STAT           -> STAT boot=... errors=... (one status line)
 *   CORRUPT <page> -> OK CORRUPT <page>    (flip a word: a self-test of the checker)
 *
 * Settings come from the kernel command line: labmig.dirty=<bytes/s>
 * labmig.wss=<bytes> labmig.port=<udp port> labmig.hb=<heartbeat ms>
 * labmig.check=<ms per full check> labmig.disk=<block device>
 * labmig.hbto=<ipv4>:<port> (where to send a UDP heartbeat with each console one).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define TICK_MS 10
#define DISK_MAGIC "LABMIGDK"
#define MAX_ERR_LINES_PER_TICK 8

static uint64_t dirty_rate;        /* bytes per second */
static uint64_t wss_max, wss;      /* bytes */
static unsigned port = 7777, hb_ms = 1000, check_ms = 2000;
static char disk[64] = "/dev/vda";
static char name[64] = "guest";
static struct sockaddr_in hb_to;

static uint8_t *mem;
static uint32_t *gen;
static uint64_t npages_max;
static uint64_t dirty_cursor, check_cursor;
static uint64_t pages_dirtied, check_rounds, errors, hb_seq;
static uint64_t boot_count;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line so lines never interleave on the console. */
    if (write(1, line, n) < 0) {
        /* nothing useful to do */
    }
}

static uint64_t parse_u64(const char *s)
{
    return strtoull(s, NULL, 10);
}

static void read_cmdline(void)
{
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
        if (!strncmp(tok, "labmig.dirty=", 13))
            dirty_rate = parse_u64(tok + 13);
        else if (!strncmp(tok, "labmig.wss=", 11))
            wss_max = parse_u64(tok + 11);
        else if (!strncmp(tok, "labmig.port=", 12))
            port = (unsigned)parse_u64(tok + 12);
        else if (!strncmp(tok, "labmig.hb=", 10))
            hb_ms = (unsigned)parse_u64(tok + 10);
        else if (!strncmp(tok, "labmig.check=", 13))
            check_ms = (unsigned)parse_u64(tok + 13);
        else if (!strncmp(tok, "labmig.disk=", 12))
            snprintf(disk, sizeof disk, "%s", tok + 12);
        else if (!strncmp(tok, "labmig.hbto=", 12)) {
            char *colon = strchr(tok + 12, ':');
            if (colon) {
                *colon = 0;
                hb_to.sin_family = AF_INET;
                hb_to.sin_port = htons((unsigned short)parse_u64(colon + 1));
                if (inet_pton(AF_INET, tok + 12, &hb_to.sin_addr) != 1)
                    hb_to.sin_family = 0;
            }
        } else if (!strncmp(tok, "labmig.name=", 12))
            snprintf(name, sizeof name, "%s", tok + 12);
    }
}

/* Boot counter: sector 0 holds "LABMIGDK" then a little-endian u64. */
static void bump_boot_counter(void)
{
    unsigned char sector[512];
    int fd = open(disk, O_RDWR | O_SYNC);
    if (fd < 0) {
        say("LABMIG DISK none (%s: %s)", disk, strerror(errno));
        return;
    }
    if (pread(fd, sector, sizeof sector, 0) != (ssize_t)sizeof sector) {
        say("LABMIG DISK unreadable (%s)", strerror(errno));
        close(fd);
        return;
    }
    uint64_t count = 0;
    if (memcmp(sector, DISK_MAGIC, 8) == 0) {
        for (int i = 7; i >= 0; i--)
            count = (count << 8) | sector[8 + i];
    } else {
        memset(sector, 0, sizeof sector);
        memcpy(sector, DISK_MAGIC, 8);
    }
    count++;
    for (int i = 0; i < 8; i++)
        sector[8 + i] = (unsigned char)(count >> (8 * i));
    if (pwrite(fd, sector, sizeof sector, 0) != (ssize_t)sizeof sector || fsync(fd) != 0)
        say("LABMIG DISK write failed (%s)", strerror(errno));
    close(fd);
    boot_count = count;
}

static inline uint64_t pattern(uint32_t g, uint64_t page)
{
    return ((uint64_t)g << 32) | (uint32_t)page;
}

static void fill_page(uint64_t p)
{
    uint64_t *w = (uint64_t *)(mem + p * PAGE);
    uint64_t v = pattern(gen[p], p);
    for (unsigned i = 0; i < WORDS; i++)
        w[i] = v;
}

static int check_page(uint64_t p, int report)
{
    volatile uint64_t *w = (volatile uint64_t *)(mem + p * PAGE);
    uint64_t v = pattern(gen[p], p);
    for (unsigned i = 0; i < WORDS; i++) {
        if (w[i] != v) {
            if (report)
                say("LABMIG MEMERR page=%llu word=%u expected=%016llx got=%016llx",
                    (unsigned long long)p, i, (unsigned long long)v, (unsigned long long)w[i]);
            return 1;
        }
    }
    return 0;
}

static void tick_work(double dt, double *dirty_credit)
{
    uint64_t npages = wss / PAGE;
    if (npages == 0)
        return;
    *dirty_credit += dirty_rate * dt / PAGE;
    uint64_t todo = (uint64_t)*dirty_credit;
    if (todo > npages)
        todo = npages;
    *dirty_credit -= (double)todo;
    for (uint64_t k = 0; k < todo; k++) {
        uint64_t p = dirty_cursor++ % npages;
        gen[p]++;
        fill_page(p);
    }
    pages_dirtied += todo;

    /* Check npages every check_ms. */
    uint64_t to_check = (uint64_t)(npages * (dt * 1000.0) / (check_ms ? check_ms : 1)) + 1;
    if (to_check > npages)
        to_check = npages;
    int reported = 0;
    for (uint64_t k = 0; k < to_check; k++) {
        uint64_t p = check_cursor % npages;
        if (check_page(p, reported < MAX_ERR_LINES_PER_TICK)) {
            errors++;
            reported++;
            fill_page(p); /* resynchronise: count each bad page once */
        }
        if (++check_cursor % npages == 0) {
            check_cursor = 0;
            check_rounds++;
        }
    }
}

static void answer(int sock, struct sockaddr_in *peer, socklen_t plen, char *msg, ssize_t n)
{
    char out[512];
    int len;
    msg[n] = 0;
    if (!strncmp(msg, "PING", 4)) {
        /* Echo the request back with PONG in front, byte for byte. */
        memcpy(msg, "PONG", 4);
        sendto(sock, msg, n, 0, (struct sockaddr *)peer, plen);
        return;
    }
    if (!strncmp(msg, "RATE ", 5)) {
        dirty_rate = parse_u64(msg + 5);
        say("LABMIG RATE %llu", (unsigned long long)dirty_rate);
        len = snprintf(out, sizeof out, "OK RATE %llu", (unsigned long long)dirty_rate);
    } else if (!strncmp(msg, "WSS ", 4)) {
        uint64_t want = parse_u64(msg + 4) / PAGE * PAGE;
        if (want > wss_max)
            want = wss_max;
        /* Pages re-entering the set are rewritten so the checker's view stays exact. */
        for (uint64_t p = wss / PAGE; p < want / PAGE; p++)
            fill_page(p);
        wss = want;
        check_cursor = dirty_cursor = 0;
        say("LABMIG WSS %llu", (unsigned long long)wss);
        len = snprintf(out, sizeof out, "OK WSS %llu", (unsigned long long)wss);
    } else if (!strncmp(msg, "CORRUPT ", 8)) {
        /* Self-test of the checker: change one word behind its back. */
        uint64_t p = parse_u64(msg + 8);
        if (p < wss / PAGE) {
            ((volatile uint64_t *)(mem + p * PAGE))[7] ^= 0x5a;
            len = snprintf(out, sizeof out, "OK CORRUPT %llu", (unsigned long long)p);
        } else {
            len = snprintf(out, sizeof out, "ERR page out of range");
        }
    } else if (!strncmp(msg, "STAT", 4)) {
        len = snprintf(out, sizeof out,
                       "STAT name=%s boot=%llu hb=%llu dirty=%llu wss=%llu errors=%llu rounds=%llu dirtied=%llu",
                       name, (unsigned long long)boot_count, (unsigned long long)hb_seq,
                       (unsigned long long)dirty_rate, (unsigned long long)wss,
                       (unsigned long long)errors, (unsigned long long)check_rounds,
                       (unsigned long long)pages_dirtied);
    } else {
        len = snprintf(out, sizeof out, "ERR unknown command");
    }
    sendto(sock, out, len, 0, (struct sockaddr *)peer, plen);
}

int main(void)
{
    read_cmdline();
    bump_boot_counter();
    if (wss_max == 0)
        wss_max = 16u << 20;
    wss_max = wss_max / PAGE * PAGE;
    wss = wss_max;
    npages_max = wss_max / PAGE;
    mem = mmap(NULL, wss_max, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    gen = calloc(npages_max, sizeof *gen);
    if (mem == MAP_FAILED || !gen) {
        say("LABMIG FATAL cannot allocate %llu bytes", (unsigned long long)wss_max);
        return 1;
    }
    for (uint64_t p = 0; p < npages_max; p++) {
        gen[p] = 1;
        fill_page(p);
    }

    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (sock < 0 || bind(sock, (struct sockaddr *)&addr, sizeof addr) < 0)
        say("LABMIG NET no udp port %u (%s)", port, strerror(errno));

    say("LABMIG READY name=%s boot=%llu wss=%llu dirty=%llu port=%u", name,
        (unsigned long long)boot_count, (unsigned long long)wss, (unsigned long long)dirty_rate, port);

    double start = now(), last = start, next_hb = start + hb_ms / 1000.0, credit = 0;
    for (;;) {
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        poll(&pfd, sock >= 0 ? 1 : 0, TICK_MS);
        if (pfd.revents & POLLIN) {
            char msg[512];
            struct sockaddr_in peer;
            socklen_t plen;
            for (int i = 0; i < 64; i++) {
                plen = sizeof peer;
                ssize_t n = recvfrom(sock, msg, sizeof msg - 1, 0, (struct sockaddr *)&peer, &plen);
                if (n <= 0)
                    break;
                answer(sock, &peer, plen, msg, n);
            }
        }
        double t = now();
        double dt = t - last;
        if (dt >= TICK_MS / 1000.0) {
            /* After a long stall (a paused VM) don't try to catch up on dirtying. */
            tick_work(dt > 0.5 ? 0.5 : dt, &credit);
            last = t;
        }
        if (t >= next_hb) {
            hb_seq++;
            say("LABMIG HB seq=%llu up=%.3f dirty=%llu wss=%llu errors=%llu rounds=%llu boot=%llu",
                (unsigned long long)hb_seq, t - start, (unsigned long long)dirty_rate,
                (unsigned long long)wss, (unsigned long long)errors,
                (unsigned long long)check_rounds, (unsigned long long)boot_count);
            if (hb_to.sin_family && sock >= 0) {
                char hb[160];
                int n = snprintf(hb, sizeof hb, "HB %s seq=%llu errors=%llu boot=%llu", name,
                                 (unsigned long long)hb_seq, (unsigned long long)errors,
                                 (unsigned long long)boot_count);
                sendto(sock, hb, n, 0, (struct sockaddr *)&hb_to, sizeof hb_to);
            }
            next_hb += hb_ms / 1000.0;
            if (next_hb < t)
                next_hb = t + hb_ms / 1000.0;
        }
    }
}
