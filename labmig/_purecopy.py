"""Pure-Python twin of the compiled core, built on numpy and the ``xxhash`` package.

It has the same names and behaviour as :mod:`labmig._fastcopy` and is the
oracle the test suite checks the compiled core against; ``LABMIG_PUREPYTHON=1``
makes :mod:`labmig.core` use it. It also holds the argument checks both share
(``_check_*``), so a bad call raises the same :class:`InvalidInput` in either.

    bitmap kernels   new_bitmap, popcount, find_set_bits, bit_runs,
                     fetch_and_clear, bitmap_or, bitmap_andnot, set_bits
    block kernels    digest_buffer, digest_file, compare_digests, zero_digest,
                     punch_hole
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

import numpy as np
import xxhash

from .copyrules import DIGEST_WORDS, MAX_BLOCK, MIN_BLOCK
from .errors import InvalidInput

NO_HOLE_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.ENODEV})
_WORDS_AT_ONCE = 1 << 16  # words unpacked at a time: bounds the twin's memory

# ---------------------------------------------------------------- checks (shared)


def _check_bitmap(a: object, name: str, writable: bool = False) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.ndim != 1:
        raise InvalidInput(f"{name} must be a 1-D numpy uint64 array, got {_describe(a)}",
                           "make bitmaps with labmig.core.new_bitmap(nbits)")
    if not a.flags.c_contiguous:
        raise InvalidInput(f"{name} must be contiguous", "pass np.ascontiguousarray(...) or a fresh new_bitmap()")
    if writable and not a.flags.writeable:
        raise InvalidInput(f"{name} is read-only", "pass a writable array")


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.ndim}-D {a.dtype} array"
    return type(a).__name__


def _check_nbits(bitmap: np.ndarray, nbits: object) -> int:
    n = int(nbits)  # type: ignore[call-overload]
    if n < 0 or n > 64 * bitmap.shape[0]:
        raise InvalidInput(f"nbits={n} does not fit a bitmap of {bitmap.shape[0]} words",
                           "nbits must be between 0 and 64 * len(bitmap)")
    return n


def _check_pair(a: np.ndarray, b: np.ndarray, an: str, bn: str) -> None:
    if a.shape != b.shape:
        raise InvalidInput(f"{an} has {a.shape[0]} words but {bn} has {b.shape[0]}",
                           "both bitmaps must have the same length")


_INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.uint64))
_U64 = np.dtype(np.uint64)


def _check_index_out(out: object, name: str) -> np.ndarray:
    if (not isinstance(out, np.ndarray) or out.ndim != 1
            or out.dtype not in _INDEX_DTYPES):
        raise InvalidInput(f"{name} must be a 1-D int64 or uint64 array, got {_describe(out)}",
                           "preallocate it with np.empty(n, dtype=np.int64)")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidInput(f"{name} must be contiguous and writable", "preallocate it with np.empty(n, dtype=np.int64)")
    return out if out.dtype is _U64 else out.view(_U64)


def _check_indices(bitmap: np.ndarray, indices: object) -> np.ndarray:
    if (not isinstance(indices, np.ndarray) or indices.ndim != 1
            or indices.dtype not in _INDEX_DTYPES):
        raise InvalidInput(f"indices must be a 1-D int64 or uint64 array, got {_describe(indices)}",
                           "pass np.asarray(list_of_positions, dtype=np.int64)")
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= 64 * bitmap.shape[0]:
            bad = lo if lo < 0 else hi
            raise InvalidInput(f"bit index {bad} is outside the bitmap of {64 * bitmap.shape[0]} bits",
                               "indices must be >= 0 and < 64 * len(bitmap)")
    return np.ascontiguousarray(indices).view(np.uint64)


def _check_block_size(block_size: object) -> int:
    bs = int(block_size)  # type: ignore[call-overload]
    if bs < MIN_BLOCK or bs > MAX_BLOCK or bs & (bs - 1):
        raise InvalidInput(f"block size {bs} is not a power of two between 4 KiB and 16 MiB",
                           "use e.g. 64KiB (the default), 4KiB or 1MiB")
    return bs


def _check_seed(seed: object) -> int:
    s = int(seed)  # type: ignore[call-overload]
    if not 0 <= s < 1 << 64:
        raise InvalidInput(f"seed {s} is not an unsigned 64-bit integer", "use secrets.randbits(64)")
    return s


def _check_digests(d: object, nblocks: int) -> None:
    if (not isinstance(d, np.ndarray) or d.dtype != np.uint64 or d.ndim != 2
            or d.shape[1] != DIGEST_WORDS or not d.flags.c_contiguous or not d.flags.writeable):
        raise InvalidInput(f"digests must be a writable contiguous uint64 array of shape (n, 2), got {_describe(d)}",
                           "preallocate it with np.empty((nblocks, 2), dtype=np.uint64)")
    if d.shape[0] < nblocks:
        raise InvalidInput(f"digests has room for {d.shape[0]} blocks but {nblocks} are needed",
                           "preallocate at least one row per block")


def _check_digest_pair(a: object, b: object) -> int:
    for name, d in (("a", a), ("b", b)):
        if (not isinstance(d, np.ndarray) or d.dtype != np.uint64 or d.ndim != 2
                or d.shape[1] != DIGEST_WORDS or not d.flags.c_contiguous):
            raise InvalidInput(f"digest array {name} must be contiguous uint64 of shape (n, 2), got {_describe(d)}",
                               "pass arrays filled by digest_file/digest_buffer")
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)  # checked just above
    if a.shape != b.shape:
        raise InvalidInput(f"digest arrays differ in length: {a.shape[0]} and {b.shape[0]}",
                           "compare the same range of blocks")
    return int(a.shape[0])


def _as_bytes_view(buf: object) -> memoryview:
    try:
        view = memoryview(buf)  # type: ignore[arg-type]
    except TypeError as exc:
        raise InvalidInput(f"buffer must support the buffer protocol, got {type(buf).__name__}",
                           "pass bytes, bytearray, memoryview or a numpy array") from exc
    if not view.c_contiguous:
        raise InvalidInput("buffer must be contiguous", "pass bytes(...) or np.ascontiguousarray(...)")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


# ---------------------------------------------------------------- bitmaps


def new_bitmap(nbits: int) -> np.ndarray:
    """A zeroed bitmap able to hold ``nbits`` bits."""
    n = int(nbits)
    if n < 0:
        raise InvalidInput(f"nbits={n} is negative", "a bitmap holds zero or more bits")
    return np.zeros((n + 63) // 64, dtype=np.uint64)


def _popcount_words(words: np.ndarray) -> int:
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(words).sum(dtype=np.int64))
    return int(np.unpackbits(words.astype("<u8").view(np.uint8)).sum(dtype=np.int64))


def _masked_words(bitmap: np.ndarray, nbits: int, lo_word: int, hi_word: int, start: int) -> np.ndarray:
    """Copy of words [lo_word, hi_word) with bits below ``start`` and at or past ``nbits`` cleared."""
    words = bitmap[lo_word:hi_word].copy()
    if words.size == 0:
        return words
    if lo_word == start >> 6 and start & 63:
        words[0] &= np.uint64(((1 << 64) - 1) ^ ((1 << (start & 63)) - 1))
    last = (nbits + 63) // 64 - 1
    if hi_word - 1 == last and nbits & 63:
        words[-1] &= np.uint64((1 << (nbits & 63)) - 1)
    return words


def _bits_of(words: np.ndarray) -> np.ndarray:
    """Bits of words as a bool array, bit j of word i at position 64*i + j."""
    return np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little").astype(bool)


def popcount(bitmap: np.ndarray, nbits: int) -> int:
    """Number of set bits among the first ``nbits`` bits of ``bitmap``."""
    _check_bitmap(bitmap, "bitmap")
    n = _check_nbits(bitmap, nbits)
    nw = (n + 63) // 64
    return _popcount_words(_masked_words(bitmap, n, 0, nw, 0))


def find_set_bits(bitmap: np.ndarray, nbits: int, start: int, out: np.ndarray) -> tuple[int, int]:
    """Write indices of set bits at or after ``start`` into ``out``; see :mod:`labmig.core`."""
    _check_bitmap(bitmap, "bitmap")
    n = _check_nbits(bitmap, nbits)
    o = _check_index_out(out, "out")
    start = max(int(start), 0)
    if start >= n:
        return 0, n
    nw, k, cap = (n + 63) // 64, 0, o.shape[0]
    for lo in range(start >> 6, nw, _WORDS_AT_ONCE):
        hi = min(lo + _WORDS_AT_ONCE, nw)
        words = _masked_words(bitmap, n, lo, hi, start)
        nz = np.flatnonzero(words)
        if nz.size == 0:
            continue
        rows = _bits_of(words[nz]).reshape(-1, 64)
        wi, bi = np.nonzero(rows)
        pos = (nz[wi] + lo).astype(np.uint64) * np.uint64(64) + bi.astype(np.uint64)
        take = min(cap - k, pos.size)
        o[k:k + take] = pos[:take]
        k += take
        if take < pos.size:
            return k, int(pos[take])
    return k, n


def bit_runs(bitmap: np.ndarray, nbits: int, start: int,
             out_starts: np.ndarray, out_lengths: np.ndarray) -> tuple[int, int]:
    """Runs of set bits at or after ``start`` as (start, length); see :mod:`labmig.core`."""
    _check_bitmap(bitmap, "bitmap")
    n = _check_nbits(bitmap, nbits)
    os_ = _check_index_out(out_starts, "out_starts")
    ol = _check_index_out(out_lengths, "out_lengths")
    start = max(int(start), 0)
    if start >= n:
        return 0, n
    cap, k = min(os_.shape[0], ol.shape[0]), 0
    nw = (n + 63) // 64
    open_start = -1  # a run that reaches the end of the previous window
    for lo in range(start >> 6, nw, _WORDS_AT_ONCE):
        hi = min(lo + _WORDS_AT_ONCE, nw)
        bits = _bits_of(_masked_words(bitmap, n, lo, hi, start)).astype(np.int8)
        edges = np.diff(np.concatenate(([0], bits, [0])))
        rises = np.flatnonzero(edges == 1) + 64 * lo
        falls = np.flatnonzero(edges == -1) + 64 * lo
        window_end = 64 * hi
        for s, e in zip(rises.tolist(), falls.tolist(), strict=True):
            if open_start >= 0 and s == 64 * lo:
                s = open_start  # continues the run left open by the last window
            elif open_start >= 0:
                if k == cap:
                    return k, open_start
                os_[k], ol[k] = open_start, 64 * lo - open_start
                k += 1
            open_start = -1
            if e == window_end and hi < nw:
                open_start = s
                continue
            e = min(e, n)
            if k == cap:
                return k, s
            os_[k], ol[k] = s, e - s
            k += 1
    if open_start >= 0:
        if k == cap:
            return k, open_start
        os_[k], ol[k] = open_start, n - open_start
        k += 1
    return k, n


def fetch_and_clear(bitmap: np.ndarray, out: np.ndarray) -> int:
    """Copy ``bitmap`` into ``out``, zero ``bitmap``, return the number of set bits."""
    _check_bitmap(bitmap, "bitmap", writable=True)
    _check_bitmap(out, "out", writable=True)
    _check_pair(out, bitmap, "out", "bitmap")
    out[:] = bitmap
    bitmap[:] = 0
    return _popcount_words(out)


def bitmap_or(dst: np.ndarray, src: np.ndarray) -> None:
    """dst |= src, in place."""
    _check_bitmap(dst, "dst", writable=True)
    _check_bitmap(src, "src")
    _check_pair(dst, src, "dst", "src")
    np.bitwise_or(dst, src, out=dst)


def bitmap_andnot(dst: np.ndarray, src: np.ndarray) -> None:
    """dst &= ~src, in place."""
    _check_bitmap(dst, "dst", writable=True)
    _check_bitmap(src, "src")
    _check_pair(dst, src, "dst", "src")
    np.bitwise_and(dst, np.invert(src), out=dst)


def set_bits(bitmap: np.ndarray, indices: np.ndarray) -> None:
    """Set the bits whose positions are in ``indices`` (int64 or uint64)."""
    _check_bitmap(bitmap, "bitmap", writable=True)
    idx = _check_indices(bitmap, indices)
    masks = np.left_shift(np.uint64(1), idx & np.uint64(63))
    np.bitwise_or.at(bitmap, (idx >> np.uint64(6)).astype(np.intp), masks)


# ---------------------------------------------------------------- blocks


def zero_digest(length: int, seed: int) -> tuple[int, int]:
    """(low, high) digest of ``length`` zero bytes."""
    h = xxhash.xxh3_128_intdigest(bytes(int(length)), _check_seed(seed))
    return h & 0xFFFFFFFFFFFFFFFF, h >> 64


def _fill(data: memoryview, base_block: int, bs: int, seed: int,
          digests_out: np.ndarray, zero_out: np.ndarray | None) -> None:
    zeros = bytes(bs)
    for i in range((len(data) + bs - 1) // bs):
        block = data[i * bs:(i + 1) * bs]
        h = xxhash.xxh3_128_intdigest(block, seed)
        b = base_block + i
        digests_out[b, 0] = h & 0xFFFFFFFFFFFFFFFF
        digests_out[b, 1] = h >> 64
        if zero_out is not None and block == zeros[:len(block)]:
            zero_out[b >> 6] |= np.uint64(1 << (b & 63))


def digest_buffer(buf: object, block_size: int, seed: int, digests_out: np.ndarray,
                  zero_out: np.ndarray | None = None, threads: int = 0) -> int:
    """XXH3-128 digests of every block of ``buf``; see :mod:`labmig.core`."""
    data = _as_bytes_view(buf)
    bs = _check_block_size(block_size)
    nblocks = (len(data) + bs - 1) // bs
    _check_digests(digests_out, nblocks)
    s = _check_seed(seed)
    if zero_out is not None:
        _check_bitmap(zero_out, "zero_out", writable=True)
        _check_nbits(zero_out, nblocks)
    _fill(data, 0, bs, s, digests_out, zero_out)
    return nblocks


def digest_file(fd: int, offset: int, length: int, block_size: int, seed: int,
                digests_out: np.ndarray, zero_out: np.ndarray | None = None, threads: int = 0) -> int:
    """Digests of the blocks of an open file in [offset, offset+length); see :mod:`labmig.core`."""
    bs = _check_block_size(block_size)
    off, ln = int(offset), int(length)
    if off < 0 or ln < 0:
        raise InvalidInput(f"offset and length must be >= 0, got {off} and {ln}",
                           "pass a byte range inside the file")
    nblocks = (ln + bs - 1) // bs
    _check_digests(digests_out, nblocks)
    s = _check_seed(seed)
    if zero_out is not None:
        _check_bitmap(zero_out, "zero_out", writable=True)
        _check_nbits(zero_out, nblocks)
    chunk = max(bs, (1 << 20) // bs * bs)
    got = 0
    while got < ln:
        want = min(chunk, ln - got)
        data = os.pread(int(fd), want, off + got)
        while 0 < len(data) < want:  # pread may return less than asked before EOF
            more = os.pread(int(fd), want - len(data), off + got + len(data))
            if not more:
                break
            data += more
        _fill(memoryview(data), got // bs, bs, s, digests_out, zero_out)
        got += len(data)
        if len(data) < want:
            break
    return got


_WAYS = ("auto", "map", "read")
_digest_way = "auto"


def set_digest_way(way: str) -> str:
    """Accepted for the compiled core's sake; the twin always reads. Returns the previous setting."""
    global _digest_way
    if way not in _WAYS:
        raise InvalidInput(f"unknown digest way {way!r}", f"use one of {', '.join(_WAYS)}")
    previous, _digest_way = _digest_way, way
    return previous


def compare_digests(a: np.ndarray, b: np.ndarray, changed_out: np.ndarray) -> int:
    """Set bit i of ``changed_out`` where digest rows a[i] and b[i] differ; return how many."""
    n = _check_digest_pair(a, b)
    _check_bitmap(changed_out, "changed_out", writable=True)
    _check_nbits(changed_out, n)
    differ = np.flatnonzero(np.any(a != b, axis=1))
    if differ.size:
        set_bits(changed_out, differ.astype(np.int64))
    return int(differ.size)


_libc = None


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate [offset, offset+length) keeping the size; False if the file system cannot."""
    global _libc
    if int(length) <= 0:
        return True
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    falloc_keep_size, falloc_punch_hole = 0x01, 0x02
    if _libc.fallocate(int(fd), falloc_keep_size | falloc_punch_hole, int(offset), int(length)) == 0:
        return True
    err = ctypes.get_errno()
    if err in NO_HOLE_ERRNOS:
        return False
    raise OSError(err, os.strerror(err))
