/* C side of the compiled core (labmig/_fastcopy.pyx): bitmap walks and block
   digests, all called without the GIL.

     lm_find_set, lm_find_set_par   set-bit positions (one or two threads)
     lm_skip_zero_words             the next non-zero word of a bitmap
     lm_digest_buffer               per-block XXH3-128 of a buffer
     lm_digest_fd                   the same for a file range, read with pread
     lm_punch_hole                  deallocate a range
*/
#ifndef LABMIG_FASTCOPY_C_H
#define LABMIG_FASTCOPY_C_H
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

/* Digests of every block of a buffer; blocks are split over threads. */
static void lm_digest_buffer(const unsigned char *buf, int64_t len, int64_t bs, uint64_t seed,
                             uint64_t *dig, uint64_t *zero_words, int nthreads) {
    int64_t nblocks = (len + bs - 1) / bs;
    unsigned char *zeros = (unsigned char *)calloc(1, (size_t)bs);
    XXH128_hash_t zd = XXH3_128bits_withSeed(zeros, (size_t)bs, seed);
    free(zeros);
    int64_t b;
    #pragma omp parallel for schedule(static, 16) num_threads(nthreads) if (nblocks > 32)
    for (b = 0; b < nblocks; b++) {
        int64_t n = (b + 1) * bs <= len ? bs : len - b * bs;
        lm_block(buf + b * bs, (size_t)n, (size_t)bs, seed, &zd, dig, zero_words, b);
    }
}

/* Digests of the blocks of fd in [offset, offset+len), read with pread in
   chunks of about 1 MiB, one chunk per thread at a time. (Hashing through
   mappings instead is faster for one thread alone, but slower once two
   threads of the process map and unmap at once, as both sides of a copy do.)
   Returns 0, or an errno; *got is the number of bytes actually there (short
   when EOF came early, in which case missing blocks are left untouched). */
static int lm_digest_fd(int fd, int64_t offset, int64_t len, int64_t bs, uint64_t seed,
                        uint64_t *dig, uint64_t *zero_words, int nthreads, int64_t *got) {
    int64_t per_chunk = bs >= (1024 << 10) ? 1 : (1024 << 10) / bs;
    int64_t chunk = per_chunk * bs;
    int64_t nchunks = (len + chunk - 1) / chunk;
    int err = 0;
    int64_t eof_at = len;
    unsigned char *zeros = (unsigned char *)calloc(1, (size_t)bs);
    if (!zeros) return ENOMEM;
    XXH128_hash_t zd = XXH3_128bits_withSeed(zeros, (size_t)bs, seed);
    free(zeros);
    #pragma omp parallel num_threads(nthreads) if (nchunks > 1)
    {
        unsigned char *buf = NULL;
        if (posix_memalign((void **)&buf, 4096, (size_t)chunk) != 0) {
            #pragma omp atomic write
            err = ENOMEM;
        }
        int64_t c;
        #pragma omp for schedule(dynamic, 1)
        for (c = 0; c < nchunks; c++) {
            int stop;
            #pragma omp atomic read
            stop = err;
            if (stop || !buf) continue;
            int64_t start = c * chunk;
            int64_t want = start + chunk <= len ? chunk : len - start;
            int64_t have = 0;
            while (have < want) {
                ssize_t r = pread(fd, buf + have, (size_t)(want - have), offset + start + have);
                if (r < 0) {
                    if (errno == EINTR) continue;
                    #pragma omp atomic write
                    err = errno;
                    break;
                }
                if (r == 0) break;
                have += r;
            }
            if (have < want) {
                #pragma omp critical(lm_eof)
                { if (start + have < eof_at) eof_at = start + have; }
            }
            int64_t nb = (have + bs - 1) / bs;
            for (int64_t i = 0; i < nb; i++) {
                int64_t n = (i + 1) * bs <= have ? bs : have - i * bs;
                lm_block(buf + i * bs, (size_t)n, (size_t)bs, seed, &zd, dig, zero_words,
                         c * per_chunk + i);
            }
        }
        free(buf);
    }
    *got = eof_at;
    return err;
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
