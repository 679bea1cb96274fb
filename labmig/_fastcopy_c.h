/* C side of the compiled core (labmig/_fastcopy.pyx): bitmap walks and block
   digests, all called without the GIL.

     lm_find_set, lm_find_set_par   set-bit positions (one or two threads)
     lm_skip_zero_words             the next non-zero word of a bitmap
     lm_digest_buffer               per-block XXH3-128 of a buffer
     lm_digest_fd                   the same for a file range, each piece hashed
                                    in place through a mapping or read first,
                                    whichever is timed faster
     lm_punch_hole                  deallocate a range
*/
#ifndef LABMIG_FASTCOPY_C_H
#define LABMIG_FASTCOPY_C_H
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* What this binary was built for (setup.py defines the target), and the
   instruction-set paths the compiler was allowed to take: a test run checks
   it loaded the build it means to test. */
#ifndef LABMIG_BUILD_TARGET
#define LABMIG_BUILD_TARGET "unknown"
#endif
static const char lm_build_target[] = LABMIG_BUILD_TARGET;
static const char lm_build_features[] = ""
#ifdef __POPCNT__
    " popcnt"
#endif
#ifdef __SSE4_2__
    " sse4.2"
#endif
#ifdef __AVX2__
    " avx2"
#endif
#ifdef __AVX512F__
    " avx512f"
#endif
#ifdef __AVX512BW__
    " avx512bw"
#endif
#ifdef __AVX512VBMI2__
    " avx512vbmi2"
#endif
#ifdef _OPENMP
    " openmp"
#endif
    ;

#ifndef LM_COMPRESS_MIN
#define LM_COMPRESS_MIN 1
#endif
/* lm_byte_pos[b]: the positions of the set bits of byte b, one per byte, packed. */
static uint64_t lm_byte_pos[256];
static void lm_init_tables(void) {
    for (int b = 0; b < 256; b++) {
        uint64_t packed = 0;
        int n = 0;
        for (int j = 0; j < 8; j++)
            if (b >> j & 1) packed |= (uint64_t)j << (8 * n++);
        lm_byte_pos[b] = packed;
    }
}

static inline int lm_popcount(uint64_t w) { return __builtin_popcountll(w); }
static inline int lm_ctz(uint64_t w) { return __builtin_ctzll(w); }

/* True when n bytes at p are all zero; stops at the first non-zero word. */
static int lm_is_zero(const unsigned char *p, size_t n) {
    size_t i = 0;
    uint64_t acc = 0;
    for (; i + 64 <= n; i += 64) {
        const uint64_t *w = (const uint64_t *)(p + i);
        uint64_t a;
        memcpy(&a, w, 8); acc |= a; memcpy(&a, w + 1, 8); acc |= a;
        memcpy(&a, w + 2, 8); acc |= a; memcpy(&a, w + 3, 8); acc |= a;
        memcpy(&a, w + 4, 8); acc |= a; memcpy(&a, w + 5, 8); acc |= a;
        memcpy(&a, w + 6, 8); acc |= a; memcpy(&a, w + 7, 8); acc |= a;
        if (acc) return 0;
    }
    for (; i < n; i++) if (p[i]) return 0;
    return 1;
}

/* Digest (and zero flag) of block b of length n at p. A zero block of full
   length takes the precomputed digest instead of being hashed again. */
static inline void lm_block(const unsigned char *p, size_t n, size_t full, uint64_t seed,
                            const XXH128_hash_t *zd, uint64_t *dig, uint64_t *zero_words,
                            int64_t b) {
    XXH128_hash_t h;
    if (lm_is_zero(p, n)) {
        if (zero_words) __atomic_fetch_or(&zero_words[b >> 6], 1ULL << (b & 63), __ATOMIC_RELAXED);
        h = (n == full) ? *zd : XXH3_128bits_withSeed(p, n, seed);
    } else {
        h = XXH3_128bits_withSeed(p, n, seed);
    }
    dig[2 * b] = h.low64;
    dig[2 * b + 1] = h.high64;
}

/* Index of the first non-zero word at or after i (nw if none). Blocks of 256
   words are OR-reduced first, a loop the compiler turns into vector code. */
static inline int64_t lm_skip_zero_words(const uint64_t *bm, int64_t i, int64_t nw) {
    int64_t stop = i + 4 < nw ? i + 4 : nw;
    for (; i < stop; i++) if (bm[i]) return i;
    for (int t = 0; t < 8 && i + 8 <= nw; t++, i += 8)
        if ((bm[i] | bm[i + 1] | bm[i + 2] | bm[i + 3] | bm[i + 4] | bm[i + 5] | bm[i + 6] | bm[i + 7]) != 0)
            goto near;
    while (i + 256 <= nw) {
        uint64_t acc = 0;
        for (int j = 0; j < 256; j++) acc |= bm[i + j];
        if (acc) break;
        i += 256;
    }
    while (i + 8 <= nw) {
        uint64_t acc = 0;
        for (int j = 0; j < 8; j++) acc |= bm[i + j];
        if (acc) break;
        i += 8;
    }
near:
    while (i < nw && bm[i] == 0) i++;
    return i;
}

/* Positions of set bits >= start, into out[0..cap). Returns the count; *next
   is the first set bit not written, or nbits. While there is room for it,
   each word is decoded 8 bits at a time without a data-dependent branch
   (entries past the word's count are scratch, overwritten by the next word);
   OR-ing bit 63 in keeps ctz defined once the word is empty. */
static int64_t lm_find_set(const uint64_t *bm, int64_t nbits, int64_t start,
                           uint64_t *out, int64_t cap, int64_t *next) {
    const uint64_t HI = 1ULL << 63;
    int64_t nw = (nbits + 63) >> 6, k = 0, i;
    uint64_t tail = (nbits & 63) ? ((1ULL << (nbits & 63)) - 1) : ~0ULL, w;
    *next = nbits;
    if (start >= nbits) return 0;
    i = start >> 6;
    w = bm[i] & (~0ULL << (start & 63));
    for (;;) {
        if (i == nw - 1) w &= tail;
        if (w) {
            int cnt = __builtin_popcountll(w);
            uint64_t base = (uint64_t)i << 6;
#if defined(__AVX512VBMI2__) && defined(__AVX512BW__)
            if (cnt >= LM_COMPRESS_MIN && k + cnt + 8 <= cap) {
                /* the positions of the set bits packed as bytes in one
                   instruction, then widened and stored eight at a time:
                   ceil(cnt / 8) full stores and no branch per bit */
                const __m512i iota = _mm512_set_epi8(
                    63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48,
                    47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32,
                    31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                    15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
                __m512i packed = _mm512_maskz_compress_epi8((__mmask64)w, iota);
                __m512i vbase = _mm512_set1_epi64((long long)base);
                __m512i sel = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
                const __m512i eight = _mm512_set1_epi64(8);
                uint64_t *p = out + k;
                for (int j = 0; j < cnt; j += 8) {
                    /* qword lane l takes byte j + l of packed, zero-extended */
                    __m512i q = _mm512_maskz_permutexvar_epi8(0x0101010101010101ULL, sel, packed);
                    _mm512_storeu_si512((void *)(p + j), _mm512_add_epi64(q, vbase));
                    sel = _mm512_add_epi64(sel, eight);
                }
                k += cnt;
            } else
#elif defined(__AVX512F__)
            if (cnt >= 16 && k + cnt + 8 <= cap) {
                /* dense word: a byte at a time, 8 positions widened and stored at once */
                uint64_t *p = out + k;
                /* per-byte bit counts, then their running sums (byte i of
                   prefix = bits in bytes 0..i): every store's place is known
                   at once instead of waiting on the one before */
                uint64_t c = w - ((w >> 1) & 0x5555555555555555ULL);
                c = (c & 0x3333333333333333ULL) + ((c >> 2) & 0x3333333333333333ULL);
                c = (c + (c >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
                uint64_t prefix = c * 0x0101010101010101ULL;
                for (int by = 0; by < 8; by++) {
                    unsigned b = (unsigned)(w >> (8 * by)) & 0xff;
                    unsigned at = by ? (unsigned)(prefix >> (8 * (by - 1))) & 0xff : 0;
                    __m512i pos = _mm512_cvtepu8_epi64(_mm_cvtsi64_si128((long long)lm_byte_pos[b]));
                    pos = _mm512_add_epi64(pos, _mm512_set1_epi64((long long)(base + 8 * by)));
                    _mm512_storeu_si512((void *)(p + at), pos);
                }
                k += cnt;
            } else
#endif
            if (k + ((cnt + 7) & ~7) <= cap) {
                uint64_t *p = out + k;
                int j = 0;
                do {
                    p[j + 0] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    p[j + 1] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    p[j + 2] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    p[j + 3] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    p[j + 4] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    p[j + 5] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    p[j + 6] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    p[j + 7] = base + __builtin_ctzll(w | HI); w &= w - 1;
                    j += 8;
                } while (j < cnt);
                k += cnt;
            } else {
                while (w && k < cap) { out[k++] = base + __builtin_ctzll(w); w &= w - 1; }
                if (w) { *next = (int64_t)(base + __builtin_ctzll(w)); return k; }
            }
        }
        i = lm_skip_zero_words(bm, i + 1, nw);
        if (i >= nw) break;
        w = bm[i];
    }
    return k;
}

/* find_set on two threads. Two shapes, chosen from a sample of the density:
   - sparse, the whole range will not fill out: the range is cut in halves;
     the first half writes straight into out, the second into a per-thread
     buffer appended afterwards if the first half finished;
   - dense, out will fill: a popcount pass finds the word where half of out
     is reached; the first thread fills out up to there, the second the rest
     of out from that word on. */
#define LM_PAR_BUF 65536
#define LM_PAR_DENSE_MIN_CAP 8192
static __thread uint64_t *lm_par_buf = NULL;
static int64_t lm_find_set_par(const uint64_t *bm, int64_t nbits, int64_t start,
                               uint64_t *out, int64_t cap, int64_t *next, int nthreads) {
#ifdef _OPENMP
    int64_t w0 = start >> 6, nw = (nbits + 63) >> 6, span = nw - w0;
    if (nthreads >= 2 && span >= (1 << 11) && cap > 0) {
        int64_t sample_words = span >= (1 << 16) ? 512 : 64, sample = 0;
        int64_t mid_w = w0 + span / 2;
        for (int64_t i = 0; i < sample_words; i++)
            sample += __builtin_popcountll(bm[w0 + i]) + __builtin_popcountll(bm[mid_w + i]);
        double per_word = (double)sample / (2.0 * (double)sample_words);
        if (span >= (1 << 16) && per_word * (double)span < 0.5 * (double)cap) {
            if (!lm_par_buf) lm_par_buf = (uint64_t *)malloc(LM_PAR_BUF * sizeof(uint64_t));
            if (lm_par_buf) {
                int64_t mid = mid_w << 6, k1 = 0, k2 = 0, n1 = 0, n2 = 0;
                uint64_t *buf = lm_par_buf;
                #pragma omp parallel sections num_threads(2)
                {
                    #pragma omp section
                    k1 = lm_find_set(bm, mid, start, out, cap, &n1);
                    #pragma omp section
                    k2 = lm_find_set(bm, nbits, mid, buf, LM_PAR_BUF, &n2);
                }
                if (n1 < mid) { *next = n1; return k1; }
                int64_t take = k2 < cap - k1 ? k2 : cap - k1;
                memcpy(out + k1, buf, (size_t)take * sizeof(uint64_t));
                *next = take < k2 ? (int64_t)buf[take] : n2;
                return k1 + take;
            }
        } else if (cap >= LM_PAR_DENSE_MIN_CAP && per_word >= 1.0) {
            /* count whole words from start until half of out is reached */
            uint64_t tail = (nbits & 63) ? ((1ULL << (nbits & 63)) - 1) : ~0ULL;
            int64_t half = cap / 2, c1 = 0, i = w0;
            uint64_t w = bm[i] & (~0ULL << (start & 63));
            for (;;) {
                if (i == nw - 1) w &= tail;
                c1 += __builtin_popcountll(w);
                i++;
                if (c1 >= half || i >= nw) break;
                w = bm[i];
            }
            if (i < nw && c1 < cap) {
                int64_t split = i << 6, k2 = 0, n1 = 0, n2 = 0;
                #pragma omp parallel sections num_threads(2)
                {
                    #pragma omp section
                    lm_find_set(bm, split, start, out, c1, &n1);
                    #pragma omp section
                    k2 = lm_find_set(bm, nbits, split, out + c1, cap - c1, &n2);
                }
                *next = n2;
                return c1 + k2;
            }
        }
    }
#endif
    return lm_find_set(bm, nbits, start, out, cap, next);
}

static int lm_threads(int want) {
#ifdef _OPENMP
    if (want <= 0) want = omp_get_num_procs();
#else
    want = 1;
#endif
    return want < 1 ? 1 : want;
}

/* Digest of bs zero bytes, streamed from a static page: no allocation.

   The state lives on the stack, so it is zeroed before the seeded reset:
   XXH3_128bits_reset_withSeed skips deriving the seed's secret when the
   state's seed field already equals the seed, and an uninitialised field
   holds whatever the last frame there left. A previous call with the same
   seed leaves exactly that, with a secret that other frames may have
   overwritten since; the zero digest then came out wrong (seen with the core
   built for x86-64-v3, whose frames differ from the other builds'). */
static __attribute__((noinline)) XXH128_hash_t lm_zero_digest(int64_t bs, uint64_t seed) {
    static const unsigned char page[4096];
    XXH3_state_t state;
    memset(&state, 0, sizeof state);
    XXH3_128bits_reset_withSeed(&state, seed);
    for (int64_t done = 0; done < bs; done += (int64_t)sizeof page) {
        int64_t n = bs - done < (int64_t)sizeof page ? bs - done : (int64_t)sizeof page;
        XXH3_128bits_update(&state, page, (size_t)n);
    }
    return XXH3_128bits_digest(&state);
}

/* For the tests: leaves a stack frame where the next call's frame will sit,
   laid out so that any 64-byte-aligned XXH3_state_t there would read seed as
   its seed field, NULL as its external secret and junk as its secret: the
   leftovers that made a seeded reset skip deriving the secret. */
static __attribute__((noinline)) void lm_soil_stack(uint64_t seed) {
    volatile uint64_t junk[1024];
    for (int i = 0; i < 1024; i++) {
        uintptr_t in_line = (uintptr_t)&junk[i] % 64;
        if (in_line == offsetof(XXH3_state_t, seed) % 64) junk[i] = seed;
        else if (in_line == offsetof(XXH3_state_t, extSecret) % 64) junk[i] = 0;
        else junk[i] = 0x5a5a5a5a5a5a5a5aULL;
    }
}
static __attribute__((noinline)) XXH128_hash_t lm_zero_digest_soiled(int64_t bs, uint64_t seed) {
    lm_soil_stack(seed);
    return lm_zero_digest(bs, seed);
}

/* Digests of every block of a buffer; blocks are split over threads. */
static void lm_digest_buffer(const unsigned char *buf, int64_t len, int64_t bs, uint64_t seed,
                             uint64_t *dig, uint64_t *zero_words, int nthreads) {
    int64_t nblocks = (len + bs - 1) / bs;
    XXH128_hash_t zd = lm_zero_digest(bs, seed);
    int64_t b;
    #pragma omp parallel for schedule(static, 16) num_threads(nthreads) if (nblocks > 32)
    for (b = 0; b < nblocks; b++) {
        int64_t n = (b + 1) * bs <= len ? bs : len - b * bs;
        lm_block(buf + b * bs, (size_t)n, (size_t)bs, seed, &zd, dig, zero_words, b);
    }
}

/* A file that shrinks while it is mapped raises SIGBUS on the next access
   past its new end (so does a read error under a mapping). A thread that
   hashes a mapping points lm_bus_jmp at its sigjmp_buf; the handler jumps
   back there, and hands any other SIGBUS to the handler it replaced. */
static __thread sigjmp_buf *lm_bus_jmp;
static long lm_bus_caught = 0;  /* SIGBUS turned into a short result, since load */
static struct sigaction lm_prev_bus;
static pthread_mutex_t lm_bus_lock = PTHREAD_MUTEX_INITIALIZER;

static void lm_on_bus(int sig, siginfo_t *info, void *ctx) {
    static volatile sig_atomic_t handing_on = 0;
    sigjmp_buf *jb = lm_bus_jmp;
    if (jb) {
        __atomic_fetch_add(&lm_bus_caught, 1, __ATOMIC_RELAXED);
        siglongjmp(*jb, 1);
    }
    if (!handing_on && (lm_prev_bus.sa_flags & SA_SIGINFO) && lm_prev_bus.sa_sigaction) {
        handing_on = 1;
        lm_prev_bus.sa_sigaction(sig, info, ctx);
        return;
    }
    if (!handing_on && !(lm_prev_bus.sa_flags & SA_SIGINFO) && lm_prev_bus.sa_handler != SIG_DFL
            && lm_prev_bus.sa_handler != SIG_IGN) {
        handing_on = 1;
        lm_prev_bus.sa_handler(sig);
        return;
    }
    /* returning runs the faulting access again, which now ends the process */
    signal(SIGBUS, SIG_DFL);
}

/* Installs lm_on_bus unless it is already the handler (someone, such as
   Python's faulthandler, may have replaced it since the last call). */
static void lm_bus_guard(void) {
    struct sigaction cur, mine;
    pthread_mutex_lock(&lm_bus_lock);
    sigaction(SIGBUS, NULL, &cur);
    if (!((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == lm_on_bus)) {
        memset(&mine, 0, sizeof mine);
        mine.sa_sigaction = lm_on_bus;
        mine.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&mine.sa_mask);
        sigaction(SIGBUS, &mine, &lm_prev_bus);
    }
    pthread_mutex_unlock(&lm_bus_lock);
}

/* Image bytes one thread digests at a time (a "step"): big enough that
   mapping them costs little, small enough that the pages mapped (they count
   in the process's RSS) stay a few MiB. Ranges shorter than LM_MAP_MIN are
   always read: mapping them costs more, as munmap interrupts every other core
   running this process to flush its TLB. */
#define LM_STEP ((int64_t)8 << 20)
#define LM_MAP_MIN ((int64_t)1 << 20)
#define LM_READ_BUF ((int64_t)1 << 20)

/* Hashes the nbytes at file offset at (block first_block onwards) through a
   mapping. Returns 0; an errno when mmap fails; or -1 when SIGBUS stopped it
   part way (some blocks are then done, the others untouched). */
static int lm_digest_mapped(int fd, int64_t at, int64_t nbytes, int64_t bs, uint64_t seed,
                            const XXH128_hash_t *zd, uint64_t *dig, uint64_t *zero_words,
                            int64_t first_block) {
    int64_t page = sysconf(_SC_PAGESIZE);
    int64_t lead = at % page;
    unsigned char *map = (unsigned char *)mmap(NULL, (size_t)(nbytes + lead), PROT_READ, MAP_SHARED,
                                               fd, (off_t)(at - lead));
    if (map == MAP_FAILED) return errno ? errno : EIO;
    const unsigned char *p = map + lead;
    int64_t nb = (nbytes + bs - 1) / bs;
    volatile int64_t i = 0;
    int bus = 0;
    sigjmp_buf jb;
    if (sigsetjmp(jb, 1) == 0) {
        lm_bus_jmp = &jb;
        for (; i < nb; i++) {
            int64_t n = (i + 1) * bs <= nbytes ? bs : nbytes - i * bs;
            lm_block(p + i * bs, (size_t)n, (size_t)bs, seed, zd, dig, zero_words, first_block + i);
        }
    } else {
        bus = 1;
    }
    lm_bus_jmp = NULL;
    munmap(map, (size_t)(nbytes + lead));
    return bus ? -1 : 0;
}

/* Hashes the nbytes at file offset at by reading them with pread into buf
   (buf_len bytes, whole blocks). Returns the bytes that were there (short at
   EOF), or -errno. */
static int64_t lm_digest_read(int fd, int64_t at, int64_t nbytes, unsigned char *buf, int64_t buf_len,
                              int64_t bs, uint64_t seed, const XXH128_hash_t *zd, uint64_t *dig,
                              uint64_t *zero_words, int64_t first_block) {
    int64_t done = 0;
    while (done < nbytes) {
        int64_t want = nbytes - done < buf_len ? nbytes - done : buf_len;
        int64_t have = 0;
        while (have < want) {
            ssize_t r = pread(fd, buf + have, (size_t)(want - have), (off_t)(at + done + have));
            if (r < 0) {
                if (errno == EINTR) continue;
                return -(int64_t)errno;
            }
            if (r == 0) break;
            have += r;
        }
        int64_t nb = (have + bs - 1) / bs;
        for (int64_t i = 0; i < nb; i++) {
            int64_t n = (i + 1) * bs <= have ? bs : have - i * bs;
            lm_block(buf + i * bs, (size_t)n, (size_t)bs, seed, zd, dig, zero_words,
                     first_block + done / bs + i);
        }
        done += have;
        if (have < want) break;
    }
    return done;
}

/* Size of what fd holds: st_size for a file, the device size for a block device. */
static int lm_fd_size(int fd, int64_t *size, struct stat *st_out) {
    struct stat st;
    if (fstat(fd, &st) != 0) return errno;
    if (st_out) *st_out = st;
    if (S_ISREG(st.st_mode)) { *size = st.st_size; return 0; }
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0) return errno;
        *size = end;
        return 0;
    }
    return ENODEV;
}

static double lm_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* One thread's choice between hashing a step in place through a mapping and
   reading it into a buffer first. Which is faster depends on the page cache:
   pages that readahead brought in sit in large folios that one fault maps
   whole, and hashing them in place costs about what merely reading them
   costs; pages written in small pieces map a few at a time, and then reading
   wins. So each way is timed (ns per byte), the faster one used, and every
   32nd step goes the other way to notice when that changes. What was learnt
   of a file is remembered (lm_way_recall) for the next call on it, so a file
   digested window by window is not timed afresh each time. A step that
   another thread preempted takes longer, never shorter, so each estimate is
   a minimum that may rise by a quarter per step: a lone slow step moves it
   little, a lasting change soon shows. */
typedef struct {
    double map_ns, read_ns;  /* ns per byte; 0 = not timed yet */
    int64_t steps;
    int map_off;             /* never map: short range, or mmap failed */
} lm_way_t;

/* 0: timed choice; 1: always map; 2: always read (set_digest_way). */
static int lm_way_forced = 0;

static int lm_way_map(const lm_way_t *w) {
    if (w->map_off) return 0;
    if (lm_way_forced) return lm_way_forced == 1;
    if (w->map_ns == 0) return 1;
    if (w->read_ns == 0) return 0;
    int best = w->map_ns <= w->read_ns;
    return w->steps % 32 == 31 ? !best : best;
}

/* The last few files digested, by device and inode, with their lm_way_t. */
#define LM_WAY_MEMO 8
static struct { dev_t dev; ino_t ino; lm_way_t way; } lm_way_memo[LM_WAY_MEMO];
static int lm_way_memo_next = 0;
static pthread_mutex_t lm_way_lock = PTHREAD_MUTEX_INITIALIZER;

/* The memo slot of a file, or -1; call with lm_way_lock held. */
static int lm_way_slot(const struct stat *st) {
    for (int i = 0; i < LM_WAY_MEMO; i++)
        if (lm_way_memo[i].ino == st->st_ino && lm_way_memo[i].dev == st->st_dev) return i;
    return -1;
}

static lm_way_t lm_way_recall(const struct stat *st) {
    lm_way_t way = {0, 0, 0, 0};
    pthread_mutex_lock(&lm_way_lock);
    int slot = lm_way_slot(st);
    if (slot >= 0) way = lm_way_memo[slot].way;
    pthread_mutex_unlock(&lm_way_lock);
    return way;
}

static void lm_way_remember(const struct stat *st, const lm_way_t *way) {
    pthread_mutex_lock(&lm_way_lock);
    int slot = lm_way_slot(st);
    if (slot < 0) {
        slot = lm_way_memo_next;
        lm_way_memo_next = (lm_way_memo_next + 1) % LM_WAY_MEMO;
    }
    lm_way_memo[slot].dev = st->st_dev;
    lm_way_memo[slot].ino = st->st_ino;
    lm_way_memo[slot].way = *way;
    pthread_mutex_unlock(&lm_way_lock);
}

static void lm_way_time(lm_way_t *w, int mapped, double ns, int64_t nbytes) {
    double per_byte = ns / (double)(nbytes > 0 ? nbytes : 1);
    double *est = mapped ? &w->map_ns : &w->read_ns;
    *est = *est == 0 || per_byte < *est * 1.25 ? per_byte : *est * 1.25;
    w->steps++;
}

/* Digests of the blocks of fd in [offset, offset+len), LM_STEP bytes at a
   time per thread, each step mapped or read (lm_way_t). Returns 0, or an
   errno; *got is the number of bytes actually there (short when EOF came
   early, in which case missing blocks are left untouched). A step that a
   SIGBUS stopped is read again, so a file that shrank gives a short result
   and a failing disk a read error. */
static int lm_digest_fd(int fd, int64_t offset, int64_t len, int64_t bs, uint64_t seed,
                        uint64_t *dig, uint64_t *zero_words, int nthreads, int64_t *got) {
    int64_t size = 0;
    struct stat st;
    memset(&st, 0, sizeof st);
    int sized = lm_fd_size(fd, &size, &st) == 0;
    int64_t there = len;
    if (sized) there = size - offset < 0 ? 0 : (size - offset < len ? size - offset : len);
    if (there == 0) { *got = 0; return 0; }
    int64_t step = LM_STEP >= bs ? LM_STEP / bs * bs : bs;
    int64_t nsteps = (there + step - 1) / step;
    int64_t buf_len = LM_READ_BUF >= bs ? LM_READ_BUF / bs * bs : bs;
    if (buf_len > (there + bs - 1) / bs * bs) buf_len = (there + bs - 1) / bs * bs;
    XXH128_hash_t zd = lm_zero_digest(bs, seed);
    int never_map = !sized || lm_way_forced == 2 || (there < LM_MAP_MIN && lm_way_forced != 1);
    if (!never_map) lm_bus_guard();
    int err = 0;
    int64_t end_at = there;  /* lowest byte where the file was found to end */
    #pragma omp parallel num_threads(nthreads) if (nsteps > 1)
    {
        lm_way_t way = lm_way_recall(&st);
        way.map_off = never_map;
        unsigned char *buf = NULL;
        int64_t c;
        #pragma omp for schedule(dynamic, 1)
        for (c = 0; c < nsteps; c++) {
            int stop;
            #pragma omp atomic read
            stop = err;
            if (stop) continue;
            int64_t start = c * step;
            int64_t n = start + step <= there ? step : there - start;
            int64_t short_at = -1;
            int mapped = lm_way_map(&way), timed = 1;
            double t0 = lm_now_ns();
            if (mapped) {
                int r = lm_digest_mapped(fd, offset + start, n, bs, seed, &zd, dig, zero_words,
                                         start / bs);
                if (r < 0) {
                    /* SIGBUS: the file shrank (it may have grown back since) or
                       its storage failed. Reading the step again tells which:
                       a short read, an error, or the bytes that are there now. */
                    mapped = timed = 0;
                } else if (r > 0) {
                    way.map_off = 1;  /* cannot be mapped: read this step and the rest */
                    mapped = 0;
                }
            }
            if (!mapped) {
                if (!buf && posix_memalign((void **)&buf, 4096, (size_t)buf_len) != 0) {
                    buf = NULL;
                    #pragma omp atomic write
                    err = ENOMEM;
                    continue;
                }
                int64_t r = lm_digest_read(fd, offset + start, n, buf, buf_len, bs, seed, &zd, dig,
                                           zero_words, start / bs);
                if (r < 0) {
                    #pragma omp atomic write
                    err = (int)-r;
                    continue;
                }
                if (r < n) short_at = start + r;
            }
            if (timed) lm_way_time(&way, mapped, lm_now_ns() - t0, n);
            if (short_at >= 0) {
                #pragma omp critical(lm_eof)
                { if (short_at < end_at) end_at = short_at; }
            }
        }
        free(buf);
        if (sized && !never_map && way.steps) lm_way_remember(&st, &way);
    }
    if (err) return err;
    *got = end_at;
    return 0;
}

static int lm_punch_hole(int fd, int64_t offset, int64_t len) {
#if defined(FALLOC_FL_PUNCH_HOLE) && defined(FALLOC_FL_KEEP_SIZE)
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len) == 0) return 0;
    return errno;
#else
    return EOPNOTSUPP;
#endif
}

#endif
