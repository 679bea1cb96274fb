"""The core kernels, compiled (:mod:`labmig._fastcopy`) or pure (:mod:`labmig._purecopy`).

``IMPLEMENTATION`` is ``"compiled"`` or ``"pure"``. ``LABMIG_PUREPYTHON=1``
forces the pure twin; if the compiled module is missing, the twin is used and a
warning is logged. Both have the same names, arguments, results and errors
(:class:`~labmig.errors.InvalidInput` for a bad call).

Bitmaps are 1-D numpy ``uint64`` arrays with an explicit ``nbits``; bit ``i``
is bit ``i % 64`` (little-endian) of word ``i // 64``. Bits past ``nbits`` in
the last word are ignored.

    new_bitmap(nbits) -> array                zeroed, (nbits + 63) // 64 words
    popcount(bitmap, nbits) -> int
    find_set_bits(bitmap, nbits, start, out) -> (count, next_start)
        indices of set bits >= start into ``out`` (int64/uint64); next_start is
        the first set bit not written, or nbits when done: call again from it
        to walk a 2**32-bit map in chunks
    bit_runs(bitmap, nbits, start, out_starts, out_lengths) -> (count, next_start)
        runs of set bits as (start, length); only whole runs are written
    fetch_and_clear(bitmap, out) -> int       snapshot into out, zero, count
    bitmap_or(dst, src); bitmap_andnot(dst, src)   in place on dst
    set_bits(bitmap, indices)                 indices: int64/uint64 array

Block kernels. A digest is XXH3-128 of the block's bytes with a 64-bit seed,
stored as two uint64 words (low, high) in a row of a ``(nblocks, 2)`` array —
equal to ``xxhash.xxh3_128_intdigest(block, seed)`` split in halves. The last
block of a range may be short and is hashed as it is.

    digest_buffer(buf, block_size, seed, digests_out, zero_out=None, threads=0) -> nblocks
    digest_file(fd, offset, length, block_size, seed, digests_out, zero_out=None, threads=0)
        -> bytes that were there (less than length at an early EOF)
        block i starts at offset + i*block_size; compiled: hashed without the
        GIL on ``threads`` threads (0 = every core), 8 MiB at a time, each piece
        either hashed in place through a mapping or read first, whichever is
        timed faster (pages cached in large folios map cheaply, others do not);
        a file that shrinks meanwhile gives a short result, not a crash. The
        twin reads with pread.
    set_digest_way(way) -> previous           "auto" (default), "map" or "read"
    zero_out                                  bitmap: bit i set when block i is all zero
    compare_digests(a, b, changed_out) -> int sets bit i where rows differ
    zero_digest(length, seed) -> (low, high)  digest of ``length`` zero bytes
    punch_hole(fd, offset, length) -> bool    deallocate keeping the size; False
                                              when the file system cannot

Block sizes are powers of two from 4 KiB to 16 MiB. Extents of changed blocks
come from ``bit_runs`` over the changed bitmap.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

__all__ = [
    "DIGEST_WORDS",
    "IMPLEMENTATION",
    "MAX_BLOCK",
    "MIN_BLOCK",
    "bit_runs",
    "bitmap_andnot",
    "bitmap_or",
    "compare_digests",
    "digest_buffer",
    "digest_file",
    "fetch_and_clear",
    "find_set_bits",
    "new_bitmap",
    "popcount",
    "punch_hole",
    "set_bits",
    "set_digest_way",
    "zero_digest",
]

if os.environ.get("LABMIG_PUREPYTHON", "") not in ("", "0"):
    from . import _purecopy as _impl
    IMPLEMENTATION = "pure"
else:
    try:
        from . import _fastcopy as _impl  # type: ignore[attr-defined,no-redef]  # built from _fastcopy.pyx
        IMPLEMENTATION = "compiled"
    except ImportError as exc:
        log.warning("compiled core not available (%s); using the pure-Python twin, which is much slower. "
                    "Rebuild with: pip install -e .", exc)
        from . import _purecopy as _impl
        IMPLEMENTATION = "pure"

from .copyrules import DIGEST_WORDS, MAX_BLOCK, MIN_BLOCK

new_bitmap = _impl.new_bitmap
popcount = _impl.popcount
find_set_bits = _impl.find_set_bits
bit_runs = _impl.bit_runs
fetch_and_clear = _impl.fetch_and_clear
bitmap_or = _impl.bitmap_or
bitmap_andnot = _impl.bitmap_andnot
set_bits = _impl.set_bits
digest_buffer = _impl.digest_buffer
digest_file = _impl.digest_file
compare_digests = _impl.compare_digests
zero_digest = _impl.zero_digest
punch_hole = _impl.punch_hole
set_digest_way = _impl.set_digest_way
