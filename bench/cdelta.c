/*
 * The peers that `labmig copy` is timed against as a process (bench/bench_copy.py).
 *
 *   cdelta read A B        read both files once, one thread each: the floor for any tool
 *                          that has to compare two files
 *   cdelta copy SRC DST    a minimal delta copier: two threads, each takes half of the
 *                          blocks, reads both files in 1 MiB chunks, compares every 64 KiB
 *                          block by its XXH3-64 digest, pwrites the source block where the
 *                          digests differ, then fsyncs DST. Same-size files only, no
 *                          verification, no resume, no sparse handling: what is left when
 *                          everything but the work itself is taken away.
 *
 * Build: cc -O2 -pthread cdelta.c -lxxhash (bench_copy.py does it in its output folder).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define BLOCK (64 << 10)
#define CHUNK (1 << 20)

struct job {
    int src, dst;          /* dst < 0: only read src */
    off_t start, end;
    long blocks_written;
    int err;
};

static void *work(void *arg) {
    struct job *j = arg;
    char *a = aligned_alloc(4096, CHUNK), *b = aligned_alloc(4096, CHUNK);
    if (!a || !b) { j->err = ENOMEM; return NULL; }
    for (off_t off = j->start; off < j->end; off += CHUNK) {
        size_t want = (size_t)(j->end - off < CHUNK ? j->end - off : CHUNK);
        ssize_t got = pread(j->src, a, want, off);
        if (got < 0) { j->err = errno; break; }
        if (j->dst < 0) continue;
        ssize_t got_b = pread(j->dst, b, want, off);
        if (got_b < 0) { j->err = errno; break; }
        for (ssize_t at = 0; at < got; at += BLOCK) {
            size_t n = (size_t)(got - at < BLOCK ? got - at : BLOCK);
            if (at + (ssize_t)n <= got_b && XXH3_64bits(a + at, n) == XXH3_64bits(b + at, n))
                continue;
            if (pwrite(j->dst, a + at, n, off + at) != (ssize_t)n) { j->err = errno ? errno : EIO; goto out; }
            j->blocks_written++;
        }
    }
out:
    free(a);
    free(b);
    return NULL;
}

static off_t size_of(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : -1;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "read") && strcmp(argv[1], "copy"))) {
        fprintf(stderr, "usage: cdelta read A B | cdelta copy SRC DST\n");
        return 2;
    }
    int copy = strcmp(argv[1], "copy") == 0;
    int fa = open(argv[2], O_RDONLY), fb = open(argv[3], copy ? O_RDWR : O_RDONLY);
    if (fa < 0 || fb < 0) { perror("open"); return 1; }
    struct job jobs[2];
    if (copy) {   /* two halves of the blocks, both files each */
        off_t size = size_of(fa), half = (size / 2 + CHUNK - 1) / CHUNK * CHUNK;
        if (size != size_of(fb)) { fprintf(stderr, "cdelta: the files differ in size\n"); return 1; }
        jobs[0] = (struct job){fa, fb, 0, half < size ? half : size, 0, 0};
        jobs[1] = (struct job){fa, fb, half < size ? half : size, size, 0, 0};
    } else {      /* one file each */
        jobs[0] = (struct job){fa, -1, 0, size_of(fa), 0, 0};
        jobs[1] = (struct job){fb, -1, 0, size_of(fb), 0, 0};
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, work, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        if (jobs[i].err) { fprintf(stderr, "cdelta: %s\n", strerror(jobs[i].err)); return 1; }
    if (copy && fsync(fb) != 0) { perror("fsync"); return 1; }
    if (copy) printf("%ld\n", jobs[0].blocks_written + jobs[1].blocks_written);
    return 0;
}
