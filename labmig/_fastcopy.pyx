# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled core: dirty-bitmap scans and hashed block digests, without the GIL.

Same names and behaviour as :mod:`labmig._purecopy` (the pure-Python twin and
test oracle); :mod:`labmig.core` documents the contract and picks one of them.

    bitmap kernels   new_bitmap, popcount, find_set_bits, bit_runs,
                     fetch_and_clear, bitmap_or, bitmap_andnot, set_bits
    block kernels    digest_buffer, digest_file, compare_digests, zero_digest,
                     punch_hole, set_digest_way
    build            BUILD_TARGET, BUILD_FEATURES

The loops themselves are C, in ``_fastcopy_c.h``; this module checks the
arguments, releases the GIL and calls them. Argument checking is shared with the twin (``_purecopy._check_*``) so both raise
the same :class:`~labmig.errors.InvalidInput` for the same bad call.
"""
import os

import numpy as np

from labmig import _purecopy as _twin
from labmig._purecopy import (
    DIGEST_WORDS, _check_bitmap, _check_digests, _check_index_out, _check_nbits,
    _check_pair, _check_block_size, new_bitmap, zero_digest,
)

from libc.stdint cimport uint64_t, int64_t, uint8_t

cdef extern from "_fastcopy_c.h":
    int lm_popcount(uint64_t w) nogil
    void lm_init_tables() nogil
    int64_t lm_skip_zero_words(const uint64_t *bm, int64_t i, int64_t nw) nogil
    int64_t lm_find_set(const uint64_t *bm, int64_t nbits, int64_t start,
                        uint64_t *out, int64_t cap, int64_t *next) nogil
    int64_t lm_find_set_par(const uint64_t *bm, int64_t nbits, int64_t start,
                            uint64_t *out, int64_t cap, int64_t *next, int nthreads) nogil
    int lm_ctz(uint64_t w) nogil
    int lm_threads(int want) nogil
    void lm_digest_buffer(const unsigned char *buf, int64_t len, int64_t bs, uint64_t seed,
                          uint64_t *dig, uint64_t *zero_words, int nthreads) nogil
    int lm_digest_fd(int fd, int64_t offset, int64_t len, int64_t bs, uint64_t seed,
                     uint64_t *dig, uint64_t *zero_words, int nthreads, int64_t *got) nogil
    int lm_punch_hole(int fd, int64_t offset, int64_t len) nogil
    ctypedef struct XXH128_hash_t:
        uint64_t low64
        uint64_t high64
    XXH128_hash_t lm_zero_digest_soiled(int64_t bs, uint64_t seed) nogil
    int lm_way_forced
    long lm_bus_caught
    const char *lm_build_target
    const char *lm_build_features


lm_init_tables()

#: The CPU target this binary was built for (``LABMIG_MARCH`` in setup.py).
BUILD_TARGET = (<bytes>lm_build_target).decode()
#: Instruction-set paths the compiler could use (``popcnt``, ``avx2``, ``avx512f`` ...; ``openmp``).
BUILD_FEATURES = tuple((<bytes>lm_build_features).decode().split())

# ---------------------------------------------------------------- bitmaps

cdef inline uint64_t _tail_mask(Py_ssize_t nbits) nogil:
    cdef int r = nbits & 63
    return (~<uint64_t>0) if r == 0 else ((<uint64_t>1 << r) - 1)


def popcount(bitmap, nbits):
    """Number of set bits among the first ``nbits`` bits of ``bitmap``."""
    _check_bitmap(bitmap, "bitmap")
    nbits = _check_nbits(bitmap, nbits)
    cdef const uint64_t[::1] bm = bitmap
    cdef Py_ssize_t n = nbits, nw = (n + 63) >> 6, i
    cdef int64_t count = 0
    if nw == 0:
        return 0
    with nogil:
        for i in range(nw - 1):
            count += lm_popcount(bm[i])
        count += lm_popcount(bm[nw - 1] & _tail_mask(n))
    return int(count)


cdef inline Py_ssize_t _next_set(const uint64_t *bm, Py_ssize_t nbits, Py_ssize_t pos) noexcept nogil:
    """First set bit at or after pos, or nbits."""
    cdef Py_ssize_t nw = (nbits + 63) >> 6, w_i
    cdef uint64_t w
    if pos >= nbits:
        return nbits
    w_i = pos >> 6
    w = bm[w_i] & ((~<uint64_t>0) << (pos & 63))
    if w == 0:
        w_i = lm_skip_zero_words(bm, w_i + 1, nw)
        if w_i >= nw:
            return nbits
        w = bm[w_i]
    pos = (w_i << 6) + lm_ctz(w)
    return pos if pos < nbits else nbits


cdef inline Py_ssize_t _next_clear(const uint64_t *bm, Py_ssize_t nbits, Py_ssize_t pos) noexcept nogil:
    """First clear bit at or after pos, or nbits."""
    cdef Py_ssize_t nw = (nbits + 63) >> 6, w_i
    cdef uint64_t w
    if pos >= nbits:
        return nbits
    w_i = pos >> 6
    w = (~bm[w_i]) & ((~<uint64_t>0) << (pos & 63))
    while w == 0:
        w_i += 1
        while w_i < nw and bm[w_i] == ~<uint64_t>0:
            w_i += 1
        if w_i >= nw:
            return nbits
        w = ~bm[w_i]
    pos = (w_i << 6) + lm_ctz(w)
    return pos if pos < nbits else nbits


def find_set_bits(bitmap, nbits, start, out):
    """Write indices of set bits at or after ``start`` into ``out``.

    Returns ``(count, next_start)``: ``next_start`` is the next set bit not yet
    written (call again from there), or ``nbits`` when the walk is finished.
    """
    _check_bitmap(bitmap, "bitmap")
    nbits = _check_nbits(bitmap, nbits)
    out = _check_index_out(out, "out")
    start = max(int(start), 0)
    cdef const uint64_t[::1] bm = bitmap
    cdef uint64_t[::1] o = out
    cdef int64_t n = nbits, pos = start, cap = o.shape[0], k = 0, nxt = nbits
    cdef uint64_t dummy = 0
    if pos >= n:
        return 0, nbits
    cdef int nt = lm_threads(0)
    with nogil:
        k = lm_find_set_par(&bm[0], n, pos, &o[0] if cap else &dummy, cap, &nxt, nt)
    return int(k), int(nxt)


def bit_runs(bitmap, nbits, start, out_starts, out_lengths):
    """Runs of set bits at or after ``start`` as (start, length) pairs.

    Returns ``(count, next_start)`` like :func:`find_set_bits`; a run is only
    written whole, so ``next_start`` is the start of the first run not written.
    """
    _check_bitmap(bitmap, "bitmap")
    nbits = _check_nbits(bitmap, nbits)
    out_starts = _check_index_out(out_starts, "out_starts")
    out_lengths = _check_index_out(out_lengths, "out_lengths")
    start = max(int(start), 0)
    cdef const uint64_t[::1] bm = bitmap
    cdef uint64_t[::1] os_ = out_starts
    cdef uint64_t[::1] ol = out_lengths
    cdef Py_ssize_t n = nbits, pos = start, cap = min(os_.shape[0], ol.shape[0]), k = 0, s, e
    if pos >= n:
        return 0, nbits
    with nogil:
        while True:
            s = _next_set(&bm[0], n, pos)
            if s >= n:
                pos = n
                break
            if k == cap:
                pos = s
                break
            e = _next_clear(&bm[0], n, s)
            os_[k] = s
            ol[k] = e - s
            k += 1
            pos = e
    return int(k), int(pos)


def fetch_and_clear(bitmap, out):
    """Copy ``bitmap`` into ``out``, zero ``bitmap``, return the number of set bits."""
    _check_bitmap(bitmap, "bitmap", writable=True)
    _check_bitmap(out, "out", writable=True)
    _check_pair(out, bitmap, "out", "bitmap")
    cdef uint64_t[::1] bm = bitmap
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i, nw = bm.shape[0]
    cdef int64_t count = 0
    cdef uint64_t v
    with nogil:
        for i in range(nw):
            v = bm[i]
            o[i] = v
            bm[i] = 0
            count += lm_popcount(v)
    return int(count)


def bitmap_or(dst, src):
    """dst |= src, in place."""
    _check_bitmap(dst, "dst", writable=True)
    _check_bitmap(src, "src")
    _check_pair(dst, src, "dst", "src")
    cdef uint64_t[::1] d = dst
    cdef const uint64_t[::1] s = src
    cdef Py_ssize_t i
    with nogil:
        for i in range(d.shape[0]):
            d[i] |= s[i]


def bitmap_andnot(dst, src):
    """dst &= ~src, in place."""
    _check_bitmap(dst, "dst", writable=True)
    _check_bitmap(src, "src")
    _check_pair(dst, src, "dst", "src")
    cdef uint64_t[::1] d = dst
    cdef const uint64_t[::1] s = src
    cdef Py_ssize_t i
    with nogil:
        for i in range(d.shape[0]):
            d[i] &= ~s[i]


def set_bits(bitmap, indices):
    """Set the bits whose positions are in ``indices`` (int64 or uint64)."""
    _check_bitmap(bitmap, "bitmap", writable=True)
    idx = _twin._check_indices(bitmap, indices)
    cdef uint64_t[::1] bm = bitmap
    cdef const uint64_t[::1] ix = idx
    cdef Py_ssize_t i
    cdef uint64_t v
    with nogil:
        for i in range(ix.shape[0]):
            v = ix[i]
            bm[v >> 6] |= (<uint64_t>1) << (v & 63)


# ---------------------------------------------------------------- blocks

def digest_buffer(buf, block_size, seed, digests_out, zero_out=None, threads=0):
    """XXH3-128 digests of every block of ``buf`` (the last one may be short).

    ``digests_out`` is a uint64 array of shape (nblocks, 2) receiving (low, high)
    halves; bit i of ``zero_out`` (a bitmap, optional) is set when block i is all
    zero (bits of non-zero blocks are left as they were). Returns nblocks.
    """
    cdef const unsigned char[::1] data = _twin._as_bytes_view(buf)
    cdef int64_t bs = _check_block_size(block_size)
    cdef int64_t length = data.shape[0]
    cdef int64_t nblocks = (length + bs - 1) // bs
    _check_digests(digests_out, nblocks)
    cdef uint64_t s = _twin._check_seed(seed)
    cdef uint64_t[:, ::1] dig = digests_out
    cdef uint64_t *zw = NULL
    cdef uint64_t[::1] zv
    if zero_out is not None:
        _check_bitmap(zero_out, "zero_out", writable=True)
        _check_nbits(zero_out, nblocks)
        zv = zero_out
        if zv.shape[0]:
            zw = &zv[0]
    cdef int nt = lm_threads(int(threads))
    if nblocks == 0:
        return 0
    with nogil:
        lm_digest_buffer(&data[0], length, bs, s, &dig[0, 0], zw, nt)
    return int(nblocks)


def digest_file(fd, offset, length, block_size, seed, digests_out, zero_out=None, threads=0):
    """Digests of the blocks of an open file in [offset, offset+length), hashed in place.

    Block i starts at ``offset + i*block_size``; ``digests_out`` and ``zero_out``
    as in :func:`digest_buffer`. Hashing runs without the GIL on ``threads``
    threads (0 = every core). Returns the number of bytes that were there: less
    than ``length`` when the file ended early (blocks past the end are left
    untouched). Raises OSError on a read error.
    """
    cdef int64_t bs = _check_block_size(block_size)
    cdef int64_t off = int(offset), ln = int(length)
    if off < 0 or ln < 0:
        raise _twin.InvalidInput(f"offset and length must be >= 0, got {off} and {ln}",
                                 "pass a byte range inside the file")
    cdef int64_t nblocks = (ln + bs - 1) // bs
    _check_digests(digests_out, nblocks)
    cdef uint64_t s = _twin._check_seed(seed)
    cdef uint64_t[:, ::1] dig = digests_out
    cdef uint64_t *zw = NULL
    cdef uint64_t[::1] zv
    if zero_out is not None:
        _check_bitmap(zero_out, "zero_out", writable=True)
        _check_nbits(zero_out, nblocks)
        zv = zero_out
        if zv.shape[0]:
            zw = &zv[0]
    cdef int f = int(fd), nt = lm_threads(int(threads)), err = 0
    cdef int64_t got = 0
    if nblocks == 0:
        return 0
    with nogil:
        err = lm_digest_fd(f, off, ln, bs, s, &dig[0, 0], zw, nt, &got)
    if err:
        raise OSError(err, os.strerror(err))
    return int(got)


def compare_digests(a, b, changed_out):
    """Set bit i of ``changed_out`` where digest rows a[i] and b[i] differ; return how many."""
    n = _twin._check_digest_pair(a, b)
    _check_bitmap(changed_out, "changed_out", writable=True)
    _check_nbits(changed_out, n)
    cdef const uint64_t[:, ::1] x = a
    cdef const uint64_t[:, ::1] y = b
    cdef uint64_t[::1] c = changed_out
    cdef Py_ssize_t i, nn = n
    cdef int64_t count = 0
    with nogil:
        for i in range(nn):
            if x[i, 0] != y[i, 0] or x[i, 1] != y[i, 1]:
                c[i >> 6] |= (<uint64_t>1) << (i & 63)
                count += 1
    return int(count)


def punch_hole(fd, offset, length):
    """Deallocate [offset, offset+length) keeping the size; False if the file system cannot."""
    cdef int err
    cdef int f = int(fd)
    cdef int64_t off = int(offset), ln = int(length)
    if ln <= 0:
        return True
    with nogil:
        err = lm_punch_hole(f, off, ln)
    if err == 0:
        return True
    if err in _twin.NO_HOLE_ERRNOS:
        return False
    raise OSError(err, os.strerror(err))


_WAYS = ("auto", "map", "read")


def set_digest_way(way):
    """How :func:`digest_file` gets at the bytes: "auto" (timed choice), "map" or "read".

    Returns the previous setting. For benchmarks and tests; "auto" is the default.
    """
    global lm_way_forced
    if way not in _WAYS:
        raise _twin.InvalidInput(f"unknown digest way {way!r}", f"use one of {', '.join(_WAYS)}")
    previous = _WAYS[lm_way_forced]
    lm_way_forced = _WAYS.index(way)
    return previous


def _sigbus_caught():
    """How many SIGBUS (a file shrinking under a mapping) were turned into short results."""
    return lm_bus_caught


def _zero_digest_on_soiled_stack(block_size, seed):
    """The C zero digest computed where a frame full of ``seed`` was just left (for the tests)."""
    cdef XXH128_hash_t h = lm_zero_digest_soiled(_check_block_size(block_size), _twin._check_seed(seed))
    return int(h.low64), int(h.high64)
